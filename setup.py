"""Build the optional C accelerator ``wsthread._speedups``; everything else is in setup.cfg.

The extension is optional: without a C compiler (or Python's headers) the
build prints a warning and wsthread installs with its pure-Python masking,
which gives the same results, only slower. Setting WSTHREAD_NO_SPEEDUPS=1 at
install time skips the build altogether; at run time it makes an installed
extension go unused.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

extensions = []
if not os.environ.get("WSTHREAD_NO_SPEEDUPS"):
    extensions.append(
        Extension("wsthread._speedups", sources=["wsthread/_speedups.c"], optional=True)
    )

setup(ext_modules=extensions)
