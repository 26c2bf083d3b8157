#!/usr/bin/env python3
"""The uplink (UPLINK.md, issue 13): how fast sluiced drains a backlog into VictoriaMetrics, against
VictoriaMetrics' own intake of the same lines and against vmagent doing the same job; what an uplink
costs the ingest; and the bytes on the wire a reading. Prints a Markdown table a part (medians of
--runs), the machine and the command. A benchmark: it never fails on a figure, only on a broken setup.

    bench/uplink.py [--size full|small] [--runs 3] [--parts 1,2,3,4,5]
                    [--sluiced build/sluiced] [--load build/sluice-load] [--readings N]

The readings: the reference day's shape (BENCHMARKS.md, "The simulated day"): 100 streams x 100 sensors
(10,000 sensors) at 1 Hz, sluice-load's drift pattern, 100 readings a batch, over acked TCP; --size full
(the default) is 30 simulated minutes, 18,000,000 readings, --size small 30 seconds, 300,000 readings
and one run. Event time starts at one fixed moment taken at start-up, two hours ago (further back when
the span needs it), so every run sends the same readings, each sensor in time order, and VictoriaMetrics
(-retentionPeriod=100y) keeps them all.

Before any timing, the lines sluiced sends are captured: a sluiced with one influx:// uplink to a small
HTTP server in this process that keeps each request's body (gzip, as sent) and answers 204. Parts 2 and
3 post those same bodies (sluice,sensor=ID value=V T, precision=u; about --uplink-batch-bytes, 1 MiB,
before gzip), so every engine sees the same bytes.

1. sluiced drain. A fresh sluiced with --uplink vm=influx://127.0.0.1:PORT/write and VictoriaMetrics
   stopped (PORT chosen, not yet listening): sluice-load feeds the readings (the backlog; sluiced
   retries), then VictoriaMetrics starts on that port and GET /api/v1/uplinks is polled every 50 ms
   until backlog_bytes and lag_s are 0 and sent_readings is all. The drain rate is the readings sent
   between the first poll that saw some sent and the poll that saw the drain done, over that time (so
   the retry backoff left after the start is not in it: --uplink-backoff-max 1s keeps it short; "VM up
   to drained" has it). CPU is utime+stime from /proc/PID/stat across the drain, sluiced's and
   VictoriaMetrics'; "busiest thread" is the sluiced thread with the most of it (the forwarder, whose
   name is the process's: uplink threads are not named), near 1 core when it bounds the drain; peak RSS
   is VmHWM. Wire bytes a reading: the growth of sluice_uplink_sent_bytes_total from the first poll that
   saw readings delivered (it counts the bodies of attempts refused during the outage too) over the
   readings sent since. Then VictoriaMetrics is checked: /internal/force_flush, the series
   (count(count_over_time(sluice_value[span])), /api/v1/series/count beside it), the points
   (sum(count_over_time(...))) and vm_rows_inserted_total{type="influx"}, each against the readings
   sent (the points waited for, up to 30 s, as the uplink tests do).
2. VictoriaMetrics' ceiling: the captured bodies POSTed to a fresh VictoriaMetrics' /write over one
   keep-alive connection (as the uplink sends), and then over two (alternate bodies), each body waited
   for. The rate is the readings in 2xx answers from the first send to the last answer; VM CPU across
   that time; the sender's own CPU beside it. Checked as in part 1.
3. vmagent side by side: Debian's vmagent (-remoteWrite.url=VM/api/v1/write, its on-disk queue in
   -remoteWrite.tmpDataPath, otherwise its defaults) with VictoriaMetrics stopped; the captured bodies
   POSTed to vmagent's HTTP /write (its -httpListenAddr, not the -influxListenAddr TCP listener) over
   one keep-alive connection (the intake), then VictoriaMetrics starts and VM's
   vm_rows_inserted_total{type="promremotewrite"} and vmagent's vmagent_remotewrite_pending_data_bytes
   are polled every 100 ms until all readings are in and nothing is pending (the drain; the rate again
   from the first poll that saw progress). vmagent's CPU and VmHWM for intake, drain and both. Beside
   it, the same for sluiced taking the same bodies on its own POST /write (each line a named series
   "sluice,sensor=ID value", forwarded as the same line), and part 1's sluiced (native TCP in).
   Ratios: sluiced's drain rate / VictoriaMetrics' one-connection ceiling (aim >= 0.9), and sluiced's
   readings a CPU-second / vmagent's, intake + drain, and drain alone (aim >= 2).
4. Ingest cost of a caught-up uplink: the same sluice-load run into a fresh sluiced with no uplink, then
   into one with one influx:// uplink to a running VictoriaMetrics; sluice-load's accepted / elapsed_s
   each (its JSON report), the ratio (aim >= 0.8), and how long after the last ack the uplink was
   caught up (backlog 0).
5. Bytes on the wire a reading (once, not a run each): one sluiced, three outputs to one running
   VictoriaMetrics: raw influx:// (gzip), promrw:// to /api/v1/write (snappy), and influx:// with
   --uplink-mode aggregate:10s; --wire-readings readings (default the smaller of --readings and
   3,000,000: five simulated minutes), then waited for until every backlog is 0 (an aggregate's last
   buckets leave 10 s of wall time after their last reading). sluice_uplink_sent_bytes_total and
   sluice_uplink_encoded_bytes_total of each, over the readings accepted.

sluiced: --udp off --tcp 127.0.0.1:P --http 127.0.0.1:P --data-dir TMP --sync batch (--sync)
--max-sensors 16384 --ring-readings 256 --max-tcp-connections 112 --max-tcp-connections-per-ip 112
--max-http-writes 1 --http-max-body 2M --log-bytes-max 2G (the default is 1G; 18 M readings are about
230 MB of log, and nothing may be recycled before it is forwarded) --uplink-backoff-max 1s --quiet
(+ --sluiced-arg ...), ready when GET /healthz answers 200. VictoriaMetrics and vmagent: the classes of
tests/integration/engines.py (flags in docs/TESTING.md, "Upstream engines"), found on PATH. Ports are
free loopback ports; every process is stopped by its PID; the temporary directories are removed.
"""
import argparse
import gzip
import http.client
import http.server
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from engines import Engine, EngineError, VictoriaMetrics, VMAgent  # noqa: E402
from line_http import CLK_TCK, proc_cpu_s, proc_hwm_bytes  # noqa: E402  (this directory comes first)
from line_http import machine as cpu_model  # noqa: E402

STREAMS = 100
SENSORS = 10000          # 100 a stream, as the simulated day
BATCH = 100
INTERVAL_US = 1000000    # 1 Hz
SIZES = {"full": 18000000, "small": 300000}
WIRE_READINGS_MAX = 3000000
POLL_S = 0.05            # sluiced's /api/v1/uplinks
POLL_VM_S = 0.1          # VictoriaMetrics' and vmagent's /metrics (larger pages)
AGG = "aggregate:10s"
SLUICED_FLAGS = ["--max-sensors", "16384", "--ring-readings", "256", "--max-tcp-connections", "112",
                 "--max-tcp-connections-per-ip", "112", "--max-http-writes", "1", "--http-max-body", "2M",
                 "--log-bytes-max", "2G", "--uplink-backoff-max", "1s", "--quiet"]


class Broken(Exception):
    """A broken setup: the run cannot go on (a process that does not start, a sender that fails)."""


# --- /proc -----------------------------------------------------------------------


def threads_cpu_s(pid):
    """{tid: (name, CPU s)} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        rest = text.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(rest[11]) + int(rest[12])) / CLK_TCK)
    return out


def busiest_thread(before, after):
    """(name, CPU s) of the thread that used the most CPU between two threads_cpu_s samples."""
    best = ("-", 0.0)
    for tid, (name, cpu) in after.items():
        d = cpu - before.get(tid, (name, 0.0))[1]
        if d > best[1]:
            best = (name, d)
    return best


def machine():
    ncpu, model = cpu_model()
    with open("/proc/meminfo") as f:
        mem_kib = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:"))
    return "%d CPUs (nproc), %s, %.1f GiB memory" % (ncpu, model, mem_kib / 1048576)


def metric_lines(body):
    """{'name{labels}': value} of a Prometheus text page."""
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


# --- sluiced and sluice-load -----------------------------------------------------


class Gateway(Engine):
    """A sluiced on free loopback ports (TCP, HTTP) in tmp/sluiced (data/, log), started, waited for and
    stopped by PID as the engines are (tests/integration/engines.py)."""

    name = "sluiced"
    health = ("/healthz", 200)
    http_port_index = 1

    def __init__(self, args, tmp, extra=()):
        self.cmd = [args.sluiced, "--udp", "off", "--data-dir", os.path.join(tmp, self.name, "data"),
                    "--sync", args.sync] + SLUICED_FLAGS + list(extra) + args.sluiced_arg
        super().__init__(tmp, ports=2)

    @property
    def tcp_port(self):
        return self.ports[0]

    @property
    def http_port(self):
        return self.port

    def argv(self):
        return self.cmd + ["--tcp", "127.0.0.1:%d" % self.ports[0], "--http", "127.0.0.1:%d" % self.port]

    def uplinks(self):
        """{name: the output's object in GET /api/v1/uplinks}."""
        status, _, body = self.get("/api/v1/uplinks")
        if status != 200:
            raise Broken("sluiced /api/v1/uplinks answered %d" % status)
        return {u["name"]: u for u in json.loads(body)["uplinks"]}

    def metrics(self):
        status, _, body = self.get("/metrics", timeout_s=30)
        if status != 200:
            raise Broken("sluiced /metrics answered %d" % status)
        return metric_lines(body)


def feed(args, gw, readings):
    """sluice-load's readings into gw over acked TCP: its JSON report, with "cpu_s" (sluiced's CPU across it)."""
    cmd = [args.load, "--target", "tcp://127.0.0.1:%d" % gw.tcp_port, "--streams", str(STREAMS),
           "--sensors", str(SENSORS), "--batch", str(BATCH), "--interval-us", str(INTERVAL_US),
           "--start-time-us", str(args.t0_us), "--readings", str(readings), "--pattern", "drift",
           "--seed", "1", "--rate", "0", "--quiet"]
    cpu0 = proc_cpu_s(gw.pid)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600 + readings / 20000)
    cpu = proc_cpu_s(gw.pid) - cpu0
    try:
        report = json.loads(r.stdout)
    except ValueError:
        report = None
    if r.returncode != 0 or report is None or report.get("accepted") != readings:
        raise Broken("sluice-load (%s) exited %d, accepted %s of %d: %s\n%s\nsluiced:\n%s" % (
            " ".join(cmd), r.returncode, report and report.get("accepted"), readings,
            r.stdout[-1000:].decode(errors="replace"), r.stderr[-1000:].decode(errors="replace"), gw.log_tail(15)))
    report["cpu_s"] = cpu
    report["cmd"] = cmd
    return report


def wait_caught_up(gw, names, deadline_s, min_sent=0):
    """Poll /api/v1/uplinks until every output in names has backlog_bytes 0 and lag 0 (and, when min_sent,
    sent_readings >= min_sent). Returns {name: (t_first, sent_first, sent_bytes_first)} of the first poll
    that saw each send something (sent_bytes_first: its sluice_uplink_sent_bytes_total then), and
    (t_done, uplinks) of the last poll; t_done None when the deadline passed."""
    first = {}
    end = time.monotonic() + deadline_s
    while True:
        now = time.monotonic()
        ups = gw.uplinks()
        for n in names:
            if n not in first and ups[n]["sent_readings"] > 0:
                m = gw.metrics()
                first[n] = (now, ups[n]["sent_readings"], m.get('sluice_uplink_sent_bytes_total{output="%s"}' % n, 0))
        if all(ups[n]["backlog_bytes"] == 0 and ups[n]["lag_s"] == 0 and ups[n]["sent_readings"] >= min_sent
               for n in names):
            return first, (now, ups)
        if now > end:
            return first, (None, ups)
        time.sleep(POLL_S)


# --- the captured lines ----------------------------------------------------------


class Capture:
    """An HTTP/1.1 keep-alive server in a thread that keeps every POST's (path, headers, body) and
    answers 204: the uplink's requests as sent."""

    def __init__(self, keep=True):
        self.requests = []
        self.count = 0
        cap = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                cap.count += 1
                if keep:
                    cap.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response_only(204)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Bodies:
    """The captured requests: path (with its query), headers to send again, gzip bodies, readings each."""

    def __init__(self, requests):
        self.path = requests[0][0]
        h = requests[0][1]
        self.headers = {"Content-Type": h.get("content-type", "text/plain; charset=utf-8"),
                        "Content-Encoding": h.get("content-encoding", "gzip")}
        self.bodies = [r[2] for r in requests]
        self.readings = []
        self.raw_bytes = 0
        for path, hdr, body in requests:
            if path != self.path or hdr.get("content-encoding") != self.headers["Content-Encoding"]:
                raise Broken("captured requests differ: %s %s, then %s %s" % (
                    self.path, self.headers, path, hdr.get("content-encoding")))
            text = gzip.decompress(body) if self.headers["Content-Encoding"] == "gzip" else body
            self.readings.append(text.count(b"\n"))
            self.raw_bytes += len(text)
        self.sample = text.split(b"\n", 1)[0].decode(errors="replace")
        self.total = sum(self.readings)
        self.wire_bytes = sum(len(b) for b in self.bodies)


def capture_lines(args, tmp):
    cap = Capture()
    try:
        gw = Gateway(args, tmp, ["--uplink", "cap=influx://127.0.0.1:%d/write" % cap.port])
        try:
            feed(args, gw, args.readings)
            _, (t_done, ups) = wait_caught_up(gw, ["cap"], 120 + args.readings / 100000, args.readings)
            if t_done is None:
                raise Broken("the capture uplink did not catch up: %r" % ups["cap"])
        finally:
            gw.stop()
    finally:
        cap.stop()
    if not cap.requests:
        raise Broken("nothing captured")
    b = Bodies(cap.requests)
    if b.total != args.readings:
        raise Broken("captured %d lines, %d readings sent" % (b.total, args.readings))
    return b


# --- posting ---------------------------------------------------------------------


def post_all(port, bodies, connections):
    """POST the captured bodies to 127.0.0.1:port over `connections` keep-alive connections (body i on
    connection i % connections), each answer waited for. Returns rate figures; non-2xx are counted."""
    out = [None] * connections

    def run(c):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t = {"ok": 0, "readings": 0, "failed": 0, "first_error": None}
        cpu0 = time.thread_time()
        t["t0"] = time.monotonic()
        for i in range(c, len(bodies.bodies), connections):
            try:
                conn.request("POST", bodies.path, body=bodies.bodies[i], headers=bodies.headers)
                r = conn.getresponse()
                data = r.read()
                if 200 <= r.status < 300:
                    t["ok"] += 1
                    t["readings"] += bodies.readings[i]
                else:
                    t["failed"] += 1
                    t["first_error"] = t["first_error"] or "%d %s" % (r.status, data[:200])
            except (OSError, http.client.HTTPException) as e:
                t["failed"] += 1
                t["first_error"] = t["first_error"] or repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t["t1"] = time.monotonic()
        t["cpu_s"] = time.thread_time() - cpu0
        conn.close()
        out[c] = t

    th = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    elapsed = max(t["t1"] for t in out) - min(t["t0"] for t in out)
    readings = sum(t["readings"] for t in out)
    return {"elapsed": elapsed, "readings": readings, "readings_s": readings / elapsed,
            "failed": sum(t["failed"] for t in out), "sender_cpu_s": sum(t["cpu_s"] for t in out),
            "first_error": next((t["first_error"] for t in out if t["first_error"]), None)}


# --- VictoriaMetrics -------------------------------------------------------------


def engine_metric(engine, prefix):
    """The sum of an engine's /metrics values whose name (with labels) starts with prefix."""
    status, _, body = engine.get("/metrics")
    if status != 200:
        raise Broken("%s /metrics answered %d" % (engine.name, status))
    return sum(v for k, v in metric_lines(body).items() if k.startswith(prefix))


def vm_rows(vm, kind):
    return int(engine_metric(vm, 'vm_rows_inserted_total{type="%s"}' % kind))


def vm_check(args, vm, want, kind):
    """What VictoriaMetrics holds against `want` readings: (ok, text). Flushes, then waits (up to 30 s)
    for the points, as the uplink tests do: rows acknowledged are searchable a moment later."""
    span_s = args.readings // SENSORS * INTERVAL_US // 1000000
    at = args.t0_us // 1000000 + span_s + 1
    window = span_s + 5

    def instant(q):
        status, _, body = vm.get("/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": at}), timeout_s=120)
        if status != 200:
            return None
        res = json.loads(body)["data"]["result"]
        return int(float(res[0]["value"][1])) if res else 0
    deadline = time.monotonic() + 30
    while True:
        vm.flush()
        points = instant("sum(count_over_time(sluice_value[%ds]))" % window)
        if points == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    series = instant("count(count_over_time(sluice_value[%ds]))" % window)
    status, _, body = vm.get("/api/v1/series/count")
    index = json.loads(body)["data"][0] if status == 200 else None
    rows = vm_rows(vm, kind)
    ok = points == want and series == SENSORS and rows >= want
    return ok, "points %s/%d, series %s/%d (index %s), rows inserted (%s) %d" % (
        points, want, series, SENSORS, index, kind, rows)


# --- the parts -------------------------------------------------------------------


def sluiced_backlog(args, tmp, bodies=None, scheme="influx"):
    """sluiced takes the readings with VictoriaMetrics down, then drains its backlog into it: from
    sluice-load over native TCP (part 1), or, with bodies, the captured line protocol POSTed to its own
    /write over one keep-alive connection (part 3, beside vmagent's same intake)."""
    vm = VictoriaMetrics(tmp, start=False)
    url = ("influx://127.0.0.1:%d/write" if scheme == "influx" else "promrw://127.0.0.1:%d/api/v1/write") % vm.port
    gw = Gateway(args, tmp, ["--uplink", "vm=" + url])
    try:
        if bodies is None:
            rep = feed(args, gw, args.readings)
            intake = {"readings_s": rep["accepted"] / rep["elapsed_s"], "elapsed": rep["elapsed_s"],
                      "cpu_s": rep["cpu_s"], "failed": 0}
        else:
            cpu0 = proc_cpu_s(gw.pid)
            intake = post_all(gw.http_port, bodies, 1)
            intake["cpu_s"] = proc_cpu_s(gw.pid) - cpu0
            accepted = gw.metrics().get("sluice_readings_accepted_total", 0)
            if accepted != args.readings:
                intake["failed"] += 1
                intake["first_error"] = intake["first_error"] or "accepted %d of %d" % (accepted, args.readings)
        time.sleep(0.2)
        before = gw.uplinks()["vm"]
        if before["state"] != "retrying" or before["backlog_bytes"] == 0:
            print("    before VictoriaMetrics started the uplink said %r" % before, file=sys.stderr)
        t_start = time.monotonic()
        vm.start()
        t_up = time.monotonic()
        vm_cpu0, gw_cpu0, th0 = proc_cpu_s(vm.pid), proc_cpu_s(gw.pid), threads_cpu_s(gw.pid)
        first, (t_done, ups) = wait_caught_up(gw, ["vm"], 60 + args.readings / 50000, args.readings)
        t_end = time.monotonic()
        vm_cpu, gw_cpu, th1 = proc_cpu_s(vm.pid) - vm_cpu0, proc_cpu_s(gw.pid) - gw_cpu0, threads_cpu_s(gw.pid)
        hwm = proc_hwm_bytes(gw.pid)
        m = gw.metrics()
        u = ups["vm"]
        r = {"drained": t_done is not None, "intake": intake, "backlog_bytes": before["backlog_bytes"],
             "vm_start_s": t_up - t_start, "up_to_drained_s": t_end - t_up, "hwm": hwm,
             "sent": u["sent_readings"], "uplink": u}
        t_first, sent_first, sent_b0 = first.get("vm", (t_up, 0, 0))
        if t_done is not None and t_done > t_first:
            r["readings_s"] = (u["sent_readings"] - sent_first) / (t_done - t_first)
        else:
            r["readings_s"] = u["sent_readings"] / max(1e-9, t_end - t_up)
        mega = max(1, u["sent_readings"]) / 1e6
        r["cpu_per_m"] = gw_cpu / mega
        r["cores"] = gw_cpu / (t_end - t_up)
        name, cpu = busiest_thread(th0, th1)
        r["busiest"] = (name, cpu / (t_end - t_up))
        r["vm_cpu_per_m"] = vm_cpu / mega
        r["vm_cores"] = vm_cpu / (t_end - t_up)
        r["cpu_s"] = gw_cpu
        sent_b = m.get('sluice_uplink_sent_bytes_total{output="vm"}', 0)
        enc_b = m.get('sluice_uplink_encoded_bytes_total{output="vm"}', 0)
        # sluice_uplink_sent_bytes_total counts the bodies of the attempts refused during the outage too:
        # the wire bytes a reading are those from the first poll that saw readings delivered on.
        r["wire_b"] = (sent_b - sent_b0) / max(1, u["sent_readings"] - sent_first)
        r["enc_b"] = enc_b / max(1, u["sent_readings"])
        r["requests"] = {k.split('code="', 1)[1].rstrip('"}'): int(v) for k, v in m.items()
                         if k.startswith('sluice_uplink_requests_total{output="vm"')}
        r["log_b"] = m.get("sluice_log_bytes_written_total", 0) / args.readings
        r["check_ok"], r["check"] = vm_check(args, vm, args.readings,
                                             "influx" if scheme == "influx" else "promremotewrite")
        if not r["drained"]:
            r["check_ok"] = False
            r["check"] = "NOT DRAINED in time: %r; %s" % (u, r["check"])
        if intake["failed"]:
            r["check_ok"] = False
            r["check"] = "intake: %d failed, first %s; %s" % (intake["failed"], intake["first_error"], r["check"])
        return r
    finally:
        gw.stop()
        vm.stop()


def part2(args, tmp, bodies, connections):
    """VictoriaMetrics' own intake of the captured bodies."""
    vm = VictoriaMetrics(tmp)
    try:
        cpu0 = proc_cpu_s(vm.pid)
        r = post_all(vm.port, bodies, connections)
        r["vm_cpu_s"] = proc_cpu_s(vm.pid) - cpu0
        r["hwm"] = proc_hwm_bytes(vm.pid)
        r["vm_cpu_per_m"] = r["vm_cpu_s"] / max(1, r["readings"]) * 1e6
        r["vm_cores"] = r["vm_cpu_s"] / r["elapsed"]
        r["sender_cores"] = r["sender_cpu_s"] / r["elapsed"]
        r["check_ok"], r["check"] = vm_check(args, vm, args.readings, "influx")
        r["check_ok"] = r["check_ok"] and r["failed"] == 0
        return r
    finally:
        vm.stop()


def part3(args, tmp, bodies):
    """vmagent: intake with VictoriaMetrics down, then its drain."""
    vm = VictoriaMetrics(tmp, start=False)
    ag = VMAgent(tmp, vm.url + "/api/v1/write")
    try:
        ag_cpu0 = proc_cpu_s(ag.pid)
        r = {"intake": post_all(ag.port, bodies, 1)}
        r["intake"]["cpu_s"] = proc_cpu_s(ag.pid) - ag_cpu0
        r["intake_hwm"] = proc_hwm_bytes(ag.pid)
        ag_cpu1 = proc_cpu_s(ag.pid)
        t_start = time.monotonic()
        vm.start()
        t_up = time.monotonic()
        vm_cpu0 = proc_cpu_s(vm.pid)
        deadline = t_up + 60 + args.readings / 50000
        first = None
        pending = rows = None
        while True:
            now = time.monotonic()
            rows = vm_rows(vm, "promremotewrite")
            pending = engine_metric(ag, "vmagent_remotewrite_pending_data_bytes")
            if first is None and rows > 0:
                first = (now, rows)
            if rows >= args.readings and pending == 0:
                t_done = now
                break
            if now > deadline:
                t_done = None
                break
            time.sleep(POLL_VM_S)
        t_end = time.monotonic()
        ag_cpu2, vm_cpu = proc_cpu_s(ag.pid), proc_cpu_s(vm.pid) - vm_cpu0
        r["hwm"] = proc_hwm_bytes(ag.pid)
        r["vm_start_s"] = t_up - t_start
        r["up_to_drained_s"] = t_end - t_up
        r["drained"] = t_done is not None
        t_first, rows_first = first or (t_up, 0)
        if t_done is not None and t_done > t_first:
            r["readings_s"] = (rows - rows_first) / (t_done - t_first)
        else:
            r["readings_s"] = rows / max(1e-9, t_end - t_up)
        r["drain_cpu_s"] = ag_cpu2 - ag_cpu1
        r["total_cpu_s"] = ag_cpu2 - ag_cpu0
        r["vm_cpu_per_m"] = vm_cpu / (max(1, rows) / 1e6)
        r["vm_cores"] = vm_cpu / (t_end - t_up)
        r["drain_cores"] = r["drain_cpu_s"] / (t_end - t_up)
        r["check_ok"], r["check"] = vm_check(args, vm, args.readings, "promremotewrite")
        r["check_ok"] = r["check_ok"] and r["intake"]["failed"] == 0 and r["drained"]
        if not r["drained"]:
            r["check"] = "NOT DRAINED in time (rows %s, pending %s); %s" % (rows, pending, r["check"])
        return r
    finally:
        ag.stop()
        vm.stop()


def part4(args, tmp):
    """sluice-load into sluiced without an uplink, then with one caught up."""
    def figures(rep):
        return {"readings_s": rep["accepted"] / rep["elapsed_s"], "cpu_per_m": rep["cpu_s"] / (rep["accepted"] / 1e6),
                "p99_us": rep["latency_us"]["p99"]}
    out = {}
    gw = Gateway(args, os.path.join(tmp, "none"))
    try:
        out["none"] = figures(feed(args, gw, args.readings))
    finally:
        gw.stop()
    # The uplink's own cost: a sink in this process that reads each body and answers 204 (an upstream
    # on another machine), then VictoriaMetrics on this one, taking its share of the 2 cores.
    for key in ("sink", "vm"):
        up = Capture(keep=False) if key == "sink" else VictoriaMetrics(tmp)
        gw = Gateway(args, os.path.join(tmp, key), ["--uplink", "up=influx://127.0.0.1:%d/write" % up.port])
        try:
            rep = feed(args, gw, args.readings)
            t_acked = time.monotonic()
            _, (t_done, _) = wait_caught_up(gw, ["up"], 60 + args.readings / 50000, args.readings)
            out[key] = dict(figures(rep), caught_up_s=None if t_done is None else t_done - t_acked)
        finally:
            gw.stop()
            up.stop()
        out["ratio_" + key] = out[key]["readings_s"] / out["none"]["readings_s"]
    out["cmd"] = rep["cmd"]
    return out


def part5(args, tmp):
    """Bytes on the wire a reading: raw influx, promrw, aggregate."""
    vm = VictoriaMetrics(tmp)
    outs = [("raw", "influx://127.0.0.1:%d/write" % vm.port, "raw"),
            ("rw", "promrw://127.0.0.1:%d/api/v1/write" % vm.port, "raw"),
            ("agg", "influx://127.0.0.1:%d/write" % vm.port, AGG)]
    extra = []
    for name, url, mode in outs:
        extra += ["--uplink", "%s=%s" % (name, url)]
        if mode != "raw":
            extra += ["--uplink-mode", "%s=%s" % (name, mode)]
    gw = Gateway(args, tmp, extra)
    try:
        n = args.wire_readings
        feed(args, gw, n)
        t_acked = time.monotonic()
        # min_sent: an aggregate's open buckets are not in its backlog_bytes; wait until they are sent
        _, (t_done, ups) = wait_caught_up(gw, [o[0] for o in outs], 120 + n / 50000, n)
        m = gw.metrics()
        rows = []
        for name, url, mode in outs:
            u = ups[name]
            reqs = {k.split('code="', 1)[1].rstrip('"}'): int(v) for k, v in m.items()
                    if k.startswith('sluice_uplink_requests_total{output="%s"' % name)}
            scheme, rest = url.split("://", 1)
            rows.append({"name": name, "url": "%s://.../%s" % (scheme, rest.split("/", 1)[1]), "mode": mode,
                         "sent": u["sent_readings"], "requests": reqs,
                         "wire_b": m.get('sluice_uplink_sent_bytes_total{output="%s"}' % name, 0) / n,
                         "enc_b": m.get('sluice_uplink_encoded_bytes_total{output="%s"}' % name, 0) / n,
                         "dead": m.get('sluice_uplink_dead_readings_total{output="%s"}' % name, 0),
                         "caught_up": u["backlog_bytes"] == 0 and u["lag_s"] == 0})
        return {"readings": n, "rows": rows, "settled_s": None if t_done is None else t_done - t_acked}
    finally:
        gw.stop()
        vm.stop()


# --- output ----------------------------------------------------------------------


def rate(x):
    return "%.3f M" % (x / 1e6) if x >= 1e5 else "%.1f k" % (x / 1e3)


def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def checks(rows):
    return "%d/%d" % (sum(1 for r in rows if r["check_ok"]), len(rows))


def drain_row(label, step_in, rows, n, out="influx://"):
    """Three rows of the part 3 table for a sluiced_backlog() result list: intake, drain, both."""
    in_rate = statistics.median(r["intake"]["readings_s"] for r in rows)
    in_cpu = statistics.median(r["intake"]["cpu_s"] for r in rows) / n
    in_cores = statistics.median(r["intake"]["cpu_s"] / r["intake"]["elapsed"] for r in rows)
    print("| %s | intake: %s | %s | %.3f | %.2f | | | |" % (label, step_in, rate(in_rate), in_cpu, in_cores))
    print("| %s | drain: %s from its log (VM up to drained %.2f s) | %s | %.3f | %.2f | %.0f MiB | %.3f | %s |"
          % (label, out, med(rows, "up_to_drained_s"), rate(med(rows, "readings_s")), med(rows, "cpu_per_m"),
             med(rows, "cores"), med(rows, "hwm") / 1048576, med(rows, "vm_cpu_per_m"), checks(rows)))
    print("| %s | intake + drain | | **%.3f** | | | | |" % (label, in_cpu + med(rows, "cpu_per_m")))
    return in_cpu + med(rows, "cpu_per_m")


def report(args, res, bodies):
    p1, p4 = res.get((1, None), []), res.get((4, None), [])
    p1rw = res.get((1, "promrw"), [])
    p2 = {c: res.get((2, c), []) for c in (1, 2)}
    ag, sl_line = res.get((3, "vmagent"), []), res.get((3, "sluiced"), [])
    n = args.readings / 1e6
    if p1 or p1rw:
        print("\n### 1. sluiced drains a backlog of %s readings into VictoriaMetrics\n" % format(args.readings, ","))
        print("| output | drain readings/s | VM up to drained | sluiced CPU s / M readings | sluiced cores busy | "
              "busiest sluiced thread, cores | VM CPU s / M | VM cores busy | sluiced peak RSS (VmHWM) | wire bytes / "
              "reading | before compression | log bytes / reading | VM holds all (runs) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for rows, out in ((p1, "influx:// (gzip, pipelined)"), (p1rw, "promrw:// (snappy)")):
            if not rows:
                continue
            print("| %s | %s | %.2f s | %.3f | %.2f | %s %.2f | %.3f | %.2f | %.0f MiB | %.2f | %.2f | %.2f | %s |" % (
                out, rate(med(rows, "readings_s")), med(rows, "up_to_drained_s"), med(rows, "cpu_per_m"),
                med(rows, "cores"), rows[0]["busiest"][0], statistics.median(r["busiest"][1] for r in rows),
                med(rows, "vm_cpu_per_m"), med(rows, "vm_cores"), med(rows, "hwm") / 1048576, med(rows, "wire_b"),
                med(rows, "enc_b"), med(rows, "log_b"), checks(rows)))
    if p2[1] or p2[2]:
        print("\n### 2. VictoriaMetrics' own intake of the same bodies (POST %s, gzip)\n" % bodies.path)
        print("| connections | readings/s | VM CPU s / M readings | VM cores busy | VM peak RSS | sender cores "
              "busy | sluiced drain ÷ this | VM holds all (runs) |")
        print("|---|---|---|---|---|---|---|---|")
        for c in (1, 2):
            rows = [r for r in p2[c] if r["failed"] == 0]
            if not p2[c]:
                continue
            if not rows:
                print("| %d | invalid: failed requests | | | | | | %s |" % (c, checks(p2[c])))
                continue
            ratio = "%.2fx" % (med(p1, "readings_s") / med(rows, "readings_s")) if p1 else "-"
            print("| %d | %s | %.3f | %.2f | %.0f MiB | %.2f | %s | %s |" % (
                c, rate(med(rows, "readings_s")), med(rows, "vm_cpu_per_m"), med(rows, "vm_cores"),
                med(rows, "hwm") / 1048576, med(rows, "sender_cores"), ratio, checks(p2[c])))
    if ag or sl_line:
        print("\n### 3. vmagent beside sluiced: the same backlog, VictoriaMetrics down, then up\n")
        print("| forwarder | step | readings/s | CPU s / M readings | cores busy | peak RSS (VmHWM) | VM CPU s / M "
              "| VM holds all (runs) |")
        print("|---|---|---|---|---|---|---|---|")
        totals = {}
        if ag:
            ag_in_cpu = statistics.median(r["intake"]["cpu_s"] for r in ag) / n
            print("| vmagent | intake: POST /write (HTTP, gzip line protocol), 1 connection | %s | %.3f | %.2f | "
                  "%.0f MiB | | |" % (rate(statistics.median(r["intake"]["readings_s"] for r in ag)), ag_in_cpu,
                                      statistics.median(r["intake"]["cpu_s"] / r["intake"]["elapsed"] for r in ag),
                                      med(ag, "intake_hwm") / 1048576))
            print("| vmagent | drain: remote write from its disk queue (VM up to drained %.2f s) | %s | %.3f | %.2f | "
                  "%.0f MiB | %.3f | %s |" % (med(ag, "up_to_drained_s"), rate(med(ag, "readings_s")),
                                              med(ag, "drain_cpu_s") / n, med(ag, "drain_cores"),
                                              med(ag, "hwm") / 1048576, med(ag, "vm_cpu_per_m"), checks(ag)))
            totals["vmagent"] = med(ag, "total_cpu_s") / n
            print("| vmagent | intake + drain | | **%.3f** | | | | |" % totals["vmagent"])
        if sl_line:
            totals["line"] = drain_row("sluiced", "POST /write (HTTP, gzip line protocol), 1 connection", sl_line, n)
        if p1:
            totals["native"] = drain_row("sluiced (part 1)", "sluice-load, native TCP, 100 streams", p1, n)
        if p1rw:
            totals["native_rw"] = drain_row("sluiced (part 1, remote write)", "sluice-load, native TCP, 100 streams",
                                            p1rw, n, "promrw://")
        print()
        ceil = med([r for r in p2[1] if r["failed"] == 0], "readings_s")
        if p1 and ceil:
            print("- sluiced drain ÷ VictoriaMetrics' one-connection ceiling: **%.2fx** (aim >= 0.9x)" %
                  (med(p1, "readings_s") / ceil))
        if ag:
            for key, what in (("line", "line protocol in, as vmagent"), ("native", "native protocol in"),
                              ("native_rw", "native protocol in, remote write out as vmagent")):
                if key in totals:
                    rows = {"line": sl_line, "native": p1, "native_rw": p1rw}[key]
                    print("- sluiced readings per CPU-second ÷ vmagent's, %s: intake + drain **%.2fx** (aim >= 2x); "
                          "drain alone %.2fx; drain rate %.2fx" % (
                              what, totals["vmagent"] / totals[key],
                              med(ag, "drain_cpu_s") / n / med(rows, "cpu_per_m"),
                              med(rows, "readings_s") / (med(ag, "readings_s") or float("nan"))))
        print("\nvmagent turns line protocol into remote-write blocks at intake and keeps them so in its queue, so its "
              "drain is cheap and its intake is not; sluiced logs the readings and encodes at the drain. vmagent's "
              "retry backoff (it grows while VictoriaMetrics is down; this version has no flag for it) is in its "
              "\"VM up to drained\" and can be in its drain rate; sluiced runs with --uplink-backoff-max 1s.")
    if p4:
        print("\n### 4. Ingest with one uplink caught up against none (sluice-load, %s readings)\n" %
              format(args.readings, ","))
        print("| sluiced | ingest readings/s | sluiced CPU s / M readings | ack p99 | ÷ no uplink | uplink caught up "
              "after the last ack |")
        print("|---|---|---|---|---|---|")
        for key, label in (("none", "no uplink"),
                           ("sink", "one influx:// uplink to a sink (reads the body, answers 204)"),
                           ("vm", "one influx:// uplink to VictoriaMetrics on the same 2 vCPUs")):
            rows = [r[key] for r in p4]
            cu = med(rows, "caught_up_s")
            print("| %s | %s | %.3f | %.1f ms | %s | %s |" % (
                label, rate(med(rows, "readings_s")), med(rows, "cpu_per_m"), med(rows, "p99_us") / 1000,
                "1.00x" if key == "none" else "**%.2fx** (aim >= 0.8x)" % statistics.median(
                    r["ratio_" + key] for r in p4),
                "-" if key == "none" else ("%.2f s" % cu if cu is not None else "NOT in time")))
        print("\nThe ratio is the median of each run's own ratio. sluice-load is unpaced, so the uplink falls behind "
              "during the ingest and catches up after it (its last request leaves --uplink-flush-interval, 1 s, "
              "after its oldest reading). The sink row is the uplink's own cost on the ingest (an upstream "
              "elsewhere); the VictoriaMetrics row adds the upstream's own CPU on the same two cores.")
    if res.get((5, None)):
        p5 = res[(5, None)][0]
        print("\n### 5. Bytes on the wire a reading (%s readings, three outputs of one sluiced, one run)\n" %
              format(p5["readings"], ","))
        print("| output | mode | bytes on the wire / reading | before compression / reading | compression | "
              "readings sent | requests (code: count) | dead letters | caught up |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in p5["rows"]:
            print("| %s | %s | %.2f | %.2f | %.1fx | %s | %s | %d | %s |" % (
                r["url"], r["mode"], r["wire_b"], r["enc_b"], r["enc_b"] / r["wire_b"] if r["wire_b"] else 0,
                format(r["sent"], ","), " ".join("%s: %d" % kv for kv in sorted(r["requests"].items()) if kv[1]),
                r["dead"], "yes" if r["caught_up"] else "NO"))
        print("\nBytes are sluice_uplink_sent_bytes_total (bodies as sent) and sluice_uplink_encoded_bytes_total "
              "(before gzip or snappy) over the readings ingested; %s sends one line of count, mean, min, max a "
              "sensor and 10 s." % AGG)


def summary(part, key, r):
    """One stderr line of a result."""
    if part == 2:
        return "%d connection(s): %s readings/s, VM %.3f s/M %.2f cores, failed %d; %s%s" % (
            key, rate(r["readings_s"]), r["vm_cpu_per_m"], r["vm_cores"], r["failed"], r["check"],
            "; first error %s" % r["first_error"] if r["first_error"] else "")
    if part == 3 and key == "vmagent":
        return "vmagent: intake %s readings/s (%.2f CPU s), drain %s readings/s (%.2f CPU s), VM up to drained " \
               "%.2f s, hwm %.0f MiB; %s" % (rate(r["intake"]["readings_s"]), r["intake"]["cpu_s"],
                                             rate(r["readings_s"]), r["drain_cpu_s"], r["up_to_drained_s"],
                                             r["hwm"] / 1048576, r["check"])
    if part == 4:
        return "no uplink %s readings/s; uplink to a sink %s (%.2fx), caught up %s s after; to VM %s (%.2fx), " \
               "caught up %s s after" % (
                   rate(r["none"]["readings_s"]), rate(r["sink"]["readings_s"]), r["ratio_sink"],
                   r["sink"]["caught_up_s"] and "%.2f" % r["sink"]["caught_up_s"],
                   rate(r["vm"]["readings_s"]), r["ratio_vm"], r["vm"]["caught_up_s"] and "%.2f" % r["vm"]["caught_up_s"])
    return "%sintake %s readings/s (%.2f CPU s), drain %s readings/s, %.3f CPU s/M, VM %.3f s/M, wire %.2f B, " \
           "hwm %.0f MiB, VM up to drained %.2f s, busiest thread %s %.2f; %s" % (
               "sluiced, line protocol in: " if part == 3 else "", rate(r["intake"]["readings_s"]),
               r["intake"]["cpu_s"], rate(r["readings_s"]), r["cpu_per_m"], r["vm_cpu_per_m"], r["wire_b"],
               r["hwm"] / 1048576, r["up_to_drained_s"], r["busiest"][0], r["busiest"][1], r["check"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=tuple(SIZES), default="full",
                    help="full: 18 M readings (30 simulated minutes); small: 300 k, one run (under a minute)")
    ap.add_argument("--readings", type=int, help="readings instead of --size's (a multiple of 10,000)")
    ap.add_argument("--runs", type=int, help="runs of parts 1-4 (default 3; 1 with --size small)")
    ap.add_argument("--parts", default="1,2,3,4,5", help="which parts, comma-separated")
    ap.add_argument("--wire-readings", type=int, help="part 5's readings (default min(--readings, 3 M))")
    ap.add_argument("--sluiced", default=os.path.join(REPO, "build", "sluiced"))
    ap.add_argument("--load", default=os.path.join(REPO, "build", "sluice-load"))
    ap.add_argument("--sync", default="batch", choices=("always", "batch", "never"), help="sluiced --sync")
    ap.add_argument("--sluiced-arg", action="append", default=[], help="one more sluiced argument (repeat)")
    args = ap.parse_args()
    args.readings = args.readings or SIZES[args.size]
    if args.readings % SENSORS or args.readings <= 0:
        ap.error("--readings must be a positive multiple of %d (every sensor the same span)" % SENSORS)
    args.runs = args.runs or (1 if args.size == "small" else 3)
    args.wire_readings = args.wire_readings or min(args.readings, WIRE_READINGS_MAX)
    if args.wire_readings % SENSORS:
        ap.error("--wire-readings must be a multiple of %d" % SENSORS)
    try:
        parts = sorted({int(p) for p in args.parts.split(",") if p.strip()})
    except ValueError:
        ap.error("--parts: numbers 1 to 5")
    if not parts or any(p < 1 or p > 5 for p in parts):
        ap.error("--parts: numbers 1 to 5")
    args.sluiced, args.load = os.path.abspath(args.sluiced), os.path.abspath(args.load)  # run in other dirs
    for exe in (args.sluiced, args.load):
        if not os.access(exe, os.X_OK):
            raise SystemExit("%s is not an executable (--sluiced, --load)" % exe)
    for exe in ("victoria-metrics", "vmagent"):
        if not shutil.which(exe):
            raise SystemExit("%s is not on PATH (Debian's package)" % exe)
    span_s = args.readings // SENSORS * INTERVAL_US // 1000000
    args.t0_us = (int(time.time()) - max(7200, span_s + 1800)) * 1000000

    print("machine: %s" % machine())
    print("command: %s" % " ".join(shlex.quote(a) for a in [sys.argv[0]] + sys.argv[1:]))
    print("readings: %s (%d streams x %d sensors at 1 Hz, %d s of event time from %s UTC, drift), "
          "--runs %d, parts %s" % (format(args.readings, ","), STREAMS, SENSORS, span_s,
                                   time.strftime("%H:%M:%S", time.gmtime(args.t0_us // 1000000)),
                                   args.runs, ",".join(map(str, parts))))
    sys.stdout.flush()
    t_all = time.monotonic()
    root = tempfile.mkdtemp(prefix="sluice-upbench-")
    res = {}
    bodies = None
    # (part, key, what to run in a fresh temporary directory): one run of each, in this order
    jobs = [(1, None, lambda tmp: sluiced_backlog(args, tmp)),
            (1, "promrw", lambda tmp: sluiced_backlog(args, tmp, scheme="promrw")),
            (2, 1, lambda tmp: part2(args, tmp, bodies, 1)),
            (2, 2, lambda tmp: part2(args, tmp, bodies, 2)),
            (3, "vmagent", lambda tmp: part3(args, tmp, bodies)),
            (3, "sluiced", lambda tmp: sluiced_backlog(args, tmp, bodies)),
            (4, None, lambda tmp: part4(args, tmp))]
    jobs = [j for j in jobs if j[0] in parts]
    try:
        if 2 in parts or 3 in parts:
            t = time.monotonic()
            bodies = capture_lines(args, os.path.join(root, "capture"))
            print("captured: %d requests to %s, %s readings, %.1f MiB before gzip (%.1f B a line), %.1f MiB "
                  "gzip, in %.1f s; a line: %s" % (
                      len(bodies.bodies), bodies.path, format(bodies.total, ","), bodies.raw_bytes / 1048576,
                      bodies.raw_bytes / bodies.total, bodies.wire_bytes / 1048576, time.monotonic() - t,
                      bodies.sample))
            sys.stdout.flush()
            shutil.rmtree(os.path.join(root, "capture"), ignore_errors=True)
        for run in range(args.runs):  # the parts alternate run by run, so a busy spell falls on all
            for part, key, fn in jobs:
                os.sync()  # earlier runs' dirty pages written back now, not during this one
                tmp = tempfile.mkdtemp(dir=root)
                t = time.monotonic()
                try:
                    r = fn(tmp)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                res.setdefault((part, key), []).append(r)
                print("  run %d part %d (%.1f s): %s" % (run + 1, part, time.monotonic() - t, summary(part, key, r)),
                      file=sys.stderr)
                sys.stderr.flush()
        if 5 in parts:
            tmp = tempfile.mkdtemp(dir=root)
            t = time.monotonic()
            try:
                res[(5, None)] = [part5(args, tmp)]
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            print("  part 5 (%.1f s): settled %s s after the last ack" % (
                time.monotonic() - t, res[(5, None)][0]["settled_s"] and "%.2f" % res[(5, None)][0]["settled_s"]),
                file=sys.stderr)
    except (Broken, EngineError) as e:
        raise SystemExit("broken setup: %s" % e)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(args, res, bodies)
    print("\nMedians of %d run(s); %.0f s in all. CPU is utime+stime of the process named; cores busy = CPU s / s. "
          "sluiced: --sync %s, %s." % (args.runs, time.monotonic() - t_all, args.sync, " ".join(SLUICED_FLAGS)))


if __name__ == "__main__":
    main()
