"""Simulated power loss: after a SIGKILL under acked load with --sync always,
the last segment's bytes after the last acknowledged record are what a power
cut may have left unsynced. Replace them with zeros, with garbage, and with
a torn half-record; each time, the restarted gateway must hold every acked
batch exactly once, cut the damage, accept new writes over it, and survive
another restart.
"""
import os
import random
import signal
import threading

from durability import Sender, log_records
from harness import BUILD, Checks, Daemon

c = Checks("test_power_loss")
args = ("--sync", "always", "--checkpoint-every", "0", "--log-segment-bytes", "2M")
rng = random.Random(11)
d = Daemon(*args, sensors=64, ring=65536)
data_dir = d.data_dir
sender = Sender()


def load_then_kill(daemon, seconds):
    killer = threading.Timer(seconds, daemon.proc.send_signal, args=(signal.SIGKILL,))
    killer.start()
    sender.run(daemon.tcp_port, seconds=seconds + 5)
    killer.join()
    daemon.proc.wait()
    daemon.kill_keep_data()


def mangle(variant):
    """Damage the last segment after the last acked record; returns the bytes changed."""
    records = log_records(BUILD, data_dir)
    last_segment = max(r["segment"] for r in records)
    acked_end = max([r["offset"] + r["bytes"] for r in records
                     if r["segment"] == last_segment and r["seq"] <= sender.acked[r["stream"]]] or [64])
    later = [r for r in records if r["segment"] == last_segment and r["offset"] >= acked_end]
    path = os.path.join(data_dir, last_segment)
    with open(path, "r+b") as f:
        f.seek(acked_end)
        if variant == "zeros":
            f.write(b"\0" * 65536)
        elif variant == "garbage":
            f.write(bytes(rng.randrange(256) for _ in range(65536)))
        else:  # torn: half of the first unacked record, then zeros
            half = later[0]["bytes"] // 2 if later else 40
            f.seek(acked_end + half)
            f.write(b"\0" * 65536)
    return len(later)


for variant in ("zeros", "garbage", "torn"):
    load_then_kill(d, rng.uniform(0.3, 0.8))
    lost = mangle(variant)
    d = Daemon(*args, sensors=64, ring=65536, data_dir=data_dir)
    c.check(sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True),
            "%s: resend after restart" % variant)
    sender.verify(d, c, "%s (%d unacked records damaged)" % (variant, lost))
    m = d.metrics()
    c.check(m.get("sluice_log_healthy") == 1.0, "%s: the log accepts writes again" % variant)
    # New writes land over the cut tail; they too must survive a restart.
    sender.run(d.tcp_port, seconds=0.5)
    sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True)
    rc, _ = d.stop()
    c.eq(rc, 0, "%s: SIGTERM exits 0" % variant)
    d.kill_keep_data()
    d = Daemon(*args, sensors=64, ring=65536, data_dir=data_dir)
    sender.verify(d, c, "%s, then new writes and a restart" % variant)
d.stop()
c.finish()
