"""The real upstream engines of the uplink tests, from Debian's packages, each started on free
loopback ports with its own data directory under a test's temporary directory, waited for with a
deadline and stopped by PID (SIGTERM, then SIGKILL after a deadline); any still running at exit
is killed.

    vm = VictoriaMetrics(tmp)            # started; .url, .port
    post_lines(vm.url + "/write?precision=u", lines)   # fakeup.post_lines, gzip like the uplink
    vm.flush(); vm.samples('{__name__="m_v"}')
    vm.stop(); vm.start()                # the same port and data directory
    InfluxDB1(tmp).create_db("d"); Prometheus(tmp).query_raw("m_v", {"k": "a"})
    VMAgent(tmp, vm.url + "/api/v1/write").influx_url

Each engine's log is ENGINE_DIR/log (ENGINE_DIR = tmp/<name>); a start that fails raises
EngineError with its last lines. The flags and the engines' quirks are in docs/TESTING.md
("Upstream engines").
"""
import atexit
import json
import os
import signal
import struct
import subprocess
import time
import urllib.parse

from fakeup import post_lines, post_remote_write
from harness import free_port, http_request, wait_until

START_TIMEOUT_S = float(os.environ.get("SLUICE_ENGINE_START_S", "60"))  # generous: a busy machine
STOP_TIMEOUT_S = 20.0

_running = set()


@atexit.register
def _kill_all():
    for e in list(_running):
        e.kill()


class EngineError(RuntimeError):
    pass


def f32(x):
    """x rounded to the nearest 32-bit float (what the store keeps)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


class Engine:
    """One engine process: argv() and ready() come from the subclass; ports are chosen once, so
    start() after stop() or kill() comes back on the same ports and data directory."""

    name = "engine"
    health = ("/health", 200)  # GET this answers that when it is up
    http_port_index = 0        # which of .ports is its HTTP API

    def __init__(self, tmp, ports=1, start=True):
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.log_path = os.path.join(self.dir, "log")
        self.proc = None
        self.start_s = None  # how long the last start took
        self._nports = ports
        self.ports = [free_port() for _ in range(ports)]
        if start:
            self.start(first=True)

    @property
    def port(self):
        return self.ports[self.http_port_index]

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def ready(self):
        path, status = self.health
        return self.get(path, timeout_s=2)[0] == status

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def _spawn(self):
        self.prepare()
        with open(self.log_path, "ab") as log:
            log.write(b"=== %s\n" % " ".join(self.argv()).encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir)
        _running.add(self)

    def start(self, timeout_s=None, first=False):
        """Start and wait until it answers; EngineError (with the log's tail) if it does not.
        At the first start a port taken meanwhile by another program is chosen again."""
        if self.running():
            raise EngineError("%s is running already (pid %d)" % (self.name, self.pid))
        timeout_s = START_TIMEOUT_S if timeout_s is None else timeout_s
        for attempt in range(3):
            t0 = time.time()
            log_at = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            self._spawn()
            up = wait_until(lambda: self.proc.poll() is not None or self._ready(), timeout_s, 0.05)
            if up and self.proc.poll() is None:
                self.start_s = time.time() - t0
                return self
            exited = self.proc.poll() is not None
            self.kill()
            with open(self.log_path, "rb") as f:
                f.seek(log_at)
                this_run = f.read().decode(errors="replace")
            if first and attempt < 2 and "address already in use" in this_run:
                self.ports = [free_port() for _ in range(self._nports)]
                continue
            why = ("exited with status %d before answering" % self.proc.returncode if exited
                   else "did not answer within %.0f s (killed)" % timeout_s)
            raise EngineError("%s %s: %s\nlast lines of %s:\n%s"
                              % (self.name, why, " ".join(self.argv()), self.log_path, self.log_tail()))

    def _ready(self):
        try:
            return self.ready()
        except OSError:
            return False

    def stop(self, timeout_s=STOP_TIMEOUT_S):
        """SIGTERM, wait up to timeout_s, then SIGKILL; returns (exit status, seconds taken)."""
        t0 = time.time()
        rc = None
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc:
            rc = self.proc.returncode
        _running.discard(self)
        return rc, time.time() - t0

    def kill(self):
        """SIGKILL and reap."""
        if self.running():
            self.proc.kill()
        if self.proc:
            self.proc.wait()
        _running.discard(self)

    def prepare(self):
        """Write config files before a start (subclasses)."""

    def get(self, path, timeout_s=10.0):
        return http_request(self.url + path, timeout_s=timeout_s)

    def _json(self, path, data=None):
        status, _, body = http_request(self.url + path, data, timeout_s=30)
        if status != 200:
            raise EngineError("%s %s: %d %s" % (self.name, path, status, body[:500]))
        return json.loads(body)


class VictoriaMetrics(Engine):
    """victoria-metrics (single node). -retentionPeriod=100y: samples older than now - retention
    are dropped (still 204); timestamps more than 2 days ahead of the clock are dropped too
    (hard-wired). -dedup.minScrapeInterval keeps one sample per series and interval.
    -influxTrimTimestamp stays at its default 1ms: line protocol times are kept to the ms."""

    name = "victoria-metrics"

    def __init__(self, tmp, dedup="1ms", extra=(), start=True):
        self.dedup = dedup
        self.extra = list(extra)
        super().__init__(tmp, start=start)

    def argv(self):
        args = ["victoria-metrics", "-httpListenAddr=127.0.0.1:%d" % self.port,
                "-storageDataPath=%s" % os.path.join(self.dir, "data"),
                "-retentionPeriod=100y", "-loggerLevel=WARN",
                "-search.disableCache", "-search.latencyOffset=0s"]
        if self.dedup:
            args.append("-dedup.minScrapeInterval=%s" % self.dedup)
        return args + self.extra

    def flush(self):
        """Make every sample written so far searchable (/internal/force_flush)."""
        status, _, body = self.get("/internal/force_flush")
        if status != 200:
            raise EngineError("force_flush: %d %s" % (status, body[:200]))

    def write_lines(self, lines, gzipped=True, precision="u"):
        """POST line protocol to /write directly: (status, body text)."""
        return post_lines(self.url + "/write?precision=" + precision, lines, gzipped)

    def remote_write(self, series):
        """POST [(labels, [(ts_ms, value)])] to /api/v1/write: (status, body text)."""
        return post_remote_write(self.url + "/api/v1/write", series)

    def export(self, match='{__name__=~".+"}', start_s=0, end_s=None):
        """/api/v1/export, every sample from start_s to end_s (default: 3 days ahead, past
        anything VictoriaMetrics takes): [{metric: {labels}, values: [...], timestamps: [...]}].
        One series may come in several lines."""
        end_s = time.time() + 3 * 86400 if end_s is None else end_s
        form = urllib.parse.urlencode({"match[]": match, "start": str(int(start_s)),
                                       "end": str(int(end_s))}).encode()
        status, _, body = http_request(self.url + "/api/v1/export", form, timeout_s=30)
        if status != 200:
            raise EngineError("export: %d %s" % (status, body[:500]))
        return [json.loads(ln) for ln in body.decode().splitlines() if ln.strip()]

    def samples(self, match='{__name__=~".+"}', as_f32=True):
        """{(metric name, frozenset of the other labels' (name, value))): sorted [(ts_ms, value)]},
        each value rounded to the nearest f32 (as_f32, the default): VictoriaMetrics keeps a
        block's values as decimal mantissas with one exponent, and its line protocol parser
        multiplies by powers of ten, so a float64 comes back a few ulps off (-3e-5 as
        -3.0000000000000004e-05) while a stored f32 comes back as itself, as long as one series'
        values do not span many orders of magnitude (6e-27 beside 7e23 comes back 0)."""
        out = {}
        for row in self.export(match):
            labels = dict(row["metric"])
            key = (labels.pop("__name__", ""), frozenset(labels.items()))
            values = [f32(v) for v in row["values"]] if as_f32 else row["values"]
            out.setdefault(key, []).extend(zip(row["timestamps"], values))
        return {k: sorted(v) for k, v in out.items()}

    def metric(self, name):
        """The sum of one of its own /metrics lines' values whose name (with labels) starts so."""
        status, _, body = self.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name):
                total += float(line.rsplit(" ", 1)[1])
        return total


class InfluxDB1(Engine):
    """influxd 1.x with a config of its own: the HTTP API and the RPC bind-address (8088 by
    default) on free loopback ports, meta/data/wal under the engine's directory, no reporting,
    no _internal monitor store, quiet logs."""

    name = "influxdb"
    health = ("/ping", 204)

    def __init__(self, tmp, start=True):
        super().__init__(tmp, ports=2, start=start)

    @property
    def config_path(self):
        return os.path.join(self.dir, "influxdb.conf")

    def prepare(self):
        d = self.dir
        with open(self.config_path, "w") as f:
            f.write('reporting-enabled = false\n'
                    'bind-address = "127.0.0.1:%d"\n'
                    '[meta]\n  dir = "%s"\n  logging-enabled = false\n'
                    '[data]\n  dir = "%s"\n  wal-dir = "%s"\n  query-log-enabled = false\n'
                    '[monitor]\n  store-enabled = false\n'
                    '[subscriber]\n  enabled = false\n'
                    '[http]\n  bind-address = "127.0.0.1:%d"\n  log-enabled = false\n'
                    '  pprof-enabled = false\n'
                    '[ifql]\n  enabled = false\n'
                    '[continuous_queries]\n  log-enabled = false\n'
                    '[logging]\n  level = "warn"\n  suppress-logo = true\n'
                    % (self.ports[1], os.path.join(d, "meta"), os.path.join(d, "data"),
                       os.path.join(d, "wal"), self.port))

    def argv(self):
        return ["influxd", "run", "-config", self.config_path]

    def _q(self, q, db=None, epoch=None, post=False):
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        enc = urllib.parse.urlencode(params)
        if post:
            status, _, body = http_request(self.url + "/query", enc.encode(), timeout_s=30)
        else:
            status, _, body = http_request(self.url + "/query?" + enc, timeout_s=30)
        doc = json.loads(body or b"{}")
        errors = [r["error"] for r in doc.get("results", []) if "error" in r]
        if status != 200 or "error" in doc or errors:
            raise EngineError("influxdb %r: %d %s" % (q, status, body[:500]))
        return doc

    def create_db(self, name):
        self._q('CREATE DATABASE "%s"' % name, post=True)

    def query(self, db, q, epoch="u"):
        """Rows of an InfluxQL query: a list of dicts {column: value}, each with its series' tags
        (GROUP BY) and "_measurement"; time as an integer in `epoch` units."""
        rows = []
        for result in self._q(q, db, epoch)["results"]:
            for s in result.get("series", []):
                for values in s["values"]:
                    row = dict(zip(s["columns"], values))
                    row.update(s.get("tags") or {})
                    row["_measurement"] = s.get("name")
                    rows.append(row)
        return rows

    def write_lines(self, db, lines, gzipped=True, precision="u"):
        """POST line protocol to /write?db=...: (status, body text)."""
        return post_lines(self.url + "/write?db=%s&precision=%s" % (urllib.parse.quote(db), precision),
                          lines, gzipped)


class Prometheus(Engine):
    """prometheus with remote write received, no scrape targets. ooo_window (e.g. "10y") puts
    storage.tsdb.out_of_order_time_window in its config file; without it the head takes only
    samples in order per series and not older than about an hour before its newest sample."""

    name = "prometheus"
    health = ("/-/ready", 200)

    def __init__(self, tmp, ooo_window=None, extra=(), start=True):
        self.ooo_window = ooo_window
        self.extra = list(extra)
        super().__init__(tmp, start=start)

    @property
    def config_path(self):
        return os.path.join(self.dir, "prometheus.yml")

    def prepare(self):
        with open(self.config_path, "w") as f:
            f.write("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
            if self.ooo_window:
                f.write("storage:\n  tsdb:\n    out_of_order_time_window: %s\n" % self.ooo_window)

    def argv(self):
        return ["prometheus", "--config.file=%s" % self.config_path,
                "--web.listen-address=127.0.0.1:%d" % self.port,
                "--storage.tsdb.path=%s" % os.path.join(self.dir, "data"),
                "--storage.tsdb.retention.time=100y",
                "--web.enable-remote-write-receiver", "--log.level=warn"] + self.extra

    def remote_write(self, series):
        """POST [(labels, [(ts_ms, value)])] to /api/v1/write: (status, body text)."""
        return post_remote_write(self.url + "/api/v1/write", series)

    def query_raw(self, metric, labels=None, window="10y", at_s=None):
        """The raw samples [(ts_ms, value)] of one series (metric{labels}[window] evaluated at
        at_s, default 3 days ahead so that near-future samples show)."""
        sel = ",".join('%s="%s"' % (k, v.replace("\\", "\\\\").replace('"', '\\"'))
                       for k, v in sorted((labels or {}).items()))
        q = "%s{%s}[%s]" % (metric, sel, window)
        at_s = time.time() + 3 * 86400 if at_s is None else at_s
        doc = self._json("/api/v1/query", urllib.parse.urlencode({"query": q, "time": "%.3f" % at_s}).encode())
        out = []
        for s in doc["data"]["result"]:
            if s["metric"] == dict(labels or {}, __name__=metric):
                out += [(int(round(float(t) * 1000)), float(v)) for t, v in s["values"]]
        return sorted(out)


class VMAgent(Engine):
    """vmagent forwarding to a remote write URL (the benchmark's Telegraf-to-VM path). Line
    protocol over HTTP goes to .influx_url + "/write" (its -httpListenAddr); -influxListenAddr
    is its raw TCP/UDP line protocol listener (.influx_tcp_port)."""

    name = "vmagent"
    http_port_index = 1

    def __init__(self, tmp, remote_write_url, extra=(), start=True):
        self.remote_write_url = remote_write_url
        self.extra = list(extra)
        super().__init__(tmp, ports=2, start=start)

    @property
    def influx_url(self):
        return self.url

    @property
    def influx_tcp_port(self):
        return self.ports[0]

    def argv(self):
        return ["vmagent", "-influxListenAddr=127.0.0.1:%d" % self.ports[0],
                "-httpListenAddr=127.0.0.1:%d" % self.port,
                "-remoteWrite.url=%s" % self.remote_write_url,
                "-remoteWrite.tmpDataPath=%s" % os.path.join(self.dir, "queue"),
                "-loggerLevel=WARN"] + self.extra


class Mosquitto(Engine):
    """mosquitto 2.0 (Debian's), MQTT on one free loopback port, persistence in the engine's
    directory (so queued QoS 1 messages and persistent sessions outlive a restart; the broker
    writes them at a clean stop, and every `autosave_s` seconds). Only `max_queued` messages are
    kept for an offline client (mosquitto's default is 1,000; 0 here: none dropped) and
    `max_inflight` QoS 1 messages are in flight to one client at a time (default 20).
    pub() and sub() run Debian's mosquitto_pub and mosquitto_sub against it."""

    name = "mosquitto"

    def __init__(self, tmp, max_inflight=20, max_queued=0, autosave_s=1, persistence=True, extra=(),
                 start=True):
        self.persistence = persistence
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.autosave_s = autosave_s
        self.extra = list(extra)
        super().__init__(tmp, start=start)

    @property
    def url(self):
        return "mqtt://127.0.0.1:%d" % self.port

    def prepare(self):
        lines = ["listener %d 127.0.0.1" % self.port,
                 "allow_anonymous true",
                 "persistence %s" % ("true" if self.persistence else "false"),
                 "persistence_location %s/" % self.dir,
                 "autosave_interval %d" % self.autosave_s,
                 "max_inflight_messages %d" % self.max_inflight,
                 "max_queued_messages %d" % self.max_queued,
                 # as root mosquitto drops to the mosquitto user, which cannot write this directory
                 "user %s" % ("root" if os.geteuid() == 0 else os.environ.get("USER", "mosquitto")),
                 "log_dest stdout",
                 "log_type error", "log_type warning", "log_type notice"] + self.extra
        with open(os.path.join(self.dir, "mosquitto.conf"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def argv(self):
        return ["mosquitto", "-c", os.path.join(self.dir, "mosquitto.conf")]

    def ready(self):
        import socket
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            return True

    def pub(self, topic, payload, qos=1, retain=False, client_id=None, timeout_s=30):
        """mosquitto_pub one message (bytes or str; binary safe, through a file); raises on
        failure."""
        data = payload.encode() if isinstance(payload, str) else payload
        path = os.path.join(self.dir, "payload.%d" % os.getpid())
        with open(path, "wb") as f:
            f.write(data)
        argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
                "-q", str(qos), "-f", path]
        if retain:
            argv.append("-r")
        if client_id:
            argv += ["-i", client_id]
        r = subprocess.run(argv, capture_output=True, timeout=timeout_s)
        if r.returncode != 0:
            raise EngineError("mosquitto_pub %s: %d %s" % (topic, r.returncode, r.stderr[-500:]))

    def pub_lines(self, topic, payloads, qos=1, timeout_s=60):
        """Publish many text messages, one per line of stdin (mosquitto_pub -l), in order."""
        argv = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
                "-q", str(qos), "-l"]
        r = subprocess.run(argv, input="".join(p + "\n" for p in payloads).encode(),
                           capture_output=True, timeout=timeout_s)
        if r.returncode != 0:
            raise EngineError("mosquitto_pub -l %s: %d %s" % (topic, r.returncode, r.stderr[-500:]))

    def sub_start(self, topic, count, timeout_s=60, client_id=None):
        """mosquitto_sub for `count` messages (QoS 1), each printed as hex on its own line:
        returns the process (pass it to sub_wait)."""
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t", topic,
                "-q", "1", "-C", str(count), "-W", str(int(timeout_s)), "-F", "%x"]
        if client_id:
            argv += ["-i", client_id, "-c"]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @staticmethod
    def sub_wait(proc, timeout_s=90):
        """The payloads (bytes) a sub_start process received, in order."""
        out, _ = proc.communicate(timeout=timeout_s)
        return [bytes.fromhex(ln) for ln in out.decode().split()]
