"""Grouped tables in 80 columns (two dimensions, long key labels, batch columns) and the --chart bars."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import datetime, timezone
from functools import lru_cache

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import hourly_index

MAY = ("--from", "2026-05-01", "--to", "2026-06-01", "--timezone", "UTC")
LONG_KEYS = ("alpha-0123456789", "beta-01234567890", "gamma-0123456789")  # 16 characters each


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * 1000


@lru_cache(maxsize=2)
def renamed_keys_index(names: tuple[str, str, str]) -> fakecloud.UsageIndex:
    """May 2026's hourly usage with the fake's three keys renamed (key-alpha, key-beta, "")."""
    renamed = dict(zip(fakecloud.HOURLY_API_KEYS, names))
    events = fakecloud.hourly_events(ms("2026-04-25T00:00"), ms("2026-06-05T00:00"))
    return fakecloud.build_index(tuple(dataclasses.replace(e, api_key=renamed[e.api_key]) for e in events))


@pytest.fixture
def may(cloud):
    cloud.events = hourly_index(ms("2026-04-25T00:00"), ms("2026-06-05T00:00"))
    return cloud


def table_lines(stdout: str) -> list[str]:
    """Every line of a table result but the Filters: line (which names whole labels, however long)."""
    return [line for line in stdout.splitlines() if not line.startswith("Filters:")]


def words(line: str) -> list[str]:
    """A table line's cells, whichever rules separate them (labels here hold no spaces)."""
    return line.replace("|", " ").split()


def assert_fits_80_columns(stdout: str) -> None:
    widest = max(table_lines(stdout), key=len)
    assert len(widest) <= 80, widest


# ----------------------------------------------------------------------------------------------
# Grouped tables in 80 columns
# ----------------------------------------------------------------------------------------------


def test_a_month_of_days_by_service_type_fits_in_80_columns(cli, may):
    run = cli(*MAY, "--group-by", "day", "service-type", "--service-type", "all")
    assert run.code == 0, run.stderr
    assert_fits_80_columns(run.stdout)
    rows = [line for line in run.stdout.splitlines() if line.startswith("| 2026-05-")]
    assert len(rows) == 31 * 3
    assert {words(row)[1] for row in rows} == {"My", "Preset", "Custom"}
    assert "| Total " in run.stdout and "3.505B" in run.stdout  # billions in the Total row, compact


def test_a_month_of_days_by_sixteen_character_keys_fits_in_80_columns(cli, cloud):
    cloud.events = renamed_keys_index(LONG_KEYS)
    run = cli(*MAY, "--group-by", "day", "api-key", "--api-keys", *LONG_KEYS)
    assert run.code == 0, run.stderr
    assert_fits_80_columns(run.stdout)
    rows = [words(line) for line in run.stdout.splitlines() if line.startswith("| 2026-05-")]
    assert len(rows) == 31 * 3
    assert {row[1] for row in rows} == set(LONG_KEYS)  # whole: 16 characters are never cut


def test_a_day_of_hours_by_sixteen_character_keys_fits_in_80_columns(cli, cloud):
    """An hour's label is 16 columns: beside a 16-column key the table takes one space between columns."""
    cloud.events = renamed_keys_index(LONG_KEYS)
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "hour", "api-key",
              "--api-keys", *LONG_KEYS)
    assert run.code == 0, run.stderr
    assert_fits_80_columns(run.stdout)
    rows = [line for line in run.stdout.splitlines() if line.startswith("| 2026-05-08 ")]
    assert len(rows) == 24 * 3 and {line.split()[3] for line in rows} == set(LONG_KEYS)


def test_a_partial_month_of_days_by_keys_fits_in_80_columns(cli, cloud):
    cloud.events = renamed_keys_index(LONG_KEYS)
    run = cli("--from", "2026-05-01 12:00", "--to", "2026-05-31 12:00", "--timezone", "UTC",
              "--group-by", "day", "api-key", "--api-keys", *LONG_KEYS)
    assert run.code == 0, run.stderr
    assert "| 2026-05-01* " in run.stdout
    assert_fits_80_columns(run.stdout)


def test_batch_month_of_days_with_its_extra_columns_fits_in_80_columns(cli, may):
    run = cli(*MAY, "--group-by", "day", "--infer-type", "batch")
    assert run.code == 0, run.stderr
    assert_fits_80_columns(run.stdout)
    header = next(line for line in run.stdout.splitlines() if line.startswith("| Day"))
    assert header.split()[-2:] == ["Infers", "|"] and "Tasks" in header


def test_a_single_dimension_table_keeps_its_layout_when_it_fits(cli, may):
    run = cli("--from", "2026-05-08", "--to", "2026-05-11", "--timezone", "UTC", "--group-by", "day")
    assert run.code == 0, run.stderr
    assert "| Day        |  Tokens |  Prompt | Completion | Requests | Errors | Err % |" in run.stdout


def test_a_key_label_over_16_characters_is_cut_in_the_table_only(cli, cloud):
    long_key = "key-0123456789abcdef"  # 20 characters
    cloud.events = renamed_keys_index((long_key, "key-beta", ""))
    args = ("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "UTC",
            "--group-by", "day", "api-key", "--api-keys", long_key, "key-beta")
    table = cli(*args)
    assert table.code == 0, table.stderr
    labels = {words(line)[1] for line in table.stdout.splitlines() if line.startswith("| 2026-05-08")}
    assert labels == {"key-0123456789a…", "key-beta"}
    assert f'Filters: API keys "{long_key}", "key-beta"' in table.stdout
    assert_fits_80_columns(table.stdout)
    rows = cli(*args, "--format", "json").json()["rows"]
    assert {row["api_key"] for row in rows} == {long_key, "key-beta"}
    assert long_key in {row["api_key"] for row in csv.DictReader(io.StringIO(cli(*args, "--format", "csv").stdout))}


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (9_736, "9,736"), (99_999, "99,999"), (100_000, "100.0K"), (316_286, "316.3K"),
    (999_949, "999.9K"), (999_950, "1.000M"), (1_566_000, "1.566M"), (38_240_000, "38.24M"),
    (134_040_000, "134.0M"), (1_149_420_000, "1.149B"), (12_345_678_901_234, "12.35T"),
])
def test_compact_numbers_keep_four_significant_digits_in_six_characters(value, text):
    assert m.format_compact(value) == text


# ----------------------------------------------------------------------------------------------
# --chart
# ----------------------------------------------------------------------------------------------


def chart_lines(stdout: str) -> list[str]:
    """The chart's bar lines: after its "Total Tokens" heading, up to the blank line."""
    lines = stdout.splitlines()
    start = lines.index("Total Tokens") + 1
    return lines[start:lines.index("", start)]


def eighths(line: str) -> int:
    """A bar's length in eighths of a character."""
    return sum(8 if c == "█" else m.BAR_EIGHTHS.index(c) + 1 for c in line if c in m.BAR_EIGHTHS)


def test_chart_bars_are_proportional_to_total_tokens_in_eighths(cli, may):
    args = ("--from", "2026-05-01 12:00", "--to", "2026-05-12", "--timezone", "UTC",
            "--group-by", "day", "service-type", "--service-type", "all")
    run = cli(*args, "--chart")
    assert run.code == 0, run.stderr
    tokens = [row["total_tokens"] for row in cli(*args, "--format", "json").json()["rows"]]
    lines = chart_lines(run.stdout)
    assert len(lines) == len(tokens) == 11 * 3
    full = eighths(lines[tokens.index(max(tokens))])
    assert full % 8 == 0 and full >= 8 * 30
    for line, count in zip(lines, tokens):
        assert abs(eighths(line) - count / max(tokens) * full) <= 1, line
    assert lines[0].startswith("2026-05-01* My ") and lines[0].endswith(m.format_tokens(tokens[0], unit=False))
    assert all(len(line) <= 80 for line in run.stdout.splitlines())


def test_chart_lines_fit_80_columns_with_long_labels(cli, cloud):
    cloud.events = renamed_keys_index(LONG_KEYS)
    run = cli("--from", "2026-05-01", "--to", "2026-05-08", "--timezone", "UTC", "--group-by", "day",
              "service-type", "api-key", "--service-type", "all", "--api-keys", *LONG_KEYS, "--chart")
    assert run.code == 0, run.stderr
    lines = chart_lines(run.stdout)
    assert len(lines) == 7 * 3 * 3
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("2026-05-01 My     alpha-0123456789 █")  # labels aligned as in the table


def test_chart_rows_without_tokens_get_an_empty_bar(cli, may):
    run = cli("--from", "2026-06-03", "--to", "2026-06-08", "--timezone", "UTC", "--group-by", "day", "--chart")
    assert run.code == 0, run.stderr
    lines = chart_lines(run.stdout)
    assert [line.split()[0] for line in lines] == [f"2026-06-0{d}" for d in range(3, 8)]
    assert [eighths(line) > 0 for line in lines] == [True, True, False, False, False]
    assert lines[-1].split() == ["2026-06-07", "0.00K"]


def test_chart_is_drawn_in_ascii_hashes_on_a_non_utf8_stdout(cloud_env, may):
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    code = m.main([*MAY, "--group-by", "week", "--chart"], env=cloud_env, stdout=stdout, stderr=io.StringIO())
    assert code == 0
    lines = chart_lines(stdout.buffer.getvalue().decode("ascii"))
    assert len(lines) == 5 and all(len(line) <= 80 for line in lines)
    assert all(set(line.split()[1]) == {"#"} for line in lines)


def test_chart_uses_hashes_when_python_writes_ascii(cli_process, may):
    run = cli_process(*MAY, "--group-by", "month", "--chart", env={"PYTHONIOENCODING": "ascii"})
    assert run.code == 0, run.stderr
    (line,) = chart_lines(run.stdout)
    assert line.split()[:2] == ["2026-05", "#" * (80 - len("2026-05") - len("1,149.42M") - 2)]


@pytest.mark.parametrize("args", [
    ("--chart",),
    ("--group-by", "service-type", "--chart"),
    ("--group-by", "day", "--format", "json", "--chart"),
    ("--group-by", "day", "--format", "csv", "--chart"),
])
def test_chart_without_a_time_bucket_or_in_json_or_csv_is_a_usage_error(cli, may, args):
    run = cli("--last", "7d", *args)
    assert run.code == 2
    assert "--chart" in run.stderr
    assert may.maas_requests() == []
