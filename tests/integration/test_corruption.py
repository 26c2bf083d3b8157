"""Corrupt and truncated log data: a bit flip in a record of a closed
segment, a zeroed 512-byte sector, a truncated closed segment, and damage in
the open segment. Each time recovery completes, skips and counts exactly the
damaged records (sluice_log_corrupt_records_total), keeps every later record
and segment, and sluice-log reports the same damage.
"""
import os
import shutil
import subprocess

from durability import Sender, log_records
from harness import BUILD, Checks, Daemon

c = Checks("test_corruption")
args = ("--checkpoint-every", "0", "--log-segment-bytes", "2M")
d = Daemon(*args, sensors=256, ring=65536)
sender = Sender(sensors_per_stream=40, window=128)
sender.run(d.tcp_port, seconds=3)
sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True)
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
pristine = d.data_dir
d.kill_keep_data()
records = log_records(BUILD, pristine)
segments = sorted({r["segment"] for r in records})
c.check(len(segments) >= 3, "the load spans at least 3 segments (%d)" % len(segments))
p = subprocess.run([os.path.join(BUILD, "sluice-log"), pristine], capture_output=True, text=True)
c.eq(p.returncode, 0, "sluice-log: a clean directory exits 0")


def damaged(name, mutate):
    """Copy the pristine directory, damage it, restart on it; returns (daemon, hit records)."""
    work = pristine + "-" + name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, work)
    os.unlink(os.path.join(work, "LOCK"))
    hit = mutate(work)
    daemon = Daemon(*args, sensors=256, ring=65536, data_dir=work)
    return daemon, hit, work


def records_in(segment, start, end):
    return [r for r in records if r["segment"] == segment and r["offset"] < end and r["offset"] + r["bytes"] > start]


def flip_bit(work):
    r = [r for r in records if r["segment"] == segments[1]][len(records) // (4 * len(segments))]
    with open(os.path.join(work, r["segment"]), "r+b") as f:
        f.seek(r["offset"] + 64 + 5)
        byte = f.read(1)[0]
        f.seek(r["offset"] + 64 + 5)
        f.write(bytes([byte ^ 0x10]))
    return [r]


def zero_sector(work):
    mid = [r for r in records if r["segment"] == segments[0]]
    start = (mid[len(mid) // 2]["offset"] // 512 + 1) * 512
    with open(os.path.join(work, segments[0]), "r+b") as f:
        f.seek(start)
        f.write(b"\0" * 512)
    return records_in(segments[0], start, start + 512)


def truncate_closed(work):
    seg = [r for r in records if r["segment"] == segments[1]]
    cut = seg[-len(seg) // 3]["offset"] + 10
    os.truncate(os.path.join(work, segments[1]), cut)
    return [r for r in seg if r["offset"] + r["bytes"] > cut]


def damage_open(work):
    seg = [r for r in records if r["segment"] == segments[-1]]
    r = seg[len(seg) // 2]
    with open(os.path.join(work, r["segment"]), "r+b") as f:
        f.seek(r["offset"] + 8)  # the lsn field: the header CRC catches it
        f.write(b"\xff\xff")
    return [r]


for name, mutate, counted in (("bit flip", flip_bit, "corrupt"), ("zeroed sector", zero_sector, "corrupt"),
                              ("truncated closed segment", truncate_closed, "corrupt"),
                              ("open segment", damage_open, "corrupt")):
    d, hit, work = damaged(name.replace(" ", "_"), mutate)
    missing = {(r["stream"], r["seq"]) for r in hit}
    c.check(len(missing) >= 1, "%s: the damage hits at least one record" % name)
    sender.verify(d, c, "%s: all but the %d damaged records kept" % (name, len(missing)), missing=missing)
    m = d.metrics()
    c.check(m.get("sluice_log_corrupt_records_total", 0) >= 1, "%s: counted as corrupt (%r)" %
            (name, m.get("sluice_log_corrupt_records_total")))
    p = subprocess.run([os.path.join(BUILD, "sluice-log"), work], capture_output=True, text=True)
    c.check(p.returncode == 1 and "damage" in p.stdout, "%s: sluice-log reports the damage" % name)
    d.stop()
    shutil.rmtree(work, ignore_errors=True)
shutil.rmtree(os.path.dirname(pristine), ignore_errors=True)
c.finish()
