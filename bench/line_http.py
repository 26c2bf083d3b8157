#!/usr/bin/env python3
"""Line protocol over HTTP POST /write, end to end: sluiced (--sync batch and
--sync always) beside VictoriaMetrics, the same pre-built payloads from the
same sender, in one run. Prints a Markdown table of medians, the machine and
the command. A benchmark: it never fails on a figure, only on a broken setup.

    bench/line_http.py [--targets sluiced-batch,sluiced-always,vm] [--sluiced build/sluiced]
                       [--vm /usr/bin/victoria-metrics] [--runs 3] [--seconds 5]
                       [--shape telegraf|one] [--hosts 100] [--cpus 8] [--lines-per-request 5000]
                       [--connections 2] [--sender thread|process] [--step-ms 10] [--body-mb 2048]

Payloads (--shape telegraf, the default), one line a series and point:
    cpu,host=h17,cpu=cpu3 usage_user=12.34,usage_system=3.21,usage_idle=84.45 1700000000000000000
hosts x cpus series of 3 fields (100 x 8 = 800 series, 2,400 sensors); --shape one:
    m,host=h17 v=12.34 1700000000000000000
hosts x cpus series of one field. A reading is a field. Timestamps are in ns, --step-ms apart per series,
increasing point by point, and end a minute before the wall clock at build time (nothing is too old or in
the future for either target). The hosts are shared out among the --connections (as Telegraf agents own
their hosts), so each series comes down one connection in time order: nothing is out of order for sluiced.
The bodies (--lines-per-request lines each, up to --body-mb in all) are built once, before any timing,
and reused by every run of every target (each run has a fresh target process and data directory). A
connection that runs out of bodies stops early and the table says so: raise --body-mb.

Each connection is a keep-alive http.client.HTTPConnection (in a thread, or with --sender process in a
forked process) that POSTs body after body, waiting for each answer, for --seconds. The rate is the
lines (readings) in 2xx answers divided by the time from the first send to the last answer. The target's
CPU is utime+stime from /proc/PID/stat across that time; its peak RSS is VmHWM from /proc/PID/status,
read right after (before the checks). The sender's own CPU (per worker thread_time / process_time) is
reported beside it, so a sender-bound run shows. Any failed request (non-2xx, or no answer) makes that
run's figures invalid: they are counted, the table says so and the run is left out of the medians.

After each run the target is asked what it stored: sluiced's sluice_readings_accepted_total in GET
/metrics against the readings acked; VictoriaMetrics after GET /internal/force_flush: the series count
(/api/v1/series/count), the points (sum(count_over_time(...)) over the data's span) and the first point
of one series (/api/v1/export) against what was sent.

sluiced: --udp off --tcp off --http 127.0.0.1:PORT --data-dir TMP --sync MODE --max-sensors 65536
--ring-readings 1024 --quiet (+ --sluiced-arg ...), ready when GET /healthz answers 200.
VictoriaMetrics: -httpListenAddr 127.0.0.1:PORT -storageDataPath TMP -retentionPeriod 100y
(+ --vm-arg ...), ready when GET /health answers 200. Ports are free loopback ports (bound to port 0).
"""
import argparse
import http.client
import json
import math
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRITE_PATH = "/write?precision=ns"
TARGETS = ("sluiced-batch", "sluiced-always", "vm")

# Set by build_payload before any worker starts; forked sender processes inherit it.
PAYLOAD = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return len(os.sched_getaffinity(0)), model


# --- payload ---------------------------------------------------------------------


class Payload:
    """Per connection: a list of request bodies (bytes) of `lines` lines each, and
    what is needed to check a target against them."""

    def __init__(self):
        self.bodies = []         # [connection] -> [bytes]
        self.series = []         # [connection] -> series that connection sends
        self.lines = 0           # lines a request
        self.fields = 0          # readings a line
        self.t0_ns = 0           # first point's time
        self.step_ns = 0
        self.points = []         # [connection] -> points a series in its bodies
        self.first = None        # (selector for VictoriaMetrics, t0 ms, first value) of one series
        self.measurement = ""
        self.nbytes = 0


def build_payload(args):
    rnd = random.Random(12)
    fields = ("usage_user", "usage_system", "usage_idle") if args.shape == "telegraf" else ("v",)
    meas = "cpu" if args.shape == "telegraf" else "m"
    nhosts = args.hosts if args.shape == "telegraf" else args.hosts * args.cpus
    if nhosts < args.connections:
        raise SystemExit("fewer hosts (%d) than connections (%d)" % (nhosts, args.connections))
    variants = 16  # value sets cycled point by point, so values vary without a format call a line

    def series_of(c):  # (tag part, VictoriaMetrics label selector part) of connection c's series
        out = []
        for h in range(c, nhosts, args.connections):
            if args.shape == "telegraf":
                for k in range(args.cpus):
                    out.append(("%s,host=h%d,cpu=cpu%d" % (meas, h, k), 'host="h%d",cpu="cpu%d"' % (h, k)))
            else:
                out.append(("%s,host=h%d" % (meas, h), 'host="h%d"' % h))
        return out

    def values():
        if args.shape == "telegraf":
            u, s = rnd.uniform(0, 60), rnd.uniform(0, 20)
            return ("%.2f" % u, "%.2f" % s, "%.2f" % (100 - u - s))
        return ("%.2f" % rnd.uniform(0, 100),)

    p = Payload()
    p.lines, p.fields, p.measurement = args.lines_per_request, len(fields), meas
    p.step_ns = int(args.step_ms * 1e6)
    conns = [series_of(c) for c in range(args.connections)]
    # Line templates without the timestamp: [connection][variant][series] -> b"tags fields"
    templates = []
    first_value = None
    for c, ser in enumerate(conns):
        per_variant = []
        for v in range(variants):
            row = []
            for tags, _ in ser:
                vals = values()
                if c == 0 and v == 0 and first_value is None:
                    first_value = float(vals[0])
                row.append(("%s %s" % (tags, ",".join("%s=%s" % kv for kv in zip(fields, vals)))).encode())
            per_variant.append(row)
        templates.append(per_variant)
    avg_line = sum(len(t) for t in templates[0][0]) / len(templates[0][0]) + 21  # + " " ts "\n"
    total_lines = int(args.body_mb * 1048576 / avg_line)
    requests_per_conn = max(1, total_lines // args.lines_per_request // args.connections)
    points = [int(math.ceil(requests_per_conn * args.lines_per_request / len(ser))) for ser in conns]
    span_ns = (max(points) - 1) * p.step_ns
    p.t0_ns = time.time_ns() - 60 * 10**9 - span_ns
    p.t0_ns -= p.t0_ns % p.step_ns
    for c, ser in enumerate(conns):
        bodies, pending, n = [], [], 0
        for j in range(points[c]):
            ts = b" %d\n" % (p.t0_ns + j * p.step_ns)
            pending.extend([t + ts for t in templates[c][j % variants]])
            while len(pending) >= args.lines_per_request and len(bodies) < requests_per_conn:
                bodies.append(b"".join(pending[:args.lines_per_request]))
                del pending[:args.lines_per_request]
                n += len(bodies[-1])
        p.bodies.append(bodies)
        p.series.append(len(ser))
        p.points.append(points[c])
        p.nbytes += n
    sel = "{__name__=\"%s_%s\",%s}" % (meas, fields[0], conns[0][0][1])
    p.first = (sel, p.t0_ns // 10**6, first_value)
    return p


# --- targets ---------------------------------------------------------------------


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # fields 14 and 15: utime, stime


def proc_hwm_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def http_get(port, path, timeout=60):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Target:
    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.proc = None
        self.dir = None
        self.port = None
        self.log = None

    def start(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sluice-linehttp-")
        data = os.path.join(self.dir, "data")
        if self.name == "vm":
            cmd = [self.args.vm, "-httpListenAddr", "127.0.0.1:%d" % self.port, "-storageDataPath", data,
                   "-retentionPeriod", "100y"] + self.args.vm_arg
            health = "/health"
        else:
            cmd = [self.args.sluiced, "--udp", "off", "--tcp", "off", "--http", "127.0.0.1:%d" % self.port,
                   "--data-dir", data, "--sync", self.name.split("-", 1)[1], "--max-sensors", "4096",
                   "--ring-readings", "1024", "--max-http-writes", "2", "--http-max-body", "4M",
                   "--log-buffer-bytes", "8M", "--quiet"] + self.args.sluiced_arg
            health = "/healthz"
        self.log = open(os.path.join(self.dir, "log"), "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if http_get(self.port, health, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.log.seek(0)
        out = self.log.read()[-2000:]
        self.stop()
        raise SystemExit("%s did not become ready (%s): %s\n%s" % (self.name, " ".join(cmd),
                         "exited %s" % self.proc.returncode if self.proc.poll() is not None else "timeout", out))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def has_write(self):
        """An empty POST /write: stores nothing; a 404 says the route is missing."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request("POST", WRITE_PATH, body=b"", headers={"Content-Type": "text/plain; charset=utf-8"})
            r = c.getresponse()
            r.read()
            return r.status != 404, r.status
        finally:
            c.close()

    def check(self, payload, acked_readings, acked_lines_per_conn):
        """What the target says it stored against what it acked: (ok, text)."""
        if self.name != "vm":
            status, body = http_get(self.port, "/metrics")
            if status != 200:
                return False, "/metrics %d" % status
            got = None
            for line in body.decode().splitlines():
                if line.startswith("sluice_readings_accepted_total "):
                    got = int(float(line.split()[1]))
            if got is None:
                return False, "no sluice_readings_accepted_total"
            ok = got == acked_readings
            return ok, "accepted_total %d %s acked %d" % (got, "=" if ok else "!=", acked_readings)
        status, _ = http_get(self.port, "/internal/force_flush")
        if status != 200:
            return False, "force_flush %d" % status
        want_series = sum(min(s, n) for s, n in zip(payload.series, acked_lines_per_conn)) * payload.fields
        status, body = http_get(self.port, "/api/v1/series/count")
        index_count = json.loads(body)["data"][0] if status == 200 else None
        last_ns = payload.t0_ns + (max(payload.points) - 1) * payload.step_ns
        at = last_ns // 10**9 + 1
        window = at - payload.t0_ns // 10**9 + 2

        def instant(q):
            status, body = http_get(self.port, "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": at}))
            if status != 200:
                return None
            res = json.loads(body)["data"]["result"]
            return int(float(res[0]["value"][1])) if res else 0
        series = instant('count(count_over_time({host=~".+"}[%ds]))' % window)
        points = instant('sum(count_over_time({host=~".+"}[%ds]))' % window)
        sel, t0_ms, v0 = payload.first
        status, body = http_get(self.port, "/api/v1/export?" + urllib.parse.urlencode(
            {"match[]": sel, "start": payload.t0_ns // 10**9 - 1, "end": at}))
        sample_ok = False
        if status == 200 and body.strip():
            row = json.loads(body.splitlines()[0])
            sample_ok = row["timestamps"][0] == t0_ms and abs(row["values"][0] - v0) < 1e-9
        status, body = http_get(self.port, "/metrics")
        inserted = invalid = None
        for line in body.decode().splitlines():
            if line.startswith('vm_rows_inserted_total{type="influx"}'):
                inserted = int(float(line.split()[-1]))
            elif line.startswith('vm_rows_invalid_total{type="influx"}'):
                invalid = int(float(line.split()[-1]))
        ok = series == want_series and points == acked_readings and sample_ok and invalid == 0 \
            and inserted == acked_readings
        return ok, "series %s/%d (index count %s), points %s/%d, rows inserted %s, invalid %s, first point %s" % (
            series, want_series, index_count, points, acked_readings, inserted, invalid,
            "ok" if sample_ok else "WRONG")


# --- sender ----------------------------------------------------------------------


def send_loop(c, port, seconds, barrier):
    """POST connection c's bodies one after another for `seconds`; returns its tally."""
    bodies = PAYLOAD.bodies[c]
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    t = {"ok_req": 0, "failed": 0, "statuses": {}, "accepted_hdr": 0, "rejected_hdr": 0, "first_error": None,
         "exhausted": False}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)  # connects on the first request
    barrier.wait()
    cpu0 = time.thread_time() if threading.current_thread() is not threading.main_thread() else time.process_time()
    t0 = time.monotonic()
    end = t0 + seconds
    i = 0
    while time.monotonic() < end:
        if i == len(bodies):
            t["exhausted"] = True
            break
        try:
            conn.request("POST", WRITE_PATH, body=bodies[i], headers=headers)
            r = conn.getresponse()
            data = r.read()
            t["statuses"][r.status] = t["statuses"].get(r.status, 0) + 1
            if 200 <= r.status < 300:
                t["ok_req"] += 1
                t["accepted_hdr"] += int(r.getheader("X-Sluice-Accepted", "0"))
                t["rejected_hdr"] += int(r.getheader("X-Sluice-Rejected", "0"))
            else:
                t["failed"] += 1
                if t["first_error"] is None:
                    t["first_error"] = "%d %s" % (r.status, data[:200].decode(errors="replace"))
        except (OSError, http.client.HTTPException) as e:
            t["failed"] += 1
            t["statuses"]["error"] = t["statuses"].get("error", 0) + 1
            if t["first_error"] is None:
                t["first_error"] = repr(e)
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i += 1
    t["t0"], t["t1"] = t0, time.monotonic()
    t["cpu_s"] = (time.thread_time() if threading.current_thread() is not threading.main_thread()
                  else time.process_time()) - cpu0
    conn.close()
    return t


def _proc_worker(c, port, seconds, barrier, q):
    q.put((c, send_loop(c, port, seconds, barrier)))


def send(args, port, on_start):
    """Run the connections; on_start() is called just before they are released."""
    n = args.connections
    if args.sender == "thread":
        barrier = threading.Barrier(n + 1)
        out = [None] * n

        def run(c):
            out[c] = send_loop(c, port, args.seconds, barrier)
        th = [threading.Thread(target=run, args=(c,)) for c in range(n)]
        for x in th:
            x.start()
        on_start()
        barrier.wait()
        for x in th:
            x.join()
        return out
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(n + 1)
    q = ctx.Queue()
    ps = [ctx.Process(target=_proc_worker, args=(c, port, args.seconds, barrier, q)) for c in range(n)]
    for x in ps:
        x.start()
    on_start()
    barrier.wait()
    out = [None] * n
    for _ in range(n):
        c, t = q.get(timeout=args.seconds + 600)  # a sender process that died is a broken setup
        out[c] = t
    for x in ps:
        x.join()
    return out


# --- one run ---------------------------------------------------------------------


def one_run(args, name):
    os.sync()  # earlier runs' dirty pages written back now, not during this run
    tgt = Target(name, args)
    tgt.start()
    try:
        has, status = tgt.has_write()
        if not has:
            return {"missing": "POST /write answers %d" % status}
        cpu = {}
        tally = send(args, tgt.port, lambda: cpu.__setitem__("before", proc_cpu_s(tgt.proc.pid)))
        cpu_after = proc_cpu_s(tgt.proc.pid)
        hwm = proc_hwm_bytes(tgt.proc.pid)
        elapsed = max(t["t1"] for t in tally) - min(t["t0"] for t in tally)
        lines_per_conn = [t["ok_req"] * PAYLOAD.lines for t in tally]
        lines = sum(lines_per_conn)
        readings = lines * PAYLOAD.fields
        failed = sum(t["failed"] for t in tally)
        statuses = {}
        for t in tally:
            for k, v in t["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        r = {
            "lines_s": lines / elapsed, "readings_s": readings / elapsed, "elapsed": elapsed,
            "cpu_s": cpu_after - cpu["before"], "hwm": hwm, "failed": failed, "statuses": statuses,
            "sender_cpu_s": sum(t["cpu_s"] for t in tally), "readings": readings,
            "exhausted": any(t["exhausted"] for t in tally),
            "first_error": next((t["first_error"] for t in tally if t["first_error"]), None),
        }
        r["cpu_per_m"] = r["cpu_s"] / (readings / 1e6) if readings else float("nan")
        if name != "vm":
            r["hdr"] = (sum(t["accepted_hdr"] for t in tally), sum(t["rejected_hdr"] for t in tally))
        r["check_ok"], r["check"] = tgt.check(PAYLOAD, readings, lines_per_conn)
        if name != "vm" and r["hdr"] != (readings, 0):
            r["check_ok"] = False
            r["check"] += "; X-Sluice-Accepted %d, Rejected %d" % r["hdr"]
        return r
    finally:
        tgt.stop()


def fmt_rate(x):
    return "%.3f M" % (x / 1e6) if x >= 1e5 else "%.1f k" % (x / 1e3)


def main():
    global PAYLOAD
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of " + ", ".join(TARGETS))
    ap.add_argument("--sluiced", default=os.path.join(HERE, "..", "build", "sluiced"))
    ap.add_argument("--vm", default="/usr/bin/victoria-metrics")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--shape", choices=("telegraf", "one"), default="telegraf")
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--cpus", type=int, default=8, help="series a host (telegraf: cpu tags)")
    ap.add_argument("--lines-per-request", type=int, default=5000)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--sender", choices=("thread", "process"), default="thread")
    ap.add_argument("--step-ms", type=float, default=10, help="time between a series' points")
    ap.add_argument("--body-mb", type=float, default=2048,
                    help="pre-built request bodies, MiB in all (at most a quarter of MemAvailable)")
    ap.add_argument("--sluiced-arg", action="append", default=[], help="one more sluiced argument (repeat)")
    ap.add_argument("--vm-arg", action="append", default=[], help="one more victoria-metrics argument (repeat)")
    args = ap.parse_args()
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    for n in names:
        if n not in TARGETS:
            ap.error("unknown target %r" % n)
    if args.step_ms < 1:
        ap.error("--step-ms below 1: VictoriaMetrics keeps milliseconds (-influxTrimTimestamp)")
    for n in names:
        exe = args.vm if n == "vm" else args.sluiced
        if not os.access(exe, os.X_OK):
            raise SystemExit("%s: %s is not an executable" % (n, exe))

    with open("/proc/meminfo") as f:
        avail = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:")) / 1024
    if args.body_mb > avail / 4:
        print("--body-mb %.0f lowered to %.0f (a quarter of MemAvailable)" % (args.body_mb, avail / 4),
              file=sys.stderr)
        args.body_mb = avail / 4
    ncpu, model = machine()
    print("machine: %d CPUs (nproc), %s" % (ncpu, model))
    print("command: %s" % " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:]))
    t = time.monotonic()
    PAYLOAD = build_payload(args)
    nseries = sum(PAYLOAD.series)
    print("payload: --shape %s, %d series x %d fields = %d sensors, %d lines a request, %d requests "
          "(%.0f MiB) a connection x %d, built in %.1f s" % (
              args.shape, nseries, PAYLOAD.fields, nseries * PAYLOAD.fields, PAYLOAD.lines,
              len(PAYLOAD.bodies[0]), PAYLOAD.nbytes / args.connections / 1048576, args.connections,
              time.monotonic() - t))
    print("sender: %d keep-alive connections (%s), POST %s, --seconds %g, --runs %d" % (
        args.connections, "threads" if args.sender == "thread" else "processes", WRITE_PATH, args.seconds, args.runs))
    sys.stdout.flush()

    results = {n: [] for n in names}
    missing = {}
    for run in range(args.runs):  # targets alternate run by run, so a busy spell falls on all
        for n in names:
            if n in missing:
                continue
            r = one_run(args, n)
            if "missing" in r:
                missing[n] = r["missing"]
                print("  %s: %s; skipped" % (n, r["missing"]), file=sys.stderr)
                continue
            results[n].append(r)
            print("  run %d %-14s %s lines/s %s readings/s  cpu %.2f s/M  hwm %.0f MiB  sender %.2f cores  "
                  "failed %d %s  check: %s%s" % (
                      run + 1, n, fmt_rate(r["lines_s"]), fmt_rate(r["readings_s"]), r["cpu_per_m"],
                      r["hwm"] / 1048576, r["sender_cpu_s"] / r["elapsed"], r["failed"],
                      json.dumps({str(k): v for k, v in r["statuses"].items()}), r["check"],
                      "  BODIES RAN OUT after %.2f s" % r["elapsed"] if r["exhausted"] else ""),
                  file=sys.stderr)
            if r["first_error"]:
                print("    first error: %s" % r["first_error"], file=sys.stderr)
            sys.stderr.flush()

    med = {}
    for n in names:
        valid = [r for r in results[n] if r["failed"] == 0]
        if valid:
            med[n] = {k: statistics.median(r[k] for r in valid) for k in
                      ("lines_s", "readings_s", "cpu_per_m", "hwm", "sender_cpu_s", "elapsed", "cpu_s")}
            med[n]["sender_cores"] = statistics.median(r["sender_cpu_s"] / r["elapsed"] for r in valid)
            med[n]["target_cores"] = statistics.median(r["cpu_s"] / r["elapsed"] for r in valid)
    print()
    print("| target | sync | lines/s | readings/s | target CPU s / M readings | target cores busy | peak RSS "
          "(VmHWM) | sender cores busy | readings/s ÷ VM | RSS ÷ VM | valid runs | stored = acked |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    vm = med.get("vm")
    for n in names:
        sync = "-" if n == "vm" else n.split("-", 1)[1]
        label = "VictoriaMetrics" if n == "vm" else "sluiced"
        if n in missing:
            print("| %s | %s | %s | | | | | | | | 0/0 | |" % (label, sync, missing[n]))
            continue
        rs = results[n]
        nvalid = sum(1 for r in rs if r["failed"] == 0)
        checks = "%d/%d" % (sum(1 for r in rs if r["check_ok"]), len(rs))
        if n not in med:
            print("| %s | %s | invalid: failed requests | | | | | | | | 0/%d | %s |" % (label, sync, len(rs), checks))
            continue
        m = med[n]
        ratio_r = "%.2f" % (m["readings_s"] / vm["readings_s"]) if vm else "-"
        ratio_m = "%.2f" % (m["hwm"] / vm["hwm"]) if vm else "-"
        print("| %s | %s | %s | %s | %.2f | %.2f | %.0f MiB | %.2f | %s | %s | %d/%d%s | %s |" % (
            label, sync, fmt_rate(m["lines_s"]), fmt_rate(m["readings_s"]), m["cpu_per_m"], m["target_cores"],
            m["hwm"] / 1048576, m["sender_cores"], ratio_r, ratio_m, nvalid, len(rs),
            " (bodies ran out)" if any(r["exhausted"] for r in rs) else "", checks))
    for n in names:
        bad = [r for r in results[n] if r["failed"]]
        if bad:
            print("\n%s: %d run(s) invalid, failed requests %s; first: %s" % (
                n, len(bad), [r["failed"] for r in bad], bad[0]["first_error"]))
    print("\nMedians of the valid runs (no failed request) of %g s each; a fresh target process and data "
          "directory a run. Readings are fields. CPU is the target's utime+stime; cores busy = CPU s / s." %
          args.seconds)


if __name__ == "__main__":
    main()
