#!/usr/bin/env python3
"""/healthz under hostile HTTP clients: latency of a legitimate poller while
1,000 hostile connections of one kind are held open (and reopened as the
gateway closes them), and the RSS peak against the memory plan. A
benchmark: it never fails on a figure.

    bench/http_hostile.py [--build build] [--runs 3] [--seconds 12] [--connections 1000]
                          [--sources 1] [--reopen-delay 1]

Kinds, one phase each, against one fresh sluiced a run (default HTTP
limits: 64 connections, a quarter of them per address, 5 s header
deadline, 10 s --http-timeout; a 1M-reading ring holding one full sensor):
- silent: connect and send nothing;
- slowloris: a request line, then one header byte a second on every one;
- dump: request all 1,000,000 readings as JSON, with a 4 KiB receive buffer,
  and never read.
The attacker keeps `--connections` open for `--seconds`, reopening each
`--reopen-delay` seconds after the gateway closed it (0: at once, a
connection flood bounded only by the attacker's speed), from `--sources`
loopback addresses
(127.0.0.1 first; 1 = every hostile connection from the poller's own
address, the hard case for the per-address cap). The poller asks /healthz on
a fresh connection every 20 ms, once from the attacker's own address and
once from another (127.0.0.250) (5 s timeout; a failure counts as an error
and as 5 s). Prints per kind the medians over the runs of p50, p99 and max
latency, errors, and the RSS peak (VmHWM) against sluice_memory_planned_bytes.
"""
import argparse
import collections
import http.client
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

RING = 1000000


def metrics(port):
    out = {}
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
    return out


def start(build, tmp):
    p = subprocess.Popen([os.path.join(build, "sluiced"), "--udp", "off", "--tcp", "127.0.0.1:0",
                          "--http", "127.0.0.1:0", "--data-dir", os.path.join(tmp, "data"),
                          "--max-sensors", "16", "--ring-readings", str(RING), "--sync", "never"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = b""
    deadline = time.time() + 30
    while b"listening" not in line and time.time() < deadline:
        line = p.stdout.readline()
    fields = dict(t.split("=", 1) for t in line.decode().split() if "=" in t)
    tcp = int(fields["tcp"].rsplit(":", 1)[1])
    http_port = int(fields["http"].rsplit(":", 1)[1])
    subprocess.run([os.path.join(build, "sluice-load"), "--target", "tcp://127.0.0.1:%d" % tcp,
                    "--sensors", "1", "--readings", str(RING), "--batch", "5000",
                    "--start-time-us", "-%ds" % (2 * RING), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    while metrics(http_port).get("sluice_readings_accepted_total", 0) < RING:
        time.sleep(0.1)
    return p, http_port


class Attacker:
    """Holds `count` hostile connections of one kind open, reopening closed ones."""

    def __init__(self, port, kind, count, sources, reopen_delay_s):
        self.port, self.kind, self.count, self.sources = port, kind, count, sources
        self.reopen_delay_s = reopen_delay_s
        self.due = collections.deque([0.0] * count)  # when each missing connection may be reopened
        self.sel = selectors.DefaultSelector()
        self.opened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def open_one(self):
        s = socket.socket()
        if self.kind == "dump":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.%d" % (1 + self.opened % self.sources), 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        self.opened += 1
        self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, {"sent": False})

    def run(self):
        next_tick = time.time() + 1
        while not self.stop.is_set():
            burst = 0
            while self.due and self.due[0] <= time.time() and burst < 50 and not self.stop.is_set():
                self.due.popleft()
                self.open_one()
                burst += 1  # let the loop below see closes between bursts
            for key, ev in self.sel.select(timeout=0.05):
                s, st = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE and not st["sent"]:
                    st["sent"] = True
                    self.sel.modify(s, selectors.EVENT_READ, st)
                    try:
                        if self.kind == "slowloris":
                            s.send(b"GET /healthz HTTP/1.1\r\nX-a: ")
                        elif self.kind == "dump":
                            s.send(b"GET /api/v1/sensors/1/readings?limit=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                    except OSError:
                        self.drop(s)
                    continue
                if ev & selectors.EVENT_READ:
                    try:
                        data = s.recv(1, socket.MSG_PEEK)
                    except OSError:
                        data = b""
                    if not data:
                        self.drop(s)
                    elif self.kind != "dump":
                        self.drop(s)  # an answer (an error): close and reopen
            if self.kind == "slowloris" and time.time() >= next_tick:
                next_tick += 1
                for key in list(self.sel.get_map().values()):
                    try:
                        key.fileobj.send(b"a")
                    except OSError:
                        pass
        for key in list(self.sel.get_map().values()):
            self.drop(key.fileobj)

    def drop(self, s):
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            return
        s.close()
        self.due.append(time.time() + self.reopen_delay_s)


errors = {}


def poll(port, stop, samples, source):
    while not stop.is_set():
        t0 = time.perf_counter()
        ok = False
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            ok = r.status == 200 and r.read() == b"ok"
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        dt = time.perf_counter() - t0
        samples.append((dt if ok else 5.0, ok))
        time.sleep(max(0.0, 0.02 - dt))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def phase(port, kind, args, poller_source):
    samples = []
    stop = threading.Event()
    attacker = Attacker(port, kind, args.connections, args.sources, args.reopen_delay)
    attacker.thread.start()
    time.sleep(1.0)  # let the attacker reach its count
    errors.clear()
    poller = threading.Thread(target=poll, args=(port, stop, samples, poller_source))
    poller.start()
    time.sleep(args.seconds)
    stop.set()
    poller.join()
    attacker.stop.set()
    attacker.thread.join()
    lat = [s[0] * 1000 for s in samples]
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat),
            "requests": len(samples), "errors": sum(1 for s in samples if not s[1]),
            "opened": attacker.opened, "error_kinds": dict(errors)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--sources", type=int, default=1)
    ap.add_argument("--reopen-delay", type=float, default=1.0,
                    help="seconds before a closed hostile connection is reopened (0: at once, a flood)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.connections + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    kinds = ["silent", "slowloris", "dump"]
    # The poller on the attacker's own address (the per-address cap cannot tell them apart) or
    # on another one (the cap keeps the attacker to a quarter of the table).
    pollers = [("same address", "127.0.0.1"), ("other address", "127.0.0.250")]
    results = {(k, p): [] for k in kinds for p, _ in pollers}
    peaks = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="sluice-bench-http-") as tmp:
            p, port = start(args.build, tmp)
            try:
                for kind in kinds:
                    for where, source in pollers:
                        r = phase(port, kind, args, source)
                        m = metrics(port)
                        r["evicted"] = sum(v for k, v in m.items()
                                           if k.startswith("sluice_http_connections_evicted_total"))
                        r["header_timeouts"] = m.get("sluice_http_header_timeouts_total", 0)
                        results[(kind, where)].append(r)
                        print("run %d %s, poller on the %s: %s" % (run + 1, kind, where, json.dumps(r)),
                              file=sys.stderr)
                m = metrics(port)
                peaks.append((m["sluice_resident_peak_bytes"], m["sluice_memory_planned_bytes"]))
            finally:
                p.terminate()
                p.wait(timeout=30)
    print("| kind | poller | /healthz p50 | p99 | max | errors / requests | hostile connections opened |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        for where, _ in pollers:
            rs = results[(kind, where)]

            def med(f):
                return statistics.median(r[f] for r in rs)
            print("| %s | %s | %.1f ms | %.1f ms | %.0f ms | %d / %d | %d |" % (
                kind, where, med("p50_ms"), med("p99_ms"), med("max_ms"), med("errors"), med("requests"),
                med("opened")))
    peak = statistics.median(x[0] for x in peaks)
    plan = statistics.median(x[1] for x in peaks)
    print()
    print("RSS peak (VmHWM) %.1f MiB, plan %.1f MiB (median of %d runs)" % (peak / 2**20, plan / 2**20, len(peaks)))


if __name__ == "__main__":
    main()
