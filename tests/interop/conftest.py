"""Fixtures that start real third-party SIP software on loopback for interop tests.

Fixtures (see kamailio.py, sipp.py, certs.py for the objects' API):

* ``pki`` (session) -> certs.TestPKI: CA, loopback server cert, client cert (PEM paths).
* ``kamailio`` (session) -> kamailio.Kamailio: ONE registrar/proxy for the whole session (MD5
  digest, users 1001..1020 / pw1001..pw1020, min_expires 5 s). Tests share its location table:
  deskphone tests use 1001..1010 (1011..1020 are test_harness.py's) and un-REGISTER or use a
  user of their own. If a test stopped it, the next test that uses it (directly or through
  another fixture) gets it started again on the same ports.
* ``kamailio_sha256`` (session) -> a second instance that challenges with algorithm=SHA-256.
* ``make_kamailio(**kwargs)`` (session) -> start another instance with other settings
  (e.g. ``request_auth=False``, ``users={...}``, ``max_expires=20``); all are stopped by PID at
  the end of the session.
* ``sipp(scenario, target, **kwargs)`` -> sipp.SippResult, `run_sipp` with a per-test workdir.

Every test under tests/interop is marked ``interop``. A missing kamailio/sipp binary skips the
tests locally and fails them in CI (CI=true). On a failed test, the tail of each Kamailio log the
test used is added to the report.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tool
from tests.interop.baresip import make_baresip  # noqa: F401  (fixture for every interop test)
from tests.interop.certs import TestPKI, make_pki
from tests.interop.kamailio import Kamailio
from tests.interop.phone import PhoneProcess
from tests.interop.sipp import SippResult, run_sipp
from tests.interop.sniff import sniffer  # noqa: F401  (fixture)

_KAMAILIO_FIXTURES = ("kamailio", "kamailio_sha256")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for name in _KAMAILIO_FIXTURES:
        instance = funcargs.get(name)
        if isinstance(instance, Kamailio):
            tail = "\n".join(instance.log_text().splitlines()[-80:])
            report.sections.append((f"{name} log ({instance.log_path})", tail))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def make_kamailio(
    tmp_path_factory: pytest.TempPathFactory, pki: TestPKI
) -> Iterator[Callable[..., Kamailio]]:
    instances: list[Kamailio] = []

    def factory(**kwargs: Any) -> Kamailio:
        binary = require_tool("kamailio")
        instance = Kamailio(tmp_path_factory.mktemp("kamailio"), pki, binary=binary, **kwargs)
        instances.append(instance)
        instance.start()
        return instance

    yield factory
    for instance in instances:
        instance.stop()


@pytest.fixture(scope="session")
def kamailio(make_kamailio: Callable[..., Kamailio]) -> Kamailio:
    return make_kamailio()


@pytest.fixture(autouse=True)
def _revive_kamailio(request: pytest.FixtureRequest) -> None:
    """A test that stopped the shared Kamailio must not break the tests after it."""
    if "kamailio" in request.fixturenames:
        instance = request.getfixturevalue("kamailio")
        if not instance.running:
            instance.start()


@pytest.fixture(scope="session")
def kamailio_sha256(make_kamailio: Callable[..., Kamailio]) -> Kamailio:
    return make_kamailio(algorithm="SHA-256")


@pytest.fixture
def sipp(tmp_path: Path) -> Callable[..., SippResult]:
    binary = require_tool("sipp")
    return functools.partial(run_sipp, workdir=tmp_path, binary=binary)


@pytest.fixture
def phones(tmp_path: Path) -> Iterator[Callable[..., PhoneProcess]]:
    started: list[PhoneProcess] = []

    def make(accounts: list[dict[str, Any]], **kwargs: Any) -> PhoneProcess:
        workdir = tmp_path / f"phone{len(started)}"
        workdir.mkdir()
        phone = PhoneProcess(workdir, accounts, **kwargs)
        started.append(phone)
        return phone.start()

    yield make
    for phone in started:
        # SIGTERM first: the phone un-REGISTERs, so no stale binding outlives the test.
        if phone.proc is not None and phone.proc.poll() is None:
            try:
                phone.terminate(timeout=8)
            except Exception:  # noqa: BLE001 - a stuck phone is killed below
                pass
        phone.kill()
