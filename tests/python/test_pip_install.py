"""The package installs the way a user installs it: `python3 -m pip install
--no-build-isolation ./python` into a virtual environment (--system-site-packages, for
Debian's setuptools and numpy), from a copy of the source tree (python/, src/, include/: what
setup.py builds from), with no network; the installed package imports from the venv and sends
to a gateway."""
import os
import shutil
import subprocess
import sys

import pytest

SOURCE = os.environ.get("SLUICE_SOURCE_DIR",
                        os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")))


def test_pip_install_into_a_venv(tmp_path):
    tree = tmp_path / "src"
    for part in ("python", "src", "include"):
        shutil.copytree(os.path.join(SOURCE, part), tree / part,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.so"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    p = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", str(tree / "python")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    sluiced = os.path.abspath(os.environ.get("SLUICED") or os.path.join(SOURCE, "build", "sluiced"))
    if not os.access(sluiced, os.X_OK):
        pytest.fail("no sluiced at %s (set SLUICED)" % sluiced)
    script = (
        "import sluice, numpy as np, sys\n"
        "assert sluice.__file__.startswith(sys.prefix), sluice.__file__\n"
        "with sluice.Gateway(max_sensors=100, ring_readings=64) as g:\n"
        "    with g.client(stream_id=7) as c:\n"
        "        c.send(np.arange(10, dtype=np.uint32), np.ones(10, dtype=np.float32))\n"
        "        r = c.flush(timeout=60)\n"
        "    print(r['accepted'], sluice.__file__)\n")
    env["SLUICED"] = sluiced
    p = subprocess.run([py, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[0] == "10" and str(venv) in p.stdout
