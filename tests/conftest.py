"""Shared fixtures: a real registry (Debian's docker-registry) on 127.0.0.1, images built by umoci and pushed by
skopeo, a fresh store root per test, and the two CLIs run as a user runs them (subprocesses)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests import images, registries
from tests.cgroups import (
    container_cgroup,
    empty_cgroups,
    enter_worker_groups,
    leave_worker_groups,
    own_cgroup_dirs,
    processes_mentioning,
    strata_cgroups,
)
from tests.faults import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/ files have no .py suffix; load them as modules to call their functions directly."""
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(SCRIPTS / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while the class is made
    loader.exec_module(module)
    return module


registry_script = load_script("registry")
image_script = load_script("build-test-image")

# -- The network rule (issue 11): no test may add anything to this machine's own network namespace ---------------
# bridge is the runner's default, so every test's settings say none: the tools fixture's file, and for a runner
# started some other way (a Terminal, a Popen with os.environ) the session's, named by STRATA_CONFIG in our own
# environment. Only tests/test_network.py, which runs the runner inside a throwaway namespace, uses bridge.
BASE_SETTINGS = {"network": "none"}


def pytest_configure(config: pytest.Config) -> None:
    settings_dir = tempfile.mkdtemp(prefix="strata-test-settings-")
    path = Path(settings_dir) / "config.json"
    path.write_text(json.dumps(BASE_SETTINGS))
    os.environ["STRATA_CONFIG"] = str(path)  # never the machine's /etc/strata/config.json
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and os.geteuid() == 0:
        config.stash[_WORKER_GROUPS] = enter_worker_groups(worker)


_WORKER_GROUPS = pytest.StashKey[dict[str, Path]]()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _WORKER_GROUPS in config.stash:
        leave_worker_groups(config.stash[_WORKER_GROUPS])


@pytest.fixture(scope="session", autouse=True)
def machine_network_untouched() -> Iterator[None]:
    """The network rule, checked for the whole session: no bridge or veth of ours in this machine's namespace."""
    yield
    ours = [n for n in os.listdir("/sys/class/net") if n.startswith(("strata", "st-", "stv"))]
    assert ours == [], f"the tests left links of ours in the machine's own network namespace: {ours}"


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


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod 0/0, trusted xattrs, namespaces)")
needs_tools = pytest.mark.skipif(not all(shutil.which(t) for t in ("docker-registry", "umoci", "skopeo")),
                                 reason="needs docker-registry, umoci and skopeo (scripts/test installs them)")


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:PORT
    state_dir: Path

    def blob_file(self, digest: str) -> Path:
        return registries.blob_file(self.state_dir, digest)


def start_registry(state_dir: Path) -> Registry:
    return Registry(registry_script.start(state_dir), state_dir)


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


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Tools:
    """The CLIs against one store root, run as subprocesses exactly as a user would, with a Docker config dir
    and a settings file of the test's own (never the machine's)."""

    root: Path
    docker_config: Path
    settings: Path

    def _run(self, tool: str, args: tuple[str, ...], stdin: str | None = None, timeout: float = 120,
             env_extra: dict[str, str] | None = None) -> Result:
        env = {**os.environ, "DOCKER_CONFIG": str(self.docker_config), "STRATA_CONFIG": str(self.settings),
               **(env_extra or {})}
        proc = subprocess.run([sys.executable, "-m", tool, "--root", str(self.root), *args], input=stdin,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def puller(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
        return self._run("puller", args, stdin, env_extra=env)

    def runner(self, *args: str, stdin: str | None = None) -> Result:
        return self._run("runner", args, stdin)

    def configure(self, **keys: object) -> None:
        """Write the test's settings file: these keys over the tests' base, ``"network": "none"``."""
        self.settings.write_text(json.dumps({**BASE_SETTINGS, **keys}))


def one_line_error(result: Result, code: int, text: str, tool: str = "runner") -> None:
    """The error convention: this exit code, one line on stderr naming the cause."""
    assert result.code == code, (result.out, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith(f"{tool}: error: "), result.err
    assert text in result.err, result.err


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]




@pytest.fixture
def tools(tmp_path: Path) -> Iterator[Tools]:
    root = tmp_path / "root"
    t = Tools(root, tmp_path / "docker-config", tmp_path / "strata-config.json")
    t.configure()
    yield t
    # whatever a test did, it must not leave mounts behind
    assert mounts_under(root) == []


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
    build = subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(ROOT / "tests" / "probe.c")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return out


EXECUTORS = ("strata", "runc", "crun")


def runtime_state_dirs(root: Path) -> list[Path]:
    """What a runtime keeps for each container it knows (the runner's --root STATE/ID under the store)."""
    base = root / "runtime"
    return sorted(d for state in (base.iterdir() if base.is_dir() else ()) for d in state.iterdir())


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest, tools: Tools) -> str:
    """The executor the test's containers run under: ours, or an OCI runtime named by the settings file's
    ``runtime`` key (so every ``runner run``/``create`` of the test uses it, as a user's settings would)."""
    name = str(request.param)
    if name != "strata":
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed")
        tools.configure(runtime=name)
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


def runner_command(tools: Tools, *args: str) -> list[str]:
    """``runner --root ROOT ARGS`` as Tools.runner runs it, for a test that needs the process (Popen)."""
    return [sys.executable, "-m", "runner", "--root", str(tools.root), *args]


def popen_runner(tools: Tools, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Start ``runner ARGS`` in the background, its stdout and stderr piped (text)."""
    env = {**os.environ, "DOCKER_CONFIG": str(tools.docker_config), "STRATA_CONFIG": str(tools.settings)}
    return subprocess.Popen(runner_command(tools, *args), stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll CHECK until it holds; fail with WHAT if it never does (a bound against hanging, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


@contextmanager
def detached(tools: Tools, *args: str) -> Iterator[str]:
    """``runner run -d ARGS``; yields the container's full ID; ``runner rm -f`` afterwards, whatever happened."""
    result = tools.runner("run", "-d", *args)
    assert result.code == 0, result.err
    cid = result.out.strip()
    try:
        yield cid
    finally:
        tools.runner("rm", "-f", cid)  # fails harmlessly if the test removed it already
