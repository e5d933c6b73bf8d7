"""``--restart``: Docker's restart policies as pure logic (:class:`runner.spec.RestartPolicy`): the parse and its
refusals in Docker's words, the decision after an exit (Docker's ShouldRestart) and the back-off (100 ms doubled
up to a minute, reset by a run of 10 s); ``resolve`` refusing ``--restart`` with ``--rm``; the policy kept in the
spec's annotations. No root, no kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.container.options import RunOptions, resolve
from runner.spec import A_RESTART, RestartPolicy, Spec
from shared import userns
from shared.errors import Kind, StrataError
from shared.store.layout import Store
from tests.unit.test_run_options import IMAGE, stored_image


def refusal(text: str) -> str:
    with pytest.raises(StrataError) as caught:
        RestartPolicy.parse(text)
    assert caught.value.kind == Kind.USAGE
    return str(caught.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("no", RestartPolicy("no", 0)), ("", RestartPolicy("no", 0)), ("always", RestartPolicy("always", 0)),
    ("unless-stopped", RestartPolicy("unless-stopped", 0)), ("on-failure", RestartPolicy("on-failure", 0)),
    ("on-failure:5", RestartPolicy("on-failure", 5)), ("on-failure:0", RestartPolicy("on-failure", 0)),
])
def test_the_policies_docker_takes(text: str, expected: RestartPolicy) -> None:
    assert RestartPolicy.parse(text) == expected


def test_the_refusals_are_dockers() -> None:
    assert refusal(":3") == "invalid restart policy format: no policy provided before colon"
    assert refusal("on-failure:x") == "invalid restart policy format: maximum retry count must be an integer"
    assert refusal("always:2") == "invalid restart policy: maximum retry count can only be used with 'on-failure'"
    assert refusal("no:-1") == ("invalid restart policy: maximum retry count can only be used with 'on-failure' "
                                "and cannot be negative")
    assert refusal("on-failure:-1") == "invalid restart policy: maximum retry count cannot be negative"
    assert refusal("sometimes") == ("invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
                                    "'on-failure', or 'unless-stopped'")


def test_str_is_what_docker_takes_back() -> None:
    for text in ("no", "always", "unless-stopped", "on-failure", "on-failure:3"):
        assert str(RestartPolicy.parse(text)) == text


def test_on_failure_restarts_failures_up_to_its_count() -> None:
    policy = RestartPolicy.parse("on-failure:2")
    assert [policy.restarts(1, count, False) for count in range(4)] == [True, True, False, False]
    assert not policy.restarts(0, 0, False)  # a success is not restarted
    assert RestartPolicy.parse("on-failure").restarts(137, 10_000, False)  # no count: for ever
    assert not RestartPolicy.parse("on-failure").restarts(0, 0, False)


def test_always_restarts_whatever_the_exit_and_unless_stopped_unless_a_user_stopped_it() -> None:
    always, unless = RestartPolicy.parse("always"), RestartPolicy.parse("unless-stopped")
    assert always.restarts(0, 50, False) and always.restarts(1, 0, True)  # at boot too, a user's stop or not
    assert unless.restarts(0, 50, False) and not unless.restarts(0, 0, True)
    assert not RestartPolicy().restarts(1, 0, False)


def test_the_back_off_doubles_from_100ms_to_a_minute() -> None:
    delays, delay = [], 0.0
    for _ in range(12):
        delay = RestartPolicy.delay(delay, 0.5)
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[9] == pytest.approx(51.2) and delays[10] == delays[11] == 60.0


def test_a_run_of_10s_resets_the_back_off() -> None:
    assert RestartPolicy.delay(60.0, 10.0) == 0.1
    assert RestartPolicy.delay(0.8, 9.9) == 1.6


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("STRATA_CONFIG", str(tmp_path / "no-settings.json"))
    monkeypatch.setattr(userns, "host_uid", lambda: 0)
    return Store(tmp_path / "store")


def test_resolve_refuses_restart_with_rm_and_keeps_the_policy_in_the_spec(store: Store) -> None:
    image = stored_image(IMAGE)
    with pytest.raises(StrataError) as caught:
        resolve(RunOptions(image="app:1", remove=True, restart="always"), image, store)
    assert str(caught.value) == "Conflicting options: --restart and --rm"
    assert resolve(RunOptions(image="app:1", remove=True, restart="no"), image, store).auto_remove
    spec = resolve(RunOptions(image="app:1", restart="on-failure:3", network="none"), image, store)
    doc = spec.to_oci()
    assert doc["annotations"][A_RESTART] == "on-failure:3"
    assert Spec.from_oci(doc).restart == RestartPolicy("on-failure", 3)
    plain = resolve(RunOptions(image="app:1", network="none"), image, store).to_oci()
    assert A_RESTART not in plain["annotations"] and Spec.from_oci(plain).restart == RestartPolicy()
