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
