"""sluiced's command line, start-up failures and signals.

Proves: --help, --version and --print-memory-plan print and exit 0; bad
flags and unusable addresses print a clear message and exit 2 without
starting (no half-started daemon): a duration without its unit, a list
with an empty element, a flag given twice, a config file that is a
directory, /dev/zero or a FIFO (refused at once, never read forever), one
with a NUL byte, an over-long line or a key set twice (named FILE:LINE);
a busy UDP, TCP or HTTP port is exit 2 naming the address before the data
directory is created; a memory plan larger than MemAvailable is exit 2
saying how to size it, unless --allow-overcommit; a config file sets
options and flags win over it; the data directory is created; without
mlock and with the UDP buffer capped (capabilities dropped) there is one
warning line each and /metrics says so; SIGTERM and SIGINT, under acked
TCP load, stop the daemon with exit 0 within 2 s.
"""
import atexit
import json
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
    try:
        p = subprocess.run([SLUICED] + list(args), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", "timed out after %d s" % timeout
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
    (["--windows", "10s,"], "--windows: '10s,' has an empty element"),
    (["--windows", "10"], "--windows: '10' needs a unit: ms, s, m, h or d"),
    (["--tcp-idle-timeout", "5"], "--tcp-idle-timeout: '5' needs a unit: ms, s, m, h or d"),
    (["--http-header-timeout", "2h"], "--http-header-timeout: '2h' is not a duration from 100ms to 1h"),
    (["--max-sensors", "64", "--max-sensors", "65"], "--max-sensors given twice"),
    (["--max-tcp-connections", "16", "--max-tcp-connections-per-ip", "17"],
     "--max-tcp-connections-per-ip: 17 is more than --max-tcp-connections (16)"),
    (["--http-threads", "65"], "--http-threads"),
    (["--log-format", "xml"], "--log-format: 'xml' is not text or json"),
    (["--log-level", "loud"], "--log-level: 'loud' is not error, warn, info or debug"),
]
# Ephemeral ports (never the defaults), in case a bad flag were taken and the daemon started.
ephemeral = ["--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"]
for args, words in bad:
    first = [] if args[0] in ("--udp", "--tcp", "--http") else ephemeral
    rc, out, err = run("--data-dir", os.path.join(tmp, "d"), *(first + args), timeout=10)
    c.check(rc == 2 and words in err, "%s exits 2 saying %r (got %r, %r)" % (args, words, rc, err.strip()))

# The doubled message of old ("--tcp: --tcp: 0.1' is not HOST:PORT"): one clean line.
rc, _, err = run("--tcp", "127.0.0.1", "--data-dir", os.path.join(tmp, "d"), timeout=10)
c.eq((rc, err), (2, "sluiced: --tcp: '127.0.0.1' is not HOST:PORT\n"), "--tcp without a port")

# Config files that are not text files, or break the rules: exit 2 at once, naming the file (and line).
fifo = os.path.join(tmp, "fifo.conf")
os.mkfifo(fifo)


def write(name, data):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


bad_files = [
    (tmp, "%s: a directory, not a regular file" % tmp),
    ("/dev/zero", "/dev/zero: a character device, not a regular file"),
    (fifo, "fifo.conf: a FIFO, not a regular file"),
    (write("nul.conf", b"max-sensors = 64\nring-readings = 16\0# hidden\n"), "nul.conf:2: a NUL byte"),
    (write("long.conf", b"max-sensors = 64" + b" " * 1008 + b"ring-readings = 16\n"),
     "long.conf:1: line longer than 1024 bytes"),
    (write("dup.conf", b"max-sensors = 64\n\nmax-sensors = 65\n"),
     "dup.conf:3: 'max-sensors' set again (first on line 1)"),
    (write("unit.conf", b"ring-readings = 16\nwindows = 10s, 60\n"), "unit.conf:2: --windows: '60' needs a unit"),
    (write("huge.conf", b"#" * (1 << 20) + b"\n"), "larger than the 1 MiB"),
]
for path, words in bad_files:
    rc, out, err = run("--config", path, "--data-dir", os.path.join(tmp, "d"), *ephemeral, timeout=10)
    c.check(rc == 2 and words in err, "--config %s: exit 2 saying %r (got %r, %r)" % (
        os.path.basename(path), words, rc, err.strip()[:200]))

# A busy port (UDP, TCP or HTTP, held by a plain socket): exit 2 naming it, before the data
# directory is created or the plan mapped.
small = ["--max-sensors", "64", "--ring-readings", "16"]
for what, kind in (("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM), ("http", socket.SOCK_STREAM)):
    busy = socket.socket(socket.AF_INET, kind)
    busy.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        busy.listen()
    port = busy.getsockname()[1]
    addrs = {"udp": "127.0.0.1:0", "tcp": "127.0.0.1:0", "http": "127.0.0.1:0"}
    addrs[what] = "127.0.0.1:%d" % port
    data = os.path.join(tmp, "busy-%s" % what)
    rc, out, err = run("--udp", addrs["udp"], "--tcp", addrs["tcp"], "--http", addrs["http"], "--data-dir", data,
                       *small)
    want = "%s 127.0.0.1:%d: Address already in use" % (what, port)
    c.check(rc == 2 and want in err, "%s port in use: exit 2 saying %r (got %r, %r)" % (what, want, rc, err))
    c.check(not os.path.exists(data), "%s port in use: the data directory was not created" % what)
    c.check("recovered" not in out, "%s port in use: no recovery ran" % what)
    if what == "http":  # after the configuration is read, errors follow --log-format
        rc, out, err = run("--udp", addrs["udp"], "--tcp", addrs["tcp"], "--http", addrs["http"], "--data-dir",
                           data, "--log-format", "json", *small)
        try:
            obj = json.loads(err.strip().splitlines()[-1])
        except (ValueError, IndexError):
            obj = {}
        c.check(rc == 2 and obj.get("level") == "error" and obj.get("msg") == want,
                "--log-format json: the start-up error is a JSON event line (%r)" % err)
    busy.close()

# A plan the machine cannot hold (2 PiB, within every flag's maximum): exit 2 saying how to size
# it, before anything is created; --print-memory-plan still prints it; --allow-overcommit skips
# the check (and then the mapping itself fails: more than the address space, so nothing is used).
huge = ["--max-sensors", "16777216", "--ring-readings", "16777216", "--udp", "127.0.0.1:0", "--tcp",
        "127.0.0.1:0", "--http", "127.0.0.1:0"]
data = os.path.join(tmp, "huge")
rc, out, err = run("--data-dir", data, *huge)
c.check(rc == 2 and "does not fit: MemAvailable is" in err and "--max-sensors" in err and "--ring-readings" in err
        and "--allow-overcommit" in err, "a plan larger than MemAvailable: exit 2 saying how to size it (%r)" % err)
c.check(not os.path.exists(data), "a plan that cannot fit: the data directory was not created")
rc, out, err = run("--print-memory-plan", *huge)
c.check(rc == 0 and "does NOT fit" in out, "--print-memory-plan prints a plan that cannot fit (%r)" % out[-300:])
rc, out, _ = run("--print-memory-plan", *small)
c.check(rc == 0 and "the plan fits" in out, "--print-memory-plan says a small plan fits")
rc, out, err = run("--data-dir", data, "--allow-overcommit", *huge)
c.check(rc == 2 and "does not fit: MemAvailable" not in err and "starting anyway (--allow-overcommit)" in err
        and "cannot map the memory plan" in err, "--allow-overcommit skips the check (%r)" % err)

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

# mlock refused and the UDP buffer capped (as root: CAP_IPC_LOCK and CAP_NET_ADMIN dropped with
# setpriv; RLIMIT_MEMLOCK below the plan): one warning line each, and /metrics says so.
plain = Daemon()
m = plain.metrics()
c.eq(m.get("sluice_memory_locked"), 1.0 if ", locked" in plain.start_line else 0.0,
     "sluice_memory_locked agrees with the start line")
c.check(m.get("sluice_udp_receive_buffer_bytes", 0) > 0, "sluice_udp_receive_buffer_bytes is exposed")
plain.stop()
rmem_max = int(open("/proc/sys/net/core/rmem_max").read())
if shutil.which("setpriv") and os.geteuid() == 0:
    caps = "-ipc_lock,-net_admin"
    prefix = ["setpriv", "--inh-caps", caps, "--bounding-set", caps, "prlimit", "--memlock=1048576", "--"]
    want = min(max(64 << 20, 2 * rmem_max), 1 << 30)  # above the cap, within --udp-rcvbuf's maximum
    d = Daemon("--udp-rcvbuf", str(want), prefix=prefix)
    m = d.metrics()
    with open(SLUICED, "rb") as f:
        asan = b"AddressSanitizer" in f.read()  # ASan's mlock does nothing and succeeds
    if asan:
        print("test_daemon_cli: under AddressSanitizer mlock always succeeds: its warning is not tested")
    c.eq(m.get("sluice_memory_locked"), 1.0 if asan else 0.0, "without CAP_IPC_LOCK: sluice_memory_locked 0")
    capped_expected = rmem_max < want
    c.eq(m.get("sluice_udp_receive_buffer_bytes"), float(min(rmem_max, want)),
         "without CAP_NET_ADMIN: the receive buffer is net.core.rmem_max")
    locked = [e for e in d.events if "not locked in RAM" in e]
    capped = [e for e in d.events if "capped by net.core.rmem_max" in e]
    c.check(asan or (len(locked) == 1 and "LimitMEMLOCK" in locked[0] and "CAP_IPC_LOCK" in locked[0]
                     and " warn memory: " in locked[0]), "one warning line: memory not locked (%r)" % d.events)
    c.check(not capped_expected or (len(capped) == 1 and "sysctl -w net.core.rmem_max=%d" % want in capped[0]
                                    and " warn udp: " in capped[0]),
            "one warning line: the UDP buffer capped (%r)" % d.events)
    c.check(asan or ", locked" not in d.start_line, "the start line does not say locked")
    d.stop()
else:
    print("test_daemon_cli: not root or no setpriv: the mlock and rmem_max warnings are not tested")

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
# sluice-load (libsluice) retries a lost gateway; --retry-for 2 makes it give up 2 s after the last progress.
load = subprocess.Popen([LOAD, "--target", "tcp://127.0.0.1:%d" % d.tcp_port, "--streams", "4",
                         "--sensors", "10000", "--batch", "100", "--duration", "10", "--retry-for", "2",
                         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
d.wait_metric("sluice_readings_accepted_total", 100000)
rc, secs = d.stop(signal.SIGTERM)
c.check(rc == 0 and secs < 2.0, "SIGTERM under load: exit 0 within 2 s (rc %r, %.2f s)" % (rc, secs))
try:
    out, err = load.communicate(timeout=60)
    c.check(load.returncode == 1 and b"no progress" in err,
            "the load generator noticed the daemon leave and exited 1 (%r, %r)" % (load.returncode, err[-300:]))
except subprocess.TimeoutExpired:
    load.kill()
    c.check(False, "the load generator noticed the daemon leave")
c.finish()
