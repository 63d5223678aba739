"""Time-range promises: WHEN parsing, the range flags, 30-day windows and calendar buckets.

Every test uses a fixed ``NOW`` and explicit IANA zones, so nothing depends on the machine's
clock or time zone.
"""

from __future__ import annotations

import calendar
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import maas_rest_usage_stats as m  # noqa: E402

UTC = timezone.utc
NOW = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # 13:00 in Shanghai, exactly 00:00 in New York
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SANTIAGO = ZoneInfo("America/Santiago")
KOLKATA = ZoneInfo("Asia/Kolkata")
ZUTC = ZoneInfo("UTC")
ZONE_NAMES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe",
              "America/Santiago", "Asia/Kolkata", "UTC"]
ZONES = [ZoneInfo(name) for name in ZONE_NAMES]
ZONE = st.sampled_from(ZONES)
DATES = st.dates(min_value=date(2000, 1, 2), max_value=date(2040, 12, 31))

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000

PROPERTY = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


def local(zone, *fields) -> datetime:
    """An aware instant in UTC from local wall-clock fields."""
    return datetime(*fields, tzinfo=zone).astimezone(UTC)


def resolve(zone=SHANGHAI, now=NOW, **flags) -> m.Period:
    return m.resolve_period(m.RangeRequest(**flags), zone, now)


def durations(buckets):
    return [b.end - b.start for b in buckets]


# ----------------------------------------------------------------------------------------------
# parse_when
# ----------------------------------------------------------------------------------------------


def test_date_means_local_midnight_of_that_day():
    assert m.parse_when("2026-05-08", SHANGHAI, NOW) == datetime(2026, 5, 7, 16, 0, tzinfo=UTC)
    assert m.parse_when("2026-05-08", NEW_YORK, NOW) == datetime(2026, 5, 8, 4, 0, tzinfo=UTC)
    assert m.parse_when("2026-05-08", KOLKATA, NOW) == datetime(2026, 5, 7, 18, 30, tzinfo=UTC)


@pytest.mark.parametrize("text, expected_local", [
    ("2026-05-08 09:30", (2026, 5, 8, 9, 30, 0)),
    ("2026-05-08T09:30", (2026, 5, 8, 9, 30, 0)),
    ("2026-05-08 09:30:15", (2026, 5, 8, 9, 30, 15)),
    ("2026-05-08T09:30:15", (2026, 5, 8, 9, 30, 15)),
    ("  2026-05-08 23:59:59  ", (2026, 5, 8, 23, 59, 59)),
])
def test_date_time_forms_are_local_wall_clock(text, expected_local):
    assert m.parse_when(text, SHANGHAI, NOW) == local(SHANGHAI, *expected_local)


def test_now_is_the_given_instant():
    assert m.parse_when("now", SHANGHAI, NOW) == NOW
    assert m.parse_when(" NOW ", NEW_YORK, NOW) == NOW


def test_today_and_yesterday_are_local_midnights_of_the_zone():
    # NOW is 2026-11-24 13:00 in Shanghai
    assert m.parse_when("today", SHANGHAI, NOW) == local(SHANGHAI, 2026, 11, 24)
    assert m.parse_when("Yesterday", SHANGHAI, NOW) == local(SHANGHAI, 2026, 11, 23)
    # NOW is exactly 00:00 on 2026-11-24 in New York: today starts now
    assert m.parse_when("today", NEW_YORK, NOW) == NOW
    assert m.parse_when("yesterday", NEW_YORK, NOW) == local(NEW_YORK, 2026, 11, 23)
    # the local date, not the UTC date: 2026-11-24 20:00 UTC is already 2026-11-25 in Shanghai
    late = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
    assert m.parse_when("today", SHANGHAI, late) == local(SHANGHAI, 2026, 11, 25)


@pytest.mark.parametrize("text", [
    "2026-02-30", "2026-02-29", "2026-13-01", "2026-00-10", "2026-04-31",
    "2026-05-08 24:00", "2026-05-08 23:60", "2026-05-08 10:00:60",
])
def test_impossible_dates_and_times_are_usage_errors(text):
    with pytest.raises(m.UsageError) as caught:
        m.parse_when(text, SHANGHAI, NOW)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text", [
    "", "   ", "tomorrow", "2026/05/08", "08-05-2026", "2026-5-8", "2026-0508", "202605-08", "2026050",
    "202605081", "2026-05-08 10", "1778169600000", "next week", "2026-05-08T10:00:00.1234567Z",
    "2026-05-08T10:00.5Z", "2026-05-08T10:00:00.Z", "2026-05-08T10:00:00+8", "2026-05-08T10:00:00+08:0",
    "2026-05-08T10:00:00 +08:00", "2026-05-08T10:00:00UTC", "20260508T100000Z", "2026-05-08T10:00:00+08:00Z",
])
def test_garbage_is_a_usage_error(text):
    with pytest.raises(m.UsageError) as caught:
        m.parse_when(text, SHANGHAI, NOW)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text", ["2026-03-08 02:30", "2026-03-08T02:00:00", "2026-03-08 02:59:59"])
def test_nonexistent_local_time_in_dst_gap_is_a_usage_error(text):
    with pytest.raises(m.UsageError) as caught:
        m.parse_when(text, NEW_YORK, NOW)
    assert caught.value.exit_code == 2
    assert "does not exist" in str(caught.value)


def test_times_around_the_dst_gap_are_accepted():
    assert m.parse_when("2026-03-08 01:59:59", NEW_YORK, NOW) == datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC)
    assert m.parse_when("2026-03-08 03:00", NEW_YORK, NOW) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_ambiguous_local_time_is_accepted_as_one_of_its_two_instants():
    result = m.parse_when("2026-11-01 01:30", NEW_YORK, NOW)
    assert result in (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC))


@pytest.mark.parametrize("text", ["0001-01-01", "0001-01-01 00:00", "9999-12-31", "9999-12-31 23:59"])
@pytest.mark.parametrize("zone", [SHANGHAI, NEW_YORK, ZUTC], ids=lambda z: z.key)
def test_dates_at_the_edge_of_the_calendar_are_usage_errors_not_crashes(text, zone):
    # year 1 east of UTC and year 9999 west of UTC once escaped as OverflowError
    with pytest.raises(m.UsageError) as caught:
        m.parse_when(text, zone, NOW)
    assert caught.value.exit_code == 2


# ----------------------------------------------------------------------------------------------
# ISO 8601 instants, compact dates and fractions of a second
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2026-11-24T07:15:28+00:00", datetime(2026, 11, 24, 7, 15, 28, tzinfo=UTC)),
    ("2026-11-24T07:15:28Z", datetime(2026, 11, 24, 7, 15, 28, tzinfo=UTC)),
    ("2026-11-24t07:15:28z", datetime(2026, 11, 24, 7, 15, 28, tzinfo=UTC)),
    ("2026-11-24T07:15:28.500+08:00", datetime(2026, 11, 23, 23, 15, 28, 500000, tzinfo=UTC)),
    ("2026-11-24T07:15:28-05:00", datetime(2026, 11, 24, 12, 15, 28, tzinfo=UTC)),
    ("2026-11-24T07:15:28+0530", datetime(2026, 11, 24, 1, 45, 28, tzinfo=UTC)),
    ("2026-11-24T07:15:28+05", datetime(2026, 11, 24, 2, 15, 28, tzinfo=UTC)),
    ("2026-11-24T07:15Z", datetime(2026, 11, 24, 7, 15, tzinfo=UTC)),
    ("2026-11-24 07:15:28+08:00", datetime(2026, 11, 23, 23, 15, 28, tzinfo=UTC)),
    ("2026-03-08T02:30:00-05:00", datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),  # a fixed offset has no DST gap
])
@pytest.mark.parametrize("zone", [SHANGHAI, NEW_YORK, ZUTC], ids=lambda z: z.key)
def test_iso_instant_with_an_offset_is_that_instant_in_any_zone(text, expected, zone):
    assert m.parse_when(text, zone, NOW) == expected


@pytest.mark.parametrize("fraction, millisecond", [
    (".5", 500), (".500", 500), (".1", 100), (",25", 250), (".123456", 123), (".9999", 999),
    (".999999", 999), (".000999", 0), (".0", 0), (".001", 1),
])
@pytest.mark.parametrize("suffix", ["Z", "+08:00", ""], ids=["utc", "offset", "local"])
def test_fractions_of_a_second_are_rounded_down_to_the_millisecond(fraction, millisecond, suffix):
    moment = m.parse_when(f"2026-11-24T07:15:28{fraction}{suffix}", SHANGHAI, NOW)
    whole = m.parse_when(f"2026-11-24T07:15:28{suffix}", SHANGHAI, NOW)
    assert m.to_epoch_ms(moment) - m.to_epoch_ms(whole) == millisecond


@pytest.mark.parametrize("text", ["2026-11-24T07:15:28+24:00", "2026-11-24T07:15:28-23:60",
                                  "2026-11-24T07:15:28+99"])
def test_impossible_utc_offsets_are_usage_errors(text):
    with pytest.raises(m.UsageError, match="UTC offset") as caught:
        m.parse_when(text, SHANGHAI, NOW)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text", ["2026-02-30T10:00:00Z", "2026-11-24T24:00:00+08:00", "20260230", "20261301"])
def test_impossible_dates_in_the_new_forms_are_usage_errors(text):
    with pytest.raises(m.UsageError, match="not a valid date") as caught:
        m.parse_when(text, SHANGHAI, NOW)
    assert caught.value.exit_code == 2


@PROPERTY
@given(moment=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 12, 31),
                           timezones=st.sampled_from(ZONES + [UTC])),
       reader=ZONE)
def test_a_json_instant_fed_back_is_the_same_millisecond_in_any_zone(moment, reader):
    # JSON carries isoformat() of an instant (microseconds when now had them): the next run's --from
    # must start at exactly the previous end_ms, neither a gap nor an overlap
    assert m.to_epoch_ms(m.parse_when(moment.isoformat(), reader, NOW)) == m.to_epoch_ms(moment)


@PROPERTY
@given(day=DATES, zone=ZONE)
def test_a_compact_date_is_the_same_day_as_the_dashed_date(day, zone):
    assert m.parse_when(day.strftime("%Y%m%d"), zone, NOW) == m.parse_when(day.isoformat(), zone, NOW)


def test_until_takes_a_compact_date():
    assert resolve(SHANGHAI, start="20260501", until="20260519") == \
        resolve(SHANGHAI, start="2026-05-01", until="2026-05-19")


# ----------------------------------------------------------------------------------------------
# parse_last
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("7d", timedelta(days=7)), ("14d", timedelta(days=14)), ("30d", timedelta(days=30)),
    ("90d", timedelta(days=90)), ("1d", timedelta(days=1)), ("24h", timedelta(hours=24)),
    ("1h", timedelta(hours=1)), (" 7D ", timedelta(days=7)),
])
def test_last_reads_whole_days_and_hours(text, expected):
    assert m.parse_last(text) == expected


@pytest.mark.parametrize("text", ["0d", "0h", "-1d", "7w", "7", "d", "", "1.5d", "7 d", "7dd", "+7d", "7m"])
def test_last_rejects_zero_negative_and_unknown_units(text):
    with pytest.raises(m.UsageError) as caught:
        m.parse_last(text)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text, allowed", [("3660d", True), ("87840h", True), ("3661d", False), ("87841h", False),
                                           ("400000d", False)])
def test_last_is_at_most_3660_days_or_87840_hours(text, allowed):
    if allowed:
        assert m.parse_last(text) == timedelta(days=3660)
        return
    with pytest.raises(m.UsageError, match="3660 days") as caught:
        m.parse_last(text)
    assert caught.value.exit_code == 2


def test_last_in_hours_is_not_limited_by_the_day_count():
    # 40000 h is about 4.6 years: once refused as "longer than a century" because N was compared with 100*366
    assert m.parse_last("40000h") == timedelta(hours=40000)


# ----------------------------------------------------------------------------------------------
# resolve_period
# ----------------------------------------------------------------------------------------------


def test_seed_example_from_the_api_documentation():
    period = resolve(SHANGHAI, start="2026-05-08", to="2026-05-21")
    assert (period.start_ms, period.end_ms) == (1778169600000, 1779292800000)


@pytest.mark.parametrize("zone_name", ZONE_NAMES)
def test_until_includes_the_named_day(zone_name):
    # East of UTC (and in BST) this once ended at D 00:00: the UTC date of the local midnight was used.
    zone = ZoneInfo(zone_name)
    period = resolve(zone, start="2026-05-01", until="2026-05-19")
    assert period.start == m.day_start(date(2026, 5, 1), zone)
    assert period.end == m.day_start(date(2026, 5, 20), zone)


def test_until_yesterday_ends_at_today_midnight_in_shanghai():
    period = resolve(SHANGHAI, start="2026-11-01", until="yesterday")
    assert period.end == local(SHANGHAI, 2026, 11, 24)


def test_until_yesterday_ends_at_today_midnight_in_utc():
    period = resolve(ZUTC, start="2026-11-01", until="yesterday")
    assert period.end == datetime(2026, 11, 24, tzinfo=UTC)


def test_until_today_is_clamped_to_now():
    period = resolve(ZUTC, start="2026-11-01", until="today")
    assert period.end == NOW


@pytest.mark.parametrize("text", ["2026-05-19 10:00", "tomorrow", "2026-5-19", "2026-02-30", "now"])
def test_until_takes_only_a_date(text):
    with pytest.raises(m.UsageError) as caught:
        resolve(SHANGHAI, start="2026-05-01", until=text)
    assert caught.value.exit_code == 2


def test_to_later_than_now_is_clamped_to_now():
    period = resolve(SHANGHAI, start="2026-11-01", to="2027-01-01")
    assert period.end == NOW
    assert period.start == local(SHANGHAI, 2026, 11, 1)


def test_to_without_from_is_the_seven_days_before_the_end():
    period = resolve(SHANGHAI, to="2026-05-21")
    assert period.start == local(SHANGHAI, 2026, 5, 14)
    assert period.end == local(SHANGHAI, 2026, 5, 21)


def test_to_without_from_counts_calendar_days_across_dst():
    period = resolve(NEW_YORK, to="2026-03-12")
    assert period.start == m.day_start(date(2026, 3, 5), NEW_YORK)
    assert period.end == m.day_start(date(2026, 3, 12), NEW_YORK)
    assert period.end - period.start == timedelta(days=7) - HOUR


def test_to_in_the_future_without_from_is_the_seven_days_before_now():
    period = resolve(SHANGHAI, to="2030-01-01")
    assert (period.start, period.end) == (NOW - timedelta(days=7), NOW)


def test_until_without_from_is_seven_whole_days_even_when_the_next_day_starts_in_a_gap():
    # Santiago's 2026-09-06 starts at 01:00; the start once landed on 2026-08-30 01:00, an hour late.
    period = resolve(SANTIAGO, until="2026-09-05")
    assert period.end == m.day_start(date(2026, 9, 6), SANTIAGO)
    assert period.start == m.day_start(date(2026, 8, 30), SANTIAGO)


def test_to_a_gap_day_without_from_starts_seven_whole_days_earlier():
    period = resolve(SANTIAGO, to="2026-09-06")
    assert period.start == m.day_start(date(2026, 8, 30), SANTIAGO)


def test_from_yesterday_to_today_is_the_whole_of_yesterday():
    period = resolve(SHANGHAI, start="yesterday", to="today")
    assert period.start == local(SHANGHAI, 2026, 11, 23)
    assert period.end == local(SHANGHAI, 2026, 11, 24)
    assert period.end - period.start == DAY


def test_from_yesterday_to_today_is_25_hours_on_the_dst_end_day():
    now = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    period = resolve(NEW_YORK, now=now, start="yesterday", to="today")
    assert period.start == local(NEW_YORK, 2026, 11, 1)
    assert period.end - period.start == timedelta(hours=25)


def test_default_range_is_the_last_seven_days():
    period = resolve(SHANGHAI)
    assert (period.start, period.end) == (NOW - timedelta(days=7), NOW)


def test_from_without_to_ends_now():
    period = resolve(SHANGHAI, start="2026-11-01")
    assert period.end == NOW


@pytest.mark.parametrize("text, hours", [("7d", 168), ("24h", 24), ("1h", 1), ("30d", 720), ("90d", 2160)])
def test_last_ends_now_and_lasts_exactly_n_times_24_hours(text, hours):
    period = resolve(SHANGHAI, last=text)
    assert period.end == NOW
    assert period.end - period.start == timedelta(hours=hours)


def test_last_7d_is_exactly_168_hours_across_dst():
    now = local(NEW_YORK, 2026, 3, 10, 12, 0)  # two days after the spring-forward of 2026-03-08
    period = resolve(NEW_YORK, now=now, last="7d")
    assert period.end == now
    assert period.end - period.start == timedelta(hours=168)
    # 168 h before 12:00 EDT is 11:00 EST: the window is not "same wall time a week ago"
    assert period.start.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 3, 11, 0)


def test_this_month_starts_on_the_first_at_local_midnight():
    period = resolve(SHANGHAI, preset="this-month")
    assert period.start == local(SHANGHAI, 2026, 11, 1)
    assert period.end == NOW


def test_this_month_uses_the_local_month_not_the_utc_month():
    # 2026-10-31 20:00 UTC is already 2026-11-01 04:00 in Shanghai
    now = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)
    period = resolve(SHANGHAI, now=now, preset="this-month")
    assert period.start == local(SHANGHAI, 2026, 11, 1)


def test_this_month_start_uses_the_offset_in_force_on_the_first():
    # 2026-11-01 in New York begins in EDT (-04:00); NOW is in EST
    period = resolve(NEW_YORK, preset="this-month")
    assert period.start == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize("flags", [
    dict(start="2026-05-21", to="2026-05-08"),   # reversed
    dict(start="2026-05-08", to="2026-05-08"),   # empty
    dict(start="2026-05-08 10:00", to="2026-05-08 10:00"),
    dict(start="2026-05-20", until="2026-05-18"),
    dict(start="2027-01-01"),                    # starts in the future
    dict(start="2027-01-01", to="2027-02-01"),   # both in the future: the end is clamped to now
    dict(start="now"),
    dict(start="today", to="yesterday"),
])
def test_reversed_empty_and_future_ranges_are_usage_errors(flags):
    with pytest.raises(m.UsageError) as caught:
        resolve(SHANGHAI, **flags)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("flags", [
    dict(start="2026-02-30"), dict(to="2026-02-30"), dict(start="garbage"), dict(to="garbage"),
    dict(last="0d"), dict(last="7w"), dict(last="-1d"),
])
def test_bad_values_in_any_flag_are_usage_errors(flags):
    with pytest.raises(m.UsageError) as caught:
        resolve(SHANGHAI, **flags)
    assert caught.value.exit_code == 2


def test_nonexistent_local_time_in_from_is_a_usage_error():
    with pytest.raises(m.UsageError) as caught:
        resolve(NEW_YORK, start="2026-03-08 02:30", to="2026-03-09")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("zone, flags", [
    (ZoneInfo("Asia/Tokyo"), dict(start="1970-01-01")),  # 1969-12-31T15:00Z
    (ZUTC, dict(start="1970-01-01T08:59:59.999+09:00")),
    (ZUTC, dict(start="1970-01-01T00:00:00+00:01", to="1970-01-02")),
    (ZUTC, dict(to="1970-01-05")),                        # the 7 days before the end
    (ZUTC, dict(until="1970-01-03")),
    (NEW_YORK, dict(to="1970-01-01T12:00:00Z")),
], ids=["tokyo-midnight", "offset-instant", "z-instant", "to-only", "until-only", "to-instant"])
def test_a_range_before_1970_utc_is_a_usage_error(zone, flags):
    with pytest.raises(m.UsageError, match="before 1970-01-01 00:00:00 UTC") as caught:
        resolve(zone, **flags)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("start", ["1968-12-31", "1900-01-01 00:00"])
def test_a_year_before_1969_is_named_before_the_epoch(start):
    with pytest.raises(m.UsageError, match="before 1970-01-01 00:00:00 UTC, where the API's time begins"):
        resolve(ZUTC, start=start, to="1970-01-02")


def test_a_long_last_before_1970_is_a_usage_error():
    with pytest.raises(m.UsageError, match="before 1970"):
        resolve(ZUTC, now=datetime(1975, 1, 1, tzinfo=UTC), last="3660d")


@pytest.mark.parametrize("zone, flags", [
    (ZUTC, dict(start="1970-01-01", to="1970-01-02")),
    (ZoneInfo("Asia/Tokyo"), dict(start="1970-01-01T09:00:00+09:00", to="1970-01-02")),
    (NEW_YORK, dict(start="1970-01-01T00:00:00Z", to="1970-01-01T00:00:00.001Z")),
    (NEW_YORK, dict(start="1969-12-31 19:00", to="1970-01-02")),  # local 1969, UTC 1970: the instant decides
    (ZUTC, dict(start="1969-12-31T22:00:00-02:00", to="1970-01-02")),
], ids=["utc-midnight", "tokyo-instant", "one-millisecond", "local-1969", "offset-1969"])
def test_a_range_starting_at_the_epoch_itself_is_accepted(zone, flags):
    assert resolve(zone, **flags).start_ms == 0


def test_until_the_last_representable_day_does_not_crash():
    # once raised OverflowError (date + 1 day); clamping to now or a UsageError are both fine
    try:
        period = resolve(ZUTC, until="9999-12-31")
    except m.UsageError:
        return
    assert period.end == NOW


# ----------------------------------------------------------------------------------------------
# day_start, shift_days, to_epoch_ms
# ----------------------------------------------------------------------------------------------


def test_day_start_is_local_midnight_in_utc():
    start = m.day_start(date(2026, 5, 8), SHANGHAI)
    assert start == datetime(2026, 5, 7, 16, tzinfo=UTC)
    assert start.utcoffset() == timedelta(0)


def test_day_start_in_a_midnight_dst_gap_is_the_first_valid_time():
    start = m.day_start(date(2026, 9, 6), SANTIAGO)
    assert start == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert start.astimezone(SANTIAGO).replace(tzinfo=None) == datetime(2026, 9, 6, 1, 0)
    assert (start - timedelta(seconds=1)).astimezone(SANTIAGO).date() == date(2026, 9, 5)


def test_shift_days_keeps_local_midnight_as_the_day_start():
    moment = m.day_start(date(2026, 3, 12), NEW_YORK)
    assert m.shift_days(moment, -7, NEW_YORK) == m.day_start(date(2026, 3, 5), NEW_YORK)
    # and lands on a gap day's first valid time, not on a nonexistent midnight
    assert m.shift_days(m.day_start(date(2026, 9, 13), SANTIAGO), -7, SANTIAGO) == \
        m.day_start(date(2026, 9, 6), SANTIAGO)


def test_shift_days_keeps_the_wall_time_across_dst():
    moment = local(NEW_YORK, 2026, 3, 10, 12, 0)
    shifted = m.shift_days(moment, -7, NEW_YORK)
    assert shifted.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 3, 12, 0)
    assert moment - shifted == timedelta(hours=167)


def test_shift_days_moves_a_skipped_wall_time_past_the_gap():
    moment = local(NEW_YORK, 2026, 3, 15, 2, 30)
    shifted = m.shift_days(moment, -7, NEW_YORK)
    assert shifted.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 8, 3, 30)


def test_to_epoch_ms_examples():
    assert m.to_epoch_ms(m.EPOCH) == 0
    assert m.to_epoch_ms(datetime(2026, 5, 8, tzinfo=SHANGHAI)) == 1778169600000
    assert m.to_epoch_ms(datetime(2026, 5, 8, 0, 0, 0, 999999, tzinfo=UTC)) == 1778198400999
    assert m.to_epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == -1


# ----------------------------------------------------------------------------------------------
# split_windows
# ----------------------------------------------------------------------------------------------


def test_thirty_days_exactly_is_one_window_and_one_ms_more_is_two():
    assert m.split_windows(0, THIRTY_DAYS_MS) == [(0, THIRTY_DAYS_MS)]
    assert m.split_windows(0, THIRTY_DAYS_MS + 1) == [(0, THIRTY_DAYS_MS), (THIRTY_DAYS_MS, THIRTY_DAYS_MS + 1)]


def test_empty_or_reversed_range_has_no_windows():
    assert m.split_windows(5, 5) == []
    assert m.split_windows(10, 5) == []


def test_a_year_is_thirteen_windows():
    period = resolve(SHANGHAI, start="2025-11-24", to="2026-11-24")
    windows = m.split_windows(period.start_ms, period.end_ms)
    assert len(windows) == 13


def _check_windows(windows, start, end, limit):
    if start >= end:
        assert windows == []
        return
    assert windows[0][0] == start
    assert windows[-1][1] == end
    for (a, b), (c, _) in zip(windows, windows[1:]):
        assert b == c
    for a, b in windows:
        assert a < b
        assert b - a <= limit
    assert len(windows) == -(-(end - start) // limit)


MS = st.integers(min_value=-(10 ** 13), max_value=10 ** 13)


@PROPERTY
@given(start=MS, end=MS)
def test_windows_are_contiguous_cover_exactly_and_are_at_most_30_days(start, end):
    _check_windows(m.split_windows(start, end), start, end, THIRTY_DAYS_MS)


@st.composite
def span_and_limit(draw):
    span = draw(st.integers(min_value=0, max_value=10 ** 9))
    limit = draw(st.integers(min_value=max(1, span // 1000), max_value=10 ** 9))  # at most ~1000 windows
    return span, limit


@PROPERTY
@given(start=MS, case=span_and_limit())
def test_windows_respect_any_limit(start, case):
    span, limit = case
    _check_windows(m.split_windows(start, start + span, limit), start, start + span, limit)


# ----------------------------------------------------------------------------------------------
# split_buckets
# ----------------------------------------------------------------------------------------------


def _days(zone, first: date, last_exclusive: date):
    return m.split_buckets(m.Period(m.day_start(first, zone), m.day_start(last_exclusive, zone)), m.DAY, zone)


def test_day_bucket_on_spring_forward_is_23_hours():
    buckets = _days(NEW_YORK, date(2026, 3, 7), date(2026, 3, 10))
    assert durations(buckets) == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]


def test_day_bucket_on_fall_back_is_25_hours():
    buckets = _days(NEW_YORK, date(2026, 10, 31), date(2026, 11, 3))
    assert durations(buckets) == [timedelta(hours=24), timedelta(hours=25), timedelta(hours=24)]


def test_santiago_gap_day_bucket_starts_at_1am_local():
    buckets = _days(SANTIAGO, date(2026, 9, 5), date(2026, 9, 8))
    starts = [b.start.astimezone(SANTIAGO).replace(tzinfo=None) for b in buckets]
    assert starts == [datetime(2026, 9, 5), datetime(2026, 9, 6, 1, 0), datetime(2026, 9, 7)]
    assert durations(buckets) == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]


def test_lord_howe_days_are_23_5_and_24_5_hours_on_half_hour_dst_changes():
    assert durations(_days(LORD_HOWE, date(2026, 10, 4), date(2026, 10, 5))) == [timedelta(hours=23, minutes=30)]
    assert durations(_days(LORD_HOWE, date(2026, 4, 5), date(2026, 4, 6))) == [timedelta(hours=24, minutes=30)]


def test_weeks_start_on_monday_and_clip_at_both_ends():
    period = m.Period(local(SHANGHAI, 2026, 5, 1, 12, 0), local(SHANGHAI, 2026, 5, 27, 6, 0))  # Fri .. Wed
    buckets = m.split_buckets(period, m.WEEK, SHANGHAI)
    starts = [b.start for b in buckets]
    assert starts == [period.start, local(SHANGHAI, 2026, 5, 4), local(SHANGHAI, 2026, 5, 11),
                      local(SHANGHAI, 2026, 5, 18), local(SHANGHAI, 2026, 5, 25)]
    assert all(s.astimezone(SHANGHAI).weekday() == 0 for s in starts[1:])
    assert buckets[-1].end == period.end


def test_month_buckets_clip_at_both_ends():
    period = m.Period(local(NEW_YORK, 2026, 1, 15, 12, 0), local(NEW_YORK, 2026, 4, 10, 6, 0))
    buckets = m.split_buckets(period, m.MONTH, NEW_YORK)
    assert [(b.start, b.end) for b in buckets] == [
        (period.start, local(NEW_YORK, 2026, 2, 1)),
        (local(NEW_YORK, 2026, 2, 1), local(NEW_YORK, 2026, 3, 1)),
        (local(NEW_YORK, 2026, 3, 1), local(NEW_YORK, 2026, 4, 1)),
        (local(NEW_YORK, 2026, 4, 1), period.end),
    ]


def test_month_buckets_across_a_year_end():
    period = m.Period(local(SHANGHAI, 2025, 12, 1), local(SHANGHAI, 2026, 2, 1))
    buckets = m.split_buckets(period, m.MONTH, SHANGHAI)
    assert [b.start for b in buckets] == [local(SHANGHAI, 2025, 12, 1), local(SHANGHAI, 2026, 1, 1)]


def test_no_unit_is_one_bucket_for_the_whole_period():
    period = resolve(SHANGHAI, start="2026-05-08", to="2026-05-21")
    assert m.split_buckets(period, None, SHANGHAI) == [period]


def test_a_period_inside_one_day_is_one_clipped_bucket():
    period = m.Period(local(SHANGHAI, 2026, 5, 8, 10), local(SHANGHAI, 2026, 5, 8, 11))
    assert m.split_buckets(period, m.DAY, SHANGHAI) == [period]


MS_2000 = m.to_epoch_ms(datetime(2000, 1, 1, tzinfo=UTC))
MS_2040 = m.to_epoch_ms(datetime(2040, 12, 31, tzinfo=UTC))
# Spans are bounded per unit so that 200 examples stay fast; they still cross many DST changes.
MAX_SPAN_DAYS = {"day": 120, "week": 800, "month": 4000}


@st.composite
def bucket_cases(draw):
    zone = draw(ZONE)
    unit = draw(st.sampled_from(("day", "week", "month")))  # hours: tests/test_presets_and_hours.py
    start = draw(st.integers(min_value=MS_2000, max_value=MS_2040 - 1))
    span = draw(st.integers(min_value=1, max_value=MAX_SPAN_DAYS[unit] * 86_400_000))
    end = min(start + span, MS_2040)
    return zone, unit, m.Period(m.EPOCH + timedelta(milliseconds=start), m.EPOCH + timedelta(milliseconds=end))


@PROPERTY
@given(case=bucket_cases())
def test_buckets_cover_the_period_and_follow_local_calendar_boundaries(case):
    zone, unit, period = case
    buckets = m.split_buckets(period, m.UNITS[unit], zone)
    assert buckets[0].start == period.start
    assert buckets[-1].end == period.end
    for left, right in zip(buckets, buckets[1:]):
        assert left.end == right.start
    assert all(b.start < b.end for b in buckets)
    for bucket in buckets[1:]:  # every inner boundary is the start of a local day
        day = bucket.start.astimezone(zone).date()
        assert bucket.start == m.day_start(day, zone)
        if unit == "week":
            assert day.weekday() == 0
        if unit == "month":
            assert day.day == 1
    local_dates = [b.start.astimezone(zone).date() for b in buckets]
    assert all(a < b for a, b in zip(local_dates, local_dates[1:]))
    inner = buckets[1:-1]  # never clipped
    if unit == "day":
        if zone.key == "Australia/Lord_Howe":  # its DST shift is 30 minutes
            low, high = timedelta(hours=23, minutes=30), timedelta(hours=24, minutes=30)
        else:
            low, high = timedelta(hours=23), timedelta(hours=25)
        for bucket in inner:
            assert low <= bucket.end - bucket.start <= high
            assert bucket.end.astimezone(zone).date() == bucket.start.astimezone(zone).date() + DAY
    elif unit == "week":
        for bucket in inner:
            assert abs(bucket.end - bucket.start - timedelta(days=7)) <= HOUR
    else:
        for bucket in inner:
            assert timedelta(days=28) - HOUR <= bucket.end - bucket.start <= timedelta(days=31) + HOUR




@PROPERTY
@given(day=DATES, zone=ZONE)
def test_day_start_is_on_its_date_and_one_second_earlier_is_the_previous_date(day, zone):
    start = m.day_start(day, zone)
    assert start.utcoffset() == timedelta(0)
    assert start.astimezone(zone).date() == day
    assert (start - timedelta(seconds=1)).astimezone(zone).date() == day - DAY


@PROPERTY
@given(day=DATES, zone=ZONE)
def test_parse_when_of_a_date_equals_day_start(day, zone):
    assert m.parse_when(day.isoformat(), zone, NOW) == m.day_start(day, zone)


@PROPERTY
@given(moment=st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2100, 12, 31),
                           timezones=st.sampled_from(ZONES + [UTC])))
def test_to_epoch_ms_agrees_with_calendar_timegm(moment):
    expected = calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000
    assert m.to_epoch_ms(moment) == expected


@PROPERTY
@given(ms=st.integers(min_value=-(10 ** 12), max_value=4 * 10 ** 12), zone=ZONE)
def test_from_epoch_ms_round_trips(ms, zone):
    assert m.to_epoch_ms(m.from_epoch_ms(ms, zone)) == ms


# ----------------------------------------------------------------------------------------------
# Zone names: IANA names in any case; files that are not zones, offsets and abbreviations refused
# ----------------------------------------------------------------------------------------------

SUMMER = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def refusal(text, now=NOW) -> m.UsageError:
    with pytest.raises(m.UsageError) as caught:
        m.resolve_zone(text, now)
    assert caught.value.exit_code == 2
    return caught.value


def hinted_zones(error: m.UsageError) -> list[str]:
    return error.hint.rsplit(": ", 1)[1].split(", ")


@pytest.mark.parametrize("text, name", [
    ("asia/shanghai", "Asia/Shanghai"), ("ASIA/SHANGHAI", "Asia/Shanghai"), ("Asia/Shanghai", "Asia/Shanghai"),
    ("utc", "UTC"), ("america/argentina/buenos_aires", "America/Argentina/Buenos_Aires"),
    ("etc/gmt-8", "Etc/GMT-8"), ("america/port-au-prince", "America/Port-au-Prince"), (" Asia/Tokyo ", "Asia/Tokyo"),
])
def test_zone_names_match_case_insensitively_and_come_back_spelled_right(text, name):
    zone_name, zone = m.resolve_zone(text, NOW)
    assert zone_name == name and zone.key == name


@pytest.mark.parametrize("name", ["UTC", "GMT", "EST", "MST", "HST", "GMT+0", "GMT-0", "EST5EDT", "CET", "Etc/GMT+5",
                                  "Zulu", "PRC"])
def test_iana_names_that_look_like_abbreviations_or_offsets_stay_accepted(name):
    assert m.resolve_zone(name, NOW)[0] == name


@PROPERTY
@given(data=st.data())
def test_every_zone_of_the_database_is_found_in_any_case(data):
    name = data.draw(st.sampled_from(sorted(m.zone_names().values())))
    text = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in name)
    assert m.resolve_zone(text, NOW)[0] == name


@pytest.mark.parametrize("text, hint", [
    ("localtime", "leave out --timezone"), ("posixrules", "IANA name"), ("Factory", "IANA name"),
    ("factory", "IANA name"), ("posix/Asia/Tokyo", "use Asia/Tokyo"), ("right/UTC", "use UTC"),
    ("POSIX/Europe/Berlin", "use Europe/Berlin"), ("right/Nowhere", "IANA name"),
])
def test_files_of_the_zone_database_that_are_not_zones_are_refused(text, hint):
    error = refusal(text)
    assert "not a time zone" in str(error) and hint in error.hint


def test_non_zones_are_refused_and_never_suggested_where_the_database_lists_them(monkeypatch):
    import zoneinfo

    listed = zoneinfo.available_timezones() | {"localtime", "posixrules", "Factory", "posix/Asia/Shanghai",
                                                "right/Asia/Shanghai", "posix/UTC"}
    monkeypatch.setattr(zoneinfo, "available_timezones", lambda: set(listed))
    for cached in ("zone_names", "place_zones"):  # uncached here, so the real listing comes back after
        monkeypatch.setattr(m, cached, getattr(m, cached).__wrapped__)
    for name in ("localtime", "posixrules", "Factory", "posix/Asia/Shanghai", "right/Asia/Shanghai"):
        assert m.canonical_zone_name(name) is None
        refusal(name)
    assert not {"localtime", "posixrules", "factory"} & set(m.zone_names())
    assert "posix/" not in refusal("Asia/Shangai").hint and "posix/" not in refusal("posix/Asia/Shangai").hint


@pytest.mark.parametrize("text, meant", [
    ("Asia/Shangai", "Asia/Shanghai"), ("Europe/Berln", "Europe/Berlin"), ("America/New_Yrok", "America/New_York"),
    ("asia/kolkatta", "Asia/Kolkata"), ("tokyo", "Asia/Tokyo"), ("new york", "America/New_York"),
    ("Shanghai", "Asia/Shanghai"),
])
def test_an_unknown_zone_is_refused_with_the_closest_iana_names(text, meant):
    error = refusal(text)
    assert str(error).startswith("unknown time zone")
    assert error.hint.startswith("did you mean ") and meant in error.hint


@pytest.mark.parametrize("text", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "zone.tab", "Asia//Tokyo"])
def test_paths_and_nonsense_are_unknown_zones(text):
    assert str(refusal(text)).startswith("unknown time zone")


@pytest.mark.parametrize("text, zone", [
    ("+08:00", "Etc/GMT-8"), ("UTC+8", "Etc/GMT-8"), ("utc+08", "Etc/GMT-8"), ("+0800", "Etc/GMT-8"),
    ("GMT-5", "Etc/GMT+5"), ("-05:00", "Etc/GMT+5"), ("-12:00", "Etc/GMT+12"), ("+14", "Etc/GMT-14"),
    ("UTC+0", "UTC"), ("+00:00", "UTC"),
])
def test_a_whole_hour_utc_offset_is_refused_with_its_etc_gmt_zone(text, zone):
    error = refusal(text)
    assert "UTC offset" in str(error)
    assert error.hint.startswith(f"use {zone} ")


@pytest.mark.parametrize("text, now, zones", [
    ("+0530", NOW, ["Asia/Kolkata", "Asia/Colombo"]),
    ("+05:45", NOW, ["Asia/Kathmandu"]),
    ("UTC+10:30", NOW, ["Australia/Adelaide", "Australia/Broken_Hill"]),  # southern summer time
    ("UTC+10:30", SUMMER, ["Australia/Lord_Howe"]),  # its winter: the offset moves with now
    ("-13:00", NOW, []), ("+15:00", NOW, []),
])
def test_any_other_utc_offset_is_refused_with_the_zones_now_at_it(text, now, zones):
    error = refusal(text, now)
    if zones:
        assert hinted_zones(error) == zones
    else:
        assert error.hint.startswith("no zone is at ")


@PROPERTY
@given(hours=st.integers(-12, 14), form=st.sampled_from(["{:+03d}:00", "UTC{:+d}", "GMT{:+03d}00"]))
def test_every_etc_gmt_hint_is_at_the_offset_the_user_typed(hours, form):
    hint = refusal(form.format(hours)).hint
    zone = ZoneInfo(hint.split()[1])
    assert zone.utcoffset(NOW) == timedelta(hours=hours)


@pytest.mark.parametrize("text, now, first", [
    ("CST", NOW, ["Asia/Shanghai", "America/Chicago", "America/Havana"]),
    ("cst", NOW, ["Asia/Shanghai", "America/Chicago", "America/Havana"]),
    ("JST", NOW, ["Asia/Tokyo"]),
    ("PST", NOW, ["Asia/Manila", "America/Los_Angeles"]),
    ("IST", NOW, ["Asia/Kolkata", "Asia/Jerusalem"]),
    ("CEST", SUMMER, ["Europe/Berlin"]),
    ("CDT", SUMMER, ["America/Chicago", "America/Havana"]),
])
def test_an_abbreviation_is_refused_with_the_zones_that_use_it_now_most_used_first(text, now, first):
    error = refusal(text, now)
    assert "abbreviation" in str(error)
    zones = hinted_zones(error)
    assert zones[:len(first)] == first and len(zones) <= 5
    assert all(ZoneInfo(zone).tzname(now) == text.upper() for zone in zones)


def test_an_abbreviation_out_of_season_names_the_zones_that_use_it_later():
    error = refusal("BST", NOW)
    assert "not in use now" in error.hint and hinted_zones(error)[0] == "Europe/London"


# ----------------------------------------------------------------------------------------------
# POSIX TZ values: a fixed-offset zone, or the OS zone when it matches, always with a note
# ----------------------------------------------------------------------------------------------

H = HOUR


@pytest.mark.parametrize("text, standard, daylight", [
    ("CST-8", 8 * H, None), ("UTC0", timedelta(0), None), ("<+0530>-5:30", timedelta(hours=5, minutes=30), None),
    ("<-03>3", -3 * H, None), ("CET-1CEST", H, 2 * H), ("EST5EDT,M3.2.0,M11.1.0", -5 * H, -4 * H),
    ("CET-1CEST,M3.5.0,M10.5.0/3", H, 2 * H), ("NZST-12NZDT-13,M9.5.0,M4.1.0/3", 12 * H, 13 * H),
    ("EST+5EDT4,J60/2:00:00,300", -5 * H, -4 * H),
])
def test_posix_rules_are_read_as_utc_offsets(text, standard, daylight):
    assert m.parse_posix_tz(text) == m.PosixRule(standard, daylight)


@pytest.mark.parametrize("text", ["Asia/Tokyo", "garbage", "CST", "CST-25", "C-8", "CST-8,M3", "CST-8:60", "",
                                  "CST-8 ", "<+08-8"])
def test_other_text_is_not_a_posix_rule(text):
    assert m.parse_posix_tz(text) is None


@pytest.mark.parametrize("text, zone", [("CST-8", "Etc/GMT-8"), ("<-03>3", "Etc/GMT+3"), ("UTC0", "UTC"),
                                        ("<+14>-14", "Etc/GMT-14"), ("<+0530>-5:30", "UTC"), ("XXX-15", "UTC")])
def test_a_posix_rule_without_dst_means_its_fixed_offset_zone_else_utc(text, zone):
    name, note = m.zone_for_posix_rule(text, m.parse_posix_tz(text), NOW)
    assert name == zone
    assert repr(text) in note and f"using {zone}" in note and "--timezone" in note


@pytest.mark.parametrize("rule, system, now, zone", [
    ("CET-1CEST", "Europe/Berlin", NOW, "Europe/Berlin"),       # winter: at the standard offset
    ("CET-1CEST", "Europe/Berlin", SUMMER, "Europe/Berlin"),    # summer: at the DST offset
    ("CET-1CEST", "Africa/Lagos", NOW, "Africa/Lagos"),         # +01:00 now, whatever its rules
    ("CET-1CEST", "Asia/Shanghai", NOW, "UTC"),
    ("EST5EDT,M3.2.0,M11.1.0", "America/New_York", SUMMER, "America/New_York"),
    ("EST5EDT,M3.2.0,M11.1.0", "Europe/Berlin", NOW, "UTC"),
    ("CET-1CEST", None, NOW, "UTC"),                           # the OS zone cannot be found
])
def test_a_posix_rule_with_dst_means_the_os_zone_when_its_offset_matches_else_utc(monkeypatch, rule, system,
                                                                                  now, zone):
    monkeypatch.setattr(m, "system_zone_name", lambda: system)
    name, note = m.zone_for_posix_rule(rule, m.parse_posix_tz(rule), now)
    assert name == zone
    assert repr(rule) in note and zone in note and "--timezone" in note


@pytest.mark.parametrize("value, zone, noted", [
    ("Asia/Tokyo", "Asia/Tokyo", False), (":Asia/Tokyo", "Asia/Tokyo", False), ("EST5EDT", "EST5EDT", False),
    ("CST-8", "Etc/GMT-8", True), (":UTC0", "UTC", True), ("garbage", "Europe/Berlin", True),
    ("", "Europe/Berlin", False),
])
def test_local_zone_name_reads_tz_first_and_notes_every_tz_that_is_not_a_zone_name(monkeypatch, value, zone, noted):
    monkeypatch.setattr(m, "system_zone_name", lambda: "Europe/Berlin")
    name, note = m.local_zone_name({"TZ": value}, NOW)
    assert name == zone and (note is not None) == noted


# ----------------------------------------------------------------------------------------------
# retention_note
# ----------------------------------------------------------------------------------------------


def test_no_retention_note_within_30_days():
    assert m.retention_note(m.Period(NOW - timedelta(days=30), NOW), NOW, SHANGHAI) is None
    assert m.retention_note(m.Period(NOW - timedelta(days=7), NOW), NOW, SHANGHAI) is None


def test_retention_note_when_the_range_starts_more_than_30_days_ago():
    start = NOW - timedelta(days=30, milliseconds=1)
    note = m.retention_note(m.Period(start, NOW), NOW, SHANGHAI)
    assert note is not None
    assert "30 days" in note
    assert "2026-10-25 13:00:00" in note  # now - 30 days, shown in the chosen zone


def test_retention_note_for_the_default_and_long_ranges():
    assert m.retention_note(resolve(SHANGHAI), NOW, SHANGHAI) is None
    assert m.retention_note(resolve(SHANGHAI, last="31d"), NOW, SHANGHAI) is not None
    assert m.retention_note(resolve(SHANGHAI, start="2026-05-08", to="2026-05-21"), NOW, SHANGHAI) is not None


@pytest.mark.parametrize("text", ["٣d", "７d"])
def test_last_takes_ascii_digits_only(text):
    with pytest.raises(m.UsageError):
        m.parse_last(text)


def test_dates_take_ascii_digits_only():
    with pytest.raises(m.UsageError):
        m.parse_when("２０２６-05-08", SHANGHAI, NOW)
