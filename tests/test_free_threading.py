"""On a free-threaded CPython (3.13t): importing wsthread, C extension included, keeps the GIL off.

CPython turns the GIL back on, with a RuntimeWarning, when it loads an
extension module that does not declare ``Py_mod_gil`` = ``Py_MOD_GIL_NOT_USED``.
``PYTHON_GIL=0`` would hide that (it forces the GIL off whatever modules
say), so each check runs in a child process without it, warnings as errors.
These tests need a free-threaded build (``Py_GIL_DISABLED`` = 1): elsewhere
they are skipped, with that reason. .ci/run runs them on its 3.13t.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import Dict

import pytest

from conftest import run_ok

pytestmark = pytest.mark.skipif(
    sysconfig.get_config_var("Py_GIL_DISABLED") != 1,
    reason="needs a free-threaded CPython build (Py_GIL_DISABLED=1), such as 3.13t",
)

# Imports every module of the package (the command-line faces and the Redis
# hub need nothing more than the standard library to import), then reports.
PROBE = """
import pkgutil, sys
import wsthread
for module in pkgutil.walk_packages(wsthread.__path__, "wsthread."):
    if not module.name.endswith("__main__"):
        __import__(module.name)
from wsthread.sansio import frames
print(sys._is_gil_enabled(), frames.SPEEDUPS, len(sys.modules))
"""


def child_environment(**extra: str) -> Dict[str, str]:
    """This process's environment without PYTHON_GIL or WSTHREAD_NO_SPEEDUPS, plus ``extra``."""
    unset = ("PYTHON_GIL", "PYTHONWARNINGS", "WSTHREAD_NO_SPEEDUPS")
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    environment.update(extra)
    return environment


def test_importing_wsthread_and_its_c_extension_leaves_the_gil_off() -> None:
    """Every wsthread module, ``_speedups`` among them, imports with the GIL staying off."""
    result = run_ok(
        [sys.executable, "-X", "gil=1", "-c", "import sys; print(sys._is_gil_enabled())"],
        timeout=60,
        env=child_environment(),
    )
    assert result.stdout.split() == ["True"], "the probe could not tell the GIL's state"
    result = run_ok(
        [sys.executable, "-W", "error", "-c", PROBE], timeout=60, env=child_environment()
    )
    gil, speedups, _ = result.stdout.split()
    assert gil == "False", result.stderr
    assert speedups == "True", "wsthread._speedups is not built or not used here"
    assert "GIL" not in result.stderr, result.stderr


def test_the_pure_python_masking_also_leaves_the_gil_off() -> None:
    """With WSTHREAD_NO_SPEEDUPS=1 the package imports alike, without its C extension."""
    result = run_ok(
        [sys.executable, "-W", "error", "-c", PROBE],
        timeout=60,
        env=child_environment(WSTHREAD_NO_SPEEDUPS="1"),
    )
    gil, speedups, _ = result.stdout.split()
    assert (gil, speedups) == ("False", "False"), result.stderr
