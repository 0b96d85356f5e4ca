"""Prints, as JSON, what the kubelet would run for the cashew container of a
manifest: the config it mounts, the container's args, its probes' paths and the
preStop command. Usage: k8s_manifest.py FILE CONTAINER"""
import json
import sys

import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["nutcracker.yml"]
spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
container = next(c for c in spec.get("containers", []) + spec.get("initContainers", []) if c["name"] == sys.argv[2])
print(json.dumps({
    "config": config,
    "args": container["args"],
    "liveness": container["livenessProbe"]["httpGet"]["path"],
    "readiness": container["readinessProbe"]["httpGet"]["path"],
    "pre_stop": container["lifecycle"]["preStop"]["exec"]["command"],
    "grace": spec["terminationGracePeriodSeconds"],
}))
