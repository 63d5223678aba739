"""Breakdowns end to end: --group-by day/week/month/service-type/api-key, several service types, CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from conftest import hourly_index, local_ms
from test_cli import expected_metrics

HOUR_MS = 3_600_000
METRICS = ("total_tokens", "prompt_tokens", "completion_tokens", "total_requests", "total_errors",
           "error_rate", "total_completion_tasks", "total_infer_count")


ms = local_ms


@pytest.fixture
def hourly(cloud):
    """A year of hourly usage for every service type, key and IP around the tested ranges."""
    cloud.events = hourly_index(ms("2025-12-01T00:00", "UTC"), ms("2026-11-30T00:00", "UTC"))
    return cloud


def metrics_of(row: dict) -> dict:
    return {name: row[name] for name in METRICS}


def test_daily_rows_are_exact_for_each_local_day(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-11", "--timezone", "Asia/Shanghai",
              "--group-by", "day", "--format", "json")
    assert run.code == 0, run.stderr
    rows = run.json()["rows"]
    assert [r["start"] for r in rows] == ["2026-05-08T00:00:00+08:00", "2026-05-09T00:00:00+08:00",
                                          "2026-05-10T00:00:00+08:00"]
    for row, day in zip(rows, ("2026-05-08", "2026-05-09", "2026-05-10")):
        start = ms(f"{day}T00:00", "Asia/Shanghai")
        assert metrics_of(row) == expected_metrics(hourly.events, start, start + 24 * HOUR_MS)
    whole = expected_metrics(hourly.events, ms("2026-05-08T00:00", "Asia/Shanghai"),
                             ms("2026-05-11T00:00", "Asia/Shanghai"))
    assert run.json()["totals"] == whole
    assert sorted((b["start_time"], b["end_time"]) for b in hourly.maas_requests()) == \
        [(r0, r0 + 24 * HOUR_MS) for r0 in (ms(f"2026-05-{d:02d}T00:00", "Asia/Shanghai") for d in (8, 9, 10))]


def test_dst_day_in_new_york_is_23_hours_and_weeks_start_monday(cli, hourly):
    run = cli("--from", "2026-03-04", "--to", "2026-03-12", "--timezone", "America/New_York",
              "--group-by", "day", "--format", "json")
    assert run.code == 0, run.stderr
    lengths = {r["start"][:10]: (datetime.fromisoformat(r["end"]) - datetime.fromisoformat(r["start"]))
               .total_seconds() / 3600 for r in run.json()["rows"]}
    assert lengths["2026-03-08"] == 23 and lengths["2026-03-07"] == 24 and lengths["2026-03-09"] == 24
    week = cli("--from", "2026-03-04", "--to", "2026-03-12", "--timezone", "America/New_York",
               "--group-by", "week", "--format", "json")
    rows = week.json()["rows"]
    assert [(r["start"], r["end"]) for r in rows] == [
        ("2026-03-04T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),  # clipped: starts on a Wednesday
        ("2026-03-09T00:00:00-04:00", "2026-03-12T00:00:00-04:00")]
    start, middle, end = (ms(f"2026-03-{day}T00:00", "America/New_York") for day in ("04", "09", "12"))
    assert metrics_of(rows[0]) == expected_metrics(hourly.events, start, middle)
    assert metrics_of(rows[1]) == expected_metrics(hourly.events, middle, end)
    assert week.json()["totals"] == run.json()["totals"]


def test_month_rows_are_clipped_and_long_months_split_into_windows(cli, hourly):
    run = cli("--from", "2026-01-15", "--to", "2026-04-10", "--timezone", "Asia/Shanghai",
              "--group-by", "month", "--format", "json")
    assert run.code == 0, run.stderr
    rows = run.json()["rows"]
    assert [r["start"][:10] for r in rows] == ["2026-01-15", "2026-02-01", "2026-03-01", "2026-04-01"]
    assert rows[-1]["end"] == "2026-04-10T00:00:00+08:00"
    bodies = hourly.maas_requests()
    assert len(bodies) == 5  # March has 31 days: two windows
    assert all(b["end_time"] - b["start_time"] <= 30 * 24 * HOUR_MS for b in bodies)
    for row in rows:
        start = ms(row["start"][:16], "Asia/Shanghai")
        end = ms(row["end"][:16], "Asia/Shanghai")
        assert metrics_of(row) == expected_metrics(hourly.events, start, end)
    table = cli("--from", "2026-01-15", "--to", "2026-04-10", "--timezone", "Asia/Shanghai", "--group-by", "month")
    assert "| 2026-01* " in table.stdout and "| 2026-04* " in table.stdout and "| Total " in table.stdout


def test_all_service_types_give_one_row_each_and_sum_to_the_total(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai",
              "--service-type", "all", "--format", "json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert [r["service_type"] for r in doc["rows"]] == [1, 2, 4]
    assert [r["service_name"] for r in doc["rows"]] == ["My Service", "Preset Service", "Custom Endpoint"]
    start, end = ms("2026-05-08T00:00", "Asia/Shanghai"), ms("2026-05-21T00:00", "Asia/Shanghai")
    for row in doc["rows"]:
        assert metrics_of(row) == expected_metrics(hourly.events, start, end, row["service_type"])
    for name in ("total_tokens", "total_requests", "total_errors"):
        assert doc["totals"][name] == sum(r[name] for r in doc["rows"])
    table = cli("--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--service-type", "all")
    assert table.stdout.startswith("MaaS All Services Usage Statistics - Region: cn-southwest-2\n")
    two = cli("--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--service-type", "my", "4")
    assert two.stdout.startswith("MaaS My Service + Custom Endpoint Usage Statistics")


def test_api_key_rows_query_each_key_alone(cli, hourly):
    keys = ["key-alpha", "key-beta", ""]
    run = cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "Asia/Shanghai",
              "--api-keys", *keys, "--group-by", "api-key", "--format", "json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert [r["api_key"] for r in doc["rows"]] == keys
    assert sorted(b["api_keys"] for b in hourly.maas_requests()) == sorted([k] for k in keys)
    start, end = ms("2026-05-08T00:00", "Asia/Shanghai"), ms("2026-05-10T00:00", "Asia/Shanghai")
    for row in doc["rows"]:
        assert metrics_of(row) == expected_metrics(hourly.events, start, end, api_keys=[row["api_key"]])
    assert doc["totals"] == expected_metrics(hourly.events, start, end, api_keys=keys)
    assert doc["api_keys"] == keys


def test_rows_come_in_time_then_service_then_key_order(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "UTC", "--service-type", "all",
              "--api-keys", "key-beta", "key-alpha", "--group-by", "day", "api-key", "--format", "json")
    assert run.code == 0, run.stderr
    order = [(r["start"], r["service_type"], r["api_key"]) for r in run.json()["rows"]]
    assert order == [(day, st, key) for day in ("2026-05-08T00:00:00+00:00", "2026-05-09T00:00:00+00:00")
                     for st in (1, 2, 4) for key in ("key-beta", "key-alpha")]


def test_csv_rows_parse_back_with_and_without_header(cli, hourly):
    args = ("--from", "2026-05-08", "--to", "2026-05-11", "--timezone", "Asia/Shanghai", "--group-by", "day")
    run = cli(*args, "--format", "csv")
    assert run.code == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    json_rows = cli(*args, "--format", "json").json()["rows"]
    assert len(rows) == 3
    for row, expected in zip(rows, json_rows):
        assert row["start"] == expected["start"] and row["api_key"] == ""
        assert int(row["total_tokens"]) == expected["total_tokens"]
        assert row["error_rate"] == f"{expected['error_rate']:.2f}"
    bare = cli(*args, "--format", "csv", "--no-header")
    assert list(csv.reader(io.StringIO(bare.stdout))) == list(csv.reader(io.StringIO(run.stdout)))[1:]


def test_csv_error_rate_is_empty_without_requests(cli, cloud):
    cloud.events = []
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--format", "csv")
    assert run.code == 0, run.stderr
    (row,) = csv.DictReader(io.StringIO(run.stdout))
    assert row["error_rate"] == "" and row["total_requests"] == "0"
    assert "| Error Rate        | -" in cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC").stdout


def test_a_month_of_days_fits_in_80_columns(cli, hourly):
    run = cli("--from", "2026-10-01", "--to", "2026-11-01", "--timezone", "Asia/Shanghai", "--group-by", "day")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert sum(1 for line in lines if line.startswith("| 2026-10-")) == 31
    total = next(line for line in lines if line.startswith("| Total"))
    assert total.rstrip("|").split("|")[-1].strip().endswith("%")


def test_week_rows_are_labelled_with_their_monday(cli, hourly):
    run = cli("--from", "2026-05-06", "--to", "2026-05-20", "--timezone", "UTC", "--group-by", "week")
    assert run.code == 0, run.stderr
    labels = [line.split("|")[1].strip() for line in run.stdout.splitlines() if line.startswith("| 2026-")]
    assert labels == ["2026-05-04*", "2026-05-11", "2026-05-18*"]


def test_table_format_passes_any_tabulate_style(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "UTC", "--group-by", "day",
              "--table-format", "github")
    assert run.code == 0, run.stderr
    assert "| Day        |" in run.stdout and "|------------|" in run.stdout
    assert "|\n\n| Metric" in run.stdout  # two markdown tables, not one


def test_unknown_table_format_lists_the_choices(cli, cloud):
    run = cli("--table-format", "fancy")
    assert run.code == 2 and "github" in run.stderr and "fancy_grid" in run.stderr


def test_dry_run_plans_every_bucket(cli, cloud):
    run = cli("--from", "2026-05-01", "--to", "2026-06-01", "--timezone", "UTC", "--group-by", "day",
              "--service-type", "all", "--dry-run")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 31 * 3 and all(line.startswith("POST ") for line in lines)
    assert cloud.log == []


def test_half_a_year_of_days_is_one_request_a_day_with_exact_totals(cli, hourly):
    # 190 days stay under the 200 requests/minute pacing; the pacing itself is unit-tested with a fake clock.
    run = cli("--from", "2026-05-14", "--to", "2026-11-20", "--timezone", "UTC", "--group-by", "day",
              "--format", "json")
    assert run.code == 0, run.stderr
    doc = run.json()
    days = len(doc["rows"])
    assert days == 190 and len(hourly.maas_requests()) == days
    whole = expected_metrics(hourly.events, ms("2026-05-14T00:00", "UTC"), ms("2026-11-20T00:00", "UTC"))
    assert doc["totals"] == whole
    assert hourly.max_in_flight <= 16


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_only_on_a_terminal_and_not_when_quiet():
    from maas_rest_usage_stats import Console

    terminal = _Terminal()
    Console(terminal).progress(12, 365)
    assert "12/365 requests" in terminal.getvalue()
    for console in (Console(io.StringIO()), Console(_Terminal(), quiet=True)):
        console.progress(12, 365)
        assert console.stream.getvalue() == ""
    few = _Terminal()
    Console(few).progress(1, 2)
    assert few.getvalue() == ""
