"""Store-and-forward to a real VictoriaMetrics through an outage and a crash (UPLINK.md, issue 13).

Proves: 1 million readings sent over acked TCP reach VictoriaMetrics (-dedup.minScrapeInterval=1ms)
through an `influx://` uplink, although VictoriaMetrics is stopped for 15 s mid-stream and sluiced
is SIGKILLed once during that outage and restarted on the same data directory; afterwards
VictoriaMetrics' /api/v1/export holds every reading the gateway accepted (OK acks), with its
stored value (f32) and its time (to the millisecond VictoriaMetrics keeps), and no other: the
readings the store rejected (NaN, out of order) are not forwarded. While the upstream is down,
GET /api/v1/uplinks says "retrying" with a growing backlog and last_error set, and the uplink's
metrics count the failed requests; once drained, the backlog is 0, lag 0 and up 1; the cursor
file is in DATA_DIR/uplink.
"""
import os
import signal
import tempfile
import time

from engines import VictoriaMetrics, f32
from harness import Checks, Daemon, _tmp_dirs, batch, parse_ack, recv_exact, wait_until

c = Checks("test_uplink_vm")
tmp = tempfile.mkdtemp(prefix="sluice-uplink-vm-")
_tmp_dirs.append(tmp)
data_dir = os.path.join(tmp, "data")

SENSORS = 1000
BATCHES = 1000            # one reading of every sensor a batch: 1 M readings
STEP_US = 1000            # 1 ms apart per sensor: VictoriaMetrics keeps milliseconds
OUTAGE_S = 15.0
T0_US = (int(time.time()) - 3600) * 1000000  # an hour ago: inside VictoriaMetrics' retention
STREAM = 7

vm = VictoriaMetrics(tmp)
UP = "vm=influx://127.0.0.1:%d/write" % vm.port


def start_daemon():
    return Daemon("--uplink", UP, "--uplink-backoff-max", "1s", "--uplink-tag", "gw=edge-7",
                  sensors=1024, ring=4096, data_dir=data_dir)


def value(sensor, i):
    return sensor * 0.25 + i * 0.001


expected = {}   # sensor -> {t_ms: value}
rejected = 0


def send(d, first, last, sock=None):
    """Send batches first..last-1 on one connection, one at a time, each waited for; the readings
    of an OK ack are expected upstream. Batch 100 and 600 carry a NaN and an out-of-order reading."""
    global rejected
    s = sock or d.tcp(timeout_s=30)
    for i in range(first, last):
        base = T0_US + i * STEP_US
        readings = [(sid, 0, value(sid, i)) for sid in range(SENSORS)]
        s.sendall(batch(STREAM, i + 1, base, readings))
        ack = parse_ack(recv_exact(s, 32, timeout_s=30))
        assert ack["status"] == 0 and ack["seq"] == i + 1 and ack["accepted"] == SENSORS, ack
        t_ms = base // 1000
        for sid, _, v in readings:
            expected.setdefault(sid, {})[t_ms] = f32(v)
        if i in (100, 600):
            # another stream: a reading older than sensor 3's newest and a NaN, both rejected
            s.sendall(batch(STREAM + 1, 1 if i == 100 else 2, T0_US, [(3, 0, 1.0), (SENSORS + 1, 0, float("nan"))]))
            ack = parse_ack(recv_exact(s, 32, timeout_s=30))
            c.eq((ack["status"], ack["accepted"], ack["rejected"]), (0, 0, 2),
                 "batch %d: the out-of-order and the NaN reading are rejected" % i)
            rejected += ack["rejected"]
    if sock is None:
        s.close()


def uplink(d):
    status, body = d.json("/api/v1/uplinks")
    assert status == 200, status
    return body["uplinks"][0]


# --- 1: half the stream with the upstream up ---
d = start_daemon()
c.check("forwarding to" in (d.wait_event("uplink: vm: forwarding to", timeout_s=10) or ""), "the uplink says where it forwards")
send(d, 0, 500)
c.check(wait_until(lambda: uplink(d)["backlog_bytes"] == 0 and uplink(d)["sent_readings"] > 0, timeout_s=60),
        "the first half is forwarded while the upstream is up")

# --- 2: the upstream stops; 250 batches more; sluiced is SIGKILLed during the outage ---
t_down = time.time()
rc, took = vm.stop()
c.eq(rc, 0, "VictoriaMetrics stops cleanly (SIGTERM, %.1f s): what it acknowledged is on its disk" % took)
send(d, 500, 750)
c.check(wait_until(lambda: uplink(d)["state"] == "retrying", timeout_s=30), "the uplink is retrying")
u = uplink(d)
c.check(u["backlog_bytes"] > 0 and u["last_error"], "a backlog and the last error are shown: %r" % u)
m = d.metrics()
c.check(m.get('sluice_uplink_up{output="vm"}') == 0, "sluice_uplink_up 0 during the outage")
c.check(m.get('sluice_uplink_requests_total{output="vm",code="error"}', 0) >= 1,
        "the failed requests are counted with code=error")
d.kill_keep_data()
c.check(os.path.exists(os.path.join(data_dir, "uplink", "vm.cursor")), "the cursor file is in DATA_DIR/uplink")

# --- 3: restarted during the outage; the rest of the stream ---
d = start_daemon()
send(d, 750, BATCHES)
c.check(wait_until(lambda: uplink(d)["backlog_bytes"] > 0, timeout_s=10), "the backlog survived the crash")
wait_until(lambda: time.time() - t_down >= OUTAGE_S, timeout_s=OUTAGE_S + 1, interval_s=0.2)
vm.start()

# --- 4: drained; VictoriaMetrics holds exactly what was accepted ---
total = sum(len(v) for v in expected.values())
c.check(wait_until(lambda: (lambda x: x["backlog_bytes"] == 0 and x["lag_s"] == 0 and x["state"] == "ok")(uplink(d)),
                   timeout_s=180, interval_s=0.2), "the backlog drains after the outage: %r" % uplink(d))
m = d.metrics()
c.check(m.get('sluice_uplink_up{output="vm"}') == 1, "sluice_uplink_up 1 after the drain")
c.check(m.get('sluice_uplink_requests_total{output="vm",code="204"}', 0) >= 1, "204s counted")
c.check(uplink(d)["sent_readings"] >= 500 * SENSORS,
        "the restarted gateway sent at least the 500 batches after its cursor: %r" % uplink(d))


def exported():
    """{sensor: {t_ms: value}} as VictoriaMetrics exports it, and whether every series is tagged."""
    vm.flush()
    out, tagged = {}, True
    for (name, labels), samples in vm.samples('{__name__="sluice_value"}').items():
        labels = dict(labels)
        tagged = tagged and labels.get("gw") == "edge-7"
        out.setdefault(int(labels["sensor"]), {}).update(dict(samples))
    return out, tagged


# what VictoriaMetrics acknowledged becomes searchable after a flush, though not always the
# instant the last 204 is sent: wait (with a deadline) until it exports as many as were accepted
last = {}


def all_exported():
    last["got"], last["tagged"] = exported()
    return sum(len(v) for v in last["got"].values()) >= total


wait_until(all_exported, timeout_s=30, interval_s=0.5)
got, tagged = last["got"], last["tagged"]
c.check(tagged, "--uplink-tag gw=edge-7 on every series")
n_got = sum(len(v) for v in got.values())
c.eq(n_got, total, "VictoriaMetrics holds as many readings as the gateway accepted (%d)" % total)
c.eq(total, SENSORS * BATCHES, "1 M readings accepted")
missing = extra = wrong = 0
for sid, want in expected.items():
    have = got.get(sid, {})
    for t, v in want.items():
        if t not in have:
            missing += 1
        elif have[t] != v:
            wrong += 1
    extra += sum(1 for t in have if t not in want)
extra += sum(len(v) for sid, v in got.items() if sid not in expected)
missing_batches = sorted({(t * 1000 - T0_US) // STEP_US for sid, want in expected.items()
                          for t in want if t not in got.get(sid, {})})
c.eq((missing, wrong, extra), (0, 0, 0), "no reading missing, none with another value, none extra"
     + (" (batches %d..%d missing; uplink %r)" % (missing_batches[0], missing_batches[-1], uplink(d))
        if missing_batches else ""))
c.eq(rejected, 4, "four readings were rejected, and none of them is upstream")
c.check(SENSORS + 1 not in got, "the NaN-only sensor has no series upstream")
rc, _ = d.stop(signal.SIGTERM)
c.eq(rc, 0, "sluiced stops cleanly")
vm.stop()
c.finish()
