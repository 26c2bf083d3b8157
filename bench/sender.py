#!/usr/bin/env python3
"""The sender's own cost: sluice-load binaries into the bare sink, interleaved.

Each configuration (UDP and acked TCP, batch 100 and 1,000, 4 streams, 10,000
sensors) runs every given sluice-load in turn, --runs times, into a fresh
build/sluice-sink, which stores nothing: the rate is the sender's. Runs
alternate between the binaries so a busy spell of the machine falls on both.
Prints a Markdown table of medians and each binary's ratio to the first.
A benchmark: it never fails on a figure.

    bench/sender.py --load OLD/sluice-load --load build/sluice-load [--runs 7] [--seconds 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import tempfile
import time

from e2e import free_port


def one_run(build, binary, transport, batch, seconds):
    port = free_port()
    with tempfile.TemporaryFile(mode="w+") as log:
        sink = subprocess.Popen([os.path.join(build, "sluice-sink"), "--%s" % transport, "127.0.0.1:%d" % port],
                                stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:  # it says "listening" on stderr once its socket is bound
                log.seek(0)
                if "listening" in log.read():
                    break
                if sink.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("sluice-sink did not start")
                time.sleep(0.02)
            cmd = [binary, "--target", "%s://127.0.0.1:%d" % (transport, port), "--streams", "4", "--sensors",
                   "10000", "--batch", str(batch), "--duration", str(seconds), "--start-time-us", "-24h",
                   "--quiet"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
            return json.loads(out.stdout)["rate_readings_per_s"]
        finally:
            sink.kill()
            sink.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    ap.add_argument("--load", action="append", required=True, help="a sluice-load binary (repeat)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=2)
    args = ap.parse_args()
    print("| transport | batch | sender | readings/s (median of %d) | ratio to the first |" % args.runs)
    print("|---|---|---|---|---|")
    for transport in ("udp", "tcp"):
        for batch in (100, 1000):
            rates = {b: [] for b in args.load}
            for _ in range(args.runs):
                for binary in args.load:
                    rates[binary].append(one_run(args.build, binary, transport, batch, args.seconds))
            first = statistics.median(rates[args.load[0]])
            for binary in args.load:
                m = statistics.median(rates[binary])
                print("| %s | %d | %s | %.1f M | %.2f |" % (transport, batch, binary, m / 1e6, m / first))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
