"""Registries configured the way real services are, each on 127.0.0.1 and stopped on exit (also on failure).

* :func:`htpasswd_registry`: distribution with ``auth: htpasswd`` (Basic auth over plain HTTP), image pushed.
* :func:`token_registry`: distribution with ``auth: token`` and our token issuer (tests/authserver.py) in front,
  the way registry-1.docker.io and auth.docker.io work together; a public and a private repository.
* :func:`proxy_registry`: distribution with ``proxy: remoteurl``, a pull-through cache (mirror) of another
  registry; it serves the upstream's repository names unchanged (no ``library/`` prefix) and refuses pushes.

tests/conftest.py wraps them in fixtures (``htpasswd_registry``, ``token_registry``, ``proxy_registry``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from tests.authserver import TokenServer

ROOT = Path(__file__).resolve().parent.parent
LAYOUT_TAG = "test"  # the tag scripts/build-test-image gives its image inside the layout
SERVICE = "strata-test-registry"
ISSUER = "strata-test-issuer"


def _load_registry_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("strata_registry_script", str(ROOT / "scripts" / "registry"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


registry_script = _load_registry_script()


def blob_file(state_dir: Path, digest: str) -> Path:
    """Where distribution's filesystem driver keeps a blob (what a test damages, or checks was cached)."""
    hex_ = digest.split(":", 1)[1]
    return state_dir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2] / hex_ / "data"


class PushError(RuntimeError):
    """skopeo could not push the test image."""


def push_with_creds(layout: Path, dest: str, creds: str | None, tag: str = LAYOUT_TAG) -> None:
    """skopeo copy oci:LAYOUT:TAG docker://DEST, plain HTTP, with --dest-creds CREDS ("user:password")."""
    cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
    if creds is not None:
        cmd += ["--dest-creds", creds]
    proc = subprocess.run([*cmd, f"oci:{layout}:{tag}", f"docker://{dest}"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, check=False, timeout=120)  # fmt: skip
    if proc.returncode != 0:
        raise PushError(f"skopeo copy to {dest} failed ({proc.returncode}):\n{proc.stderr.strip()}")


@contextmanager
def _running_registry(state_dir: Path, **options: object) -> Iterator[str]:
    """scripts/registry start(STATE_DIR, **OPTIONS); stopped when the block ends, however it ends."""
    try:
        yield registry_script.start(state_dir, **options)
    finally:
        registry_script.stop(state_dir)


# -- htpasswd ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HtpasswdRegistry:
    """distribution with ``auth: htpasswd``: every request needs Basic auth (challenge ``Basic realm=...``)."""

    address: str  # 127.0.0.1:PORT
    state_dir: Path
    username: str
    password: str
    repository: str = "strata/test"
    tag: str = "1"

    @property
    def image(self) -> str:
        """ADDRESS/strata/test:1, pushed."""
        return f"{self.address}/{self.repository}:{self.tag}"

    @property
    def creds(self) -> tuple[str, str]:
        """(username, password), e.g. for requests' auth=."""
        return self.username, self.password

    @property
    def log(self) -> Path:
        return self.state_dir / "registry.log"


@contextmanager
def htpasswd_registry(state_dir: Path, layout: Path, *, username: str = "strata",
                      password: str = "strata-secret") -> Iterator[HtpasswdRegistry]:  # fmt: skip
    """A registry with one bcrypt htpasswd user and the test image from LAYOUT pushed as strata/test:1."""
    state_dir.mkdir(parents=True, exist_ok=True)
    htpasswd = state_dir / "htpasswd"
    proc = subprocess.run(["htpasswd", "-B", "-b", "-n", username, password], capture_output=True, text=True,
                          check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    htpasswd.write_text(proc.stdout.strip() + "\n")  # -n output ends with a blank line
    with _running_registry(state_dir, htpasswd=htpasswd) as address:
        reg = HtpasswdRegistry(address, state_dir, username, password)
        push_with_creds(layout, reg.image, f"{username}:{password}")
        yield reg


# -- token auth -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRegistry:
    """distribution with ``auth: token`` whose tokens come from ``auth`` (a TokenServer), as Docker Hub.

    Challenge on /v2/: ``Bearer realm="http://127.0.0.1:P/token",service="strata-test-registry"``; on a
    repository request it adds ``,scope="repository:NAME:pull"`` (``pull,push`` for uploads), and with a token
    lacking the scope also ``,error="insufficient_scope"``.
    """

    address: str  # 127.0.0.1:PORT of the registry
    state_dir: Path
    auth: TokenServer  # the issuer: knobs, request log (see tests/authserver.py)
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    owner: str = "alice"  # pull,push on strata/* (pushed both images)
    other_user: str = "bob"  # a valid account without repositories of its own: pull on public ones only
    public_repository: str = "strata/public"  # anonymous pull
    private_repository: str = "strata/private"  # owner only
    tag: str = "1"

    @property
    def realm(self) -> str:
        return self.auth.realm

    @property
    def service(self) -> str:
        return self.auth.service

    @property
    def public_image(self) -> str:
        return f"{self.address}/{self.public_repository}:{self.tag}"

    @property
    def private_image(self) -> str:
        return f"{self.address}/{self.private_repository}:{self.tag}"

    def password(self, user: str) -> str:
        return self.users[user]

    def creds(self, user: str) -> tuple[str, str]:
        return user, self.users[user]

    @property
    def log(self) -> Path:
        return self.state_dir / "registry.log"


@contextmanager
def token_registry(state_dir: Path, layout: Path) -> Iterator[TokenRegistry]:
    """Token server + registry, the test image pushed (by the owner) to strata/public:1 and strata/private:1.

    The token server's log and knobs are reset after the pushes, so a test starts from an empty log."""
    users = {"alice": "alice-secret", "bob": "bob-secret"}
    with ExitStack() as stack:
        auth = stack.enter_context(TokenServer(state_dir / "certs", service=SERVICE, issuer=ISSUER, users=users,
                                               owned={"alice": ["strata/*"]}, public=["strata/public"]))  # fmt: skip
        token = registry_script.TokenAuth(auth.realm, SERVICE, ISSUER, auth.cert_bundle)
        address = stack.enter_context(_running_registry(state_dir / "registry", token=token, log_level="info"))
        reg = TokenRegistry(address, state_dir / "registry", auth, users)
        for image in (reg.public_image, reg.private_image):
            push_with_creds(layout, image, f"{reg.owner}:{users[reg.owner]}")
        auth.reset()
        yield reg


# -- pull-through cache -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyRegistry:
    """distribution with ``proxy: remoteurl: http://UPSTREAM``: a read-only mirror that fetches what it lacks.

    Same repository names as the upstream. Pushes get 405 UNSUPPORTED. It asks the upstream (HEAD) for a tag on
    every manifest-by-tag request and, when the upstream is down, serves what it has cached; blobs and manifests
    it served are stored under ``data`` (cache TTL 7 days)."""

    address: str  # 127.0.0.1:PORT of the mirror
    state_dir: Path
    upstream: str  # 127.0.0.1:PORT of the registry it mirrors
    repository: str = "strata/test"
    tag: str = "1"

    @property
    def image(self) -> str:
        """The upstream's strata/test:1, asked for through the mirror."""
        return f"{self.address}/{self.repository}:{self.tag}"

    def blob_file(self, digest: str) -> Path:
        """Where the mirror keeps a blob once it has cached it."""
        return blob_file(self.state_dir, digest)

    @property
    def log(self) -> Path:
        return self.state_dir / "registry.log"


@contextmanager
def proxy_registry(state_dir: Path, upstream: str) -> Iterator[ProxyRegistry]:
    """A fresh (empty-cache) mirror of the registry at UPSTREAM ("127.0.0.1:PORT")."""
    with _running_registry(state_dir, proxy_remote=f"http://{upstream}", log_level="info") as address:
        yield ProxyRegistry(address, state_dir, upstream)

