"""I/O errors on the log, injected through the syscall seam (--io-faults):
a failed fdatasync, then no space for a fresh segment for a few seconds.
Nothing whose write or sync failed is acked (the sender gets OVERLOADED and
resends); the failed segment is never synced again (a fresh one takes
over); while no segment can be had, /healthz answers 503 saying why and
/metrics counts it; the process stays up and resumes by itself when the
fault clears; in the end every acked batch is stored exactly once.
"""
import time

from durability import Sender
from harness import Checks, Daemon

c = Checks("test_io_faults")
# fallocate #1 is the first segment; fdatasync #1 is its header. The 30th sync
# fails; the fresh segments tried next (fallocate #2..#4, one a second) find no
# space; the 5th fallocate works. Two more syncs fail later, each retiring a
# segment under pipelined load: the batches behind a failed one must wait for
# its resend, or the resend would be a DUPLICATE and the batch lost.
d = Daemon("--sync", "always", "--io-faults",
           "fdatasync:EIO:30,fdatasync:EIO:200,fdatasync:EIO:400,fallocate:ENOSPC:2-4", sensors=64,
           ring=65536)
watcher = d.watch_health(0.05)
sender = Sender(window=8)
deadline = time.time() + 12
while time.time() < deadline:
    sender.run(d.tcp_port, seconds=0.5)
health = watcher.stop()
sender.run(d.tcp_port, seconds=30, new_batches=False, until_all_acked=True)
unhealthy = [body for status, body in health if status == 503]
c.check(len(unhealthy) > 0, "/healthz said 503 while no segment could be had")
c.check(any("log" in b and ("space" in b or "segment" in b) for b in unhealthy),
        "the 503 says why (%r)" % (unhealthy[:1],))
c.check(health and health[-1][0] == 200, "/healthz is 200 again once the fault cleared")
m = d.metrics()
c.check(m.get("sluice_log_sync_errors_total", 0) == 3, "the failed syncs are counted (%r)" %
        m.get("sluice_log_sync_errors_total"))
c.check(m.get("sluice_log_segments_retired_total", 0) >= 3, "each failed segment was retired")
c.check(m.get("sluice_log_records_failed_total", 0) >= 1, "the failed commit's records are counted")
c.check(m.get("sluice_log_healthy") == 1.0, "healthy at the end")
c.check(sender.overloaded >= 1, "the sender was told OVERLOADED (%d)" % sender.overloaded)
c.check(d.proc.poll() is None, "the process stayed up")
sender.verify(d, c, "after the faults")
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
