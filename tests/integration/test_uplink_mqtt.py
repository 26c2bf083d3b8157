"""The mqtt:// uplink output (UPLINK.md, MQTT.md "Publishing", issue 14 item 3) against a real
mosquitto (engines.Mosquitto) on a free loopback port, read back through mosquitto_sub.

Proves, each on its own gateway:
1. format=line: the readings sent over acked native TCP come out as MQTT messages whose lines
   parse back to exactly those readings (ids, f32 values, nanosecond times), each once, in
   messages of at most --uplink-batch-bytes; sent_readings, cursor_lsn, backlog and state in
   GET /api/v1/uplinks and the metrics.
2. format=native: every message is one batch frame (magic, version, flags 0, length, CRC-32C)
   with the configured stream id, seqs strictly increasing, the readings exactly those sent.
3. The broker stopped while readings arrive: state "retrying" and last_error say why
   ("connect: Connection refused"), retries counted; once the broker is back on the same port,
   every reading arrives. A broker that refuses anonymous clients: "broker refused: not
   authorised".
4. SIGKILL of sluiced while the broker is stopped, then sluiced and the broker started again:
   every reading arrives, once by seq, with seqs strictly increasing across the restart.
   And SIGKILL while a message is on the wire without its PUBACK (the broker SIGSTOPped) and
   newer readings wait behind it: the first message after the restart has the same seq and the
   same bytes as the one before (the cursor file's mark; without it the resend would hold the
   newer readings too and a downstream Sluice would drop them as a DUPLICATE).
   No PUBACK within --uplink-timeout (the broker SIGSTOPped): said in the log, retried, and
   resent whole: every copy the subscriber gets of a seq has the same bytes.
5. Configuration errors exit 2 with the reason: qos=0, a wildcard topic, an unknown key, no
   topic, --uplink-stream-id on a line output.

The subscriber and the parsers are in mqttsub.py, for reuse (the two-gateway chain test).
"""
import os
import signal
import subprocess
import tempfile
import time
import urllib.parse

from engines import Mosquitto, f32
from harness import SLUICED, Checks, Daemon, batch, parse_ack, recv_exact, wait_until
from mqttsub import Collector, parse_frame, parse_lines, post_lines

c = Checks("test_uplink_mqtt")
T0_US = (int(time.time()) - 600) * 1000000


def send(d, seq, first_t, sensors, n_per, stream=7):
    """One acked batch over native TCP: n_per readings for each sensor, 1 ms apart; returns them
    as (id, t_us, f32 value)."""
    s = d.tcp()
    rs = [(sid, k * 1000, float(sid * 1000 + k + seq * 0.5)) for k in range(n_per) for sid in sensors]
    s.sendall(batch(stream, seq, first_t, rs))
    ack = parse_ack(recv_exact(s, 32))
    s.close()
    assert ack["status"] == 0 and ack["accepted"] == len(rs), ack
    return [(sid, first_t + off, f32(v)) for sid, off, v in rs]


def stop(d, what):
    """SIGTERM: the gateway exits 0 (under ASan, with no leak report)."""
    rc, _ = d.stop()
    c.check(rc == 0 and "Sanitizer" not in d.events_text(), "%s: stops cleanly (rc %r)" % (what, rc))


def same(got, want, what):
    """got and want hold the same readings, each as often; the difference said briefly."""
    g, w = sorted(got, key=repr), sorted(want, key=repr)
    missing = [r for r in set(w) if w.count(r) > g.count(r)] if g != w else []
    extra = [r for r in set(g) if g.count(r) > w.count(r)] if g != w else []
    c.check(g == w, "%s (%d got, %d sent; missing %s; extra %s)" % (what, len(g), len(w), sorted(missing)[:3], sorted(extra)[:3]))


def up(d, name):
    return {u["name"]: u for u in d.json("/api/v1/uplinks")[1]["uplinks"]}[name]


def metric(d, name, out):
    return d.metrics().get('%s{output="%s"}' % (name, out), 0)


def native_readings(msgs, checks_what):
    """Messages (bytes) as frames, deduplicated by seq as a downstream Sluice would; checks a
    repeated seq carries the same bytes, and that seqs increase. Returns (heads, readings)."""
    by_seq, heads, readings = {}, [], []
    for m in msgs:
        head, rs = parse_frame(m)
        if head["seq"] in by_seq:
            c.check(by_seq[head["seq"]] == m, "%s: a repeated seq %d has the same bytes" % (checks_what, head["seq"]))
            continue
        by_seq[head["seq"]] = m
        heads.append(head)
        readings += rs
    seqs = [h["seq"] for h in heads]
    c.check(all(a < b for a, b in zip(seqs, seqs[1:])), "%s: seqs strictly increasing (%s)" % (checks_what, seqs[:8]))
    return heads, readings


def subscribe(topic, client_id):
    """A Collector on the broker, checked subscribed (a probe comes back)."""
    col = Collector(broker, topic, client_id)
    c.check(col.ready(), "%s: the subscriber is subscribed" % client_id)
    return col


def delivered(d, name, n, what, timeout_s=30):
    """Wait until output `name` counts n readings sent (its cursor durable past them)."""
    return c.check(wait_until(lambda: up(d, name)["sent_readings"] == n, timeout_s=timeout_s), what)


tmp = tempfile.mkdtemp(prefix="sluice-mqtt-it-")
# The engine keeps mosquitto root when started as root, so its persistence file is written and the
# subscribers' sessions and queued messages outlive a broker restart (the outage and crash cases).
broker = Mosquitto(tmp)

# --- 1. format=line ---
col = subscribe("sluice/line/one", "it-line")
d = Daemon("--uplink", "ln=mqtt://127.0.0.1:%d/sluice/line/one?format=line&qos=1" % broker.port,
           "--uplink-batch-bytes", "4096", "--uplink-flush-interval", "50ms")
want = []
for i in range(3):
    want += send(d, i + 1, T0_US + i * 10000000, range(1, 41), 5)
NAMED = [("boiler,room=a temp", (T0_US + 40000000 + k * 1000) * 1000, 20.5 + k) for k in range(3)]
c.eq(post_lines(d, "".join("%s=%r %d\n" % (n, v, t) for n, t, v in NAMED)), 3,
     "line: three readings of a named series by POST /write")
c.check(wait_until(lambda: up(d, "ln")["sent_readings"] == len(want) + 3, timeout_s=30),
        "line: sent_readings reaches %d" % len(want))
c.check(wait_until(lambda: sum(len(parse_lines(m)) for m in col.payloads()) >= len(want) + 3, timeout_s=20),
        "line: the subscriber has every line")
got = [r for m in col.payloads() for r in parse_lines(m)]
same(got, [(sid, t * 1000, v) for sid, t, v in want] + NAMED,
     "line: the lines parse back to exactly the readings sent, times in ns, each once, the named "
     "series by its name")
c.check(len(col.payloads()) > 1 and all(len(m) <= 4096 for m in col.payloads()),
        "line: %d messages, each at most --uplink-batch-bytes" % len(col.payloads()))
u = up(d, "ln")
c.eq((u["state"], u["last_error"], u["retries"]), ("ok", None, 0), "line: state ok, no error, no retry")
c.check(u["url"] == "mqtt://127.0.0.1:%d/sluice/line/one?format=line&qos=1" % broker.port, "line: the url shown %r" % u["url"])
c.check(u["cursor_lsn"] >= 3 and wait_until(lambda: up(d, "ln")["backlog_bytes"] == 0, timeout_s=10),
        "line: cursor_lsn %d, backlog 0" % u["cursor_lsn"])
c.eq(metric(d, "sluice_uplink_sent_readings_total", "ln"), len(want) + 3, "line: the metric counts them")
c.check(metric(d, "sluice_uplink_sent_bytes_total", "ln") == sum(len(m) for m in col.payloads()),
        "line: sent bytes are the payloads' bytes")
stop(d, "line")
col.stop()

# --- 2. format=native ---
col = subscribe("sluice/native/two", "it-native")
d = Daemon("--uplink", "nat=mqtt://127.0.0.1:%d/sluice/native/two?format=native" % broker.port,
           "--uplink-stream-id", "nat=4242", "--uplink-batch-bytes", "4096",
           "--uplink-flush-interval", "50ms")
want = []
for i in range(4):
    want += send(d, i + 1, T0_US + i * 10000000, range(1, 101), 3)
c.eq(post_lines(d, "boiler,room=a temp=21.5 %d\n" % ((T0_US + 50000000) * 1000)), 1,
     "native: a reading of a named series by POST /write")
st, body = d.json("/api/v1/series?name=" + urllib.parse.quote("boiler,room=a temp", safe=""))
c.check(st == 200, "native: the series has an id (%r)" % (body,))
want.append((body.get("id"), T0_US + 50000000, 21.5))
c.check(wait_until(lambda: up(d, "nat")["sent_readings"] == len(want), timeout_s=30),
        "native: sent_readings reaches %d" % len(want))
c.check(wait_until(lambda: sum(parse_frame(m)[0]["count"] for m in col.payloads()) >= len(want), timeout_s=20),
        "native: the subscriber has every reading")
heads, got = native_readings(col.payloads(), "native")
same(got, want, "native: the frames hold exactly the readings sent (id, us, f32)")
c.check(all(h["stream"] == 4242 and h["flags"] == 0 for h in heads), "native: stream id 4242, no ACK_REQUESTED")
c.check(len(heads) > 1 and all(36 + 12 * h["count"] <= 4096 for h in heads),
        "native: %d frames, each at most --uplink-batch-bytes" % len(heads))
c.check(heads[0]["seq"] > T0_US, "native: seqs start at the cursor file's epoch (wall-clock us)")
stop(d, "native")
col.stop()

# --- 3. the broker stopped while readings arrive ---
col = subscribe("sluice/outage", "it-outage")
d = Daemon("--uplink", "out=mqtt://127.0.0.1:%d/sluice/outage" % broker.port,
           "--uplink-flush-interval", "50ms", "--uplink-backoff-max", "300ms", "--uplink-timeout", "2s")
want = send(d, 1, T0_US, range(1, 21), 2)
delivered(d, "out", len(want), "outage: the first readings are delivered")
col.stop()
broker.stop()
for i in range(3):
    want += send(d, i + 2, T0_US + (i + 1) * 10000000, range(1, 21), 2)
c.check(wait_until(lambda: up(d, "out")["state"] == "retrying", timeout_s=20), "outage: state retrying")
u = up(d, "out")
c.check(u["last_error"] is not None and "connect: Connection refused" in u["last_error"],
        "outage: last_error says why: %r" % u["last_error"])
c.check(u["retries"] >= 1 and u["backlog_bytes"] > 0, "outage: retries %d, backlog %d" % (u["retries"], u["backlog_bytes"]))
c.check(metric(d, "sluice_uplink_retries_total", "out") >= 1, "outage: the retries metric")
broker.start()
col = subscribe("sluice/outage", "it-outage")  # the same session: what was queued comes too
c.check(wait_until(lambda: up(d, "out")["sent_readings"] == len(want) and up(d, "out")["state"] == "ok", timeout_s=30),
        "outage: every reading delivered after the broker came back, state ok")
c.check(wait_until(lambda: len({r for m in col.payloads() for r in parse_lines(m)}) >= len(want) - 40, timeout_s=20),
        "outage: the later readings reach the subscriber")
got = {r for m in col.payloads() for r in parse_lines(m)}
later = {(sid, t * 1000, v) for sid, t, v in want[40:]}
c.check(later <= got, "outage: every reading sent during the outage arrives (%d of %d)" % (len(later & got), len(later)))
stop(d, "outage")
col.stop()

# --- 3b. a broker that refuses the connection: the CONNACK's reason ---
closed = Mosquitto(tempfile.mkdtemp(prefix="sluice-mqtt-closed-"), extra=["allow_anonymous false"])
d = Daemon("--uplink", "no=mqtt://127.0.0.1:%d/sluice/no" % closed.port, "--uplink-backoff-max", "300ms")
send(d, 1, T0_US, range(1, 3), 1)
c.check(wait_until(lambda: up(d, "no")["last_error"] == "broker refused: not authorised", timeout_s=20),
        "refused: last_error %r" % up(d, "no")["last_error"])
u = up(d, "no")
c.check(u["state"] == "retrying" and u["sent_readings"] == 0, "refused: retrying, nothing counted as sent")
stop(d, "refused")
closed.stop()

# --- 4. SIGKILL while the broker is stopped ---
col = subscribe("sluice/crash", "it-crash")
args = ("--uplink", "cr=mqtt://127.0.0.1:%d/sluice/crash?format=native&qos=1" % broker.port,
        "--uplink-batch-bytes", "4096", "--uplink-flush-interval", "50ms", "--uplink-backoff-max", "300ms",
        "--uplink-timeout", "2s")
d = Daemon(*args)
want = send(d, 1, T0_US, range(1, 101), 2)
delivered(d, "cr", len(want), "crash: the first readings are delivered")
c.check(wait_until(lambda: sum(parse_frame(m)[0]["count"] for m in col.payloads()) >= len(want), timeout_s=20),
        "crash: and received")
col.stop()
broker.stop()
for i in range(3):
    want += send(d, i + 2, T0_US + (i + 1) * 10000000, range(1, 101), 2)
c.check(wait_until(lambda: up(d, "cr")["retries"] >= 1, timeout_s=20), "crash: retrying while the broker is down")
d.kill_keep_data()
d2 = Daemon(*args, data_dir=d.data_dir)
broker.start()
col2 = subscribe("sluice/crash", "it-crash")
c.check(wait_until(lambda: up(d2, "cr")["backlog_bytes"] == 0 and up(d2, "cr")["state"] == "ok", timeout_s=30),
        "crash: the restarted gateway drains its backlog")
c.check(wait_until(lambda: len({r for m in col.payloads() + col2.payloads() for r in parse_frame(m)[1]}) >= len(want),
                   timeout_s=20), "crash: the subscriber has every reading")
msgs = col.payloads() + col2.payloads()
heads, got = native_readings(msgs, "crash")
same(got, want, "crash: exactly every reading, once by seq, none lost")
stop(d2, "crash")
col2.stop()

# --- 4b. SIGKILL while a message is on the wire without its PUBACK (the broker SIGSTOPped) ---
col = subscribe("sluice/wire", "it-wire")
args = ("--uplink", "wi=mqtt://127.0.0.1:%d/sluice/wire?format=native" % broker.port,
        "--uplink-batch-bytes", "4096", "--uplink-flush-interval", "50ms", "--uplink-timeout", "60s")
d = Daemon(*args)
want = send(d, 1, T0_US, range(1, 51), 2)
delivered(d, "wi", len(want), "wire: the first readings are delivered")
c.check(wait_until(lambda: len(col.payloads()) >= 1, timeout_s=20), "wire: and received")
before = len(col.payloads())
sent0 = metric(d, "sluice_uplink_sent_bytes_total", "wi")
os.kill(broker.pid, signal.SIGSTOP)
try:
    want += send(d, 2, T0_US + 10000000, range(1, 51), 1)  # 50 readings: a message of its own
    c.check(wait_until(lambda: metric(d, "sluice_uplink_sent_bytes_total", "wi") > sent0, timeout_s=20),
            "wire: the next message is on the wire (no PUBACK: the broker is stopped)")
    # Newer readings behind it: a restart without the mark would add them to its resend.
    want += send(d, 3, T0_US + 20000000, range(1, 101), 2)
    d.kill_keep_data()
finally:
    os.kill(broker.pid, signal.SIGCONT)
c.check(wait_until(lambda: len(col.payloads()) > before, timeout_s=20),
        "wire: the broker, resumed, delivers the message it had read")
on_wire = col.payloads()[before]
d2 = Daemon(*args, data_dir=d.data_dir)
c.check(wait_until(lambda: up(d2, "wi")["backlog_bytes"] == 0 and up(d2, "wi")["sent_readings"] > 0, timeout_s=30),
        "wire: the restarted gateway drains")
c.check(wait_until(lambda: len({r for m in col.payloads() for r in parse_frame(m)[1]}) >= len(want), timeout_s=20),
        "wire: the subscriber has every reading")
after = col.payloads()[before + 1]
c.check(after == on_wire, "wire: the first message after the restart has the same seq and bytes as the one on the "
        "wire (seq %d / %d)" % (parse_frame(after)[0]["seq"], parse_frame(on_wire)[0]["seq"]))
heads, got = native_readings(col.payloads(), "wire")
same(got, want, "wire: exactly every reading, once by seq")
stop(d2, "wire")
col.stop()
broker.stop()
log = open(broker.log_path, errors="replace").read()
c.check("Error saving" not in log, "the broker saved its persistence file (%s)" % log[-300:].replace("\n", " | "))

# --- 4c. no PUBACK within --uplink-timeout (the broker SIGSTOPped): resent whole, same seq ---
broker.start()
col = subscribe("sluice/ack", "it-ack")
d = Daemon("--uplink", "ak=mqtt://127.0.0.1:%d/sluice/ack?format=native" % broker.port,
           "--uplink-flush-interval", "50ms", "--uplink-timeout", "1s", "--uplink-backoff-max", "300ms")
want = send(d, 1, T0_US, range(1, 11), 1)
delivered(d, "ak", len(want), "puback: the first readings are delivered")
since = len(d.events)
os.kill(broker.pid, signal.SIGSTOP)
try:
    want += send(d, 2, T0_US + 10000000, range(1, 21), 1)
    line = d.wait_event("no PUBACK within 1000 ms", since=since, timeout_s=20)
    c.check(line is not None and "retrying" in line, "puback: the timeout is said, and retried: %r" % line)
    c.check(up(d, "ak")["retries"] >= 1, "puback: counted as a retry")
finally:
    os.kill(broker.pid, signal.SIGCONT)
c.check(wait_until(lambda: up(d, "ak")["sent_readings"] == len(want) and up(d, "ak")["state"] == "ok", timeout_s=30),
        "puback: delivered once the broker answers again")
c.check(wait_until(lambda: len({r for m in col.payloads() for r in parse_frame(m)[1]}) >= len(want), timeout_s=20),
        "puback: the subscriber has every reading")
heads, got = native_readings(col.payloads(), "puback")
same(got, want, "puback: exactly every reading, once by seq (%d messages for %d seqs: a copy the broker took "
     "late has the same seq and bytes)" % (len(col.payloads()), len(heads)))
stop(d, "puback")
col.stop()
broker.stop()

# --- 5. configuration errors ---
bad = [
    (["--uplink", "a=mqtt://127.0.0.1:1883/t?qos=0"], "qos must be 1"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t?qos=2"], "qos must be 1"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/plant/+/t"], "wildcard"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/plant/#"], "wildcard"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t?retain=1"], "unknown query key 'retain'"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t?format=json"], "format must be line or native"),
    (["--uplink", "a=mqtt://127.0.0.1:1883"], "needs a topic"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/"], "needs a topic"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/a%20b"], "'%'"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/" + "t" * 1025], "longer than 1024"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t", "--uplink-stream-id", "a=5"], "format=native"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t?format=native", "--uplink-stream-id", "a=x"], "4294967295"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t", "--uplink-mode", "a=aggregate:10s"], "raw readings only"),
    (["--uplink", "a=mqtt://127.0.0.1:1883/t", "--uplink-token", "a=/etc/hostname"], "takes no token"),
]
bad_dir = os.path.join(tmp, "never-made")
for argv, word in bad:
    p = subprocess.run([SLUICED, "--data-dir", bad_dir, "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                        "--udp", "127.0.0.1:0"] + argv, capture_output=True, text=True, timeout=20)
    c.check(p.returncode == 2 and word in p.stderr, "refused %r: rc %d, %r" % (argv[-1][:60], p.returncode, p.stderr[-200:]))
c.check(not os.path.exists(bad_dir), "a refused configuration makes no data directory")
p = subprocess.run([SLUICED, "--print-memory-plan", "--uplink", "a=mqtt://127.0.0.1:1883/t/" + "x" * 1022],
                   capture_output=True, text=True, timeout=20)
rows = {ln.split()[0]: int(ln.split()[1]) for ln in p.stdout.splitlines() if len(ln.split()) >= 3 and ln.split()[2] == "bytes"}
c.check(p.returncode == 0 and rows.get("uplink_libraries", 0) >= 2 * (1 << 20),
        "a 1,024-byte topic is taken; the plan states libmosquitto's copies (%r)" % rows.get("uplink_libraries"))
c.finish()
