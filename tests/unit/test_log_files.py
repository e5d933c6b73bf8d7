"""Container logs without a container: the options (``--since``/``--until`` times and Go durations, ``--tail``,
``--log-opt`` sizes and Docker's rules), the json-file writer's records and rotation, and the reader over
generated files (rotated files oldest first, ``--tail`` backwards in blocks, hostile records, following across
rotations). tests/test_logs.py runs the system: real containers and the CLI."""

from __future__ import annotations

import calendar
import datetime
import io
import json
import re
import threading
from pathlib import Path

import pytest

from runner.logs.reader import ReadOptions, parse_duration, parse_tail, parse_time, show, tail_start
from runner.logs.writer import LOG_NAME, LogConfig, LogWriter, parse_size
from shared.errors import Kind, StrataError
from tests.logfiles import files_of, record
from tests.tools import wait_until

NOW = 1_700_000_000 * 10**9
SEC = 10**9


# -- parsing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ns"), [
    ("10m", NOW - 600 * SEC), ("1h30m", NOW - 5400 * SEC), ("1.5h", NOW - 5400 * SEC), ("-5m", NOW + 300 * SEC),
    ("300ms", NOW - 300 * 10**6), ("2h45m10s", NOW - (2 * 3600 + 45 * 60 + 10) * SEC),
    ("2013-01-02T13:23:37Z", calendar.timegm((2013, 1, 2, 13, 23, 37)) * SEC),
    ("2013-01-02T13:23:37.5+01:00", (calendar.timegm((2013, 1, 2, 12, 23, 37))) * SEC + SEC // 2),
    ("2013-01-02T13:23:37.000000001z", calendar.timegm((2013, 1, 2, 13, 23, 37)) * SEC + 1),
    ("2013-01-02Z", calendar.timegm((2013, 1, 2, 0, 0, 0)) * SEC),
    ("2013-01-02T13Z", calendar.timegm((2013, 1, 2, 13, 0, 0)) * SEC),
    ("2013-01-02T13:23-02:00", calendar.timegm((2013, 1, 2, 15, 23, 0)) * SEC),
    ("1136073600", 1136073600 * SEC), ("1136073600.5", 1136073600 * SEC + SEC // 2),
    ("1136073600.000000001", 1136073600 * SEC + 1), ("0", 0),
])
def test_since_and_until_take_dockers_forms(text: str, ns: int) -> None:
    assert parse_time(text, "since", NOW) == ns


def test_a_time_without_a_zone_is_local_time() -> None:
    local = datetime.datetime(2013, 1, 2, 13, 23, 37).timestamp()
    assert parse_time("2013-01-02T13:23:37", "since", NOW) == int(local) * SEC
    assert parse_time("2013-01-02", "since", NOW) == int(datetime.datetime(2013, 1, 2).timestamp()) * SEC


@pytest.mark.parametrize("text", ["yesterday", "10x", "2013-13-02", "2013-01-02T25:00:00Z", "-1", "1.2.3", ""])
def test_bad_times_are_one_line_usage_errors(text: str) -> None:
    with pytest.raises(StrataError) as caught:
        parse_time(text, "until", NOW)
    assert caught.value.kind == Kind.USAGE and '"until"' in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text", [
    "9" * 400 + "h", "2562048h", "1" * 5000, "99999999999999999999", "1." + "1" * 5000, "0000-01-01",
    "٣", "2013-01-02T13:23:37.٣Z", "١٣٦٠٠٠٠٠٠٠",
], ids=["duration-400-digits", "duration-past-int64", "unix-5000-digits", "unix-past-int64", "unix-fraction-5000",
        "year-0", "arabic-digit", "arabic-fraction", "arabic-unix"])
def test_time_options_out_of_range_are_one_line_usage_errors(text: str) -> None:
    """Review finding 4: these ended in a traceback (OverflowError of a float duration, ValueError of int() past
    4300 digits) or parsed (\\d and int() take any script's digits: "٣" was 3 s). Go's parsers take ASCII digits
    and int64 only; Docker says "failed to parse value as time or duration"."""
    with pytest.raises(StrataError) as caught:
        parse_time(text, "since", NOW)
    message = str(caught.value)
    assert caught.value.kind == Kind.USAGE and '"since"' in message and text in message and "\n" not in message


def test_dates_datetime_cannot_place_in_local_time_still_parse() -> None:
    """0001-01-01 without a zone raised "year 0 is out of range" from datetime.timestamp(); Go takes it."""
    utc = calendar.timegm((1, 1, 1, 0, 0, 0)) * SEC
    assert parse_time("0001-01-01T00:00:00Z", "until", NOW) == utc
    assert abs(parse_time("0001-01-01", "until", NOW) - utc) <= 86400 * SEC
    assert abs(parse_time("9999-12-31T23:59:59", "until", NOW) - calendar.timegm((9999, 12, 31, 23, 59, 59)) * SEC) \
        <= 86400 * SEC

def test_go_durations() -> None:
    assert parse_duration("1h2m3s4ms5us6ns") == 3723004005006
    assert parse_duration(".5s") == SEC // 2 and parse_duration("1µs") == 1000
    assert [parse_duration(t) for t in ("5", "m", "1d", "", "1h x")] == [None] * 5
    assert parse_duration("2562047h") == 2562047 * 3600 * SEC and parse_duration("2562048h") is None  # int64 ns
    assert parse_duration("-9223372036854775808ns") == -(1 << 63) and parse_duration("9223372036854775808ns") is None
    assert parse_duration("1.000000000000000000000000001h") == 3600 * SEC


def test_tail_values() -> None:
    assert [parse_tail(t) for t in ("all", "0", "7", "-1")] == [None, 0, 7, None]
    for bad in ("some", "٣", " 3", "1_0", "9" * 5000):
        with pytest.raises(StrataError):
            parse_tail(bad)


def test_sizes_are_docker_decimal_units() -> None:
    assert [parse_size(t) for t in ("20m", "1k", "10kb", "1.5g", "100", "2MB")] == \
        [20_000_000, 1000, 10_000, 1_500_000_000, 100, 2_000_000]
    for bad in ("ten", "0", "-1", "1x", "", "1.2.3", "9" * 400, "٣m", "99999999999p"):
        with pytest.raises(StrataError):  # "1.2.3" and 400 digits were tracebacks, "٣m" was 3 MB
            parse_size(bad)


def test_a_max_file_of_five_thousand_digits_is_a_usage_error() -> None:
    """The rest of --log-opt's rules: tests/unit/test_run_options.py."""
    with pytest.raises(StrataError) as caught:
        LogConfig.parse(None, ["max-file=" + "9" * 5000])
    assert caught.value.kind == Kind.USAGE and "max-file" in str(caught.value)


# -- the writer -------------------------------------------------------------------------------------------------


def test_writer_records_are_dockers_layout(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / LOG_NAME)
    w.write("stdout", 'one\ntwo "q" \\ é\x01\npart'.encode())
    w.write("stderr", b"\n")
    w.close()
    lines = (tmp_path / LOG_NAME).read_bytes().splitlines()
    assert [json.loads(line)["log"] for line in lines] == ["one\n", 'two "q" \\ é\x01\n', "part", "\n"]
    assert [json.loads(line)["stream"] for line in lines] == ["stdout"] * 3 + ["stderr"]
    assert re.fullmatch(rb'\{"log":"one\\n","stream":"stdout","time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z"\}',
                        lines[0]), lines[0]



@pytest.mark.parametrize("data", [
    b"a\\nb\n\\\n\"q\"\t\x00\xc3\xa9\xf0\x9f\x98\x80\n\nend",
    b"no backslash\n\ttab \"q\" \xc3\xa9\n\n", b"\n" * 70_000 + b"x", b"\xc3\xa9" * 40_000,
    b"line\n" * 20_000 + b"\\" + b"\n" * 100_000,
], ids=["escapes", "one-encode", "newlines-past-a-slice", "utf8-past-a-slice", "mixed"])
def test_writer_keeps_any_text_one_record_a_line(tmp_path: Path, data: bytes) -> None:
    """Review finding 5 made the writer encode a text without a backslash in one call, and a large read in slices:
    the records still say exactly what was written, one a line, a multibyte character never cut in two."""
    writer = LogWriter(tmp_path / LOG_NAME, LogConfig(max_size=1 << 30))
    writer.write("stderr", data)
    writer.close()
    records = [json.loads(line) for line in (tmp_path / LOG_NAME).read_bytes().splitlines()]
    assert "".join(r["log"] for r in records) == data.decode()
    assert all(r["log"].count("\n") == r["log"].endswith("\n") for r in records)
    assert all(r["stream"] == "stderr" and re.fullmatch(r"[0-9-]{10}T[0-9:]{8}\.[0-9]{9}Z", r["time"]) for r in records)

def test_writer_rotates_within_the_bound_and_keeps_the_newest(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / LOG_NAME, LogConfig.parse(None, ["max-size=1k", "max-file=3"]))
    for i in range(500):
        w.write("stdout", f"line {i}\n".encode() * (1 + i % 3))
    w.close()
    sizes = files_of(tmp_path)
    assert set(sizes) == {LOG_NAME, f"{LOG_NAME}.1", f"{LOG_NAME}.2"}
    assert all(size <= 1000 for size in sizes.values()), sizes
    out = io.BytesIO()
    show(tmp_path / LOG_NAME, ReadOptions(), lambda: False, out, io.BytesIO())
    lines = out.getvalue().decode().splitlines()
    assert lines[-1] == "line 499" and len(lines) > 20
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == sorted(numbers)  # oldest file first, no gap inside what is kept
    assert set(range(numbers[0] + 1, 500)) <= set(numbers)


def test_writer_with_one_file_starts_over(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / LOG_NAME, LogConfig.parse("json-file", ["max-size=200"]))
    for i in range(50):
        w.write("stdout", f"line {i}\n".encode())
    w.close()
    assert list(files_of(tmp_path)) == [LOG_NAME] and files_of(tmp_path)[LOG_NAME] <= 200


def test_a_record_larger_than_max_size_gets_a_file_of_its_own(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / LOG_NAME, LogConfig.parse(None, ["max-size=100", "max-file=5"]))
    w.write("stdout", b"a\n")
    w.write("stdout", b"x" * 500 + b"\n")
    w.write("stdout", b"b\n")
    w.close()
    texts = [[json.loads(line)["log"] for line in (tmp_path / name).read_text().splitlines()]
             for name in (f"{LOG_NAME}.2", f"{LOG_NAME}.1", LOG_NAME)]
    assert texts == [["a\n"], ["x" * 500 + "\n"], ["b\n"]]


def test_driver_none_writes_nothing(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / LOG_NAME, LogConfig.parse("none", []))
    w.write("stdout", b"hello\n")
    w.close()
    assert list(tmp_path.iterdir()) == []


# -- the reader over generated logs -----------------------------------------------------------------------------


@pytest.fixture
def three_files(tmp_path: Path) -> Path:
    """Records 0..29, one a second from NOW, over container.log.2 (0-9), .1 (10-19) and container.log (20-29,
    then half a record still being written); 7 and 23 on stderr."""
    path = tmp_path / LOG_NAME
    for name, numbers in ((f"{LOG_NAME}.2", range(0, 10)), (f"{LOG_NAME}.1", range(10, 20)), (LOG_NAME, range(20, 30))):
        data = b"".join(record(f"r{i}\n", NOW + i * SEC, "stderr" if i in (7, 23) else "stdout") for i in numbers)
        (tmp_path / name).write_bytes(data + (b'{"log":"half' if name == LOG_NAME else b""))
    return path


def read(path: Path, **kw: object) -> tuple[list[str], list[str]]:
    out, err = io.BytesIO(), io.BytesIO()
    show(path, ReadOptions(**kw), lambda: False, out, err)  # type: ignore[arg-type]
    return out.getvalue().decode().splitlines(), err.getvalue().decode().splitlines()


def test_reader_goes_through_the_rotated_files_oldest_first(three_files: Path) -> None:
    out, err = read(three_files)
    assert out == [f"r{i}" for i in range(30) if i not in (7, 23)] and err == ["r7", "r23"]


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11, 25, 30, 31, 1000])
def test_tail_counts_back_across_the_files(three_files: Path, n: int) -> None:
    out, err = read(three_files, tail=n)
    assert sorted(out + err, key=lambda r: int(r[1:])) == [f"r{i}" for i in range(max(0, 30 - n), 30)]


def test_tail_reads_backwards_in_blocks(tmp_path: Path) -> None:
    """More records than a block holds, in one file: the start is found by counting newlines backwards."""
    path = tmp_path / LOG_NAME
    path.write_bytes(b"".join(record(f"{i}\n", NOW) for i in range(20000)))
    with open(path, "rb") as f:
        index, offset = tail_start([f.fileno()], 15000)
        assert index == 0 and json.loads(path.read_bytes()[offset:].split(b"\n")[0])["log"] == "5000\n"
    assert read(path, tail=3)[0] == ["19997", "19998", "19999"]


def test_since_until_and_tail_as_docker_applies_them(three_files: Path) -> None:
    assert read(three_files, since=NOW + 25 * SEC)[0] == ["r25", "r26", "r27", "r28", "r29"]  # inclusive
    assert read(three_files, until=NOW + 2 * SEC)[0] == ["r0", "r1", "r2"]  # inclusive, then stops
    assert read(three_files, since=NOW + 3 * SEC, until=NOW + 5 * SEC)[0] == ["r3", "r4", "r5"]
    assert read(three_files, tail=3, since=NOW + 28 * SEC)[0] == ["r28", "r29"]  # tail first, then since
    assert read(three_files, since=NOW + 100 * SEC) == ([], [])


def test_timestamps_are_rfc3339_with_nine_digits(tmp_path: Path) -> None:
    path = tmp_path / LOG_NAME
    path.write_bytes(b'{"log":"a\\n","stream":"stdout","time":"2013-01-02T13:23:37.5Z"}\n'
                     b'{"log":"b\\n","stream":"stdout","time":"2013-01-02T14:23:37.000000001+01:00"}\n')
    assert read(path, timestamps=True)[0] == ["2013-01-02T13:23:37.500000000Z a",
                                              "2013-01-02T13:23:37.000000001Z b"]


def test_a_malformed_record_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / LOG_NAME
    path.write_bytes(record("a\n", NOW) + b"not json\n")
    with pytest.raises(StrataError) as caught:
        read(path)
    assert caught.value.kind == Kind.INTEGRITY and LOG_NAME in str(caught.value)



@pytest.mark.parametrize("line", [
    b"[" * 200_000, b'{"log":' + b"[" * 990 + b"]" * 990 + b',"stream":"stdout","time":"2013-01-02T13:23:37Z"}',
    b'{"log":"a\xff","stream":"stdout","time":"2013-01-02T13:23:37Z"}', b"\xff\xfe\x00",
    b'{"log":"a\n","stream":"stdout","time":"0000-01-01T00:00:00Z"}', b'{"log":"a\n","time":"2013-02-30T00:00:00Z"}',
    b'{"log":"a\n","time":5}', b"[1]", b'"x"', b"1e999", b"1" * 5000, b'{"log":{"a":1}}',
], ids=["nested-200k", "log-not-a-string", "bad-utf8", "utf16-bom", "year-0", "feb-30", "time-not-a-string",
        "a-list", "a-string", "infinity", "int-5000-digits", "log-an-object"])
def test_a_hostile_record_is_a_one_line_integrity_error(tmp_path: Path, line: bytes) -> None:
    """Review finding 4: a record nested 200k deep ended in a RecursionError traceback. Whatever a record is,
    the reader says in one line that this file of the log is not what the runner writes."""
    path = tmp_path / LOG_NAME
    path.write_bytes(record("a\n", NOW) + line + b"\n")
    with pytest.raises(StrataError) as caught:
        read(path, timestamps=True)
    message = str(caught.value)
    assert caught.value.kind == Kind.INTEGRITY and LOG_NAME in message and "\n" not in message, message


def test_follow_across_rotations_loses_nothing(tmp_path: Path) -> None:
    """A writer rotating every few records while the reader follows: every line, once, in order."""
    path = tmp_path / LOG_NAME
    w = LogWriter(path, LogConfig.parse(None, ["max-size=300", "max-file=3"]))
    done = threading.Event()
    read_so_far = io.BytesIO()

    def write() -> None:
        for i in range(300):
            w.write("stdout", f"line {i}\n".encode())
            if i % 5 == 0:  # the writer waits for the reader now and then, as a rotation must not outrun it
                wait_until(lambda i=i: f"line {i}\n".encode() in read_so_far.getvalue(), f"line {i} followed")
        w.close()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    show(path, ReadOptions(follow=True), lambda: not done.is_set(), read_so_far, io.BytesIO())
    thread.join()
    assert read_so_far.getvalue().decode().splitlines() == [f"line {i}" for i in range(300)]
    assert (tmp_path / f"{LOG_NAME}.2").exists()  # it did rotate


def test_follow_with_until_in_the_past_stops(three_files: Path) -> None:
    out = io.BytesIO()
    show(three_files, ReadOptions(follow=True, until=NOW + 1 * SEC), lambda: True, out, io.BytesIO())
    assert out.getvalue() == b"r0\nr1\n"
