"""sluice.Gateway: start a sluiced, wait until it serves, stop it (docs/spec/CLIENT.md).

How: sluiced is started with --udp/--tcp/--http 127.0.0.1:0 (the kernel picks
free loopback ports, so two gateways never race for one) unless the caller
names addresses, and a temporary data directory unless one is given. The
ports it bound are read from its documented stdout line (`sluiced VERSION
listening udp=... tcp=... http=...`), then /healthz is polled until it
answers 200, all under one deadline; a process that exits first raises
GatewayError with its stderr. Two threads drain its stdout and stderr into
bounded deques (the last STDERR_LINES lines), so a chatty gateway never
blocks on a full pipe and a long run never grows the Python process.
Leaving the with-block (or stop()) sends SIGTERM, waits at most 10 s, then
SIGKILL; a data directory the Gateway made is removed then. restart() stops
and starts again on the same ports and data directory.
"""
import atexit
import collections
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from ._errors import ArgumentError, GatewayError, HTTPError, Error
from ._query import Query

STDERR_LINES = 200    # event lines kept for error messages
STOP_TIMEOUT_S = 10.0  # SIGTERM, then this long, then SIGKILL
_running = set()  # gateways started and not yet stopped: killed at exit


@atexit.register
def _kill_leftovers():
    for g in list(_running):
        g._kill()
        g._cleanup_dir()


def find_binary(binary=None):
    """The sluiced to run: `binary`, else $SLUICED, else build/sluiced next to the package source
    (python/sluice -> build/sluiced in the source tree, build/python/sluice -> build/sluiced),
    else sluiced on PATH. Raises GatewayError saying where it looked."""
    if binary is not None:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise GatewayError("binary=%r is not an executable file" % binary)
        return binary
    env = os.environ.get("SLUICED")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise GatewayError("$SLUICED=%r is not an executable file" % env)
        return env
    package = os.path.dirname(os.path.abspath(__file__))
    tried = []
    for candidate in (os.path.join(package, "..", "..", "build", "sluiced"),
                      os.path.join(package, "..", "..", "sluiced")):
        candidate = os.path.normpath(candidate)
        tried.append(candidate)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sluiced")
    if found:
        return found
    raise GatewayError("no sluiced: not given as binary=, no $SLUICED, not at %s, not on PATH" % " or ".join(tried))


def flag_args(flags):
    """Keyword arguments as sluiced flags: max_sensors=10000 -> ['--max-sensors', '10000'];
    True -> a bare flag; False or None -> left out; a list or tuple -> comma-separated."""
    out = []
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


class Gateway:
    """A sluiced of this process's own: Gateway(max_sensors=10000, ring_readings=1024).

    .tcp .udp .http: "tcp://127.0.0.1:PORT", ...; .pid; .data_dir; .client(stream_id=...);
    .query(); .stop(); .restart(); a context manager. Keyword arguments are sluiced flags
    (README's table): tcp="127.0.0.1:7400" names an address, http="off" turns a listener off.
    """

    def __init__(self, binary=None, data_dir=None, *, start_timeout=60.0, **flags):
        if "quiet" in flags:
            raise ArgumentError("Gateway needs sluiced's stdout lines: no quiet=")
        for name in ("config", "print_memory_plan", "help", "version"):
            if flags.get(name):
                raise ArgumentError("Gateway runs a gateway: %s= is not for it" % name)
        self.binary = find_binary(binary)
        self._made_dir = None
        if data_dir is None:
            self._made_dir = tempfile.mkdtemp(prefix="sluice-gateway-")
            data_dir = os.path.join(self._made_dir, "data")
        self.data_dir = data_dir
        self._flags = dict(flags)
        for name in ("udp", "tcp", "http"):
            self._flags.setdefault(name, "127.0.0.1:0")
        self._start_timeout = start_timeout
        self.proc = None
        try:
            self._start()
        except BaseException:
            self._cleanup_dir()
            raise

    # -------------------------------------------------------------- starting

    def _start(self):
        cmd = [self.binary] + flag_args(self._flags) + ["--data-dir", self.data_dir]
        self.command = cmd
        self._stderr = collections.deque(maxlen=STDERR_LINES)
        self._stdout = collections.deque(maxlen=STDERR_LINES)
        self._listening = threading.Event()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        _running.add(self)
        self._readers = [threading.Thread(target=self._drain, args=(self.proc.stdout, self._stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._drain, args=(self.proc.stderr, self._stderr, False),
                                          daemon=True)]
        for t in self._readers:
            t.start()
        try:
            self._wait_ready(time.monotonic() + self._start_timeout)
        except BaseException:
            self._kill()
            raise

    def _drain(self, pipe, lines, is_stdout):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if is_stdout and " listening " in line and not self._listening.is_set():
                self.listening_line = line
                self._listening.set()
        pipe.close()

    def _early_exit(self, what):
        self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        _running.discard(self)
        return GatewayError("sluiced %s (exit code %s): %s" % (what, self.proc.returncode, " ".join(self.command)),
                            returncode=self.proc.returncode, stderr=self.stderr_text())

    def _wait_ready(self, deadline):
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                raise self._early_exit("exited before it listened")
            if time.monotonic() > deadline:
                raise GatewayError("sluiced did not listen within %s s" % self._start_timeout,
                                   stderr=self.stderr_text())
        fields = dict(tok.split("=", 1) for tok in self.listening_line.split() if "=" in tok)
        self.addresses = {name: fields.get(name, "off") for name in ("udp", "tcp", "http")}
        if self.addresses["http"] == "off":
            return
        q = Query(self.http, timeout=5.0)
        try:
            last = None
            while True:  # bounded by the deadline
                try:
                    q.healthz()
                    return
                except HTTPError as e:
                    last = e
                except Error as e:
                    last = e
                if self.proc.poll() is not None:
                    raise self._early_exit("exited before /healthz answered")
                if time.monotonic() > deadline:
                    raise GatewayError("sluiced's /healthz did not answer 200 within %s s: %s" %
                                       (self._start_timeout, last), stderr=self.stderr_text())
                time.sleep(0.02)
        finally:
            q.close()

    # -------------------------------------------------------------- what it is

    def _url(self, name):
        address = self.addresses[name]
        return None if address == "off" else "%s://%s" % (name, address)

    @property
    def tcp(self):
        """"tcp://127.0.0.1:PORT" (None when off)."""
        return self._url("tcp")

    @property
    def udp(self):
        return self._url("udp")

    @property
    def http(self):
        return self._url("http")

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.poll()

    def stderr_text(self):
        """The last STDERR_LINES event lines the gateway wrote."""
        return "\n".join(self._stderr)

    def stdout_lines(self):
        return list(self._stdout)

    def client(self, stream_id, transport="tcp", **options):
        """A sluice.Client on this gateway (transport "tcp" or "udp"); options as Client's."""
        from ._client import Client
        if transport not in ("tcp", "udp") or self._url(transport) is None:
            raise ArgumentError("client: transport %r is not one this gateway listens on" % (transport,))
        return Client(self._url(transport), stream_id, **options)

    def query(self):
        """A sluice.Query on this gateway's HTTP API."""
        if self.http is None:
            raise ArgumentError("query: this gateway's HTTP API is off")
        return Query(self.http)

    def metrics(self):
        with self.query() as q:
            return q.metrics()

    # -------------------------------------------------------------- stopping

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGTERM, wait at most `timeout` seconds, then SIGKILL. Removes the data directory the
        Gateway made. Returns the exit code (0: a clean stop; -9: it had to be killed)."""
        rc = self._terminate(timeout)
        self._cleanup_dir()
        return rc

    def restart(self, kill=False, timeout=STOP_TIMEOUT_S):
        """Stop (SIGTERM, or SIGKILL with kill=True) and start again on the same ports and data
        directory. Returns the old process's exit code."""
        rc = self._kill() if kill else self._terminate(timeout)
        for name, address in self.addresses.items():
            self._flags[name] = address
        self._start()
        return rc

    def _terminate(self, timeout):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._join()
        return self.proc.returncode

    def _kill(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join()
        return self.proc.returncode

    def _join(self):
        for t in self._readers:
            t.join(timeout=5)
        _running.discard(self)

    def _cleanup_dir(self):
        if self._made_dir is not None:
            shutil.rmtree(self._made_dir, ignore_errors=True)
            self._made_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        return "<sluice.Gateway pid=%s tcp=%s http=%s>" % (self.proc.pid if self.proc else None, self.tcp, self.http)
