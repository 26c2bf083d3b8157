"""The MQTT subscriber against a real broker (Debian's mosquitto, started here on a free loopback
port with persistence in a temporary directory; MQTT.md, issue 14).

Proves:
- each format from mosquitto_pub: `value` (with and without a time) becomes the series
  `mqtt,topic=<topic> value`; `line` becomes LINE_PROTOCOL.md's series; `native` is a batch frame;
- a native batch published twice is stored once (counted duplicate);
- a bad payload among good ones is counted bad, named with its topic in a log line, and the
  subscription goes on;
- GET /api/v1/mqtt and the metrics MQTT.md names; the default client id is sluice-<hostname>;
- SIGHUP changes the subscriptions without a restart; a retained copy sent at subscribe time is
  counted `retained` and not stored;
- 50 QoS 1 messages published while the gateway is down are all stored after it restarts
  (persistent session, fixed client id);
- the broker stopped under the gateway: `connected` false with a reason, /healthz still 200, other
  inputs go on; the broker back: reconnected (counted), messages flow again;
- SIGKILL under a publishing load: every message published is stored after the restart (none
  lost: a PUBACK leaves only once the round is durable); the duplicates of `value` messages that
  were logged but not yet acknowledged are counted and at most one round;
- an unreachable broker says why; configuration errors exit 2 with a message.
"""
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

from engines import Mosquitto
from harness import (SLUICED, Checks, Daemon, _tmp_dirs, batch, free_port, parse_ack, recv_exact,
                     wait_until)

c = Checks("test_mqtt")
tmp = tempfile.mkdtemp(prefix="sluice-mqtt-")
_tmp_dirs.append(tmp)
broker = Mosquitto(tmp)

NOW_US = int(time.time()) * 1000000
T0_US = NOW_US - 3600 * 1000000  # an hour ago: well inside the clock's bounds


def series_id(d, name):
    status, body = d.json("/api/v1/series?name=" + urllib.parse.quote(name, safe=""))
    return body["id"] if status == 200 else None


def readings(d, sid, limit=10000):
    if sid is None:
        return []
    status, body = d.json("/api/v1/sensors/%d/readings?limit=%d" % (sid, limit))
    return list(zip(body["t_us"], body["value"])) if status == 200 else []


def series_readings(d, name):
    return readings(d, series_id(d, name))


def mqtt_state(d):
    return d.json("/api/v1/mqtt")[1]


def wait_connected(d, want=True, timeout_s=30):
    return wait_until(lambda: mqtt_state(d)["connected"] == want, timeout_s)


def messages(d, result):
    return mqtt_state(d)["messages"][result]


def write_config(path, subs, extra=()):
    with open(path, "w") as f:
        f.write("mqtt-broker = %s\n" % broker.url)
        for s in subs:
            f.write("mqtt-subscribe = %s\n" % s)
        for line in extra:
            f.write(line + "\n")


# ---- configuration errors ----
def start_fails(*args):
    r = subprocess.run([SLUICED, "--data-dir", os.path.join(tmp, "never"), "--udp", "off",
                        "--tcp", "off", "--http", "off"] + list(args),
                       capture_output=True, timeout=30)
    return r.returncode, r.stderr.decode(errors="replace")


for args, words in [(("--mqtt-broker", broker.url), "needs at least one --mqtt-subscribe"),
                    (("--mqtt-subscribe", "a/b=value"), "needs --mqtt-broker"),
                    (("--mqtt-broker", "tcp://x:1", "--mqtt-subscribe", "a=value"), "mqtt://"),
                    (("--mqtt-broker", broker.url, "--mqtt-subscribe", "a/#/b=value"), "not a topic filter"),
                    (("--mqtt-broker", broker.url, "--mqtt-subscribe", "a/b=json"), "native, line or value"),
                    (("--mqtt-broker", broker.url, "--mqtt-subscribe", "a/b"), "FILTER=FORMAT"),
                    (("--mqtt-broker", "mqtt://127.0.0.1:0", "--mqtt-subscribe", "a=value"), "port"),
                    (("--mqtt-broker", broker.url, "--mqtt-subscribe", "a=line",
                      "--mqtt-subscribe", "a=value"), "given twice"),
                    (("--mqtt-broker", broker.url, "--mqtt-subscribe", "a=line",
                      "--mqtt-password-file", os.path.join(tmp, "missing")), "--mqtt-password-file")]:
    rc, err = start_fails(*args)
    c.eq(rc, 2, "exit status for %s" % (args,))
    c.check(words in err, "the message for %s says %r: %r" % (args, words, err[-300:]))

# ---- the formats ----
conf = os.path.join(tmp, "sluice.conf")
write_config(conf, ["plant/+/temp=value", "lp/#=line", "nat/#=native"])
d = Daemon("--config", conf, sensors=256, ring=4096)
c.check(("mqtt=%s" % broker.url) in d.start_line, "the start line names the broker: %s" % d.start_line)
c.check(wait_connected(d), "connected to the broker")
st = mqtt_state(d)
c.eq(st["broker"], broker.url, "/api/v1/mqtt broker")
c.eq(st["client_id"], "sluice-" + socket.gethostname(), "the default client id")
c.eq([(s["filter"], s["format"]) for s in st["subscriptions"]],
     [("plant/+/temp", "value"), ("lp/#", "line"), ("nat/#", "native")], "subscriptions")
c.eq(st["last_error"], None, "no error once connected")

broker.pub("plant/a/temp", "21.5 %d" % T0_US)
broker.pub("plant/a/temp", "-3e2")
VALUE = "mqtt,topic=plant/a/temp value"
c.check(wait_until(lambda: len(series_readings(d, VALUE)) == 2, 20), "two value readings stored")
got = series_readings(d, VALUE)
c.eq(got[0], (T0_US, 21.5), "a value with its own time")
c.check(abs(got[1][0] - time.time() * 1e6) < 120e6 and got[1][1] == -300.0,
        "a value without a time takes the receive time: %r" % (got[1],))

t_ns = T0_US * 1000
broker.pub("lp/room", "room,bldg=a temp=18.5,hum=40i %d\nroom,bldg=a temp=19 %d\n"
           % (t_ns, t_ns + 10**9))
c.check(wait_until(lambda: len(series_readings(d, "room,bldg=a temp")) == 2, 20),
        "line protocol readings stored")
c.eq(series_readings(d, "room,bldg=a temp"), [(T0_US, 18.5), (T0_US + 1000000, 19.0)],
     "line protocol: nanosecond times")
c.eq(series_readings(d, "room,bldg=a hum"), [(T0_US, 40.0)], "line protocol: an integer field")

frame = batch(77, 5, T0_US, [(5, 0, 1.0), (5, 1000, 2.0), (6, 0, 3.0)])
broker.pub("nat/dev77", frame)
c.check(wait_until(lambda: len(readings(d, 5)) == 2, 20), "native readings stored")
c.eq(readings(d, 6), [(T0_US, 3.0)], "native: the second sensor")
broker.pub("nat/dev77", frame)  # published twice: stored once
c.check(wait_until(lambda: messages(d, "duplicate") == 1, 20), "the second copy is a duplicate")
c.eq(readings(d, 5), [(T0_US, 1.0), (T0_US + 1000, 2.0)], "native: stored once")
# the same stream over TCP continues where MQTT left it: one dedup table
s = d.tcp()
s.sendall(batch(77, 5, T0_US, [(5, 0, 9.0)]))
c.eq(parse_ack(recv_exact(s, 32))["status"], 1, "TCP: the same (stream, seq) is DUPLICATE")
s.close()

# the device example (examples/mqtt_device.c): frames packed by libsluice, published at QoS 1
device = os.path.join(os.path.dirname(SLUICED), "mqtt_device")
r = subprocess.run([device, "127.0.0.1", str(broker.port), "nat/dev31", "31"],
                   input=b"".join(b"31,%d,%d.5\n" % (T0_US + i, i) for i in range(2500)),
                   capture_output=True, timeout=60)
c.eq(r.returncode, 0, "mqtt_device: %s %s" % (r.stdout[-200:], r.stderr[-200:]))
c.check(b"3 frames published, 3 acknowledged" in r.stdout, "mqtt_device cut 2,500 readings into 3 frames: %r" % r.stdout)
c.check(wait_until(lambda: len(readings(d, 31)) == 2500, 20), "the device's readings stored")
c.eq(readings(d, 31)[:2], [(T0_US, 0.5), (T0_US + 1, 1.5)], "the device's first readings")

# bad payloads among good ones
ok_before, bad_before = messages(d, "ok"), messages(d, "bad")
broker.pub("plant/b/temp", "warm")
broker.pub("plant/b/temp", "7")
broker.pub("nat/dev78", b"\x00garbage")
broker.pub("lp/room", "not line protocol")
broker.pub("plant/b/temp", "8")
c.check(wait_until(lambda: messages(d, "bad") == bad_before + 3 and
                   messages(d, "ok") == ok_before + 2, 20),
        "3 bad and 2 good messages counted: %r" % mqtt_state(d)["messages"])
vals = sorted(v for _, v in series_readings(d, "mqtt,topic=plant/b/temp value"))
c.eq(vals, [7.0, 8.0], "the good values around the bad ones are stored")
c.check(d.wait_event("bad message on 'plant/b/temp'", timeout_s=10) is not None,
        "the log line names the topic of a bad message")
m = d.metrics()
c.eq(m.get("sluice_mqtt_connected"), 1.0, "sluice_mqtt_connected")
for r in ("ok", "bad", "duplicate", "retained"):
    c.check('sluice_mqtt_messages_total{result="%s"}' % r in m, "metric result=%s" % r)
c.check("sluice_mqtt_reconnects_total" in m, "sluice_mqtt_reconnects_total")
c.eq(m.get("sluice_heap_allocations_after_start_total"), 0.0,
     "the ingest thread allocated nothing for MQTT messages of every format")
r = subprocess.run([SLUICED, "--mqtt-broker", broker.url, "--mqtt-subscribe", "a/#=line",
                    "--mqtt-max-payload", "4M", "--print-memory-plan"], capture_output=True, timeout=30)
plan = {ln.split()[0]: int(ln.split()[1]) for ln in r.stdout.decode().splitlines()
        if len(ln.split()) > 2 and ln.split()[1].isdigit()}
c.check(plan.get("mqtt_round", 0) >= 8 << 20, "the plan's mqtt_round holds two payloads: %r" % plan.get("mqtt_round"))
c.check(plan.get("mqtt_library", 0) >= 12 << 20, "the plan states libmosquitto's heap: %r" % plan.get("mqtt_library"))
c.check("mqtt_slots" in plan, "the plan's mqtt_slots")

# ---- SIGHUP: subscriptions change without a restart; retained copies are not readings ----
broker.pub("ret/x", "99", retain=True)
write_config(conf, ["plant/+/temp=value", "nat/#=native", "ret/#=value", "new/+=value"])
since = len(d.events)
d.send_signal(signal.SIGHUP)
c.check(wait_until(lambda: [s["filter"] for s in mqtt_state(d)["subscriptions"]] ==
                   ["plant/+/temp", "nat/#", "ret/#", "new/+"], 20),
        "SIGHUP: the new subscriptions are in force: %r" % mqtt_state(d)["subscriptions"])
c.check(d.wait_event("unsubscribed from 'lp/#'", since, 10) is not None, "said: unsubscribed")
c.check(wait_until(lambda: messages(d, "retained") == 1, 20), "the retained copy counted")
c.eq(series_readings(d, "mqtt,topic=ret/x value"), [], "a retained copy is not stored")
broker.pub("new/a", "1.25 %d" % T0_US)
c.check(wait_until(lambda: series_readings(d, "mqtt,topic=new/a value") == [(T0_US, 1.25)], 20),
        "a new subscription takes messages")
broker.pub("lp/room", "room,bldg=z temp=1 %d" % t_ns)  # no longer subscribed
broker.pub("new/a", "1.5 %d" % (T0_US + 1))  # a marker after it
c.check(wait_until(lambda: len(series_readings(d, "mqtt,topic=new/a value")) == 2, 20), "marker")
c.eq(series_id(d, "room,bldg=z temp"), None, "an unsubscribed filter takes nothing")

# ---- the broker restarted under the gateway ----
broker.stop()
c.check(wait_connected(d, False), "connected: false while the broker is down")
st = mqtt_state(d)
c.check(st["last_error"] is not None and st["last_error"] != "", "last_error says why: %r" % st)
c.eq(d.get("/healthz")[0], 200, "/healthz stays 200 without the broker")
s = d.tcp()
s.sendall(batch(90, 1, T0_US, [(9, 0, 4.0)]))
c.eq(parse_ack(recv_exact(s, 32))["status"], 0, "other inputs go on")
s.close()
broker.start()
c.check(wait_connected(d, True, 60), "reconnected after the broker came back")
c.check(wait_until(lambda: d.metrics().get("sluice_mqtt_reconnects_total", 0) >= 1, 10),
        "the reconnect counted")
broker.pub("new/a", "1.75 %d" % (T0_US + 2))
c.check(wait_until(lambda: len(series_readings(d, "mqtt,topic=new/a value")) == 3, 30),
        "messages flow again after the broker's restart")

# ---- 50 QoS 1 messages published while the gateway is down ----
rc, _ = d.stop()
c.eq(rc, 0, "clean stop")
broker.pub_lines("plant/down/temp", ["%d %d" % (i, T0_US + i) for i in range(50)])
d2 = Daemon("--config", conf, sensors=256, ring=4096, data_dir=d.data_dir)
c.check(wait_until(lambda: len(series_readings(d2, "mqtt,topic=plant/down/temp value")) == 50, 60),
        "all 50 messages queued while down stored after the restart: %d"
        % len(series_readings(d2, "mqtt,topic=plant/down/temp value")))
c.eq(sorted(series_readings(d2, "mqtt,topic=plant/down/temp value")),
     [(T0_US + i, float(i)) for i in range(50)], "the 50 readings, each once")
c.eq(len(readings(d2, 5)), 2, "recovered: the native readings, once")

# ---- SIGKILL under a publishing load ----
N = 3000
pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-t",
                        "plant/load/temp", "-q", "1", "-l"], stdin=subprocess.PIPE)
pub.stdin.write("".join("%d %d\n" % (i, T0_US + i) for i in range(N)).encode())
pub.stdin.close()
LOAD = "mqtt,topic=plant/load/temp value"
c.check(wait_until(lambda: len(series_readings(d2, LOAD)) >= 200, 60), "the load arrives")
d2.kill_keep_data()
pub.wait(timeout=120)
c.eq(pub.returncode, 0, "the publisher got every PUBACK from the broker")
d3 = Daemon("--config", conf, sensors=256, ring=4096, data_dir=d.data_dir)
c.check(wait_until(lambda: len({t for t, _ in series_readings(d3, LOAD)}) == N, 90),
        "every message published under the SIGKILL is stored: %d of %d"
        % (len({t for t, _ in series_readings(d3, LOAD)}), N))
got = series_readings(d3, LOAD)
dups = len(got) - len({t for t, _ in got})
print("SIGKILL under load: %d messages, %d stored twice (logged, not yet acknowledged)" % (N, dups))
c.check(0 <= dups <= 256, "duplicates at most one round: %d" % dups)
c.check(all(v == float(t - T0_US) for t, v in got), "each reading its own value")
d3.stop()

# ---- the log refuses a round: not acknowledged, delivered again, stored once ----
# fdatasync #1 is the first segment's header; later ones are the rounds' commits.
d5 = Daemon("--sync", "always", "--io-faults", "fdatasync:EIO:3,fdatasync:EIO:6",
            "--mqtt-broker", broker.url, "--mqtt-subscribe", "faulty/#=native",
            "--mqtt-client-id", "sluice-test-faults", sensors=16, ring=1024)
c.check(wait_connected(d5), "connected (faults)")
for i in range(40):
    broker.pub("faulty/dev", batch(501, i + 1, T0_US + i * 1000, [(50, 0, float(i))]))
c.check(wait_until(lambda: len(readings(d5, 50)) == 40, 90),
        "every message stored after the log refused rounds: %d of 40" % len(readings(d5, 50)))
c.eq(readings(d5, 50), [(T0_US + i * 1000, float(i)) for i in range(40)], "each once, in order")
st5 = mqtt_state(d5)
c.check(st5["rounds_refused"] >= 1, "a refused round counted: %r" % st5)
c.check(d5.metrics().get("sluice_log_sync_errors_total", 0) == 2, "both sync faults hit")
d5.stop()

# ---- a broker that asks for a username and password ----
locked_dir = tempfile.mkdtemp(prefix="sluice-mqtt-auth-")
_tmp_dirs.append(locked_dir)
pw = os.path.join(locked_dir, "passwd")
subprocess.run(["mosquitto_passwd", "-c", "-b", pw, "gateway", "s3cret pass"], check=True, timeout=30)
os.chmod(pw, 0o644)
locked = Mosquitto(locked_dir, extra=["password_file %s" % pw, "allow_anonymous false"])
secret = os.path.join(locked_dir, "gateway.password")
with open(secret, "w") as f:
    f.write("s3cret pass\n")  # the trailing newline is not part of it
d6 = Daemon("--mqtt-broker", locked.url, "--mqtt-subscribe", "auth/#=value", "--mqtt-client-id",
            "sluice-test-auth", "--mqtt-username", "gateway", "--mqtt-password-file", secret,
            sensors=16, ring=64)
c.check(wait_connected(d6), "connected with the username and the password file: %r" % mqtt_state(d6))
r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(locked.port), "-u", "gateway", "-P",
                    "s3cret pass", "-q", "1", "-t", "auth/x", "-m", "5 %d" % T0_US], timeout=30)
c.eq(r.returncode, 0, "published with credentials")
c.check(wait_until(lambda: series_readings(d6, "mqtt,topic=auth/x value") == [(T0_US, 5.0)], 20),
        "a message through the authenticated session stored")
c.check("s3cret" not in d6.events_text(), "the password is in no log line")
d6.stop()
with open(secret, "w") as f:
    f.write("wrong")
d7 = Daemon("--mqtt-broker", locked.url, "--mqtt-subscribe", "auth/#=value", "--mqtt-client-id",
            "sluice-test-auth2", "--mqtt-username", "gateway", "--mqtt-password-file", secret,
            sensors=16, ring=64)
c.check(wait_until(lambda: "not authorised" in (mqtt_state(d7)["last_error"] or "")
                   or "bad user name" in (mqtt_state(d7)["last_error"] or ""), 20),
        "a wrong password: the broker's refusal in last_error: %r" % mqtt_state(d7)["last_error"])
c.check("wrong" not in d7.events_text(), "the wrong password is in no log line either")
d7.stop()
locked.stop()

# ---- an unreachable broker says why ----
dead = free_port()
d4 = Daemon("--mqtt-broker", "mqtt://127.0.0.1:%d" % dead, "--mqtt-subscribe", "x/#=line",
            "--mqtt-client-id", "sluice-test-dead", sensors=16, ring=64)
c.check(wait_until(lambda: "refused" in (mqtt_state(d4)["last_error"] or "").lower(), 20),
        "last_error for a refused connection: %r" % mqtt_state(d4))
c.eq(mqtt_state(d4)["client_id"], "sluice-test-dead", "--mqtt-client-id")
c.eq(d4.get("/healthz")[0], 200, "/healthz 200 without a broker")
d4.stop()
broker.stop()
c.finish()
