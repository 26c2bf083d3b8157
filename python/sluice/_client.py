"""sluice.Client: a sender of the native protocol over libsluice (docs/spec/CLIENT.md).

The fast path is the extension's: send() hands three buffers to
_sluice.Core.send, which reads them in place with the GIL released. Only
arguments that are not C-contiguous uint32 / float32 / int64 buffers come
back here. They are checked whole (a bad value sends nothing) and converted
CHUNK readings at a time: a numpy array of another dtype is viewed, never
copied whole, so converting it takes CHUNK x 16 bytes at most; a list or
other sequence becomes one numpy array of its numbers first (smaller than
the list itself), or, without numpy, array.array chunks.
"""
import array
import math

from . import _sluice
from ._errors import ArgumentError, Error, RefusedError, Timeout

try:
    import numpy as _np
except ImportError:  # numpy is optional: array.array converts instead
    _np = None
_FLATITER = _np.flatiter if _np is not None else ()

CHUNK = 65536  # readings converted at a time: 1 MiB of ids, values and times at most

_U32, _F32, _I64 = 0, 1, 2
_TYPECODES = {_U32: "I", _F32: "f", _I64: "q"}
_DTYPES = {_U32: "uint32", _F32: "float32", _I64: "int64"}
_NAMES = {_U32: "ids", _F32: "values", _I64: "times_us"}
_STATUS = {2: "BAD_CRC", 3: "MALFORMED", 5: "UNAUTHORIZED"}
_FOREVER = -1


def _ms(seconds, what):
    """Seconds (float, or None for no bound) to the library's milliseconds (-1: no bound)."""
    if seconds is None:
        return _FOREVER
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds < 0:
        raise ArgumentError("%s: seconds >= 0 or None, not %r" % (what, seconds))
    ms = int(math.ceil(seconds * 1000.0))
    if ms > 86400000:
        raise ArgumentError("%s: at most a day (86,400 s), not %r" % (what, seconds))
    return ms


def _option_ms(seconds, what):
    """An open-time timeout option: None is the library's default (0)."""
    if seconds is None:
        return 0
    ms = _ms(seconds, what)
    return max(ms, 1)


def _length(obj, what):
    try:
        return len(obj)
    except TypeError:
        raise ArgumentError("send: %s must be a sequence or an array, not %s" % (what, type(obj).__name__)) from None


def _prepare(obj, kind):
    """An argument ready to be cut into chunks, flat, in C order: itself when the extension reads
    it in place (or, without numpy, the sequence as it is), else a numpy array or flat iterator
    over it, checked whole chunk by chunk (no temporary larger than a chunk). A numpy input is
    viewed, not copied (a non-contiguous one of several dimensions is read through .flat); a
    list becomes one array of its numbers (smaller than the list)."""
    if _sluice.matches(obj, kind) or _np is None:
        return obj
    what = _NAMES[kind]
    a = _np.asarray(obj)
    if a.dtype.kind not in "biuf":
        raise ArgumentError("send: %s must be numbers, not %s" % (what, a.dtype))
    if a.ndim != 1:
        a = a.reshape(-1) if a.flags.c_contiguous else a.flat
    if kind != _F32:
        lo, hi = (0, 2**32 - 1) if kind == _U32 else (-2**63, 2**63 - 1)
        for i in range(0, len(a), CHUNK):
            part = a[i:i + CHUNK]
            if part.dtype.kind == "f" and not _np.all(_np.isfinite(part) & (part == _np.floor(part))):
                raise ArgumentError("send: %s must be whole numbers" % what)
            if part.min() < lo or part.max() > hi:
                raise ArgumentError("send: %s must lie in %d .. %d" % (what, lo, hi))
    return a


def _chunk(part, kind):
    """One chunk of a prepared argument as a buffer the extension reads in place."""
    if _sluice.matches(part, kind):
        return part
    if _np is not None:
        return _np.ascontiguousarray(part, dtype=_DTYPES[kind])
    what = _NAMES[kind]
    try:
        if kind != _F32 and any(isinstance(x, float) for x in part):
            raise ArgumentError("send: %s must be whole numbers" % what)
        return array.array(_TYPECODES[kind], part)
    except (OverflowError, TypeError) as e:
        raise ArgumentError("send: %s: %s" % (what, e)) from None


class Client:
    """One stream of readings to one gateway, over acknowledged TCP (tcp://HOST:PORT) or UDP
    (udp://HOST:PORT).

    Options (None: the library's default, client.h):
      batch_readings  readings a frame (1,000; 1..65,535)
      window          TCP: frames in flight (64); UDP: frames a sendmmsg
      first_seq       the first batch_seq (default: now in us since the epoch, so a restarted
                      sender with the same stream_id is never answered DUPLICATE)
      frame_bytes_max a frame's size cap in bytes (UDP 1,472, TCP none)
      block_timeout   seconds a send() may wait for room (60; None: no bound)
      connect_timeout, ack_timeout, backoff_min, backoff_max: seconds (5, 30, 0.01, 2)
      ack             False: TCP frames without ACK_REQUESTED (nothing is resent)
      gso             False: UDP without segmentation offload
      socket_buffer_bytes  SO_SNDBUF (the kernel's default)
      close_timeout   seconds close() and leaving a with-block wait for the acks (60)

    The client allocates everything at open (memory_bytes) and nothing after. It is one
    thread's: a call from another thread while one is under way raises Error.
    """

    def __init__(self, target, stream_id, *, batch_readings=None, window=None, first_seq=None,
                 frame_bytes_max=None, block_timeout=60.0, connect_timeout=None, ack_timeout=None,
                 backoff_min=None, backoff_max=None, ack=True, gso=True, socket_buffer_bytes=None,
                 close_timeout=60.0):
        if not isinstance(target, str):
            raise ArgumentError("target must be a string such as 'tcp://127.0.0.1:7400'")
        for name, value, hi in (("stream_id", stream_id, 2**32 - 1), ("batch_readings", batch_readings, 65535),
                                ("window", window, 65536), ("first_seq", first_seq, 2**64 - 1),
                                ("frame_bytes_max", frame_bytes_max, 65507),
                                ("socket_buffer_bytes", socket_buffer_bytes, 2**31 - 1)):
            if value is None and name != "stream_id":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise ArgumentError("%s must be an integer 0 .. %d, not %r" % (name, hi, value))
        if first_seq == 0:
            raise ArgumentError("first_seq must be at least 1 (None: the current time in us)")
        self.target = target
        self.stream_id = stream_id
        self._close_ms = _ms(close_timeout, "close_timeout")
        self._ack = bool(ack) and target.startswith("tcp://")
        flags = (0 if ack else _sluice.NO_ACK) | (0 if gso else _sluice.NO_GSO)
        self._core = _sluice.Core(
            target, stream_id, first_seq=first_seq or 0, batch_readings=batch_readings or 0,
            frame_bytes_max=frame_bytes_max or 0, window=window or 0,
            block_timeout_ms=_ms(block_timeout, "block_timeout"),
            connect_timeout_ms=_option_ms(connect_timeout, "connect_timeout"),
            ack_timeout_ms=_option_ms(ack_timeout, "ack_timeout"),
            backoff_min_ms=_option_ms(backoff_min, "backoff_min"),
            backoff_max_ms=_option_ms(backoff_max, "backoff_max"), flags=flags,
            socket_buffer_bytes=socket_buffer_bytes or 0)

    # -------------------------------------------------------------- sending

    def send(self, ids, values, times_us=None):
        """Append readings: ids (uint32), values (float32) and times_us (int64 us since the epoch;
        None: now, for every reading), all of one length. Buffers of exactly those types (numpy
        arrays, array.array, memoryview), C-contiguous, are read in place; anything else is
        converted in chunks. Returns the count taken. Raises ArgumentError (lengths differ, a
        value out of range: nothing taken), Timeout (no room within block_timeout; .taken says how
        many were), RefusedError, Error."""
        r = self._core.send(ids, values, times_us)
        if r is NotImplemented:
            return self._send_converted(ids, values, times_us)
        return self._check_taken(r[0], r[1], r[0])

    def append(self, sensor_id, value, time_us=None):
        """Append one reading (a convenience: send() with arrays is the fast way)."""
        return self.send((sensor_id,), (value,), None if time_us is None else (time_us,))

    def _send_converted(self, ids, values, times_us):
        for obj, what in ((ids, "ids"), (values, "values"), (times_us, "times_us")):
            if obj is not None:
                _length(obj, what)  # a sequence, or say which argument is not
        args = [(ids, _U32), (values, _F32)] + ([(times_us, _I64)] if times_us is not None else [])
        # With numpy every argument is checked whole before anything is sent (a bad value sends
        # nothing); without it, chunk by chunk (the chunks before a bad one were taken).
        args = [(_prepare(obj, kind), kind) for obj, kind in args]
        lengths = [len(obj) for obj, _ in args]
        if len(set(lengths)) != 1:
            raise ArgumentError("send: lengths differ: %d ids, %d values, %d times_us" %
                                (lengths[0], lengths[1], lengths[2] if len(lengths) > 2 else lengths[0]))
        n = lengths[0]
        total = 0
        for i in range(0, n, CHUNK):
            parts = [_chunk(obj if n <= CHUNK and not isinstance(obj, _FLATITER) else obj[i:i + CHUNK], kind)
                     for obj, kind in args]
            r = self._core.send(*parts)
            if r is NotImplemented:  # cannot happen: every part was made to match
                raise Error("send: a converted chunk was not taken in place")
            total += r[0]
            self._check_taken(r[0], r[1], total)
        return total

    def _check_taken(self, taken, rc, total):
        if rc == 0:
            return total
        if rc == _sluice.ETIMEDOUT:
            counts = self._core.counts()
            raise Timeout("send: no room for the readings within block_timeout (%d taken); %s" %
                          (total, self._why()), counts=counts, last_error=self._why(), taken=total,
                          code=rc)
        self._raise(rc, "send", taken=total)

    def push(self):
        """Cut the frame being filled and write what the socket takes now (no wait for acks)."""
        rc = self._core.push()
        if rc < 0 and rc not in (_sluice.EAGAIN, _sluice.ETIMEDOUT):
            self._raise(rc, "push")

    # -------------------------------------------------------------- waiting

    def flush(self, timeout=60.0):
        """Send what is buffered and wait until every batch is acknowledged (TCP) or sent (UDP),
        reconnecting and resending as needed, for at most `timeout` seconds (None: no bound).
        Returns the report (counts()). Raises Timeout with .counts and .last_error, or
        RefusedError naming the batch the gateway refused."""
        rc = self._core.flush(_ms(timeout, "flush timeout"))
        if rc == 0:
            return self._core.counts()
        if rc == _sluice.ETIMEDOUT:
            counts = self._core.counts()
            why = self._why()
            raise Timeout("flush: %d batches not acknowledged after %s s (%s)" %
                          (counts["pending"], timeout, why), counts=counts, last_error=why, code=rc)
        self._raise(rc, "flush")

    def counts(self):
        """The report: a dict of every count of struct sl_client_counts (client.h): batches,
        readings, sent, sent_readings, acked, duplicate, accepted, rejected, overloaded, resent,
        reconnects, sockets, connect_failures, ack_timeouts, refused, refused_seq, refused_status,
        udp_errors, pending, buffered, next_seq."""
        return self._core.counts()

    @property
    def memory_bytes(self):
        """Bytes the library allocated at open: all the client will ever use."""
        return self._core.memory_bytes

    @property
    def closed(self):
        return self._core.closed

    def _why(self):
        code = self._core.last_error()
        return _sluice.strerror(code) if code else "no error"

    def _raise(self, rc, what, taken=None):
        counts = self._core.counts()
        if rc == _sluice.EREFUSED:
            name = _STATUS.get(counts["refused_status"], "status %d" % counts["refused_status"])
            raise RefusedError("%s: the gateway answered %s to batch_seq %d of stream %d; the client stopped "
                               "(a bug or a key problem: resending cannot help)" %
                               (what, name, counts["refused_seq"], self.stream_id), status=name,
                               batch_seq=counts["refused_seq"], counts=counts, code=rc)
        if rc in (_sluice.EINVAL, _sluice.ETARGET):
            raise ArgumentError("%s: %s" % (what, _sluice.strerror(rc)), code=rc)
        raise Error("%s: %s" % (what, _sluice.strerror(rc)), code=rc)

    # -------------------------------------------------------------- closing

    def close(self, timeout=None):
        """Flush (waiting at most `timeout` seconds, default close_timeout), then close the socket
        and free everything. Returns the report. Without acks (ack=False over TCP) it also shuts
        the write side and waits for the gateway's end of stream, the one sign that the gateway
        read everything. A second close() does nothing and returns None. Raises as flush() does;
        the client is closed all the same."""
        if self._core.closed:
            return None
        try:
            ms = self._close_ms if timeout is None else _ms(timeout, "close timeout")
            if self._ack or not self.target.startswith("tcp://"):
                return self.flush(None if ms < 0 else ms / 1000.0)
            rc = self._core.finish(ms)
            if rc == 0:
                return self._core.counts()
            if rc == _sluice.ETIMEDOUT:
                counts = self._core.counts()
                raise Timeout("close: the gateway did not end the stream within %s s (%s)" %
                              (None if ms < 0 else ms / 1000.0, self._why()), counts=counts,
                              last_error=self._why(), code=rc)
            self._raise(rc, "close")
        finally:
            self._core.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return False
        try:  # keep what can be kept, but never hide the exception that ended the block
            self.close()
        except Error:
            pass
        return False

    def __repr__(self):
        return "<sluice.Client %s stream_id=%d%s>" % (self.target, self.stream_id,
                                                      " closed" if self._core.closed else "")
