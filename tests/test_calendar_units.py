"""Calendar units and presets are values: each unit's start, next, previous and same elapsed time a
unit before on DST days and month ends; a new unit or preset is one record; an unknown name fails
loudly. And the cross-flag rules: one table, every message as the contract's tests know it."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

import maas_rest_usage_stats as m
from test_render import make_query, make_result
from test_timerange import PROPERTY

NEW_YORK = ZoneInfo("America/New_York")  # 2026: 02:00 -> 03:00 on Mar 8, 02:00 -> 01:00 on Nov 1
BERLIN = ZoneInfo("Europe/Berlin")  # 2026: 02:00 -> 03:00 on Mar 29, 03:00 -> 02:00 on Oct 25
SANTIAGO = ZoneInfo("America/Santiago")  # 2026-09-06: 00:00 -> 01:00, the day starts at 01:00


def at(text: str) -> datetime:
    """An instant from a local time with its offset, so a repeated wall time is never ambiguous."""
    return datetime.fromisoformat(text).astimezone(timezone.utc)


# unit, zone, a moment; the start of its unit, the next unit's and the previous unit's
UNIT_CASES = [
    (m.HOUR, NEW_YORK, "2026-11-01T01:30-04:00", "2026-11-01T01:00-04:00", "2026-11-01T01:00-05:00",
     "2026-11-01T00:00-04:00"),  # the first of the fall-back day's two 01:00 hours
    (m.HOUR, NEW_YORK, "2026-11-01T01:30-05:00", "2026-11-01T01:00-05:00", "2026-11-01T02:00-05:00",
     "2026-11-01T01:00-04:00"),  # the second one
    (m.HOUR, NEW_YORK, "2026-03-08T03:30-04:00", "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00",
     "2026-03-08T01:00-05:00"),  # 02:00 is skipped: the hour before 03:00 is 01:00
    (m.HOUR, BERLIN, "2026-10-25T02:15+01:00", "2026-10-25T02:00+01:00", "2026-10-25T03:00+01:00",
     "2026-10-25T02:00+02:00"),
    (m.DAY, NEW_YORK, "2026-03-08T12:00-04:00", "2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00",
     "2026-03-07T00:00-05:00"),  # a 23-hour day
    (m.DAY, NEW_YORK, "2026-11-01T23:00-05:00", "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00",
     "2026-10-31T00:00-04:00"),  # a 25-hour day
    (m.DAY, BERLIN, "2026-03-29T01:30+01:00", "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00",
     "2026-03-28T00:00+01:00"),
    (m.DAY, SANTIAGO, "2026-09-06T12:00-03:00", "2026-09-06T01:00-03:00", "2026-09-07T00:00-03:00",
     "2026-09-05T00:00-04:00"),  # the clock change skips midnight
    (m.WEEK, BERLIN, "2026-03-25T10:00+01:00", "2026-03-23T00:00+01:00", "2026-03-30T00:00+02:00",
     "2026-03-16T00:00+01:00"),  # Monday to Monday across the spring change: 167 hours
    (m.WEEK, BERLIN, "2026-03-29T23:59+02:00", "2026-03-23T00:00+01:00", "2026-03-30T00:00+02:00",
     "2026-03-16T00:00+01:00"),  # Sunday is the week's last day
    (m.WEEK, NEW_YORK, "2026-11-02T00:00-05:00", "2026-11-02T00:00-05:00", "2026-11-09T00:00-05:00",
     "2026-10-26T00:00-04:00"),  # a week's start is its own unit's start
    (m.MONTH, NEW_YORK, "2026-03-31T23:59-04:00", "2026-03-01T00:00-05:00", "2026-04-01T00:00-04:00",
     "2026-02-01T00:00-05:00"),
    (m.MONTH, NEW_YORK, "2026-12-31T23:00-05:00", "2026-12-01T00:00-05:00", "2027-01-01T00:00-05:00",
     "2026-11-01T00:00-04:00"),  # across the year's end
    (m.MONTH, BERLIN, "2026-01-15T12:00+01:00", "2026-01-01T00:00+01:00", "2026-02-01T00:00+01:00",
     "2025-12-01T00:00+01:00"),
    (m.MONTH, BERLIN, "2024-02-29T12:00+01:00", "2024-02-01T00:00+01:00", "2024-03-01T00:00+01:00",
     "2024-01-01T00:00+01:00"),  # a leap day
]


@pytest.mark.parametrize("unit, zone, moment, start, following, before", UNIT_CASES)
def test_each_unit_knows_its_start_the_next_and_the_previous_on_dst_days(unit, zone, moment, start, following,
                                                                        before):
    assert unit.start(at(moment), zone) == at(start)
    assert unit.next(at(moment), zone) == at(following)
    assert unit.previous(at(moment), zone) == at(before)
    assert m.calendar_bucket(at(moment), unit, zone) == m.Period(at(start), at(following))


# unit, zone, a moment, the same elapsed local time a unit before
SAME_TIME_CASES = [
    (m.HOUR, NEW_YORK, "2026-11-01T01:30-05:00", "2026-11-01T01:30-04:00"),
    (m.HOUR, NEW_YORK, "2026-03-08T03:20-04:00", "2026-03-08T01:20-05:00"),
    (m.DAY, NEW_YORK, "2026-03-09T02:30-04:00", "2026-03-08T03:30-04:00"),  # skipped: past the gap
    (m.DAY, NEW_YORK, "2026-11-02T01:30-05:00", "2026-11-01T01:30-04:00"),  # repeated: the first one
    (m.DAY, NEW_YORK, "2026-03-09T00:00-04:00", "2026-03-08T00:00-05:00"),
    (m.DAY, SANTIAGO, "2026-09-07T00:00-03:00", "2026-09-06T01:00-03:00"),  # a day's start: the day's start
    (m.WEEK, BERLIN, "2026-04-05T02:30+02:00", "2026-03-29T03:30+02:00"),  # skipped: past the gap
    (m.WEEK, BERLIN, "2026-11-01T02:30+01:00", "2026-10-25T02:30+02:00"),  # repeated: the first one
    (m.MONTH, NEW_YORK, "2026-03-28T14:00-04:00", "2026-02-28T14:00-05:00"),
    (m.MONTH, NEW_YORK, "2026-03-29T14:00-04:00", "2026-03-01T00:00-05:00"),  # no Feb 29: clamped to its end
    (m.MONTH, NEW_YORK, "2026-03-31T14:00-04:00", "2026-03-01T00:00-05:00"),
    (m.MONTH, BERLIN, "2024-03-29T12:00+01:00", "2024-02-29T12:00+01:00"),  # a leap year has it
    (m.MONTH, BERLIN, "2026-01-31T10:00+01:00", "2025-12-31T10:00+01:00"),
    (m.MONTH, BERLIN, "2026-04-29T02:30+02:00", "2026-03-29T03:30+02:00"),  # skipped: past the gap
]


@pytest.mark.parametrize("unit, zone, moment, expected", SAME_TIME_CASES)
def test_the_same_elapsed_local_time_a_unit_before(unit, zone, moment, expected):
    assert unit.same_time_before(at(moment), zone) == at(expected)


def test_an_unknown_unit_or_preset_name_fails_loudly():
    with pytest.raises(KeyError):
        m.UNITS["quarter"]
    with pytest.raises(KeyError):
        m.resolve_period(m.RangeRequest(preset="this-quarter"), NEW_YORK, at("2026-05-24T12:00-04:00"))
    with pytest.raises(TypeError):  # a unit without its rules cannot even be made
        m.CalendarUnit("fortnight", "Fortnight", "%Y-%m-%d")  # type: ignore[abstract]
    with pytest.raises(m.UsageError):
        m.parse_group_by(["quarter"], None)


def test_units_are_listed_in_group_by_order_and_named_after_their_record():
    assert list(m.UNITS) == ["hour", "day", "week", "month"]
    assert all(name == unit.name for name, unit in m.UNITS.items())


# -- a new unit or preset is one record ----------------------------------------------------------------


def _add_quarters(first: date, count: int) -> date:
    months = first.year * 12 + first.month - 1 + 3 * count
    return date(months // 12, months % 12 + 1, 1)


QUARTER = m.LocalDays("quarter", "Quarter", "%Y-%m",
                      first_day=lambda day: day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1), add=_add_quarters)
THIS_QUARTER = m.Preset("this-quarter", "from the 1st of this quarter to now", QUARTER, current=True)


def test_a_quarter_is_one_record_and_this_quarter_compares_the_same_elapsed_time():
    now = at("2026-05-24T12:00-04:00")
    start, end = THIS_QUARTER.range(NEW_YORK, now)
    assert (start, end) == (at("2026-04-01T00:00-04:00"), now)
    previous = THIS_QUARTER.previous(m.Period(start, end), NEW_YORK)
    # 53 days and 12 hours of wall time in both, not 53 against the whole 90-day first quarter
    assert previous == m.Period(at("2026-01-01T00:00-05:00"), at("2026-02-23T12:00-05:00"))


def test_a_quarter_record_groups_and_labels_rows():
    query = make_query(bucket=QUARTER, start=date(2026, 2, 10), end=date(2026, 7, 1))
    assert [b.start for b in m.split_buckets(query.period, QUARTER, query.zone)] == [
        query.period.start, m.day_start(date(2026, 4, 1), query.zone)]
    table = m.render_table(make_result(query), None, False)
    assert "Quarter" in table and "2026-01*" in table and "2026-04 " in table
    assert "* partial: the range starts or ends inside this quarter" in table


# -- presets -----------------------------------------------------------------------------------------


def test_the_preset_flags_and_their_help_come_from_presets():
    parser = m.build_parser()
    help_text = " ".join(parser.format_help().split())
    for name, preset in m.PRESETS.items():
        assert name == preset.name
        assert f"--{name} {' '.join(preset.help.split())}" in help_text
        assert parser.parse_args([f"--{name}"]).presets == [name]


@pytest.mark.parametrize("name, start, end", [
    ("today", "2026-11-01T00:00-04:00", "2026-11-01T20:00-05:00"),
    ("yesterday", "2026-10-31T00:00-04:00", "2026-11-01T00:00-04:00"),
    ("this-week", "2026-10-26T00:00-04:00", "2026-11-01T20:00-05:00"),
    ("last-week", "2026-10-19T00:00-04:00", "2026-10-26T00:00-04:00"),
    ("this-month", "2026-11-01T00:00-04:00", "2026-11-01T20:00-05:00"),
    ("last-month", "2026-10-01T00:00-04:00", "2026-11-01T00:00-04:00"),
])
def test_each_preset_is_its_unit_up_to_now_or_the_whole_unit_before(name, start, end):
    now = at("2026-11-01T20:00-05:00")  # the evening of a 25-hour day
    assert m.PRESETS[name].range(NEW_YORK, now) == (at(start), at(end))


# -- properties ----------------------------------------------------------------------------------------

MS_2000 = m.to_epoch_ms(datetime(2000, 1, 1, tzinfo=timezone.utc))
MS_2040 = m.to_epoch_ms(datetime(2040, 12, 31, tzinfo=timezone.utc))
DAY_ZONES = [ZoneInfo(name) for name in ("America/New_York", "Europe/Berlin", "Asia/Shanghai", "America/Santiago",
                                         "Australia/Lord_Howe", "Asia/Kolkata", "UTC")]
# Clock hours assume whole-hour clock changes: Lord Howe's half-hour ones make an hour's end the middle of
# the next wall-clock hour (see the hour property in test_presets_and_hours.py for what holds there).
HOUR_ZONES = [zone for zone in DAY_ZONES if zone.key != "Australia/Lord_Howe"]


@st.composite
def unit_moments(draw):
    unit = draw(st.sampled_from(list(m.UNITS.values()) + [QUARTER]))
    zone = draw(st.sampled_from(HOUR_ZONES if unit is m.HOUR else DAY_ZONES))
    moment = m.EPOCH + timedelta(milliseconds=draw(st.integers(min_value=MS_2000, max_value=MS_2040)))
    return unit, zone, moment


@PROPERTY
@given(case=unit_moments())
def test_every_moment_lies_in_its_unit_and_previous_undoes_next(case):
    unit, zone, moment = case
    start = unit.start(moment, zone)
    assert start <= moment < unit.next(start, zone)
    assert unit.start(start, zone) == start
    assert unit.previous(unit.next(start, zone), zone) == start
    assert unit.previous(moment, zone) <= unit.same_time_before(moment, zone) <= start


# -- the cross-flag rules ------------------------------------------------------------------------------

RULES = [
    (["--last", "7d", "--yesterday", "--today"],
     "--last and --yesterday and --today cannot be combined: choose one way to give the range"),
    (["--from", "2026-05-01", "--to", "2026-05-08", "--until", "2026-05-09"],
     "--to and --until cannot be combined (--to is exclusive, --until inclusive)"),
    (["--format", "csv", "--chart"], "--chart applies to --format table only, not csv"),
    (["--format", "prometheus", "--raw"], "--raw applies to --format table and json only, not prometheus"),
    (["--format", "csv", "--no-header", "--output", "out.csv"],
     "--output always replaces its file: it cannot be combined with --no-header"),
    (["--record"], "--record needs a store: --store PATH or MAAS_USAGE_STORE"),
    (["--record", "--store", "usage.db", "--group-by", "week"],
     "--record saves days: it cannot be combined with --group-by week"),
    (["--record", "--store", "usage.db", "--format", "prometheus"],
     "--format prometheus cannot be combined with --record (its result is per day): the textfile collector has "
     "no timestamps, so a series per day would be wrong"),
    (["--format", "prometheus", "--group-by", "Hour"],
     "--format prometheus cannot be combined with --group-by hour: the textfile collector has no timestamps, so "
     "a series per hour would be wrong"),
    (["--compare", "--record", "--store", "usage.db"], "--compare cannot be combined with --record"),
    (["--compare", "--format", "prometheus"], "--compare cannot be combined with --format prometheus"),
    (["--chart", "--group-by", "service-type"],
     "--chart draws a bar per time bucket: it needs --group-by hour or day or week or month"),
]


@pytest.mark.parametrize("args, message", RULES)
def test_each_cross_flag_rule_is_refused_with_its_message(args, message):
    stderr = io.StringIO()
    assert m.main([*args, "--timezone", "UTC", "--dry-run"], env={}, stdout=io.StringIO(), stderr=stderr) == 2
    assert stderr.getvalue().splitlines()[0] == f"error: {message}"


@pytest.mark.parametrize("args", [
    ["--record", "--chart"],  # --record's rows are days: a time bucket to chart
    ["--chart", "--group-by", "day,service-type"],
    ["--record", "--group-by", "day"],
    ["--compare", "--format", "csv", "--no-header"],
])
def test_allowed_combinations_pass_the_rules(args):
    m.check_flag_rules(m.flags_given(m.build_parser().parse_args(args), {"MAAS_USAGE_STORE": "usage.db"}))
