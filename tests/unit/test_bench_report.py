"""scripts/bench-report's figures: the stats of each tool's samples, the ratio (ours / the tool, medians), the
Markdown table, and the layer-count curve that the chart draws. Pure functions, no tools needed (the chart itself
needs matplotlib, which only scripts/bench installs: it is drawn, and looked at, by each bench run)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.scripts import load_script

report = load_script("bench-report")


def samples(*walls: float, rss: int = 2048) -> list[dict[str, float]]:
    return [{"wall": w, "rss": rss} for w in walls]


def figures() -> dict[str, Any]:
    return {
        "machine": {"cpu": "CPU X", "nproc": "2", "kernel": "6.1", "work": "/w", "fs": "tmpfs"},
        "runs": 3,
        "notes": ["a note"],
        "samples": {
            "runner run l1": samples(0.2, 0.1, 0.3), "docker run l1": samples(0.4, 0.5, 0.3),
            "runner run l130": samples(0.6, 0.7, 0.8), "docker run l130": samples(1.0, 1.2, 1.4),
            "puller pull": samples(2.0, 3.0, rss=40 * 1024), "skopeo copy": samples(4.0, 5.0, rss=20 * 1024),
        },
        "works": [
            {"work": "run, 1 layer", "unit": "s", "tools": ["runner run l1", "docker run l1"], "layers": 1,
             "tag": "l1"},
            {"work": "run, 130 layers", "unit": "s", "tools": ["runner run l130", "docker run l130", "absent"],
             "layers": 130, "tag": "l130"},
            {"work": "pull", "unit": "s", "tools": ["puller pull", "skopeo copy"]},
            {"work": "max RSS, pull", "unit": "MB", "tools": ["puller pull", "skopeo copy"]},
            {"work": "nothing measured", "unit": "s", "tools": ["absent"]},
        ],
    }


def test_stats_are_median_min_max() -> None:
    assert report.stats([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    with pytest.raises(ValueError):
        report.stats([])


def test_table_ratios_are_ours_over_each_tool_and_tags_are_not_shown() -> None:
    lines = report.table(figures())
    assert [(ln["work"], ln["tool"]) for ln in lines] == [
        ("run, 1 layer", "runner run"), ("run, 1 layer", "docker run"),
        ("run, 130 layers", "runner run"), ("run, 130 layers", "docker run"),
        ("pull", "puller pull"), ("pull", "skopeo copy"),
        ("max RSS, pull", "puller pull"), ("max RSS, pull", "skopeo copy"),
    ]  # a tool without samples, and a work with none, are left out
    ratio = {(ln["work"], ln["tool"]): ln["ratio"] for ln in lines}
    assert ratio[("run, 1 layer", "runner run")] is None
    assert ratio[("run, 1 layer", "docker run")] == pytest.approx(0.2 / 0.4)
    assert ratio[("pull", "skopeo copy")] == pytest.approx(2.5 / 4.5)
    assert ratio[("max RSS, pull", "skopeo copy")] == pytest.approx(2.0)  # RSS: kB in, MB out
    rss = next(ln for ln in lines if ln["work"] == "max RSS, pull" and ln["tool"] == "puller pull")
    assert (rss["median"], rss["min"], rss["max"]) == (40.0, 40.0, 40.0)


def test_markdown_has_the_machine_a_line_per_tool_and_the_notes() -> None:
    text = report.markdown(figures())
    assert "CPU X, nproc 2, kernel 6.1" in text
    assert "| work | tool | median | min | max | ratio |" in text
    assert "| run, 1 layer | docker run | 400.0 ms | 300.0 ms | 500.0 ms | 0.50 |" in text
    assert "| pull | puller pull | 2.50 s | 2.00 s | 3.00 s |  |" in text
    assert "| max RSS, pull | skopeo copy | 20.0 MB | 20.0 MB | 20.0 MB | 2.00 |" in text
    assert text.rstrip().endswith("- a note")


def test_the_layer_curve_is_per_tool_in_layer_order() -> None:
    curves = report.scaling(figures())
    assert sorted(curves) == ["docker run", "runner run"]
    assert [(p["layers"], p["median"]) for p in curves["runner run"]] == [(1, 0.2), (130, 0.7)]

