"""Uplinks to a real InfluxDB 1.x (`influx://`) and a real Prometheus (`promrw://`), and aggregated
forwarding checked against the store's own window statistics (UPLINK.md, issue 13).

Proves: named series written to sluiced as line protocol over HTTP and numbered sensors sent as
native batches over TCP arrive in InfluxDB (measurement, tags, field; `sluice,sensor=N value`) and
in Prometheus (`<measurement>_<field>` with the tags as labels; `sluice_value{sensor}`), each with
the stored f32 value and its time (InfluxDB to the microsecond, Prometheus to the millisecond),
with `--uplink-tag` on everything; the rejected reading is in neither. An `aggregate:10s` output
into a second InfluxDB database sends, for each sensor and 10-second bucket of event time,
count/mean/min/max equal to what the store's readings give, and the last bucket equal to the
store's own /stats?window_s=10 on the same readings (once a reading of the next bucket closed it);
its encoded bytes are a fraction of the raw output's. GET /api/v1/uplinks lists all three with
their mode and no credentials.
"""
import os
import tempfile
import time

from engines import InfluxDB1, Prometheus, f32
from harness import Checks, Daemon, _tmp_dirs, batch, http_request, parse_ack, recv_exact, wait_until

c = Checks("test_uplink_engines")
tmp = tempfile.mkdtemp(prefix="sluice-upeng-")
_tmp_dirs.append(tmp)

influx = InfluxDB1(tmp)
influx.create_db("telemetry")
influx.create_db("agg")
prom = Prometheus(tmp)

N = 120                       # readings a series, 1 s apart
T0_S = int(time.time()) - 1800
T0_S -= T0_S % 10             # bucket-aligned
T0_US = T0_S * 1000000

d = Daemon("--uplink", "db=influx://127.0.0.1:%d/write?db=telemetry" % influx.port,
           "--uplink", "prom=promrw://127.0.0.1:%d/api/v1/write" % prom.port,
           "--uplink", "agg=influx://127.0.0.1:%d/write?db=agg" % influx.port,
           "--uplink-mode", "agg=aggregate:10s", "--uplink-tag", "site=plant-3",
           "--uplink-flush-interval", "200ms", sensors=64, ring=1024)

# numbered sensors 1 and 2 over TCP, one batch a second of event time
s = d.tcp()
want_num = {1: [], 2: []}
for i in range(N):
    rs = [(1, 0, 20.0 + i * 0.1), (2, 0, -5.0 - (i % 7) * 1.5)]
    if i == 50:
        rs.append((1, 0, float("nan")))
    s.sendall(batch(3, i + 1, T0_US + i * 1000000, rs))
    ack = parse_ack(recv_exact(s, 32))
    assert ack["status"] == 0, ack
    for sid, _, v in rs:
        if v == v:
            want_num[sid].append((T0_US + i * 1000000, f32(v)))
s.close()

# a named series over HTTP line protocol, two fields
lines = "\n".join("room,bldg=a temp=%r,hum=%d %d" % (18.0 + i * 0.25, 40 + i % 5, (T0_S + i) * 10 ** 9)
                  for i in range(N))
st, h, body = http_request("http://127.0.0.1:%d/write" % d.http_port, lines.encode())
c.eq(st, 204, "the line protocol write is taken (%r)" % body[:200])
want_temp = [((T0_S + i) * 1000000, f32(18.0 + i * 0.25)) for i in range(N)]
want_hum = [((T0_S + i) * 1000000, f32(40 + i % 5)) for i in range(N)]


def up(name):
    return {u["name"]: u for u in d.json("/api/v1/uplinks")[1]["uplinks"]}[name]


c.check(wait_until(lambda: all(up(n)["backlog_bytes"] == 0 and up(n)["sent_readings"] > 0 for n in ("db", "prom")),
                   timeout_s=60), "both raw outputs drain: %r" % d.json("/api/v1/uplinks")[1])
for n in ("db", "prom"):
    c.eq(up(n)["sent_readings"], 4 * N, "%s: every accepted reading sent, the NaN not" % n)

# --- InfluxDB ---
def influx_rows(db, q):
    return [(r["time"], r) for r in influx.query(db, q)]


got = influx_rows("telemetry", "SELECT value FROM sluice WHERE sensor='1' AND site='plant-3'")
c.eq([(t, f32(r["value"])) for t, r in got], want_num[1], "InfluxDB: sensor 1, every value and time")
got = influx_rows("telemetry", "SELECT value FROM sluice WHERE sensor='2'")
c.eq([(t, f32(r["value"])) for t, r in got], want_num[2], "InfluxDB: sensor 2, every value and time")
got = influx_rows("telemetry", "SELECT temp, hum FROM room WHERE bldg='a' AND site='plant-3'")
c.eq([(t, f32(r["temp"])) for t, r in got if r["temp"] is not None], want_temp, "InfluxDB: room temp")
c.eq([(t, f32(r["hum"])) for t, r in got if r["hum"] is not None], want_hum, "InfluxDB: room hum")

# --- Prometheus (milliseconds) ---
def ms(pairs):
    return [(t // 1000, v) for t, v in pairs]


def prom_series(metric, labels):
    return [(t, f32(v)) for t, v in prom.query_raw(metric, labels)]


c.check(wait_until(lambda: len(prom_series("sluice_value", {"sensor": "1", "site": "plant-3"})) == N, timeout_s=30),
        "Prometheus answers sensor 1")
c.eq(prom_series("sluice_value", {"sensor": "1", "site": "plant-3"}), ms(want_num[1]), "Prometheus: sensor 1")
c.eq(prom_series("sluice_value", {"sensor": "2", "site": "plant-3"}), ms(want_num[2]), "Prometheus: sensor 2")
c.eq(prom_series("room_temp", {"bldg": "a", "site": "plant-3"}), ms(want_temp), "Prometheus: room_temp")
c.eq(prom_series("room_hum", {"bldg": "a", "site": "plant-3"}), ms(want_hum), "Prometheus: room_hum")

# --- aggregate:10s against the store ---
# the store's own window over the last (open) bucket, before a reading of the next bucket closes it
last_t = T0_US + (N - 1) * 1000000
st, win = d.json("/api/v1/sensors/1/stats?window_s=10")
c.eq(st, 200, "store window stats")
s = d.tcp()
s.sendall(batch(4, 1, last_t + 1000000, [(1, 0, 99.0)]))  # the next bucket: closes the last one
assert parse_ack(recv_exact(s, 32))["status"] == 0
s.close()


def buckets(pairs):
    out = {}
    for t, v in pairs:
        out.setdefault(t - t % 10000000, []).append(v)
    return {b: (len(vs), sum(vs) / len(vs), min(vs), max(vs)) for b, vs in out.items()}


want_b = buckets(want_num[1])
c.check(wait_until(lambda: len(influx.query("agg", "SELECT * FROM sluice WHERE sensor='1'")) >= len(want_b),
                   timeout_s=60), "the aggregated buckets of sensor 1 arrive")
rows = {r["time"]: r for r in influx.query("agg", "SELECT * FROM sluice WHERE sensor='1'")}
bad = [b for b, (n, mean, lo, hi) in want_b.items()
       if b not in rows or rows[b]["count"] != n or abs(rows[b]["mean"] - mean) > 1e-9 * max(1, abs(mean))
       or f32(rows[b]["min"]) != lo or f32(rows[b]["max"]) != hi]
c.eq(bad, [], "every bucket's count/mean/min/max equals the store's readings (%d buckets)" % len(want_b))
lb = rows.get(last_t - last_t % 10000000, {})
c.check(lb and lb.get("count") == win["count"] and abs(lb.get("mean", 0) - win["mean"]) < 1e-9 * abs(win["mean"])
        and f32(lb.get("min", 0)) == f32(win["min"]) and f32(lb.get("max", 0)) == f32(win["max"]),
        "the last bucket equals the store's own 10 s window: %r vs %r" % (lb, win))
c.check(all(r.get("site") == "plant-3" for r in rows.values()), "aggregated rows carry --uplink-tag")
rows_room = influx.query("agg", "SELECT * FROM room WHERE \"field\"='temp'")
c.check(len(rows_room) >= 11, "a named series is aggregated with tag field=KEY (%d buckets)" % len(rows_room))
m = d.metrics()
raw_b = m.get('sluice_uplink_encoded_bytes_total{output="db"}', 0)
agg_b = m.get('sluice_uplink_encoded_bytes_total{output="agg"}', 0)
c.check(0 < agg_b < raw_b / 2, "aggregate:10s encodes less than half the raw bytes (%d vs %d)" % (agg_b, raw_b))
ups = d.json("/api/v1/uplinks")[1]["uplinks"]
c.eq([(u["name"], u["mode"]) for u in ups], [("db", "raw"), ("prom", "raw"), ("agg", "aggregate:10s")],
     "GET /api/v1/uplinks lists the three outputs with their modes")
rc, _ = d.stop()
c.eq(rc, 0, "sluiced stops cleanly")
influx.stop()
prom.stop()
c.finish()
