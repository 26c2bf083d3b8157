"""The HTTP API of the real daemon, fed over the native protocol.

Proves: the spec's example answers (list, sensor, stats); all three
readings formats carry the same readings; 400 for bad values of known
parameters, 404 for unknown sensors and paths; /metrics passes
`promtool check metrics` and carries every metric HTTP_API.md requires.
"""
import http.client
import json
import shutil
import struct
import subprocess

from harness import Checks, Daemon, batch, parse_ack, recv_exact, vector

T0 = 1700000000000000
c = Checks("test_http_api")
d = Daemon()
s = d.tcp()
s.sendall(vector("batch_ok.bin"))
parse_ack(recv_exact(s, 32))
frames = b"".join(batch(9, seq, T0 + seq * 1000000, [(42, 0, float(seq))]) for seq in range(1, 101))
s.sendall(frames)
acks = [parse_ack(recv_exact(s, 32)) for _ in range(100)]
c.check(all(a["status"] == 0 for a in acks), "100 batches for sensor 42 acked OK")
s.close()

status, body = d.json("/api/v1/sensors?limit=2")
c.eq(status, 200, "list")
c.eq(body, {"total": 3, "sensors": [
    {"id": 1, "readings_total": 2, "last_t_us": T0 + 2000, "last_value": 22.0},
    {"id": 2, "readings_total": 1, "last_t_us": T0 + 1000, "last_value": -3.25}]}, "the spec's list example")
status, body = d.json("/api/v1/sensors?offset=2&limit=5")
c.eq([x["id"] for x in body["sensors"]], [42], "offset")

status, one = d.json("/api/v1/sensors/1")
c.eq(status, 200, "sensor 1")
c.eq(one["retained"], {"count": 2, "from_t_us": T0, "to_t_us": T0 + 2000}, "retained")
w = one["windows"]["10s"]
c.eq((w["count"], w["mean"], w["min"], w["max"], w["exact"]), (2, 21.75, 21.5, 22.0, True), "10s window")
c.check(abs(w["stddev"] - 0.3535533905932738) < 1e-15, "sample stddev")
c.eq(sorted(one["windows"]), ["10s", "1h", "1m"], "one entry per configured window")

status, st = d.json("/api/v1/sensors/42/stats?window_s=10")
# readings at T0+1s .. T0+100s, one per second: t > 100s - 10s covers 91..100
c.eq((st["count"], st["mean"], st["min"], st["max"]), (10, 95.5, 91.0, 100.0, ), "stats window_s=10")

status, js = d.json("/api/v1/sensors/42/readings?from_us=%d&to_us=%d" % (T0 + 5000000, T0 + 9000000))
c.eq(js, {"id": 42, "t_us": [T0 + k * 1000000 for k in range(5, 10)], "value": [5.0, 6.0, 7.0, 8.0, 9.0]},
     "json readings in a range")
status, js = d.json("/api/v1/sensors/42/readings?limit=3")
c.eq(js["value"], [1.0, 2.0, 3.0], "limit returns the oldest N")
status, hdrs, csv = d.get("/api/v1/sensors/42/readings?format=csv&limit=2")
lines = csv.decode().splitlines()
c.eq(lines[0], "t_us,value", "csv header")
c.eq([(int(t), float(v)) for t, v in (x.split(",") for x in lines[1:])],
     [(T0 + 1000000, 1.0), (T0 + 2000000, 2.0)], "csv rows")
status, hdrs, binary = d.get("/api/v1/sensors/42/readings?format=bin")
c.eq(hdrs.get("x-count"), "100", "bin X-Count")
c.eq(len(binary), 100 * 12, "bin length")
times = struct.unpack("<100q", binary[:800])
values = struct.unpack("<100f", binary[800:])
c.eq(list(times), [T0 + k * 1000000 for k in range(1, 101)], "bin times")
c.eq(list(values), [float(k) for k in range(1, 101)], "bin values")

bad = ["/api/v1/sensors?limit=0", "/api/v1/sensors?limit=10001", "/api/v1/sensors?offset=-1",
       "/api/v1/sensors?limit=abc", "/api/v1/sensors/42/stats?window_s=0",
       "/api/v1/sensors/42/stats?window_s=3601", "/api/v1/sensors/42/stats?window_s=x",
       "/api/v1/sensors/42/readings?limit=0", "/api/v1/sensors/42/readings?limit=1000001",
       "/api/v1/sensors/42/readings?format=xml", "/api/v1/sensors/42/readings?from_us=1e9",
       "/api/v1/sensors/4294967296", "/api/v1/sensors/abc",
       "/api/v1/sensors/42/readings?to_us=99999999999999999999999"]
for path in bad:
    status, _, body = d.get(path)
    ok = status == 400
    try:
        ok = ok and "error" in json.loads(body)
    except ValueError:
        ok = False
    c.check(ok, "400 with an error for %s (got %d %r)" % (path, status, body[:80]))
for path in ["/api/v1/sensors/7", "/api/v1/sensors/7/stats?window_s=10", "/nope", "/api/v2/sensors"]:
    status, _, body = d.get(path)
    c.eq(status, 404, "404 for %s" % path)
status, _, body = d.get("/api/v1/sensors/7")
c.eq(json.loads(body), {"error": "unknown sensor"}, "unknown sensor body")

status, hdrs, body = d.get("/metrics")
text = body.decode()
for name in ["sluice_readings_accepted_total", "sluice_readings_rejected_total", "sluice_batches_total",
             "sluice_udp_lost_batches_total", "sluice_sensors", "sluice_sensors_capacity",
             "sluice_memory_planned_bytes", "sluice_resident_bytes", "sluice_resident_peak_bytes",
             "sluice_heap_allocations_after_start_total", "sluice_connections"]:
    c.check("# TYPE %s " % name in text, "metric %s present" % name)
m = d.metrics()
c.eq(m.get("sluice_heap_allocations_after_start_total"), 0.0, "no heap allocation on the ingest path")
c.eq(m.get("sluice_sensors"), 3.0, "sensors gauge")
c.eq(m.get("sluice_readings_accepted_total"), 103.0, "accepted counter")
promtool = shutil.which("promtool")
if c.check(promtool is not None, "promtool installed (Debian's prometheus package)"):
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    c.check(p.returncode == 0, "promtool check metrics: %s" % (p.stdout + p.stderr).decode()[:500])
# Dumps whose sizes fall on the 32 KiB piece boundary: 4,096 bin times fill one piece
# exactly, and the values must follow (the daemon once asserted there), in every format.
d2 = Daemon(ring=16384)
s = d2.tcp()
for n, sensor in ((4096, 500), (4095, 501), (4097, 502), (8192, 503)):
    frames = b"".join(batch(sensor, seq + 1, T0 + seq * 1000,
                            [(sensor, i, float(seq * 1000 + i)) for i in range(min(1000, n - seq * 1000))])
                      for seq in range((n + 999) // 1000))
    s.sendall(frames)
    c.check(all(parse_ack(recv_exact(s, 32))["status"] == 0 for _ in range((n + 999) // 1000)),
            "%d readings for sensor %d acked" % (n, sensor))
    status, hdrs, body = d2.get("/api/v1/sensors/%d/readings?format=bin&limit=1000000" % sensor)
    c.eq((status, hdrs.get("x-count"), len(body)), (200, str(n), 12 * n), "bin dump of %d readings whole" % n)
    vals = struct.unpack("<%df" % n, body[8 * n:])
    c.eq(vals[-1], float((n - 1) // 1000 * 1000 + (n - 1) % 1000), "bin dump of %d: the last value" % n)
    status, _, jbody = d2.get("/api/v1/sensors/%d/readings?format=json&limit=1000000" % sensor)
    c.eq((status, len(json.loads(jbody)["value"])), (200, n), "json dump of %d readings whole" % n)
    status, _, cbody = d2.get("/api/v1/sensors/%d/readings?format=csv&limit=1000000" % sensor)
    c.eq((status, len(cbody.decode().splitlines())), (200, n + 1), "csv dump of %d readings whole" % n)
s.close()
rc2, _ = d2.stop()
c.eq(rc2, 0, "the second gateway exits 0")
# GET and HEAD /ping: 204 with the headers InfluxDB clients look for (LINE_PROTOCOL.md).
for method in ("GET", "HEAD"):
    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
    conn.request(method, "/ping")
    r = conn.getresponse()
    body = r.read()
    c.eq((r.status, body), (204, b""), "%s /ping: 204, no body" % method)
    c.check(r.getheader("X-Influxdb-Version", "").startswith("1.") and "Sluice" in r.getheader("X-Influxdb-Build", ""),
            "%s /ping: X-Influxdb-Version and X-Influxdb-Build (%r)" % (method, r.getheaders()))
    conn.close()
c.check(d.metrics().get('sluice_http_requests_total{code="204"}') == 2.0, "the pings are counted as 204s")
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM exits 0")
c.finish()
