"""pymemcache, current release, against cashew. Exits non-zero with a message on
the first wrong answer."""
import sys

import pymemcache
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

c = Client((sys.argv[1], int(sys.argv[2])), connect_timeout=5, timeout=5)
assert c.set("pm:a", b"alpha") is True
assert c.get("pm:a") == b"alpha"
assert c.get("pm:missing") is None
assert c.add("pm:a", b"x", noreply=False) is False
assert c.add("pm:b", b"beta", noreply=False) is True
assert c.replace("pm:b", b"BETA", noreply=False) is True
assert c.append("pm:b", b"!", noreply=False) is True
assert c.prepend("pm:b", b"<", noreply=False) is True
assert c.get("pm:b") == b"<BETA!"
many = c.get_many(["pm:a", "pm:b", "pm:none"])
assert many == {"pm:a": b"alpha", "pm:b": b"<BETA!"}, many
value, cas = c.gets("pm:a")
assert value == b"alpha"
assert c.cas("pm:a", b"ALPHA", cas, noreply=False) is True
assert c.cas("pm:a", b"again", cas, noreply=False) is False
c.set("pm:n", b"41")
assert c.incr("pm:n", 1) == 42
assert c.decr("pm:n", 2) == 40
assert c.incr("pm:nope", 1) is None
assert c.touch("pm:a", 100, noreply=False) is True
assert c.delete("pm:a", noreply=False) is True
assert c.delete("pm:a", noreply=False) is False
for i in range(50):
    c.set(f"pm:k{i}", str(i).encode(), noreply=True)
got = c.get_many([f"pm:k{i}" for i in range(50)])
assert len(got) == 50 and got["pm:k7"] == b"7", got
version = c.version()
assert version.startswith(b"1.6"), version
stats = c.stats()
assert b"cmd_get" in stats or "cmd_get" in stats, stats
try:
    c.stats("slabs")
    sys.exit("stats slabs was answered")
except MemcacheClientError as e:
    assert "each server holds its own items" in str(e), e
assert c.flush_all(noreply=False) is True
assert c.get("pm:b") is None
print(f"pymemcache {pymemcache.__version__}: ok")
