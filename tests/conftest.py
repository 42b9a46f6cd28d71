"""Project-wide pytest configuration.

`require_tool(name)` guards tests that need a real peer binary (kamailio, sipp, baresip, ...):
missing locally -> the test is skipped with the apt package to install; missing in CI (the
environment variable CI=true, set by the CI runner) -> the test FAILS, so a CI machine without the
peer can never pass by skipping the interop tests. Use it directly or through the `require_tool`
fixture::

    def test_x(require_tool):
        sipp = require_tool("sipp")          # -> absolute path of the binary
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest
from hypothesis import settings

# In CI, property tests explore a fixed, repeatable set of examples: a red CI run can then be
# reproduced exactly, and a landing never depends on the luck of the draw. Locally they keep
# exploring new random examples each run, which is how they find bugs.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("dev", print_blob=True)

# Debian package that provides each peer binary, for the skip/fail message.
TOOL_PACKAGES = {
    "kamailio": "kamailio kamailio-tls-modules kamailio-presence-modules",
    "kamcmd": "kamailio",
    "sipp": "sip-tester",
    "baresip": "baresip",
    "linphonec": "linphone-cli",
    "nginx": "nginx-light",
    "mcopy": "mtools",
    "mkfs.fat": "dosfstools",
}

MARKERS = {
    "interop": "talks to real third-party software (Kamailio, sipp, baresip)",
    "slow": "takes more than a few seconds",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip locally when this machine lacks something a test needs; in CI that is an error.

    CI must prove the feature, so an environment that cannot run the test fails the run
    rather than letting it pass by skipping.
    """
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this cannot be skipped", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_tool(name: str) -> str:
    """Path of executable `name`; skip the test if missing, fail instead when running in CI."""
    path = shutil.which(name)
    if path is None:
        # Debian puts daemons in sbin, which a non-login PATH may lack.
        for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
            candidate = os.path.join(directory, name)
            if os.access(candidate, os.X_OK):
                path = candidate
                break
    if path is not None:
        return path
    package = TOOL_PACKAGES.get(name, name)
    message = f"{name} is not installed (apt-get install {package})"
    if in_ci():
        pytest.fail(f"{message}; CI=true, so a missing interop peer is an error", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")  # pytest.skip raises


@pytest.fixture(name="require_tool")
def require_tool_fixture() -> Callable[[str], str]:
    return require_tool


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    for name, description in MARKERS.items():
        if name not in registered:
            config.addinivalue_line("markers", f"{name}: {description}")
    settings.load_profile("ci" if in_ci() else "dev")
