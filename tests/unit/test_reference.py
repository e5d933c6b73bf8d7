"""Reference normalization as Docker does it (distribution/reference normalize.go)."""

from __future__ import annotations

import pytest

from shared.errors import Kind, StrataError
from shared.reference import parse

HEX = "a" * 64

VALID = [
    # (input, normalized, familiar, registry host, identifier)
    ("ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "registry-1.docker.io", "latest"),
    ("ubuntu:22.04", "docker.io/library/ubuntu:22.04", "ubuntu:22.04", "registry-1.docker.io", "22.04"),
    ("library/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "registry-1.docker.io", "latest"),
    ("docker.io/ubuntu", "docker.io/library/ubuntu:latest", "ubuntu:latest", "registry-1.docker.io", "latest"),
    ("index.docker.io/library/ubuntu:x", "docker.io/library/ubuntu:x", "ubuntu:x", "registry-1.docker.io", "x"),
    ("user/repo", "docker.io/user/repo:latest", "user/repo:latest", "registry-1.docker.io", "latest"),
    ("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest", "registry-1.docker.io", "latest"),
    ("localhost/foo", "localhost/foo:latest", "localhost/foo:latest", "localhost", "latest"),
    ("localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000/a/b:c", "localhost:5000", "c"),
    ("127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1", "127.0.0.1:5000/x:1", "127.0.0.1:5000", "1"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest", "[::1]:5000", "latest"),
    ("Foo/bar", "Foo/bar:latest", "Foo/bar:latest", "Foo", "latest"),  # upper case makes a domain
    ("quay.io/a_b/c-d.e__f:T_1.x-y", "quay.io/a_b/c-d.e__f:T_1.x-y", "quay.io/a_b/c-d.e__f:T_1.x-y", "quay.io",
     "T_1.x-y"),
    (f"busybox@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}", f"busybox@sha256:{HEX}",
     "registry-1.docker.io", f"sha256:{HEX}"),
    # both tag and digest: the digest wins and the tag is dropped (ParseDockerRef)
    (f"busybox:1@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}", f"busybox@sha256:{HEX}",
     "registry-1.docker.io", f"sha256:{HEX}"),
]


@pytest.mark.parametrize(("text", "normalized", "familiar", "host", "identifier"), VALID)
def test_valid(text: str, normalized: str, familiar: str, host: str, identifier: str) -> None:
    ref = parse(text)
    assert str(ref) == normalized
    assert ref.familiar() == familiar
    assert ref.registry_host == host
    assert ref.identifier == identifier
    assert parse(str(ref)) == ref  # normalization is idempotent


INVALID = [
    ("", "empty reference"),
    ("Ubuntu", "repository name (library/Ubuntu) must be lowercase"),
    ("UPPER.io/x/Y", "repository name (x/Y) must be lowercase"),
    (HEX, "cannot specify 64-byte hexadecimal strings"),
    ("ubuntu:", "invalid reference format"),
    (":tag", "invalid reference format"),
    ("ubuntu@sha256:abc", "invalid reference format"),
    (f"ubuntu@sha256:{'A' * 64}", "must be lowercase hex"),
    (f"ubuntu@md5:{'a' * 32}", "unsupported digest algorithm"),
    ("x/-y", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("exa_mple.com/x", "invalid registry host"),
    ("ubuntu:a b", "white space"),
    (" ubuntu", "white space"),
    ("ubuntu:" + "t" * 129, "invalid reference format"),
    ("example.com/" + "a" * 250, "must not be more than 255 characters"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(StrataError) as info:
        parse(text)
    assert message in str(info.value)
    assert info.value.kind is Kind.USAGE
    assert "\n" not in str(info.value)
