"""Signals and event lines: SIGHUP re-reads the config file, logs in text and JSON.

Proves: SIGHUP never kills the daemon (it did: exit 129), with or without
--config, several in a row; it re-reads the file with the flags still
winning (a key the command line sets is said to be overridden, not
changed), applies the live
keys and says so ("KEY changed in FILE: OLD -> NEW, applied"), names each
changed restart-only key ("needs a restart"); the new --log-level takes
effect at once (warn: info lines stop; debug: debug lines appear) and the
new --log-format too (JSON lines after); a broken or missing file is an
error line and the daemon keeps running on the old settings; every event
line is "RFC3339-time level subsystem: message" in text, one JSON object
with time, level, subsystem and msg with --log-format json; SIGTERM after
all this still exits 0.
"""
import atexit
import json
import os
import re
import shutil
import signal
import tempfile

from harness import Checks, Daemon

c = Checks("test_signals")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (error|warn|info|debug) [a-z]+: .+$")


def alive(d):
    if d.proc.poll() is not None:
        print("sluiced exited with %r" % d.proc.returncode)
        return False
    try:
        status, _, _ = d.get("/healthz")
    except OSError:
        return False
    return status == 200


def hup(d, conf, text, wait_for, timeout_s=10.0):
    """Rewrite the config file, send SIGHUP, wait for an event line containing wait_for;
    returns (that line, the event lines since the signal)."""
    with open(conf, "w") as f:
        f.write(text)
    since = len(d.events)
    d.send_signal(signal.SIGHUP)
    line = d.wait_event(wait_for, since=since, timeout_s=timeout_s)
    return line, d.events[since:]


# Without --config: SIGHUP is noted, nothing changes, the daemon lives; ten in a row too.
d = Daemon()
since = len(d.events)
d.send_signal(signal.SIGHUP)
c.check(d.wait_event("no --config file to re-read", since=since) is not None, "SIGHUP without --config: noted")
taken = 0
for _ in range(10):  # one after another (signals sent at once may merge into one)
    since = len(d.events)
    d.send_signal(signal.SIGHUP)
    taken += d.wait_event("no --config file", since=since) is not None
c.eq(taken, 10, "ten SIGHUPs in a row: each taken")
c.check(alive(d), "SIGHUP without --config: still alive")
c.check(all(TEXT_LINE.match(e) for e in d.events), "every text event line has time, level, subsystem (%r)"
        % [e for e in d.events if not TEXT_LINE.match(e)][:3])
c.check(any(" info daemon: sluiced " in e and " listening " in e for e in d.events),
        "the start line is an info event too")
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM after SIGHUPs: exit 0")
c.check(any("stopped on SIGTERM" in e for e in d.events), "the stop line is an info event too")

# With --config.
tmp = tempfile.mkdtemp(prefix="sluice-signals-")
atexit.register(shutil.rmtree, tmp, ignore_errors=True)
tmp_conf = os.path.join(tmp, "sluice.conf")
base = "# the harness gives --max-sensors and --ring-readings as flags\ntcp-idle-timeout = 60s\n"
with open(tmp_conf, "w") as f:
    f.write(base)
d = Daemon("--config", tmp_conf)

# A live key and a restart-only key change; a key the flags set changes in the file too.
line, lines = hup(d, tmp_conf, "tcp-idle-timeout = 30s\nudp-batch = 32\nmax-sensors = 5\n", "re-read, 2 keys changed")
c.check(line is not None, "SIGHUP: the file is re-read (%r)" % lines)
c.check(any(" info config: tcp-idle-timeout changed in %s: 1m -> 30s, applied" % tmp_conf in e for e in lines),
        "a live key: applied (%r)" % lines)
c.check(any(" warn config: udp-batch changed in %s: needs a restart (running with 64, the file says 32)" % tmp_conf
            in e for e in lines), "a restart-only key: needs a restart (%r)" % lines)
c.check(not any("max-sensors changed" in e for e in lines), "a key the command line sets: the flag still wins")
c.check(any(" info config: max-sensors in %s:3 is overridden by --max-sensors on the command line" % tmp_conf
            in e for e in lines), "a key the command line sets: the override is said (%r)" % lines)
c.check(alive(d), "SIGHUP with a changed file: still alive")

# log-level warn: info lines stop at once (the reload's own info lines included), warnings stay.
text = "tcp-idle-timeout = 30s\nudp-batch = 16\ntcp-frame-timeout = 2s\nlog-level = warn\n"
line, lines = hup(d, tmp_conf, text, "udp-batch changed")
c.check(line is not None and " warn config: " in line, "at warn: the restart-only warning is there (%r)" % lines)
# (No wait needed: the info lines would have come before the warning, in table order.)
c.check(not any(" info " in e for e in lines), "at warn: no info line any more (%r)" % lines)

# log-level debug: debug lines appear.
text = text.replace("log-level = warn", "log-level = debug")
line, lines = hup(d, tmp_conf, text, "SIGHUP: re-reading")
c.check(line is not None and " debug config: " in line, "at debug: a debug line appears (%r)" % lines)
c.check(any("log-level changed in %s: warn -> debug, applied" % tmp_conf in e for e in lines),
        "the level change is said (%r)" % lines)

# log-format json: the lines after are one JSON object each.
text += "log-format = json\n"
line, lines = hup(d, tmp_conf, text, "log-format changed")
try:
    obj = json.loads(line or "")
except ValueError:
    obj = {}
c.eq(sorted(obj), ["level", "msg", "subsystem", "time"], "after log-format json: a JSON line (%r)" % line)
c.check(obj.get("subsystem") == "config" and "text -> json, applied" in obj.get("msg", ""),
        "the JSON line says what was applied (%r)" % obj)

# A broken file: an error line, the old settings stay, still alive; a missing file the same.
line, lines = hup(d, tmp_conf, text + "max-streams = lots\n", "keeping the running settings")
c.check(line is not None and "%s:6:" % tmp_conf in line and json.loads(line)["level"] == "error",
        "a broken file on SIGHUP: an error line naming FILE:LINE (%r)" % lines)
c.check(alive(d), "a broken file on SIGHUP: still alive")
os.unlink(tmp_conf)
since = len(d.events)
d.send_signal(signal.SIGHUP)
line = d.wait_event("keeping the running settings", since=since)
c.check(line is not None and "No such file" in line, "a missing file on SIGHUP: an error line (%r)" % line)
c.check(alive(d), "a missing file on SIGHUP: still alive")
# Back to the last good file: nothing changed but the restart-only key still waiting for a restart.
line, lines = hup(d, tmp_conf, text, "re-read, 1 key changed")
c.check(line is not None and len(lines) == 3 and "udp-batch changed" in lines[1],
        "after the broken reloads: the running settings are the last good ones (%r)" % lines)
rc, _ = d.stop()
c.eq(rc, 0, "SIGTERM after all this: exit 0")

# --log-format json from the start: every event line is one JSON object with the four keys.
d = Daemon("--log-format", "json")
d.stop()
objs = []
for e in d.events:
    try:
        objs.append(json.loads(e))
    except ValueError:
        c.check(False, "--log-format json: not JSON: %r" % e)
c.check(len(objs) >= 3 and all(sorted(o) == ["level", "msg", "subsystem", "time"] for o in objs),
        "--log-format json: one object a line with time, level, subsystem, msg (%r)" % d.events[:3])
c.check(all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", o.get("time", "")) for o in objs),
        "--log-format json: RFC 3339 UTC times")
c.finish()
