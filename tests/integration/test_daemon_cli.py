"""sluiced's command line, start-up failures and signals.

Proves: --help, --version and --print-memory-plan print and exit 0; bad
flags and unusable addresses print a clear message and exit 2 without
starting (no half-started daemon); a config file sets options and flags
win over it; the data directory is created; SIGTERM and SIGINT, under
acked TCP load, stop the daemon with exit 0 within 2 s.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import LOAD, SLUICED, Checks, Daemon

c = Checks("test_daemon_cli")


def run(*args, timeout=30):
    p = subprocess.run([SLUICED] + list(args), capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


rc, out, _ = run("--help")
c.check(rc == 0 and "--max-sensors" in out and "--ring-readings" in out and "--windows" in out, "--help")
rc, out, _ = run("--version")
c.check(rc == 0 and out.startswith("sluiced "), "--version")
rc, out, _ = run("--print-memory-plan", "--max-sensors", "1000", "--ring-readings", "1024")
c.eq(rc, 0, "--print-memory-plan exits 0")
for part in ("ring_slots", "sensor_records", "sensor_index", "tcp_buffers", "total"):
    c.check(part in out, "memory plan names %s" % part)
c.check("8256000 bytes" in out, "ring_slots is 1000 x (1024 + 8 padding) x 8 bytes")
# The apply thread's areas are planned only when it is on (the default): two log buffers.
c.check("apply_area" in out and "67108864 bytes" in out, "apply_area is 2 x the 32 MiB log buffer")
rc, out, _ = run("--print-memory-plan", "--max-sensors", "1000", "--ring-readings", "1024",
                 "--apply-thread", "off")
c.check(rc == 0 and "apply_area" not in out and "apply_jobs" in out,
        "--apply-thread off plans no apply area")

tmp = tempfile.mkdtemp(prefix="sluice-cli-")
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
bad = [
    (["--bogus"], "unknown option"),
    (["--max-sensors"], "needs a value"),
    (["--max-sensors", "0"], "max-sensors"),
    (["--max-sensors", "99999999999"], "max-sensors"),
    (["--ring-readings", "12x"], "ring-readings"),
    (["--windows", "10s,5s"], "ascending"),
    (["--windows", "fast"], "windows"),
    (["--udp", "127.0.0.1"], "HOST:PORT"),
    (["--tcp", "127.0.0.1:70000"], "HOST:PORT"),
    (["--http", "no.such.host.invalid:1"], "http"),
    (["--config", os.path.join(tmp, "missing.conf")], "missing.conf"),
    (["stray"], "unexpected argument"),
    (["--apply-thread", "maybe"], "not on or off"),
    (["--sync", "sometimes"], "always, batch or never"),
]
for args, words in bad:
    rc, out, err = run("--data-dir", os.path.join(tmp, "d"), *args)
    c.check(rc == 2 and words in err, "%s exits 2 saying %r (got %d, %r)" % (args, words, rc, err.strip()))

# An address in use: exit 2 with the address in the message, nothing left running.
busy = socket.socket()
busy.bind(("127.0.0.1", 0))
busy.listen()
port = busy.getsockname()[1]
rc, out, err = run("--tcp", "127.0.0.1:%d" % port, "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                   "--max-sensors", "64", "--ring-readings", "16", "--data-dir", os.path.join(tmp, "d"))
c.check(rc == 2 and ("%d" % port) in err and "in use" in err, "TCP address in use: exit 2 (%r)" % err)
rc, out, err = run("--http", "127.0.0.1:%d" % port, "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                   "--max-sensors", "64", "--ring-readings", "16", "--data-dir", os.path.join(tmp, "d"))
c.check(rc == 2 and "in use" in err, "HTTP address in use: exit 2 (%r)" % err)
busy.close()

# A config file; a flag wins over it.
conf = os.path.join(tmp, "sluice.conf")
with open(conf, "w") as f:
    f.write("# test\nmax-sensors = 77\nring-readings = 32\nwindows = 5s, 1m\n")
rc, out, _ = run("--config", conf, "--print-memory-plan")
c.check(rc == 0 and "77 sensors x 32 readings" in out, "config file read (%r)" % out[:80])
rc, out, _ = run("--config", conf, "--ring-readings", "64", "--print-memory-plan")
c.check(rc == 0 and "77 sensors x 64 readings" in out, "flags win over the config file")
with open(conf, "w") as f:
    f.write("max-sensors = lots\n")
rc, _, err = run("--config", conf)
c.check(rc == 2 and "sluice.conf:1" in err, "a bad config line is named (%r)" % err)

# The data directory is created, nested.
d = Daemon(data_dir=os.path.join(tmp, "nested", "data"))
c.check(os.path.isdir(os.path.join(tmp, "nested", "data")), "data directory created")
c.check("memory_planned_bytes=" in d.start_line, "the start line states the plan")
status, body = d.json("/api/v1/sensors")
c.eq((status, body["total"]), (200, 0), "a fresh daemon answers")
rc, secs = d.stop(signal.SIGINT)
c.check(rc == 0 and secs < 2.0, "SIGINT: exit 0 within 2 s (rc %r, %.2f s)" % (rc, secs))

# SIGTERM under pipelined, acked TCP load.
d = Daemon(sensors=20000, ring=64)
load = subprocess.Popen([LOAD, "--target", "tcp://127.0.0.1:%d" % d.tcp_port, "--streams", "4",
                         "--sensors", "10000", "--batch", "100", "--duration", "10", "--quiet"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
d.wait_metric("sluice_readings_accepted_total", 100000)
rc, secs = d.stop(signal.SIGTERM)
c.check(rc == 0 and secs < 2.0, "SIGTERM under load: exit 0 within 2 s (rc %r, %.2f s)" % (rc, secs))
try:
    load.wait(timeout=15)
except subprocess.TimeoutExpired:
    load.kill()
    c.check(False, "the load generator noticed the daemon leave")
c.finish()
