"""Fixtures and hooks only: a real registry (Debian's docker-registry) on 127.0.0.1, images built by umoci and pushed
by skopeo, a fresh store root per test with the two CLIs run as a user runs them (tests/tools.py), the executor a
test's containers run under, and the checks of a whole session (the network rule, no silent skips, no leaks).
Helpers live in modules of their own: tests/tools.py, tests/scripts.py, tests/marks.py, tests/cgroups.py.

scripts/test runs the suite on pytest-xdist workers (``-n``). Every session fixture is made once per worker, in
the worker's own base temp dir: its registries listen on ports the kernel hands out, its images and probe are its
own. Every test has its own store root, settings file and Docker config; containers, images and networks are
named in that store only, the network tests make throwaway namespaces with random names, and nothing a test
makes is in the machine's own network namespace. So workers share nothing but the machine, and the machine-wide
checks hold beside other workers: a cgroup leak is an empty ``strata-*`` group that stays (a parallel test's
group is never empty for long), a process leak one naming the test's own store root, and the network check
compares the machine's namespace, which no test changes. The no-silent-skips rule sees every worker's reports
(the controller's ``pytest_runtest_logreport``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import images, registries
from tests.cgroups import empty_cgroups, processes_mentioning, strata_cgroups
from tests.faults import FaultProxy
from tests.ocibundle import Oci
from tests.rootless import User, UserTools, reachable, user
from tests.scripts import Registry, image_script, registry_script, start_registry
from tests.tools import BASE_SETTINGS, EXECUTORS, ROOT, Tools, mounts_under, runtime_option, runtime_state_dirs

# -- The network rule (issue 11): no test may add anything to this machine's own network namespace ---------------
# (tests/tools.py's BASE_SETTINGS, which every settings file of the tests starts from, says network none)


def pytest_configure(config: pytest.Config) -> None:
    settings_dir = tempfile.mkdtemp(prefix="strata-test-settings-")
    path = Path(settings_dir) / "config.json"
    path.write_text(json.dumps(BASE_SETTINGS))
    os.environ["STRATA_CONFIG"] = str(path)  # never the machine's /etc/strata/config.json
    if os.geteuid() == 0 and not hasattr(config, "workerinput"):
        _compile_the_checkout()
        _build_the_exec_stage()


def _compile_the_checkout() -> None:
    """The tests run the tools from this checkout (``python -m runner`` in ROOT) a few thousand times. Where
    ``PYTHONDONTWRITEBYTECODE`` is set (this machine's environment sets it) no run leaves its bytecode behind, so
    each would compile every module it imports again: ~0.1 s of CPU a start, minutes of a full run. Compiled once
    here (by the controller, before the workers start), every start reads the .pyc files, which Python checks
    against each source's mtime and size. Only as root: the unit tests run as nobody and write nothing here."""
    import compileall

    for package in ("puller", "runner", "shared"):
        compileall.compile_dir(str(ROOT / package), quiet=1)
    # and what their dataclasses compile at every import (shared/codecache.py), in a process of its own
    subprocess.run([sys.executable, "-c", "from shared.codecache import warm; warm()"], cwd=ROOT, check=True,
                   timeout=300)


def _build_the_exec_stage() -> None:
    """runner exec's stage (runner/executor/stage.c), built as scripts/setup builds it, when it is missing or older
    than its source: a checkout that pulled a change to it (and ran no setup since) tests the change."""
    stage, source = ROOT / "runner" / "executor" / "strata-exec", ROOT / "runner" / "executor" / "stage.c"
    if stage.exists() and stage.stat().st_mtime >= source.stat().st_mtime:
        return
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", f"{stage}.new", str(source)],
                   check=True)
    os.replace(f"{stage}.new", stage)


@pytest.fixture(scope="session", autouse=True)
def machine_network_untouched() -> Iterator[None]:
    """The network rule, checked for the whole session: no bridge or veth of ours in this machine's namespace."""
    yield
    ours = [n for n in os.listdir("/sys/class/net") if n.startswith(("strata", "st-", "stv"))]
    assert ours == [], f"the tests left links of ours in the machine's own network namespace: {ours}"


# -- runner-oci as the suite's fourth executor: where it runs ----------------------------------------------------
# Every executor-parametrized test of the isolation, runtime and runner files runs under runner-oci too; these
# files test the runner's life-cycle verbs around an OCI runtime (stop, commit, logs, the day's verbs), whose
# runner-side code is the same for every runtime and runs under runc and crun: runner-oci is left out of them
# (deselected, and said so in the summary) to keep the suite inside its time budget (scripts/test, 20 min).
RUNNER_OCI_LEAVES_OUT = ("test_lifecycle.py", "test_commit.py", "test_logs.py", "test_ux_runner.py", "test_day_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out = [item for item in items if _executor_of(item) == "runner-oci"
                and item.path.name.startswith(RUNNER_OCI_LEAVES_OUT)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if item not in set(left_out)]


def _executor_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("executor")


# -- No silent skips: a full run in which a test could not run fails, naming each and why ------------------------

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason.removeprefix('Skipped: ')}")


def _asked_for_a_subset(config: pytest.Config) -> bool:
    """-k, -m or test paths given (scripts/test passes its arguments on), or STRATA_ALLOW_SKIPS=1."""
    return bool(config.option.keyword or config.option.markexpr or config.args != config.getini("testpaths")
                or os.environ.get("STRATA_ALLOW_SKIPS"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED and not _asked_for_a_subset(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"no silent skips: {len(_SKIPPED)} test(s) could not run (as root, after "
                                "scripts/setup, none may skip):", red=True)
            for line in _SKIPPED:
                reporter.write_line(f"  {line}", red=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    state = tmp_path_factory.mktemp("registry")
    reg = start_registry(state)
    try:
        yield reg
    finally:
        registry_script.stop(state)


@pytest.fixture(scope="session")
def test_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-layer busybox image of scripts/build-test-image, as an OCI layout (built once per session)."""
    layout = tmp_path_factory.mktemp("image") / "layout"
    image_script.build(layout)
    return layout


@pytest.fixture(scope="session")
def test_image(registry: Registry, test_layout: Path) -> str:
    ref = f"{registry.address}/strata/test:1"
    image_script.push(test_layout, ref)
    return ref


@pytest.fixture(scope="session")
def rich_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three-layer image of ``scripts/build-test-image --rich`` (tag "rich"), as an OCI layout."""
    layout = tmp_path_factory.mktemp("rich-image") / "layout"
    image_script.build_rich(layout)
    return layout


@pytest.fixture(scope="session")
def rich_image(registry: Registry, rich_layout: Path) -> str:
    ref = f"{registry.address}/strata/rich:1"
    image_script.push(rich_layout, ref, tag=image_script.RICH_TAG)
    return ref


@pytest.fixture(scope="session")
def test_image_store(tmp_path_factory: pytest.TempPathFactory, test_image: str) -> Path:
    """A store holding the session test image, pulled once per worker: what :func:`stored_test_image` copies."""
    base = tmp_path_factory.mktemp("test-image-store")
    t = Tools(base / "root", base / "docker-config", base / "strata-config.json")
    t.configure()
    pulled = t.puller("pull", "--quiet", test_image)
    assert pulled.code == 0, pulled.err
    return t.root


@pytest.fixture
def stored_test_image(tools: Tools, test_image_store: Path, test_image: str, request: pytest.FixtureRequest) -> str:
    """The session test image in the test's store, for a test whose subject is not the pull (the pull has tests
    of its own): the worker's pulled store copied in (cp -a), about 30 times cheaper than a pull of its own."""
    tools.take(request.getfixturevalue("rootless_image_store") if tools.rootless else test_image_store)
    return test_image


@pytest.fixture(scope="session")
def rootless_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """One user with subordinate ranges per worker (tests/rootless.py): what a battery's user variant runs as
    (``who``). Its namespace's keeper lives as long as the worker."""
    with user(tmp_path_factory.mktemp("homes"), ranges=True) as made:
        yield made


@pytest.fixture(scope="session")
def rootless_image_store(rootless_user: User, test_image: str) -> Path:
    """A store of that user's holding the session test image, pulled once: what ``stored_test_image`` copies for a
    user variant."""
    store = rootless_user.home / "test-image-store"
    pulled = rootless_user.tool("puller", "--root", str(store), "pull", "--quiet", test_image)
    assert pulled.code == 0, pulled.err
    return store


@pytest.fixture
def who(request: pytest.FixtureRequest) -> str:
    """Who runs the test's tools: "root", or "user", the worker's ``rootless_user`` in a store of its own. A
    battery parametrizes it (tests/marks.py's ``as_root_and_user``) to run its attacks both ways, unchanged."""
    return str(getattr(request, "param", "root"))


@pytest.fixture
def names(tools: Tools) -> Iterator[list[str]]:
    """The names of the containers a test makes (it appends each), removed with ``rm -f`` at its end, however it
    ends: before ``tools`` checks that nothing of them is left."""
    made: list[str] = []
    yield made
    for name in made:
        tools.runner("rm", "-f", name)


@pytest.fixture
def tools(tmp_path: Path, who: str, request: pytest.FixtureRequest) -> Iterator[Tools]:
    root = tmp_path / "root"
    paths = (root, tmp_path / "docker-config", tmp_path / "strata-config.json")
    t = Tools(*paths) if who == "root" else UserTools(*paths, user=request.getfixturevalue("rootless_user"))
    if t.rootless:
        reachable(root)  # the test's dir searchable: its settings file and the store in it are the user's to reach
    t.configure()
    yield t
    # whatever a test did, it must not leave mounts behind, nor (as a user, who has no cgroup to check) processes
    left: list[str] = []
    if isinstance(t, UserTools):
        deadline = time.monotonic() + 10
        while (left := t.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        t.end_leftovers()
    assert mounts_under(root) == []
    assert left == [], f"processes of the user left behind: {left}"


# -- Registries configured as real services are (tests/registries.py) -------------------------------------------



@pytest.fixture(scope="session")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory,
                      test_layout: Path) -> Iterator[registries.HtpasswdRegistry]:  # fmt: skip
    """distribution with htpasswd (Basic) auth; .image (strata/test:1) pushed; .username/.password/.creds."""
    if shutil.which("htpasswd") is None:
        pytest.skip("needs htpasswd (apt-get install apache2-utils)")
    with registries.htpasswd_registry(tmp_path_factory.mktemp("htpasswd-registry"), test_layout) as reg:
        yield reg


@pytest.fixture(scope="session")
def token_registry_session(tmp_path_factory: pytest.TempPathFactory,
                           test_layout: Path) -> Iterator[registries.TokenRegistry]:  # fmt: skip
    """One token-auth registry + token server per session; tests should use ``token_registry``."""
    with registries.token_registry(tmp_path_factory.mktemp("token-registry"), test_layout) as reg:
        yield reg


@pytest.fixture
def token_registry(token_registry_session: registries.TokenRegistry) -> Iterator[registries.TokenRegistry]:
    """Docker Hub-like: distribution with token auth + our issuer (.auth), whose knobs and log are reset around
    each test. .public_image (anonymous pull), .private_image (.owner only), .creds(user)."""
    token_registry_session.auth.reset()
    yield token_registry_session
    token_registry_session.auth.reset()


@pytest.fixture
def proxy_registry(tmp_path: Path, registry: Registry, test_image: str) -> Iterator[registries.ProxyRegistry]:
    """A fresh pull-through cache (empty) of the session ``registry``; .image is test_image through the mirror."""
    with registries.proxy_registry(tmp_path / "proxy-registry", registry.address) as mirror:
        yield mirror


# -- Variants of the test image: zstd / uncompressed layers, Docker v2s2, OCI index, Docker list (tests/images.py)



@pytest.fixture(scope="session")
def variants_layout(tmp_path_factory: pytest.TempPathFactory, test_layout: Path) -> Path:
    """A copy of test_layout plus an arm64/v8 twin and a BuildKit-style attestation, and two OCI indexes:
    tags "test", images.ARM64_TAG, images.INDEX_TAG (amd64, arm64/v8, attestation), images.PAIR_TAG (the two)."""
    layout = tmp_path_factory.mktemp("variants") / "layout"
    images.build_variants_layout(test_layout, layout)
    return layout


def _variant(name: str, registry: Registry, layout: Path) -> images.Variant:
    return images.push_variant(name, layout, registry.address)


@pytest.fixture(scope="session")
def gzip_variant(registry: Registry, variants_layout: Path) -> images.Variant:
    """variants/gzip:1, OCI manifest with gzip layers (the test image as built)."""
    return _variant("gzip", registry, variants_layout)


@pytest.fixture(scope="session")
def zstd_variant(registry: Registry, variants_layout: Path) -> images.Variant:
    """variants/zstd:1, OCI manifest with zstd layers."""
    return _variant("zstd", registry, variants_layout)


@pytest.fixture(scope="session")
def uncompressed_variant(registry: Registry, variants_layout: Path) -> images.Variant:
    """variants/uncompressed:1, OCI manifest with plain tar layers."""
    return _variant("uncompressed", registry, variants_layout)


@pytest.fixture(scope="session")
def v2s2_variant(registry: Registry, variants_layout: Path) -> images.Variant:
    """variants/v2s2:1, Docker schema 2 manifest."""
    return _variant("v2s2", registry, variants_layout)


@pytest.fixture(scope="session")
def index_variant(registry: Registry, variants_layout: Path) -> images.Variant:
    """variants/index:1, OCI index: linux/amd64, linux/arm64/v8, an attestation manifest (.attestation)."""
    return _variant("index", registry, variants_layout)


@pytest.fixture(scope="session")
def list_variant(registry: Registry, variants_layout: Path) -> images.Variant:
    """variants/list:1, Docker manifest list: linux/amd64, linux/arm64/v8."""
    return _variant("list", registry, variants_layout)


# -- A fault-injecting proxy in front of the session registry (tests/faults.py) ---------------------------------



@pytest.fixture
def fault_proxy(registry: Registry) -> Iterator[FaultProxy]:
    """A FaultProxy (and its CDN) in front of the session ``registry``, no rules yet; closed after the test."""
    with FaultProxy(registry.address) as proxy:
        yield proxy


# -- Containers leave nothing behind: cgroups, processes (tests/test_runner.py, tests/test_lifecycle.py) ----------


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/probe.c, the static attack probe, built once for the session (static, so it runs in any image; gcc and
    libc6-dev come from scripts/setup: no skip)."""
    out = tmp_path_factory.mktemp("probe") / "probe"
    reachable(out)  # a user's container binds it too (``who``)
    build = subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(ROOT / "tests" / "probe.c")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return out


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, tools: Tools) -> str:
    """The executor the test's containers run under: ours, or an OCI runtime named by the settings file's
    ``runtime`` key (so every ``runner run``/``create`` of the test uses it, as a user's settings would)."""
    name = str(request.param)
    if name != "strata":
        if shutil.which(runtime_option(name)) is None:
            pytest.skip(f"{name} is not installed")
        tools.configure(runtime=runtime_option(name))
    return name


@pytest.fixture
def no_leaks(tools: Tools) -> Iterator[None]:
    """After the test: no new, empty ``strata-*`` cgroup under this process's own groups (see
    :func:`empty_cgroups`), and no process that names the test's store root. Processes that are still exiting
    get a few seconds."""
    before = strata_cgroups()
    yield
    deadline = time.monotonic() + 10
    while True:
        cgroups, procs = empty_cgroups(strata_cgroups() - before), processes_mentioning(tools.root)
        if not (cgroups or procs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert cgroups == [], f"cgroups left behind: {cgroups}"
    assert procs == [], f"processes left behind: {procs}"
    assert runtime_state_dirs(tools.root) == [], "runtime state left behind"


@pytest.fixture(scope="session")
def oci_rootfs(tmp_path_factory: pytest.TempPathFactory, test_layout: Path) -> Path:
    """The test image's rootfs, unpacked once, that each runner-oci test's bundle copies (tests/ocibundle.py)."""
    from tests.ocibundle import unpack_rootfs

    return unpack_rootfs(test_layout, tmp_path_factory.mktemp("oci-image") / "unpacked")


@pytest.fixture
def oci(tmp_path: Path, oci_rootfs: Path) -> Iterator[Oci]:
    """runner-oci with a fresh --root and bundle, this process the containers' subreaper (as a shim is); after
    the test every container is deleted, and anything that had to be killed or removed by force fails it."""
    from tests.ocibundle import subreaper

    o = Oci(tmp_path, oci_rootfs)
    with subreaper():
        try:
            yield o
        finally:
            leftovers = o.cleanup()
    assert leftovers == [], f"left behind after delete --force: {leftovers}"
