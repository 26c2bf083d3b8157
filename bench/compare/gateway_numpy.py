#!/usr/bin/python3
"""Contender (b): the incident report's own prescribed fix, in Python.

The post-mortem ordered "contiguous typed buffers, preallocation, no
per-object overhead, packed binary on the internal bus". This gateway is
that fix done carefully in Python with Debian's python3-numpy, to be a real
competitor to sluiced:

- **Preallocated, contiguous, typed rings.** One ``int64`` array of event
  times (microseconds) and one ``float32`` array of values, each
  ``max_sensors x ring_readings``, row ``d`` being the ring of the sensor
  with dense index ``d``; an ``int64`` per-sensor count of readings written
  (the ring head is ``count % ring``). 12 bytes a retained reading. All of
  it is written once at start (times 0, values NaN) so the pages are
  resident from the first second and RSS does not creep as the rings fill:
  the memory is planned, as the report asked. Nothing grows afterwards.
- **No per-reading objects.** Each datagram is received with ``recv_into``
  into one preallocated ``bytearray`` (``recvmmsg`` is not in Python's
  standard library) and decoded with a single ``np.frombuffer`` over a
  structured dtype ``(<u4 sensor_id, <u4 offset_us, <f4 value)`` after the
  32-byte header: a view, no copy. Everything after that is a handful of
  vectorized numpy calls per batch, none per reading.
- **Sensor id -> dense index, vectorized.** A flat ``int64`` lookup table
  covers ids below 2^20 (8 MiB; one ``take`` a batch); ids at or above
  2^20 go through a sorted-key ``searchsorted``. A dict id -> index is the
  authority, updated once per new sensor (then the table / sorted keys are
  refreshed). Readings of a new sensor while ``max_sensors`` are known are
  rejected and counted (``rejected_sensor_limit``), as sluiced does.
- **Repeated sensors in one batch** are detected in O(batch) (scatter the
  batch positions into a scratch array by sensor and read them back: every
  position survives only when all sensors are distinct). Then the fast path
  is one gather of the heads, one scatter of each field. Otherwise the batch
  is stably sorted by sensor and each reading gets its rank within its
  sensor, so the ring keeps arrival order (and only the newest
  ``ring_readings`` of a sensor if a batch holds more than that).
- **Rolling statistics computed vectorized on query** over the sensor's
  ring (count, mean, min, max over the last ``window_s`` seconds of its
  event time).
- A large ``SO_RCVBUF`` (``SO_RCVBUFFORCE`` when permitted), the same as
  every other contender gets from the harness.

Validation as (a): datagram length 36 + 12 x count, magic ``SLB1``,
version 1, count >= 1. **No CRC check**, for the same reason as (a): CRC-32C
is not in Python's standard library (``zlib.crc32`` is the IEEE polynomial,
a different checksum), a pure-Python or numpy table-driven CRC-32C would
cost more than everything else here put together, and the ``crc32c``
package is not in Debian 12; a Python service would rely on the UDP
checksum. No per-reading rules (NaN, out of order) and no durable log
either; sluiced does all of those, so this contender does less work per
reading than sluiced does.

Control port (UDP, text request, JSON reply), for the benchmark harness:

    stats                 -> {"datagrams", "readings", "malformed", "retained", ...}
    avg SENSOR WINDOW_S   -> {"sensor", "window_s", "count", "mean", "min", "max", "query_s"}

Usage:

    /usr/bin/python3 bench/compare/gateway_numpy.py --udp 127.0.0.1:7500 \
        --control 127.0.0.1:7501 --max-sensors 10000 --ring-readings 1024

When ready (after the rings are allocated and touched) it prints one line,
``listening udp=HOST:PORT control=HOST:PORT``, on stdout. SIGTERM or SIGINT
stops it.
"""
import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time

import numpy as np

HEADER = struct.Struct("<4sBBHIIQq")  # magic, version, flags, count, stream, key, seq, base_time_us
HEADER_BYTES = 32
MAGIC = b"SLB1"
READING = np.dtype([("sensor_id", "<u4"), ("offset_us", "<u4"), ("value", "<f4")])
COUNT_MAX = 5455  # UDP: 36 + 12 x count <= 65507
TABLE_IDS = 1 << 20  # ids below this map through a flat table
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
CONTROL_EVERY = 256  # datagrams between control-port checks while busy (~10 ms here)


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def parse_addr(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def open_udp(addr, rcvbuf):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(addr)
    sock.setblocking(False)
    return sock


class Store:
    """Per-sensor rings in two preallocated 2-D arrays, addressed flat."""

    def __init__(self, max_sensors, ring):
        self.cap = max_sensors
        self.ring = ring
        self.pow2 = ring & (ring - 1) == 0
        self.mask = ring - 1
        self.times = np.empty((max_sensors, ring), np.int64)
        self.values = np.empty((max_sensors, ring), np.float32)
        self.times.fill(0)  # touch every page now: resident from the start, never later
        self.values.fill(np.nan)
        self.t_flat = self.times.reshape(-1)
        self.v_flat = self.values.reshape(-1)
        self.written = np.zeros(max_sensors, np.int64)  # readings written per sensor
        self.ids = np.zeros(max_sensors, np.uint32)  # dense index -> sensor id
        self.index = {}  # sensor id -> dense index: the authority
        self.table = np.full(TABLE_IDS, -1, np.int64)  # id < TABLE_IDS -> dense index, -1 unknown
        self.big_keys = np.zeros(0, np.uint32)  # sorted ids >= TABLE_IDS
        self.big_vals = np.zeros(0, np.int64)
        self.seen = np.zeros(max_sensors, np.int64)  # scratch for the distinct-sensors check
        self.positions = np.arange(COUNT_MAX + 1, dtype=np.int64)
        self.rejected_sensor_limit = 0

    # -- sensor id -> dense index ---------------------------------------------------
    def _lookup(self, sid):
        if int(sid.max()) < TABLE_IDS:
            return self.table.take(sid)
        small = sid < TABLE_IDS
        dense = np.full(sid.shape, -1, np.int64)
        dense[small] = self.table.take(sid[small])
        big = sid[~small]
        if len(self.big_keys):
            pos = np.minimum(np.searchsorted(self.big_keys, big), len(self.big_keys) - 1)
            dense[~small] = np.where(self.big_keys[pos] == big, self.big_vals[pos], -1)
        return dense

    def _register(self, sid, dense):
        """Slow path, once per new sensor: give unknown ids a dense index if there is room."""
        big_changed = False
        for s in np.unique(sid[dense < 0]).tolist():
            d = self.index.get(s)
            if d is None:
                if len(self.index) >= self.cap:
                    continue
                d = self.index[s] = len(self.index)
                self.ids[d] = s
                if s < TABLE_IDS:
                    self.table[s] = d
                else:
                    big_changed = True
        if big_changed:
            items = sorted((s, d) for s, d in self.index.items() if s >= TABLE_IDS)
            self.big_keys = np.array([s for s, _ in items], np.uint32)
            self.big_vals = np.array([d for _, d in items], np.int64)
        return self._lookup(sid)

    # -- ingest -------------------------------------------------------------------
    def apply(self, rec, base_us):
        """Store one decoded batch (a structured view); return the readings stored."""
        sid = rec["sensor_id"]
        dense = self._lookup(sid)
        if dense.min() < 0:
            dense = self._register(sid, dense)
            known = dense >= 0
            if not known.all():
                self.rejected_sensor_limit += int((~known).sum())
                rec = rec[known]
                dense = dense[known]
                if len(dense) == 0:
                    return 0
        n = len(dense)
        pos = self.positions[:n]
        seen = self.seen
        seen.put(dense, pos)
        if (seen.take(dense) == pos).all():  # all sensors distinct: one slot each
            head = self.written.take(dense)
            self.written.put(dense, head + 1)
            slot = head & self.mask if self.pow2 else head % self.ring
            flat = dense * self.ring + slot
            self.t_flat.put(flat, rec["offset_us"] + base_us)
            self.v_flat.put(flat, rec["value"])
            return n
        return self._apply_repeated(rec, dense, base_us)

    def _apply_repeated(self, rec, dense, base_us):
        order = np.argsort(dense, kind="stable")
        d = dense[order]
        n = len(d)
        first = np.empty(n, bool)
        first[0] = True
        np.not_equal(d[1:], d[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
        rank = np.arange(n) - group_start
        sizes = np.diff(np.append(starts, n))
        group_size = np.repeat(sizes, sizes)
        keep = rank >= group_size - self.ring  # a ring keeps only its newest `ring` readings
        head = self.written[d]
        slot = head + rank
        slot = slot & self.mask if self.pow2 else slot % self.ring
        flat = (d * self.ring + slot)[keep]
        src = order[keep]
        self.t_flat.put(flat, rec["offset_us"][src] + base_us)
        self.v_flat.put(flat, rec["value"][src])
        self.written[d[starts]] += sizes
        return n

    # -- queries ------------------------------------------------------------------
    def retained(self):
        return int(np.minimum(self.written[:len(self.index)], self.ring).sum())

    def rolling(self, sensor_id, window_s):
        t0 = time.perf_counter()
        out = {"sensor": sensor_id, "window_s": window_s, "count": 0, "mean": None, "min": None,
               "max": None}
        d = self.index.get(sensor_id)
        if d is not None:
            n = min(int(self.written[d]), self.ring)
            t = self.times[d, :n] if n < self.ring else self.times[d]
            v = self.values[d, :n] if n < self.ring else self.values[d]
            if n:
                cutoff = int(t.max()) - int(window_s * 1e6)
                sel = v[t > cutoff].astype(np.float64)
                out.update(count=int(sel.size), mean=float(sel.mean()), min=float(sel.min()),
                           max=float(sel.max()))
        out["query_s"] = time.perf_counter() - t0
        return out


class Gateway:
    def __init__(self, store, rss_before_store):
        self.store = store
        self.rss_before_store = rss_before_store
        self.datagrams = 0
        self.received = 0
        self.stored = 0
        self.malformed = 0
        self.started = time.time()

    def ingest(self, buf, nbytes):
        if nbytes < HEADER_BYTES + 4:
            self.malformed += 1
            return
        magic, version, _flags, count, _stream, _key, _seq, base = HEADER.unpack_from(buf, 0)
        if magic != MAGIC or version != 1 or count == 0 or nbytes != HEADER_BYTES + 12 * count + 4:
            self.malformed += 1
            return
        rec = np.frombuffer(buf, READING, count, HEADER_BYTES)
        self.stored += self.store.apply(rec, base)
        self.datagrams += 1
        self.received += count

    def stats(self):
        s = self.store
        return {"gateway": "numpy", "datagrams": self.datagrams, "readings": self.received,
                "stored": self.stored, "malformed": self.malformed,
                "rejected_sensor_limit": s.rejected_sensor_limit, "sensors": len(s.index),
                "max_sensors": s.cap, "ring_readings": s.ring, "retained": s.retained(),
                "rss_before_store_bytes": self.rss_before_store, "pid": os.getpid(),
                "uptime_s": time.time() - self.started}

    def control(self, sock):
        while True:
            try:
                data, peer = sock.recvfrom(512)
            except BlockingIOError:
                return
            words = data.decode("ascii", "replace").split()
            try:
                if words and words[0] == "stats":
                    reply = self.stats()
                elif len(words) == 3 and words[0] == "avg":
                    reply = self.store.rolling(int(words[1]), float(words[2]))
                else:
                    reply = {"error": "requests: stats | avg SENSOR WINDOW_S"}
            except ValueError as e:
                reply = {"error": str(e)}
            sock.sendto(json.dumps(reply).encode(), peer)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--udp", default="127.0.0.1:7500", help="data address HOST:PORT [%(default)s]")
    ap.add_argument("--control", default="127.0.0.1:7501", help="control/query address HOST:PORT [%(default)s]")
    ap.add_argument("--max-sensors", type=int, default=10000, help="sensor capacity [%(default)s]")
    ap.add_argument("--ring-readings", type=int, default=1024, help="readings kept per sensor [%(default)s]")
    ap.add_argument("--rcvbuf", type=int, default=32 << 20,
                    help="data socket receive buffer, bytes (SO_RCVBUFFORCE, else SO_RCVBUF) [%(default)s]")
    args = ap.parse_args()
    if args.max_sensors < 1 or args.ring_readings < 1:
        ap.error("--max-sensors and --ring-readings must be >= 1")

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    rss_before_store = rss_bytes()  # the interpreter, numpy and this module: what the rings add is on top
    gw = Gateway(Store(args.max_sensors, args.ring_readings), rss_before_store)
    data = open_udp(parse_addr(args.udp), args.rcvbuf)
    ctl = open_udp(parse_addr(args.control), 0)
    buf = bytearray(65536)
    recv_into = data.recv_into
    ingest = gw.ingest
    print("listening udp=%s:%d control=%s:%d" % (data.getsockname() + ctl.getsockname()), flush=True)
    while not stop:
        try:
            ready, _, _ = select.select([data, ctl], [], [], 1.0)
        except InterruptedError:
            continue
        if ctl in ready:
            gw.control(ctl)
        if data in ready:
            n = 0
            while True:
                try:
                    nbytes = recv_into(buf)
                except BlockingIOError:
                    break
                ingest(buf, nbytes)
                n += 1
                if n % CONTROL_EVERY == 0:
                    gw.control(ctl)
                    if stop:
                        break
    print(json.dumps(gw.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
