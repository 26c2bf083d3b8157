"""An uplink against a scripted fake upstream (fakeup.py) for the failures real engines will not
produce on demand (UPLINK.md "What is promised", issue 13).

Proves, each on its own gateway:
- 503 with Retry-After: the same readings are sent again, not before Retry-After, then delivered;
  the 503 and the retry are counted; 429 and a closed connection are retried the same way.
- 400: the request's readings go to DATA_DIR/uplink/NAME.dead as line protocol, are counted in
  sluice_uplink_dead_readings_total, the answer is in last_error, and forwarding goes on with
  the next readings (no stall, no resend of the dead ones).
- Prometheus' "duplicate sample" 400 is taken as delivered (no dead letter).
- A hung connection: given up after --uplink-timeout, counted code="error", sent again, delivered.
- A slow reader: a request larger than the socket buffers arrives whole.
- --uplink-when-full drop with a 4 MiB log and the upstream down: ingest goes on, the readings
  skipped are counted in sluice_uplink_dropped_readings_total{reason="log_full"}, and once the
  upstream is back, sent + dropped = accepted.
- --uplink-when-full block: the gateway answers OVERLOADED, /healthz 503 "uplink backlog full:
  NAME", the uplink state "blocked"; once the upstream is back it drains, ingest resumes, and every
  accepted reading is sent, none dropped.
- Through an outage with ingest going on, RSS stays within 1% and the ingest path makes 0 heap
  allocations (the stop line).
- A cursor file damaged in both copies: forwarding starts again from the oldest record, said in a
  log line; a cursor made durable after a 2xx survives a SIGKILL (nothing delivered is resent).
- A damaged record inside a closed log file: the records after it are forwarded, a log line says where.
- Remote write, SIGKILLed while a request hangs: the first request after the restart holds exactly
  the samples that were on the wire (the cursor file's mark), the newer ones follow.
- --uplink-max-rate: a backlog leaves in requests no closer together than their readings / N.
- --print-memory-plan lists each output's buffers, shadows and libraries, and counts them in the total.
- Configuration errors are refused at start with a reason (exit 2).
"""
import json
import os
import signal
import subprocess
import time

from fakeup import FakeUpstream
from harness import (LOAD, SLUICED, Checks, Daemon, batch, built_with_tsan, free_port, parse_ack, recv_exact,
                     wait_until)

c = Checks("test_uplink_faults")
T0_US = (int(time.time()) - 3600) * 1000000


def up(d, name="up"):
    return {u["name"]: u for u in d.json("/api/v1/uplinks")[1]["uplinks"]}[name]


def metric(d, name, out="up", extra=""):
    return d.metrics().get('%s{output="%s"%s}' % (name, out, extra), 0)


def send(d, stream, seq, first_t, sensors, n_per=1):
    """One acked batch: n_per readings for each sensor id in `sensors`, 1 ms apart."""
    s = d.tcp()
    rs = [(sid, k * 1000, float(sid * 1000 + k)) for k in range(n_per) for sid in sensors]
    s.sendall(batch(stream, seq, first_t, rs))
    ack = parse_ack(recv_exact(s, 32))
    s.close()
    assert ack["status"] == 0 and ack["accepted"] == len(rs), ack
    return len(rs)


def sent_lines(fake, start=0):
    return [ln for r in fake.requests[start:] for ln in (r.lines or [])]


# --- 503 with Retry-After, then 429, then a closed connection, then 204 ---
fake = FakeUpstream([("close",), ("status", 503, {"Retry-After": "1"}, b"busy"), ("status", 429, {}, b"slow down")])
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write?db=x" % fake.port, "--uplink-backoff-max", "200ms")
n = send(d, 1, 1, T0_US, range(1, 11))
reqs = fake.wait_requests(4, timeout_s=30)
c.eq(len(reqs), 4, "a closed connection, 503, 429, then a 2xx: four requests")
c.check(all(r.lines == reqs[0].lines for r in reqs) and len(reqs[0].lines) == n,
        "every retry sends the same %d readings" % n)
c.check(reqs[2].time - reqs[1].time >= 0.95, "the retry after 503 waits for Retry-After: 1 (%.2f s)" % (reqs[2].time - reqs[1].time))
c.eq(reqs[0].query.get("precision"), "u", "influx:// adds precision=u")
c.eq(reqs[0].query.get("db"), "x", "and keeps the URL's query")
c.eq(reqs[0].headers.get("content-encoding"), "gzip", "the body is gzip")
c.check(wait_until(lambda: up(d)["sent_readings"] == n and up(d)["state"] == "ok", timeout_s=10), "then delivered")
m = d.metrics()
c.eq(m.get('sluice_uplink_requests_total{output="up",code="503"}'), 1.0, "the 503 is counted")
c.eq(m.get('sluice_uplink_requests_total{output="up",code="429"}'), 1.0, "the 429 is counted")
c.check(m.get('sluice_uplink_requests_total{output="up",code="error"}', 0) >= 1, "the closed connection: code=error")
c.eq(m.get('sluice_uplink_retries_total{output="up"}'), 3.0, "three retries")
d.stop()
fake.stop()

# --- 400: dead letter, and forwarding goes on ---
fake = FakeUpstream([("status", 400, {}, b'{"error":"unable to parse"}')])
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, "--uplink-flush-interval", "100ms")
n1 = send(d, 1, 1, T0_US, range(1, 6))
c.check(wait_until(lambda: metric(d, "sluice_uplink_dead_readings_total") == n1, timeout_s=10),
        "the rejected request's %d readings are counted dead" % n1)
dead = os.path.join(d.data_dir, "uplink", "up.dead")
with open(dead) as f:
    dead_lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("#")]
c.eq(sorted(dead_lines), sorted(fake.requests[0].lines), "the dead-letter file holds the request's lines")
c.check("400" in (up(d)["last_error"] or "") and "unable to parse" in up(d)["last_error"],
        "last_error has the upstream's answer: %r" % up(d)["last_error"])
c.check(d.wait_event("up: ", timeout_s=5) is not None and any("400" in e for e in d.events), "a log line says so")
n2 = send(d, 1, 2, T0_US + 10000, range(1, 6))
c.check(wait_until(lambda: up(d)["sent_readings"] == n2, timeout_s=10), "the next readings are delivered")
c.eq(len(fake.requests), 2, "the dead request is not sent again")
c.check(not set(fake.requests[1].lines) & set(fake.requests[0].lines), "the second request holds only new readings")
d.stop()
fake.stop()

# --- promrw: Prometheus' duplicate-sample 400 is delivered ---
fake = FakeUpstream([("status", 400, {}, b"duplicate sample for timestamp")])
d = Daemon("--uplink", "up=promrw://127.0.0.1:%d/api/v1/write" % fake.port)
n = send(d, 1, 1, T0_US, range(1, 4))
c.check(wait_until(lambda: up(d)["sent_readings"] == n, timeout_s=10), "a duplicate-sample 400 counts as delivered")
c.eq(metric(d, "sluice_uplink_dead_readings_total"), 0, "and nothing is dead")
s = fake.requests[0].series
c.eq(sorted((lab["sensor"], pts[0][1]) for lab, pts in s), [("1", 1000.0), ("2", 2000.0), ("3", 3000.0)],
     "remote write: sluice_value{sensor} with the values")
c.check(all(lab["__name__"] == "sluice_value" and pts[0][0] == T0_US // 1000 for lab, pts in s),
        "named sluice_value, in milliseconds")
d.stop()
fake.stop()

# --- a hung connection: --uplink-timeout, then sent again ---
fake = FakeUpstream([("hang",)])
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, "--uplink-timeout", "1s",
           "--uplink-backoff-max", "100ms")
n = send(d, 1, 1, T0_US, range(1, 4))
c.check(wait_until(lambda: up(d)["sent_readings"] == n, timeout_s=30), "delivered after the hung request timed out")
c.check(metric(d, "sluice_uplink_requests_total", extra=',code="error"') >= 1, "the timeout counted code=error")
c.check(fake.connections >= 2, "the hung connection was dropped and a new one opened")
d.stop()
fake.stop()

# --- a slow reader: a request bigger than the socket buffers ---
fake = FakeUpstream([("slow", 200000)], rcvbuf=4096)
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, "--uplink-timeout", "60s", sensors=4096)
n = send(d, 1, 1, T0_US, range(1, 4001), n_per=10)  # 40 k readings, ~300 kB gzip
c.check(wait_until(lambda: up(d)["sent_readings"] == n, timeout_s=60), "a slow reader gets the whole request")
c.eq(len(set(sent_lines(fake))), n, "every reading arrived once")
d.stop()
fake.stop()


# --- --uplink-max-rate: a backlog drained no faster than N readings/s ---
RATE = 5000
fake = FakeUpstream()
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, "--uplink-max-rate", str(RATE),
           "--uplink-batch-bytes", "64K", sensors=4096)
n = send(d, 1, 1, T0_US, range(1, 2001), n_per=10)  # 20 k readings, ~1 k a 64 KiB request
c.check(wait_until(lambda: up(d)["sent_readings"] == n, timeout_s=60), "max-rate: every reading delivered")
reqs = list(fake.requests)
sizes = [len(r.lines) for r in reqs]
c.check(len(reqs) >= 10 and sum(sizes) == n, "max-rate: the backlog goes in many requests (%r)" % sizes)
short = [(i, reqs[i + 1].time - reqs[i].time, sizes[i] / RATE) for i in range(len(reqs) - 1)
         if reqs[i + 1].time - reqs[i].time < sizes[i] / RATE - 0.05]
c.eq(short, [], "max-rate: no request leaves before the one before it has had its share of time")
span, floor = reqs[-1].time - reqs[0].time, (n - sizes[-1]) / RATE
c.check(span >= floor - 0.1, "max-rate: %d readings took %.2f s, at least %.2f s at %d/s" % (n, span, floor, RATE))
d.stop()
fake.stop()


# --- drop: a 4 MiB log, the upstream down ---
def load(d, n, stream_base, sensor_base=1, start="-2h", retry_for="15", wait=True):
    argv = [LOAD, "--target", "tcp://127.0.0.1:%d" % d.tcp_port, "--streams", "2", "--stream-id-base",
            str(stream_base), "--sensors", "1000", "--sensor-id-base", str(sensor_base), "--batch", "500", "--readings", str(n),
            "--start-time-us", start, "--interval-us", "1000", "--retry-for", retry_for, "--quiet"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-500:]
    return json.loads(out)


class Switch:
    """A fake upstream's fate, changed by the test: 503 until .on()."""
    def __init__(self):
        self.fate = ("status", 503, {}, b"down")

    def __call__(self, i, req):
        return self.fate

    def on(self):
        self.fate = None


small = ("--log-bytes-max", "4M", "--log-segment-bytes", "2M", "--checkpoint-every", "1M", "--sync", "batch",
         "--uplink-backoff-max", "200ms")
sw = Switch()
fake = FakeUpstream(sw)
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, *small, sensors=2048, ring=1024)
rss0 = None
res = load(d, 200000, 1)
rss0 = int(open("/proc/%d/status" % d.proc.pid).read().split("VmRSS:")[1].split()[0])
res2 = load(d, 1000000, 11, sensor_base=1001)
rss1 = int(open("/proc/%d/status" % d.proc.pid).read().split("VmRSS:")[1].split()[0])
accepted = res["accepted"] + res2["accepted"]
c.eq(accepted, 1200000, "drop: ingest goes on through the outage (every reading accepted)")
if not built_with_tsan():
    c.check(abs(rss1 - rss0) <= rss0 / 100, "RSS flat within 1%% through the outage: %d -> %d kB" % (rss0, rss1))
dropped = metric(d, "sluice_uplink_dropped_readings_total", extra=',reason="log_full"')
c.check(dropped > 0, "drop: readings skipped are counted (%d)" % dropped)
c.eq(up(d)["state"], "retrying", "the uplink is retrying")
sw.on()
c.check(wait_until(lambda: up(d)["backlog_bytes"] == 0 and up(d)["state"] == "ok", timeout_s=60),
        "drop: the upstream back, the rest drains")
sent = up(d)["sent_readings"]
dropped = metric(d, "sluice_uplink_dropped_readings_total", extra=',reason="log_full"')
c.eq(sent + dropped, accepted, "sent + dropped = accepted (%d + %d)" % (sent, dropped))
c.eq(len(sent_lines(fake, 0)) >= sent, True, "the fake upstream saw what was sent")
rc, _ = d.stop()
c.eq(rc, 0, "drop: clean stop")
stop_line = [e for e in d.events if "heap allocations" in e]
c.check(stop_line and " 0 heap allocations" in stop_line[-1], "0 heap allocations on the ingest path: %r" % stop_line)
fake.stop()

# --- block ---
sw = Switch()
fake = FakeUpstream(sw)
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, "--uplink-when-full", "block", *small,
           sensors=2048, ring=1024)
watcher = d.watch_health(0.05)
p = load(d, 1000000, 21, retry_for="120", wait=False)
c.check(wait_until(lambda: up(d)["state"] == "blocked", timeout_s=60), "block: the uplink says blocked")
st, _, body = d.get("/healthz")
c.eq(st, 503, "block: /healthz 503")
c.check(b"uplink backlog full: up" in body, "block: /healthz says why (%r)" % body[:200])
sw.on()
out, err = p.communicate(timeout=300)
c.eq(p.returncode, 0, "block: the sender completes once the upstream is back (%s)" % err[-300:])
res = json.loads(out)
health = watcher.stop()
c.eq(res["accepted"], 1000000, "block: every reading accepted in the end")
c.check(res["overloaded_batches"] > 0, "block: OVERLOADED answers while full (%d)" % res["overloaded_batches"])
c.check(any(s == 503 for s, _ in health), "block: health probes saw 503")
c.check(wait_until(lambda: up(d)["sent_readings"] == 1000000, timeout_s=60), "block: every accepted reading sent: %r" % up(d))
c.eq(metric(d, "sluice_uplink_dropped_readings_total", extra=',reason="log_full"'), 0, "block: none dropped")
st, _, _ = d.get("/healthz")
c.eq(st, 200, "block: healthy again")
d.stop()
fake.stop()

# --- the cursor: durable after a 2xx; damaged in both copies ---
fake = FakeUpstream()
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port)
data_dir = d.data_dir
n = send(d, 1, 1, T0_US, range(1, 11))
c.check(wait_until(lambda: up(d)["sent_readings"] == n, timeout_s=10), "cursor: delivered")
lsn = up(d)["cursor_lsn"]
c.check(wait_until(lambda: len(fake.requests) == 1, timeout_s=5), "one request")
d.kill_keep_data()
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, data_dir=data_dir)
c.eq(up(d)["cursor_lsn"], lsn, "after SIGKILL the cursor is where the 2xx left it")
n2 = send(d, 1, 2, T0_US + 10000, range(1, 11))
c.check(wait_until(lambda: up(d)["sent_readings"] == n2, timeout_s=10), "then only the new readings go")
c.eq(len(sent_lines(fake)), n + n2, "nothing delivered before the crash is resent")
d.stop()
with open(os.path.join(data_dir, "uplink", "up.cursor"), "r+b") as f:
    f.write(b"\xff" * 128)
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, data_dir=data_dir)
c.check(d.wait_event("damaged in both copies", timeout_s=5) is not None, "a damaged cursor is said in a log line")
c.check(wait_until(lambda: up(d)["sent_readings"] == n + n2, timeout_s=10),
        "and forwarding starts from the oldest record (%d readings again)" % (n + n2))
d.stop()
fake.stop()

# --- a damaged record inside a closed log file: the forwarder goes on past it ---
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % free_port())  # nothing listens: all stays
data_dir = d.data_dir
for i in range(20):
    send(d, 3, i + 1, T0_US + i * 1000000, range(1, 11))
d.stop()
seg = os.path.join(data_dir, "log-%016x.seg" % 1)
at = 64 + 10 * (64 + 10 * 12) + 100  # the segment header, ten 184-byte records, into the 11th's payload
with open(seg, "r+b") as f:
    f.seek(at)
    byte = f.read(1)
    f.seek(at)
    f.write(bytes([byte[0] ^ 0xFF]))
fake = FakeUpstream()
d = Daemon("--uplink", "up=influx://127.0.0.1:%d/write" % fake.port, data_dir=data_dir)
c.check(wait_until(lambda: up(d)["sent_readings"] == 190 and up(d)["backlog_bytes"] == 0, timeout_s=10),
        "a damaged record: the 19 records around it are forwarded (%r)" % up(d))
c.check(d.wait_event("a damaged record in log file", timeout_s=5) is not None, "and a log line says where")
c.eq(d.metrics().get("sluice_log_corrupt_records_total"), 1.0, "recovery skipped the same record")
c.eq(len(set(sent_lines(fake))), 190, "each once")
d.stop()
fake.stop()

# --- remote write after a crash: the first request holds what was on the wire, nothing newer ---
def samples_of(reqs):
    return sorted((tuple(sorted(lb.items())), t, v) for r in reqs for lb, ss in (r.series or []) for t, v in ss)


fake = FakeUpstream([("hang",)])
d = Daemon("--uplink", "up=promrw://127.0.0.1:%d/api/v1/write" % fake.port, "--uplink-timeout", "60s")
data_dir = d.data_dir
n1 = send(d, 1, 1, T0_US, range(1, 11))
c.check(wait_until(lambda: fake.hanging == 1, timeout_s=10), "remote write: a request hangs on the wire")
on_wire = samples_of(fake.requests[:1])
n2 = send(d, 1, 2, T0_US + 10000, range(1, 11))  # newer samples, taken while the first hangs
d.kill_keep_data()
fake.release()
fake.stop()
fake = FakeUpstream()
d = Daemon("--uplink", "up=promrw://127.0.0.1:%d/api/v1/write" % fake.port, data_dir=data_dir)
c.check(wait_until(lambda: up(d)["sent_readings"] == n1 + n2, timeout_s=10),
        "remote write after a SIGKILL mid-request: everything delivered (%r)" % up(d))
c.eq(len(on_wire), n1, "the hung request held the first batch")
c.eq(samples_of(fake.requests[:1]), on_wire,
     "the first request after the restart holds exactly the samples that were on the wire, none newer "
     "(Prometheus refuses a whole request that holds one it has)")
c.eq(len(samples_of(fake.requests)), n1 + n2, "and then the newer ones, each once")
d.stop()
fake.stop()

# --- configuration errors ---
bad = [
    (["--uplink", "UP=influx://127.0.0.1:1/write"], "name"),
    (["--uplink", "a=http://127.0.0.1:1/write"], "influx://"),
    (["--uplink", "a=mqtt://127.0.0.1:1/t?qos=0"], "qos"),
    (["--uplink", "a=influx://127.0.0.1:1/write", "--uplink", "a=influx://127.0.0.1:2/write"], "a"),
    (["--uplink-mode", "zz=raw"], "zz"),
    (["--uplink", "a=influx://127.0.0.1:1/write", "--uplink-mode", "a=aggregate:0s"], "aggregate"),
    (["--uplink", "a=influx2://127.0.0.1:1/api/v2/write?org=o&bucket=b", "--uplink-token", "a=/nonexistent"],
     "/nonexistent"),
    (sum((["--uplink", "u%d=influx://127.0.0.1:1/write" % i] for i in range(9)), []), "8"),
    (["--uplink", "a=influx://127.0.0.1:1/write", "--log-bytes-max", "8M", "--log-segment-bytes", "2M",
      "--uplink-batch-bytes", "4M"], "quarter"),
]

# --- the memory plan lists the uplinks' buffers, per output ---
def plan(*argv):
    p = subprocess.run([SLUICED, "--print-memory-plan"] + list(argv), capture_output=True, text=True, timeout=20)
    rows = {}
    for ln in p.stdout.splitlines():
        f = ln.split()
        if len(f) >= 3 and f[2] == "bytes":
            rows[f[0]] = int(f[1])
    return p.returncode, rows


rc0, none = plan()
rc1, one = plan("--uplink", "a=influx://127.0.0.1:1/write")
rc2, two = plan("--uplink", "a=influx://127.0.0.1:1/write", "--uplink", "b=influx://127.0.0.1:2/write")
rc3, prw = plan("--uplink", "a=influx://127.0.0.1:1/write", "--uplink", "b=promrw://127.0.0.1:1/api/v1/write")
c.eq((rc0, rc1, rc2, rc3), (0, 0, 0, 0), "--print-memory-plan with 0, 1 and 2 uplinks")
c.check(prw["uplink_buffers"] > two["uplink_buffers"], "remote write plans its protobuf and snappy buffers too")
c.check(none.get("uplink_buffers", 0) == 0 and one.get("uplink_buffers", 0) > 0
        and two["uplink_buffers"] == 2 * one["uplink_buffers"],
        "uplink_buffers: none without an uplink, the same again for each output (%r, %r, %r)"
        % (none.get("uplink_buffers"), one.get("uplink_buffers"), two.get("uplink_buffers")))
c.check(all(k in one for k in ("uplink_sensors", "uplink_libraries")), "the shadows and the libraries are planned")
c.eq(two["total"] - none["total"], sum(v for k, v in two.items() if k.startswith("uplink_")),
     "the total counts every uplink row")

for argv, word in bad:
    p = subprocess.run([SLUICED, "--data-dir", "/nonexistent-sluice-dir", "--http", "127.0.0.1:0", "--tcp",
                        "127.0.0.1:0", "--udp", "127.0.0.1:0"] + argv, capture_output=True, text=True, timeout=20)
    c.check(p.returncode == 2 and word in p.stderr, "refused %r: rc %d, %r" % (argv[-1], p.returncode, p.stderr[-200:]))
c.finish()
