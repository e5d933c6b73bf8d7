"""Listings as Docker's CLI prints them (shared/format.py): go-units' sizes and ages, Go's tabwriter as Docker
configures it, and ``--format`` over a listing's rows (json, table, a template). Pure logic: no root, network or
tools. The tabwriter cases were checked against Go 1.19's text/tabwriter with Docker's settings (10, 1, 3, ' ')."""

from __future__ import annotations

import pytest

from shared.errors import Kind, StrataError
from shared.format import human_duration, human_size, listing, tabwrite

# -- go-units ---------------------------------------------------------------------------------------------------------

H, D = 3600, 86400
W, MO, Y = 7 * D, 30 * D, 365 * D


@pytest.mark.parametrize(("seconds", "shown"), [  # docker/go-units duration_test.go, TestHumanDuration
    (0.45, "Less than a second"), (1, "1 second"), (45, "45 seconds"), (59, "59 seconds"), (60, "About a minute"),
    (3 * 60, "3 minutes"), (35 * 60 + 40, "35 minutes"), (59 * 60, "59 minutes"), (H, "About an hour"),
    (H + 29 * 60, "About an hour"), (H + 31 * 60, "2 hours"), (3 * H + 29 * 60, "3 hours"),
    (3 * H + 31 * 60, "4 hours"), (24 * H, "24 hours"), (D + 12 * H, "36 hours"), (2 * D, "2 days"),
    (7 * D, "7 days"), (13 * D + 5 * H, "13 days"), (2 * W, "2 weeks"), (2 * W + 4 * D, "2 weeks"),
    (4 * W + 3 * D, "4 weeks"), (MO, "4 weeks"), (MO + 2 * W, "6 weeks"), (2 * MO, "2 months"),
    (3 * MO + W, "3 months"), (13 * MO, "13 months"), (24 * MO, "24 months"), (24 * MO + 2 * W, "2 years"),
    (3 * Y + 2 * MO, "3 years"),
])
def test_created_is_go_units_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


@pytest.mark.parametrize(("seconds", "words"), [
    (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (5399, "About an hour"), (5400, "2 hours"), (47 * 3600, "47 hours"), (48 * 3600, "2 days"),
    (13 * 86400, "13 days"), (14 * 86400, "2 weeks"), (59 * 86400, "8 weeks"), (60 * 86400, "2 months"),
    (729 * 86400, "24 months"), (730 * 86400, "2 years")])
def test_human_duration_is_go_units_wording(seconds: float, words: str) -> None:
    assert human_duration(seconds) == words


@pytest.mark.parametrize(("size", "shown"), [  # go-units HumanSizeWithPrecision(size, 3), as docker images
    (0, "0B"), (999, "999B"), (1000, "1kB"), (4_260_000, "4.26MB"), (7_377_000, "7.38MB"), (999_999, "1e+03kB"),
    (1_500_000_000, "1.5GB"), (100_000, "100kB"),
])
def test_size_is_go_units_human_size(size: int, shown: str) -> None:
    assert human_size(size, 3) == shown


@pytest.mark.parametrize(("size", "shown"), [  # go-units HumanSize (precision 4): system df, prune, progress
    (0, "0B"), (999, "999B"), (4_257_000, "4.257MB"), (7_377_123, "7.377MB"), (999_999, "1000kB"),
    (9_999_999, "10MB"), (1_500_000_000, "1.5GB"), (2 ** 70, "1.181ZB"),
])
def test_size_default_is_go_units_human_size_precision_4(size: int, shown: str) -> None:
    assert human_size(size) == shown


# -- Go's tabwriter -----------------------------------------------------------------------------------------------


def test_tabwriter_columns_at_least_10_wide_3_past_the_widest() -> None:
    assert tabwrite(["REPOSITORY\tTAG\tIMAGE ID", "alpine\t3.19\tabc", "x\tlatest\td"]) == [
        "REPOSITORY   TAG       IMAGE ID",
        "alpine       3.19      abc",
        "x            latest    d"]


def test_tabwriter_sizes_a_column_per_block_of_lines_that_have_it() -> None:
    """A line with fewer cells ends a column's block: the next block is sized on its own (Go's format())."""
    assert tabwrite(["a\tb\tc", "longer-cell-here\tb", "no tabs at all", "x\tyyyyyyyyyyyyyyyyy\tz",
                     "\tempty first"]) == [
        "a                  b         c",
        "longer-cell-here   b",
        "no tabs at all",
        "x         yyyyyyyyyyyyyyyyy   z",
        "          empty first"]


def test_tabwriter_counts_characters_and_pads_a_trailing_cell() -> None:
    assert tabwrite(["NAMES\tÜber\ttrailing\t", "wéb\t…\tz\t"]) == [
        "NAMES     Über      trailing   ",
        "wéb       …         z          "]


# -- --format over a listing ----------------------------------------------------------------------------------------

ROWS = [{"Repository": "alpine", "Tag": "3.19", "ID": "abc"}, {"Repository": "x", "Tag": "latest", "ID": "d"}]
HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID"}
DEFAULT = r"{{.Repository}}\t{{.Tag}}\t{{.ID}}"


def test_table_format_aligns_as_docker_tabwriter() -> None:
    assert listing(None, ROWS, DEFAULT, HEADERS) == [
        "REPOSITORY   TAG       IMAGE ID",  # a column is at least 10 wide, 3 spaces past its widest cell
        "alpine       3.19      abc",
        "x            latest    d"]
    assert listing("table", ROWS, DEFAULT, HEADERS) == listing(None, ROWS, DEFAULT, HEADERS)
    assert listing("json", ROWS, "", HEADERS)[0] == '{"Repository":"alpine","Tag":"3.19","ID":"abc"}'
    assert listing("{{json .}}", ROWS, "", HEADERS) == listing("json", ROWS, "", HEADERS)
    assert listing("{{.Repository}}:{{.Tag}}", ROWS, "", HEADERS) == ["alpine:3.19", "x:latest"]


def test_table_header_runs_the_template_with_dockers_header_functions() -> None:
    """``table {{printf "%.3s" .Repository}}\\t{{upper .Tag}}``: Docker's header is the same template over the
    titles, upper leaving TAG as it is and printf (Go's) cutting REPOSITORY to REP."""
    assert listing(r'table {{printf "%.3s" .Repository}}\t{{upper .Tag}}', ROWS, "", HEADERS) == [
        "REP       TAG", "alp       3.19", "x         LATEST"]
    assert listing("table{{.ID}}", ROWS, "", HEADERS) == ["IMAGE ID", "abc", "d"]  # Docker: any "table" prefix


def test_table_with_no_rows_is_its_header() -> None:
    assert listing(None, [], DEFAULT, HEADERS) == ["REPOSITORY   TAG       IMAGE ID"]
    assert listing("{{.ID}}", [], DEFAULT, HEADERS) == []


def test_a_row_lacking_the_field_is_a_one_line_usage_error() -> None:
    with pytest.raises(StrataError) as info:
        listing("{{.Nope}}", ROWS, "", HEADERS)
    assert info.value.kind is Kind.USAGE and "can't evaluate field Nope" in str(info.value)
    assert "\n" not in str(info.value)
