"""Reads an OpenMetrics text (cashew's /metrics) on stdin with prometheus_client's
strict OpenMetrics parser, which checks the format, counter and histogram rules
(buckets cumulative, +Inf equal to _count), and prints every sample as one JSON
object per line: {"name": ..., "labels": {...}, "value": ...}."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value}))
