#!/usr/bin/env python3
"""Durability figures: acked TCP readings/s under each --sync mode, fsyncs
per second, bytes on disk per reading, and recovery seconds for a log of a
given size (with and without a checkpoint). Prints Markdown tables of
medians. A benchmark: it never fails on a figure.

    bench/durability.py [--build build] [--runs 3] [--seconds 5] [--recovery-gib 1]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Gateway:
    def __init__(self, build, data_dir, *extra):
        self.port, self.http = free_port(), free_port()
        cmd = [os.path.join(build, "sluiced"), "--udp", "off", "--tcp", "127.0.0.1:%d" % self.port,
               "--http", "127.0.0.1:%d" % self.http, "--data-dir", data_dir, "--max-sensors", "20000",
               "--ring-readings", "1024", "--max-tcp-connections-per-ip", "128"] + list(extra)
        t0 = time.time()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("sluiced exited: " + self.proc.stderr.read())
            self.lines.append(line)
            if "listening" in line:
                break
        self.start_seconds = time.time() - t0

    def metrics(self):
        out = {}
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http, timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    k, v = line.rsplit(" ", 1)
                    out[k] = float(v)
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def load(build, port, seconds, stream_base=1, batch=100, readings=None, start="-24h"):
    cmd = [os.path.join(build, "sluice-load"), "--target", "tcp://127.0.0.1:%d" % port, "--streams", "4",
           "--sensors", "10000", "--batch", str(batch), "--start-time-us", str(start),
           "--stream-id-base", str(stream_base), "--quiet"]
    cmd += ["--readings", str(readings)] if readings else ["--duration", str(seconds)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300).stdout)


def sync_modes(args):
    print("| --sync | acked readings/s | fsyncs/s | log bytes per reading | ack p50 us | ack p99 us |")
    print("|---|---|---|---|---|---|")
    for mode in ("always", "batch", "never"):
        rows = []
        for run in range(args.runs):
            tmp = tempfile.mkdtemp(prefix="sluice-dur-")
            g = Gateway(args.build, tmp, "--sync", mode)
            before = g.metrics()
            res = load(args.build, g.port, args.seconds)
            m = g.metrics()
            g.stop()
            shutil.rmtree(tmp, ignore_errors=True)
            syncs = m["sluice_log_syncs_total"] - before["sluice_log_syncs_total"]
            rows.append((res["rate_readings_per_s"], syncs / res["elapsed_s"],
                         m["sluice_log_bytes_written_total"] / max(1, m["sluice_readings_accepted_total"]),
                         res["latency_us"]["p50"], res["latency_us"]["p99"]))
        med = [statistics.median(r[i] for r in rows) for i in range(5)]
        print("| %s | %.1f M | %.0f | %.2f | %.0f | %.0f |" % (mode, med[0] / 1e6, med[1], med[2], med[3], med[4]))


def recovery(args):
    tmp = tempfile.mkdtemp(prefix="sluice-rec-")
    target = int(args.recovery_gib * (1 << 30))
    g = Gateway(args.build, tmp, "--sync", "never", "--log-bytes-max", "%dM" % (2 * target // (1 << 20) + 256),
                "--checkpoint-every", "0")
    # Runs of 20M readings (2,000 a sensor at 1 s), each continuing in event
    # time where the previous stopped, so every reading is accepted.
    written, base, start = 0, 1, int((time.time() - 30 * 86400) * 1e6)
    while written < target:
        load(args.build, g.port, 60, stream_base=base, readings=20000000, start=start)
        base += 10
        start += 2000 * 1000000
        written = g.metrics()["sluice_log_bytes_written_total"]
    g.stop()
    print("\nlog written: %.2f GiB" % (written / (1 << 30)))
    print("\n| restart | log replayed | recovery seconds (median of %d) | seconds per GiB | readings replayed |"
          % args.runs)
    print("|---|---|---|---|---|")
    secs, readings = [], 0
    keep = "%dM" % (2 * target // (1 << 20) + 256)
    for _ in range(args.runs):
        g = Gateway(args.build, tmp, "--checkpoint-every", "0", "--log-bytes-max", keep)
        m = g.metrics()
        secs.append(m["sluice_recovery_seconds"])
        readings = m["sluice_recovery_readings_applied"]
        g.stop()
    med = statistics.median(secs)
    print("| full replay, no checkpoint | %.2f GiB | %.2f | %.2f | %d |" % (written / (1 << 30), med,
                                                                          med / (written / (1 << 30)), readings))
    # Now let a checkpoint cover the log, then restart again.
    g = Gateway(args.build, tmp, "--checkpoint-every", "1K", "--log-bytes-max", "%dM" % (2 * target // (1 << 20) + 256))
    load(args.build, g.port, 60, stream_base=base + 10, readings=100000, start=start)
    deadline = time.time() + 120
    while time.time() < deadline and g.metrics().get("sluice_checkpoints_completed_total", 0) < 1:
        time.sleep(0.5)
    g.stop()
    secs = []
    for _ in range(args.runs):
        g = Gateway(args.build, tmp, "--checkpoint-every", "0", "--log-bytes-max", keep)
        m = g.metrics()
        secs.append(m["sluice_recovery_seconds"])
        readings = m["sluice_recovery_readings_applied"]
        g.stop()
    print("| after a checkpoint | %.2f GiB on disk | %.2f | | %d |" % (written / (1 << 30), statistics.median(secs),
                                                                     readings))
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--recovery-gib", type=float, default=1.0)
    ap.add_argument("--skip-recovery", action="store_true")
    args = ap.parse_args()
    sync_modes(args)
    if not args.skip_recovery:
        recovery(args)


if __name__ == "__main__":
    main()
