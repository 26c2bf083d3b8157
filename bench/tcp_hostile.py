#!/usr/bin/env python3
"""Hostile TCP peers: a legitimate acked sender's connect-to-ack latency while
10x --max-tcp-connections hostile connections of one kind hold (or churn
through) the gateway's connection table. Prints a Markdown table of medians
over --runs and the ratio to a baseline with no hostile peers, measured in
the same invocation. A benchmark: it never fails on a figure.

    bench/tcp_hostile.py [--build build] [--runs 3] [--seconds 15]
                         [--connections 128] [--factor 10] [--addresses 10]
                         [--kinds baseline,slowloris,header,silent,no-read]

Each row starts a fresh sluiced (--max-tcp-connections N, the default
per-address cap of N/4, --sync batch, 1,000 sensors, rings of 64) on free
ports with its own data directory. Then FACTOR x N hostile connections, from
--addresses source addresses 127.0.0.2.. ("spread") or all from 127.0.0.1
("one address"), each:

  slowloris  trickles one byte of a valid frame every --trickle seconds
             (within the idle timeout; the frame timeout ends it)
  header     sends the 32-byte header of a 65,535-reading frame, then nothing
  silent     connects and sends nothing
  no-read    pipelines 1-reading acked batches and never reads its acks

Hostile peers reconnect as soon as the gateway closes them (or
--reconnect-delay later; 50 ms after a failed connect), as an attacker
would; all of them run in one epoll loop in this process. After --ramp seconds, a child process (its own interpreter, so
the hostile loop's GIL is not in its way) connects from 127.0.0.250 over and
over: connect, one acked batch, wait for its OK ack, close, --pause, for
--seconds. Latency is from just before connect() to the ack's last byte. A
failed attempt (refused, reset, closed, no ack within --timeout) is counted
and left out of the latencies. Per row: p50/p99/max connect-to-ack (median of
the runs' figures), the p99 of connect() alone (the handshake; a SYN dropped
at a full accept queue costs a 1 s retransmit here, while the wait in that
queue falls after connect() returns), failed attempts, the gateway's TCP
counters (deltas over the legit window), the host's listen-queue overflows,
sluiced's CPU (% of one core, /proc/PID/stat) and the bench's own (hostile
loop + legit child).
"""
import argparse
import errno
import json
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: let connect() pick the port for the whole 4-tuple
LEGIT_ADDR = "127.0.0.250"
CLK_TCK = os.sysconf("SC_CLK_TCK")
COUNTERS = [
    ("evicted idle", 'sluice_tcp_connections_evicted_total{reason="idle"}'),
    ("evicted incomplete", 'sluice_tcp_connections_evicted_total{reason="incomplete"}'),
    ("frame timeouts", "sluice_tcp_frame_timeouts_total"),
    ("refused per-ip", "sluice_tcp_connections_refused_per_ip_total"),
    ("refused", "sluice_tcp_connections_refused_total"),
    ("accept backoffs", "sluice_tcp_accept_backoffs_total"),
    ("accepted", "sluice_tcp_connections_accepted_total"),
]


# The native protocol's frames and CRC as the integration tests encode them; free_port as the other benches.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import batch, crc32c, parse_ack  # noqa: E402
from durability import Gateway as DurabilityGateway, free_port  # noqa: E402  (bench/durability.py: this directory comes first)


class FastBatches:
    """1-reading acked batches whose CRC comes from per-byte tables: CRC-32C is
    affine, so for frames of one length crc(x) = crc(t) ^ sum of the changed
    bytes' contributions. The hostile pipeliners need thousands a second."""

    def __init__(self, base_us):
        self.template = bytearray(batch(0, 0, base_us, [(1, 0, 1.0)])[:-4])
        base = crc32c(bytes(self.template))
        self.base = base
        self.tables = {}
        for off in list(range(8, 12)) + list(range(16, 24)):  # stream_id, batch_seq
            row = []
            for v in range(256):
                f = bytearray(self.template)
                f[off] = v
                row.append(crc32c(bytes(f)) ^ base)
            self.tables[off] = row

    def make(self, stream, seq):
        f = self.template[:]
        struct.pack_into("<I", f, 8, stream)
        struct.pack_into("<Q", f, 16, seq)
        c = self.base
        for off, row in self.tables.items():
            c ^= row[f[off]]
        return bytes(f) + struct.pack("<I", c)


# ---- the gateway ----

class Gateway:
    def __init__(self, build, connections, log_path):
        self.dir = tempfile.mkdtemp(prefix="sluice-hostile-")
        self.port, self.http = free_port(), free_port()
        cmd = [os.path.join(build, "sluiced"), "--udp", "off", "--tcp", "127.0.0.1:%d" % self.port,
               "--http", "127.0.0.1:%d" % self.http, "--data-dir", self.dir, "--max-sensors", "1000",
               "--ring-readings", "64", "--max-tcp-connections", str(connections), "--sync", "batch"]
        self.stderr = open(log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr)
        deadline = time.monotonic() + 60
        seen = b""
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline and b"listening" not in seen:
            if select.select([fd], [], [], 0.2)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                seen += chunk
            elif self.proc.poll() is not None:
                break
        if b"listening" not in seen:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("sluiced did not start (stderr in %s): %s" % (log_path, seen.decode(errors="replace")))
        # Keep stdout drained (event lines) so the daemon never blocks on a full pipe.
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        fd = self.proc.stdout.fileno()
        while os.read(fd, 65536):
            pass

    metrics = DurabilityGateway.metrics  # the same /metrics parse; it reads only self.http

    def cpu_seconds(self):
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain.join(timeout=5)
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- the hostile side: one epoll loop ----

S_CONNECTING, S_UP, S_WAIT = 1, 2, 3


class Peer:
    __slots__ = ("sock", "state", "src", "stream", "seq", "due", "sent", "pending")

    def __init__(self, src, stream):
        self.sock, self.state, self.src, self.stream = None, S_WAIT, src, stream
        self.seq, self.due, self.sent, self.pending = 0, 0.0, 0, b""


class Hostile:
    def __init__(self, kind, port, sources, count, trickle, base_us, reconnect):
        self.kind, self.port, self.trickle, self.reconnect = kind, port, trickle, reconnect
        self.ep = select.epoll()
        self.peers = [Peer(sources[i % len(sources)], 100000 + i) for i in range(count)]
        self.by_fd = {}
        self.frame = batch(1, 1, base_us, [(1, 0, 1.0)])  # the bytes a slowloris trickles
        self.header = b"SLB1" + struct.pack("<BBHIIQq", 1, 1, 65535, 1, 0, 1, base_us)
        self.fast = FastBatches(base_us) if kind == "no-read" else None
        self.connects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def _open(self, p, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        if self.kind == "no-read":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # unread acks pile up in us
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        s.bind((p.src, 0))
        rc = s.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            p.state, p.due = S_WAIT, now + 0.05
            return
        p.sock, p.state, p.sent, p.pending = s, S_CONNECTING, 0, b""
        self.by_fd[s.fileno()] = p
        self.ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLRDHUP)
        self.connects += 1

    def _close(self, p, now, delay=0.0):
        fd = p.sock.fileno()
        self.ep.unregister(fd)
        del self.by_fd[fd]
        p.sock.close()
        p.sock, p.state, p.due = None, S_WAIT, now + delay

    def _up(self, p, now):
        """Connected: start being hostile."""
        p.state = S_UP
        events = select.EPOLLRDHUP
        if self.kind == "header":
            p.sock.send(self.header)
        elif self.kind == "slowloris":
            p.due = now + self.trickle * ((p.stream % 97) / 97.0)  # spread the trickles
        elif self.kind == "no-read":
            events |= select.EPOLLOUT
        if self.kind != "no-read":
            events |= select.EPOLLIN  # we read (nothing comes but the close)
        self.ep.modify(p.sock.fileno(), events)

    def _pipeline(self, p):
        """Send 1-reading acked batches until the socket is full; never read the acks."""
        while True:
            if not p.pending:
                chunk = []
                for _ in range(64):
                    p.seq += 1
                    chunk.append(self.fast.make(p.stream, p.seq))
                p.pending = b"".join(chunk)
            try:
                n = p.sock.send(p.pending)
            except BlockingIOError:
                return
            p.pending = p.pending[n:]

    def run(self):
        now = time.monotonic()
        for p in self.peers:
            self._open(p, now)
        next_scan = now
        while not self.stop.is_set():
            for fd, ev in self.ep.poll(0.05):
                p = self.by_fd.get(fd)
                if p is None:
                    continue
                now = time.monotonic()
                try:
                    if ev & (select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP):
                        self._close(p, now, 0.05 if p.state == S_CONNECTING else self.reconnect)
                        continue
                    if p.state == S_CONNECTING:
                        if p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                            self._close(p, now, 0.05)
                            continue
                        self._up(p, now)
                        if self.kind == "no-read":
                            self._pipeline(p)
                    elif ev & select.EPOLLIN:
                        if not p.sock.recv(4096):
                            self._close(p, now, self.reconnect)
                    elif ev & select.EPOLLOUT:
                        self._pipeline(p)
                except OSError:
                    self._close(p, now, self.reconnect)
            now = time.monotonic()
            if now >= next_scan:  # timers: reconnects, trickles
                next_scan = now + 0.05
                for p in self.peers:
                    if p.due > now:
                        continue
                    if p.state == S_WAIT:
                        self._open(p, now)
                    elif p.state == S_UP and self.kind == "slowloris":
                        try:
                            p.sock.send(self.frame[p.sent % len(self.frame):][:1])
                            p.sent += 1
                            p.due = now + self.trickle
                        except OSError:
                            self._close(p, now)
                    else:
                        p.due = float("inf")
        for p in self.peers:
            if p.sock is not None:
                p.sock.close()
        self.ep.close()


# ---- the legitimate sender (a child process) ----

def legit_child(port, seconds, stream, timeout, pause, delay):
    samples, connects, fails = [], [], {"refused": 0, "reset": 0, "timeout": 0, "status": 0}
    base_us = int(time.time() * 1e6) - 1000000
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        seq += 1
        frame = batch(stream, seq, base_us + seq, [(2, 0, float(seq))])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((LEGIT_ADDR, 0))
        s.settimeout(timeout)
        t0 = time.perf_counter()
        try:
            s.connect(("127.0.0.1", port))
            tc = time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # a sender slow to its first byte
            s.sendall(frame)
            ack = b""
            while len(ack) < 32:
                got = s.recv(32 - len(ack))
                if not got:
                    raise ConnectionResetError("closed before the ack")
                ack += got
            t1 = time.perf_counter()
            if parse_ack(ack)["status"] == 0:
                samples.append((t1 - t0) * 1000.0)
                connects.append((tc - t0) * 1000.0)
            else:
                fails["status"] += 1
        except socket.timeout:
            fails["timeout"] += 1
        except ConnectionRefusedError:
            fails["refused"] += 1
        except OSError:
            fails["reset"] += 1
        finally:
            s.close()
        time.sleep(pause)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"samples": samples, "connects": connects, "fails": fails, "cpu": ru.ru_utime + ru.ru_stime}))


# ---- one row of one run ----

def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def one_run(args, kind, sources, run, log_path):
    g = Gateway(args.build, args.connections, log_path)
    hostile = None
    try:
        if kind != "baseline":
            hostile = Hostile(kind, g.port, sources, args.factor * args.connections, args.trickle,
                              int(time.time() * 1e6) - 1000000, args.reconnect_delay)
            hostile.thread.start()
            time.sleep(args.ramp)
        before = g.metrics()
        cpu0, t0 = g.cpu_seconds(), time.monotonic()
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        connects0 = hostile.connects if hostile else 0
        drops0 = listen_drops()
        child = subprocess.run([sys.executable, os.path.abspath(__file__), "--legit-child", str(g.port),
                                str(args.seconds), str(500000 + run), str(args.timeout), str(args.pause), str(args.legit_delay)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               timeout=args.seconds + 120)
        elapsed = time.monotonic() - t0
        cpu = (g.cpu_seconds() - cpu0) / elapsed * 100
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        connects = ((hostile.connects if hostile else 0) - connects0) / elapsed
        overflows = listen_drops()[0] - drops0[0]
        after = g.metrics()
        if hostile:
            hostile.stop.set()
            hostile.thread.join(timeout=30)
        res = json.loads(child.stdout)
        bench_cpu = ((self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime) + res["cpu"]) / elapsed * 100
        counters = {label: after.get(name, 0) - before.get(name, 0) for label, name in COUNTERS}
        s = res["samples"]
        return {"n": len(s), "p50": pct(s, 0.5), "p99": pct(s, 0.99), "c99": pct(res["connects"], 0.99), "max": max(s) if s else float("nan"),
                "fails": sum(res["fails"].values()), "fail_kinds": res["fails"], "counters": counters,
                "cpu": cpu, "bench_cpu": bench_cpu, "connects": connects, "overflows": overflows}
    finally:
        if hostile and hostile.thread.is_alive():
            hostile.stop.set()
            hostile.thread.join(timeout=30)
        g.stop()


def listen_drops():
    """The host's TcpExt ListenOverflows and ListenDrops (accept queue full, SYNs or ACKs dropped)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], map(int, values.split()[1:])))
            return d.get("ListenOverflows", 0), d.get("ListenDrops", 0)
    return 0, 0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--legit-child":
        port, seconds, stream, timeout, pause, delay = sys.argv[2:8]
        legit_child(int(port), float(seconds), int(stream), float(timeout), float(pause), float(delay))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15, help="legit sender's window per row (default 15)")
    ap.add_argument("--ramp", type=float, default=2, help="hostile peers alone before the legit sender (default 2)")
    ap.add_argument("--connections", type=int, default=128, help="sluiced --max-tcp-connections (default 128)")
    ap.add_argument("--factor", type=int, default=10, help="hostile connections per table slot (default 10)")
    ap.add_argument("--addresses", type=int, default=10, help="source addresses of a spread attack (default 10)")
    ap.add_argument("--trickle", type=float, default=1.0, help="slowloris: seconds between bytes (default 1)")
    ap.add_argument("--reconnect-delay", type=float, default=0.0,
                    help="hostile: seconds from being closed to reconnecting (default 0: at once)")
    ap.add_argument("--timeout", type=float, default=5.0, help="legit attempt's deadline, seconds (default 5)")
    ap.add_argument("--pause", type=float, default=0.02, help="legit: seconds between attempts (default 0.02)")
    ap.add_argument("--legit-delay", type=float, default=0.0,
                    help="legit: seconds from connect to sending its batch (default 0)")
    ap.add_argument("--kinds", default="baseline,slowloris,header,silent,no-read")
    ap.add_argument("--log", default=None, help="sluiced's stderr goes here (default: a temp file)")
    args = ap.parse_args()

    need = args.factor * args.connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
    log_path = args.log or os.path.join(tempfile.gettempdir(), "tcp_hostile-sluiced-%d.log" % os.getpid())
    spread = ["127.0.0.%d" % (2 + i) for i in range(args.addresses)]
    rows = []
    for kind in args.kinds.split(","):
        for variant, sources in ((("-", None),) if kind == "baseline" else
                                 (("spread", spread), ("one address", ["127.0.0.1"]))):
            rows.append((kind, variant, sources))

    print("sluiced --max-tcp-connections %d (per-address cap %d), --sync batch; %d hostile connections a row; "
          "reconnecting %.1f s after a close; "
          "legit sender from %s, %.0f s a row, medians of %d runs" % (
              args.connections, max(1, args.connections // 4), args.factor * args.connections,
              args.reconnect_delay, LEGIT_ADDR, args.seconds, args.runs))
    if args.legit_delay > 0:
        print("the legit sender waits %.3f s between connect and its batch" % args.legit_delay)
    print("load average at start: %s; sluiced stderr: %s" % (loadavg(), log_path))
    print()
    labels = [label for label, _ in COUNTERS]
    print("| hostile kind | from | acked attempts | p50 ms | p99 ms | max ms | p99 / baseline | connect() p99 ms | failed | "
          + " | ".join(labels) + " | listen overflows (host) | hostile connects/s | sluiced CPU % | bench CPU % |")
    print("|" + "---|" * (13 + len(labels)))
    sys.stdout.flush()
    base_p99 = None
    for kind, variant, sources in rows:
        runs = [one_run(args, kind, sources, r, log_path) for r in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in
               ("n", "p50", "p99", "c99", "max", "fails", "cpu", "bench_cpu", "connects", "overflows")}
        cnt = {label: statistics.median(r["counters"][label] for r in runs) for label in labels}
        if kind == "baseline":
            base_p99 = med["p99"]
        ratio = "%.1f" % (med["p99"] / base_p99) if base_p99 else "-"
        fk = {}
        for r in runs:
            for k, v in r["fail_kinds"].items():
                fk[k] = fk.get(k, 0) + v
        fails = "%d" % med["fails"]
        if any(fk.values()):
            fails += " (" + ", ".join("%s %d" % (k, v) for k, v in fk.items() if v) + " in all runs)"
        print("| %s | %s | %d | %.2f | %.2f | %.1f | %s | %.2f | %s | %s | %d | %.0f | %.0f | %.0f |" % (
            kind, variant, med["n"], med["p50"], med["p99"], med["max"], ratio, med["c99"], fails,
            " | ".join("%d" % cnt[label] for label in labels), med["overflows"], med["connects"], med["cpu"],
            med["bench_cpu"]))
        sys.stdout.flush()
    print()
    print("load average at end: %s" % loadavg())


if __name__ == "__main__":
    main()
