"""Shared helpers of the sluice package's tests (tests/python).

The package under test is the one on PYTHONPATH (CTest sets build/python);
sluiced is $SLUICED (CTest sets build/sluiced), else what sluice.Gateway
finds. Every wait is a condition with a deadline; no test assumes a speed.
"""
import os
import socket
import struct
import sys
import threading
import time

import pytest

import sluice

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("SLUICE_SOURCE_DIR", os.path.normpath(os.path.join(HERE, "..", "..")))
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
from harness import crc32c, wait_until  # noqa: E402,F401  (the reference CRC-32C; bounded polling)

np = pytest.importorskip("numpy")

# Small gateways: the default plan (65,536 sensors x 4,096 readings) is 2.3 GiB.
SMALL = dict(max_sensors=4096, ring_readings=1024)


def now_us():
    return int(time.time() * 1e6)


def readings(n, sensors=100, start_us=None, id_base=0):
    """n readings over `sensors` sensors, 1 us apart from start_us (default: an hour ago), so every
    sensor's times increase: (ids uint32, values float32, times_us int64)."""
    start = now_us() - 3600 * 10**6 if start_us is None else start_us
    i = np.arange(n, dtype=np.int64)
    return ((i % sensors) + id_base).astype(np.uint32), (i % 1000).astype(np.float32), start + i


def stored(gateway):
    """Readings the gateway holds, summed over its sensors (survives a restart, unlike /metrics)."""
    with gateway.query() as q:
        return sum(s["readings_total"] for s in q.sensors())


@pytest.fixture(scope="module")
def gateway():
    with sluice.Gateway(**SMALL) as g:
        yield g


class FakeGateway:
    """A TCP listener that answers every frame with an ack of `status` (None: never answers, and
    never reads: a silent peer). For the paths a real gateway does not take."""

    def __init__(self, status=None):
        self.status = status
        self.frames = []  # (stream, seq, count) of each frame read
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.target = "tcp://127.0.0.1:%d" % self.port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        if status is not None:
            self._thread.start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(0.1)
                buf = b""
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    buf += chunk
                    while len(buf) >= 32:
                        count, stream = struct.unpack_from("<HI", buf, 6)
                        seq = struct.unpack_from("<Q", buf, 16)[0]
                        size = 36 + 12 * count
                        if len(buf) < size:
                            break
                        buf = buf[size:]
                        self.frames.append((stream, seq, count))
                        ack = b"SLA1" + struct.pack("<BBHIIQI", 1, self.status, 0, stream, 0, seq, 0)
                        conn.sendall(ack + struct.pack("<I", crc32c(ack)))

    def close(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.sock.close()
