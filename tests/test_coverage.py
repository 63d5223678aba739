"""How far a result can be trusted: its coverage (the 30-day retention, the 1-2 hour data lag) and
partial time buckets, end to end against the fake cloud at a fixed now."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import fakecloud

PID = fakecloud.DEMO_PROJECT_ID
NOW = datetime(2026, 11, 30, 23, 15, 33, tzinfo=timezone.utc)  # 2026-12-01 07:15:33 in Asia/Shanghai
SHANGHAI = ("--timezone", "Asia/Shanghai", "--project-id", PID)
RETAINED_FROM = {"retained_from": "2026-11-01T07:15:33+08:00", "retained_from_ms": 1793488533000}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1000


def span(start: str, end: str) -> dict:
    return {"start": start, "end": end, "start_ms": ms(start), "end_ms": ms(end)}


def signing_at(cloud: fakecloud.FakeCloud, now: datetime) -> None:
    cloud.server_time_offset = (now - datetime.now(timezone.utc)).total_seconds()  # the run signs at its now


@pytest.fixture
def run_at_now(cli, cloud):
    """Run the script at NOW (the fake cloud's clock too) and return its JSON document."""
    def run(*args: str, now: datetime = NOW) -> dict:
        signing_at(cloud, now)
        result = cli(*args, *SHANGHAI, "--format", "json", now=now)
        assert result.code == 0, result.stderr
        return result.json()
    return run


# ----------------------------------------------------------------------------------------------
# coverage
# ----------------------------------------------------------------------------------------------


def test_a_recent_range_is_complete_and_provisional_from_three_hours_ago(run_at_now):
    document = run_at_now("--last", "7d")
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


def test_days_read_from_the_store_are_not_missing(run_at_now, tmp_path: Path):
    store = ("--store", str(tmp_path / "usage.db"))
    recorded = run_at_now("--from", "2026-10-20", "--to", "2026-11-10", *store, "--record", now=NOW - timedelta(days=20))
    assert recorded["coverage"]["complete"] and recorded["store"]["days_saved"] == 21
    document = run_at_now("--from", "2026-10-15", "--to", "2026-11-20", *store)
    assert document["store"]["days_read"] == 21
    assert document["coverage"]["missing"] == [span("2026-10-15T00:00:00+08:00", "2026-10-20T00:00:00+08:00")]
    assert document["coverage"]["complete"] is False


@pytest.mark.parametrize("end, provisional", [("2026-12-01 04:15:33", None),
                                              ("2026-12-01 04:15:34", "2026-12-01T04:15:33+08:00")])
def test_provisional_from_is_null_once_the_range_ended_three_hours_ago(run_at_now, end, provisional):
    coverage = run_at_now("--from", "2026-11-25", "--to", end)["coverage"]
    assert coverage["provisional_from"] == provisional
    assert coverage["provisional_from_ms"] == (None if provisional is None else ms(provisional))


def test_provisional_from_is_the_range_start_when_the_whole_range_is_recent(run_at_now):
    document = run_at_now("--last", "2h")
    assert document["coverage"]["provisional_from"] == document["period"]["start"] == "2026-12-01T05:15:33+08:00"
    assert document["coverage"]["provisional_from_ms"] == document["period"]["start_ms"]


@pytest.mark.parametrize("args", [("--last", "7d"), ("--from", "2026-08-01", "--to", "2026-11-15",
                                                     "--service-type", "all", "--group-by", "week")])
def test_a_dry_run_plan_carries_the_same_coverage(cli, run_at_now, args):
    plan = cli(*args, *SHANGHAI, "--format", "json", "--dry-run", now=NOW)
    assert plan.code == 0, plan.stderr
    assert plan.json()["dry_run"] is True
    assert plan.json()["coverage"] == run_at_now(*args)["coverage"]
