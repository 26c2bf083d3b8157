"""python/examples stay runnable: the incident's loop and the sluice version ingest the same
feed and print the same rolling average (small --readings; the figures are the README's)."""
import os
import re
import subprocess
import sys

from conftest import SOURCE


def run(name, env):
    p = subprocess.run([sys.executable, os.path.join(SOURCE, "python", "examples", name), "--readings", "120000"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_examples_agree():
    env = dict(os.environ)
    incident, fixed = run("incident.py", env), run("with_sluice.py", env)
    average = re.compile(r"average of sensor 17: ([-0-9.]+) \((\d+) readings\)")
    assert average.search(incident).groups() == average.search(fixed).groups()
    assert "bytes a reading" in incident and "the gateway" in fixed
