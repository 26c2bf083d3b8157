"""A UDP load of one million readings through sluice-load, with exact
accounting and exact statistics.

Proves: every datagram sent is accounted for (accepted readings equal the
readings sent when the kernel reports no drop), the per-stream gap counter
agrees, and for a sample of sensors the stored readings and the window
statistics the API reports equal a brute-force computation over the
readings the API returns.
"""
import json
import math
import struct
import subprocess

from harness import LOAD, Checks, Daemon

c = Checks("test_udp_load")
d = Daemon("--udp-rcvbuf", "67108864", "--windows", "10s,1m,1h", sensors=2000, ring=1024)
N = 1000000
p = subprocess.run([LOAD, "--target", "udp://127.0.0.1:%d" % d.udp_port, "--streams", "10",
                    "--sensors", "1000", "--batch", "500", "--readings", str(N), "--rate", "1000000",
                    "--start-time-us", "-2h", "--interval-us", "1000000", "--pattern", "walk", "--quiet"],
                   capture_output=True, text=True, timeout=120)
c.eq(p.returncode, 0, "sluice-load exit code (%s)" % p.stderr[-300:])
summary = json.loads(p.stdout)
c.eq(summary["sent_readings"], N, "readings sent")
d.wait_metric("sluice_readings_accepted_total", N, timeout_s=30)
m = d.metrics()
drops = m.get("sluice_udp_kernel_drops_total", 0) + m.get("sluice_udp_lost_batches_total", 0)
c.eq(drops, 0.0, "no datagram lost on loopback at 1M readings/s")
c.eq(m.get("sluice_readings_accepted_total"), float(N), "every reading sent was accepted")
c.eq(m.get('sluice_batches_total{transport="udp",status="OK"}'), float(summary["sent_batches"]), "batches")
c.eq(m.get("sluice_sensors"), 1000.0, "sensors")


def f32(x):
    """The float32 nearest x: min and max are f32 readings, printed in their shortest form."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def brute(ts, vs, window_us):
    cut = ts[-1] - window_us
    xs = [v for t, v in zip(ts, vs) if t > cut]
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return n, mean, min(xs), max(xs), sd


status, listing = d.json("/api/v1/sensors?limit=1000")
ids = [s["id"] for s in listing["sensors"]]
for sid in ids[::97]:
    status, hdrs, body = d.get("/api/v1/sensors/%d/readings?format=bin" % sid)
    n = int(hdrs["x-count"])
    ts = struct.unpack("<%dq" % n, body[:8 * n])
    vs = struct.unpack("<%df" % n, body[8 * n:])
    status, one = d.json("/api/v1/sensors/%d" % sid)
    c.eq(one["readings_total"], N // 1000, "sensor %d got its share" % sid)
    c.eq(n, min(1000, 1024), "sensor %d retained" % sid)
    c.check(all(b - a == 1000000 for a, b in zip(ts, ts[1:])), "sensor %d: one reading a second" % sid)
    for name, w_us in (("10s", 10000000), ("1m", 60000000)):
        w = one["windows"][name]
        cnt, mean, lo, hi, sd = brute(ts, vs, w_us)
        c.check(w["exact"] and w["count"] == cnt and abs(w["mean"] - mean) < 1e-9 * max(1, abs(mean))
                and f32(w["min"]) == lo and f32(w["max"]) == hi and abs(w["stddev"] - sd) < 1e-9 * max(1, sd),
                "sensor %d window %s equals brute force" % (sid, name))
c.eq(m.get("sluice_heap_allocations_after_start_total"), 0.0, "no allocation on the ingest path")
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
