"""How far a result can be trusted: its coverage (the 30-day retention, the 1-2 hour data lag) and
partial time buckets, end to end against the fake cloud at a fixed now."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import fakecloud
from conftest import Run, hourly_index, serve_at

PID = fakecloud.DEMO_PROJECT_ID
NOW = datetime(2026, 11, 30, 23, 15, 33, tzinfo=timezone.utc)  # 2026-12-01 07:15:33 in Asia/Shanghai
SHANGHAI = ("--timezone", "Asia/Shanghai", "--project-id", PID)
RETAINED_FROM = {"retained_from": "2026-11-01T07:15:33+08:00", "retained_from_ms": 1793488533000}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1000


def span(start: str, end: str) -> dict:
    return {"start": start, "end": end, "start_ms": ms(start), "end_ms": ms(end)}


def signing_at(cloud: fakecloud.FakeCloud, now: datetime) -> None:
    serve_at(cloud, now)


@pytest.fixture
def run_at_now(cli, cloud):
    """Run the script successfully at NOW (the fake cloud's clock too); ``now=`` moves both."""
    def run(*args: str, now: datetime = NOW) -> Run:
        signing_at(cloud, now)
        result = cli(*args, *SHANGHAI, now=now)
        assert result.code == 0, result.stderr
        return result
    return run


@pytest.fixture
def json_at_now(run_at_now):
    """The JSON document of a run at NOW."""
    return lambda *args, now=NOW: run_at_now(*args, "--format", "json", now=now).json()


# ----------------------------------------------------------------------------------------------
# coverage
# ----------------------------------------------------------------------------------------------


def test_a_recent_range_is_complete_and_provisional_from_three_hours_ago(json_at_now):
    document = json_at_now("--last", "7d")
    assert document["schema_version"] == 1
    assert document["coverage"] == {"complete": True, **RETAINED_FROM, "missing": [],
                                    "provisional_from": "2026-12-01T04:15:33+08:00",
                                    "provisional_from_ms": ms("2026-12-01T04:15:33+08:00")}


def test_the_live_part_before_the_retention_is_missing_merged_across_windows_and_service_types(cli, cloud):
    signing_at(cloud, NOW)
    run = cli("--from", "2026-08-01", "--to", "2026-11-15", "--service-type", "all", "--group-by", "month",
              *SHANGHAI, "--format", "json", now=NOW)
    assert run.code == 0, run.stderr
    assert len(cloud.maas_requests()) > 3 * 4  # months, windows and service types overlap in time
    assert run.json()["coverage"] == {"complete": False, **RETAINED_FROM,
                                      "missing": [span("2026-08-01T00:00:00+08:00", "2026-11-01T07:15:33+08:00")],
                                      "provisional_from": None, "provisional_from_ms": None}
    assert "MaaS keeps statistics for 30 days only: the part of the range before 2026-11-01 07:15:33" in run.stderr


def test_days_read_from_the_store_are_not_missing(json_at_now, tmp_path: Path):
    store = ("--store", str(tmp_path / "usage.db"))
    recorded = json_at_now("--from", "2026-10-20", "--to", "2026-11-10", *store, "--record",
                           now=NOW - timedelta(days=20))  # these days were inside the retention then
    assert recorded["coverage"]["complete"] and recorded["store"]["days_saved"] == 21
    document = json_at_now("--from", "2026-10-15", "--to", "2026-11-20", *store)
    assert document["store"]["days_read"] == 21
    assert document["coverage"]["missing"] == [span("2026-10-15T00:00:00+08:00", "2026-10-20T00:00:00+08:00")]
    assert document["coverage"]["complete"] is False


@pytest.mark.parametrize("end, provisional", [("2026-12-01 04:15:33", None),
                                              ("2026-12-01 04:15:34", "2026-12-01T04:15:33+08:00")])
def test_provisional_from_is_null_once_the_range_ended_three_hours_ago(json_at_now, end, provisional):
    coverage = json_at_now("--from", "2026-11-25", "--to", end)["coverage"]
    assert coverage["provisional_from"] == provisional
    assert coverage["provisional_from_ms"] == (None if provisional is None else ms(provisional))


def test_provisional_from_is_the_range_start_when_the_whole_range_is_recent(json_at_now):
    document = json_at_now("--last", "2h")
    assert document["coverage"]["provisional_from"] == document["period"]["start"] == "2026-12-01T05:15:33+08:00"
    assert document["coverage"]["provisional_from_ms"] == document["period"]["start_ms"]


@pytest.mark.parametrize("args", [("--last", "7d"), ("--from", "2026-08-01", "--to", "2026-11-15",
                                                     "--service-type", "all", "--group-by", "week")])
def test_a_dry_run_plan_carries_the_same_coverage(cli, json_at_now, args):
    plan = cli(*args, *SHANGHAI, "--format", "json", "--dry-run", now=NOW)
    assert plan.code == 0, plan.stderr
    assert plan.json()["dry_run"] is True
    assert plan.json()["coverage"] == json_at_now(*args)["coverage"]


# ----------------------------------------------------------------------------------------------
# partial rows
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def table_lines(run_at_now):
    """The lines of a table run at NOW."""
    return lambda *args: run_at_now(*args).stdout.splitlines()


def test_rows_whose_bucket_the_range_cuts_are_partial_in_json(json_at_now):
    cut = ("--from", "2026-11-03 12:00", "--to", "2026-11-06 12:00")
    rows = json_at_now(*cut, "--group-by", "day")["rows"]
    assert [(r["start"], r["partial"]) for r in rows] == [
        ("2026-11-03T12:00:00+08:00", True), ("2026-11-04T00:00:00+08:00", False),
        ("2026-11-05T00:00:00+08:00", False), ("2026-11-06T00:00:00+08:00", True)]
    whole_weeks = json_at_now("--from", "2026-11-02", "--to", "2026-11-16", "--group-by", "week")["rows"]
    assert [r["partial"] for r in whole_weeks] == [False, False]
    for no_bucket in ((), ("--group-by", "service-type", "--service-type", "all")):
        assert {r["partial"] for r in json_at_now(*cut, *no_bucket)["rows"]} == {False}


def test_a_week_row_is_labelled_with_its_monday_and_starred_when_the_range_starts_later(table_lines, run_at_now,
                                                                                         json_at_now):
    week = ("--from", "2026-11-04", "--to", "2026-11-09", "--group-by", "week")
    lines = table_lines(*week)
    assert [line.split("|")[1].strip() for line in lines if line.startswith("| 2026-")] == ["2026-11-02*"]
    (row,) = json_at_now(*week)["rows"]
    assert (row["start"], row["end"]) == ("2026-11-04T00:00:00+08:00", "2026-11-09T00:00:00+08:00")
    assert row["partial"] is True
    csv = run_at_now(*week, "--format", "csv").stdout.splitlines()
    assert csv[0].split(",")[:5] == ["start", "end", "service_type", "api_key", "total_tokens"]
    assert "partial" not in csv[0] and csv[1].startswith("2026-11-04T00:00:00+08:00,2026-11-09T00:00:00+08:00,2,,")


@pytest.mark.parametrize("unit, args", [
    ("day", ("--from", "2026-11-27", "--to", "2026-11-29 12:00")),
    ("week", ("--from", "2026-11-04", "--to", "2026-11-16")),
    ("month", ("--from", "2026-09-01", "--to", "2026-11-20"))])
def test_the_footnote_follows_the_grouped_table_when_a_row_is_partial(table_lines, unit, args):
    lines = table_lines(*args, "--group-by", unit)
    note = lines.index(f"* partial: the range starts or ends inside this {unit}")
    assert lines[note - 1].startswith("+-") and lines[note - 2].startswith("| Total")
    assert lines[note + 1] == "" and lines[note + 2].startswith("+-") and "Metric" in lines[note + 3]
    assert sum(1 for line in lines if line.startswith("| 2026-") and line.split("|")[1].strip().endswith("*")) == 1


def test_no_footnote_without_partial_rows(table_lines):
    for args in (("--from", "2026-11-02", "--to", "2026-11-16", "--group-by", "week"),
                 ("--last", "3d", "--group-by", "service-type", "--service-type", "all"), ("--last", "3d")):
        lines = table_lines(*args)
        assert not any("partial" in line or "*" in line for line in lines), args


def test_a_month_of_days_with_a_partial_last_day_fits_in_80_columns(table_lines, cloud):
    cloud.events = hourly_index(ms("2026-10-25T00:00:00+00:00"), ms("2026-12-02T00:00:00+00:00"))
    lines = table_lines("--from", "2026-11-01", "--group-by", "day")
    assert max(len(line) for line in lines) <= 80
    assert sum(1 for line in lines if line.startswith("| 2026-11-")) == 30
    assert [line.split("|")[1].strip() for line in lines if line.startswith("| 2026-12-")] == ["2026-12-01*"]
