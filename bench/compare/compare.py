#!/usr/bin/python3
"""Side by side: the same UDP traffic into four receivers, one table.

Contenders (bench/compare/README.md says more):

  naive    (a) bench/compare/gateway_naive.py: the gateway of the incident
               report, one dict per reading appended to an unbounded list
  numpy    (b) bench/compare/gateway_numpy.py: the report's prescribed fix in
               Python, preallocated numpy rings, one vectorized decode a batch
  sluiced  (c) build/sluiced, UDP only, durable log on (--sync-modes: never by default)
  sink     (d) build/sluice-sink --udp: a bare recvmmsg loop that stores
               nothing: what the sender and loopback deliver at all

For each contender, a ladder of paced rates: at each rung build/sluice-load
sends N = max(--readings, rate x --min-step-seconds) readings over UDP to
127.0.0.1 at that rate, in batches of --batch readings over --sensors
sensors. After the sender finishes, the harness waits until the receiver's
socket queue is empty and its counters stop moving, then reads its counters,
its CPU time (/proc/PID/stat utime + stime, all threads) and its memory
(/proc/PID/status VmRSS, VmHWM).

Loss, precisely: a rung is lossy when the readings the receiver counted as
received and stored in that rung (sluiced: sluice_readings_accepted_total;
the Python gateways: their "readings" counter; the sink: its "readings") are
fewer than sluice-load's sent_readings. A rung also fails when the receiver
fell behind: when the sender finished, more than --keep-up (5%) of the
rung's readings were still unprocessed (counters read at that moment; for
the sink, its socket queue). Without that rule the socket buffer (the
kernel doubles SO_RCVBUF: 64 MiB, ~5 M readings) would let a receiver at
half the rate pass a 10 M-reading rung "loss-free". The highest loss-free
rate is the highest rung with neither at it and at every rung below (the
figure counting buffered rungs is in the JSON and under the table). A
contender's ladder stops at its first failing rung, except (a), which goes
on to twice that rate (or until the top) so its degradation shows.
The sink runs first: a rung at which sluice-load cannot reach the rate
(achieved < --sender-tolerance x target) ends the ladder there for everyone,
since then nothing measures the receiver.

Memory, as the incident report reasons about it:
  bytes of RSS per retained reading = (RSS after ingest - RSS of the same
  program without its readings store) / readings retained. The store-less
  RSS: (a) its idle RSS (empty list); (b) its RSS just before it allocated
  its rings (it reports it); (c) the idle RSS of a second sluiced started
  with the same flags but 1 sensor x 4 readings. Retained: (a) every reading
  received since it (re)started; (b) its own count; (c) sensors x
  min(readings per sensor, ring).
  MB for 1,000,000 readings = that figure x 10^6.
  Growth: (a) grows by its bytes per reading: hours until 16 GiB at 10,000
  readings/s = (16 GiB - idle RSS) / (bytes per reading x 10,000) / 3600.
  (b), (c): RSS after the 2nd rung vs after the last: "never" when it grew
  by less than 1 MiB (page-granular noise) over the rest of the ladder.

A shared machine: before each rung the harness waits until the machine is
quiet (--quiet-cores); a rung that fails while other work or hypervisor
steal took more than that, or whose receiver was killed from outside, is
run again (--retries); the discarded attempts stay in the JSON.

(a) is restarted (like the OOM killer would, only earlier) before a rung
that would take its RSS past --naive-rss-cap, and killed if it passes the
cap by 25% or the machine's MemAvailable falls under --mem-reserve.

Output: a Markdown report on stdout (summary table, per-rung tables, the
exact commands) and a JSON file with every figure (--json).

    bench/compare/compare.py --build build            # full: >= 10 M readings a rung
    bench/compare/compare.py --build build --quick    # 1 M readings a rung, short ladder

Network: 127.0.0.1 only. Every child is killed on exit. A benchmark: it
never fails on a figure (exit 0 unless something could not run).
"""
import argparse
import atexit
import datetime
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
MIB = 1 << 20
BOX_BYTES = 16 * GIB  # "a 16 GB box"
REFERENCE_RATE = 10000  # readings/s, the reference day
FLAT_BYTES = 1 << 20  # RSS growth under this after the 2nd rung counts as flat
DEFAULT_LADDER = "0.25,0.5,1,2,4,8,12,16,20,24,28,32,36,40,44,48,56,64,96,128"
QUICK_LADDER = "0.5,2,8,16,24,32,64"
ALL = ("sink", "naive", "numpy", "sluiced")
LABEL = {"sink": "(d) bare recvmmsg sink", "naive": "(a) naive Python (dict per reading)",
         "numpy": "(b) Python + numpy rings (the report's fix)", "sluiced": "(c) sluiced"}

CHILDREN = []  # every Popen, killed on exit
TEMP_DIRS = []  # sluiced's data directories, removed on exit


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
    for d in TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(kill_children)


PARTIAL = {}  # set by main: a callable that writes what was measured so far


def on_signal(signum, _frame):
    log("stopped by signal %d: killing the children, writing what was measured so far" % signum)
    kill_children()
    if PARTIAL.get("write"):
        try:
            PARTIAL["write"](partial=True)
        except Exception as e:
            log("could not write partial results: %s" % e)
    os._exit(128 + signum)


def log(msg):
    sys.stderr.write("[compare %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    CHILDREN.append(p)
    return p


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", port))  # also free for TCP (HTTP)
    except OSError:
        t.close()
        return free_port()
    t.close()
    return port


# ---- /proc readings ----------------------------------------------------------------

def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    except (FileNotFoundError, ProcessLookupError):
        return None


def system_cpu():
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def udp_socket_state(port):
    """(rx_queue bytes, drops) of the 127.0.0.1:port UDP socket, or (0, 0)."""
    want = ":%04X" % port
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1].endswith(want):
                    rx = int(parts[4].split(":")[1], 16)
                    return rx, int(parts[-1])
    except FileNotFoundError:
        pass
    return 0, 0


def udp_bound(port):
    want = ":%04X" % port
    with open("/proc/net/udp") as f:
        return any(line.split()[1].endswith(want) for line in list(f)[1:])


def read_line(p, timeout, what, want="listening"):
    """The first stdout line of a child that contains `want`, within timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                if want.encode() in line:
                    return line.decode()
        if p.poll() is not None:
            break
    err = p.stderr.read().decode() if p.stderr and p.poll() is not None else ""
    raise RuntimeError("%s did not start: %r %s" % (what, buf.decode(), err))


# ---- contenders -----------------------------------------------------------------

class Contender:
    fresh_per_step = False  # started anew for every rung (only the sink: its counters come at exit)

    def __init__(self, name, args):
        self.name = name
        self.args = args
        self.proc = None
        self.port = None
        self.commands = []
        self.idle_rss = None
        self.store_less_rss = None
        self.restarts = []

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def settle_idle(self):
        time.sleep(0.5)
        self.idle_rss = proc_status(self.pid)[0]


class PyGateway(Contender):
    def __init__(self, name, args):
        super().__init__(name, args)
        self.ctl_port = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    def command(self):
        script = os.path.join(HERE, "gateway_%s.py" % self.name)
        cmd = [self.args.python, script, "--udp", "127.0.0.1:%d" % self.port,
               "--control", "127.0.0.1:%d" % self.ctl_port, "--rcvbuf", str(self.args.rcvbuf)]
        if self.name == "numpy":
            cmd += ["--max-sensors", str(self.args.sensors), "--ring-readings", str(self.args.ring)]
        return cmd

    def start(self):
        self.port, self.ctl_port = free_port(), free_port()
        cmd = self.command()
        self.commands.append(" ".join(cmd))
        self.proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(self.proc, 120, self.name)
        if "listening" not in line:
            raise RuntimeError("%s: %s" % (self.name, line))
        self.settle_idle()
        st = self.ask("stats")
        self.store_less_rss = st.get("rss_before_store_bytes", self.idle_rss)

    def ask(self, request, timeout=120):
        self.sock.setblocking(False)
        while True:  # drop a late answer to an earlier request
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                break
        self.sock.settimeout(timeout)
        self.sock.sendto(request.encode(), ("127.0.0.1", self.ctl_port))
        return json.loads(self.sock.recv(65536))

    def counters(self):
        st = self.ask("stats")
        return {"received": st["readings"], "datagrams": st["datagrams"], "malformed": st["malformed"],
                "retained": st["retained"], "raw": st}

    def query(self):
        r = self.ask("avg %d %g" % (self.args.sensor_id_base, self.args.query_window_s), timeout=600)
        return r.get("query_s"), r


class Sluiced(Contender):
    def __init__(self, name, args, sync):
        super().__init__(name, args)
        self.sync = sync
        self.http_port = None
        self.data_dir = None
        self.plan = None

    def flags(self, sensors, ring):
        return ["--tcp", "off", "--sync", self.sync, "--max-sensors", str(sensors), "--ring-readings", str(ring),
                "--max-tcp-connections", "1", "--udp-rcvbuf", str(self.args.rcvbuf)] + self.args.gw_flag

    def _spawn(self, sensors, ring):
        port, http_port = free_port(), free_port()
        data_dir = tempfile.mkdtemp(prefix="sluice-compare-", dir=self.args.tmp)
        TEMP_DIRS.append(data_dir)
        cmd = [os.path.join(self.args.build, "sluiced"), "--udp", "127.0.0.1:%d" % port, "--http",
               "127.0.0.1:%d" % http_port, "--data-dir", data_dir] + self.flags(sensors, ring)
        p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(p, 60, "sluiced")
        if "listening" not in line:
            raise RuntimeError("sluiced: " + line)
        return p, port, http_port, data_dir, cmd

    def start(self):
        # The store-less RSS: the same flags, 1 sensor x 4 readings (the smallest ring), idle.
        p, _, _, d, cmd = self._spawn(1, 4)
        time.sleep(0.5)
        self.store_less_rss = proc_status(p.pid)[0]
        self.commands.append(" ".join(cmd) + "   # store-less baseline, idle RSS only")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
        shutil.rmtree(d, ignore_errors=True)
        plan_cmd = [os.path.join(self.args.build, "sluiced"), "--print-memory-plan", "--data-dir", "/nonexistent"] + \
            self.flags(self.args.sensors, self.args.ring)
        self.plan = subprocess.run(plan_cmd, capture_output=True, text=True, timeout=30).stdout
        self.proc, self.port, self.http_port, self.data_dir, cmd = self._spawn(self.args.sensors, self.args.ring)
        self.commands.append(" ".join(cmd))
        self.settle_idle()

    def stop(self):
        super().stop()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def get(self, path, timeout=30):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path), timeout=timeout) as r:
            return r.read().decode()

    def metrics(self):
        out = {}
        for line in self.get("/metrics").splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def counters(self):
        m = self.metrics()
        rejected = sum(v for k, v in m.items() if k.startswith("sluice_readings_rejected_total"))
        return {"received": int(m["sluice_readings_accepted_total"]), "rejected": int(rejected),
                "datagrams": int(m.get("sluice_udp_datagrams_total", 0)),
                "kernel_drops": int(m.get("sluice_udp_kernel_drops_total", 0)),
                "lost_batches": int(m.get("sluice_udp_lost_batches_total", 0)),
                "sensors": int(m.get("sluice_sensors", 0)),
                "heap_allocations_after_start": int(m.get("sluice_heap_allocations_after_start_total", -1)),
                "raw": {k: v for k, v in m.items() if k.startswith(("sluice_readings", "sluice_udp", "sluice_log_",
                                                                    "sluice_checkpoints", "sluice_resident",
                                                                    "sluice_memory_planned_bytes", "sluice_sensors"))}}

    def query(self):
        t0 = time.perf_counter()
        body = self.get("/api/v1/sensors/%d/stats?window_s=%d" % (self.args.sensor_id_base,
                                                                   max(1, int(self.args.query_window_s))))
        return time.perf_counter() - t0, json.loads(body)


class Sink(Contender):
    fresh_per_step = True

    def start(self):
        self.port = free_port()
        cmd = [os.path.join(self.args.build, "sluice-sink"), "--udp", "127.0.0.1:%d" % self.port, "--quiet",
               "--rcvbuf", str(self.args.rcvbuf)]
        if not self.commands:
            self.commands.append(" ".join(cmd).replace(str(self.port), "PORT") + "   # a fresh one every rung")
        self.proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not udp_bound(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("sluice-sink did not start")
            time.sleep(0.05)
        self.settle_idle()

    def finish(self):
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        self.proc = None
        res = json.loads(out.decode().strip().splitlines()[-1])
        return {"received": res["readings"], "datagrams": res["datagrams"], "malformed": res["malformed"],
                "raw": res}


# ---- one rung -------------------------------------------------------------------

class Timeline:
    """Event times: every rung continues where the last one ended, a day ago."""

    def __init__(self, interval_us):
        self.interval_us = interval_us
        self.next_us = int(time.time() * 1e6) - 24 * 3600 * 1000000

    def take(self, readings, sensors):
        start = self.next_us
        per_sensor = -(-readings // sensors)
        self.next_us += (per_sensor + 1) * self.interval_us
        return start


def load_command(args, port, rate, n, start_us, stream_id):
    return [os.path.join(args.build, "sluice-load"), "--target", "udp://127.0.0.1:%d" % port,
            "--sensors", str(args.sensors), "--sensor-id-base", str(args.sensor_id_base), "--batch", str(args.batch),
            "--rate", "%d" % rate, "--readings", str(n), "--interval-us", str(args.interval_us),
            "--start-time-us", str(start_us), "--stream-id-base", str(stream_id), "--quiet"]


def run_load(args, c, cmd, timeout):
    """Run sluice-load while watching the contender's memory; returns (report, guard note)."""
    p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    note = None
    deadline = time.monotonic() + timeout
    while p.poll() is None:
        if time.monotonic() > deadline:
            p.kill()
            note = "sluice-load timed out"
            break
        rss = proc_status(c.pid)[0] if c.alive() else 0
        if c.name == "naive" and rss > args.naive_rss_cap * 1.25:
            c.kill()
            note = "killed: RSS %.1f GiB passed 1.25 x the cap" % (rss / GIB)
        elif c.alive() and mem_available() < args.mem_reserve:
            c.kill()
            note = "killed: MemAvailable under the reserve"
        time.sleep(0.05)
    out, err = p.communicate(timeout=30)
    try:
        rep = json.loads(out.decode())
    except ValueError:
        raise RuntimeError("sluice-load printed no report: %s" % err.decode()[-500:])
    return rep, note


def drain(c, before, sent, args):
    """Wait until the socket queue is empty and the counters stop moving."""
    deadline = time.monotonic() + args.drain_timeout
    last, still = None, 0
    while time.monotonic() < deadline and c.alive():
        rx, _ = udp_socket_state(c.port)
        if isinstance(c, Sink):
            still = still + 1 if rx == 0 else 0
            if still >= 3:
                return True
        else:
            got = c.counters()["received"] - before
            if got >= sent:
                return True
            still = still + 1 if (rx == 0 and got == last) else 0
            if still >= 3:
                return True
            last = got
            if c.name == "naive" and proc_status(c.pid)[0] > args.naive_rss_cap * 1.25:
                c.kill()
                return False
        time.sleep(0.1)
    return False


def wait_quiet(args):
    """Before a rung: wait (at most --quiet-wait s) until the machine is quiet; return the seconds waited."""
    t0 = time.monotonic()
    while True:
        b0, s0 = system_cpu()
        time.sleep(1.0)
        b1, s1 = system_cpu()
        busy = (b1 - b0) + (s1 - s0)
        if busy <= args.quiet_cores or time.monotonic() - t0 > args.quiet_wait:
            waited = time.monotonic() - t0 - 1.0
            if waited > 1:
                log("waited %.0f s for a quiet machine (%.2f cores busy now)" % (waited, busy))
            return waited


def run_rung(args, c, rate, timeline, stream_id):
    n = max(args.readings, int(math.ceil(rate * args.min_step_seconds)))
    n = -(-n // args.batch) * args.batch
    if c.fresh_per_step:
        c.start()
    before = c.counters() if not c.fresh_per_step else {"received": 0}
    cpu0 = proc_cpu_s(c.pid)
    _, drops0 = udp_socket_state(c.port)
    start_us = timeline.take(n, args.sensors)
    cmd = load_command(args, c.port, rate, n, start_us, stream_id)
    t0 = time.monotonic()
    sys0, ru_children0, ru_self0 = system_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN), \
        resource.getrusage(resource.RUSAGE_SELF)
    rep, note = run_load(args, c, cmd, timeout=n / rate * 3 + 60)
    # Who else used the CPU while the sender ran: the machine's busy time minus the sender's (just
    # reaped), the receiver's and the harness's. Kernel threads working for them (softirq, log
    # writeback) count as other; hypervisor steal is reported apart.
    sys1, ru_children1, ru_self1 = system_cpu(), resource.getrusage(resource.RUSAGE_CHILDREN), \
        resource.getrusage(resource.RUSAGE_SELF)
    cpu_mid = proc_cpu_s(c.pid) if c.alive() else None
    sender_cpu = (ru_children1.ru_utime + ru_children1.ru_stime) - (ru_children0.ru_utime + ru_children0.ru_stime)
    self_cpu = (ru_self1.ru_utime + ru_self1.ru_stime) - (ru_self0.ru_utime + ru_self0.ru_stime)
    load_wall = time.monotonic() - t0
    # The moment the sender is done: how far behind is the receiver?
    t_end = time.monotonic()
    rx_end, _ = udp_socket_state(c.port)
    frame = 36 + 12 * args.batch
    if c.fresh_per_step or not c.alive():
        backlog = int(rx_end / frame * args.batch)  # the sink: from its socket queue (truesize: an overestimate)
    else:
        backlog = rep["sent_readings"] - (c.counters()["received"] - before["received"])
    drained = drain(c, before["received"], rep["sent_readings"], args) if c.alive() else False
    step = {"rate_target": rate, "readings": n, "command": " ".join(cmd), "sent": rep["sent_readings"],
            "sender_elapsed_s": rep["elapsed_s"], "sender_rate": rep["rate_readings_per_s"],
            "sender_short": rep["rate_readings_per_s"] < args.sender_tolerance * rate,
            "backlog_at_sender_end": backlog, "rx_queue_bytes_at_sender_end": rx_end,
            "backlog_fraction": backlog / max(rep["sent_readings"], 1),
            "kept_up": backlog <= args.keep_up * rep["sent_readings"],
            "lag_s": time.monotonic() - t_end, "drained": drained, "note": note,
            "sender_cpu_s": sender_cpu, "steal_s": sys1[1] - sys0[1],
            "other_cpu_cores": None if cpu_mid is None else
            max(0.0, (sys1[0] - sys0[0]) - sender_cpu - self_cpu - (cpu_mid - cpu0)) / load_wall}
    if not c.alive():
        step.update(received=None, lost=rep["sent_readings"], lossy=True, failed=True, dead=True)
        return step
    cpu1 = proc_cpu_s(c.pid)
    _, drops1 = udp_socket_state(c.port)
    rss, hwm = proc_status(c.pid)
    if c.fresh_per_step:
        after = c.finish()
    else:
        after = c.counters()
    received = after["received"] - before["received"]
    lossy = received < rep["sent_readings"]
    step.update(received=received, lost=rep["sent_readings"] - received, lossy=lossy,
                failed=lossy or not step["kept_up"],
                delivered=received / rep["sent_readings"], kernel_drops=drops1 - drops0,
                cpu_s=cpu1 - cpu0, cpu_s_per_m=(cpu1 - cpu0) / max(received, 1) * 1e6,
                rss=rss, hwm=hwm, wall_s=time.monotonic() - t0, counters_after=after.get("raw"))
    if "rejected" in after:
        step["rejected"] = after["rejected"] - before.get("rejected", 0)
    if not c.fresh_per_step:
        step["retained"] = after.get("retained")
        step["cumulative_received"] = after["received"]
        try:
            q_s, q = c.query()
            step.update(query_s=q_s, query=q)
        except Exception as e:  # a query failing is reported, not fatal
            step.update(query_s=None, query={"error": str(e)})
    return step


def run_contender(args, c, ladder, timeline, stream_base):
    log("%s: starting" % c.name)
    res = {"name": c.name, "label": LABEL[c.name.split(":")[0]], "steps": [], "restarts": []}
    if not c.fresh_per_step:
        c.start()
        res["idle_rss"] = c.idle_rss
        res["store_less_rss"] = c.store_less_rss
    first_lossy = None
    segment_start_idle = c.idle_rss
    bpr_est = 450.0
    attempt = 0
    queue = list(enumerate(ladder))
    while queue:
        i, rate = queue[0]
        if first_lossy is not None and (c.name != "naive" or rate > 2 * first_lossy):
            break
        n = max(args.readings, int(math.ceil(rate * args.min_step_seconds)))
        quiet_wait = wait_quiet(args)
        if c.name == "naive":
            rss_now = proc_status(c.pid)[0] if c.alive() else 0
            fresh = c.alive() and rss_now < (c.idle_rss or 0) + 64 * MIB
            if not c.alive() or (not fresh and rss_now + n * bpr_est > args.naive_rss_cap):
                why = ("dead" if not c.alive() else
                       "RSS %.2f GiB + %d readings x %.0f B would pass the %.1f GiB cap"
                       % (rss_now / GIB, n, bpr_est, args.naive_rss_cap / GIB))
                log("naive: restart before %.2f M/s: %s" % (rate / 1e6, why))
                c.stop()
                c.start()
                segment_start_idle = c.idle_rss
                res["restarts"].append({"before_rate": rate, "why": why, "idle_rss": c.idle_rss})
        try:
            step = run_rung(args, c, rate, timeline, stream_base + 100 * i + attempt)
        except (RuntimeError, ValueError, OSError, IndexError, KeyError, subprocess.SubprocessError) as e:
            step = {"rate_target": rate, "readings": n, "error": "%s: %s" % (type(e).__name__, e), "failed": True,
                    "lossy": True, "dead": True, "sender_short": False, "steal_s": 0.0, "sender_elapsed_s": 0.0,
                    "backlog_fraction": 0.0, "lag_s": 0.0, "sent": 0, "sender_rate": 0.0, "command": ""}
        rc = c.proc.returncode if c.proc is not None and c.proc.poll() is not None else None
        if (step.get("error") or (step.get("dead") and not step.get("note"))) and attempt < args.retries:
            # Killed from outside (a shared machine: someone's `pkill`), or the rung could not run: not
            # this contender's verdict. Start it again and rerun the rung.
            why = step.get("error") or "the receiver died (exit %s) without the harness killing it" % rc
            log("%s: %.2f M/s: %s: restarting it, attempt %d" % (c.name, rate / 1e6, why, attempt + 2))
            step.update(attempt=attempt + 1, discarded=why, disturbance_cores=0.0, delivered=None)
            res.setdefault("discarded_steps", []).append(step)
            attempt += 1
            c.stop()
            if not c.fresh_per_step:
                c.start()
                segment_start_idle = c.idle_rss
                res["restarts"].append({"before_rate": rate, "why": why, "idle_rss": c.idle_rss})
            continue
        step["attempt"] = attempt + 1
        step["waited_for_quiet_s"] = quiet_wait
        disturbance = (step.get("other_cpu_cores") or 0) + step["steal_s"] / max(step["sender_elapsed_s"], 1e-3)
        step["disturbance_cores"] = disturbance
        if step["failed"] and disturbance > args.quiet_cores and attempt < args.retries and not step.get("dead"):
            # It failed while something else had the CPU: not this contender's verdict. Again.
            log("%s: %.2f M/s failed while %.2f cores were busy elsewhere: attempt %d again" % (
                c.name, rate / 1e6, disturbance, attempt + 2))
            step["discarded"] = "failed while %.2f cores were busy elsewhere; rerun" % disturbance
            res.setdefault("discarded_steps", []).append(step)
            attempt += 1
            if c.name == "naive" and step.get("received"):
                bpr_est = max((step["rss"] - segment_start_idle) / step["cumulative_received"], 100.0)
            continue
        attempt = 0
        queue.pop(0)
        if c.name == "naive" and step.get("received"):
            step["idle_rss_segment"] = segment_start_idle
            grown = step["rss"] - segment_start_idle
            step["bytes_per_retained"] = grown / step["cumulative_received"]
            bpr_est = max(step["bytes_per_retained"], 100.0)
        res["steps"].append(step)
        log("%s: %6.2f M/s  sent %d (at %.2f M/s)  received %s  backlog %.1f%%  %s  cpu %.3f s/M  rss %.0f MiB" % (
            c.name, rate / 1e6, step["sent"], step["sender_rate"] / 1e6, step.get("received"),
            100 * step["backlog_fraction"],
            "LOSSY" if step["lossy"] else ("BEHIND" if not step["kept_up"] else "ok"),
            step.get("cpu_s_per_m") or 0, (step.get("rss") or 0) / MIB))
        if step["sender_short"]:
            log("%s: the sender reached only %.2f M/s of %.2f M/s: the ladder stops here" % (
                c.name, step["sender_rate"] / 1e6, rate / 1e6))
            res["stopped"] = "sender could not reach %.3g M/s" % (rate / 1e6)
            break
        if step["failed"] and first_lossy is None:
            first_lossy = rate
        if step.get("dead"):
            if c.name != "naive":
                break
    c.stop()
    res["commands"] = c.commands
    if isinstance(c, Sluiced):
        res["memory_plan"] = c.plan
    return res


# ---- figures --------------------------------------------------------------------

def summarize(args, res):
    steps = [s for s in res["steps"] if not s["sender_short"]]
    ok, ok_buffered = [], []
    for s in steps:
        if s["failed"]:
            break
        ok.append(s)
    for s in steps:
        if s["lossy"]:
            break
        ok_buffered.append(s)
    lossy = next((s for s in steps if s["failed"]), None)
    top = ok[-1] if ok else None
    sm = {"loss_free_rate": top["rate_target"] if top else 0,
          "loss_free_rate_counting_buffered": ok_buffered[-1]["rate_target"] if ok_buffered else 0,
          "loss_free_bounded_by_ladder": lossy is None,
          "first_lossy_rate": lossy["rate_target"] if lossy else None,
          "first_lossy_delivered": lossy.get("delivered") if lossy else None,
          "first_lossy_backlog": lossy.get("backlog_fraction") if lossy else None,
          "first_lossy_kind": (("lost readings" if lossy["lossy"] else "fell behind") if lossy else None),
          "cpu_s_per_m_at_top": top["cpu_s_per_m"] if top else None,
          "peak_rss": max((s.get("hwm") or 0) for s in res["steps"]) if res["steps"] else None}
    name = res["name"].split(":")[0]
    measured = [s for s in res["steps"] if s.get("rss")]
    last = measured[-1] if measured else None
    sm["rss_after_last"] = last["rss"] if last else None
    if name == "sink":
        sm["idle_rss"] = min((s["rss"] for s in measured), default=None)
        sm.update(bytes_per_retained=None, note="retains nothing")
    elif name == "naive":
        best = max((s for s in measured if s.get("bytes_per_retained")), key=lambda s: s["cumulative_received"],
                   default=None)
        sm["idle_rss"] = res.get("idle_rss")
        if best:
            bpr = best["bytes_per_retained"]
            sm.update(bytes_per_retained=bpr, bytes_per_retained_from=best["cumulative_received"],
                      growth_bytes_per_reading=bpr,
                      hours_to_box=(BOX_BYTES - res["idle_rss"]) / (bpr * REFERENCE_RATE) / 3600)
    else:
        sm["idle_rss"] = res.get("idle_rss")
        if last:
            retained = last.get("retained")
            if name == "sluiced":
                c = last["counters_after"] or {}
                sensors = int(c.get("sluice_sensors", args.sensors))
                per = last["cumulative_received"] / max(sensors, 1)
                retained = int(sensors * min(per, args.ring))
            sm["retained"] = retained
            sm["bytes_per_retained"] = (last["rss"] - res["store_less_rss"]) / retained if retained else None
            sm["rss_total_per_retained"] = last["rss"] / retained if retained else None
            if len(measured) >= 3:
                second = measured[1]
                grown = last["rss"] - second["rss"]
                between = last["cumulative_received"] - second["cumulative_received"]
                sm.update(growth_after_rung2_bytes=grown, growth_over_readings=between)
                # Flat: under FLAT_BYTES over the whole ladder (page-granular noise, e.g. the HTTP
                # thread touching a page); the raw figure is kept in the JSON either way.
                sm["flat"] = grown < FLAT_BYTES
                sm["hours_to_box"] = None if sm["flat"] else \
                    (BOX_BYTES - last["rss"]) / (grown / between * REFERENCE_RATE) / 3600
            else:
                sm.update(growth_after_rung2_bytes=None, hours_to_box=None)
    if sm.get("bytes_per_retained"):
        sm["mb_per_million"] = sm["bytes_per_retained"] * 1e6 / 1e6
    q = [s for s in res["steps"] if s.get("query_s") is not None]
    if q:
        sm["query_s_last"] = q[-1]["query_s"]
        sm["query_scanned_last"] = q[-1].get("cumulative_received")
    return sm


def fmt_rate(r):
    return "%g M/s" % (r / 1e6)


def fmt_mib(b):
    return "-" if b is None else "%s MiB" % format(round(b / MIB, 1), ",")


def fmt_hours(sm, name):
    if name == "sink":
        return "- (stores nothing)"
    h = sm.get("hours_to_box")
    if name == "naive":
        return "%.2f h" % h if h else "-"
    g = sm.get("growth_after_rung2_bytes")
    if g is None:
        return "- (too few rungs)"
    if h is None:
        return "never (RSS %+d KiB from rung 2 to the last)" % (g // 1024)
    return "%s h (RSS %+d KiB from rung 2 to the last)" % (format(round(h), ","), g // 1024)


def report(args, results, meta):
    out = []
    w = out.append
    w("# bench/compare: the same UDP traffic into four receivers\n")
    w("%s; %s; %d vCPU; %.1f GiB; Python %s, numpy %s; %s; git %s%s; binaries in %s built %s.\n" % (
        meta["date"], meta["cpu"], meta["cpus"], meta["mem_bytes"] / GIB, meta["python"], meta["numpy"],
        meta["kernel"], meta["git"], " (with uncommitted changes)" if meta["tree_dirty"] else "", args.build,
        meta["binaries_built"]))
    w("Traffic: sluice-load over UDP to 127.0.0.1, %d sensors (ids %d..%d), %d readings a datagram "
      "(%d bytes), paced; each rung sends max(%s, rate x %g s) readings. Receive buffer %d bytes for every "
      "contender. sluiced: --sync %s, %d sensors x %d readings; numpy: the same retention.\n" % (
          args.sensors, args.sensor_id_base, args.sensor_id_base + args.sensors - 1, args.batch,
          36 + 12 * args.batch, format(args.readings, ","), args.min_step_seconds, args.rcvbuf,
          ",".join(args.sync_modes), args.sensors, args.ring))
    w("| contender | highest loss-free rate | first failing rung: delivered, backlog | CPU s per M readings (at the loss-free rate) "
      "| peak RSS | bytes of RSS per retained reading | MB for 1,000,000 readings | hours to fill 16 GiB at "
      "10,000 readings/s |")
    w("|---|---|---|---|---|---|---|---|")
    for res in results:
        sm = res["summary"]
        name = res["name"].split(":")[0]
        lf = fmt_rate(sm["loss_free_rate"]) if sm["loss_free_rate"] else "none (lossy at %s)" % fmt_rate(
            res["steps"][0]["rate_target"])
        if sm["loss_free_bounded_by_ladder"] and sm["loss_free_rate"]:
            lf = ">= " + lf + " (" + (res.get("stopped") or "ladder top") + ")"
        fl = "%s (%s): %.4f, %.1f%%" % (fmt_rate(sm["first_lossy_rate"]), sm["first_lossy_kind"],
                                        sm["first_lossy_delivered"], 100 * sm["first_lossy_backlog"]) \
            if sm["first_lossy_rate"] and sm["first_lossy_delivered"] is not None else \
            (fmt_rate(sm["first_lossy_rate"]) + " (died)" if sm["first_lossy_rate"] else "-")
        bpr = sm.get("bytes_per_retained")
        w("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            res["label"] + ("" if ":" not in res["name"] else " --sync " + res["name"].split(":")[1]),
            lf, fl, "%.3f" % sm["cpu_s_per_m_at_top"] if sm["cpu_s_per_m_at_top"] is not None else "-",
            fmt_mib(sm["peak_rss"]), "%.1f" % bpr if bpr else "-", "%.1f MB" % sm["mb_per_million"]
            if sm.get("mb_per_million") else "-", fmt_hours(sm, name)))
    w("")
    by = {r["name"].split(":")[0]: r["summary"] for r in results}
    if {"sluiced", "numpy", "sink", "naive"} <= set(by):
        s, b, d, a = by["sluiced"], by["numpy"], by["sink"], by["naive"]
        w("Aims (issue item 5), from this run:\n")
        if b["loss_free_rate"]:
            w("- sluiced's loss-free rate / (b)'s: %.2f (aim >= 1.5)" % (s["loss_free_rate"] / b["loss_free_rate"]))
        if d["loss_free_rate"]:
            w("- sluiced's loss-free rate / the bare sink's: %.2f (aim >= 0.8)%s" % (
                s["loss_free_rate"] / d["loss_free_rate"],
                " (the sink's is a lower bound: it was loss-free up to where the sender stopped)"
                if d["loss_free_bounded_by_ladder"] else ""))
        if s.get("bytes_per_retained") and a.get("bytes_per_retained"):
            w("- sluiced's bytes per retained reading / (a)'s: 1/%.1f (aim: at most 1/30)" % (
                a["bytes_per_retained"] / s["bytes_per_retained"]))
        w("")
    for res in results:
        plan = res.get("memory_plan") or ""
        m_raw = re.search(r"raw ring: ([0-9.]+) bytes per retained reading", plan)
        m_coarse = re.search(r"coarse_tier\s+(\d+) bytes", plan)
        if m_raw:
            w("%s, from its memory plan (`--print-memory-plan`, in the JSON): raw ring %s B per retained "
              "reading%s; measured above: %.2f B.\n" % (
                  res["name"], m_raw.group(1),
                  " + coarse tier %.2f B" % (int(m_coarse.group(1)) / (args.sensors * args.ring)) if m_coarse else "",
                  res["summary"].get("bytes_per_retained") or 0))
    w("A rung fails when the receiver lost readings (received < sent) or fell behind: more than %g%% of "
      "the rung's readings still unprocessed when the sender finished (then only the socket buffer, which "
      "the kernel sizes at twice --rcvbuf, kept it loss-free). Loss-free counting such buffered rungs: %s.\n" % (
          100 * args.keep_up, "; ".join("%s %s" % (r["name"], fmt_rate(r["summary"]["loss_free_rate_counting_buffered"]))
                                        for r in results)))
    w("Before each rung the harness waits (up to %g s) until the machine is quiet (at most %g cores busy); "
      "a rung that fails while more than that was busy elsewhere is run again (at most %d times).\n" % (
          args.quiet_wait, args.quiet_cores, args.retries))
    w("Per rung (delivered = received / sent; backlog = readings not yet processed when the sender finished, "
      "as a share of the rung; lag = seconds from then until drained; CPU is the receiver's, all threads; RSS "
      "after the rung; query = one rolling average of sensor %d over %g s, after the rung; other CPU = cores busy "
      "with anything but the sender, the receiver and this harness while the sender ran, kernel threads "
      "included: a check that the machine was otherwise quiet):\n" % (
          args.sensor_id_base, args.query_window_s))
    for res in results:
        w("%s%s:\n" % (res["label"], "" if ":" not in res["name"] else " --sync " + res["name"].split(":")[1]))
        w("| rate | readings | sender achieved | received | delivered | backlog | lag | kernel drops | CPU s/M | "
          "RSS after | peak RSS | query | other CPU |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in res["steps"]:
            w("| %s | %s | %.2f M/s | %s | %s | %.1f%% | %.1f s | %s | %s | %s | %s | %s | %s |" % (
                fmt_rate(s["rate_target"]), format(s["sent"], ","), s["sender_rate"] / 1e6,
                format(s["received"], ",") if s.get("received") is not None else "died",
                "%.4f" % s["delivered"] if s.get("delivered") is not None else "-",
                100 * s["backlog_fraction"], s["lag_s"],
                format(s.get("kernel_drops", 0), ","),
                "%.3f" % s["cpu_s_per_m"] if s.get("cpu_s_per_m") is not None else "-",
                fmt_mib(s.get("rss")), fmt_mib(s.get("hwm")),
                "%.1f ms" % (s["query_s"] * 1e3) if s.get("query_s") is not None else "-",
                "%.2f" % s["other_cpu_cores"] if s.get("other_cpu_cores") is not None else "-"))
        for d in res.get("discarded_steps", []):
            w("\n(discarded: %s at %s, attempt %d: delivered %s, backlog %.1f%%, %.2f cores busy elsewhere; "
              "run again)" % (res["name"], fmt_rate(d["rate_target"]), d["attempt"],
                              "%.4f" % d["delivered"] if d.get("delivered") is not None else "-",
                              100 * d["backlog_fraction"], d["disturbance_cores"]))
        for r in res.get("restarts", []):
            w("\n(restarted before %s: %s)" % (fmt_rate(r["before_rate"]), r["why"]))
        if res.get("stopped"):
            w("\n(stopped: %s)" % res["stopped"])
        w("")
    w("Commands:\n")
    w("```sh")
    w(meta["argv"])
    for res in results:
        for cmd in res["commands"]:
            w(cmd)
        if res["steps"]:
            w(res["steps"][0]["command"] + "   # one per rung: --rate, --readings, --start-time-us, "
              "--stream-id-base change")
    w("```")
    return "\n".join(out)


def machine_meta(args):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        numpy_v = subprocess.run([args.python, "-c", "import numpy; print(numpy.__version__)"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
        python_v = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                                  capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception:
        numpy_v = python_v = "?"
    try:
        git = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except Exception:
        git = "?"
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_bytes": mem, "kernel": "Linux " + platform.release(), "python": python_v, "numpy": numpy_v,
            "git": git, "argv": " ".join([sys.argv[0]] + sys.argv[1:]),
            "binaries_built": datetime.datetime.fromtimestamp(
                os.path.getmtime(os.path.join(args.build, "sluiced"))).strftime("%Y-%m-%d %H:%M"),
            "tree_dirty": bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                                              capture_output=True, text=True, timeout=10).stdout.strip())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build"), help="dir with sluiced, sluice-load, "
                    "sluice-sink [%(default)s]")
    ap.add_argument("--python", default="/usr/bin/python3", help="interpreter for (a) and (b) [%(default)s]")
    ap.add_argument("--contenders", default="sink,naive,numpy,sluiced",
                    help="comma list, in run order; the sink first sets the sender's ceiling [%(default)s]")
    ap.add_argument("--ladder", default=None, help="rates in M readings/s, ascending [%s; quick: %s]" % (
        DEFAULT_LADDER, QUICK_LADDER))
    ap.add_argument("--readings", type=int, default=None,
                    help="readings a rung, at least (full: 10,000,000; quick: 1,000,000)")
    ap.add_argument("--min-step-seconds", type=float, default=None,
                    help="a rung lasts at least this long at its rate, so that the socket buffer cannot hide "
                    "a receiver slower than the rate (full: 5; quick: 1)")
    ap.add_argument("--quick", action="store_true", help="1 M readings a rung, 1 s minimum, a short ladder")
    ap.add_argument("--batch", type=int, default=1000, help="readings a datagram, every contender [%(default)s]")
    ap.add_argument("--sensors", type=int, default=10000, help="sensors in the traffic [%(default)s]")
    ap.add_argument("--sensor-id-base", type=int, default=1, help="first sensor id [%(default)s]")
    ap.add_argument("--ring", type=int, default=1024,
                    help="readings retained a sensor by (b) and (c) [%(default)s]")
    ap.add_argument("--interval-us", type=int, default=1000, help="event-time step of a sensor [%(default)s]")
    ap.add_argument("--rcvbuf", type=int, default=32 << 20, help="UDP receive buffer, every contender "
                    "[%(default)s]")
    ap.add_argument("--sync-modes", default="never",
                    help="sluiced --sync mode(s), comma list: each is a row [%(default)s]")
    ap.add_argument("--gw-flag", action="append", default=[],
                    help="extra flag for sluiced (repeatable, e.g. --gw-flag=--coarse-buckets=0)")
    ap.add_argument("--keep-up", type=float, default=0.05,
                    help="a rung also fails when more than this fraction of its readings were still "
                    "unprocessed when the sender finished [%(default)s]")
    ap.add_argument("--quiet-cores", type=float, default=0.3,
                    help="the machine counts as quiet when other work (and hypervisor steal) takes at most "
                    "this many cores; before each rung the harness waits for that [%(default)s]")
    ap.add_argument("--quiet-wait", type=float, default=300,
                    help="seconds to wait for a quiet machine before a rung, then go on [%(default)s]")
    ap.add_argument("--retries", type=int, default=2,
                    help="a rung that fails while the machine was not quiet is run again, this many times at "
                    "most; the discarded attempts are kept in the JSON [%(default)s]")
    ap.add_argument("--sender-tolerance", type=float, default=0.97,
                    help="a rung counts when sluice-load reached this fraction of its rate [%(default)s]")
    ap.add_argument("--naive-rss-cap", type=float, default=8.0, help="GiB: restart (a) before it would pass "
                    "this; kill it at 1.25x [%(default)s]")
    ap.add_argument("--mem-reserve", type=float, default=2.0, help="GiB of MemAvailable below which a "
                    "contender is killed [%(default)s]")
    ap.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for a receiver to drain "
                    "[%(default)s]")
    ap.add_argument("--query-window-s", type=float, default=60, help="window of the rolling-average query "
                    "[%(default)s]")
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "out", "compare.json"),
                    help="where the JSON goes [%(default)s]")
    ap.add_argument("--tmp", default=None, help="parent of sluiced's temporary data dirs [system temp]")
    args = ap.parse_args()

    args.readings = args.readings or (1000000 if args.quick else 10000000)
    args.min_step_seconds = args.min_step_seconds if args.min_step_seconds is not None else \
        (1.0 if args.quick else 5.0)
    ladder = [float(x) * 1e6 for x in (args.ladder or (QUICK_LADDER if args.quick else DEFAULT_LADDER)).split(",")]
    if ladder != sorted(ladder):
        ap.error("--ladder must ascend")
    args.naive_rss_cap *= GIB
    args.mem_reserve *= GIB
    args.sync_modes = args.sync_modes.split(",")
    args.gw_flag = [a for x in args.gw_flag for a in x.split("=", 1)]
    names = args.contenders.split(",")
    for n in names:
        if n not in ALL:
            ap.error("unknown contender %r (%s)" % (n, ", ".join(ALL)))
    for tool in ("sluiced", "sluice-load", "sluice-sink"):
        if not os.access(os.path.join(args.build, tool), os.X_OK):
            ap.error("no %s in %s (build first, or --build DIR)" % (tool, args.build))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    meta = machine_meta(args)
    timeline = Timeline(args.interval_us)
    results = []

    def write_out(partial):
        """The report on stdout and the JSON; partial: after a signal, the contenders finished so far."""
        text = report(args, results, meta)
        if partial:
            text = ("**PARTIAL: interrupted during %s; only the contenders above finished.**\n\n"
                    % PARTIAL.get("current")) + text
        print(text, flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "config": {k: v for k, v in vars(args).items()}, "partial": partial,
                       "ladder": ladder, "results": results, "report_markdown": text}, f, indent=1)
        log("JSON: %s" % args.json)

    PARTIAL["write"] = write_out
    stream_base = 1
    for name in names:
        variants = [(name + ":" + s if len(args.sync_modes) > 1 else name, s) for s in args.sync_modes] \
            if name == "sluiced" else [(name, None)]
        for label, sync in variants:
            if name == "sink":
                c = Sink(label, args)
            elif name == "sluiced":
                c = Sluiced(label, args, sync)
            else:
                c = PyGateway(label, args)
            PARTIAL["current"] = c.name
            res = run_contender(args, c, ladder, timeline, stream_base)
            stream_base += 1000
            res["summary"] = summarize(args, res)
            results.append(res)
            if name == "sink" and res.get("stopped"):
                cut = res["steps"][-1]["rate_target"]
                ladder = [r for r in ladder if r < cut]
                log("the ladder is cut below %.3g M/s for everyone: the sender could not reach it" % (cut / 1e6))
    write_out(partial=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
