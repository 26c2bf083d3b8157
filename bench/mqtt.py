#!/usr/bin/env python3
"""The MQTT subscriber (MQTT.md, issue 14): how fast sluiced takes messages a broker holds for it,
against mosquitto_sub taking the same messages from the same broker into /dev/null in the same run
(the broker's own ceiling for one QoS 1 subscriber), and the end-to-end latency of two gateways
chained through the broker. Prints a Markdown table a part (medians of --runs), the machine and the
command. A benchmark: it never fails on a figure, only on a broken setup.

    bench/mqtt.py [--runs 3] [--messages 100000] [--batches 10000] [--inflight 20,1000]
                  [--parts drain,chain] [--sluiced build/sluiced]

drain: for each broker setting of max_inflight_messages (QoS 1 messages in flight to one client;
mosquitto's default is 20) and each case (one reading a message as `value`, `line` and `native`, and
native batches of 1,000 readings), a fresh mosquitto (no queue limit) and two
persistent sessions subscribed to the topic at QoS 1 (sluiced's client id and mosquitto_sub's, each
connected once and gone); the messages are published once (QoS 1, by a small MQTT client in this
file, every PUBACK waited for), so the broker queues a copy for each session; then mosquitto_sub
(-c, the same client id, -C N > /dev/null) drains its copy, timed from its start to its exit; then
the broker stops (saving its queue), sluiced starts (--sync always, the default: each round of
messages fsynced before its PUBACKs) and retries, the broker starts again, and GET /api/v1/mqtt is
polled every 20 ms: the rate is the messages counted between the first poll that
saw some and the poll that saw all, over that time (sluiced's own start-up, about a second of arena
pre-faulting, is not in it). sluiced's CPU (utime + stime) is over the same time. The ratio is
sluiced's messages a second over mosquitto_sub's.

chain: gateway A (native TCP in, --uplink up=mqtt://.../chain?format=native&qos=1,
--uplink-flush-interval 1ms) and gateway B (--mqtt-subscribe chain=native), one broker. One batch of
one reading at a time into A over acked TCP (its time the wall clock); B's /api/v1/sensors/ID/readings
polled every 1 ms until the reading is there: the latency is from A's ack to B showing it. --chain-n
samples; p50 and p99.

crash: what a PUBACK promises, measured (STORAGE.md, "MQTT in"): --crash-messages messages (one
reading each, `value` and then `native` on one stream) published live at QoS 1 by the client in this
file while sluiced (--sync always) is SIGKILLed three times, at a quarter, half and three quarters of
them stored, and restarted on its data directory each time; then every reading is counted: lost
(a time never stored) and stored twice. --runs times each.
"""
import argparse
import ctypes
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from engines import Engine, Mosquitto  # noqa: E402
from harness import batch, free_port, parse_ack, recv_exact, wait_until  # noqa: E402
from line_http import proc_cpu_s  # noqa: E402  (this directory comes first)
from uplink import machine  # noqa: E402

POLL_S = 0.02
ARGS = None
TOPIC = "bench/data"


class Broken(Exception):
    """A broken setup: the run cannot go on."""


# --- a minimal MQTT 3.1.1 publisher (QoS 1), to preload the broker fast -------------------


def _varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind, body):
    return bytes([kind]) + _varint(len(body)) + body


def _str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def publish_all(port, topic, payloads, window=2000):
    """Publish every payload at QoS 1 on one connection; returns when each PUBACK came."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = "bench-pub-%d" % os.getpid()
    s.sendall(_packet(0x10, _str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + _str(client)))
    if recv_exact(s, 4, 30)[3] != 0:
        raise Broken("the broker refused the publisher")
    acked = [0]
    cond = threading.Condition()

    def reader():
        buf = b""
        while acked[0] < len(payloads):
            chunk = s.recv(65536)
            if not chunk:
                return
            buf += chunk
            n = len(buf) // 4  # PUBACKs are 4 bytes (0x40 0x02 id id); nothing else comes
            buf = buf[n * 4:]
            with cond:
                acked[0] += n
                cond.notify_all()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t_bytes = _str(topic)
    out = bytearray()
    for i, p in enumerate(payloads):
        if i - acked[0] >= window and out:
            s.sendall(out)  # what is buffered goes before waiting for its PUBACKs
            out = bytearray()
        with cond:
            while i - acked[0] >= window:
                cond.wait(30)
        mid = i % 65535 + 1
        out += _packet(0x32, t_bytes + struct.pack(">H", mid) + p)
        if len(out) > 1 << 16 or i == len(payloads) - 1:
            s.sendall(out)
            out = bytearray()
    t.join(120)
    if acked[0] != len(payloads):
        raise Broken("the publisher got %d of %d PUBACKs" % (acked[0], len(payloads)))
    s.sendall(_packet(0xE0, b""))
    s.close()


# --- the processes ----------------------------------------------------------------------


class Gateway(Engine):
    """A sluiced on free loopback ports (TCP, HTTP), stopped by PID like the engines."""

    name = "sluiced"
    health = ("/healthz", 200)
    http_port_index = 1

    def __init__(self, sluiced, tmp, name, extra=(), data=None, ring=1024):
        self.name = name
        self.cmd = [sluiced, "--udp", "off", "--data-dir", os.path.join(tmp, data or name, "data"),
                    "--max-sensors", "16384", "--ring-readings", str(ring), "--max-series", "1024",
                    "--quiet"] + list(extra)
        super().__init__(tmp, ports=2)

    @property
    def tcp_port(self):
        return self.ports[0]

    def argv(self):
        return self.cmd + ["--tcp", "127.0.0.1:%d" % self.ports[0], "--http", "127.0.0.1:%d" % self.port]

    def json(self, path):
        status, _, body = self.get(path)
        if status != 200:
            raise Broken("sluiced %s answered %d" % (path, status))
        return json.loads(body)


def payloads(case, n, t0_us):
    if case == "value":
        return [b"%d %d" % (i % 1000, t0_us + i) for i in range(n)]
    if case == "line":
        return [b"bench,s=%d v=%d %d" % (i % 100, i % 1000, (t0_us + i) * 1000) for i in range(n)]
    if case == "native":
        return [batch(9, i + 1, t0_us + i, [(i % 100 + 1, 0, float(i % 1000))], flags=0)
                for i in range(n)]
    if case == "native_one":  # one sensor, one stream: a reading a message
        return [batch(9, i + 1, t0_us + i, [(1, 0, float(i % 1000))], flags=0) for i in range(n)]
    # native batches of 1,000 readings: 100 sensors x 10 times each, encoded by libsluice's codec
    # (the CRC in Python would take longer than the drain)
    return native_frames(n, t0_us)


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint8), ("flags", ctypes.c_uint8), ("count", ctypes.c_uint16),
                ("stream_id", ctypes.c_uint32), ("key_id", ctypes.c_uint32),
                ("batch_seq", ctypes.c_uint64), ("base_time_us", ctypes.c_int64)]


class _Reading(ctypes.Structure):
    _fields_ = [("sensor_id", ctypes.c_uint32), ("offset_us", ctypes.c_uint32), ("value", ctypes.c_float)]


def native_frames(n, t0_us, per=1000):
    lib = ctypes.CDLL(os.path.join(os.path.dirname(os.path.abspath(ARGS.sluiced)), "libsluice.so"))
    lib.sl_batch_encode.restype = ctypes.c_size_t
    readings = (_Reading * per)(*[_Reading(k % 100 + 1, (k // 100) * 1000, float(k)) for k in range(per)])
    cap = 32 + 12 * per + 64
    buf = ctypes.create_string_buffer(cap)
    out = []
    for i in range(n):
        h = _Header(1, 0, per, 9, 0, i + 1, t0_us + i * 10000)
        size = lib.sl_batch_encode(buf, cap, ctypes.byref(h), readings)
        if size == 0:
            raise Broken("sl_batch_encode refused the frame")
        out.append(buf.raw[:size])
    return out


def drain_once(args, case, n, inflight):
    tmp = tempfile.mkdtemp(prefix="sluice-bench-mqtt-")
    broker = Mosquitto(tmp, max_inflight=inflight, autosave_s=3600)
    fmt = "native" if case.startswith("native") else case
    sub_id, gw_id = "bench-sub", "bench-gw"
    gw_flags = ["--mqtt-broker", broker.url, "--mqtt-subscribe", "%s=%s" % (TOPIC, fmt),
                "--mqtt-client-id", gw_id]
    try:
        # the two sessions, subscribed once and gone
        subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", TOPIC,
                        "-q", "1", "-c", "-i", sub_id, "-E"], check=True, timeout=30)
        gw = Gateway(args.sluiced, tmp, "gw0", gw_flags)
        if not wait_until(lambda: gw.json("/api/v1/mqtt")["connected"], 30):
            raise Broken("sluiced did not connect")
        gw.stop()
        t0_us = (int(time.time()) - 7200) * 1000000
        publish_all(broker.port, TOPIC, payloads(case, n, t0_us))
        # mosquitto_sub's copy
        t = time.time()
        r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", TOPIC,
                            "-q", "1", "-c", "-i", sub_id, "-C", str(n)],
                           stdout=subprocess.DEVNULL, timeout=600)
        sub_s = time.time() - t
        if r.returncode != 0:
            raise Broken("mosquitto_sub exited %d" % r.returncode)
        # sluiced's copy: sluiced is up (retrying) before the broker comes back with the queue
        broker.stop()  # writes its queue to disk
        gw = Gateway(args.sluiced, tmp, "gw1", gw_flags, data="gw0")
        broker.start()
        first = None
        deadline = time.time() + 600
        while time.time() < deadline:
            st = gw.json("/api/v1/mqtt")
            got = sum(st["messages"].values())
            now = time.time()
            if got > 0 and first is None:
                first = (now, got, proc_cpu_s(gw.pid))
            if got >= n:
                break
            time.sleep(POLL_S)
        else:
            raise Broken("sluiced took %d of %d messages" % (got, n))
        cpu = proc_cpu_s(gw.pid) - first[2]
        secs = now - first[0]
        readings = st["readings_accepted"] + st["readings_rejected"]
        bad = st["messages"]["bad"]
        gw.stop()
        if bad:
            raise Broken("sluiced counted %d bad messages" % bad)
        if secs <= 0:
            raise Broken("the drain was over within one poll: use more messages")
        return {"sub_rate": n / sub_s, "gw_rate": (n - first[1]) / secs, "gw_cpu": cpu / secs,
                "readings": readings, "per_round": n / max(st["rounds"], 1)}
    finally:
        broker.stop()


def part_drain(args):
    rows = []
    cases = [("value", args.messages, 1), ("line", args.messages, 1), ("native", args.messages, 1),
             ("native1000", args.batches, 1000)]
    for inflight in args.inflight:
        for case, n, per in cases:
            runs = [drain_once(args, case, n, inflight) for _ in range(args.runs)]
            sub = statistics.median(r["sub_rate"] for r in runs)
            gw = statistics.median(r["gw_rate"] for r in runs)
            cpu = statistics.median(r["gw_cpu"] for r in runs)
            per_round = statistics.median(r["per_round"] for r in runs)
            rows.append((inflight, case, n, sub, gw, gw * per, gw / sub, cpu, per_round))
            print("  inflight %d %s: mosquitto_sub %.0f msg/s, sluiced %.0f msg/s (%.2fx)"
                  % (inflight, case, sub, gw, gw / sub), file=sys.stderr)
    print("\n| broker max_inflight | payload | messages | mosquitto_sub msg/s | sluiced msg/s | "
          "sluiced readings/s | ratio | sluiced CPU (cores) | messages a round |")
    print("|---|---|---|---|---|---|---|---|---|")
    for inflight, case, n, sub, gw, rps, ratio, cpu, per_round in rows:
        name = {"value": "value, 1 reading", "line": "line, 1 reading", "native": "native, 1 reading",
                "native1000": "native, 1,000 readings"}[case]
        print("| %d | %s | %d | %.0f | %.0f | %.0f | %.2fx | %.2f | %.1f |"
              % (inflight, name, n, sub, gw, rps, ratio, cpu, per_round))


def part_chain(args):
    tmp = tempfile.mkdtemp(prefix="sluice-bench-chain-")
    broker = Mosquitto(tmp, persistence=False)
    try:
        b = Gateway(args.sluiced, tmp, "site", ["--mqtt-broker", broker.url,
                                                  "--mqtt-subscribe", "chain=native",
                                                  "--mqtt-client-id", "bench-site"])
        if not wait_until(lambda: b.json("/api/v1/mqtt")["connected"], 30):
            raise Broken("the site gateway did not connect")
        a = Gateway(args.sluiced, tmp, "edge", ["--uplink", "up=mqtt://127.0.0.1:%d/chain?format=native&qos=1"
                                                % broker.port, "--uplink-flush-interval", "1ms"])
        s = socket.create_connection(("127.0.0.1", a.tcp_port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lat = []
        for i in range(args.chain_n):
            t_us = int(time.time() * 1e6)
            s.sendall(batch(1, i + 1, t_us, [(7, 0, float(i))]))
            if parse_ack(recv_exact(s, 32))["status"] != 0:
                raise Broken("edge did not ack")
            t_ack = time.time()
            while True:
                status, _, body = b.get("/api/v1/sensors/7/readings?from_us=%d&limit=1" % t_us)
                if status == 200 and json.loads(body)["t_us"] == [t_us]:
                    break
                if time.time() - t_ack > 30:
                    raise Broken("the reading never reached the site gateway")
                time.sleep(0.001)
            lat.append((time.time() - t_ack) * 1000)
        s.close()
        a.stop()
        b.stop()
    finally:
        broker.stop()
    lat.sort()
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print("\n| chain: edge sluiced -> mosquitto -> site sluiced | samples | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    print("| one reading a batch, --uplink-flush-interval 1ms, --sync always at both | %d | %.1f | %.1f |"
          % (len(lat), p50, p99))


def crash_once(args, fmt, n, kills):
    """Publish n messages live (QoS 1) while sluiced is SIGKILLed `kills` times and restarted;
    returns (lost, stored twice)."""
    tmp = tempfile.mkdtemp(prefix="sluice-bench-crash-")
    broker = Mosquitto(tmp)
    topic = "crash/x"
    flags = ["--mqtt-broker", broker.url, "--mqtt-subscribe", "%s=%s" % (topic, fmt),
             "--mqtt-client-id", "bench-crash"]
    t0_us = (int(time.time()) - 7200) * 1000000
    try:
        gw = Gateway(args.sluiced, tmp, "gw", flags, ring=1 << 16)
        if not wait_until(lambda: gw.json("/api/v1/mqtt")["connected"], 30):
            raise Broken("sluiced did not connect")
        sid = None if fmt == "native" else "mqtt,topic=%s value" % topic
        pub = threading.Thread(target=publish_all, args=(broker.port, topic, payloads("native_one" if fmt == "native" else fmt, n, t0_us)),
                               kwargs={"window": 100}, daemon=True)

        def stored():
            if sid is None:
                return readings_of(gw, 1, n)
            st, _, body = gw.get("/api/v1/series?name=" + urllib.parse.quote(sid, safe=""))
            return readings_of(gw, json.loads(body)["id"], n) if st == 200 else []

        pub.start()
        for k in range(kills):
            target = n * (k + 1) // (kills + 1)
            wait_until(lambda: len(stored()) >= target, 120, 0.002)
            gw.kill()
            gw = Gateway(args.sluiced, tmp, "gw", flags, ring=1 << 16)
        pub.join(300)
        if not wait_until(lambda: len({t for t, _ in stored()}) >= n, 120):
            pass
        got = stored()
        gw.stop()
    finally:
        broker.stop()
    times = [t for t, _ in got]
    return n - len(set(times)), len(times) - len(set(times))


def readings_of(gw, sensor, n):
    st, _, body = gw.get("/api/v1/sensors/%d/readings?limit=%d" % (sensor, max(n * 2, 1)))
    if st != 200:
        return []
    b = json.loads(body)
    return list(zip(b["t_us"], b["value"]))


def part_crash(args):
    print("\n| format | messages published (QoS 1, live) | SIGKILLs | lost | stored twice |")
    print("|---|---|---|---|---|")
    for fmt in ("value", "native"):
        for _ in range(args.runs):
            lost, twice = crash_once(args, fmt, args.crash_messages, 3)
            print("| %s, 1 reading | %d | 3 | %d | %d |" % (fmt, args.crash_messages, lost, twice))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--batches", type=int, default=10000)
    p.add_argument("--inflight", default="20,1000")
    p.add_argument("--parts", default="drain,chain,crash")
    p.add_argument("--chain-n", type=int, default=300)
    p.add_argument("--crash-messages", type=int, default=20000)
    p.add_argument("--sluiced", default=os.path.join(REPO, "build", "sluiced"))
    args = p.parse_args()
    global ARGS
    ARGS = args
    args.inflight = [int(x) for x in args.inflight.split(",")]
    print("Machine: %s; mosquitto %s" % (machine(), subprocess.run(
        ["mosquitto", "-h"], capture_output=True).stdout.decode().splitlines()[0].split()[-1]))
    print("Command: bench/mqtt.py " + " ".join(sys.argv[1:]))
    parts = args.parts.split(",")
    if "drain" in parts:
        part_drain(args)
    if "chain" in parts:
        part_chain(args)
    if "crash" in parts:
        part_crash(args)


if __name__ == "__main__":
    main()
