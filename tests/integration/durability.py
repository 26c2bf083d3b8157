"""A sender that keeps the exactly-once bookkeeping of PROTOCOL.md, for the
durability tests: it pipelines acked batches on several streams, remembers
which batches have an OK or DUPLICATE ack, survives the gateway vanishing
(SIGKILL), and resends every batch without such an ack once the gateway is
back. `verify` then checks that every batch is stored exactly once, in
order, with its values.

Batch `seq` of stream `s` holds one reading for each of the stream's
sensors: sensor s * 1000 + k (k < sensors_per_stream), at time
T0 + seq * 1000 us, value seq + k / 8 (exact in f32).
"""
import select
import socket
import struct
import time

from harness import DUPLICATE, OK, OVERLOADED, batch, crc32c

T0 = 1700000000000000


def make_frame(stream, seq, sensors_per_stream):
    readings = [(stream * 1000 + k, 0, seq + k / 8.0) for k in range(sensors_per_stream)]
    return batch(stream, seq, T0 + seq * 1000, readings)


class Sender:
    def __init__(self, streams=(1, 2, 3, 4), sensors_per_stream=4, window=64, max_seq=60000):
        self.max_seq = max_seq  # the gateway's ring must hold this many readings a sensor
        self.streams = list(streams)
        self.k = sensors_per_stream
        self.window = window
        self.acked = {s: 0 for s in self.streams}      # highest seq with OK/DUPLICATE; acks come in order
        self.next_seq = {s: 1 for s in self.streams}   # next seq never sent yet
        self.overloaded = 0
        self.duplicates = 0

    def _connect(self, port, timeout_s=10.0):
        deadline = time.time() + timeout_s
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                return s
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def run(self, port, seconds, new_batches=True, until_all_acked=False):
        """Send and read acks until `seconds` pass, the connection drops, or (with
        until_all_acked) every batch sent so far is acked. Returns False when the
        gateway went away."""
        conns = {s: self._connect(port) for s in self.streams}
        inflight = {s: [] for s in self.streams}  # seqs sent on this connection, in order
        rbuf = {s: b"" for s in self.streams}
        resend_from = {s: self.acked[s] + 1 for s in self.streams}
        deadline = time.time() + seconds
        alive = True
        try:
            while time.time() < deadline:
                if until_all_acked and all(self.acked[s] == self.next_seq[s] - 1 for s in self.streams):
                    break
                for s in self.streams:
                    while len(inflight[s]) < self.window:
                        seq = resend_from[s]
                        if seq >= self.next_seq[s]:
                            if not new_batches or seq > self.max_seq:
                                break
                            self.next_seq[s] = seq + 1
                        frame = make_frame(s, seq, self.k)
                        try:
                            conns[s].send(frame)
                        except BlockingIOError:
                            break
                        inflight[s].append(seq)
                        resend_from[s] = seq + 1
                r, _, _ = select.select(list(conns.values()), [], [], 0.05)
                for s in self.streams:
                    if conns[s] not in r:
                        continue
                    chunk = conns[s].recv(65536)
                    if not chunk:
                        raise ConnectionResetError
                    rbuf[s] += chunk
                    while len(rbuf[s]) >= 32:
                        self._on_ack(s, rbuf[s][:32], inflight, resend_from)
                        rbuf[s] = rbuf[s][32:]
        except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError, OSError):
            alive = False
        for c in conns.values():
            c.close()
        return alive

    def _on_ack(self, s, raw, inflight, resend_from):
        magic, _v, status, _r, stream, accepted, seq, rejected, crc = struct.unpack("<4sBBHIIQII", raw)
        assert magic == b"SLA1" and crc == crc32c(raw[:28]), "bad ack"
        assert stream == s and inflight[s] and seq == inflight[s][0], \
            "ack out of order: stream %d seq %d, expected %r" % (stream, seq, inflight[s][:1])
        inflight[s].pop(0)
        if status in (OK, DUPLICATE):
            assert status == DUPLICATE or (accepted, rejected) == (self.k, 0), (status, accepted, rejected)
            assert seq == self.acked[s] + 1 or status == DUPLICATE, (seq, self.acked[s])
            self.acked[s] = max(self.acked[s], seq)
            self.duplicates += status == DUPLICATE
        elif status == OVERLOADED:
            # Not applied: send it again after what is in flight (which will be
            # OVERLOADED or DUPLICATE in turn, being later than it).
            self.overloaded += 1
            resend_from[s] = min(resend_from[s], seq)
            inflight[s].clear()  # later acks on this connection are for seqs we resend anyway
            raise ConnectionResetError  # reconnect: the simplest way to restart the pipeline in order
        else:
            raise AssertionError("unexpected status %d" % status)

    def verify(self, daemon, checks, what, missing=()):
        """Every batch up to acked[s] stored exactly once, in order, with its values;
        but the (stream, seq) pairs in `missing`, which must be absent."""
        bad = 0
        for s in self.streams:
            n = self.acked[s]
            gone = {q for (st, q) in missing if st == s}
            for k in range(self.k):
                sid = s * 1000 + k
                status, hdrs, body = daemon.get("/api/v1/sensors/%d/readings?format=bin&limit=1000000" % sid)
                count = int(hdrs.get("x-count", "0")) if status == 200 else 0
                ts = struct.unpack("<%dq" % count, body[:8 * count]) if count else ()
                vs = struct.unpack("<%df" % count, body[8 * count:]) if count else ()
                want_t = [T0 + q * 1000 for q in range(1, n + 1) if q not in gone]
                want_v = [q + k / 8.0 for q in range(1, n + 1) if q not in gone]
                if list(ts) != want_t or list(vs) != want_v:
                    bad += 1
                    if bad <= 3:
                        seen = [(t - T0) // 1000 for t in ts]
                        dupes = len(seen) - len(set(seen))
                        absent = sorted(set(range(1, n + 1)) - set(seen) - gone)[:10]
                        print("sensor %d: %d readings, want %d; duplicates %d, missing %r" %
                              (sid, count, n - len(gone), dupes, absent))
        checks.check(bad == 0, "%s: every acked batch stored exactly once, in order, with its values" % what)
        return bad == 0


def log_records(build, data_dir):
    """The records sluice-log lists: dicts of segment, lsn, offset, stream, seq, count, bytes."""
    import os
    import re
    import subprocess
    out = subprocess.run([os.path.join(build, "sluice-log"), "--records", data_dir], capture_output=True,
                         text=True, timeout=60).stdout
    records, pending = [], []
    for line in out.splitlines():
        m = re.match(r"(log-[0-9a-f]+\.seg): segment", line)
        if m:  # the segment's line follows its records
            for r in pending:
                r["segment"] = m.group(1)
            records += pending
            pending = []
        m = re.match(r"\s+record lsn (\d+) at (\d+): (tcp|udp) stream (\d+) seq (\d+), (\d+) readings", line)
        if m:
            count = int(m.group(6))
            pending.append({"segment": None, "lsn": int(m.group(1)), "offset": int(m.group(2)),
                            "stream": int(m.group(4)), "seq": int(m.group(5)), "count": count,
                            "bytes": (64 + 12 * count + 7) // 8 * 8})
    return records
