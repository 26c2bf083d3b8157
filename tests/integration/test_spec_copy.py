"""docs/spec is a verbatim copy of the shared contract (../shared/spec beside
the repository, when it is there): the tests and the docs use the copy, so a
change to the contract must show up as a failing test, not as silent drift.
"""
import filecmp
import os

from harness import Checks

c = Checks("test_spec_copy")
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ours = os.path.join(here, "docs", "spec")
shared = os.path.join(here, "..", "shared", "spec")
names = sorted(os.path.relpath(os.path.join(d, f), ours) for d, _, fs in os.walk(ours) for f in fs)
c.check(len(names) >= 7, "docs/spec holds the protocol, the API and the vectors (%d files)" % len(names))
if os.path.isdir(shared):
    theirs = sorted(os.path.relpath(os.path.join(d, f), shared) for d, _, fs in os.walk(shared) for f in fs)
    c.eq(names, theirs, "the same files as ../shared/spec")
    for name in theirs:
        c.check(filecmp.cmp(os.path.join(ours, name), os.path.join(shared, name), shallow=False),
                "docs/spec/%s equals ../shared/spec/%s" % (name, name))
else:
    print("test_spec_copy: no ../shared/spec beside the repository; only the copy was checked")
c.finish()
