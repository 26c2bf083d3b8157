"""sluice.Query: the gateway's HTTP API (docs/spec/HTTP_API.md) from Python.

One persistent http.client connection (stdlib only), reopened once when the
gateway closed it while idle. readings() asks for format=bin and reads the
body once into a bytearray of exactly its size (12 bytes a reading: the n
times as i64 LE, then the n values as f32 LE); the two numpy arrays it
returns are views over that bytearray (numpy.frombuffer: no copy, the arrays
do not own their memory). Without numpy they are memoryviews cast to 'q'
and 'f'. The API caps a response at 1,000,000 readings (12 MB).

Named series (docs/spec/LINE_PROTOCOL.md): lookup(name) asks
GET /api/v1/series?name= once and keeps the answer in a bounded dict
(NAME_CACHE entries, the oldest forgotten first): the gateway never gives an
id to another name, so a kept answer never goes stale; an unknown name is
not kept (it may be written later). Every method that takes a sensor id also
takes a canonical name (a str). write() posts line protocol to /write on a
connection of its own, sent once and never resent.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

from ._errors import ArgumentError, Error, HTTPError, UnknownSeries

try:
    import numpy as _np
except ImportError:
    _np = None

READINGS_MAX = 1000000  # the API's limit on one readings response
SENSORS_PAGE = 10000    # the API's limit on one page of /api/v1/sensors
BUSY_RETRIES = 8        # a 503 with Retry-After ("sensor busy, retry") is asked again this often,
BUSY_PAUSE_S = 0.005    # after 5 ms, doubling up to BUSY_PAUSE_MAX_S (about 1.3 s in all)
BUSY_PAUSE_MAX_S = 0.5
SERIES_PAGE = 1000      # the API's limit on one page of /api/v1/series (a page may hold fewer)
SERIES_NAME_MAX = 1024  # bytes of one series name (LINE_PROTOCOL.md)
NAME_CACHE = 4096       # name -> id answers a Query keeps
PRECISIONS = ("n", "ns", "u", "us", "ms", "s", "m", "h")
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


def _name(value, what="series name"):
    """A canonical series name as the UTF-8 bytes the gateway compares (ArgumentError otherwise)."""
    if not isinstance(value, str):
        raise ArgumentError("%s must be a str, not %r" % (what, value))
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ArgumentError("%s %r is not valid Unicode: %s" % (what, value, e)) from None
    if "\0" in value:
        raise ArgumentError("%s %r holds a NUL, which the gateway's query string cannot carry" % (what, value))
    return raw


class Query:
    """Read a gateway back: Query("http://127.0.0.1:7401"). Thread-safe (one request at a time);
    close() or a with-block closes the connection.

    A sensor is given as its id (an int, 0 .. 2**32 - 1; a bool is not one) or as the canonical
    name of a named series (a str, e.g. "boiler,room=a,site=north temp"; a str of digits such
    as "17" is a name too, never an id). A name is looked up once (lookup) and its id kept, so
    one Query should talk to one gateway and its data directory: a gateway started afresh on
    an empty data directory may give the same ids to other names."""

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
        self._names = {}  # name -> id, at most NAME_CACHE, oldest first (insertion order)
        self._names_lock = threading.Lock()

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

    def lookup(self, name):
        """The sensor id of the series with this canonical name (a str: the measurement, the tags
        sorted by key, a space, the field key, escaped as in line protocol:
        "boiler,room=a,site=north temp"). Exact: a name that is not canonical (tags in another
        order) is not found. Raises UnknownSeries (a LookupError and an HTTPError) when the
        gateway knows no such series, ArgumentError for a name that cannot be asked for (not a
        str, a NUL, over 1,024 bytes). Answers are kept (NAME_CACHE of them): a second lookup
        of a name asks nothing."""
        raw = _name(name)
        with self._names_lock:
            known = self._names.get(name)
        if known is not None:
            return known
        if len(raw) > SERIES_NAME_MAX:
            raise ArgumentError("series name of %d bytes: a name is at most %d" % (len(raw), SERIES_NAME_MAX))
        path = "/api/v1/series?name=" + urllib.parse.quote(raw, safe="")
        try:
            answer = self._json(path)
        except HTTPError as e:
            if e.status == 404 and e.error == "unknown series":
                raise UnknownSeries(name, e.url, e.error) from None
            raise
        got = answer.get("id") if isinstance(answer, dict) else None
        if isinstance(got, bool) or not isinstance(got, int) or not 0 <= got <= 2**32 - 1:
            raise Error("HTTP GET %s: no sensor id in the answer: %r" % (path, answer))
        if answer.get("name") != name:  # the gateway found another name than the one asked
            raise Error("HTTP GET %s: asked for %r, answered %r" % (path, name, answer.get("name")))
        with self._names_lock:
            if name not in self._names:
                while len(self._names) >= NAME_CACHE:  # bounded: each pass forgets one
                    del self._names[next(iter(self._names))]
                self._names[name] = got
        return got

    def series(self, prefix="", limit=None):
        """The named series whose canonical name starts with `prefix` ("": every one), sorted by
        name (bytewise), as a list of (id, name), at most `limit` of them (None: all). Read page
        by page until the gateway's total; a name written meanwhile may or may not be in it. A
        name whose bytes are not UTF-8 (possible over the line protocol) shows U+FFFD where
        they were and cannot be looked up by that text."""
        raw = _name(prefix, "prefix")
        if limit is not None:
            _integer(limit, "limit", 0, 2**63 - 1)
        out, seen = [], set()
        offset = 0
        while limit is None or len(out) < limit:
            ask = SERIES_PAGE if limit is None else min(SERIES_PAGE, limit - len(out))
            page = self._json("/api/v1/series?prefix=%s&offset=%d&limit=%d" %
                              (urllib.parse.quote(raw, safe=""), offset, ask))
            total = page.get("total", 0)
            got = page.get("series", [])
            if offset >= total:
                break
            if not got:
                raise Error("series: the gateway says %d series from %r and gave none at offset %d" %
                            (total, prefix, offset))
            offset += len(got)
            for entry in got:
                # A name written between two pages and sorted before `offset` shifts the rest by
                # one: the next page then repeats an entry, kept only once.
                if entry["id"] not in seen and (limit is None or len(out) < limit):
                    seen.add(entry["id"])
                    out.append((entry["id"], entry["name"]))
            # Bounded: each pass moves offset on by at least one, and offset < total, which is
            # at most the gateway's --max-series.
            if offset >= total:
                break
        return out

    @staticmethod
    def _check_id(sensor):
        """An int (not a bool) in 0 .. 2**32 - 1, or a str (a name, looked up later)."""
        if not isinstance(sensor, str):
            _integer(sensor, "sensor id", 0, 2**32 - 1)

    def _sensor_id(self, sensor):
        """An id as it is (0 .. 2**32 - 1), or a name's id (lookup)."""
        if isinstance(sensor, str):
            return self.lookup(sensor)
        return _integer(sensor, "sensor id", 0, 2**32 - 1)

    def readings(self, sensor_id, from_us=None, to_us=None, limit=None):
        """The retained readings of one sensor (`sensor_id`: an id, or a series name, see the
        class) with from_us <= t <= to_us, oldest first, at most `limit` (1 .. 1,000,000; None:
        the gateway's default, 10,000). Returns (t_us, values): an int64 and a float32 numpy
        array, views over the response body (no copy)."""
        self._check_id(sensor_id)
        params = [("format", "bin")]
        for name, value in (("from_us", from_us), ("to_us", to_us)):
            if value is not None:
                params.append((name, _integer(value, name, -2**63, 2**63 - 1)))
        if limit is not None:
            params.append(("limit", _integer(limit, "limit", 1, READINGS_MAX)))
        sensor_id = self._sensor_id(sensor_id)  # arguments first: a bad one costs no lookup
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
        """GET /api/v1/sensors/{id} as a dict (last reading, retained, windows, ewma; "name" for a
        named series). `sensor_id` is an id or a series name (see the class)."""
        sensor_id = self._sensor_id(sensor_id)
        return self._json("/api/v1/sensors/%d" % sensor_id)

    def stats(self, sensor_id, window_s):
        """One window object (count, mean, min, max, stddev, exact) over the last window_s seconds
        of the sensor's event time, as a dict. `sensor_id` is an id or a series name."""
        self._check_id(sensor_id)
        _integer(window_s, "window_s", 1, 2**63 - 1)
        sensor_id = self._sensor_id(sensor_id)
        return self._json("/api/v1/sensors/%d/stats?window_s=%d" % (sensor_id, window_s))

    def sensors(self):
        """Every known sensor as a dict (id, readings_total, last_t_us, last_value, and "name"
        for a named series only: s.get("name") is None for a bare id), ascending id, read page
        by page (SENSORS_PAGE a request)."""
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

    def write(self, lines, precision="ns"):
        """POST line protocol to /write?precision=P: `lines` is a str, bytes (or another buffer),
        or an iterable of lines (str or bytes, one a line, a newline added where one is
        missing). Returns (accepted, rejected): the readings the gateway stored and refused
        (X-Sluice-Accepted/-Rejected; a refused reading, e.g. a string field, is not an error).
        Answered only once the readings are in the gateway's log. Raises HTTPError with the
        gateway's text on 400 (some lines did not parse: the others were stored, .accepted says
        how many readings), 413 (body over --http-max-body: nothing stored) and 503 (the log
        cannot take it now: nothing stored, .retry_after). Sent once, on a connection of its
        own: never resent, so never stored twice by this call."""
        if precision not in PRECISIONS:
            raise ArgumentError("precision must be one of %s, not %r" % (", ".join(PRECISIONS), precision))
        body = _lines_body(lines)
        path = "/write?precision=" + precision
        url = self._prefix + path
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            try:
                conn.request("POST", url, body=body,
                             headers={"Content-Type": "text/plain; charset=utf-8"})
            except (BrokenPipeError, ConnectionResetError):
                # A gateway that refuses at the headers (413: the Content-Length is over its
                # bound; 503) answers and closes before it has read the body: its answer may
                # still be there to read.
                pass
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Error("HTTP POST %s%s: %s" % (self.base_url, path, e)) from e
        finally:
            conn.close()
        accepted = _count_header(resp, "X-Sluice-Accepted")
        rejected = _count_header(resp, "X-Sluice-Rejected")
        if resp.status not in (200, 204):
            err = HTTPError(resp.status, _error_text(data), url)
            err.retry_after = resp.getheader("Retry-After")
            err.accepted, err.rejected = accepted, rejected
            raise err
        if accepted is None or rejected is None:
            raise Error("HTTP POST %s%s: no X-Sluice-Accepted/-Rejected in the answer" % (self.base_url, path))
        return accepted, rejected

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


def _lines_body(lines):
    """The body of a write: str -> UTF-8, a buffer as it is, an iterable of lines joined."""
    if isinstance(lines, str):
        return lines.encode("utf-8")
    if isinstance(lines, (bytes, bytearray, memoryview)):
        return bytes(lines)
    try:
        items = iter(lines)
    except TypeError:
        raise ArgumentError("write: lines must be a str, bytes or an iterable of lines, not %r" % (lines,)) from None
    parts = []
    for line in items:
        if isinstance(line, str):
            line = line.encode("utf-8")
        elif isinstance(line, (bytes, bytearray, memoryview)):
            line = bytes(line)
        else:
            raise ArgumentError("write: a line must be a str or bytes, not %r" % (line,))
        parts.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(parts)


def _count_header(resp, name):
    value = resp.getheader(name)
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


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
