"""The uplink tests' upstreams themselves: engines.py's real engines and fakeup.py's fake one.

Proves: snappy blocks made by libsnappy (tests/data/snappy) decompress exactly, and the rarer forms
libsnappy never emits; the remote write encoder and decoder agree with each other, with a real
Prometheus (what the Python side encodes is queried back) and with vmagent's Go encoder (what it
sends is decoded); VictoriaMetrics, InfluxDB 1.x and Prometheus each start on free loopback ports,
take points the way the uplink sends them (gzip line protocol with precision=u; snappy remote
write) and give them back exactly (value and time); their answers to bad lines, duplicates, old
and out-of-order samples are the ones the uplink is built for; VictoriaMetrics keeps its data
across a stop and a start on the same port; every engine stopped leaves no PID and a free port;
every fakeup fate (status with headers and body, hang and release, slow, close, the default 204,
a callable script) over keep-alive connections, Expect: 100-continue and chunked bodies.
"""
import gzip
import http.client
import os
import socket
import tempfile
import threading
import time

from engines import EngineError, InfluxDB1, f32, Prometheus, VictoriaMetrics, VMAgent
from fakeup import (FakeUpstream, SnappyError, decode_write_request, encode_write_request, post_lines,
                    post_remote_write, snappy_compress, snappy_decompress)
from harness import Checks, _tmp_dirs, port_is_free, wait_until

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../data/snappy")
c = Checks("test_engines")
tmp = tempfile.mkdtemp(prefix="sluice-engines-")
_tmp_dirs.append(tmp)  # removed at exit
t_begin = time.time()
NOW_MS = int(time.time()) * 1000
NOW_US = NOW_MS * 1000
starts = {}


def gone(engine, what):
    """The engine's process is reaped and its ports are free."""
    pid = engine.pid
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    c.check(not alive and engine.proc.returncode is not None, "%s: pid %d gone" % (what, pid))
    for p in engine.ports:
        c.check(port_is_free(p), "%s: port %d free" % (what, p))


# --- snappy: libsnappy's blocks, the forms it never emits, damage ---
names = sorted(f[:-7] for f in os.listdir(DATA) if f.endswith(".snappy"))
c.check(len(names) >= 6, "the snappy fixtures are there")
for name in names:
    with open(os.path.join(DATA, name + ".snappy"), "rb") as f:
        packed = f.read()
    with open(os.path.join(DATA, name + ".raw"), "rb") as f:
        raw = f.read()
    c.check(snappy_decompress(packed) == raw, "libsnappy's %s.snappy decompresses to %s.raw" % (name, name))
# a literal with a 3-byte length (tag 62), a copy with a 4-byte offset, an overlapping copy
lit = bytes(range(256)) * 3
hand = bytes([0x88, 0x06]) + bytes([62 << 2]) + (len(lit) - 1).to_bytes(3, "little") + lit \
    + bytes([(4 - 1) << 2 | 3]) + (256).to_bytes(4, "little") + bytes([(4 - 1) << 2 | 2]) + (1).to_bytes(2, "little")
c.eq(snappy_decompress(hand), lit + lit[-256:-252] + lit[-253:-252] * 4, "tag 62 literal, 4-byte offset copy, overlap")
for bad, what in [(b"\x05\x00a", "fewer bytes than announced"), (b"\x03\x08ab", "a literal past the end"),
                  (b"\x04\x00a\x09\x05", "a copy from before the start"), (b"\x80", "a truncated length"),
                  (b"\x01\x04ab", "more bytes than announced")]:
    try:
        snappy_decompress(bad)
        c.check(False, "snappy refuses %s" % what)
    except SnappyError:
        c.check(True, "")
for n in (0, 1, 59, 60, 61, 255, 256, 257, 65536, 70000):
    data = bytes((i * 7) & 0xFF for i in range(n))
    c.check(snappy_decompress(snappy_compress(data)) == data, "snappy_compress round trip of %d bytes" % n)

# --- remote write messages both ways ---
series = [({"__name__": "temp_value", "sensor": str(s), "gateway": "edge-7"},
           [(1700000000000 + i * 1000, s + i / 4) for i in range(40)]) for s in range(8)]
with open(os.path.join(DATA, "remote_write.raw"), "rb") as f:
    c.check(decode_write_request(f.read()) == series, "remote_write.raw decodes to the series it was made of")
odd = [({"__name__": "m", "k": "\u00e9\"\\"}, [(-1000, -0.0), (0, 1e-300), (2 ** 62, 3.4028234663852886e38)]),
       ({"__name__": "empty"}, [])]
c.eq(decode_write_request(encode_write_request(odd)), odd, "negative time, odd values and labels round trip")

# --- VictoriaMetrics: line protocol (gzip, precision=u) and remote write, read back exactly ---
vm = VictoriaMetrics(tmp)
starts["victoria-metrics"] = vm.start_s
c.eq(vm.export(), [], "VictoriaMetrics starts empty")
five_years_us = 5 * 365 * 86400 * 10 ** 6
lines = ["m,sensor=1 value=0.100000001 %d" % (NOW_US - 60 * 10 ** 6 + 999),  # f32 0.1; µs trimmed to ms
         "m,sensor=1 value=-0.25 %d" % (NOW_US - 30 * 10 ** 6),
         "m,sensor=2 value=21.75 %d" % (NOW_US - five_years_us),              # years old
         "m,sensor=2 value=7 %d" % (NOW_US + 3600 * 10 ** 6),                 # an hour ahead
         "m,sensor=3 value=1 1000000",                                         # 1970
         "m,sensor=5 value=3.40282347e+38 %d" % NOW_US]                        # the largest f32
c.eq(vm.write_lines(lines), (204, ""), "VictoriaMetrics: gzip line protocol with precision=u")
c.eq(vm.write_lines(lines[:2]), (204, ""), "VictoriaMetrics: the same points again")
c.eq(vm.write_lines(["bad line", "m,sensor=4 value=2 %d" % NOW_US, "m,sensor=4 value= 1"]), (204, ""),
     "VictoriaMetrics: bad lines are skipped, the request still 204")
c.eq(vm.write_lines(["far,sensor=1 value=1 %d" % (NOW_US + 3 * 86400 * 10 ** 6)]), (204, ""),
     "VictoriaMetrics: a point 3 days ahead still 204")
rw = [({"__name__": "rw_value", "sensor": "9"}, [(NOW_MS - 2000, 0.5), (NOW_MS - 3000, 2.5), (NOW_MS - 1000, 1.0)]),
      ({"__name__": "rw_value", "sensor": "10"}, [(NOW_MS - five_years_us // 1000, 4.0)])]
c.eq(vm.remote_write(rw), (204, ""), "VictoriaMetrics: snappy remote write")
c.eq(vm.remote_write(rw[:1]), (204, ""), "VictoriaMetrics: the same remote write again")
status, body = post_remote_write(vm.url + "/api/v1/write", rw)
c.eq(status, 204, "post_remote_write to VictoriaMetrics")
vm.flush()
want = {("m_value", frozenset({("sensor", "1")})): [(NOW_MS - 60000, f32(0.1)), (NOW_MS - 30000, -0.25)],
        ("m_value", frozenset({("sensor", "2")})): [(NOW_MS - five_years_us // 1000, 21.75), (NOW_MS + 3600000, 7.0)],
        ("m_value", frozenset({("sensor", "5")})): [(NOW_MS, f32(3.4028234663852886e+38))],
        ("m_value", frozenset({("sensor", "3")})): [(1000, 1.0)],
        ("m_value", frozenset({("sensor", "4")})): [(NOW_MS, 2.0)],
        ("rw_value", frozenset({("sensor", "9")})): [(NOW_MS - 3000, 2.5), (NOW_MS - 2000, 0.5), (NOW_MS - 1000, 1.0)],
        ("rw_value", frozenset({("sensor", "10")})): [(NOW_MS - five_years_us // 1000, 4.0)]}
c.eq(vm.samples(), want, "VictoriaMetrics gives back every point once, its time to the ms and its value as the f32 sent (the point 3 days ahead dropped)")
c.eq(len(vm.samples('{__name__="m_value",sensor="1"}')), 1, "samples() with a selector")
c.check("too big timestamp" in vm.log_tail(50), "VictoriaMetrics logs the point too far ahead")
pid = vm.pid
rc, secs = vm.stop()
c.eq(rc, 0, "VictoriaMetrics stops on SIGTERM with status 0")
gone(vm, "VictoriaMetrics stopped")
vm.start()
c.check(vm.pid != pid, "VictoriaMetrics started again, on port %d" % vm.port)
c.eq(vm.samples(), want, "VictoriaMetrics kept every point across the stop")
c.eq(vm.write_lines(["m,sensor=1 value=9 %d" % NOW_US]), (204, ""), "VictoriaMetrics takes writes again")

# --- vmagent: line protocol in, remote write out (to VictoriaMetrics, then to the fake) ---
agent = VMAgent(tmp, vm.url + "/api/v1/write")
starts["vmagent"] = agent.start_s
c.eq(post_lines(agent.influx_url + "/write?precision=u", ["ag,sensor=1 value=2.5 %d" % NOW_US]), (204, ""),
     "vmagent takes gzip line protocol at /write")


def agent_point():
    vm.flush()
    return vm.samples('{__name__="ag_value"}')


c.eq(wait_until(agent_point, timeout_s=30, interval_s=0.2), {("ag_value", frozenset({("sensor", "1")})): [(NOW_MS, 2.5)]},
     "vmagent forwarded it to VictoriaMetrics")
agent.stop()
gone(agent, "vmagent stopped")
vm.kill()
gone(vm, "VictoriaMetrics killed")

fake = FakeUpstream()
agent2 = VMAgent(tmp + "/2", fake.url + "/api/v1/write")
post_lines(agent2.influx_url + "/write?precision=u",
           ["ag,sensor=%d,site=n\u00f8rd value=%s %d" % (s, v, NOW_US + s * 1000) for s, v in [(1, "0.1"), (2, "-3e-5")]])


def agent_series():
    return sorted((sorted(lab.items()), smp) for r in fake.requests for lab, smp in (r.series or []))


got = wait_until(lambda: len(agent_series()) >= 2 and agent_series(), timeout_s=30, interval_s=0.1)
reqs = fake.requests
# vmagent's line protocol parser multiplies by powers of ten: -3e-5 arrives a few ulps off
got = [(lab, [(t, f32(v)) for t, v in smp]) for lab, smp in got or []]
c.eq(got, [([("__name__", "ag_value"), ("sensor", "1"), ("site", "n\u00f8rd")], [(NOW_MS + 1, f32(0.1))]),
           ([("__name__", "ag_value"), ("sensor", "2"), ("site", "n\u00f8rd")], [(NOW_MS + 2, f32(-3e-5))])],
     "fakeup decodes vmagent's own snappy remote write")
c.check(reqs and reqs[0].headers.get("content-encoding") == "snappy", "vmagent's request is snappy")
agent2.stop()
gone(agent2, "the second vmagent stopped")
fake.stop()

# --- InfluxDB 1.x ---
influx = InfluxDB1(tmp)
starts["influxdb"] = influx.start_s
influx.create_db("sluice")
lines = ["m,sensor=1 value=1.5 %d" % (NOW_US - 60 * 10 ** 6 + 999),
         "m,sensor=1 value=-0.25 %d" % (NOW_US - 30 * 10 ** 6),
         "m,sensor=2 value=7 %d" % (NOW_US - five_years_us),
         "m,sensor=2 value=8 %d" % (NOW_US + 3600 * 10 ** 6)]
c.eq(influx.write_lines("sluice", lines), (204, ""), "InfluxDB: gzip line protocol with precision=u")
c.eq(influx.write_lines("sluice", lines[:1]), (204, ""), "InfluxDB: the same point again")
status, body = influx.write_lines("sluice", ["bad line", "m,sensor=3 value=2 %d" % NOW_US])
c.eq(status, 400, "InfluxDB: a bad line is 400")
c.check(body.startswith('{"error":"partial write: unable to parse \'bad line\''), "...partial write: %r" % body)
status, body = influx.write_lines("nodb", lines[:1])
c.eq(status, 404, "InfluxDB: an unknown database is 404 (%s)" % body.strip())
rows = influx.query("sluice", "SELECT value FROM m GROUP BY sensor")
got = sorted((r["sensor"], r["time"], r["value"]) for r in rows)
c.eq(got, [("1", NOW_US - 60 * 10 ** 6 + 999, 1.5), ("1", NOW_US - 30 * 10 ** 6, -0.25), ("2", NOW_US - five_years_us, 7),
           ("2", NOW_US + 3600 * 10 ** 6, 8), ("3", NOW_US, 2)],
     "InfluxDB gives back every point once, to the µs (the good line of the partial write too)")
try:
    influx.query("sluice", "SELEKT")
    c.check(False, "a bad query raises EngineError")
except EngineError:
    pass
influx.stop()
gone(influx, "InfluxDB stopped")

# --- Prometheus: remote write from the Python encoder, queried back; its refusals ---
prom = Prometheus(tmp)
starts["prometheus"] = prom.start_s
base = NOW_MS - 10 * 60000
S = lambda k, pts: [({"__name__": "rw_value", "sensor": k}, pts)]  # noqa: E731
c.eq(prom.remote_write(S("1", [(base + 1000, 1.5), (base + 2000, -0.25), (base + 3000, 1e-3)]) +
                       S("2", [(base - 1800 * 1000, 7.0)])), (204, ""), "Prometheus: snappy remote write")
c.eq(prom.query_raw("rw_value", {"sensor": "1"}), [(base + 1000, 1.5), (base + 2000, -0.25), (base + 3000, 1e-3)],
     "Prometheus gives back what the Python encoder sent")
c.eq(prom.remote_write(S("1", [(base + 3000, 1e-3)])), (204, ""), "Prometheus: its newest sample again is 204")
c.eq(prom.remote_write(S("1", [(base + 3000, 2.0)])), (400, "duplicate sample for timestamp\n"),
     "Prometheus: its newest sample's time with another value")
c.eq(prom.remote_write(S("1", [(base + 1000, 1.5), (base + 2000, -0.25), (base + 3000, 1e-3)])),
     (400, "out of order sample\n"), "Prometheus: a request sent again is out of order")
c.eq(prom.remote_write(S("1", [(base + 2000, -0.25), (base + 4000, 4.0)])), (400, "out of order sample\n"),
     "Prometheus: an old sample before a new one")
c.eq(prom.query_raw("rw_value", {"sensor": "1"})[-1], (base + 3000, 1e-3), "...and the whole request is rolled back")
c.eq(prom.remote_write(S("3", [(base - 86400 * 1000, 1.0)])), (400, "out of bounds\n"),
     "Prometheus: a sample a day old is out of bounds")
c.eq(prom.remote_write(S("4", [(base + 2000, 2.0), (base + 1000, 1.0)])), (204, ""),
     "Prometheus: samples out of order within one request are 204...")
c.eq(prom.query_raw("rw_value", {"sensor": "4"}), [(base + 2000, 2.0)], "...and the older is dropped silently")
prom.stop()
gone(prom, "Prometheus stopped")
prom2 = Prometheus(tmp + "/ooo", ooo_window="10y")
resent = S("1", [(base + 1000, 1.5), (base + 2000, -0.25), (base + 3000, 1e-3)])
c.eq(prom2.remote_write(resent), (204, ""), "Prometheus with out_of_order_time_window")
c.eq(prom2.remote_write(resent), (204, ""), "...a request sent again is 204")
c.eq(prom2.remote_write(S("1", [(base + 2000, 9.0)])), (204, ""), "...an older sample's time with another value is 204")
c.eq(prom2.remote_write(S("2", [(base - 365 * 86400 * 1000, 1.0), (base - 86400 * 1000, 2.0)])), (204, ""),
     "...samples a year and a day old are 204")
c.eq(prom2.query_raw("rw_value", {"sensor": "1"}), resent[0][1], "...kept once, the first value kept")
c.eq(prom2.query_raw("rw_value", {"sensor": "2"}), [(base - 365 * 86400 * 1000, 1.0), (base - 86400 * 1000, 2.0)],
     "...and the old ones kept")
prom2.stop()
gone(prom2, "the second Prometheus stopped")

# --- fakeup ---
fake = FakeUpstream([("status", 503, {"Retry-After": "2"}, "busy"), None, ("status", 400, {}, b"bad")])
conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
conn.request("POST", "/write?db=d&precision=u", gzip.compress(b"m v=1 1\nm v=2 2\n"),
             {"Content-Encoding": "gzip", "Content-Type": "text/plain"})
r = conn.getresponse()
c.eq((r.status, r.getheader("Retry-After"), r.read()), (503, "2", b"busy"), "fakeup: a scripted status, header, body")
conn.request("POST", "/api/v1/write", snappy_compress(encode_write_request(rw)),
             {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"})
r = conn.getresponse()
c.eq((r.status, r.read()), (204, b""), "fakeup: None in a script is 204")
conn.request("POST", "/write", b"plain v=1\n")
r = conn.getresponse()
c.eq((r.status, r.read()), (400, b"bad"), "fakeup: the third fate")
conn.request("GET", "/ping")
r = conn.getresponse()
c.eq((r.status, r.read()), (204, b""), "fakeup: 204 once the script is out")
conn.close()
reqs = fake.wait_requests(4)
c.eq([(q.method, q.path, q.query, q.status) for q in reqs],
     [("POST", "/write", {"db": "d", "precision": "u"}, 503), ("POST", "/api/v1/write", {}, 204),
      ("POST", "/write", {}, 400), ("GET", "/ping", {}, 204)], "fakeup records method, path, query, status")
c.eq(reqs[0].lines, ["m v=1 1", "m v=2 2"], "fakeup decodes gzip line protocol")
c.eq(reqs[1].series, rw, "fakeup decodes snappy remote write")
c.eq(reqs[2].lines, ["plain v=1"], "fakeup decodes plain line protocol")
c.eq(reqs[0].headers.get("content-encoding"), "gzip", "fakeup keeps the headers")
c.eq({q.connection for q in reqs}, {1}, "four requests on one keep-alive connection")
c.eq(fake.connections, 1, "one connection accepted")

# hang, then release: the client sees the connection closed unanswered; the next request is served
fake.script([("hang",), ("hang",)])
outcome = []


def hung_post():
    try:
        post_lines(fake.url + "/write", ["h v=1"], timeout_s=60)
        outcome.append("answered")
    except (OSError, http.client.HTTPException) as e:
        outcome.append(type(e).__name__)


th = threading.Thread(target=hung_post)
th.start()
c.check(wait_until(lambda: fake.hanging == 1, timeout_s=10), "fakeup: a request hangs")
c.eq(len(fake.requests), 5, "...recorded with its body")
c.eq(fake.requests[-1].lines, ["h v=1"], "...decoded")
fake.release()
th.join(timeout=10)
c.eq(outcome, ["RemoteDisconnected"], "fakeup: release closes a hanging request's connection unanswered")
c.eq(fake.requests[-1].status, None, "...and records no status")
th = threading.Thread(target=hung_post)
th.start()
c.check(wait_until(lambda: fake.hanging == 1, timeout_s=10), "fakeup: hang again after a release")
fake.release()
th.join(timeout=10)
c.eq(post_lines(fake.url + "/write", ["after v=1"]), (204, ""), "fakeup serves the next request")

# close, slow, a callable script
fake.script([("close",), ("slow", 100000)])
try:
    post_lines(fake.url + "/write", ["x v=1"])
    c.check(False, "fakeup: close gives no answer")
except (OSError, http.client.HTTPException) as e:
    c.eq(type(e).__name__, "RemoteDisconnected", "fakeup: close, no answer")
body = b"".join(b"slow,k=%d v=1 %d\n" % (i, i) for i in range(20000))  # ~ 400 kB at 100 kB/s
t0 = time.time()
c.eq(post_lines(fake.url + "/write", body, gzipped=False, timeout_s=120), (204, ""), "fakeup: slow, then 204")
elapsed = time.time() - t0
c.check(elapsed >= 0.8 * len(body) / 100000, "fakeup: the slow body took at least its time (%.1f s)" % elapsed)
c.eq(fake.requests[-1].body, body, "...and was read whole")
fake.script(lambda i, q: ("status", 429, {"Retry-After": "1"}, "later") if q.query.get("db") == "full" else None)
c.eq(post_lines(fake.url + "/write?db=full", ["x v=1"]), (429, "later"), "fakeup: a callable script's fate")
c.eq(post_lines(fake.url + "/write?db=ok", ["x v=1"]), (204, ""), "fakeup: a callable's None is 204")

# Expect: 100-continue (libcurl sends it for large bodies) and a chunked body, on one raw connection
s = socket.create_connection(("127.0.0.1", fake.port), timeout=10)
payload = gzip.compress(b"e v=1 1\n")
s.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n"
          b"Expect: 100-continue\r\n\r\n" % len(payload))


def head(sock):
    """One answer's head (no body: 100 and 204 have none)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


c.check(head(s).startswith(b"HTTP/1.1 100 Continue"), "fakeup answers Expect: 100-continue")
s.sendall(payload)
resp = head(s)
c.check(resp.startswith(b"HTTP/1.1 204"), "...then 204 (%r)" % resp[:40])
s.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"6\r\nc v=1\n\r\n7\r\nc2 v=2\n\r\n0\r\n\r\n")
resp = head(s)
c.check(resp.startswith(b"HTTP/1.1 204"), "fakeup takes a chunked body (%r)" % resp[:40])
s.close()
c.eq([q.lines for q in fake.requests[-2:]], [["e v=1 1"], ["c v=1", "c2 v=2"]], "...both decoded")

# stop lets a hanging request go, closes its connection, frees the port
fake.script([("hang",)])
outcome.clear()
th = threading.Thread(target=hung_post)
th.start()
c.check(wait_until(lambda: fake.hanging == 1, timeout_s=10), "fakeup: a request hangs before stop")
port = fake.port
fake.stop()
th.join(timeout=10)
c.check(not th.is_alive() and outcome and outcome[0] != "answered", "fakeup: stop closes a hanging request (%s)" % outcome)
c.check(port_is_free(port), "fakeup: its port is free after stop")

print("engine start times: %s; the whole test: %.1f s" % (
    ", ".join("%s %.2f s" % kv for kv in sorted(starts.items())), time.time() - t_begin))
c.finish()
