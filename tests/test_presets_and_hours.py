"""The range presets (--today … --last-month), --group-by hour, and the progress line while the
run waits for the API's rate limit."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from test_groups import ms

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
