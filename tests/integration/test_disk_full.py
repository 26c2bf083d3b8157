"""A disk smaller than --log-bytes-max: ENOSPC recycles what a checkpoint holds.

The fault injector makes every fallocate after the second fail with ENOSPC
(a disk with room for two 2 MiB segments under a 64 MiB --log-bytes-max).
With checkpoints on, each time the log needs a new segment it recycles the
oldest one once a checkpoint holds all of its records (counted in
sluice_log_recycled_on_enospc_total), and while none does it refuses
writes (OVERLOADED, /healthz 503 saying why), asks for a checkpoint and
resumes by itself. Ingest never stops for good: a pipelined sender goes on
through several segments' worth, every acked batch is stored exactly once,
no record was recycled that no checkpoint held, and the directory holds
two segment files and scans clean.
"""
import os
import subprocess
import time

from durability import Sender
from harness import BUILD, Checks, Daemon

c = Checks("test_disk_full")
# Round 1: checkpoints every 1M of log usually hold the oldest segment by the time it is needed.
# Round 2: checkpoints too rare to come due by themselves: the full disk asks for each one.
for every in ("1M", "32M"):
    what = "--checkpoint-every %s" % every
    d = Daemon("--sync", "batch", "--log-segment-bytes", "2M", "--log-bytes-max", "64M", "--checkpoint-every",
               every, "--io-faults", "fallocate:ENOSPC:3-*", sensors=256, ring=65536)
    watcher = d.watch_health(0.05)
    sender = Sender(sensors_per_stream=40, window=32)
    deadline = time.time() + 90
    recycled = 0
    while time.time() < deadline and recycled < 3:
        sender.run(d.tcp_port, seconds=0.5)
        recycled = d.metrics().get("sluice_log_recycled_on_enospc_total", 0)
    health = watcher.stop()
    sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True)
    m = d.metrics()
    c.check(recycled >= 3, "%s: segments a checkpoint held were recycled on ENOSPC (%r)" % (what, recycled))
    c.eq(m.get("sluice_log_recycled_records_total"), 0.0, "%s: no record recycled that no checkpoint held" % what)
    c.check(m.get("sluice_log_segments_created_total", 0) >= 5, "%s: ingest went on through several segments (%r)"
            % (what, m.get("sluice_log_segments_created_total")))
    c.eq(m.get("sluice_log_healthy"), 1.0, "%s: healthy at the end" % what)
    unhealthy = [body for status, body in health if status == 503]
    print("disk_full %s: %d of %d health probes were 503; %d OVERLOADED answers; %r checkpoints" %
          (what, len(unhealthy), len(health), sender.overloaded, m.get("sluice_checkpoints_completed_total")))
    c.check(all("space" in b or "checkpoint" in b for b in unhealthy), "%s: any 503 says why (%r)" %
            (what, unhealthy[:1]))
    if every == "32M":
        c.check(sender.overloaded >= 1, "%s: writes waited for a checkpoint the log asked for" % what)
        c.check(m.get("sluice_checkpoints_completed_total", 0) >= 1 and m.get("sluice_log_bytes_written_total", 0) < 32e6,
                "%s: the log asked for the checkpoints (none came due by log bytes)" % what)
    c.check(d.proc.poll() is None, "%s: the process stayed up" % what)
    sender.verify(d, c, "%s: on a full disk" % what)
    rc, _ = d.stop()
    c.eq(rc, 0, "%s: SIGTERM exits 0" % what)
    segs = [n for n in os.listdir(d.data_dir) if n.startswith("log-") and n.endswith(".seg")]
    c.eq(len(segs), 2, "%s: the log stayed in the two segments the disk holds" % what)
    p = subprocess.run([os.path.join(BUILD, "sluice-log"), d.data_dir], capture_output=True, text=True)
    c.eq(p.returncode, 0, "%s: sluice-log: the directory scans clean (%s)" % (what, p.stdout[-300:]))
    d.kill_keep_data()
c.finish()
