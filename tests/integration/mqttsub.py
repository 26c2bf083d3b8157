"""Reading what an mqtt:// uplink publishes (test_uplink_mqtt, and the two-gateway chain test):
a mosquitto_sub that keeps every payload, and parsers for the two formats (UPLINK.md, MQTT.md
"Publishing"): `line` (line protocol, nanosecond times) and `native` (one batch frame a
message, PROTOCOL.md)."""
import atexit
import struct
import subprocess
import threading
import time

from harness import crc32c, http_request, wait_until

_collectors = []


@atexit.register
def _stop_collectors():
    for col in _collectors:
        col.stop()


class Collector:
    """mosquitto_sub on `topic` with a persistent session (client id, clean session off), every
    payload kept in order in .messages (bytes). ready() waits until a probe published after the
    subscription comes back, so nothing published later can be missed."""

    def __init__(self, broker, topic, client_id):
        self.broker, self.topic = broker, topic
        argv = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", topic, "-q", "1",
                "-F", "%x", "-i", client_id, "-c"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _collectors.append(self)
        self.messages = []
        self._probes = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.strip()
            if line:
                self.messages.append(bytes.fromhex(line.decode()))

    def ready(self, timeout_s=20):
        self._probes += 1
        probe = b"probe-%d" % self._probes
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            self.broker.pub(self.topic, probe)
            if wait_until(lambda: probe in self.messages, timeout_s=1.0):
                return True
        return False

    def payloads(self):
        return [m for m in self.messages if not m.startswith(b"probe-")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=5)


def parse_lines(payload):
    """A line-format message: [(key, t_ns, value)], key the sensor id of a `sluice,sensor=ID
    value=V T` line, or "series field" of a named one (names without escaped spaces)."""
    out = []
    for ln in payload.decode().splitlines():
        rest, t = ln.rsplit(" ", 1)
        series, fv = rest.rsplit(" ", 1)
        field, value = fv.split("=", 1)
        if series.startswith("sluice,sensor=") and field == "value":
            key = int(series[len("sluice,sensor="):])
        else:
            key = series + " " + field
        out.append((key, int(t), float(value)))
    return out


def post_lines(d, body):
    """POST /write (line protocol, ns): the count accepted."""
    status, headers, _ = http_request("http://127.0.0.1:%d/write" % d.http_port, data=body.encode())
    assert status == 204, (status, headers)
    return int(headers.get("x-sluice-accepted", -1))


def parse_frame(frame):
    """A native message: (header dict, [(sensor id, t_us, value)]); AssertionError when it is not
    exactly one valid batch frame (PROTOCOL.md)."""
    assert len(frame) >= 36 and frame[:4] == b"SLB1", frame[:8]
    version, flags, count, stream, key_id, seq, base = struct.unpack_from("<BBHIIQq", frame, 4)
    assert version == 1 and key_id == 0 and count >= 1, (version, key_id, count)
    assert len(frame) == 36 + 12 * count, (len(frame), count)
    assert struct.unpack_from("<I", frame, len(frame) - 4)[0] == crc32c(frame[:-4]), "crc"
    rs = [struct.unpack_from("<IIf", frame, 32 + 12 * i) for i in range(count)]
    head = {"flags": flags, "count": count, "stream": stream, "seq": seq, "base": base}
    return head, [(sid, base + off, v) for sid, off, v in rs]
