"""--compare: the previous period beside the current one, summed exactly like it."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import hourly_index, oracle_metrics

PROJECT = fakecloud.DEMO_PROJECT_ID
NEW_YORK = "America/New_York"


def local(text: str, zone: str) -> datetime:
    """A local wall time as a UTC instant, computed without the script (fold 0: the first of a
    repeated time)."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


def previous(args: list[str], now: datetime, zone: str = NEW_YORK) -> tuple[datetime, datetime]:
    stdout, stderr = io.StringIO(), io.StringIO()
    assert m.main([*args, "--compare", "--timezone", zone, "--dry-run", "--format", "json", "--project-id",
                   PROJECT], env={}, now=now, stdout=stdout, stderr=stderr) == 0, stderr.getvalue()
    import json

    period = json.loads(stdout.getvalue())["previous"]["period"]
    return (datetime.fromtimestamp(period["start_ms"] / 1000, timezone.utc),
            datetime.fromtimestamp(period["end_ms"] / 1000, timezone.utc))


NOW = local("2026-12-10T14:00", NEW_YORK)


@pytest.mark.parametrize("args, start, end", [
    (["--yesterday"], "2026-12-08T00:00", "2026-12-09T00:00"),
    (["--last-week"], "2026-11-23T00:00", "2026-11-30T00:00"),
    (["--last-month"], "2026-10-01T00:00", "2026-11-01T00:00"),  # a 31-day month with a 25-hour day
    (["--today"], "2026-12-09T00:00", "2026-12-09T14:00"),
    (["--this-week"], "2026-11-30T00:00", "2026-12-03T14:00"),  # Monday Dec 7 to Thursday 14:00
    (["--this-month"], "2026-11-01T00:00", "2026-11-10T14:00"),
    (["--from", "2026-11-02", "--to", "2026-11-09"], "2026-10-26T00:00", "2026-11-02T00:00"),  # 7 local days, DST
    (["--from", "2026-12-09 06:00", "--to", "2026-12-10 06:00"], "2026-12-08T06:00", "2026-12-09T06:00"),
])
def test_the_previous_period_of_each_kind_of_range(args, start, end):
    assert previous(args, NOW) == (local(start, NEW_YORK), local(end, NEW_YORK))


def test_same_length_before_a_range_that_does_not_start_at_midnight():
    start, end = previous(["--last", "36h"], NOW)
    assert (start, end) == (NOW - 2 * (NOW - local("2026-12-09T02:00", NEW_YORK)), local("2026-12-09T02:00", NEW_YORK))


def test_a_day_the_previous_month_lacks_compares_with_the_whole_previous_month():
    now = local("2027-03-31T10:00", NEW_YORK)
    assert previous(["--this-month"], now) == (local("2027-02-01T00:00", NEW_YORK), local("2027-03-01T00:00", NEW_YORK))


def test_a_repeated_wall_time_means_its_first_occurrence():
    now = local("2026-12-01T01:30", NEW_YORK)  # Nov 1 01:30 happened twice in New York
    start, end = previous(["--this-month"], now)
    assert end == datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc)  # 01:30 EDT, the first


@pytest.fixture
def hourly(cloud):
    today_ms = int(datetime.now(timezone.utc).timestamp()) * 1000 // 86_400_000 * 86_400_000
    cloud.events = hourly_index(today_ms - 40 * 86_400_000, today_ms + 2 * 86_400_000)
    return cloud


def test_json_carries_the_previous_totals_and_the_exact_change(cli, hourly):
    run = cli("--last", "7d", "--timezone", "UTC", "--project-id", PROJECT, "--format", "json", "--compare")
    assert run.code == 0, run.stderr
    doc = run.json()
    cur, prev = doc["period"], doc["previous"]["period"]
    assert prev["end_ms"] == cur["start_ms"] and cur["start_ms"] - prev["start_ms"] == 7 * 86_400_000
    assert doc["totals"] == oracle_metrics(hourly.expected_usage(cur["start_ms"], cur["end_ms"], 2))
    assert doc["previous"]["totals"] == oracle_metrics(hourly.expected_usage(prev["start_ms"], prev["end_ms"], 2))
    assert doc["previous"]["coverage"]["complete"] is True
    for name in ("total_tokens", "total_requests", "total_errors"):
        now, before = doc["totals"][name], doc["previous"]["totals"][name]
        expected = m.Decimal((now - before) * 100) / before
        assert doc["change"][name] == float(expected.quantize(m.Decimal("0.1"), m.ROUND_HALF_UP))
    rates = doc["totals"]["error_rate"], doc["previous"]["totals"]["error_rate"]
    assert doc["change"]["error_rate"] == pytest.approx(rates[0] - rates[1], abs=0.0051)
    assert doc["change"]["total_completion_tasks"] is None  # previous value 0
    assert "rows" not in doc["previous"]


def test_the_table_gains_previous_and_change_columns_and_a_previous_line(cli, hourly):
    run = cli("--last", "7d", "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    assert run.code == 0, run.stderr
    header = next(line for line in run.stdout.splitlines() if "Metric" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == ["Metric", "Value", "Previous", "Change"]
    assert "| Total Tokens " in run.stdout and "%" in run.stdout.split("Total Tokens", 1)[1].splitlines()[0]
    lines = run.stdout.splitlines()
    assert lines[-2].startswith("Period: ") and lines[-1].startswith("Previous: ")
    completed = next(line for line in lines if "Error Rate" in line)
    assert completed.rstrip(" |").endswith("pp")


def test_new_and_dash_when_the_previous_value_is_zero(cli, cloud):
    cloud.events = []
    run = cli("--last", "7d", "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    assert run.code == 0
    tokens = next(line for line in run.stdout.splitlines() if "Total Tokens" in line)
    assert tokens.rstrip(" |").endswith("-")


def test_grouped_rows_of_the_previous_period_in_json_and_csv(cli, hourly):
    args = ("--last", "3d", "--timezone", "UTC", "--project-id", PROJECT, "--group-by", "day", "--compare")
    now = datetime.now(timezone.utc)  # both runs end at the same instant, however long the first one takes
    doc = cli(*args, "--format", "json", now=now).json()
    assert len(doc["previous"]["rows"]) == len(doc["rows"]) == 4  # the first and last days are partial
    assert set(doc["change"]) == set(m.METRIC_NAMES)
    rows = list(csv.DictReader(io.StringIO(cli(*args, "--format", "csv", now=now).stdout)))
    assert [r["start"] for r in rows] == [r["start"] for r in doc["rows"] + doc["previous"]["rows"]]


def test_a_dry_run_plans_the_previous_period_after_the_current_one(cli):
    plan = cli("--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--compare",
               "--dry-run", "--format", "json").json()
    bodies = [(r["body"]["start_time"], r["body"]["end_time"]) for r in plan["requests"]]
    assert bodies == [(1778169600000, 1779292800000), (1778169600000 - 13 * 86_400_000, 1778169600000)]


def test_a_failure_in_the_previous_period_fails_the_run(cli, cloud):
    cloud.add_fault("delay", seconds=0)  # the first (current) window succeeds
    cloud.add_fault("status", status=400, error_msg="bad window", times=5)
    run = cli("--last", "7d", "--timezone", "UTC", "--project-id", PROJECT, "--compare", "--retries", "0")
    assert run.code == 1 and run.stdout == "" and "bad window" in run.stderr


@pytest.mark.parametrize("extra", [["--format", "prometheus"], ["--record", "--store", "/tmp/never.db"]])
def test_compare_with_prometheus_or_record_is_a_usage_error(cli, cloud, extra):
    run = cli("--last", "7d", "--compare", *extra)
    assert run.code == 2 and "--compare" in run.stderr and cloud.log == []
