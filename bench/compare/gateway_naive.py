#!/usr/bin/python3
"""Contender (a): the gateway the incident report describes, rebuilt.

A Python service that receives native-protocol batches (docs/spec/PROTOCOL.md)
over UDP, turns every reading into a dict

    {"sensor_id": 17, "t_us": 1700000000001000, "value": 21.5}

appends it to one list that is never trimmed, and computes a sensor's rolling
average by iterating over that list when asked. This is what the report
says the old gateway did ("every 8-byte reading became a ~400-byte dict
appended to a growing list"); it is written the way a competent Python
engineer would write that design, not as a strawman:

- one preallocated receive buffer and ``recv_into`` (no per-datagram bytes
  object), one non-blocking socket drained in a tight loop, ``select`` only
  when the socket is empty;
- the frame header is decoded with one ``struct.unpack_from``; the readings
  with ``struct.iter_unpack`` (C-speed decoding) and the list's bound
  ``append`` method hoisted out of the loop;
- validation as the old service plausibly did it: datagram length equals
  36 + 12 x count, magic ``SLB1``, version 1, count >= 1. **No CRC check**:
  the checksum is CRC-32C (Castagnoli), which the Python standard library
  does not have (``zlib.crc32`` and ``binascii.crc32`` are the IEEE
  polynomial), a pure-Python CRC-32C costs far more than the decode, and
  the ``crc32c`` package is not in Debian 12. The original service would
  have relied on the UDP checksum, so this one does too. No per-reading
  rules (NaN, out of order) either: every reading is stored.
- the garbage collector is left on, as in any ordinary service; the list is
  unbounded (that is the point: its memory grows with every reading).

Rolling averages are computed only when asked (the query port below), by
one pass over the whole list collecting the sensor's readings, then the
mean over the last ``window_s`` seconds of that sensor's event time. Queries
are served between datagrams, never concurrently with decoding, so the
ingest rate measured is the ingest path's own.

Control port (UDP, text request, JSON reply), for the benchmark harness:

    stats                 -> {"datagrams", "readings", "malformed", "retained", ...}
    avg SENSOR WINDOW_S   -> {"sensor", "window_s", "count", "mean", "min", "max",
                              "scanned", "query_s"}

Usage:

    /usr/bin/python3 bench/compare/gateway_naive.py --udp 127.0.0.1:7500 \
        --control 127.0.0.1:7501

When ready it prints one line, ``listening udp=HOST:PORT control=HOST:PORT``,
on stdout. SIGTERM or SIGINT stops it.
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

HEADER = struct.Struct("<4sBBHIIQq")  # magic, version, flags, count, stream, key, seq, base_time_us
HEADER_BYTES = 32
READING = struct.Struct("<IIf")  # sensor_id, offset_us, value
MAGIC = b"SLB1"
SO_RCVBUFFORCE = 33  # Linux; not exported by Python's socket module
CONTROL_EVERY = 32  # datagrams between control-port checks while busy (~10 ms here)


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


class Gateway:
    def __init__(self):
        self.readings = []  # one dict per reading, never trimmed
        self.datagrams = 0
        self.received = 0
        self.malformed = 0
        self.started = time.time()

    def ingest(self, buf, nbytes):
        """Decode one datagram and append a dict per reading."""
        if nbytes < HEADER_BYTES + 4:
            self.malformed += 1
            return
        magic, version, _flags, count, _stream, _key, _seq, base = HEADER.unpack_from(buf, 0)
        if magic != MAGIC or version != 1 or count == 0 or nbytes != HEADER_BYTES + 12 * count + 4:
            self.malformed += 1
            return
        append = self.readings.append
        for sensor_id, offset_us, value in READING.iter_unpack(buf[HEADER_BYTES:HEADER_BYTES + 12 * count]):
            append({"sensor_id": sensor_id, "t_us": base + offset_us, "value": value})
        self.datagrams += 1
        self.received += count

    def rolling_average(self, sensor_id, window_s):
        """Mean of the sensor's readings in the last window_s seconds of its event time."""
        t0 = time.perf_counter()
        mine = [(r["t_us"], r["value"]) for r in self.readings if r["sensor_id"] == sensor_id]
        out = {"sensor": sensor_id, "window_s": window_s, "count": 0, "mean": None, "min": None,
               "max": None, "scanned": len(self.readings)}
        if mine:
            newest = max(t for t, _ in mine)
            cutoff = newest - int(window_s * 1e6)
            vals = [v for t, v in mine if t > cutoff]
            out.update(count=len(vals), mean=sum(vals) / len(vals), min=min(vals), max=max(vals))
        out["query_s"] = time.perf_counter() - t0
        return out

    def stats(self):
        return {"gateway": "naive", "datagrams": self.datagrams, "readings": self.received,
                "malformed": self.malformed, "retained": len(self.readings), "pid": os.getpid(),
                "uptime_s": time.time() - self.started}

    def control(self, sock):
        """Answer every pending control request."""
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
                    reply = self.rolling_average(int(words[1]), float(words[2]))
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
    ap.add_argument("--rcvbuf", type=int, default=32 << 20,
                    help="data socket receive buffer, bytes (SO_RCVBUFFORCE, else SO_RCVBUF) [%(default)s]")
    args = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    data = open_udp(parse_addr(args.udp), args.rcvbuf)
    ctl = open_udp(parse_addr(args.control), 0)
    gw = Gateway()
    buf = bytearray(65536)
    mv = memoryview(buf)
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
                ingest(mv, nbytes)
                n += 1
                if n % CONTROL_EVERY == 0:
                    gw.control(ctl)
                    if stop:
                        break
    print(json.dumps(gw.stats()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
