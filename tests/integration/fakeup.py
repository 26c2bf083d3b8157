"""A scripted fake upstream for the uplink tests: an HTTP/1.1 server (keep-alive, as libcurl reuses
its connections) in a thread of the test process, on a free loopback port, for the failures a real
engine will not produce on demand.

    up = FakeUpstream([("status", 503, {"Retry-After": "1"}, b"busy"), ("hang",)])
    ... point an uplink at up.url ...
    up.wait_requests(3, timeout_s=20)
    up.requests[2].lines                  # decoded line protocol of the third request
    up.stop()

The script decides each request's fate when its head (request line and headers) has arrived,
before its body is read: a list, taken in order, or a callable fate(index, request) (request with
method, path, query, headers; body still None). Fates:
    ("status", code, headers_dict, body)  answer that (body bytes or str)
    ("hang",)                             read the request and never answer, until .release() or
                                          .stop(), which close the connection unanswered
    ("slow", bytes_per_s)                 read the body at that pace, then answer 204
    ("close",)                            read the request and close the connection unanswered
Once a list is exhausted, or when a callable returns None, the fate is 204 No Content.
For "slow" to hold a sender back, the kernel must not buffer the body for us: FakeUpstream(rcvbuf=N)
sets a small receive buffer on the listening socket (accepted sockets inherit it).

Every request is recorded, in order of arrival of its whole body, in .requests: method, path,
query (dict, last value of each key), headers (lower-cased names), body (raw, as received) and,
decoded: .lines for line protocol (gzip or not), .series for Prometheus remote write (snappy
protobuf): [(labels dict, [(ts_ms, value)])].

Also the codecs the tests need without any package: snappy block format (a full decompressor; a
compressor that emits literals only, which every snappy reader takes), a protobuf wire reader and
writer, the remote write 1.0 messages both ways, and post_remote_write().
"""
import gzip
import http.server
import socket
import struct
import threading
import time
import urllib.parse

from harness import http_request, wait_until


# --- snappy, block format (https://github.com/google/snappy/blob/main/format_description.txt) ---

class SnappyError(ValueError):
    pass


def _uvarint(buf, pos):
    """(value, next position) of the base-128 varint at buf[pos]."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _put_uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def snappy_decompress(data):
    """Decompress one snappy block (the raw format remote write uses, not the framed one)."""
    try:
        n, pos = _uvarint(data, 0)
    except ValueError as e:
        raise SnappyError("length: %s" % e)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > len(data):
                    raise SnappyError("truncated literal length")
                length = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > len(data):
                raise SnappyError("literal of %d bytes past the end" % length)
            out += data[pos:pos + length]
            pos += length
            continue
        if kind == 1:  # copy, 1-byte offset
            if pos + 1 > len(data):
                raise SnappyError("truncated copy")
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:  # copy, 2- or 4-byte offset
            width = 2 if kind == 2 else 4
            if pos + width > len(data):
                raise SnappyError("truncated copy")
            length = 1 + (tag >> 2)
            offset = int.from_bytes(data[pos:pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise SnappyError("copy offset %d with %d bytes out" % (offset, len(out)))
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping: the copy repeats the last `offset` bytes
            for i in range(length):
                out.append(out[start + i])
        if len(out) > n:
            raise SnappyError("more than the %d bytes announced" % n)
    if len(out) != n:
        raise SnappyError("%d bytes, %d announced" % (len(out), n))
    return bytes(out)


def snappy_compress(data):
    """A valid snappy block of `data` made of literals only (no compression, any reader takes it)."""
    out = bytearray(_put_uvarint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")
        out += chunk
    return bytes(out)


# --- protobuf wire format ---

def pb_fields(buf):
    """The fields of one protobuf message: a list of (field number, wire type, value), value an
    int for varint (0), bytes for length-delimited (2), the raw 8 or 4 bytes for fixed (1, 5)."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _uvarint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            value, pos = _uvarint(buf, pos)
        elif wt == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _uvarint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("wire type %d at %d" % (wt, pos))
        if pos > len(buf):
            raise ValueError("field %d past the end of the message" % field)
        out.append((field, wt, value))
    return out


def _int64(u):
    return u - (1 << 64) if u >= 1 << 63 else u


def pb_varint_field(field, value):
    return _put_uvarint(field << 3) + _put_uvarint(value & 0xFFFFFFFFFFFFFFFF)


def pb_bytes_field(field, value):
    if isinstance(value, str):
        value = value.encode()
    return _put_uvarint(field << 3 | 2) + _put_uvarint(len(value)) + value


def pb_double_field(field, value):
    return _put_uvarint(field << 3 | 1) + struct.pack("<d", value)


# --- Prometheus remote write 1.0 ---
# WriteRequest{repeated TimeSeries timeseries = 1}
# TimeSeries{repeated Label labels = 1; repeated Sample samples = 2}
# Label{string name = 1; string value = 2}   Sample{double value = 1; int64 timestamp = 2}

def decode_write_request(buf):
    """[(labels dict, [(ts_ms, value)])] of a WriteRequest (unknown fields skipped)."""
    series = []
    for f, wt, ts in pb_fields(buf):
        if f != 1 or wt != 2:
            continue
        labels, samples = {}, []
        for g, gwt, v in pb_fields(ts):
            if g == 1 and gwt == 2:
                name = value = ""
                for h, hwt, x in pb_fields(v):
                    if h == 1 and hwt == 2:
                        name = x.decode()
                    elif h == 2 and hwt == 2:
                        value = x.decode()
                labels[name] = value
            elif g == 2 and gwt == 2:
                val, t = 0.0, 0
                for h, hwt, x in pb_fields(v):
                    if h == 1 and hwt == 1:
                        val = struct.unpack("<d", x)[0]
                    elif h == 2 and hwt == 0:
                        t = _int64(x)
                samples.append((t, val))
        series.append((labels, samples))
    return series


def encode_write_request(series):
    """A WriteRequest of [(labels dict, [(ts_ms, value)])]; labels go sorted by name, as the
    protocol asks (__name__ first)."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for name in sorted(labels):
            ts += pb_bytes_field(1, pb_bytes_field(1, name) + pb_bytes_field(2, labels[name]))
        for t, v in samples:
            ts += pb_bytes_field(2, pb_double_field(1, v) + pb_varint_field(2, t))
        out += pb_bytes_field(1, bytes(ts))
    return bytes(out)


REMOTE_WRITE_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                        "X-Prometheus-Remote-Write-Version": "0.1.0"}


def post_remote_write(url, series, timeout_s=10.0):
    """POST [(labels dict, [(ts_ms, value)])] to a remote write receiver: (status, body text)."""
    body = snappy_compress(encode_write_request(series))
    status, _, answer = http_request(url, body, REMOTE_WRITE_HEADERS, timeout_s=timeout_s)
    return status, answer.decode(errors="replace")


def post_lines(url, lines, gzipped=True, timeout_s=10.0):
    """POST line protocol (a list of lines, or text) the way the uplink does: (status, body text)."""
    text = lines if isinstance(lines, (str, bytes)) else "\n".join(lines) + "\n"
    body = text.encode() if isinstance(text, str) else text
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    status, _, answer = http_request(url, body, headers, timeout_s=timeout_s)
    return status, answer.decode(errors="replace")


# --- the server ---

class Request:
    """One request as the fake upstream saw it."""

    def __init__(self, index, method, target, headers):
        self.index = index
        self.method = method
        split = urllib.parse.urlsplit(target)
        self.path = split.path
        self.query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        self.headers = headers
        self.body = None
        self.fate = None
        self.status = None   # the status answered, None when none was
        self.error = None    # why the body could not be decoded, if it could not
        self.lines = None
        self.series = None
        self.connection = None  # the number of the connection it came on (keep-alive shows)
        self.time = time.time()

    def decode(self):
        enc = self.headers.get("content-encoding", "").lower()
        ctype = self.headers.get("content-type", "").lower()
        try:
            if "protobuf" in ctype:
                raw = snappy_decompress(self.body) if enc == "snappy" else self.body
                self.series = decode_write_request(raw)
            elif self.body:
                raw = gzip.decompress(self.body) if enc == "gzip" else self.body
                self.lines = [ln for ln in raw.decode().split("\n") if ln]
        except (ValueError, EOFError, OSError, UnicodeDecodeError) as e:
            self.error = "%s: %s" % (type(e).__name__, e)

    def __repr__(self):
        return "<Request %d %s %s %s -> %s>" % (self.index, self.method, self.path, self.query, self.status)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue answered for Expect

    def setup(self):
        super().setup()
        self.fake = self.server.fake
        self.conn_no = self.fake._connection_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.fake._connection_closed(self.connection)

    def log_message(self, *args):
        pass

    def _read_body(self, bytes_per_s=None):
        n = self.headers.get("Content-Length")
        if n is not None:
            return self._read(int(n), bytes_per_s)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return bytes(body)
                body += self._read(size, bytes_per_s)
                self.rfile.readline()
        return b""

    def _read(self, n, bytes_per_s):
        if not bytes_per_s:
            return self.rfile.read(n)
        out = bytearray()
        step = max(1, int(bytes_per_s) // 20)  # twenty reads a second
        t0 = time.time()
        while len(out) < n:
            chunk = self.rfile.read(min(step, n - len(out)))
            if not chunk:
                break
            out += chunk
            ahead = len(out) / bytes_per_s - (time.time() - t0)
            if ahead > 0 and self.fake._stopping.wait(ahead):
                break
        return bytes(out)

    def _handle(self):
        fake = self.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Request(None, self.command, self.path, headers)
        req.connection = self.conn_no
        fate = fake._fate(req)
        req.fate = fate
        try:
            req.body = self._read_body(fate[1] if fate[0] == "slow" else None)
        except (OSError, ValueError):
            self.close_connection = True
            return
        req.decode()
        fake._record(req)
        kind = fate[0]
        if kind in ("hang", "close"):
            if kind == "hang":
                fake._hang()
            self.close_connection = True
            return
        if kind == "status":
            _, code, extra, body = fate
        else:
            code, extra, body = 204, {}, b""
        body = body.encode() if isinstance(body, str) else (body or b"")
        self.send_response_only(code)
        self.send_header("Date", self.date_time_string())
        for k, v in (extra or {}).items():
            self.send_header(k, str(v))
        if code != 204 and code >= 200:
            self.send_header("Content-Length", str(len(body)))
        if any(k.lower() == "connection" and str(v).lower() == "close" for k, v in (extra or {}).items()):
            self.close_connection = True
        req.status = code  # before the answer leaves, so a client that has it sees it recorded
        self.end_headers()
        if code != 204 and code >= 200:
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake, rcvbuf):
        self.fake = fake
        self._rcvbuf = rcvbuf
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self):
        if self._rcvbuf:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
        super().server_bind()


class FakeUpstream:
    """The scripted fake upstream (see the module's doc)."""

    def __init__(self, script=None, rcvbuf=None):
        self._script = script if callable(script) else list(script or [])
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._released = threading.Event()
        self._stopping = threading.Event()
        self._hanging = 0
        self._requests = []
        self._heads = 0
        self._conns = {}
        self._conn_count = 0
        self._server = _Server(self, rcvbuf)
        self.port = self._server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _fate(self, req):
        with self._lock:
            i = self._heads
            self._heads += 1
        req.index = i
        if callable(self._script):
            fate = self._script(i, req)
        else:
            fate = self._script[i] if i < len(self._script) else None
        return tuple(fate) if fate else ("status", 204, {}, b"")

    def _record(self, req):
        with self._arrived:
            self._requests.append(req)
            self._arrived.notify_all()

    def _connection_opened(self, sock):
        with self._lock:
            self._conn_count += 1
            self._conns[sock] = self._conn_count
            return self._conn_count

    def _connection_closed(self, sock):
        with self._lock:
            self._conns.pop(sock, None)

    @property
    def requests(self):
        """A copy of the requests recorded so far, in order of arrival of their bodies."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self):
        """How many connections were accepted so far."""
        with self._lock:
            return self._conn_count

    def wait_requests(self, n, timeout_s=10.0):
        """Wait until at least n requests are recorded (or the deadline); returns the requests."""
        deadline = time.time() + timeout_s
        with self._arrived:
            while len(self._requests) < n and time.time() < deadline:
                self._arrived.wait(max(0.0, min(0.5, deadline - time.time())))
            return list(self._requests)

    def script(self, script):
        """Replace the script; the next request's fate is the new list's first (index 0)."""
        with self._lock:
            self._script = script if callable(script) else list(script or [])
            self._heads = 0

    def _hang(self):
        with self._lock:
            self._hanging += 1
        try:
            while not (self._released.is_set() or self._stopping.is_set()):
                self._released.wait(0.05)
        finally:
            with self._lock:
                self._hanging -= 1

    @property
    def hanging(self):
        """How many requests hang now."""
        with self._lock:
            return self._hanging

    def release(self, timeout_s=5.0):
        """Close every hanging request's connection unanswered; later "hang"s hang again."""
        self._released.set()
        wait_until(lambda: self.hanging == 0, timeout_s=timeout_s)
        self._released.clear()

    def stop(self):
        """Stop serving; hanging requests are let go and every open connection closed."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
