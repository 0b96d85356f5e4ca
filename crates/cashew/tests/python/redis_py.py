"""redis-py, current release, against cashew: its defaults (RESP3 in redis-py 8),
then RESP2. Exits non-zero with a message on the first wrong answer."""
import sys

import redis

host, port, protocol = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kwargs = {} if protocol == "default" else {"protocol": int(protocol)}
r = redis.Redis(host=host, port=port, **kwargs)

conn = r.connection_pool.get_connection()
spoken = conn.protocol
r.connection_pool.release(conn)
if protocol == "default" and int(spoken) != 3:
    sys.exit(f"redis-py {redis.__version__} spoke RESP{spoken} by default, expected RESP3")

tag = f"py{spoken}"
assert r.ping() is True
assert r.set(f"{tag}:s", "v") is True
assert r.get(f"{tag}:s") == b"v"
assert r.get(f"{tag}:missing") is None
assert r.incrbyfloat(f"{tag}:f", 1.5) == 1.5

r.hset(f"{tag}:h", mapping={"a": "1", "b": "2"})
assert r.hgetall(f"{tag}:h") == {b"a": b"1", b"b": b"2"}
r.sadd(f"{tag}:set", "x", "y")
assert r.smembers(f"{tag}:set") == {b"x", b"y"}
r.zadd(f"{tag}:z", {"a": 1.5, "b": 2.5})
assert r.zrange(f"{tag}:z", 0, -1, withscores=True) == [(b"a", 1.5), (b"b", 2.5)]
assert r.zscore(f"{tag}:z", "b") == 2.5

first = r.xadd(f"{tag}:x", {"k": "v"})
r.xadd(f"{tag}:x", {"k": "w"})
entries = r.xrange(f"{tag}:x")
assert len(entries) == 2 and entries[0][0] == first, entries
assert r.xlen(f"{tag}:x") == 2

keys = [f"{tag}:k{i}" for i in range(20)]
assert r.mset({k: i for i, k in enumerate(keys)}) is True
values = r.mget(keys[:5] + [f"{tag}:none"] + keys[5:])
assert values[5] is None and values[6] == b"5", values
assert r.exists(*keys) == 20
assert r.delete(*keys) == 20

pipe = r.pipeline(transaction=False)
for i in range(100):
    pipe.incr(f"{tag}:n{i % 10}")
counts = pipe.execute()
assert len(counts) == 100 and counts[-1] == 10, counts

info = r.info("server")
assert info["redis_version"].startswith("7."), info
hello = r.execute_command("HELLO", spoken)
version = hello[b"version"] if isinstance(hello, dict) else dict(zip(hello[::2], hello[1::2]))[b"version"]
assert version.decode() == info["redis_version"], (version, info["redis_version"])

# Over every server of the pool.
assert sorted(r.keys(f"{tag}:n*")) == sorted(f"{tag}:n{i}".encode() for i in range(10))
assert set(r.scan_iter(f"{tag}:n*", count=3)) == {f"{tag}:n{i}".encode() for i in range(10)}

# Transactions on hash-tagged keys, on a connection of their own.
acct = f"{{{tag}:acct}}"
pipe = r.pipeline(transaction=True)
pipe.set(f"{acct}:a", 10)
pipe.incrby(f"{acct}:a", 5)
pipe.lpush(f"{acct}:log", "x")
pipe.get(f"{acct}:a")
assert pipe.execute() == [True, 15, 1, b"15"]


def bump(p):
    value = int(p.get(f"{acct}:a"))
    p.multi()
    p.set(f"{acct}:a", value + 1)


assert r.transaction(bump, f"{acct}:a") == [True]
assert r.get(f"{acct}:a") == b"16"

# A check-and-set that reads other keys (on any server) between WATCH and MULTI.
r.mset({f"{tag}:rate{i}": i for i in range(10)})


def add_rates(p):
    value = int(p.get(f"{acct}:a")) + sum(int(p.get(f"{tag}:rate{i}")) for i in range(10))
    p.multi()
    p.set(f"{acct}:a", value)


assert r.transaction(add_rates, f"{acct}:a") == [True]
assert r.get(f"{acct}:a") == b"61"

# Scripts: a registered script is loaded on every server when EVALSHA first finds
# it missing, so it runs wherever its key is; also inside a pipeline.
r.script_flush()
incr_by = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
for i in range(10):
    assert incr_by(keys=[f"{tag}:rate{i}"], args=[10]) == i + 10
assert r.script_exists(incr_by.sha) == [True]
pipe = r.pipeline(transaction=False)
for i in range(10):
    incr_by(keys=[f"{tag}:rate{i}"], args=[1], client=pipe)
assert pipe.execute() == [i + 11 for i in range(10)]

# Functions: loaded on every server, so FCALL finds them wherever its key is.
library = (
    "#!lua name=cashewlib\n"
    "redis.register_function('cashew_get', function(keys, args) return redis.call('get', keys[1]) end)"
)
assert r.function_load(library, replace=True) in (b"cashewlib", "cashewlib")
for i in range(10):
    assert r.fcall("cashew_get", 1, f"{tag}:rate{i}") == str(i + 11).encode()
assert r.function_delete("cashewlib") in (True, b"OK", "OK")
try:
    r.fcall("cashew_get", 1, f"{tag}:rate0")
    sys.exit("FCALL of a deleted function answered")
except redis.exceptions.ResponseError as e:
    assert "Function not found" in str(e), e

# redis-py's lock (its release and extend are registered scripts).
lock = r.lock(f"{tag}:lock", timeout=5)
assert lock.acquire(blocking=False)
assert not r.lock(f"{tag}:lock", timeout=5).acquire(blocking=False)
assert lock.extend(5)
lock.release()
assert r.get(f"{tag}:lock") is None
with r.lock(f"{tag}:lock", timeout=5, blocking_timeout=1):
    assert r.get(f"{tag}:lock") is not None

# A blocking call that times out, and one that something else releases.
assert r.blpop([f"{tag}:empty"], timeout=0.05) is None
r.rpush(f"{tag}:jobs", "job-1")
assert r.brpop([f"{tag}:jobs"], timeout=1) == (f"{tag}:jobs".encode(), b"job-1")

# Who is connected, as redis-py parses it; INFO's sections summed over the servers.
assert r.client_setname("py-worker")
assert r.client_getname() in (b"py-worker", "py-worker")
me = r.client_info()
assert me["name"] == "py-worker" and int(me["id"]) == r.client_id(), me
listed = r.client_list()
assert any(str(c["id"]) == str(me["id"]) and c["name"] == "py-worker" for c in listed), listed
assert all(c["flags"] == "N" for c in r.client_list(_type="normal")), listed
memory = r.info("memory")
assert memory["used_memory"] > 0 and "used_memory_human" in memory, memory
stats = r.info("stats")
assert stats["keyspace_hits"] > 0, stats

print(f"redis-py {redis.__version__} RESP{spoken}: ok")
