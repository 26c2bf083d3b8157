"""A full log waits for a checkpoint rather than drop acknowledged records.

With checkpoints on, a segment is recycled only once a checkpoint covers all
of its records. A small log (4 MiB in 2 MiB segments) under a fast acked
flood from sluice-load keeps filling up faster than checkpoints of 10,000
sensors complete: writes are refused (OVERLOADED, /healthz 503 saying why)
until the checkpoint in progress completes, then go on. In the end segments
were recycled, no record was dropped unprotected, every reading sent was
accepted exactly once (sluice-load resends OVERLOADED batches), and after a
SIGKILL the recovered per-sensor totals add up to the same count.
"""
import json
import signal
import subprocess

from harness import LOAD, Checks, Daemon

c = Checks("test_log_full")
args = ("--sync", "batch", "--log-bytes-max", "4M", "--log-segment-bytes", "2M", "--checkpoint-every", "1M")
d = Daemon(*args, sensors=10000, ring=1024)
data_dir = d.data_dir
watcher = d.watch_health(0.01)
N = 5000000
p = subprocess.run([LOAD, "--target", "tcp://127.0.0.1:%d" % d.tcp_port, "--streams", "4", "--sensors", "10000",
                    "--batch", "100", "--readings", str(N), "--start-time-us", "-24h", "--quiet"],
                   capture_output=True, text=True, timeout=300)
health = watcher.stop()
c.eq(p.returncode, 0, "sluice-load completed (%s)" % p.stderr[-300:])
res = json.loads(p.stdout)
c.eq((res["accepted"], res["acked_batches"]), (N, res["sent_batches"]), "every reading acked and accepted")
m = d.metrics()
c.eq(m.get("sluice_readings_accepted_total"), float(N), "the gateway stored each reading once")
c.check(m.get("sluice_log_segments_recycled_total", 0) >= 2, "segments were recycled (%r)" %
        m.get("sluice_log_segments_recycled_total"))
c.check(m.get("sluice_checkpoints_completed_total", 0) >= 2, "checkpoints completed (%r)" %
        m.get("sluice_checkpoints_completed_total"))
c.eq(m.get("sluice_log_recycled_records_total"), 0.0, "no record recycled before a checkpoint held it")
waits = [b for s, b in health if s == 503]
print("log_full: %d of %d health probes were 503; %d OVERLOADED answers" % (len(waits), len(health),
                                                                           res["overloaded_batches"]))
c.check(res["overloaded_batches"] > 0 and len(waits) > 0, "the flood did outrun the checkpoints")
c.check(all("checkpoint" in b for b in waits), "the 503 says the log waits for a checkpoint")
d.proc.send_signal(signal.SIGKILL)
d.proc.wait()
d.kill_keep_data()
d = Daemon(*args, sensors=10000, ring=1024, data_dir=data_dir)
total = 0
for offset in range(0, 10000, 10000):
    status, body = d.json("/api/v1/sensors?limit=10000&offset=%d" % offset)
    total += sum(s["readings_total"] for s in body["sensors"])
c.eq(total, N, "after a SIGKILL, the recovered readings add up to what was acked")
d.stop()
c.finish()
