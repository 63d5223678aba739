"""End to end: time-zone names, POSIX TZ values, ISO 8601 instants and the 1970 limit, as the user
meets them on the command line (dry runs show the request bodies without sending anything)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import fakecloud

UTC = timezone.utc
NOW = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # winter in the north: CST is China, US Central and Cuba
PID = fakecloud.DEMO_PROJECT_ID


def ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def plan(cli, *args, now=NOW, env=None):
    run = cli(*args, "--dry-run", "--format", "json", now=now, env=env)
    assert run.code == 0, run.stderr
    return run.json()


# -- times ---------------------------------------------------------------------------------------

def test_an_iso_instant_reaches_the_request_body_to_the_millisecond(cli, cloud):
    document = plan(cli, "--from", "2026-11-20T07:15:28.500+08:00", "--to", "2026-11-21T00:00:00.123456Z",
                    "--timezone", "UTC")
    start, end = ms(datetime(2026, 11, 19, 23, 15, 28, 500000, tzinfo=UTC)), ms(datetime(2026, 11, 21, 0, 0, 0, 123000,
                                                                                         tzinfo=UTC))
    assert [(r["body"]["start_time"], r["body"]["end_time"]) for r in document["requests"]] == [(start, end)]
    assert (document["period"]["start_ms"], document["period"]["end_ms"]) == (start, end)
    assert cloud.log == []


def test_a_json_period_end_fed_back_as_from_continues_without_gap_or_overlap(cli):
    for to in ("2026-11-23T10:00:00.123456+08:00", "now"):
        first = plan(cli, "--from", "2026-11-20", "--to", to, "--timezone", "Asia/Shanghai")
        end = first["period"]["end"]
        second = plan(cli, "--from", end, "--timezone", "America/New_York", now=NOW + timedelta(hours=2))
        assert second["period"]["start_ms"] == first["period"]["end_ms"]
        assert second["requests"][0]["body"]["start_time"] == first["requests"][-1]["body"]["end_time"]
    assert first["period"]["end_ms"] == ms(NOW)


def test_a_real_run_keeps_whole_seconds_in_the_period_line_and_exact_ms_in_json(cli):
    now = datetime.now(UTC)
    start = (now - timedelta(days=1)).replace(microsecond=250_000)
    args = ("--from", start.isoformat(), "--timezone", "UTC", "--project-id", PID)
    table = cli(*args)
    assert table.code == 0, table.stderr
    assert f"Period: {start:%Y-%m-%d %H:%M:%S} ~ " in table.stdout
    document = cli(*args, "--format", "json")
    assert document.code == 0, document.stderr
    assert document.json()["period"]["start_ms"] == ms(start)


@pytest.mark.parametrize("args", [["--from", "20260508", "--to", "20260521"],
                                  ["--from", "20260508", "--until", "20260520"],
                                  ["--from", "2026-05-08T00:00:00+08:00", "--to", "2026-05-20T16:00:00Z"]],
                         ids=["from-to", "until", "instants"])
def test_compact_dates_and_instants_give_the_api_documentation_example(cli, args):
    document = plan(cli, *args, "--timezone", "Asia/Shanghai")
    body = document["requests"][0]["body"]
    assert (body["start_time"], body["end_time"]) == (1778169600000, 1779292800000)


# -- ranges --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--from", "1970-01-01", "--timezone", "Asia/Tokyo"],
                                  ["--from", "1970-01-01", "--timezone", "Asia/Tokyo", "--dry-run"],
                                  ["--to", "1970-01-03", "--timezone", "UTC"],
                                  ["--from", "1970-01-01T08:00:00+09:00", "--to", "1970-02-01"]],
                         ids=["tokyo", "tokyo-dry-run", "to-only", "instant"])
def test_a_range_before_1970_utc_is_refused_before_anything_is_planned(cli, cloud, args):
    run = cli(*args, now=NOW)
    assert run.code == 2, run.stderr
    assert "before 1970-01-01 00:00:00 UTC" in run.stderr
    assert run.stdout == "" and cloud.log == []


def test_a_range_from_1970_utc_midnight_is_accepted(cli):
    document = plan(cli, "--from", "1970-01-01", "--to", "1970-01-02", "--timezone", "UTC")
    assert document["requests"][0]["body"]["start_time"] == 0


@pytest.mark.parametrize("value, code", [("3660d", 0), ("87840h", 0), ("3661d", 2), ("87841h", 2)])
def test_last_is_at_most_3660_days(cli, cloud, value, code):
    run = cli("--last", value, "--timezone", "UTC", "--dry-run", "-q", now=NOW)
    assert run.code == code, run.stderr
    if code:
        assert "3660 days" in run.stderr
