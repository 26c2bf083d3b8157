"""sluice.Query: the gateway's HTTP API (docs/spec/HTTP_API.md) from Python.

One persistent http.client connection (stdlib only), reopened once when the
gateway closed it while idle. readings() asks for format=bin and reads the
body once into a bytearray of exactly its size (12 bytes a reading: the n
times as i64 LE, then the n values as f32 LE); the two numpy arrays it
returns are views over that bytearray (numpy.frombuffer: no copy, the arrays
do not own their memory). Without numpy they are memoryviews cast to 'q'
and 'f'. The API caps a response at 1,000,000 readings (12 MB).
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

from ._errors import ArgumentError, Error, HTTPError

try:
    import numpy as _np
except ImportError:
    _np = None

READINGS_MAX = 1000000  # the API's limit on one readings response
SENSORS_PAGE = 10000    # the API's limit on one page of /api/v1/sensors
BUSY_RETRIES = 8        # a 503 with Retry-After ("sensor busy, retry") is asked again this often,
BUSY_PAUSE_S = 0.005    # after 5 ms, doubling up to BUSY_PAUSE_MAX_S (about 1.3 s in all)
BUSY_PAUSE_MAX_S = 0.5
_LITTLE = sys.byteorder == "little"


def parse_metrics(text):
    """Prometheus text exposition to {'name': value, 'name{label="v",...}': value}; the labels
    are kept as the gateway printed them."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        i = 0
        while i < len(line) and line[i] not in "{ \t":  # the metric name
            i += 1
        if i < len(line) and line[i] == "{":
            end = _labels_end(line, i)
            key, rest = line[:end + 1], line[end + 1:].split()
        else:
            key, rest = line[:i], line[i:].split()
        if not rest:
            raise Error("metrics: no value in line %r" % line)
        out[key] = float(rest[0])  # float() reads NaN, +Inf and -Inf as Prometheus writes them
    return out


def _labels_end(line, start):
    """Index of the '}' that closes the label set opening at `start` (quotes and escapes kept)."""
    quoted = escaped = False
    for i in range(start + 1, len(line)):
        ch = line[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "}" and not quoted:
            return i
    raise Error("metrics: unterminated labels in line %r" % line)


def _integer(value, what, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ArgumentError("%s must be an integer %d .. %d, not %r" % (what, lo, hi, value))
    return value


class Query:
    """Read a gateway back: Query("http://127.0.0.1:7401"). Thread-safe (one request at a time);
    close() or a with-block closes the connection."""

    def __init__(self, base_url, timeout=30.0):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ArgumentError("Query: base_url must be http://HOST:PORT, not %r" % base_url)
        self.base_url = base_url.rstrip("/")
        self._host, self._port = u.hostname, u.port or 80
        self._prefix = u.path.rstrip("/")
        self._timeout = timeout
        self._conn = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------- requests

    def _request(self, path, read_body):
        """GET path; read_body(response) reads the body. A 503 with Retry-After (the gateway's
        "busy, retry": a sensor snapshot raced its writer) is asked again up to BUSY_RETRIES
        times, except for /healthz, whose 503 is the answer."""
        pause = BUSY_PAUSE_S
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return self._request_once(path, read_body)
            except HTTPError as e:
                if e.status != 503 or not e.retry_after or path == "/healthz" or attempt == BUSY_RETRIES:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, BUSY_PAUSE_MAX_S)
        raise AssertionError("not reached")

    def _request_once(self, path, read_body):
        """One GET, reopening the connection once when the gateway had closed it (GET is
        idempotent)."""
        url = self._prefix + path
        with self._lock:
            for attempt in (0, 1):
                fresh = self._conn is None
                if fresh:
                    self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
                try:
                    self._conn.request("GET", url)
                    resp = self._conn.getresponse()
                    if resp.status != 200:
                        body = resp.read()
                        err = HTTPError(resp.status, _error_text(body), url)
                        err.retry_after = resp.getheader("Retry-After")
                        raise err
                    return read_body(resp)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                        http.client.CannotSendRequest, http.client.ResponseNotReady) as e:
                    self._drop()
                    if fresh or attempt == 1:
                        raise Error("HTTP GET %s%s: %s" % (self.base_url, path, e)) from e
                except (OSError, http.client.HTTPException) as e:
                    self._drop()
                    raise Error("HTTP GET %s%s: %s" % (self.base_url, path, e)) from e
                except HTTPError:
                    raise
                except BaseException:
                    self._drop()  # a body half read leaves the connection unusable
                    raise
        raise AssertionError("not reached")

    def _drop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _json(self, path):
        data = self._request(path, lambda r: r.read())
        try:
            return json.loads(data)
        except ValueError as e:
            raise Error("HTTP GET %s: not JSON: %s" % (path, e)) from None

    # -------------------------------------------------------------- the API

    def readings(self, sensor_id, from_us=None, to_us=None, limit=None):
        """The retained readings of one sensor with from_us <= t <= to_us, oldest first, at most
        `limit` (1 .. 1,000,000; None: the gateway's default, 10,000). Returns (t_us, values): an
        int64 and a float32 numpy array, views over the response body (no copy)."""
        _integer(sensor_id, "sensor id", 0, 2**32 - 1)
        params = [("format", "bin")]
        for name, value in (("from_us", from_us), ("to_us", to_us)):
            if value is not None:
                params.append((name, _integer(value, name, -2**63, 2**63 - 1)))
        if limit is not None:
            params.append(("limit", _integer(limit, "limit", 1, READINGS_MAX)))
        path = "/api/v1/sensors/%d/readings?%s" % (sensor_id, urllib.parse.urlencode(params))
        buf, n = self._request(path, _read_bin)
        if _np is not None:
            t_us = _np.frombuffer(buf, dtype="<i8", count=n)
            values = _np.frombuffer(buf, dtype="<f4", count=n, offset=8 * n)
            return t_us, values
        if not _LITTLE:
            raise Error("readings without numpy needs a little-endian machine")
        view = memoryview(buf)
        return view[:8 * n].cast("q"), view[8 * n:].cast("f")

    def sensor(self, sensor_id):
        """GET /api/v1/sensors/{id} as a dict (last reading, retained, windows, ewma)."""
        _integer(sensor_id, "sensor id", 0, 2**32 - 1)
        return self._json("/api/v1/sensors/%d" % sensor_id)

    def stats(self, sensor_id, window_s):
        """One window object (count, mean, min, max, stddev, exact) over the last window_s seconds
        of the sensor's event time, as a dict."""
        _integer(sensor_id, "sensor id", 0, 2**32 - 1)
        _integer(window_s, "window_s", 1, 2**63 - 1)
        return self._json("/api/v1/sensors/%d/stats?window_s=%d" % (sensor_id, window_s))

    def sensors(self):
        """Every known sensor as a dict (id, readings_total, last_t_us, last_value), ascending
        id, read page by page (SENSORS_PAGE a request)."""
        out = []
        offset = 0
        while True:
            page = self._json("/api/v1/sensors?offset=%d&limit=%d" % (offset, SENSORS_PAGE))
            got = page.get("sensors", [])
            out.extend(got)
            offset += len(got)
            # Bounded: each pass takes at least one sensor or ends; total bounds the passes.
            if not got or offset >= page.get("total", 0):
                return out

    def metrics(self):
        """GET /metrics parsed: {'sluice_readings_accepted_total': 1234.0, ...}, labelled series
        keyed as 'name{label="v"}'."""
        return parse_metrics(self._request("/metrics", lambda r: r.read()).decode("utf-8", "replace"))

    def healthz(self):
        """GET /healthz: True when the gateway answers 200 ok; HTTPError (e.g. 503, saying why)
        otherwise."""
        self._request("/healthz", lambda r: r.read())
        return True

    def close(self):
        with self._lock:
            self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<sluice.Query %s>" % self.base_url


def _error_text(body):
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:500]


def _read_bin(resp):
    """Read a format=bin body once into a bytearray of exactly its size: (buffer, count)."""
    count = resp.getheader("X-Count")
    length = resp.getheader("Content-Length")
    try:
        n = int(count)
    except (TypeError, ValueError):
        raise Error("readings: no X-Count header in the answer") from None
    if not 0 <= n <= READINGS_MAX:
        raise Error("readings: X-Count %d is outside 0 .. %d" % (n, READINGS_MAX))
    size = 12 * n
    if length is not None and int(length) != size:
        raise Error("readings: Content-Length %s is not 12 x X-Count (%d)" % (length, size))
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:  # bounded: each pass reads at least one byte or ends
        k = resp.readinto(view[got:])
        if not k:
            raise Error("readings: the body ended after %d of %d bytes" % (got, size))
        got += k
    view.release()
    if resp.read(1):
        raise Error("readings: the body is longer than 12 x X-Count")
    return buf, n
