"""`cmake --install` puts libsluice where an outside program finds it.

Installs the build into a temporary prefix; checks the header, both
libraries and sluice.pc are there and that the shared library exports only
the public API; then builds examples/device_sender.c the way a user outside
this tree would (pkg-config, the shared library, then the static one), runs
both against a real sluiced and checks every reading was stored.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time

from harness import BUILD, Checks, Daemon, wait_until

SOURCE = os.environ.get("SLUICE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
c = Checks("test_install")


def cache(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"%s:[A-Z]+=(.*)" % re.escape(name), line.strip())
            if m:
                return m.group(1)
    return ""


prefix = tempfile.mkdtemp(prefix="sluice-install-")
try:
    p = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], capture_output=True, text=True,
                       timeout=120)
    c.eq(p.returncode, 0, "cmake --install (%s)" % p.stderr.strip()[-300:])
    libdir = os.path.join(prefix, cache("CMAKE_INSTALL_LIBDIR") or "lib")
    for rel in ("include/sluice/client.h", "include/sluice/protocol.h"):
        c.check(os.path.isfile(os.path.join(prefix, rel)), "installed %s" % rel)
    for name in ("libsluice.a", "libsluice.so", "libsluice.so.1", "pkgconfig/sluice.pc"):
        c.check(os.path.exists(os.path.join(libdir, name)), "installed %s" % name)

    exported = subprocess.run(["nm", "-D", "--defined-only", os.path.join(libdir, "libsluice.so")],
                              capture_output=True, text=True).stdout.split("\n")
    names = [line.split()[-1].split("@")[0] for line in exported if " T " in line]
    c.check("sl_client_open" in names and "sl_ack_decode" in names, "the API is exported")
    c.eq([n for n in names if not (n.startswith("sl_client_") or n.startswith("sl_batch_") or
                                   n.startswith("sl_ack_") or n.endswith("_name") or n == "sl_decode_status")],
         [], "nothing else is exported (no internal symbol such as sl_crc32c)")

    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "sluice"], capture_output=True, text=True,
                           env=env)
    c.eq(flags.returncode, 0, "pkg-config finds sluice (%s)" % flags.stderr.strip())
    cc = cache("CMAKE_C_COMPILER") or "cc"
    extra = ["-fsanitize=address,undefined"] if cache("SL_SANITIZE") == "ON" else []
    extra += ["-fsanitize=thread"] if cache("SL_TSAN") == "ON" else []
    out_dir = os.path.join(prefix, "app")
    os.makedirs(out_dir)
    shared = os.path.join(out_dir, "device_sender_shared")
    static = os.path.join(out_dir, "device_sender_static")
    src = os.path.join(SOURCE, "examples", "device_sender.c")
    p = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", src, "-o", shared] + extra +
                       flags.stdout.split(), capture_output=True, text=True)
    c.eq(p.returncode, 0, "built against the shared library (%s)" % p.stderr.strip()[-400:])
    p = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", src, "-o", static, "-I",
                        os.path.join(prefix, "include"), os.path.join(libdir, "libsluice.a")] + extra,
                       capture_output=True, text=True)
    c.eq(p.returncode, 0, "built against the static library (%s)" % p.stderr.strip()[-400:])

    d = Daemon(sensors=64, ring=4096)
    now_us = int(time.time() * 1e6) - 60 * 1000000
    lines = "".join("%d,%d,%.1f\n" % (i % 4 + 1, now_us + i, i * 0.5) for i in range(1000))
    run_env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    for stream, binary in ((21, shared), (22, static)):
        if not os.path.exists(binary):
            continue
        p = subprocess.run([binary, "tcp://127.0.0.1:%d" % d.tcp_port, str(stream)], input=lines,
                           capture_output=True, text=True, timeout=60, env=run_env)
        c.eq(p.returncode, 0, "%s ran (%s)" % (os.path.basename(binary), p.stderr.strip()))
        c.check("readings 1000 accepted " in p.stdout, "%s: %s" % (os.path.basename(binary), p.stdout.strip()))
        if binary == shared:
            ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, env=run_env).stdout
            c.check(libdir in ldd, "the shared build loads the installed libsluice.so")
        now_us += 10000  # the second run's readings are newer than the first's
        lines = "".join("%d,%d,%.1f\n" % (i % 4 + 1, now_us + i, i * 0.5) for i in range(1000))
    c.check(wait_until(lambda: d.metrics().get("sluice_readings_accepted_total") == 2000.0, 10),
            "the gateway stored both runs' readings")
    d.stop()
finally:
    shutil.rmtree(prefix, ignore_errors=True)
c.finish()
