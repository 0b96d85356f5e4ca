"""redis-py's cluster client (RedisCluster) pointed at cashew in front of a Redis
Cluster: it discovers one node owning every slot (cashew) and works unchanged.
Usage: redis_cluster_client.py HOST PORT"""
import sys

from redis.cluster import RedisCluster

host, port = sys.argv[1], int(sys.argv[2])
rc = RedisCluster(host=host, port=port, decode_responses=True)

nodes = rc.get_nodes()
assert [(n.host, n.port) for n in nodes] == [(host, port)], f"one node, cashew: {nodes}"

for i in range(1000):
    rc.set(f"py:{i}", i)
assert all(rc.get(f"py:{i}") == str(i) for i in range(1000))

# Multi-key calls across slots: the client sends them to its one node.
keys = [f"py:{i}" for i in range(200)]
assert rc.mget_nonatomic(keys) == [str(i) for i in range(200)]
rc.mset_nonatomic({f"pm:{i}": i for i in range(200)})
assert rc.mget_nonatomic([f"pm:{i}" for i in range(200)]) == [str(i) for i in range(200)]

pipe = rc.pipeline()
for i in range(100):
    pipe.incr(f"pc:{i}")
assert pipe.execute() == [1] * 100

assert rc.keyslot("somekey") == rc.cluster_keyslot("somekey") == 11058
info = rc.cluster_info()
assert info["cluster_state"] == "ok", info
assert rc.delete(*[f"py:{i}" for i in range(10)]) == 10
print("redis-py RedisCluster through cashew: ok")
