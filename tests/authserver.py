"""A token issuer that behaves like auth.docker.io, for a distribution registry configured with ``auth: token``.

    GET /token?service=SERVICE&scope=repository:NAME:pull[,push][&scope=...]   (optionally with Basic auth)
    -> 200 {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": "...Z"}

Who gets what, as on Docker Hub:

* anonymous: ``pull`` on the repositories listed as public;
* a configured user (right password): ``pull,push`` on the repositories it owns, ``pull`` on the public ones;
* anything else (unknown repository, an action not granted, a scope that is not ``repository:...``) is granted
  nothing: the token is still issued, with that entry missing from its ``access`` list (not an error);
* a wrong password, an unknown user or a user switched off with :meth:`TokenServer.refuse` gets 401.

The JWT is what distribution 2.8 verifies: header ``{"typ": "JWT", "alg": "ES256"|"RS256", "x5c": [cert]}``,
claims iss, sub, aud (= the service), exp, nbf, iat, jti and ``access: [{type, name, actions}]``, signed with a
key whose self-signed certificate is in the registry's ``rootcertbundle`` (:attr:`TokenServer.cert_bundle`).

Every request served is recorded (:attr:`TokenServer.log`), so that tests can count token fetches per scope.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DEFAULT_EXPIRES_IN = 300  # Docker Hub's lifetime
ALGORITHMS = ("ES256", "RS256")


@dataclass(frozen=True)
class TokenRequest:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, list[str]]  # parsed query string, repeated keys kept in order
    authorization: bool  # an Authorization header was sent
    user: str | None  # the Basic-auth user name sent, if any (even a refused one)
    status: int
    access: list[dict[str, Any]]  # the access claim granted (empty unless status 200)
    time: float  # time.time() when it was answered

    @property
    def scopes(self) -> list[str]:
        return self.query.get("scope", [])

    @property
    def service(self) -> str | None:
        return self.query.get("service", [None])[0]


@dataclass
class _Signer:
    alg: str
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate
    x5c: str = field(init=False)

    def __post_init__(self) -> None:
        self.x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS: raw r || s, not DER
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url (JWT segments)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of TOKEN, unverified: for tests that look at what was granted."""
    header, claims, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(claims))


class TokenServer:
    """A threaded HTTP token issuer on 127.0.0.1 (port chosen by the OS). Use as a context manager or start/stop.

    Knobs (plain attributes, may be changed while it runs):

    * ``expires_in``: seconds, as answered and as the JWT's exp;
    * ``exp_shift``: seconds added to the JWT's exp only. distribution accepts a token up to 60 s past its exp,
      so ``-(expires_in + 61)`` or less makes it reject (401 invalid_token) tokens the client believes valid;
    * ``alg``: "ES256" or "RS256" (both keys' certificates are in the bundle);
    * ``refused``: user names answered 401 even with the right password (``None`` in it: anonymous requests).

    :meth:`reset` restores the initial values and clears the log.
    """

    def __init__(
        self,
        cert_dir: Path,
        *,
        service: str,
        issuer: str,
        users: Mapping[str, str] | None = None,
        owned: Mapping[str, Iterable[str]] | None = None,
        public: Iterable[str] = (),
        expires_in: int = DEFAULT_EXPIRES_IN,
        alg: str = "ES256",
    ) -> None:
        """USERS maps name -> password; OWNED maps name -> repository patterns (fnmatch) it may pull and push;
        PUBLIC lists repository patterns anyone may pull. The signing certificates go to CERT_DIR/tokens.pem."""
        self.service = service
        self.issuer = issuer
        self.users = dict(users or {})
        self.owned = {user: tuple(patterns) for user, patterns in (owned or {}).items()}
        self.public = tuple(public)
        self._defaults = (expires_in, alg)
        self.expires_in = expires_in
        self.alg = alg
        self.exp_shift = 0
        self.refused: set[str | None] = set()
        self._log: list[TokenRequest] = []
        self._lock = threading.Lock()

        ec_key = ec.generate_private_key(ec.SECP256R1())
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._signers = {
            "ES256": _Signer("ES256", ec_key, _self_signed(ec_key, "strata test token signer (ES256)")),
            "RS256": _Signer("RS256", rsa_key, _self_signed(rsa_key, "strata test token signer (RS256)")),
        }
        cert_dir.mkdir(parents=True, exist_ok=True)
        self.cert_bundle = cert_dir / "tokens.pem"
        self.cert_bundle.write_bytes(b"".join(s.cert.public_bytes(serialization.Encoding.PEM)
                                              for s in self._signers.values()))  # fmt: skip
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:  # Docker Hub's OAuth2 form; we answer like a realm without it
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request log replaces stderr noise

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="strata-token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """127.0.0.1:PORT"""
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def realm(self) -> str:
        return f"http://{self.address}/token"

    # -- knobs and log ----------------------------------------------------------------------------------------

    def refuse(self, user: str | None) -> None:
        """Answer 401 to USER from now on (None: to anonymous requests)."""
        self.refused.add(user)

    def allow(self, user: str | None) -> None:
        self.refused.discard(user)

    def reset(self) -> None:
        """Restore expires_in, exp_shift, alg and refused to their initial values and clear the log."""
        self.expires_in, self.alg = self._defaults
        self.exp_shift = 0
        self.refused.clear()
        self.clear_log()

    @property
    def log(self) -> list[TokenRequest]:
        """A copy of the requests served so far, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def token_requests(self, scope: str | None = None) -> list[TokenRequest]:
        """Successful (200) GET/POST /token requests, those asking for SCOPE only if given."""
        return [r for r in self.log
                if r.path == "/token" and r.status == 200 and (scope is None or scope in r.scopes)]  # fmt: skip

    def scope_counts(self) -> dict[str, int]:
        """How many successful token requests asked for each scope."""
        counts: dict[str, int] = {}
        for r in self.token_requests():
            for s in r.scopes:
                counts[s] = counts.get(s, 0) + 1
        return counts

    # -- tokens -----------------------------------------------------------------------------------------------

    def grant(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        """The access claim USER (None: anonymous) gets for SCOPES; what is not allowed is left out."""
        merged: dict[str, list[str]] = {}
        for scope in scopes:
            kind, sep, rest = scope.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if kind != "repository" or not sep or not sep2 or not name:
                continue  # registry:catalog:* and malformed scopes: nothing, as Docker Hub
            allowed = self._allowed(user, name)
            for action in actions.split(","):
                if action in allowed and action not in merged.setdefault(name, []):
                    merged[name].append(action)
        return [{"type": "repository", "name": n, "actions": a} for n, a in merged.items() if a]

    def _allowed(self, user: str | None, name: str) -> set[str]:
        allowed: set[str] = set()
        if any(fnmatch.fnmatchcase(name, p) for p in self.public):
            allowed.add("pull")
        if user is not None and any(fnmatch.fnmatchcase(name, p) for p in self.owned.get(user, ())):
            allowed |= {"pull", "push"}
        return allowed

    def issue(self, user: str | None, access: list[dict[str, Any]], expires_in: int | None = None) -> str:
        """A signed JWT for USER with ACCESS, valid EXPIRES_IN seconds (default: the expires_in knob)."""
        signer = self._signers[self.alg]
        now = int(time.time())
        header = {"typ": "JWT", "alg": signer.alg, "x5c": [signer.x5c]}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + (self.expires_in if expires_in is None else expires_in) + self.exp_shift,
            "nbf": now,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
        return f"{signing_input}.{_b64url(signer.sign(signing_input.encode()))}"

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(req.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if req.command == "POST":  # drain a form body; we do not speak OAuth2, Hub clients fall back to GET
            length = int(req.headers.get("Content-Length") or 0)
            req.rfile.read(length)
        auth_header = req.headers.get("Authorization")
        user, password = _basic(auth_header)
        access: list[dict[str, Any]] = []
        body: dict[str, Any]
        if url.path != "/token" or req.command != "GET":
            status, body = 404, {"details": "not found"}
        elif auth_header is not None and user is None:
            status, body = 401, {"details": "malformed Authorization header"}
        elif user in self.refused or (user is not None and self.users.get(user) != password):
            status, body = 401, {"details": "incorrect username or password"}
        else:
            access = self.grant(user, query.get("scope", []))
            token = self.issue(user, access)
            issued = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            status = 200
            body = {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued}
        data = json.dumps(body).encode()
        with self._lock:
            self._log.append(TokenRequest(req.command, url.path, query, auth_header is not None, user, status,
                                          access, time.time()))  # fmt: skip
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        if status == 401:
            req.send_header("Www-Authenticate", 'Basic realm="strata-test-issuer"')
        req.end_headers()
        req.wfile.write(data)


def _basic(header: str | None) -> tuple[str | None, str | None]:
    """(user, password) from a Basic Authorization header, (None, None) if absent or not Basic."""
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)
