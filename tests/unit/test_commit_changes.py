"""``runner commit --change``: the Dockerfile instructions it takes, read as Docker reads them, and those it
refuses."""

from __future__ import annotations

import pytest

from runner.container.commit import apply_changes
from shared.errors import StrataError


def test_change_lines_as_a_dockerfile_reads_them() -> None:
    base = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/data"}
    assert apply_changes(base, ["ENTRYPOINT [\"/bin/echo\"]"]) == {  # an inherited Cmd goes with a new ENTRYPOINT
        "Entrypoint": ["/bin/echo"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/data"}
    assert apply_changes(base, ["CMD [\"x\"]", "ENTRYPOINT top -b"])["Cmd"] == ["x"]
    assert apply_changes(base, ["ENTRYPOINT top -b"])["Entrypoint"] == ["/bin/sh", "-c", "top -b"]
    assert apply_changes(base, ["env A 2 and more", "ENV B=\"x y\" C=z"])["Env"] == [
        "PATH=/bin", "A=2 and more", "B=x y", "C=z"]
    assert apply_changes(base, ["WORKDIR ../srv/./app"])["WorkingDir"] == "/srv/app"
    assert set(apply_changes(base, ["EXPOSE 8000-8002/udp 80"])["ExposedPorts"]) == {
        "8000/udp", "8001/udp", "8002/udp", "80/tcp"}
    assert apply_changes(base, ["VOLUME [\"/a\", \"/b\"]", "VOLUME /c"])["Volumes"] == {"/a": {}, "/b": {}, "/c": {}}
    assert base == {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/data"}  # not changed
    for bad in ("FROM scratch", "RUN true", "", "ENV", "ENV A=1 B", "EXPOSE 70000", "EXPOSE 80/icmp",
                "STOPSIGNAL SIGNOPE", "LABEL \"unterminated"):
        with pytest.raises(StrataError):
            apply_changes(base, [bad])
