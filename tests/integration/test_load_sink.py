#!/usr/bin/env python3
"""sluice-load against sluice-sink over loopback UDP and TCP.

Proves that the load generator and the bare sink agree on the wire format and
on the counts: every reading sluice-load reports as sent is counted by the
sink (UDP with and without GSO, paced so that loopback does not drop; TCP
acked, unacked and with several streams), acks complete every batch in order with a latency figure,
injected NaN/out-of-order readings are counted, and bad usage exits 2 without
printing a report, while an unreachable gateway exits 1 with one.

Finds the binaries through SLUICE_BUILD_DIR. Python 3 standard library only.
Every subprocess has a timeout and is killed on failure.
"""
import json
import os
import re
import select
import socket
import subprocess
import sys
import time

BUILD_DIR = os.environ.get("SLUICE_BUILD_DIR", "build")
LOAD = os.path.join(BUILD_DIR, "sluice-load")
SINK = os.path.join(BUILD_DIR, "sluice-sink")
READINGS = 200000
RUN_TIMEOUT_S = 60
START_TIMEOUT_S = 10

checks = 0
failures = []
children = []


def check(condition, what):
    global checks
    checks += 1
    if not condition:
        failures.append(what)
        print("FAIL: " + what, file=sys.stderr)


def start_sink(transport, expect):
    """Start sluice-sink on a free loopback port; return (process, port)."""
    proc = subprocess.Popen(
        [SINK, "--" + transport, "127.0.0.1:0", "--expect", str(expect), "--idle-exit", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.append(proc)
    deadline = time.monotonic() + START_TIMEOUT_S
    line = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            line = proc.stderr.readline()
            break
        if proc.poll() is not None:
            break
    match = re.search(r"listening on \w+://127\.0\.0\.1:(\d+)", line)
    if not match:
        raise RuntimeError("sluice-sink did not announce its port: %r" % line)
    return proc, int(match.group(1))


def finish_sink(proc):
    """Wait for the sink (it exits on --expect) and parse its JSON line."""
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        check(False, "sluice-sink did not exit (stderr: %s)" % err.strip())
        return {}
    check(proc.returncode == 0, "sluice-sink exit status %d" % proc.returncode)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check(False, "sluice-sink printed no JSON: %r" % out)
        return {}


def run_load(args, timeout=RUN_TIMEOUT_S):
    """Run sluice-load; return (exit status, parsed JSON or None, stdout, stderr)."""
    try:
        res = subprocess.run([LOAD] + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        check(False, "sluice-load timed out: %s" % " ".join(args))
        return -1, None, exc.stdout or "", exc.stderr or ""
    report = None
    lines = res.stdout.strip().splitlines()
    if len(lines) == 1:
        try:
            report = json.loads(lines[0])
        except ValueError:
            report = None
    return res.returncode, report, res.stdout, res.stderr


def common_args(port, transport, batch):
    return ["--target", "%s://127.0.0.1:%d" % (transport, port), "--readings", str(READINGS),
            "--batch", str(batch), "--start-time-us", "-24h", "--quiet"]


def test_udp(extra=(), name="udp"):
    sink, port = start_sink("udp", READINGS)
    # Paced: unpaced UDP may legitimately overrun a loopback receive buffer.
    rc, rep, out, err = run_load(common_args(port, "udp", 50) + ["--rate", "2000000"] + list(extra))
    check(rc == 0, "%s: sluice-load exit %d: %s" % (name, rc, err.strip()))
    check(rep is not None, "%s: one JSON object on stdout, got %r" % (name, out))
    rep = rep or {}
    check(rep.get("transport") == "udp", "%s: transport field" % name)
    check(rep.get("sent_readings") == READINGS,
          "%s: sent_readings %r" % (name, rep.get("sent_readings")))
    check(rep.get("sent_batches") == READINGS // 50,
          "%s: sent_batches %r" % (name, rep.get("sent_batches")))
    check(rep.get("latency_us", 0) is None, "%s: latency is null" % name)
    got = finish_sink(sink)
    check(got.get("readings") == READINGS, "%s: sink readings %r" % (name, got.get("readings")))
    check(got.get("datagrams") == READINGS // 50,
          "%s: sink datagrams %r" % (name, got.get("datagrams")))
    check(got.get("malformed") == 0, "%s: sink malformed %r" % (name, got.get("malformed")))


def test_udp_plain_streams():
    """Without UDP GSO (one datagram per message) and with two streams."""
    test_udp(["--no-gso", "--streams", "2"], "udp-nogso")


def test_tcp_acked():
    sink, port = start_sink("tcp", READINGS)
    rc, rep, out, err = run_load(common_args(port, "tcp", 64) + ["--window", "64"])
    check(rc == 0, "tcp: sluice-load exit %d: %s" % (rc, err.strip()))
    check(rep is not None, "tcp: one JSON object on stdout, got %r" % out)
    rep = rep or {}
    check(rep.get("sent_readings") == READINGS, "tcp: sent_readings %r" % rep.get("sent_readings"))
    check(rep.get("sent_batches", 0) > 0 and rep.get("acked_batches") == rep.get("sent_batches"),
          "tcp: acked %r of %r batches" % (rep.get("acked_batches"), rep.get("sent_batches")))
    check(rep.get("accepted") == READINGS and rep.get("rejected") == 0,
          "tcp: accepted %r rejected %r" % (rep.get("accepted"), rep.get("rejected")))
    latency = rep.get("latency_us")
    check(isinstance(latency, dict) and all(k in latency for k in ("p50", "p99", "p999", "max")),
          "tcp: latency present: %r" % latency)
    if isinstance(latency, dict):
        check(0 < latency["p50"] <= latency["p99"] <= latency["p999"] <= latency["max"],
              "tcp: latency percentiles ordered: %r" % latency)
    got = finish_sink(sink)
    check(got.get("readings") == READINGS, "tcp: sink readings %r" % got.get("readings"))
    check(got.get("frames") == rep.get("sent_batches"), "tcp: sink frames %r" % got.get("frames"))


def test_tcp_streams_unacked():
    """Three streams, no acks, injected rejects: counts still add up."""
    sink, port = start_sink("tcp", READINGS)
    rc, rep, out, err = run_load(common_args(port, "tcp", 100) + [
        "--no-ack", "--streams", "3", "--pattern", "walk", "--nan-rate", "0.01",
        "--ooo-rate", "0.01"])
    check(rc == 0, "tcp-noack: sluice-load exit %d: %s" % (rc, err.strip()))
    rep = rep or {}
    check(rep.get("streams") == 3, "tcp-noack: streams %r" % rep.get("streams"))
    check(rep.get("sent_readings") == READINGS, "tcp-noack: sent %r" % rep.get("sent_readings"))
    check(rep.get("acked_batches") == 0 and rep.get("latency_us", 0) is None,
          "tcp-noack: no acks, no latency")
    for key in ("injected_nan", "injected_ooo"):
        # About 1% each; generous bounds, the point is that they are counted.
        check(READINGS * 0.005 < rep.get(key, 0) < READINGS * 0.02,
              "tcp-noack: %s %r" % (key, rep.get(key)))
    got = finish_sink(sink)
    check(got.get("readings") == READINGS, "tcp-noack: sink readings %r" % got.get("readings"))
    check(got.get("connections") == 3, "tcp-noack: sink connections %r" % got.get("connections"))


def closed_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_usage_and_failure():
    bad = [
        ["--target", "tcp://127.0.0.1:9", "--batch", "70000"],
        ["--target", "udp://127.0.0.1:9", "--batch", "5456"],
        ["--target", "http://127.0.0.1:9"],
        ["--target", "tcp://127.0.0.1"],
        ["--target", "tcp://127.0.0.1:70000"],
        ["--batch", "10"],
        ["--target", "tcp://127.0.0.1:9", "--pattern", "square"],
        ["--target", "tcp://127.0.0.1:9", "--nan-rate", "1.5"],
        ["--target", "tcp://127.0.0.1:9", "--start-time-us", "yesterday"],
        ["--target", "tcp://127.0.0.1:9", "--no-such-flag"],
    ]
    for args in bad:
        rc, _, out, err = run_load(args, timeout=10)
        check(rc == 2, "usage %s: exit %d, want 2" % (" ".join(args), rc))
        check(out == "", "usage %s: stdout must stay empty, got %r" % (" ".join(args), out))
        check(err.strip() != "", "usage %s: a message on stderr" % " ".join(args))
    rc, _, out, _ = run_load(["--help"], timeout=10)
    check(rc == 0 and "--target" in out, "--help exits 0 and documents --target")
    refused = "tcp://127.0.0.1:%d" % closed_port()
    rc, rep, _, err = run_load(["--target", refused, "--quiet"], timeout=20)
    check(rc == 1, "connection refused: exit %d, want 1" % rc)
    check(rep is not None and rep.get("sent_readings") == 0, "connection refused: report printed")


def main():
    for path in (LOAD, SINK):
        if not os.access(path, os.X_OK):
            print("test_load_sink: %s not built (set SLUICE_BUILD_DIR)" % path, file=sys.stderr)
            return 1
    try:
        tests = (test_udp, test_udp_plain_streams, test_tcp_acked, test_tcp_streams_unacked,
                 test_usage_and_failure)
        for test in tests:
            try:
                test()
            except Exception as exc:  # report and go on with the next test
                check(False, "%s raised %r" % (test.__name__, exc))
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    status = "FAILED (%d of %d checks)" % (len(failures), checks) if failures else "ok"
    print("test_load_sink: %d checks, %s" % (checks, status))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
