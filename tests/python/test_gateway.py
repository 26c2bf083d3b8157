"""sluice.Gateway: keyword arguments become sluiced flags (True a bare flag), the binary is
found in the order CLIENT.md gives, a gateway that exits early raises with its stderr, the
temporary data directory goes at exit (a given one stays), stop() is SIGTERM and a clean exit,
restart() keeps the ports and the data."""
import os
import shutil

import pytest

import sluice
from conftest import readings, stored


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")[:-1]


def test_flags_ports_and_cleanup():
    with sluice.Gateway(max_sensors=1000, ring_readings=64, allow_overcommit=True, log_level="warn",
                        windows=["10s", "1m"], future_skew=None) as g:
        args = [a.decode() for a in cmdline(g.pid)]
        assert args[args.index("--max-sensors") + 1] == "1000"
        assert args[args.index("--ring-readings") + 1] == "64"
        assert args[args.index("--windows") + 1] == "10s,1m"
        assert "--allow-overcommit" in args and args[args.index("--allow-overcommit") + 1].startswith("--")
        assert "--future-skew" not in args
        for url, scheme in ((g.tcp, "tcp"), (g.udp, "udp"), (g.http, "http")):
            assert url.startswith(scheme + "://127.0.0.1:") and int(url.rsplit(":", 1)[1]) > 0
        assert g.metrics()["sluice_sensors_capacity"] == 1000
        data_dir = g.data_dir
        assert os.path.isdir(data_dir)
        pid = g.pid
    assert g.returncode == 0  # SIGTERM: a clean stop
    assert not os.path.exists(data_dir) and not os.path.exists(os.path.dirname(data_dir))
    assert not os.path.exists("/proc/%d/cmdline" % pid) or not cmdline(pid)


def test_given_data_dir_stays_and_restart_keeps_ports(tmp_path):
    data = str(tmp_path / "data")
    with sluice.Gateway(data_dir=data, max_sensors=100, ring_readings=64) as g:
        with g.client(stream_id=501) as c:
            c.send(*readings(500, sensors=5))
            c.flush(timeout=60)
        ports, pid = (g.tcp, g.udp, g.http), g.pid
        assert g.restart() == 0
        assert (g.tcp, g.udp, g.http) == ports and g.pid != pid
        assert stored(g) == 500  # recovered from the data directory
    assert os.path.isdir(data)


def test_early_exit_raises_with_stderr():
    with pytest.raises(sluice.GatewayError) as e:
        sluice.Gateway(max_sensors=0)
    assert e.value.returncode == 2 and "max-sensors" in e.value.stderr and "max-sensors" in str(e.value)
    with pytest.raises(sluice.GatewayError) as e:
        sluice.Gateway(no_such_flag=1)
    assert "no-such-flag" in e.value.stderr
    with pytest.raises(sluice.ArgumentError):
        sluice.Gateway(quiet=True)


def test_binary_lookup_order(monkeypatch, tmp_path):
    real = sluice.find_binary()
    assert os.path.basename(real) == "sluiced"
    # binary= first, even over $SLUICED.
    monkeypatch.setenv("SLUICED", str(tmp_path / "missing"))
    assert sluice.find_binary(real) == real
    with pytest.raises(sluice.GatewayError, match=r"\$SLUICED"):
        sluice.find_binary()
    with pytest.raises(sluice.GatewayError, match="binary="):
        sluice.Gateway(binary=str(tmp_path / "missing"))
    # Then build/sluiced next to the package source (build/python/sluice -> build/sluiced).
    monkeypatch.delenv("SLUICED")
    package = os.path.dirname(os.path.abspath(sluice.__file__))
    beside = [os.path.normpath(os.path.join(package, "..", "..", p)) for p in ("build/sluiced", "sluiced")]
    if any(os.access(b, os.X_OK) for b in beside):
        assert sluice.find_binary() in beside
    # Then PATH: a package copied where no build is near finds sluiced on PATH.
    copy = tmp_path / "site" / "sluice"
    shutil.copytree(package, copy)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(os.path.abspath(real), bindir / "sluiced")
    monkeypatch.setenv("PATH", str(bindir))
    # Run the copy's find_binary (its imports resolve in the real package, its __file__ is the copy's).
    namespace = {"__file__": str(copy / "_gateway.py"), "__name__": "sluice._gateway_copy", "__package__": "sluice"}
    exec(compile((copy / "_gateway.py").read_text(), str(copy / "_gateway.py"), "exec"), namespace)
    assert namespace["find_binary"]() == str(bindir / "sluiced")


def test_stop_is_idempotent_and_kills_a_stuck_gateway():
    g = sluice.Gateway(max_sensors=100, ring_readings=64)
    os.kill(g.pid, 19)  # SIGSTOP: it cannot answer SIGTERM
    assert g.stop(timeout=0.5) == -9  # then SIGKILL
    assert g.stop() == -9
