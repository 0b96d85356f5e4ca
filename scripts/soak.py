"""cashew under a mixed load for a long time, while it is reloaded, restarted and its
servers are killed: fails on a reply that does not match its request, a crash, or a
trend in memory or descriptors. Run by scripts/soak, which builds cashew first.

Usage: soak.py SECONDS OUT_DIR CASHEW_BINARY"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

duration, out_dir, binary = float(sys.argv[1]), sys.argv[2], sys.argv[3]
short = duration <= 600
RELOAD_EVERY = 30
RESTART_EVERY = 60 if short else 300
KILL_EVERY = 45 if short else 120
EJECT_EVERY = 40
SAMPLE_EVERY = 10
os.makedirs(out_dir, exist_ok=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, limit=10):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def memcached(port):
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    p = subprocess.Popen(["memcached", *user, "-l", "127.0.0.1", "-p", str(port), "-m", "256", "-U", "0"])
    wait_port(port)
    return p


def redis(port):
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", out_dir], stdout=subprocess.DEVNULL)
    wait_port(port)
    return p


mc_ports = [free_port(), free_port()]
rd_ports = [free_port(), free_port()]
servers = {("mc", p): memcached(p) for p in mc_ports}
servers.update({("rd", p): redis(p) for p in rd_ports})
mc_listen, rd_listen, admin_port, stats = free_port(), free_port(), free_port(), free_port()
conf = os.path.join(out_dir, "cashew.yml")
pid_file = os.path.join(out_dir, "cashew.pid")


def write_config(generation):
    with open(conf, "w") as f:
        f.write(f"# generation {generation}\n")
        f.write(f"mc:\n  listen: 127.0.0.1:{mc_listen}\n  timeout: 1000\n  auto_eject_hosts: true\n"
                f"  server_failure_limit: 2\n  server_retry_timeout: 2000\n  servers:\n")
        f.writelines(f"    - 127.0.0.1:{p}:1 m{i}\n" for i, p in enumerate(mc_ports))
        f.write(f"rd:\n  listen: 127.0.0.1:{rd_listen}\n  redis: true\n  timeout: 1000\n  servers:\n")
        f.writelines(f"    - 127.0.0.1:{p}:1 r{i}\n" for i, p in enumerate(rd_ports))


write_config(0)
cashew = subprocess.Popen([binary, "-c", conf, "-p", pid_file, "-s", str(stats), "-a", "127.0.0.1",
                           "--admin", f"127.0.0.1:{admin_port}", "-o", os.path.join(out_dir, "cashew.log"),
                           "--threads", "2"])
wait_port(mc_listen)
wait_port(rd_listen)

stop = threading.Event()
lock = threading.Lock()
counts = {"requests": 0, "errors": 0, "reconnects": 0, "mismatches": 0, "tracked": 0}
mismatches = []


def count(**kw):
    with lock:
        for k, v in kw.items():
            counts[k] += v


def mismatch(what):
    with lock:
        counts["mismatches"] += 1
        if len(mismatches) < 20:
            mismatches.append(what)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def memcached_client(tag, pipeline, value_size):
    """Sets then gets its own keys, pipelined; a get must answer its own key with a
    value stored for that key (an older one is a cache's right after an ejection
    moved the key and back), or miss (a server restarted), or fail; never another
    key's."""
    while not stop.is_set():
        try:
            c = Conn(mc_listen)
            while not stop.is_set():
                keys = [f"{tag}:{random.randrange(200)}" for _ in range(pipeline)]
                out = b""
                for k in keys:
                    v = f"{k}:{random.randrange(10**9)}".encode().ljust(value_size, b".")
                    out += b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (k.encode(), len(v), v, k.encode())
                c.s.sendall(out)
                for k in keys:
                    reply = c.line()
                    if reply != b"STORED" and not reply.startswith(b"SERVER_ERROR"):
                        mismatch(f"set {k}: {reply[:60]!r}")
                    reply = c.line()
                    if reply.startswith(b"VALUE "):
                        _, key, _, n = reply.split(b" ")[:4]
                        data = c.exact(int(n) + 2)[:-2]
                        if key.decode() != k or not data.startswith(k.encode() + b":"):
                            mismatch(f"get {k}: got {key!r} {data[:40]!r}")
                        if c.line() != b"END":
                            mismatch(f"get {k}: no END")
                    elif reply == b"END" or reply.startswith(b"SERVER_ERROR"):
                        count(errors=reply != b"END")
                    else:
                        mismatch(f"get {k}: {reply[:60]!r}")
                count(requests=2 * pipeline)
        except (EOFError, OSError):
            count(reconnects=1)
            time.sleep(0.05)


def multiget_client():
    while not stop.is_set():
        try:
            c = Conn(mc_listen)
            while not stop.is_set():
                keys = [f"mg:{random.randrange(50)}" for _ in range(10)]
                c.s.sendall(b"get " + " ".join(keys).encode() + b"\r\n")
                seen = []
                while True:
                    reply = c.line()
                    if reply == b"END" or reply.startswith(b"SERVER_ERROR"):
                        break
                    if not reply.startswith(b"VALUE "):
                        mismatch(f"multiget: {reply[:60]!r}")
                        break
                    key = reply.split(b" ")[1].decode()
                    c.exact(int(reply.split(b" ")[3]) + 2)
                    seen.append(key)
                order = [k for k in keys if k in seen]
                if seen != order[:len(seen)] and sorted(seen) != sorted(set(seen)):
                    mismatch(f"multiget order {seen} for {keys}")
                count(requests=1)
                if random.random() < 0.1:
                    k = random.choice(keys)
                    c.s.sendall(b"set %s 0 0 3\r\nabc\r\n" % k.encode())
                    c.line()
        except (EOFError, OSError):
            count(reconnects=1)
            time.sleep(0.05)


def redis_counter(tag):
    """INCR of its own key, pipelined: each reply is the one before plus one, or 1
    after the key's server restarted, or an error."""
    last = 0
    while not stop.is_set():
        try:
            c = Conn(rd_listen)
            while not stop.is_set():
                c.s.sendall(b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(tag), tag.encode()) * 8)
                for _ in range(8):
                    reply = c.line()
                    if reply.startswith(b":"):
                        n = int(reply[1:])
                        if n != last + 1 and n != 1:
                            mismatch(f"INCR {tag}: {n} after {last}")
                        last = n
                    elif reply.startswith(b"-"):
                        count(errors=1)
                    else:
                        mismatch(f"INCR {tag}: {reply[:60]!r}")
                count(requests=8)
        except (EOFError, OSError):
            count(reconnects=1)
            time.sleep(0.05)


def resp(c):
    """One RESP2/RESP3 frame from `c`: (type byte, value)."""
    line = c.line()
    kind, rest = line[:1], line[1:]
    if kind in b"+-:_,#(":
        return kind, rest
    if kind in b"$=":
        n = int(rest)
        return kind, None if n < 0 else c.exact(n + 2)[:-2]
    if kind in b"*>~%":
        n = int(rest)
        items = 2 * n if kind == b"%" else n
        return kind, [resp(c) for _ in range(max(items, 0))]
    raise EOFError(f"not RESP: {line[:60]!r}")


def redis_tracking(tag):
    """A RESP3 client with CLIENT TRACKING on (its requests go on connections of its
    own): SET then GET of its own keys, pipelined; a GET answers the value just set,
    or nil (its server restarted), or an error; invalidations come between replies
    and name its keys, or none (forget everything)."""
    enc = lambda *args: b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    def reply(c):
        while True:
            kind, value = resp(c)
            if kind != b">":
                return kind, value
            keys = value[1][1]
            if value[0][1] != b"invalidate" or not (keys is None or all(k[1].startswith(tag.encode()) for k in keys)):
                mismatch(f"tracking {tag}: push {value!r:.80}")

    while not stop.is_set():
        try:
            c = Conn(rd_listen)
            c.s.sendall(enc(b"HELLO", b"3") + enc(b"CLIENT", b"TRACKING", b"ON"))
            if reply(c)[0] != b"%" or reply(c) != (b"+", b"OK"):
                mismatch(f"tracking {tag}: HELLO 3 and CLIENT TRACKING ON refused")
                return
            while not stop.is_set():
                pairs = [(f"{tag}:{random.randrange(100)}".encode(), str(random.randrange(10**9)).encode()) for _ in range(8)]
                c.s.sendall(b"".join(enc(b"SET", k, v) + enc(b"GET", k) for k, v in pairs))
                for k, v in pairs:
                    got = reply(c)
                    if got != (b"+", b"OK") and got[0] != b"-":
                        mismatch(f"tracking SET {k!r}: {got!r:.60}")
                    got = reply(c)
                    if got[0] == b"-" or got[0] == b"_":
                        count(errors=got[0] == b"-")
                    elif got != (b"$", v):
                        mismatch(f"tracking GET {k!r}: {got!r:.60}, not {v!r}")
                count(requests=16, tracked=16)
        except (EOFError, OSError):
            count(reconnects=1)
            time.sleep(0.05)


def short_connections():
    while not stop.is_set():
        try:
            c = Conn(mc_listen)
            c.s.sendall(b"version\r\n")
            reply = c.line()
            if reply.startswith(b"SERVER_ERROR"):
                # Asked of a server (none told its version yet) that just died.
                count(errors=1)
            elif not reply.startswith(b"VERSION"):
                mismatch(f"version: {reply[:60]!r}")
            c.s.close()
            count(requests=1)
        except (EOFError, OSError):
            count(reconnects=1)
        time.sleep(0.01)


def slow_reader():
    while not stop.wait(20):
        try:
            c = Conn(mc_listen)
            v = b"x" * 500_000
            c.s.sendall(b"set slow 0 0 %d\r\n%s\r\n" % (len(v), v))
            c.line()
            c.s.setblocking(False)
            end = time.time() + 2
            while time.time() < end:
                try:
                    c.s.send(b"get slow\r\n" * 100)
                except BlockingIOError:
                    time.sleep(0.01)
            c.s.close()
        except (EOFError, OSError):
            pass


def admin(method, path):
    s = socket.create_connection(("127.0.0.1", admin_port), timeout=10)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


workers = [threading.Thread(target=memcached_client, args=(f"p{i}", 16 if i % 2 else 1, 100 if i < 3 else 20_000))
           for i in range(4)]
workers += [threading.Thread(target=multiget_client), threading.Thread(target=redis_counter, args=("c0",)),
            threading.Thread(target=redis_counter, args=("c1",)), threading.Thread(target=short_connections),
            threading.Thread(target=redis_tracking, args=("t0",)),
            threading.Thread(target=slow_reader)]
for w in workers:
    w.start()


def cashew_pid():
    try:
        return int(open(pid_file).read())
    except (OSError, ValueError):
        return None


def sample(pid):
    rss = fds = threads = 0
    try:
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")) / 1024
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except (OSError, StopIteration):
        pass
    return rss, fds, threads


started = time.time()
samples = []
events = []
next_at = {"reload": RELOAD_EVERY, "restart": RESTART_EVERY, "kill": KILL_EVERY, "eject": EJECT_EVERY,
           "sample": 0}
generation, ejected, last_requests, failure = 0, None, 0, None
while time.time() - started < duration and failure is None:
    now = time.time() - started
    pid = cashew_pid()
    if pid is None or not os.path.exists(f"/proc/{pid}"):
        time.sleep(1)
        pid = cashew_pid()
        if pid is None or not os.path.exists(f"/proc/{pid}"):
            failure = f"cashew is gone at {now:.0f} s"
            break
    if now >= next_at["sample"]:
        rss, fds, threads = sample(pid)
        with lock:
            total = counts["requests"]
        rate = (total - last_requests) / SAMPLE_EVERY if samples else 0
        last_requests = total
        samples.append((round(now), round(rss, 1), fds, threads, round(rate), counts["errors"], counts["mismatches"]))
        next_at["sample"] += SAMPLE_EVERY
    if now >= next_at["reload"]:
        generation += 1
        write_config(generation)
        os.kill(pid, signal.SIGHUP)
        next_at["reload"] += RELOAD_EVERY
    if now >= next_at["restart"]:
        os.kill(pid, signal.SIGUSR2)
        events.append((round(now), "restart"))
        next_at["restart"] += RESTART_EVERY
    if now >= next_at["kill"]:
        kind, port = random.choice(list(servers))
        servers[(kind, port)].kill()
        servers[(kind, port)].wait()
        time.sleep(1)
        servers[(kind, port)] = memcached(port) if kind == "mc" else redis(port)
        events.append((round(now), f"killed {kind}:{port}"))
        next_at["kill"] += KILL_EVERY
    if now >= next_at["eject"]:
        if ejected:
            admin("POST", f"/pools/mc/servers/{ejected}/restore")
            ejected = None
        else:
            ejected = "m1"
            admin("POST", f"/pools/mc/servers/{ejected}/eject")
        next_at["eject"] += EJECT_EVERY
    if counts["mismatches"]:
        failure = f"{counts['mismatches']} replies did not match their requests: {mismatches[:5]}"
    time.sleep(0.2)

stop.set()
for w in workers:
    w.join(timeout=20)
pid = cashew_pid()
if pid:
    os.kill(pid, signal.SIGTERM)
for p in servers.values():
    p.kill()

with open(os.path.join(out_dir, "samples.tsv"), "w") as f:
    f.write("seconds\trss_mib\tfds\tthreads\trequests_per_s\terrors\tmismatches\n")
    f.writelines("\t".join(map(str, s)) + "\n" for s in samples)
# A trend: the last third against the first third after the first minute.
steady = [s for s in samples if s[0] >= 60] or samples
third = max(1, len(steady) // 3)
first, last = steady[:third], steady[-third:]
avg = lambda rows, i: sum(r[i] for r in rows) / len(rows)
rss_growth = avg(last, 1) - avg(first, 1)
fd_growth = avg(last, 2) - avg(first, 2)
summary = {
    "seconds": round(time.time() - started), "requests": counts["requests"], "errors": counts["errors"],
    "reconnects": counts["reconnects"], "mismatches": counts["mismatches"], "tracking_client_requests": counts["tracked"], "restarts": sum(1 for e in events if e[1] == "restart"),
    "backend_kills": sum(1 for e in events if e[1].startswith("killed")), "reloads": generation,
    "rss_mib_first_third": round(avg(first, 1), 1), "rss_mib_last_third": round(avg(last, 1), 1),
    "fds_first_third": round(avg(first, 2), 1), "fds_last_third": round(avg(last, 2), 1),
    "max_rss_mib": max(s[1] for s in samples),
}
print(json.dumps(summary, indent=1))
for m in mismatches:
    print("mismatch:", m)
if failure is None and rss_growth > 16:
    failure = f"resident memory grew by {rss_growth:.1f} MiB"
if failure is None and fd_growth > 50:
    failure = f"open descriptors grew by {fd_growth:.0f}"
if failure is None and counts["requests"] == 0:
    failure = "no request was answered"
if failure is None and counts["tracked"] == 0:
    failure = "the tracking client got no reply"
if failure:
    sys.exit("soak FAILED: " + failure)
print("soak passed")
