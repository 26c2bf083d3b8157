#!/usr/bin/env python3
"""End-to-end throughput: sluice-load -> sluiced, beside sluice-load -> the
bare sink, on loopback, same traffic, same run. Prints a Markdown table of
medians and the ratio to the bare sink. A benchmark: it never fails on a
figure.

    bench/e2e.py [--build build] [--runs 3] [--seconds 3] [--load PATH ...]

--load (repeatable) names the sluice-load binaries to compare, each against
the same receivers in the same run (default: the build's own); the table
then has a row per sender.

UDP: sluice-load sends unpaced; the receiver's rate is the readings it
processed (sluiced: accepted, from /metrics; sink: counted) divided by the
sender's elapsed time, and the delivered fraction shows loss. TCP: acked,
pipelined (window 256); the rate is the sender's acked readings per second.
Each run starts a fresh receiver.
"""
import argparse
import json
import os
import select
import re
import shutil
import signal
import statistics
import subprocess
import sys
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


def start_sluiced(build, port, http_port, data_dir):
    p = subprocess.Popen([os.path.join(build, "sluiced"), "--udp", "127.0.0.1:%d" % port, "--tcp",
                          "127.0.0.1:%d" % port, "--http", "127.0.0.1:%d" % http_port, "--data-dir", data_dir,
                          "--max-sensors", "20000", "--ring-readings", "1024", "--udp-rcvbuf", "67108864",
                          "--max-tcp-connections-per-ip", "128"],  # every sender is 127.0.0.1
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Start-up lines (recovery) come first; the one that matters says "listening". Read the
    # pipe's bytes directly: a buffered readline could hide a line from select.
    deadline = time.monotonic() + 60
    seen = b""
    fd = p.stdout.fileno()
    while time.monotonic() < deadline and b"listening" not in seen:
        if select.select([fd], [], [], 0.2)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
        elif p.poll() is not None:
            break
    if b"listening" in seen:
        return p
    p.kill()
    raise RuntimeError("sluiced did not start: " + seen.decode(errors="replace") + p.stderr.read())


def metric(http_port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http_port, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def start_sink(build, transport, port):
    return subprocess.Popen([os.path.join(build, "sluice-sink"), "--%s" % transport, "127.0.0.1:%d" % port,
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load(binary, transport, port, batch, seconds, stream_base):
    cmd = [binary, "--target", "%s://127.0.0.1:%d" % (transport, port),
           "--streams", "4", "--sensors", "10000", "--batch", str(batch), "--duration", str(seconds),
           "--start-time-us", "-24h", "--stream-id-base", str(stream_base), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    return json.loads(out.stdout)


def one_run(args, transport, batch, receiver, run, binary):
    port, http_port = free_port(), free_port()
    os.sync()  # earlier runs' log pages written back now, not during this run's fsyncs
    tmp = tempfile.mkdtemp(prefix="sluice-e2e-")
    proc = start_sluiced(args.build, port, http_port, tmp) if receiver == "sluiced" else \
        start_sink(args.build, transport, port)
    time.sleep(0.5)
    try:
        res = load(binary, transport, port, batch, args.seconds, 1000 * run + 1)
        if transport == "tcp":
            return res["rate_readings_per_s"], 1.0, res["latency_us"]["p50"]
        time.sleep(0.5)
        if receiver == "sluiced":
            got = metric(http_port, "sluice_readings_accepted_total")
        else:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=10)
            got = json.loads(out.strip().splitlines()[-1])["readings"]
        return got / res["elapsed_s"], got / res["sent_readings"], None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--load", action="append", default=None,
                    help="a sluice-load binary to drive the traffic (repeat to compare senders)")
    args = ap.parse_args()
    loads = args.load or [os.path.join(args.build, "sluice-load")]
    print("| transport | batch | sender | receiver | readings/s (median of %d) | delivered | ack p50 us | "
          "ratio to bare sink |" % args.runs)
    print("|---|---|---|---|---|---|---|---|")
    for transport in ("udp", "tcp"):
        for batch in (100, 1000):
            for binary in loads:
                medians = {}
                for receiver in ("sink", "sluiced"):
                    runs = [one_run(args, transport, batch, receiver, r, binary) for r in range(args.runs)]
                    rate = statistics.median(r[0] for r in runs)
                    delivered = statistics.median(r[1] for r in runs)
                    p50 = statistics.median(r[2] for r in runs) if runs[0][2] is not None else None
                    medians[receiver] = rate
                    ratio = "%.2f" % (rate / medians["sink"]) if receiver == "sluiced" else "1"
                    print("| %s | %d | %s | %s | %.1f M | %.3f | %s | %s |" % (
                        transport, batch, binary, receiver, rate / 1e6, delivered,
                        "%.0f" % p50 if p50 else "-", ratio))
                    sys.stdout.flush()

if __name__ == "__main__":
    main()
