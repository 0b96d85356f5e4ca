"""redis-py pub/sub through cashew over several servers: a subscriber of 10
channels and a pattern, 10,000 messages published by another client; every
message comes once per subscription, in order per channel. Then the subscriber
leaves its channels. Usage: redis_pubsub.py HOST PORT PROTOCOL"""
import sys
import time

import redis

host, port, protocol = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = redis.Redis(host=host, port=port, protocol=protocol)
channels = [f"pat:ch{k}" for k in range(10)]
p = r.pubsub()
p.subscribe(*channels)
p.psubscribe("pat:*")

confirmed = []
deadline = time.time() + 10
while len(confirmed) < 11 and time.time() < deadline:
    m = p.get_message(timeout=1)
    if m:
        confirmed.append((m["type"], m["channel"], m["data"]))
kinds = sorted(t for t, _, _ in confirmed)
assert kinds == ["psubscribe"] + ["subscribe"] * 10, confirmed
assert sorted(n for _, _, n in confirmed) == list(range(1, 12)), confirmed

if protocol == 2:
    try:
        p.execute_command("GET", "x")
        p.get_message(timeout=1)
    except redis.ResponseError as e:
        assert "only (P|S)SUBSCRIBE" in str(e), e

publisher = redis.Redis(host=host, port=port, protocol=protocol)
N = 10_000
for start in range(0, N, 500):
    pipe = publisher.pipeline(transaction=False)
    for i in range(start, start + 500):
        pipe.publish(channels[i % 10], str(i))
    receivers = pipe.execute()
    assert all(n == 2 for n in receivers), set(receivers)

got = {("message", c): [] for c in channels}
got.update({("pmessage", c): [] for c in channels})
total = 0
deadline = time.time() + 60
while total < 2 * N and time.time() < deadline:
    m = p.get_message(timeout=1)
    if not m:
        continue
    got[(m["type"], m["channel"].decode())].append(int(m["data"]))
    total += 1
for (kind, channel), values in got.items():
    k = int(channel[len("pat:ch"):])
    assert values == list(range(k, N, 10)), (kind, channel, len(values), values[:5])

numsub = dict(publisher.pubsub_numsub(*channels))
assert all(numsub[c.encode()] == 1 for c in channels), numsub
assert publisher.pubsub_numpat() == 1

p.unsubscribe()
p.punsubscribe()
left = []
deadline = time.time() + 10
while len(left) < 11 and time.time() < deadline:
    m = p.get_message(timeout=1)
    if m:
        left.append((m["type"], m["data"]))
assert sorted(n for _, n in left) == list(range(0, 11)), left
p.close()
print(f"redis-py {redis.__version__} RESP{protocol} pub/sub: {total} messages, each once and in order: ok")
