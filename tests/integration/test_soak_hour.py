#!/usr/bin/env python3
"""The soak's CI version: one simulated hour of the reference day.

Runs `bench/soak --hours 1` (100 streams x 100 sensors at 1 Hz: 36,000,000
readings with 0.1 % NaN and 0.1 % out-of-order ones, over acked TCP into a
fresh sluiced with the durable log on, --sync batch) into a temporary
directory, then asserts from its summary.json and samples.csv:

  - the run completed: sluice-load sent every reading and exited 0, sluiced
    stopped cleanly, bench/soak exited 0;
  - accounting is exact: sent = accepted + rejected by reason, the nonfinite
    and out_of_order rejects equal the NaN and out-of-order readings
    sluice-load injected (and there were some), nothing rejected as future
    or over the sensor limit;
  - RSS is flat: growth after warm-up (the max over the last 90 % of the run
    against the 10 % mark) is at most 1 %;
  - no heap allocation on the ingest thread after start;
  - plot.png is a PNG, and samples.csv has at least one sample a second.

No speed assertion (tests assert behaviour, never timing; the soak checks
speed only for the full 24 h day). The full shape runs under AddressSanitizer
too: the hour takes about 2 s of load here with the GCC build and about 3 s
with the ASan build, so no reduced shape is needed.

Finds the binaries through SLUICE_BUILD_DIR (as harness.py does).
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BUILD, Checks  # noqa: E402

SOURCE = os.environ.get("SLUICE_SOURCE_DIR",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SOAK = os.path.join(SOURCE, "bench", "soak")
HOURS = 1
READINGS = 10000 * 3600 * HOURS
SOAK_TIMEOUT_S = 100  # the whole soak, start-up to plot; it takes a few seconds


def run_soak(out_dir):
    cmd = [sys.executable, SOAK, "--build", BUILD, "--hours", str(HOURS), "--out", out_dir,
           "--quiet", "--timeout", str(SOAK_TIMEOUT_S - 20)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=SOAK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:  # the soak is killed; its children die with it
        out = exc.stdout or ""
        return None, out.decode(errors="replace") if isinstance(out, bytes) else out
    return res.returncode, res.stdout + res.stderr


def load_samples(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_summary(c, s):
    rej = s["readings_rejected"]
    ctx = s["context"]
    c.check(s["bars"]["completed"]["pass"], "run completed: %s" % s["bars"]["completed"]["figure"])
    c.eq(s["readings_sent"], READINGS, "readings sent")
    c.eq(s["readings_accepted"] + sum(rej.values()), s["readings_sent"],
         "accepted + rejected by reason = sent (%r)" % rej)
    c.eq(rej["nonfinite"], ctx["injected_nan"], "nonfinite rejects = injected NaN")
    c.eq(rej["out_of_order"], ctx["injected_ooo"], "out_of_order rejects = injected out-of-order")
    c.check(ctx["injected_nan"] > 0 and ctx["injected_ooo"] > 0,
            "some NaN and out-of-order readings were injected: %r %r"
            % (ctx["injected_nan"], ctx["injected_ooo"]))
    c.eq(rej["future"], 0, "no future rejects")
    c.eq(rej["sensor_limit"], 0, "no sensor_limit rejects")
    c.check(s["bars"]["accounting"]["pass"], "accounting bar: %s" % s["bars"]["accounting"]["figure"])
    growth = s["rss_growth_after_warmup"]
    c.check(growth is not None and growth <= 0.01, "RSS growth after warm-up %r <= 1 %%" % growth)
    c.eq(s["heap_allocations_after_start"], 0, "heap allocations after start")
    # The arena maps the plan but for libmicrohttpd's part, which it mallocs as connections come.
    c.check(s["peak_rss_bytes"] and s["peak_rss_bytes"] >= ctx["memory_mapped_bytes"],
            "peak RSS %r covers the mapped plan %r" % (s["peak_rss_bytes"], ctx["memory_mapped_bytes"]))
    c.check(s["peak_rss_bytes"] <= ctx["memory_planned_bytes"] + (64 << 20),
            "peak RSS %r within the plan %r (+64 MiB for libc and thread stacks)"
            % (s["peak_rss_bytes"], ctx["memory_planned_bytes"]))
    c.check(s["log_bytes_written"] and s["log_bytes_written"] > READINGS * 12,
            "the durable log was written: %r bytes" % s["log_bytes_written"])
    c.eq(s["bars"]["speed"]["checked"], False, "speed is not a bar at %d h" % HOURS)
    c.check(s["pass"], "summary pass")


def check_files(c, out_dir, s):
    png = os.path.join(out_dir, "plot.png")
    with open(png, "rb") as f:
        c.eq(f.read(8), b"\x89PNG\r\n\x1a\n", "plot.png is a PNG")
    c.check(os.path.getsize(png) > 10000, "plot.png has content: %d bytes" % os.path.getsize(png))
    rows = load_samples(os.path.join(out_dir, "samples.csv"))
    walls = [float(r["wall_s"]) for r in rows]
    c.check(len(rows) >= 3, "samples.csv has samples: %d" % len(rows))
    gaps = [b - a for a, b in zip(walls, walls[1:])]
    c.check(gaps and max(gaps) <= 1.0, "at least one sample a second: largest gap %.3f s" % max(gaps or [0]))
    # The last sample is taken after the load ends; wall_seconds is rounded to the millisecond.
    c.check(walls[-1] >= s["wall_seconds"] - 0.001, "samples cover the run: last %.4f s of %.3f s"
            % (walls[-1], s["wall_seconds"]))
    c.check(all(r["rss_bytes"] and r["hwm_bytes"] for r in rows), "every sample has RSS and peak RSS")
    last = rows[-1]
    c.eq(int(last["accepted"]), s["readings_accepted"], "the last sample's accepted count = the summary's")
    c.eq(int(float(last["sim_s"])), 3600 * HOURS, "the last sample reached the simulated hour")


def main():
    c = Checks("test_soak_hour")
    for path in (os.path.join(BUILD, "sluiced"), os.path.join(BUILD, "sluice-load"), SOAK):
        if not os.access(path, os.X_OK):
            print("test_soak_hour: %s is missing (set SLUICE_BUILD_DIR)" % path, file=sys.stderr)
            sys.exit(1)
    tmp = tempfile.mkdtemp(prefix="sluice-soak-test-")
    out_dir = os.path.join(tmp, "out")
    rc, output = run_soak(out_dir)
    c.check(rc == 0, "bench/soak exit status %r" % rc)
    try:
        with open(os.path.join(out_dir, "summary.json")) as f:
            summary = json.load(f)
        check_summary(c, summary)
        check_files(c, out_dir, summary)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        c.check(False, "reading the soak's outputs: %r" % exc)
    if c.failed:
        print(output, file=sys.stderr)
        print("test_soak_hour: outputs kept in %s" % out_dir, file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
