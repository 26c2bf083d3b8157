"""Shared helpers for the integration tests: start the real sluiced on free
loopback ports in a temporary directory and talk to it the way users do
(native protocol over TCP and UDP, HTTP, signals).

Every wait is bounded; every daemon started is killed at exit.
"""
import atexit
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BUILD = os.environ.get("SLUICE_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SPEC = os.environ.get("SLUICE_SPEC_DIR", os.path.join(os.path.dirname(__file__), "../../docs/spec"))
SLUICED = os.path.join(BUILD, "sluiced")
LOAD = os.path.join(BUILD, "sluice-load")


def built_with_tsan():
    """Is sluiced built with ThreadSanitizer? Its shadow memory and histories grow the RSS, so
    RSS figures say nothing about sluiced's own memory there."""
    try:
        with open(SLUICED, "rb") as f:
            return b"__tsan_init" in f.read()
    except OSError:
        return False

OK, DUPLICATE, BAD_CRC, MALFORMED, OVERLOADED, UNAUTHORIZED = range(6)
STATUS_NAMES = ["OK", "DUPLICATE", "BAD_CRC", "MALFORMED", "OVERLOADED", "UNAUTHORIZED"]


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def batch(stream, seq, base_us, readings, flags=1, magic=b"SLB1", version=1, key_id=0, count=None):
    """Encode a batch frame; readings are (sensor_id, offset_us, value)."""
    n = len(readings) if count is None else count
    head = magic + struct.pack("<BBHIIQq", version, flags, n, stream, key_id, seq, base_us)
    body = b"".join(struct.pack("<IIf", s, o, v) for s, o, v in readings)
    frame = head + body
    return frame + struct.pack("<I", crc32c(frame))


def parse_ack(b):
    assert len(b) == 32, len(b)
    magic, version, status, _res, stream, accepted, seq, rejected, crc = struct.unpack("<4sBBHIIQII", b)
    assert magic == b"SLA1" and version == 1, b
    assert crc == crc32c(b[:28]), "ack CRC"
    return {"status": status, "stream": stream, "accepted": accepted, "seq": seq, "rejected": rejected}


def vector(name):
    with open(os.path.join(SPEC, "vectors", name), "rb") as f:
        return f.read()


_daemons = []
_tmp_dirs = []  # every daemon's temporary directory: data directories passed on live in them


@atexit.register
def _kill_all():
    for d in _daemons:
        d.kill()
    for t in _tmp_dirs:
        shutil.rmtree(t, ignore_errors=True)


class Daemon:
    """A sluiced on ephemeral loopback ports, in its own temporary data directory. Its event
    lines (stderr) are collected in .events; wait_event() waits for one."""

    def __init__(self, *args, sensors=1024, ring=256, extra_env=None, data_dir=None, prefix=None):
        self.tmp = tempfile.mkdtemp(prefix="sluice-it-")
        _tmp_dirs.append(self.tmp)
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        # sluiced refuses a flag given twice: a test's own flags replace these defaults, and the
        # defaults and SLUICE_DAEMON_FLAGS (below) are added only when the test did not give them.
        given = {a.split("=", 1)[0] for a in args if isinstance(a, str) and a.startswith("--")}
        defaults = [("--udp", "127.0.0.1:0"), ("--tcp", "127.0.0.1:0"), ("--http", "127.0.0.1:0"),
                    ("--data-dir", self.data_dir), ("--max-sensors", str(sensors)),
                    ("--ring-readings", str(ring)), ("--max-tcp-connections", "16")]
        # Every test client is 127.0.0.1: unless a test says otherwise, one address may hold
        # the whole table (the daemon's default is a quarter of it).
        table = args[args.index("--max-tcp-connections") + 1] if "--max-tcp-connections" in args else "16"
        defaults.append(("--max-tcp-connections-per-ip", table))
        cmd = [SLUICED]
        for flag, value in defaults:
            if flag not in given:
                cmd += [flag, value]
        cmd += list(args)
        # Extra flags for every daemon of a test run (CTest runs some tests again with
        # SLUICE_DAEMON_FLAGS="--apply-thread off", the single-threaded apply).
        extra = os.environ.get("SLUICE_DAEMON_FLAGS", "").split()
        for i, a in enumerate(extra):
            if a.startswith("--") and a.split("=", 1)[0] not in given:
                cmd += [a] + ([extra[i + 1]] if "=" not in a and i + 1 < len(extra)
                              and not extra[i + 1].startswith("--") else [])
        cmd = list(prefix or []) + cmd  # e.g. setpriv, to run without a capability
        env = dict(os.environ)
        env.update(extra_env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _daemons.append(self)
        # Event lines (stderr) are read as they come, so a chatty daemon never blocks on a full
        # pipe, and kept for wait_event().
        self.events = []
        self._events_thread = threading.Thread(target=self._read_events, daemon=True)
        self._events_thread.start()
        line = self._read_line(20)
        if "listening" not in line:
            if self.proc.poll() is not None:
                self._events_thread.join(timeout=5)
            raise RuntimeError("sluiced did not start: %r %s" % (line, "\n".join(self.events)))
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        self.udp_port = int(fields["udp"].rsplit(":", 1)[1])
        self.tcp_port = int(fields["tcp"].rsplit(":", 1)[1])
        self.http_port = int(fields["http"].rsplit(":", 1)[1])
        self.start_line = line

    def _read_line(self, timeout_s):
        deadline = time.time() + timeout_s
        buf = b""
        fd = self.proc.stdout.fileno()
        while time.time() < deadline and not buf.endswith(b"\n"):
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace")

    def _read_events(self):
        for raw in iter(self.proc.stderr.readline, b""):
            self.events.append(raw.decode(errors="replace").rstrip("\n"))

    def events_text(self):
        """Every event line so far as one text; after the daemon exited, all it wrote."""
        if self.proc.poll() is not None:
            self._events_thread.join(timeout=5)
        return "\n".join(self.events)

    def wait_event(self, words, since=0, timeout_s=10.0):
        """The first event line from index `since` on that contains `words`, waiting up to
        timeout_s for it; None if none came."""
        deadline = time.time() + timeout_s
        while True:
            for line in self.events[since:]:
                if words in line:
                    return line
            if time.time() >= deadline:
                return None
            time.sleep(0.05)

    def tcp(self, timeout_s=5.0):
        s = socket.create_connection(("127.0.0.1", self.tcp_port), timeout=timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def udp_send(self, frames):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for f in frames:
            s.sendto(f, ("127.0.0.1", self.udp_port))
        s.close()

    def get(self, path, timeout_s=10.0):
        """HTTP GET: (status, headers dict lower-cased, body bytes). When the daemon died under
        the request, the error carries its last event lines (a sanitizer's report among them)."""
        try:
            return http_request("http://127.0.0.1:%d%s" % (self.http_port, path), timeout_s=timeout_s)
        except OSError as e:
            try:
                self.proc.wait(timeout=5)  # a sanitizer writes its report, then exits
            except subprocess.TimeoutExpired:
                raise e
            raise RuntimeError("sluiced exited with status %s during GET %s:\n%s"
                               % (self.proc.returncode, path, self.events_text()[-8000:])) from e

    def json(self, path):
        status, _, body = self.get(path)
        return status, json.loads(body)

    def metrics(self):
        """Parse /metrics into {'name{labels}': value}."""
        status, _, body = self.get("/metrics")
        assert status == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def watch_health(self, interval_s):
        """Probe /healthz every interval_s on a thread until .stop(); .samples holds (status, body)."""
        return HealthWatcher(self, interval_s)

    def wait_metric(self, key, want, timeout_s=10.0):
        """Poll /metrics until metric `key` reaches `want` (ingestion is asynchronous to HTTP)."""
        deadline = time.time() + timeout_s
        got = None
        while time.time() < deadline:
            got = self.metrics().get(key)
            if got is not None and got >= want:
                return got
            time.sleep(0.05)
        return got

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout_s=10.0):
        """Signal and wait; returns (exit code, seconds taken)."""
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = None
        secs = time.time() - t0
        self._events_thread.join(timeout=5)  # every event line it wrote is in self.events
        return rc, secs

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def kill_keep_data(self):
        """SIGKILL if still running; keep the data directory (it may be another's)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self in _daemons:
            _daemons.remove(self)


def http_request(url, data=None, headers=None, method=None, timeout_s=10.0):
    """One HTTP request (GET, or POST when data is given): (status, headers dict lower-cased,
    body bytes); a 4xx or 5xx answer is returned like any other."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port that was free a moment ago (bound to port 0 and closed), for a program
    that must be told its port."""
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_is_free(port):
    """True when nothing listens on loopback TCP port `port` and it can be bound again
    (SO_REUSEADDR, as servers bind, so connections left in TIME_WAIT do not count)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(predicate, timeout_s=10.0, interval_s=0.02):
    """Poll `predicate` until it returns something true or the deadline passes; returns its last value."""
    deadline = time.time() + timeout_s
    value = predicate()
    while not value and time.time() < deadline:
        time.sleep(interval_s)
        value = predicate()
    return value


def recv_exact(sock, n, timeout_s=5.0):
    sock.settimeout(timeout_s)
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def is_closed(sock, timeout_s=5.0):
    """True when the peer closed the connection (EOF or reset) within the timeout."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class Checks:
    """Counts checks; fail() records and keeps going; finish() prints and exits."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAILED: %s" % what, file=sys.stderr)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, "%s: got %r, want %r" % (what, got, want))

    def finish(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed))
        sys.exit(1 if self.failed else 0)


class HealthWatcher:
    """/healthz sampled on a thread (see Daemon.watch_health)."""

    def __init__(self, daemon, interval_s):
        self.samples = []
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                status, _, body = daemon.get("/healthz")
                self.samples.append((status, body.decode(errors="replace")))
                time.sleep(interval_s)

        self._thread = threading.Thread(target=run)
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.samples
