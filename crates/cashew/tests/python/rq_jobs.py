"""RQ, current release, through cashew: enqueues N jobs, runs an RQ worker (in
burst mode, without forking) through cashew, and reads each job's result back.
Usage: rq_jobs.py HOST:PORT N"""
import subprocess
import sys
import time

from redis import Redis
from rq import Queue


def square(x):
    return x * x


if __name__ == "__main__":
    address, n = sys.argv[1], int(sys.argv[2])
    host, port = address.rsplit(":", 1)
    connection = Redis(host=host, port=int(port))
    queue = Queue("cashew", connection=connection)
    started = time.time()
    jobs = [queue.enqueue("rq_jobs.square", i) for i in range(n)]
    enqueued = time.time() - started
    worker = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "--worker-class", "rq.worker.SimpleWorker",
         "--url", f"redis://{address}", "cashew"],
        capture_output=True, text=True, timeout=300,
    )
    if worker.returncode != 0:
        sys.exit(f"the worker failed ({worker.returncode}):\n{worker.stderr[-3000:]}")
    done = 0
    for i, job in enumerate(jobs):
        job.refresh()
        if job.return_value() == i * i:
            done += 1
    print(f"{n} jobs enqueued in {enqueued:.1f} s, run in {time.time() - started - enqueued:.1f} s; "
          f"{done} of {n} results")
    sys.exit(0 if done == n else 1)
