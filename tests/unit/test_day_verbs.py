"""Issue 22's pure logic: generated container names, prune's y/N, the puller pointers and a failed pull's line."""

from __future__ import annotations

import random
import re

from runner.container import names
from runner.verbs import prune, pull


def test_a_generated_name_is_adjective_surname_and_free() -> None:
    rng = random.Random(7)
    taken: set[str] = set()
    for _ in range(300):
        name = names.generate(taken, rng.randrange)
        assert re.fullmatch(r"[a-z]+_[a-z]+\d*", name) and name not in taken
        taken.add(name)
    assert all(n.split("_")[0] in names.ADJECTIVES for n in taken)
    assert len(set(names.ADJECTIVES)) == len(names.ADJECTIVES) and len(set(names.SURNAMES)) == len(names.SURNAMES)


def test_every_plain_name_taken_still_gives_a_free_one() -> None:
    every = {f"{a}_{s}" for a in names.ADJECTIVES for s in names.SURNAMES}
    every |= {f"{n}{d}" for n in every for d in range(10)}
    name = names.generate(every, random.Random(1).randrange)
    assert name not in every and re.fullmatch(r"[a-z]+_[a-z]+\d+", name)


def test_only_y_is_yes() -> None:
    assert all(prune.confirmed(a) for a in ("y", "Y", "y\n", "  Y \n"))
    assert not any(prune.confirmed(a) for a in ("", "\n", "n", "N\n", "yes", "yy", "no"))


def test_ask_reads_nothing_with_force_and_says_docker_words() -> None:
    assert prune.ask(prune.CONTAINERS_WARNING, True, read=lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    warning = prune.system_warning(every_image=True)
    assert warning.splitlines()[0] == "WARNING! This will remove:" and "build cache" not in warning
    assert "  - all images without at least one container associated to them" in warning
    assert "  - all dangling images" in prune.system_warning(every_image=False)


def test_pointers_name_the_puller_command() -> None:
    assert str(pull.pointer("images", [], None)) == "'runner images' is 'puller images': images are puller's"
    assert str(pull.pointer("image", ["rm", "a b"], "/s")) == \
        "'runner image rm a b' is 'puller --root /s rmi 'a b'': images are puller's"
    assert str(pull.pointer("tag", ["x", "y:1"], None)).startswith("'runner tag x y:1' is 'puller copy x y:1'")
    assert set(pull.PULLERS) >= {"images", "pull", "rmi", "push", "save", "load", "login", "logout", "tag"}


def test_a_failed_pull_is_the_pullers_last_error_line() -> None:
    lines = ["Pulling x", "puller: warning: slow", "puller: error: manifest unknown"]
    assert pull._failure(lines, 1) == "manifest unknown"
    assert pull._failure(["Traceback (most recent call last):", "Boom"], 1) == "puller pull failed (exit status 1)"
