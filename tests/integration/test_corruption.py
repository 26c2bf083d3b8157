"""Corrupt and truncated log data: a bit flip in a record of a closed
segment, a zeroed 512-byte sector, a truncated closed segment, and damage in
the open segment. Each time recovery completes, skips and counts exactly the
damaged records (sluice_log_corrupt_records_total), keeps every later record
and segment, and sluice-log reports the same damage. Four consecutive
records destroyed are counted as 4 lost, with their bytes, by sluice-log,
the recovery's event line and the metrics. A checkpoint with a damaged
payload, and one cut to half: sluice-log names it unusable, says why and
exits 1 (a healthy directory exits 0), and the daemon skips it for the same
reason and loses nothing acked.
"""
import os
import shutil
import subprocess
import time

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

# Four consecutive records destroyed in the middle of a closed segment: 4 lost, and their bytes,
# said by sluice-log, by the recovery's event line and by the metrics (it was counted as 1).
def four_records(work):
    seg = [r for r in records if r["segment"] == segments[1]]
    k = len(seg) // 2
    start, end = seg[k]["offset"], seg[k + 4]["offset"]
    with open(os.path.join(work, segments[1]), "r+b") as f:
        f.seek(start)
        f.write(b"\xa5" * (end - start))
    four_records.bytes = end - start
    return seg[k:k + 4]


d, hit, work = damaged("four_records", four_records)
lost_bytes = four_records.bytes
missing = {(r["stream"], r["seq"]) for r in hit}
sender.verify(d, c, "four records: all but the 4 destroyed kept", missing=missing)
m = d.metrics()
c.eq((m.get("sluice_recovery_corrupt_records"), m.get("sluice_recovery_corrupt_bytes")),
     (4.0, float(lost_bytes)), "four records: recovery counts 4 records and their bytes lost")
c.eq(m.get("sluice_log_corrupt_records_total"), 4.0, "four records: the log counter says 4")
d.stop()
err = d.events_text()
c.check("4 records (%d bytes) lost in 1 damaged regions" % lost_bytes in err,
        "four records: the recovery line says 4 records and their bytes (%r)" % err[-300:])
p = subprocess.run([os.path.join(BUILD, "sluice-log"), work], capture_output=True, text=True)
c.eq(p.returncode, 1, "four records: sluice-log exits 1")
c.check("4 records lost (%d bytes) in 1 damaged regions" % lost_bytes in p.stdout,
        "four records: sluice-log says 4 records and their bytes lost (%r)" % p.stdout[-400:])
d.kill_keep_data()
shutil.rmtree(work, ignore_errors=True)
shutil.rmtree(os.path.dirname(pristine), ignore_errors=True)

# Checkpoints: sluice-log checks each as the loader would, and exits 1 on any unusable one.
ck_args = ("--checkpoint-every", "256K", "--log-segment-bytes", "2M")
d = Daemon(*ck_args, sensors=256, ring=65536)
sender = Sender(sensors_per_stream=40, window=128)
deadline = time.time() + 60
while time.time() < deadline and d.metrics().get("sluice_checkpoints_completed_total", 0) < 2:
    sender.run(d.tcp_port, seconds=0.5)
sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True)
rc, _ = d.stop()
c.eq(rc, 0, "checkpoints: SIGTERM exits 0")
ck_pristine = d.data_dir
d.kill_keep_data()
ckpts = sorted(n for n in os.listdir(ck_pristine) if n.endswith(".ckpt"))
c.check(len(ckpts) == 2, "checkpoints: two complete checkpoints kept (%r)" % ckpts)
p = subprocess.run([os.path.join(BUILD, "sluice-log"), ck_pristine], capture_output=True, text=True)
c.eq(p.returncode, 0, "checkpoints: a healthy directory exits 0 (%s)" % p.stdout[-300:])
c.eq(p.stdout.count("usable: "), 2, "checkpoints: both said usable")


def damage_checkpoint(name, mutate, why):
    work = ck_pristine + "-" + name
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ck_pristine, work)
    os.unlink(os.path.join(work, "LOCK"))
    path = os.path.join(work, ckpts[-1])
    mutate(path)
    p = subprocess.run([os.path.join(BUILD, "sluice-log"), work], capture_output=True, text=True)
    c.eq(p.returncode, 1, "%s: sluice-log exits 1" % name)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith(ckpts[-1])]
    c.check(len(line) == 1 and "UNUSABLE" in line[0] and why in line[0],
            "%s: sluice-log names the checkpoint and says why (%r)" % (name, line))
    c.check("1 unusable checkpoints" in p.stdout, "%s: counted in the total" % name)
    # The daemon's loader skips it too (the same code): it falls back and loses nothing acked.
    d = Daemon(*ck_args, sensors=256, ring=65536, data_dir=work)
    sender.verify(d, c, "%s: the restart falls back to the older checkpoint" % name)
    d.stop()
    err = d.events_text()
    c.check(ckpts[-1] in err and "skipped" in err and why in err,
            "%s: the loader skipped it for the same reason (%r)" % (name, err[-300:]))
    d.kill_keep_data()
    shutil.rmtree(work, ignore_errors=True)


def flip_payload(path):
    with open(path, "r+b") as f:
        f.seek(128 + 64 + 100)  # inside the first sensor chunk's payload
        b = f.read(1)[0]
        f.seek(128 + 64 + 100)
        f.write(bytes([b ^ 0x01]))


def truncate_half(path):
    os.truncate(path, os.path.getsize(path) // 2)


damage_checkpoint("checkpoint payload", flip_payload, "bad chunk payload CRC")
damage_checkpoint("checkpoint cut to half", truncate_half, "truncated")
shutil.rmtree(os.path.dirname(ck_pristine), ignore_errors=True)
c.finish()
