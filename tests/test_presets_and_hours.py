"""The range presets (--today … --last-month), --group-by hour, and the progress line while the
run waits for the API's rate limit."""

from __future__ import annotations

import io
import threading
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

import fakecloud
import maas_rest_usage_stats as m
from conftest import hourly_index, serve_at
from test_cli import expected_metrics
from test_groups import metrics_of, ms
from test_timerange import ZONE_NAMES

NEW_YORK, BERLIN = "America/New_York", "Europe/Berlin"


def local(text: str, zone: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


def planned_period(cli, preset: str, zone: str, now: str) -> tuple[int, int]:
    """The (start_ms, end_ms) a dry run of ``preset`` plans at the local time ``now``."""
    run = cli(preset, "--timezone", zone, "--dry-run", "--format", "json", now=local(now, zone))
    assert run.code == 0, run.stderr
    doc = run.json()
    bodies = [request["body"] for request in doc["requests"]]
    assert (bodies[0]["start_time"], bodies[-1]["end_time"]) == (doc["period"]["start_ms"], doc["period"]["end_ms"])
    return doc["period"]["start_ms"], doc["period"]["end_ms"]


# -- presets ------------------------------------------------------------------------------------

PRESET_CASES = [
    # preset, zone, now (local), expected start (local), expected end (local; None = now)
    ("--today", NEW_YORK, "2026-11-01T12:00", "2026-11-01T00:00-04:00", None),
    ("--yesterday", NEW_YORK, "2026-11-02T10:30", "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00"),
    ("--this-week", NEW_YORK, "2026-11-04T12:00", "2026-11-02T00:00-05:00", None),
    ("--last-week", NEW_YORK, "2026-11-04T12:00", "2026-10-26T00:00-04:00", "2026-11-02T00:00-05:00"),
    ("--last-month", NEW_YORK, "2026-11-15T08:00", "2026-10-01T00:00-04:00", "2026-11-01T00:00-04:00"),
    ("--this-month", NEW_YORK, "2026-11-15T08:00", "2026-11-01T00:00-04:00", None),
    ("--today", BERLIN, "2026-03-29T12:00", "2026-03-29T00:00+01:00", None),
    ("--yesterday", BERLIN, "2026-03-30T09:00", "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00"),
    ("--this-week", BERLIN, "2026-03-29T23:30", "2026-03-23T00:00+01:00", None),  # Sunday: still this week
    ("--last-week", BERLIN, "2026-03-30T09:00", "2026-03-23T00:00+01:00", "2026-03-30T00:00+02:00"),
    ("--last-month", BERLIN, "2026-04-10T09:00", "2026-03-01T00:00+01:00", "2026-04-01T00:00+02:00"),
    ("--last-month", BERLIN, "2026-01-05T09:00", "2025-12-01T00:00+01:00", "2026-01-01T00:00+01:00"),
]


@pytest.mark.parametrize("preset, zone, now, start, end", PRESET_CASES)
def test_presets_start_and_end_at_local_midnights_across_dst(cli, preset, zone, now, start, end):
    expected_end = local(now, zone) if end is None else datetime.fromisoformat(end)
    assert planned_period(cli, preset, zone, now) == (
        int(datetime.fromisoformat(start).timestamp()) * 1000, int(expected_end.timestamp()) * 1000)


def test_yesterday_is_25_hours_after_fall_back_and_23_after_spring_forward(cli):
    start, end = planned_period(cli, "--yesterday", NEW_YORK, "2026-11-02T10:30")
    assert end - start == 25 * 3_600_000
    start, end = planned_period(cli, "--yesterday", BERLIN, "2026-03-30T09:00")
    assert end - start == 23 * 3_600_000


@pytest.mark.parametrize("flags", [
    ("--today", "--yesterday"), ("--this-week", "--last-week"), ("--this-month", "--last-month"),
    ("--yesterday", "--last", "7d"), ("--last-week", "--from", "2026-05-01"), ("--today", "--to", "now"),
    ("--last-month", "--until", "2026-05-19"), ("--this-month", "--today"),
])
def test_presets_exclude_each_other_and_the_other_range_flags(cli, cloud, flags):
    run = cli(*flags, "--project-id", "0" * 32)
    assert run.code == 2
    assert run.stderr.startswith("error:") and "cannot be combined" in run.stderr
    assert cloud.maas_requests() == []


# -- --group-by hour ----------------------------------------------------------------------------

HOUR_MS = 3_600_000


def at_now(cloud, now: datetime) -> datetime:
    """Run at ``now``: the fake cloud's clock follows, so signatures are fresh and data retained."""
    serve_at(cloud, now)
    cloud.events = hourly_index(int(now.timestamp() * 1000) - 20 * 24 * HOUR_MS, int(now.timestamp() * 1000))
    return now


def hour_run(cli, cloud, *args: str, day: str, zone: str = NEW_YORK, fmt: str = "json"):
    now = at_now(cloud, local(day, zone) + timedelta(days=4))
    run = cli("--from", day, "--to", (date.fromisoformat(day) + timedelta(days=1)).isoformat(), "--timezone", zone,
              "--group-by", "hour", "--format", fmt, "--project-id", fakecloud.DEMO_PROJECT_ID, *args, now=now)
    assert run.code == 0, run.stderr
    return run


@pytest.mark.parametrize("day, zone, hours", [("2026-11-01", NEW_YORK, 25), ("2026-03-08", NEW_YORK, 23),
                                              ("2026-03-29", BERLIN, 23), ("2026-05-12", BERLIN, 24)])
def test_hour_rows_follow_local_clock_hours_with_exact_totals(cli, cloud, day, zone, hours):
    rows = hour_run(cli, cloud, day=day, zone=zone).json()["rows"]
    assert len(rows) == hours
    start = ms(f"{day}T00:00", zone)
    for index, row in enumerate(rows):
        assert (row["start"], row["end"]) == (
            datetime.fromtimestamp((start + index * HOUR_MS) / 1000, ZoneInfo(zone)).isoformat(),
            datetime.fromtimestamp((start + (index + 1) * HOUR_MS) / 1000, ZoneInfo(zone)).isoformat())
        assert metrics_of(row) == expected_metrics(cloud.events, start + index * HOUR_MS, start + (index + 1) * HOUR_MS)
        assert row["partial"] is False
    assert sorted(body["start_time"] for body in cloud.maas_requests()) == [start + i * HOUR_MS for i in range(hours)]


def test_only_the_repeated_hour_of_a_fall_back_day_carries_its_offset(cli, cloud):
    table = hour_run(cli, cloud, day="2026-11-01", fmt="table").stdout
    labels = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| 2026-")]
    assert labels[:4] == ["2026-11-01 00:00", "2026-11-01 01:00 -04:00", "2026-11-01 01:00 -05:00",
                          "2026-11-01 02:00"]
    assert len(labels) == 25 and labels[-1] == "2026-11-01 23:00"
    assert sum(len(label) > len("2026-11-01 00:00") for label in labels) == 2
    assert max(len(line) for line in table.splitlines()) <= 80


def test_spring_forward_day_has_no_0200_row(cli, cloud):
    table = hour_run(cli, cloud, day="2026-03-08", fmt="table").stdout
    labels = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| 2026-")]
    assert "2026-03-08 02:00" not in labels and labels[1:3] == ["2026-03-08 01:00", "2026-03-08 03:00"]


def test_csv_has_a_row_per_hour(cli, cloud):
    lines = hour_run(cli, cloud, day="2026-11-01", fmt="csv").stdout.splitlines()
    assert len(lines) == 1 + 25


def test_hours_cut_by_the_range_are_partial(cli, cloud):
    now = at_now(cloud, local("2026-11-28T18:00", NEW_YORK))
    args = ("--from", "2026-11-28 09:30", "--to", "2026-11-28 14:15", "--timezone", NEW_YORK, "--group-by", "hour")
    run = cli(*args, "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert [row["partial"] for row in run.json()["rows"]] == [True, False, False, False, False, True]
    assert run.json()["rows"][0]["start"] == "2026-11-28T09:30:00-05:00"
    table = cli(*args, now=now).stdout
    assert "| 2026-11-28 09:00* " in table and "| 2026-11-28 14:00* " in table and "| 2026-11-28 10:00  " in table
    assert "* partial: the range starts or ends inside this hour" in table


def test_an_eight_day_hour_table_fits_in_80_columns(cli, cloud):
    now = at_now(cloud, local("2026-11-28T18:30", NEW_YORK))
    run = cli("--last", "8d", "--timezone", NEW_YORK, "--group-by", "hour", now=now)  # 193 requests: no wait
    assert run.code == 0, run.stderr
    assert max(len(line) for line in run.stdout.splitlines()) <= 80
    assert len(cloud.maas_requests()) == 8 * 24 + 1


@pytest.mark.parametrize("split", [("service-type",), ("api-key", "--api-keys", "key-alpha", "key-beta", "")])
def test_an_hour_table_with_a_second_dimension_fits_in_80_columns(cli, cloud, split):
    now = at_now(cloud, local("2026-11-28T18:30", NEW_YORK))
    run = cli("--last", "2d", "--timezone", NEW_YORK, "--group-by", "hour", *split, now=now)
    assert run.code == 0, run.stderr
    assert max(len(line) for line in run.stdout.splitlines()) <= 80


def test_hour_buckets_never_read_or_save_stored_days(cli, cloud, tmp_path):
    store = str(tmp_path / "usage.db")
    base = ("--timezone", NEW_YORK, "--project-id", fakecloud.DEMO_PROJECT_ID, "--store", store)
    now = at_now(cloud, local("2026-11-28T18:00", NEW_YORK))
    assert cli("--from", "2026-11-20", "--to", "2026-11-22", *base, "--record", now=now).code == 0
    cloud.clear_log()
    run = cli("--from", "2026-11-20", "--to", "2026-11-22", *base, "--group-by", "hour", "--format", "json",
              now=now)
    assert run.code == 0, run.stderr
    assert len(cloud.maas_requests()) == 48
    assert {row["source"] for row in run.json()["rows"]} == {"live"}
    assert (run.json()["store"]["days_read"], run.json()["store"]["days_saved"]) == (0, 0)
    assert run.json()["totals"] == expected_metrics(cloud.events, ms("2026-11-20T00:00", NEW_YORK),
                                                    ms("2026-11-22T00:00", NEW_YORK))


@pytest.mark.parametrize("flags", [("--group-by", "hour", "--record", "--store", "x.db"),
                                   ("--group-by", "hour", "day"), ("--group-by", "hour,month")])
def test_hour_with_record_or_another_time_bucket_is_a_usage_error(cli, cloud, flags):
    run = cli(*flags, "--project-id", fakecloud.DEMO_PROJECT_ID)
    assert run.code == 2 and run.stderr.startswith("error:")
    assert cloud.maas_requests() == []


@settings(deadline=None, max_examples=200)
@given(zone=st.sampled_from([ZoneInfo(name) for name in ZONE_NAMES]),
       start=st.integers(min_value=946_684_800_000, max_value=2_240_000_000_000),
       span=st.integers(min_value=1, max_value=10 * 24 * HOUR_MS))
def test_hour_buckets_cover_the_period_and_start_on_local_clock_hours(zone, start, span):
    period = m.Period(m.EPOCH + timedelta(milliseconds=start), m.EPOCH + timedelta(milliseconds=start + span))
    buckets = m.split_buckets(period, m.HOUR, zone)
    assert (buckets[0].start, buckets[-1].end) == (period.start, period.end)
    assert all(left.end == right.start for left, right in zip(buckets, buckets[1:]))
    for bucket in buckets[1:]:
        wall = bucket.start.astimezone(zone)
        shifted = (bucket.start - timedelta(seconds=1)).astimezone(zone).utcoffset() != wall.utcoffset()
        assert (wall.minute, wall.second, wall.microsecond) == (0, 0, 0) or shifted  # Lord Howe shifts 30 min
        assert bucket.end - bucket.start <= timedelta(hours=1)


# -- the progress line while waiting for the API limit ------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def last_line(stream: io.StringIO) -> str:
    return stream.getvalue().split("\r")[-1].replace("\x1b[K", "")


def test_progress_says_it_waits_for_the_api_limit_and_about_how_long():
    terminal = Terminal()
    console = m.Console(terminal)
    console.progress(199, 365)
    console.rate_wait(54.2)
    assert last_line(terminal) == "199/365 requests, waiting for the API limit (200/min), about 55 s left"
    console.rate_wait(None)
    assert last_line(terminal) == "199/365 requests"


def test_time_left_counts_the_minutes_of_later_batches():
    terminal = Terminal()
    console = m.Console(terminal)
    console.progress(200, 1000)  # 800 to go: this wait, then three more minutes of 200 each
    console.rate_wait(60.0)
    assert last_line(terminal) == "200/1000 requests, waiting for the API limit (200/min), about 4 min left"


def test_the_limiter_reports_its_wait_and_its_end_to_the_console():
    from test_render import LimiterClock

    terminal = Terminal()
    console = m.Console(terminal)
    clock = LimiterClock()
    lines: list[str] = []

    def on_wait(seconds: float | None) -> None:
        console.rate_wait(seconds)
        lines.append(last_line(terminal))

    limiter = m.RateLimiter(m.RATE_LIMIT, m.RATE_PERIOD, m.Clock(clock), on_wait=on_wait)
    never = threading.Event()
    for _ in range(200):
        assert limiter.acquire(never)
    clock.advance(5.0)
    console.progress(199, 216)  # a 9-day hour report is 216 requests
    assert lines == []
    assert limiter.acquire(never)
    assert lines == [f"199/216 requests, waiting for the API limit (200/min), about {left} s left"
                     for left in range(55, 0, -1)] + ["199/216 requests"]  # counting down each second
    assert clock.monotonic() == 60.0


def test_no_wait_line_off_a_terminal_or_when_quiet():
    for console in (m.Console(io.StringIO()), m.Console(Terminal(), quiet=True)):
        console.progress(199, 365)
        console.rate_wait(55.0)
        assert console.stream.getvalue() == ""
