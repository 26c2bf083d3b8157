"""Line protocol in (docs/spec/LINE_PROTOCOL.md), through the real daemon:

- POST /write and /api/v2/write: 204 with X-Sluice-Accepted/Rejected, the readings under their
  canonical names (tags sorted: two tag orders are one sensor), every precision, lines without a
  time taking the receive time; partial writes (400 with the spec's JSON, the good lines stored);
  string fields `unsupported_type`, names over 1,024 bytes `name_too_long`, a full registry
  `series_limit`, each counted; 405, 415, bad precision.
- gzip from curl; a zip bomb and a plain body over --http-max-body are 413 and store nothing; a
  body that is not gzip is 400.
- The InfluxDB 1.x CLI (`influx -import`, which pings first) writing a file of points.
- 503 + Retry-After when the log cannot make a write durable (an injected fdatasync EIO), and the
  name it created is logged again, so after a SIGKILL it has the id the next write got.
- GET /api/v1/series by name and prefix (sorted, paged); "name" in the sensor JSON.
- A name acked before a SIGKILL keeps its id after the restart; new names get the next ids.
- --influx-tcp: lines split across reads, a line over 64 KiB skipped and counted, the next one
  kept; --influx-udp: whole lines a datagram.
"""
import gzip
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.parse

from harness import Checks, Daemon, free_port, wait_until

c = Checks("test_line_write")
BASE = 2147483648


def post(d, path, body, headers=None):
    """(status, headers lower-cased, body) of a POST, through curl (a real client)."""
    hdr_file = tempfile.NamedTemporaryFile(delete=False)
    hdr_file.close()
    cmd = ["curl", "-s", "-o", "-", "-D", hdr_file.name, "-X", "POST", "--data-binary", "@-",
           "-H", "Content-Type: text/plain; charset=utf-8"]
    for k, v in (headers or {}).items():
        cmd += ["-H", "%s: %s" % (k, v)]
    cmd.append("http://127.0.0.1:%d%s" % (d.http_port, path))
    p = subprocess.run(cmd, input=body if isinstance(body, bytes) else body.encode(),
                       capture_output=True, timeout=60)
    raw = open(hdr_file.name, "rb").read().decode(errors="replace")
    os.unlink(hdr_file.name)
    blocks = [b for b in raw.split("\r\n\r\n") if b.strip()]
    lines = blocks[-1].split("\r\n") if blocks else ["HTTP/1.1 000"]
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, p.stdout


def counts(h):
    return int(h.get("x-sluice-accepted", -1)), int(h.get("x-sluice-rejected", -1))


def series_id(d, name):
    status, body = d.json("/api/v1/series?name=" + urllib.parse.quote(name, safe=""))
    return body["id"] if status == 200 else None


def readings(d, sid):
    status, body = d.json("/api/v1/sensors/%d/readings?limit=1000" % sid)
    return list(zip(body["t_us"], body["value"])) if status == 200 else None


import time as _time
t0 = (int(_time.time()) - 3600) * 10**9  # an hour ago in ns, whole seconds

d = Daemon("--max-series", "64", "--http-max-body", "1M", sensors=256, ring=256)

# --- a simple write, every field type, canonical names ---
st, h, body = post(d, "/write?db=x&rp=y&u=a&p=b",
                   "boiler,site=north,room=a temp=21.5,on=t,count=7i,big=3u,state=\"running\" %d\n"
                   "boiler,room=a,site=north temp=22.25 %d\r\n"
                   "# a comment\n\n" % (t0, t0 + 10**9))
c.eq(st, 204, "a good write is 204")
c.eq(counts(h), (5, 1), "accepted and rejected readings in the headers (the string field)")
c.eq(body, b"", "204 has no body")
tid = series_id(d, "boiler,room=a,site=north temp")
c.eq(tid, BASE, "the first name gets --series-id-base")
c.eq(readings(d, tid), [(t0 // 1000, 21.5), (t0 // 1000 + 10**6, 22.25)],
     "both tag orders are one sensor, times in us")
c.eq(readings(d, series_id(d, "boiler,room=a,site=north on")), [(t0 // 1000, 1.0)], "a boolean is 1.0")
c.eq(readings(d, series_id(d, "boiler,room=a,site=north count")), [(t0 // 1000, 7.0)], "an integer")
c.eq(readings(d, series_id(d, "boiler,room=a,site=north big")), [(t0 // 1000, 3.0)], "an unsigned")
c.eq(series_id(d, "boiler,room=a,site=north state"), None, "a string field names no series")
st, body = d.json("/api/v1/sensors/%d" % tid)
c.eq(body.get("name"), "boiler,room=a,site=north temp", "the sensor JSON carries its name")
st, lst = d.json("/api/v1/sensors")
c.check(all("name" in s for s in lst["sensors"]), "listed named sensors carry their names")

# --- precisions; no timestamp takes the receive time ---
sec = t0 // 10**9
for prec, t in [("s", sec), ("ms", sec * 1000 + 1), ("u", sec * 10**6 + 2), ("us", sec * 10**6 + 3),
                ("n", sec * 10**9 + 4999), ("ns", sec * 10**9 + 5000)]:
    st, h, _ = post(d, "/write?precision=" + prec, "prec,p=%s v=1 %d" % (prec, t))
    c.eq(st, 204, "precision %s accepted" % prec)
want = {"s": sec * 10**6, "ms": sec * 10**6 + 1000, "u": sec * 10**6 + 2, "us": sec * 10**6 + 3,
        "n": sec * 10**6 + 4, "ns": sec * 10**6 + 5}
for prec, t_us in want.items():
    c.eq(readings(d, series_id(d, "prec,p=%s v" % prec)), [(t_us, 1.0)], "precision %s in us" % prec)
st, h, _ = post(d, "/write?precision=m", "prec,p=m v=1 %d" % (sec // 60))
st2, h2, _ = post(d, "/write?precision=h", "prec,p=h v=1 %d" % (sec // 3600))
c.check(st == 204 and st2 == 204, "minutes and hours")
c.eq(readings(d, series_id(d, "prec,p=h v")), [((sec // 3600) * 3600 * 10**6, 1.0)], "hours to us")
before = int(_time.time() * 1e6)
post(d, "/write", "notime v=3")
after = int(_time.time() * 1e6)
r = readings(d, series_id(d, "notime v"))
c.check(r and before - 10**6 <= r[0][0] <= after + 10**6, "no timestamp: the receive time (%r)" % r)
st, h, body = post(d, "/write?precision=fortnight", "x v=1")
c.check(st == 400 and b"precision" in body, "a bad precision is 400: %r" % body)

# --- partial writes ---
st, h, body = post(d, "/api/v2/write?org=o&bucket=b&precision=s",
                   "part v=1 %d\npart v=2 %d\npart v= %d\npart,x v=4\npart v=5 %d\n" %
                   (sec, sec + 1, sec + 2, sec + 4))
c.eq(st, 400, "a bad line makes a 400")
j = json.loads(body)
c.eq(j.get("line"), 3, "the first bad line is named (1-based)")
c.eq(j.get("lines_dropped"), 2, "both bad lines are counted")
c.eq(j.get("code"), "invalid", "the 2.x code")
c.check(j.get("error", "").startswith("partial write: line 3: ") and
        j["error"].endswith("(2 lines dropped)") and j.get("message") == j.get("error"),
        "the spec's text in error and message: %r" % j)
c.eq(counts(h), (3, 0), "the good lines' readings are counted")
c.eq([v for _, v in readings(d, series_id(d, "part v"))], [1.0, 2.0, 5.0], "and stored (partial write)")

# --- methods, encodings, sizes ---
st, hd, _ = d.get("/write")
c.check(st == 405 and "POST" in hd.get("allow", ""), "GET /write is 405 with Allow: POST")
st, h, body = post(d, "/write", "x v=1", {"Content-Encoding": "br"})
c.eq(st, 415, "an unknown Content-Encoding is 415")
gz = gzip.compress(("gz,k=v f=%d %d\n" % (1, t0)).encode() + b"gz,k=v f=2 %d\n" % (t0 + 1000))
st, h, _ = post(d, "/write", gz, {"Content-Encoding": "gzip"})
c.eq((st, counts(h)), (204, (2, 0)), "a gzip body from curl")
c.eq(len(readings(d, series_id(d, "gz,k=v f"))), 2, "gzip lines stored")
bomb = gzip.compress(b"bomb v=1\n" * ((12 << 20) // 9))  # 12 MiB inflated, tiny on the wire
c.check(len(bomb) < 200000, "the bomb is small on the wire (%d)" % len(bomb))
st, h, body = post(d, "/write", bomb, {"Content-Encoding": "gzip"})
c.check(st == 413 and b"decompression" in body, "a zip bomb is 413: %r" % body[:200])
c.eq(series_id(d, "bomb v"), None, "and stores nothing")
st, h, _ = post(d, "/write", b"big v=1\n" * (200 * 1024))
c.eq(st, 413, "a plain body over --http-max-body is 413")
c.eq(series_id(d, "big v"), None, "and stores nothing")
st, h, body = post(d, "/write", b"this is not gzip at all", {"Content-Encoding": "gzip"})
c.eq(st, 400, "a body that is not gzip is 400")
st, h, _ = post(d, "/write", gzip.compress(b"trunc v=1\n")[:-6], {"Content-Encoding": "gzip"})
c.eq(st, 400, "a truncated gzip body is 400")
c.eq(series_id(d, "trunc v"), None, "and stores nothing")

# --- queries by name ---
st, body = d.json("/api/v1/series?name=" + urllib.parse.quote("no such series", safe=""))
c.eq((st, body), (404, {"error": "unknown series"}), "an unknown name is 404")
st, body = d.json("/api/v1/series?prefix=prec,")
names = [s["name"] for s in body["series"]]
c.eq(body["total"], 8, "prefix matches counted")
c.eq(names, sorted(names), "sorted by name")
st, page = d.json("/api/v1/series?prefix=prec,&offset=2&limit=3")
c.eq([s["name"] for s in page["series"]], names[2:5], "offset and limit page")
st, _ = d.json("/api/v1/series?prefix=x&limit=0")
c.eq(st, 400, "limit 0 is 400")

# --- reading refusals: long names, a full registry ---
long_tag = "x" * 1100
st, h, _ = post(d, "/write", "m,t=%s v=1" % long_tag)
c.eq((st, counts(h)), (204, (0, 1)), "a name over 1,024 bytes is refused, the line parsed")
m = d.metrics()
c.eq(m.get('sluice_readings_rejected_total{reason="name_too_long"}'), 1.0, "counted name_too_long")
c.eq(m.get('sluice_readings_rejected_total{reason="unsupported_type"}'), 1.0, "counted unsupported_type")
n = int(m["sluice_series"])
lines = "\n".join("fill,i=%d v=1" % i for i in range(64 - n + 5))
st, h, _ = post(d, "/write", lines)
c.eq((st, counts(h)), (204, (64 - n, 5)), "past --max-series readings are refused series_limit")
m = d.metrics()
c.eq(m.get("sluice_series"), 64.0, "the registry is full, not over")
c.eq(m.get('sluice_readings_rejected_total{reason="series_limit"}'), 5.0, "counted series_limit")
st, h, _ = post(d, "/write", "boiler,room=a,site=north temp=23 %d" % (t0 + 2 * 10**9))
c.eq((st, counts(h)), (204, (1, 0)), "a known name still writes when the registry is full")
c.eq(m.get('sluice_lines_total{transport="http",result="bad"}'), 2.0, "bad lines counted")
c.eq(d.metrics().get("sluice_heap_allocations_after_start_total"), 0.0,
     "no heap allocation on the ingest path after every kind of write above")

d.stop()

# --- durability of names: SIGKILL, restart, same ids ---
d = Daemon("--sync", "always", sensors=256, ring=256)
st, h, _ = post(d, "/write", "dur,a=1 v=1 %d\ndur,a=2 v=2 %d" % (t0, t0))
ids = {n: series_id(d, n) for n in ("dur,a=1 v", "dur,a=2 v")}
c.eq(sorted(ids.values()), [BASE, BASE + 1], "two names, two ids")
d.kill_keep_data()
d2 = Daemon("--sync", "always", sensors=256, ring=256, data_dir=d.data_dir)
c.eq({n: series_id(d2, n) for n in ids}, ids, "acked names keep their ids after SIGKILL")
c.eq(readings(d2, ids["dur,a=2 v"]), [(t0 // 1000, 2.0)], "and their readings")
post(d2, "/write", "dur,a=3 v=3 %d" % t0)
c.eq(series_id(d2, "dur,a=3 v"), BASE + 2, "a new name takes the next id, none is reused")
# --- the InfluxDB 1.x CLI ---
imp = os.path.join(d2.tmp, "points.txt")
with open(imp, "w") as f:
    f.write("# DML\n# CONTEXT-DATABASE: telemetry\n# CONTEXT-RETENTION-POLICY: autogen\n")
    for i in range(300):
        f.write("cli,unit=u%d level=%d %d\n" % (i % 3, i, t0 + i * 10**6))
p = subprocess.run(["influx", "-import", "-path=" + imp, "-host", "127.0.0.1", "-port", str(d2.http_port),
                    "-precision=ns"], capture_output=True, text=True, timeout=120)
c.check("Processed 300 inserts" in p.stderr + p.stdout and "Failed 0 inserts" in p.stderr + p.stdout,
        "influx -import wrote every point: %s" % (p.stderr + p.stdout)[-300:])
c.eq(sorted(len(readings(d2, series_id(d2, "cli,unit=u%d level" % u)) or []) for u in range(3)),
     [100, 100, 100], "and every point is stored")
d2.stop()
shutil.rmtree(d.tmp, ignore_errors=True)

# --- HTTP writes across checkpoints and a SIGKILL: every acked reading once, no more ---
d = Daemon("--sync", "always", "--checkpoint-every", "32K", sensors=256, ring=4096)
acked, statuses = 0, set()
for r in range(100):
    body = "".join("ck,s=%d v=%d %d\n" % (k, r, t0 + r * 10**9) for k in range(100))
    st, h, _ = post(d, "/write", body)
    statuses.add(st)
    acked += counts(h)[0]
c.eq((statuses, acked), ({204}, 10000), "every write 204, every reading acked")
c.check(d.wait_metric("sluice_checkpoints_completed_total", 2, timeout_s=30) >= 2,
        "checkpoints were written while the writes went on")
d.kill_keep_data()
d2 = Daemon("--sync", "always", "--checkpoint-every", "32K", sensors=256, ring=4096,
            data_dir=d.data_dir)
totals = [d2.json("/api/v1/sensors/%d" % series_id(d2, "ck,s=%d v" % k))[1]["readings_total"]
          for k in range(100)]
c.eq(set(totals), {100}, "after checkpoints and a SIGKILL each sensor holds its 100 readings once")
d2.stop()
shutil.rmtree(d.tmp, ignore_errors=True)

# --- 503 when the log cannot take a write; the lost name is logged again ---
found = False
for k in range(1, 8):
    d = Daemon("--sync", "always", "--io-faults", "fdatasync:EIO:%d" % k, sensors=256, ring=256)
    st, h, body = post(d, "/write", "lost,a=1 v=1 %d" % t0)
    if st == 503:
        found = True
        c.eq(h.get("retry-after"), "1", "503 carries Retry-After: 1")
        c.eq(counts(h), (0, 0), "nothing accepted")
        lid = series_id(d, "lost,a=1 v")
        c.check(lid is None or readings(d, lid) is None, "nothing stored")
        ok = wait_until(lambda: post(d, "/write", "lost,a=1 v=2 %d" % (t0 + 10**6))[0] == 204,
                        timeout_s=20, interval_s=0.2)
        c.check(ok, "the resend is stored once the log recovers")
        lid = series_id(d, "lost,a=1 v")
        d.kill_keep_data()
        d2 = Daemon("--sync", "always", sensors=256, ring=256, data_dir=d.data_dir)
        c.eq(series_id(d2, "lost,a=1 v"), lid, "the name of a failed commit was logged again")
        c.eq(readings(d2, lid)[-1], (t0 // 1000 + 1000, 2.0), "with its reading")
        d2.stop()
        shutil.rmtree(d.tmp, ignore_errors=True)
        break
    d.stop()
c.check(found, "an injected fdatasync EIO made a write 503")

# --- the TCP and UDP listeners ---
tp, up = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
d = Daemon("--influx-tcp", str(tp), "--influx-udp", "127.0.0.1:%d" % up, sensors=256, ring=256)
c.check("influx_tcp=127.0.0.1:%d" % tp in d.start_line, "the start line names the line listeners")
s = socket.create_connection(("127.0.0.1", tp), timeout=5)
s.sendall(b"tcp,k=a v=1 %d\ntcp,k=a v=2 %d\ntcp,k=a v=" % (t0, t0 + 1000))
s.sendall(b"3 %d\n" % (t0 + 2000))  # a line split across two reads
s.sendall(b"huge,k=" + b"y" * (70 * 1024) + b" v=1\n")  # over 64 KiB: skipped
s.sendall(b"tcp,k=a v=4 %d\n" % (t0 + 3000))
s.close()
ok = wait_until(lambda: series_id(d, "tcp,k=a v") is not None and
                len(readings(d, series_id(d, "tcp,k=a v")) or []) == 4, timeout_s=10)
c.check(ok, "TCP lines, split across reads, stored")
c.eq([v for _, v in readings(d, series_id(d, "tcp,k=a v"))], [1.0, 2.0, 3.0, 4.0], "in order")
m = d.metrics()
c.eq(m.get("sluice_line_too_long_total"), 1.0, "the over-long line is counted")
c.eq(series_id(d, "huge,k=" + "y" * 10), None, "and not stored")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"udp,k=b v=5 %d\nudp,k=b v=6 %d\nnot a line\n" % (t0, t0 + 1000), ("127.0.0.1", up))
u.close()
ok = wait_until(lambda: series_id(d, "udp,k=b v") is not None and
                len(readings(d, series_id(d, "udp,k=b v")) or []) == 2, timeout_s=10)
c.check(ok, "UDP lines stored")
got = d.wait_metric('sluice_lines_total{transport="udp",result="bad"}', 1)
c.eq(got, 1.0, "the bad UDP line counted")
c.eq(d.metrics().get("sluice_heap_allocations_after_start_total"), 0.0,
     "no heap allocation on the ingest path with the line listeners")
d.stop()

# --- the TCP listener's limits: per-address cap, eviction, line deadline, idle timeout ---
tp = free_port(socket.SOCK_STREAM)
d = Daemon("--influx-tcp", str(tp), "--max-tcp-connections", "2", "--tcp-frame-timeout", "300ms",
           "--tcp-idle-timeout", "2s", sensors=64, ring=64)
a = socket.create_connection(("127.0.0.1", tp), timeout=5)
b = socket.create_connection(("127.0.0.1", tp), timeout=5)
c.eq(d.wait_metric("sluice_line_tcp_connections", 2), 2.0, "two connections open")
x = socket.create_connection(("127.0.0.1", tp), timeout=5)  # the table is full: the idlest goes
c.eq(d.wait_metric("sluice_line_tcp_connections_evicted_total", 1), 1.0, "a full table evicts")
x.sendall(b"lim v=1 %d\npartial v=" % t0)  # then never finishes its line
c.check(wait_until(lambda: series_id(d, "lim v") is not None), "the newcomer is served")
c.check(wait_until(lambda: d.wait_event("a line unfinished past --tcp-frame-timeout", timeout_s=0)
                   is not None, timeout_s=15), "an unfinished line past the deadline closes it")
c.check(wait_until(lambda: d.wait_event("idle past --tcp-idle-timeout", timeout_s=0) is not None,
                   timeout_s=15), "the silent connection is closed idle")
c.eq(d.metrics().get("sluice_line_tcp_connections_timed_out_total"), 2.0, "both counted")
for s_ in (a, b, x):
    s_.close()
d.stop()
d = Daemon("--influx-tcp", str(tp), "--max-tcp-connections", "4", "--max-tcp-connections-per-ip", "1",
           sensors=64, ring=64)
a = socket.create_connection(("127.0.0.1", tp), timeout=5)
c.eq(d.wait_metric("sluice_line_tcp_connections", 1), 1.0, "one connection from 127.0.0.1")
b = socket.create_connection(("127.0.0.1", tp), timeout=5)
c.eq(d.wait_metric("sluice_line_tcp_connections_evicted_total", 1), 1.0,
     "a second from the same address closes the first, idle longest (--max-tcp-connections-per-ip)")
c.eq(d.metrics().get("sluice_line_tcp_connections"), 1.0, "the address still holds one")
b.sendall(b"cap v=1 %d\n" % t0)
c.check(wait_until(lambda: series_id(d, "cap v") is not None), "the newcomer is served")
a.close()
b.close()
d.stop()
c.finish()
