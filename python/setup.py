"""Build the sluice package and its C extension sluice._sluice.

The extension is compiled from the repository's own C sources of libsluice
(src/client/client.c, src/proto/codec.c, src/core/crc32c.c; headers in
include/ and src/), so this directory builds from a clean checkout with only
Debian's python3-dev and python3-setuptools (no numpy headers, nothing
downloaded):

    python3 -m pip install --no-build-isolation ./python          # into a venv
    python3 python/setup.py build --build-base "$PWD/build/python-build" --build-lib "$PWD/build/python"
    PYTHONPATH=build/python python3 -c 'import sluice'

The repository root is the parent of this directory, or $SLUICE_SOURCE_DIR.
The script works from this directory whatever the caller's, so give the
build paths as absolute paths (scripts/build.sh and CMake do).
"""
import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.environ.get("SLUICE_SOURCE_DIR") or os.path.join(HERE, ".."))
LIBRARY_SOURCES = ["src/client/client.c", "src/proto/codec.c", "src/core/crc32c.c"]

missing = [s for s in LIBRARY_SOURCES if not os.path.isfile(os.path.join(ROOT, s))]
if missing and not any(a in sys.argv for a in ("--help", "--version", "sdist", "egg_info", "dist_info")):
    sys.exit("setup.py: %s not found under %s: the extension is built from the repository's libsluice "
             "sources (set SLUICE_SOURCE_DIR to the repository root)" % (", ".join(missing), ROOT))

extension = Extension(
    "sluice._sluice",
    # Paths relative to this directory for setuptools; the library's as absolute paths.
    sources=["sluice/_sluice.c"] + [os.path.join(ROOT, s) for s in LIBRARY_SOURCES],
    include_dirs=[os.path.join(ROOT, "include"), os.path.join(ROOT, "src")],
    # Headers: a change rebuilds the extension (setuptools compares times with these too).
    depends=[os.path.join(ROOT, h) for h in ("include/sluice/client.h", "include/sluice/protocol.h",
                                             "src/core/crc32c.h", "src/core/assert.h")],
    define_macros=[("_GNU_SOURCE", None), ("SL_VERSION", '"0.1.0"')],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                        "-fno-strict-aliasing", "-fvisibility=hidden"],
)

os.chdir(HERE)  # setuptools finds the package and relative sources from the current directory
setup(
    name="sluice",
    version="0.1.0",
    description="Send readings to a Sluice telemetry gateway, read them back, and run one",
    packages=["sluice"],
    ext_modules=[extension],
    python_requires=">=3.9",
    extras_require={"numpy": ["numpy"]},
    zip_safe=False,
)
