#!/usr/bin/python3
"""The sluice Python package against the baselines it must keep up with.

1. Send: sluice.Client.send from numpy arrays over acknowledged TCP, against
   build/sluice-load with the same batch size and window, into the same
   gateway, alternating, RUNS times each; the figure is each side's median
   rate (readings acked per second, from the first send to the last ack;
   sluice-load's own clock starts once its socket is up) and their ratio.
   The aim is at least 0.7x. Each run has its own stream and its own 1,000
   sensors, so no run's readings are out of order behind another's.
2. Read: Query.readings of 1,000,000 readings (format=bin, 12 MB, numpy views
   over the body) against a plain http.client GET of the same URL read into
   bytes, alternating; medians and ratio. The aim is within 1.5x.

A benchmark reports figures and never fails on them. Run it on a quiet
machine (nothing else building), e.g.:

    PYTHONPATH=build/python /usr/bin/python3 bench/python_client.py --build build

Prints a markdown table (and --json FILE writes the raw runs).
"""
import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.parse

import numpy as np

import sluice

SENSORS = 1000  # a run's sensors


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def arrays(n, sensor_base, start_us):
    """The readings sluice-load sends: sensor base + i % SENSORS, each sensor once a second."""
    i = np.arange(n, dtype=np.int64)
    ids = (sensor_base + i % SENSORS).astype(np.uint32)
    values = (20.0 + np.sin(i * 1e-3)).astype(np.float32)
    times = start_us + (i // SENSORS) * 1_000_000
    return ids, values, times


def run_python(g, n, batch, window, run):
    ids, values, times = arrays(n, 1 + run * SENSORS, int(time.time() * 1e6) - 24 * 3600 * 10**6)
    with g.client(stream_id=10_000 + run, batch_readings=batch, window=window) as c:
        started = time.perf_counter()
        c.send(ids, values, times)
        report = c.flush(timeout=600)
        seconds = time.perf_counter() - started
    assert report["accepted"] == n and report["acked"] == report["batches"], report
    return n / seconds


def run_load(g, build, n, batch, window, run):
    p = subprocess.run([os.path.join(build, "sluice-load"), "--target", g.tcp, "--streams", "1",
                        "--stream-id-base", str(20_000 + run), "--sensors", str(SENSORS),
                        "--sensor-id-base", str(1 + run * SENSORS), "--readings", str(n), "--batch", str(batch),
                        "--window", str(window), "--start-time-us", "-24h", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit("sluice-load failed: %s" % p.stderr[-1000:])
    r = json.loads(p.stdout)
    assert r["accepted"] == n, r
    return r["rate_readings_per_s"]


def bench_send(args):
    rows = {"python": [], "load": []}
    with sluice.Gateway(max_sensors=2 * args.runs * SENSORS + 1024, ring_readings=1024, sync=args.sync,
                        binary=os.path.join(args.build, "sluiced")) as g:
        for run in range(args.runs):  # alternate, so drift on a shared machine hits both
            rows["load"].append(run_load(g, args.build, args.readings, args.batch, args.window, 2 * run))
            rows["python"].append(run_python(g, args.readings, args.batch, args.window, 2 * run + 1))
    return rows


def bench_read(args):
    n = 1_000_000
    rows = {"query": [], "get": []}
    with sluice.Gateway(max_sensors=16, ring_readings=n, binary=os.path.join(args.build, "sluiced")) as g:
        ids = np.ones(n, dtype=np.uint32)  # one sensor, a reading a millisecond
        values = np.arange(n, dtype=np.float32)
        times = int(time.time() * 1e6) - 1000 * n + 1000 * np.arange(n, dtype=np.int64)
        with g.client(stream_id=1) as c:
            c.send(ids, values, times)
            c.flush(timeout=600)
        q = g.query()
        path = "/api/v1/sensors/1/readings?format=bin&limit=%d" % n
        u = urllib.parse.urlsplit(g.http)
        t_us, v = q.readings(1, limit=n)
        assert len(t_us) == n and t_us[-1] == times[-1] and not t_us.flags.owndata
        for _ in range(args.read_runs):
            started = time.perf_counter()
            t_us, v = q.readings(1, limit=n)
            rows["query"].append(time.perf_counter() - started)
            del t_us, v
            started = time.perf_counter()
            conn = http.client.HTTPConnection(u.hostname, u.port)
            conn.request("GET", path)
            body = conn.getresponse().read()
            conn.close()
            rows["get"].append(time.perf_counter() - started)
            assert len(body) == 12 * n
            del body
        q.close()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default="build", help="the build directory (sluiced, sluice-load)")
    p.add_argument("--readings", type=int, default=20_000_000, help="readings a send run [20,000,000]")
    p.add_argument("--batch", type=int, default=1000, help="readings a batch, both senders [1000]")
    p.add_argument("--window", type=int, default=256, help="batches in flight, both senders [256]")
    p.add_argument("--runs", type=int, default=5, help="send runs of each sender [5]")
    p.add_argument("--read-runs", type=int, default=9, help="read runs of each reader [9]")
    p.add_argument("--sync", default="batch", help="the gateway's --sync [batch]")
    p.add_argument("--json", help="write the raw runs here")
    args = p.parse_args()

    send = bench_send(args)
    read = bench_read(args)
    py, load = statistics.median(send["python"]), statistics.median(send["load"])
    query, get = statistics.median(read["query"]), statistics.median(read["get"])
    print("machine: %d cores (nproc), %s; Python %s; numpy %s" %
          (os.cpu_count(), cpu_model(), platform.python_version(), np.__version__))
    print("gateway: --sync %s; send runs of %d readings, batch %d, window %d, medians of %d; read medians of %d\n" %
          (args.sync, args.readings, args.batch, args.window, args.runs, args.read_runs))
    print("| what | sluice (Python) | baseline | ratio | aim |")
    print("|---|---|---|---|---|")
    print("| acked TCP send, numpy arrays | Client.send: %.2f M readings/s | sluice-load: %.2f M readings/s "
          "| %.2fx | >= 0.7x |" % (py / 1e6, load / 1e6, py / load))
    print("| 1,000,000 readings back (12 MB, format=bin) | Query.readings: %.1f ms | http.client GET + read: "
          "%.1f ms | %.2fx | <= 1.5x |" % (query * 1e3, get * 1e3, query / get))
    print("\nruns: python %s M/s; sluice-load %s M/s; Query.readings %s ms; GET %s ms" %
          (" ".join("%.2f" % (r / 1e6) for r in send["python"]), " ".join("%.2f" % (r / 1e6) for r in send["load"]),
           " ".join("%.1f" % (s * 1e3) for s in read["query"]), " ".join("%.1f" % (s * 1e3) for s in read["get"])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"send": send, "read": read, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
