"""Crash safety: SIGKILL the daemon at random moments under pipelined, acked
TCP load with --sync always, restart it on the same data directory, resend
everything not acked, and check that every batch is stored exactly once, in
order, with its values. Checkpoints are made small and frequent so that the
kills also land in the middle of them, and restarts recover from them.

Restarts alternate between the two ways of applying (--apply-thread on and
off), so both are killed mid-flight and each recovers what the other wrote.
At the end sluice-log describes the checkpoints left (and damaged ones).

SLUICE_CRASH_CYCLES sets the number of kill cycles (default 20).
"""
import os
import random
import shutil
import signal
import subprocess
import threading

from durability import Sender
from harness import BUILD, Checks, Daemon

c = Checks("test_crash")
cycles = int(os.environ.get("SLUICE_CRASH_CYCLES", "20"))
rng = random.Random(int(os.environ.get("SLUICE_CRASH_SEED", "7")))
args = ("--sync", "always", "--checkpoint-every", "256K", "--log-segment-bytes", "2M")
d = Daemon(*args, sensors=64, ring=65536)
data_dir, port = d.data_dir, d.tcp_port
sender = Sender()
for cycle in range(cycles):
    # Kill without warning at a random moment while batches are in flight.
    delay = rng.uniform(0.05, 0.6)
    killer = threading.Timer(delay, d.proc.send_signal, args=(signal.SIGKILL,))
    killer.start()
    sender.run(d.tcp_port, seconds=delay + 5)
    killer.join()
    d.proc.wait()
    d.kill_keep_data()
    mode = "off" if cycle % 2 == 0 else "on"
    d = Daemon(*args, "--apply-thread", mode, sensors=64, ring=65536, data_dir=data_dir)
print("crash: %d kill cycles, %d batches acked per stream, %d duplicates on resend, %d overloaded" %
      (cycles, min(sender.acked.values()), sender.duplicates, sender.overloaded))
c.check(sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True), "final resend")
c.check(all(sender.acked[s] == sender.next_seq[s] - 1 for s in sender.streams), "every batch acked in the end")
c.check(min(sender.acked.values()) > 100, "enough load got through to mean something")
sender.verify(d, c, "after %d SIGKILLs" % cycles)
m = d.metrics()
c.check(m.get("sluice_recovery_records_replayed", -1) >= 0, "recovery reported")
# And once more after a clean restart: the same state.
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
d.kill_keep_data()
d = Daemon(*args, sensors=64, ring=65536, data_dir=data_dir)
sender.verify(d, c, "after a clean restart")
d.stop()
# sluice-log reads each checkpoint's header (and says what is wrong with a bad one).
names = sorted(n for n in os.listdir(data_dir) if n.startswith("ckpt-") and n.endswith(".ckpt"))
c.check(len(names) >= 1, "checkpoints written")
with open(os.path.join(data_dir, names[-1]), "r+b") as f:
    f.seek(40)
    f.write(b"\x07")  # coarse_buckets_total: the header CRC no longer matches
with open(os.path.join(data_dir, "ckpt-00000000000000ff.ckpt"), "wb") as f:
    f.write(b"SLUICECK\x02")
p = subprocess.run([os.path.join(BUILD, "sluice-log"), data_dir], capture_output=True, text=True)
lines = {l.split(":")[0]: l for l in p.stdout.splitlines() if l.startswith("ckpt-")}
for n in names[:-1]:
    c.check("version 3, seq %d, " % int(n[5:21], 16) in lines.get(n, "") and
            "64 sensors x 65536 readings, 61 coarse buckets" in lines.get(n, ""),
            "sluice-log describes %s: %s" % (n, lines.get(n)))
c.check("bad header CRC" in lines.get(names[-1], ""), "a damaged header is named: %s" % lines.get(names[-1]))
c.check("truncated header (9 of 128 bytes)" in lines.get("ckpt-00000000000000ff.ckpt", ""),
        "a short file is named: %s" % lines.get("ckpt-00000000000000ff.ckpt"))
shutil.rmtree(os.path.dirname(data_dir), ignore_errors=True)
c.finish()
