"""After a restart the log knows the checkpoint recovery loaded.

A small log (4 MiB in 2 MiB segments, checkpoints on) fills its first
segment and part of the second, and a checkpoint that began after the first
segment was full completes: every record of segment 1 is in it. The daemon
is stopped (SIGTERM, then in a second round SIGKILL) and restarted with
checkpoints so rare that none is due during the test. It then takes more
acked batches than the free log space holds: the next segment can only be
had by recycling segment 1, which the loaded checkpoint covers. Every batch
is answered OK at once (none OVERLOADED: without the fix the log waited for
a new checkpoint), the recycle counter moves, and nothing unprotected is
dropped.
"""
import os
import re
import signal
import subprocess

from harness import BUILD, OK, Checks, Daemon, batch, parse_ack, recv_exact

c = Checks("test_log_restart")
T0 = 1700000000000000
SENSORS = 1000  # one reading each a batch: a 12,064-byte record
RECORD_BYTES = 64 + 12 * SENSORS
SEGMENT = 2 << 20
PER_SEGMENT = (SEGMENT - 64) // RECORD_BYTES
common = ("--sync", "batch", "--log-segment-bytes", "2M", "--log-bytes-max", "4M")


class Feed:
    """Batches on one TCP stream, each acked before the next; counts the statuses."""

    def __init__(self):
        self.seq = 0
        self.statuses = []

    def send(self, d, n):
        s = d.tcp()
        for _ in range(n):
            self.seq += 1
            readings = [(k, 0, float(self.seq)) for k in range(SENSORS)]
            s.sendall(batch(9, self.seq, T0 + self.seq * 1000, readings))
            raw = recv_exact(s, 32, timeout_s=20)
            if len(raw) != 32:
                self.statuses.append(None)
                break
            ack = parse_ack(raw)
            self.statuses.append(ack["status"])
            if ack["status"] != OK:
                break
        s.close()


def checkpoints_idle(d, completed_at_least):
    """Wait until at least that many checkpoints completed and none is in progress."""
    for _ in range(400):
        m = d.metrics()
        done = m.get("sluice_checkpoints_completed_total", 0)
        if done >= completed_at_least and done == m.get("sluice_checkpoints_started_total", 0):
            return done
        d.wait_metric("sluice_checkpoints_completed_total", completed_at_least, timeout_s=0.05)
    return None


def log_layout(data_dir):
    """(last lsn of the oldest segment, newest checkpoint's start lsn) from sluice-log."""
    out = subprocess.run([os.path.join(BUILD, "sluice-log"), data_dir], capture_output=True, text=True,
                         timeout=60).stdout
    segs = [(int(m.group(1)), int(m.group(2)))
            for m in re.finditer(r"segment (\d+), \d+ bytes, \d+ records \(\d+ readings\), lsn up to (\d+)", out)]
    starts = [int(m.group(1)) for m in re.finditer(r"start lsn (\d+)", out)]
    return (min(segs)[1] if segs else None), (max(starts) if starts else None)


for sig in (signal.SIGTERM, signal.SIGKILL):
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGKILL"
    d = Daemon(*common, "--checkpoint-every", "1M", sensors=1024, ring=64)
    data_dir = d.data_dir
    feed = Feed()
    # Segment 1 full and a few records into segment 2; let the checkpoints settle.
    feed.send(d, PER_SEGMENT + 10)
    done = checkpoints_idle(d, 1)
    c.check(done is not None, "%s: checkpoints settled" % name)
    # More than --checkpoint-every: a checkpoint begins after all of segment 1 was applied.
    feed.send(d, 90)
    c.check(checkpoints_idle(d, (done or 0) + 1) is not None, "%s: a later checkpoint completed" % name)
    c.check(all(s == OK for s in feed.statuses), "%s: the first run's batches were OK" % name)
    if sig == signal.SIGTERM:
        rc, _ = d.stop()
        c.eq(rc, 0, "SIGTERM exits 0")
    d.kill_keep_data()
    last1, start = log_layout(data_dir)
    c.check(last1 is not None and start is not None and start >= last1,
            "%s: the newest checkpoint holds all of segment 1 (segment 1 ends at %r, checkpoint starts at %r)"
            % (name, last1, start))
    used_in_2 = (len(feed.statuses) - PER_SEGMENT) * RECORD_BYTES
    free = SEGMENT - 64 - used_in_2
    # Restarted with checkpoints too rare to come due: only the loaded one can free a segment.
    d = Daemon(*common, "--checkpoint-every", "64M", sensors=1024, ring=64, data_dir=data_dir)
    n = free // RECORD_BYTES + 40
    c.check(n * RECORD_BYTES > free, "%s: the test sends more than the free log space" % name)
    before = len(feed.statuses)
    feed.send(d, n)
    after = feed.statuses[before:]
    c.eq((len(after), after.count(OK)), (n, n), "%s: every batch after the restart OK, none OVERLOADED" % name)
    m = d.metrics()
    c.check(m.get("sluice_log_segments_recycled_total", 0) >= 1, "%s: a segment was recycled (%r)" %
            (name, m.get("sluice_log_segments_recycled_total")))
    c.eq(m.get("sluice_log_recycled_records_total"), 0.0, "%s: no record recycled that no checkpoint held" % name)
    c.eq(m.get("sluice_checkpoints_started_total", 0), 0.0, "%s: no new checkpoint was needed" % name)
    c.eq(m.get("sluice_log_healthy"), 1.0, "%s: the log stayed healthy" % name)
    rc, _ = d.stop()
    c.eq(rc, 0, "%s: the restarted daemon exits 0" % name)
    d.kill_keep_data()
c.finish()
