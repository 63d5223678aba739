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


# -- zone names ----------------------------------------------------------------------------------

SEED = ("--from", "2026-05-08", "--to", "2026-05-21")


@pytest.mark.parametrize("text, name", [("asia/shanghai", "Asia/Shanghai"), ("utc", "UTC"),
                                        ("AMERICA/NEW_YORK", "America/New_York"), ("est", "EST")])
def test_a_zone_name_in_any_case_is_used_and_sent_as_the_iana_name(cli, text, name):
    document = plan(cli, *SEED, "--timezone", text)
    assert document["timezone"] == name
    assert {r["body"]["timezone"] for r in document["requests"]} == {name}


def test_the_seed_example_holds_with_a_lower_case_zone(cli):
    body = plan(cli, *SEED, "--timezone", "asia/shanghai")["requests"][0]["body"]
    assert (body["start_time"], body["end_time"], body["timezone"]) == (1778169600000, 1779292800000, "Asia/Shanghai")


@pytest.mark.parametrize("text", ["UTC", "GMT", "EST", "MST", "HST"])
def test_iana_names_that_look_like_abbreviations_stay_accepted(cli, text):
    assert plan(cli, *SEED, "--timezone", text)["timezone"] == text


REFUSED_ZONES = {
    "localtime": ("localtime", "not a time zone", "leave out --timezone"),
    "posixrules": ("posixrules", "not a time zone", "IANA name"),
    "factory": ("Factory", "not a time zone", "IANA name"),
    "posix-folder": ("posix/Asia/Shanghai", "not a time zone", "use Asia/Shanghai"),
    "right-folder": ("right/Asia/Shanghai", "not a time zone", "use Asia/Shanghai"),
    "misspelt": ("Asia/Shangai", "unknown time zone", "did you mean Asia/Shanghai?"),
    "offset": ("+08:00", "UTC offset", "use Etc/GMT-8 "),
    "utc-plus": ("UTC+8", "UTC offset", "use Etc/GMT-8 "),
    "gmt-minus": ("GMT-5", "UTC offset", "use Etc/GMT+5 "),
    "half-hour": ("+0530", "UTC offset", "zones now at UTC+05:30: Asia/Kolkata"),
    "cst": ("CST", "abbreviation", "zones that use CST now: Asia/Shanghai, America/Chicago, America/Havana"),
    "jst": ("JST", "abbreviation", "zones that use JST now: Asia/Tokyo"),
    "pst": ("PST", "abbreviation", "America/Los_Angeles"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_ZONES))
def test_what_is_not_a_zone_name_is_refused_with_a_hint_and_sends_nothing(cli, cloud, name):
    text, message, hint = REFUSED_ZONES[name]
    run = cli(*SEED, "--timezone", text, now=NOW)
    assert run.code == 2, run.stderr
    error, hint_line = run.stderr.splitlines()[:2]
    assert error.startswith("error:") and message in error
    assert hint_line.startswith("hint:") and hint in hint_line
    assert run.stdout == "" and cloud.log == []


def test_a_refused_zone_is_refused_in_a_dry_run_too(cli):
    run = cli(*SEED, "--timezone", "CST", "--dry-run", now=NOW)
    assert run.code == 2 and run.stdout == ""


# -- POSIX TZ values -----------------------------------------------------------------------------

@pytest.fixture
def os_zone(monkeypatch):
    """Set the zone tzlocal finds in the OS files (what is used when TZ names no zone)."""
    import tzlocal

    def set_zone(name: str) -> None:
        monkeypatch.setattr(tzlocal, "get_localzone_name", lambda: name)
    set_zone("Europe/Berlin")
    return set_zone


@pytest.mark.parametrize("tz, zone", [("CST-8", "Etc/GMT-8"), ("UTC0", "UTC"), ("<+0530>-5:30", "UTC"),
                                      ("<-03>3", "Etc/GMT+3")])
def test_a_posix_tz_without_dst_means_its_fixed_offset_zone_with_a_note(cli, os_zone, tz, zone):
    run = cli(*SEED, "--dry-run", "--format", "json", env={"TZ": tz}, now=NOW)
    assert run.code == 0, run.stderr
    assert {r["body"]["timezone"] for r in run.json()["requests"]} == {zone}
    note = next(line for line in run.stderr.splitlines() if "TZ=" in line)
    assert note.startswith("note:") and f"using {zone}" in note and "--timezone" in note


@pytest.mark.parametrize("tz, system, zone", [
    ("CET-1CEST", "Europe/Berlin", "Europe/Berlin"),
    ("CET-1CEST,M3.5.0,M10.5.0/3", "Europe/Paris", "Europe/Paris"),
    ("EST5EDT,M3.2.0,M11.1.0", "Europe/Berlin", "UTC"),
    ("CET-1CEST", "Asia/Shanghai", "UTC"),
])
def test_a_posix_tz_with_dst_means_the_os_zone_when_its_offset_matches_else_utc(cli, os_zone, tz, system, zone):
    os_zone(system)
    run = cli(*SEED, "--dry-run", "--format", "json", env={"TZ": tz}, now=NOW)
    assert run.code == 0, run.stderr
    assert run.json()["timezone"] == zone
    note = next(line for line in run.stderr.splitlines() if "TZ=" in line)
    assert note.startswith("note:") and f"using {'the OS zone ' if zone == system else ''}{zone}" in note
    assert "--timezone" in note


def test_a_tz_that_is_no_zone_and_no_rule_is_ignored_with_a_note(cli, os_zone):
    run = cli(*SEED, "--dry-run", "--format", "json", env={"TZ": "not a zone"}, now=NOW)
    assert run.code == 0, run.stderr
    assert run.json()["timezone"] == "Europe/Berlin"
    assert "note: TZ='not a zone' is neither a zone name nor a POSIX rule" in run.stderr


def test_timezone_flag_overrides_a_posix_tz_without_a_note(cli, os_zone):
    run = cli(*SEED, "--dry-run", "--timezone", "Asia/Shanghai", env={"TZ": "CST-8"}, now=NOW)
    assert run.code == 0 and "TZ=" not in run.stderr


def test_an_iana_tz_is_used_as_it_is_without_a_note(cli, os_zone):
    run = cli(*SEED, "--dry-run", "--format", "json", env={"TZ": ":Asia/Tokyo"}, now=NOW)
    assert run.json()["timezone"] == "Asia/Tokyo" and "TZ=" not in run.stderr


def test_quiet_silences_the_zone_note(cli, os_zone):
    run = cli(*SEED, "--dry-run", "-q", env={"TZ": "CST-8"}, now=NOW)
    assert run.code == 0 and run.stderr == ""
