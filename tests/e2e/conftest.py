"""pytest fixtures for the Berth end-to-end suite (see harness.py).

- `host` (module scope): containerd + registry with busybox + coordinator, shared by
  the tests of one module that kill nothing.
- `cluster` (function scope): a fresh cluster name with its own agent (and its own
  containerd namespace) on the module's shared host.
- `private_host` / `private_cluster` (function scope): everything fresh, for tests
  that kill or restart processes.
- `containerd`, `registry`, `coordinator` (function scope) for tests of one part.
- `fleet` (module scope): a multihost.Fleet of 3 simulated hosts (own netns,
  containerd and agent each) sharing one coordinator and registry, for the tests
  of one module that kill nothing; `private_fleet` (function scope) a fresh one:
  3 hosts, or the `multihost.Fleet` keyword arguments of the test's
  `@pytest.mark.fleet(hosts=2, agent_timeout_secs=25)` marker.

On a failing test, the tail of every live process log is attached to the report.
"""

from __future__ import annotations

import pytest

import harness
import multihost


def pytest_configure(config):
    config.addinivalue_line("markers", "fleet(**kwargs): multihost.Fleet arguments of the test's private_fleet")


@pytest.fixture(scope="session", autouse=True)
def _preflight():
    # Fails (never skips) with a clear message if not root or a binary is missing.
    # The Berth binaries are checked when a Coordinator/Agent is built, so tests of
    # the harness itself run before they exist.
    harness.require_root_and_binaries("containerd", "ctr", "runc", "containerd-shim-runc-v2", "docker-registry", "aws")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = harness.Host(tmp_path_factory.mktemp("host"))
    yield h
    h.close()


@pytest.fixture
def cluster(host):
    c = host.cluster()
    yield c
    host.clusters.remove(c)
    c.close()


@pytest.fixture
def private_host(tmp_path):
    h = harness.Host(tmp_path)
    yield h
    h.close()


@pytest.fixture
def private_cluster(private_host):
    return private_host.cluster()


@pytest.fixture
def containerd(tmp_path):
    c = harness.Containerd(tmp_path)
    yield c
    c.stop()


@pytest.fixture
def registry(tmp_path):
    r = harness.Registry(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def coordinator(tmp_path):
    c = harness.Coordinator(tmp_path)
    yield c
    c.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    f = multihost.Fleet(tmp_path_factory.mktemp("fleet"), hosts=3)
    yield f
    f.close()


@pytest.fixture
def private_fleet(request, tmp_path):
    marker = request.node.get_closest_marker("fleet")
    f = multihost.Fleet(tmp_path, **(marker.kwargs if marker else {}))
    yield f
    f.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("setup", "call"):
        for obj in list(harness.ACTIVE):
            for path in obj.log_files():
                report.sections.append((f"log {path}", harness.tail(path, 120)))
