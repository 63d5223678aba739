"""First contact: a Python without the packages, runs that take long or too long, comparisons past
the retention, and a store kept in another zone each say so instead of failing or misleading."""

from __future__ import annotations

import io
import os
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

import fakecloud
import maas_rest_usage_stats as m
from conftest import ROOT, SCRIPT, Run, assert_clean, base_env, hourly_index

PROJECT = fakecloud.DEMO_PROJECT_ID
DAY_MS = 86_400_000
UTC_TODAY = datetime.now(timezone.utc).date()


def day(offset: int) -> str:
    """The UTC date ``offset`` days from today."""
    return (UTC_TODAY + timedelta(days=offset)).isoformat()


@pytest.fixture
def hourly(cloud):
    today_ms = int(datetime.now(timezone.utc).timestamp()) * 1000 // DAY_MS * DAY_MS
    cloud.events = hourly_index(today_ms - 60 * DAY_MS, today_ms + 2 * DAY_MS)
    return cloud


# -- packages this Python lacks ----------------------------------------------------------------

def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_the_embedded_requirements_are_requirements_txt():
    assert list(m.REQUIREMENTS) == requirement_lines(ROOT / "requirements.txt")


def fake_packages(folder: Path, versions: dict[str, str]) -> Path:
    """Importable packages that are empty but for their metadata's version."""
    folder.mkdir(exist_ok=True)
    for name, version in versions.items():
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text("")
        info = folder / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def bare_python(args: list[str], path: Path, env: dict[str, str], site: bool = False) -> Run:
    """The script run by this Python with only ``path`` besides the standard library (``-S``: no
    site-packages), or with ``path`` before them (``site``)."""
    command = [sys.executable, *(() if site else ("-S",)), str(SCRIPT), *args]
    completed = subprocess.run(command, env={**env, "PYTHONPATH": str(path)}, capture_output=True, text=True,
                               timeout=120, stdin=subprocess.DEVNULL)
    run = Run(completed.returncode, completed.stdout, completed.stderr)
    assert_clean(run)
    return run


THIS_PYTHON = f"this Python ({sys.executable}, {'.'.join(map(str, sys.version_info[:3]))})"


def test_without_any_package_help_version_and_usage_errors_work(tmp_path, home):
    nothing = fake_packages(tmp_path / "nothing", {})
    env = base_env(home)
    assert "--max-requests" in bare_python(["--help"], nothing, env).stdout
    assert bare_python(["--version"], nothing, env).stdout.startswith("maas_rest_usage_stats.py ")
    usage = bare_python(["--service-type", "3"], nothing, env)
    assert usage.code == 2 and "Custom Endpoint is 4" in usage.stderr and "lacks" not in usage.stderr


def test_without_any_package_a_dry_run_works_and_notes_what_a_real_run_lacks(tmp_path, home):
    run = bare_python(["--last", "7d", "--timezone", "UTC", "--dry-run"], fake_packages(tmp_path / "n", {}),
                      base_env(home))
    assert run.code == 0 and run.stdout.startswith("POST https://")
    assert (f"note: a real run would fail: {THIS_PYTHON} lacks packages the script needs: "
            "huaweicloudsdkcore, requests, urllib3, tabulate;") in run.stderr


def test_a_real_run_names_what_is_missing_and_the_command_that_installs_it(tmp_path, home):
    present = fake_packages(tmp_path / "some", {"huaweicloudsdkcore": "3.1.100", "urllib3": "2.2.0",
                                                "tzlocal": "5.2"})
    env = {**base_env(home), "HW_ACCESS_KEY": fakecloud.DEMO_AK, "HW_SECRET_KEY": fakecloud.DEMO_SK}
    run = bare_python(["--last", "7d", "--project-id", PROJECT, "--timezone", "UTC"], present, env)
    assert run.code == 2 and run.stdout == ""
    error, hint = run.stderr.splitlines()
    assert error == f"error: {THIS_PYTHON} lacks packages the script needs: requests, tabulate"
    assert hint.startswith(f"hint: install them for this Python: {sys.executable} -m pip install "
                           "'requests>=2.32.2,<3' 'tabulate>=0.9,<0.11'; ")
    assert "virtualenv's python" in hint
    assert "lacks packages the script needs: requests\n" in bare_python(
        ["--last", "7d", "--project-id", PROJECT, "--timezone", "UTC", "--format", "json"], present, env).stderr


def test_a_system_python_that_pip_will_not_install_into_is_told_to_make_a_virtualenv(monkeypatch):
    """Debian's and Ubuntu's python3 (PEP 668) refuse pip install: the hint leads with a virtualenv."""
    monkeypatch.setattr(m, "externally_managed", lambda: True)
    hint = m.missing_packages_error(["requests>=2.32.2,<3"]).hint
    venv = str(SCRIPT.parent / ".venv")
    assert hint.startswith("this Python is the system's (PEP 668")
    assert (f"{sys.executable} -m venv {venv} && {venv}/bin/python -m pip install 'requests>=2.32.2,<3' && "
            f"{venv}/bin/python {SCRIPT}") in hint


def test_the_virtualenv_a_run_uses_is_not_the_systems():
    assert m.externally_managed() is False  # the suite runs in a virtualenv


def test_a_package_below_the_floor_counts_as_missing_only_for_the_runs_that_need_it(cli_process, tmp_path):
    shadow = {"PYTHONPATH": str(fake_packages(tmp_path / "old", {"tabulate": "0.1"}))}
    table = cli_process("--last", "1d", "--timezone", "UTC", "--project-id", PROJECT, env=shadow)
    assert table.code == 2
    assert "lacks packages the script needs: tabulate (0.1 installed, needs >=0.9)" in table.stderr
    assert "'tabulate>=0.9,<0.11'" in table.stderr
    as_json = cli_process("--last", "1d", "--timezone", "UTC", "--project-id", PROJECT, "--format", "json",
                          env=shadow)
    assert as_json.code == 0, as_json.stderr


@pytest.mark.parametrize("versions, args, env, lacking", [
    ({"tabulate": None}, [], {}, "tabulate"),
    ({"tabulate": None}, ["--format", "json"], {}, None),
    ({"tabulate": None}, ["--format", "csv"], {}, None),
    ({"requests": "2.31.0"}, ["--format", "json"], {}, "requests (2.31.0 installed, needs >=2.32.2)"),
    ({"requests": "3.0.1"}, ["--format", "json"], {}, None),  # only the floor is enforced
    ({"requests": ""}, ["--format", "json"], {}, None),  # importable without metadata: trusted
    ({"urllib3": "1.26.18", "huaweicloudsdkcore": None}, ["--format", "json"], {},
     "huaweicloudsdkcore, urllib3 (1.26.18 installed, needs >=2)"),
    ({"tzlocal": None}, ["--format", "json", "--timezone", "UTC"], {}, None),
    ({"tzlocal": None}, ["--format", "json"], {"TZ": "Asia/Tokyo"}, None),  # TZ names the zone
    ({"tzlocal": None}, ["--format", "json"], {"TZ": None}, "tzlocal"),  # the OS zone needs tzlocal
    ({"tzlocal": "4.3"}, ["--format", "json"], {"TZ": None}, "tzlocal (4.3 installed, needs >=5.0)"),
])
def test_which_runs_need_which_packages(cli, hourly, monkeypatch, versions, args, env, lacking):
    real = m.installed_version
    monkeypatch.setattr(m, "installed_version", lambda name: versions[name] if name in versions else real(name))
    zone = [] if "--timezone" in args or "TZ" in env else ["--timezone", "UTC"]
    run = cli("--last", "1d", "--project-id", PROJECT, *args, *zone, env=env)
    if lacking is None:
        assert run.code == 0, run.stderr
    else:
        assert run.code == 2 and run.stdout == "" and not hourly.log
        assert run.stderr.splitlines()[-2].endswith(f"lacks packages the script needs: {lacking}")


def test_usage_errors_come_before_missing_packages(cli, monkeypatch):
    monkeypatch.setattr(m, "installed_version", lambda name: None)
    for args in (["--timezone", ""], ["--last", "7x"], ["--format", "json", "--chart"], ["--service-type", "3"]):
        run = cli(*args)
        assert run.code == 2 and "lacks" not in run.stderr, args


def test_the_check_imports_nothing(tmp_path, home):
    probe = ("import sys, maas_rest_usage_stats as m; m.lacking_packages([n.split('>')[0] for n in m.REQUIREMENTS]);"
             "print(sorted({'requests', 'urllib3', 'huaweicloudsdkcore', 'tzlocal', 'tabulate'} & set(sys.modules)))")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                               env={**base_env(home), "PYTHONPATH": str(ROOT)})
    assert completed.stdout.strip() == "[]", completed.stderr


# -- long runs say so --------------------------------------------------------------------------

@pytest.mark.parametrize("requests, note", [
    (200, None),
    (201, "201 requests: at the API's 200 per minute this takes about 1 min 2 s"),
    (366, "366 requests: at the API's 200 per minute this takes about 1 min 2 s"),
    (401, "401 requests: at the API's 200 per minute this takes about 2 min 4 s"),
    (2000, "2,000 requests: at the API's 200 per minute this takes about 9 min 18 s"),
    (87_841 * 3, "263,523 requests: at the API's 200 per minute this takes about 22 h 40 min"),
])
def test_the_note_on_a_long_run(requests, note):
    assert m.long_run_note(requests) == note


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (59.2, "1 min"), (62, "1 min 2 s"), (3600, "1 h"),
                                           (3661, "1 h 1 min"), (86_400 + 7200, "1 day 2 h"),
                                           (3 * 86_400, "3 days")])
def test_durations_read_in_their_two_largest_units(seconds, text):
    assert m.format_duration(seconds) == text


def test_a_long_run_says_so_before_its_first_request(cli, cloud):
    # 366 whole UTC days; a wrong key makes the first request the only one.
    args = ("--from", day(-366), "--until", day(-1), "--timezone", "UTC", "--group-by", "day", "--project-id", PROJECT)
    run = cli(*args, env={"HW_SECRET_KEY": "SKwrongwrongwrongwrongwrong0000000000"})
    assert run.code == 3 and len(cloud.maas_requests()) == 1
    note = "note: 366 requests: at the API's 200 per minute this takes about 1 min 2 s\n"
    assert note in run.stderr and run.stderr.index(note) < run.stderr.index("error:")
    assert "requests: at the API" not in cli(*args, "-q", env={"HW_SECRET_KEY": "SKwrong0000"}).stderr


def test_a_short_run_says_nothing_about_its_length(cli, hourly):
    run = cli("--last", "200d", "--timezone", "UTC", "--group-by", "week", "--project-id", PROJECT)
    assert run.code == 0 and "per minute" not in run.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_countdown_moves_every_second_while_the_run_waits():
    from test_render import LimiterClock

    terminal = Terminal()
    console = m.Console(terminal)
    clock = LimiterClock()
    shown: list[str] = []

    def on_wait(seconds: float | None) -> None:
        console.rate_wait(seconds)
        shown.append(terminal.getvalue().split("\r")[-1].replace("\x1b[K", ""))

    limiter = m.RateLimiter(m.RATE_LIMIT, m.RATE_PERIOD + m.ARRIVAL_MARGIN, m.Clock(clock), on_wait=on_wait)
    never = threading.Event()
    for _ in range(200):
        assert limiter.acquire(never)
    clock.advance(0.5)
    console.progress(200, 366)
    assert limiter.acquire(never)
    assert clock.monotonic() == 62.0 and max(clock.sleeps) <= m.RATE_WAIT_STEP
    assert shown[0] == "200/366 requests, waiting for the API limit (200/min), about 62 s left"
    assert shown[-2:] == ["200/366 requests, waiting for the API limit (200/min), about 1 s left", "200/366 requests"]
    lefts = [int(re.search(r"about (\d+) s", line).group(1)) for line in shown[:-1]]
    assert lefts == list(range(62, 0, -1))  # one step a second, none skipped, none frozen


# -- --max-requests: a plan too large is refused before it is made ------------------------------

NOW = datetime(2026, 11, 24, 7, 15, 28, tzinfo=timezone.utc)


def test_a_plan_of_millions_is_refused_without_being_made(cli, cloud, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the plan was built")

    monkeypatch.setattr(m, "plan_rows", never)
    monkeypatch.setattr(m, "split_buckets", never)
    for extra in ((), ("--dry-run",)):
        run = cli("--last", "3660d", "--group-by", "hour", "--service-type", "all", "--timezone", "Europe/Berlin",
                  *extra, now=NOW)
        assert run.code == 2 and run.stdout == "" and not cloud.log
        error, hint = run.stderr.splitlines()
        assert error == ("error: this query needs 263,523 requests, more than --max-requests 2000: at the API's "
                         "200 per minute that takes about 22 h 40 min")
        assert hint.startswith("hint: narrow it: a coarser bucket (--group-by day instead of hour), a shorter range")


@pytest.mark.parametrize("args, count", [
    (["--last", "30d", "--group-by", "day"], 31),
    (["--last", "30d", "--group-by", "day", "--compare"], 62),
    (["--last", "10d", "--group-by", "day", "--service-type", "all"], 33),
    (["--last", "10d", "--group-by", "day", "api-key", "--api-keys", "a", "b"], 22),
    (["--last", "2d", "--group-by", "hour"], 49),
    (["--last", "365d"], 13),
    (["--from", "2026-01-01", "--to", "2026-11-01", "--group-by", "month"], 10 + 6),  # 31-day months: two each
    (["--last", "30d", "--record", "--store", "{store}"], 29),  # the whole final days only
])
def test_max_requests_counts_exactly_what_the_plan_sends(cli, tmp_path, args, count):
    args = [a.replace("{store}", str(tmp_path / "usage.db")) for a in args]
    base = ["--timezone", "UTC", "--dry-run", "--project-id", PROJECT, *args]
    run = cli(*base, "--max-requests", str(count), now=NOW)
    assert run.code == 0, run.stderr
    assert len(run.stdout.splitlines()) == count
    refused = cli(*base, "--max-requests", str(count - 1), now=NOW)
    assert refused.code == 2 and f"needs {count:,} requests, more than --max-requests {count - 1}" in refused.stderr


@pytest.mark.parametrize("group_by", [(), ("--group-by", "model")])  # Cloud Eye's calls are counted later
@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_requests_must_be_positive(cli, cloud, value, group_by):
    run = cli("--last", "1d", *group_by, "--max-requests", value, "--dry-run")
    assert run.code == 2 and "--max-requests must be at least 1" in run.stderr
    assert cloud.log == []


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "America/Havana", "America/Sao_Paulo", "America/Santiago",
         "Asia/Beirut", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham", "Pacific/Apia",
         "Africa/Casablanca", "Africa/Monrovia", "Europe/Dublin", "Antarctica/Troll", "America/St_Johns"]
LONGEST = {"hour": 20, None: 800, "day": 200, "week": 800, "month": 1500}  # days, so a plan builds quickly


@st.composite
def queries(draw) -> m.Query:
    zone_name = draw(st.sampled_from(ZONES))
    zone = ZoneInfo(zone_name)
    name = draw(st.sampled_from([None, *m.UNITS]))
    bucket = None if name is None else m.UNITS[name]
    start = m.EPOCH + timedelta(milliseconds=draw(st.integers(0, 70 * 365 * DAY_MS)))
    if draw(st.booleans()):  # ranges that start at a local midnight, as --from DATE does
        start = m.day_start(start.astimezone(zone).date(), zone)
    length = timedelta(milliseconds=draw(st.integers(1, LONGEST[name] * DAY_MS)))
    period = m.Period(start, start + length)
    keys = draw(st.sampled_from([None, ("a",), ("a", "b", "")]))
    previous = None
    if draw(st.booleans()) and period.start - 2 * length > m.EPOCH:
        previous = m.previous_period(m.RangeRequest(), period, zone)
    return m.Query(region="cn-southwest-2", zone_name=zone_name, zone=zone, period=period, infer_type="real_time",
                   service_types=draw(st.sampled_from([(2,), (1, 2, 4)])), api_keys=keys, ips=None, bucket=bucket,
                   by_key=keys is not None and draw(st.booleans()), previous=previous)


@given(query=queries())
def test_the_count_is_the_plans_length_in_every_zone_and_bucket(query):
    previous = query.previous_query()
    planned = m.plan_rows(query, NOW) + (m.plan_rows(previous, NOW) if previous is not None else [])
    assert m.request_count(query) == len(m.windows_of(planned))


@pytest.mark.parametrize("zone, start, end", [
    ("Pacific/Apia", "2011-12-25", "2012-01-05"),  # Samoa skipped December 30, 2011
    ("Australia/Lord_Howe", "2025-04-01", "2025-04-20"),  # a 30-minute change: hours shift
    ("Asia/Beirut", "2015-10-20", "2015-10-30"),  # back from 00:00 to 23:00 the day before
    ("America/Havana", "2025-03-05", "2025-03-12"),  # forward at midnight
])
@pytest.mark.parametrize("name", m.UNITS)
def test_the_count_across_odd_zone_changes(zone, start, end, name):
    tz, bucket = ZoneInfo(zone), m.UNITS[name]
    period = m.Period(m.day_start(date.fromisoformat(start), tz) + timedelta(minutes=17),
                      m.day_start(date.fromisoformat(end), tz))
    buckets = m.split_buckets(period, bucket, tz)
    assert m.window_count(period, bucket, tz) == sum(len(m.split_windows(b.start_ms, b.end_ms)) for b in buckets)


# -- --compare past the retention --------------------------------------------------------------

def change_column(table: str) -> dict[str, str]:
    lines = [line for line in table.splitlines()
             if line.startswith("|") and "Metric" not in line and not set(line) <= set("|-: ")]
    return {cells[0]: cells[3] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


FOOTNOTE = "n/a: the previous period lies (partly) before MaaS's 30-day retention; a history store (--store) keeps it"


def test_a_previous_period_past_the_retention_has_no_change(cli, hourly):
    args = ("--last", "20d", "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    table = cli(*args)
    assert table.code == 0, table.stderr
    assert set(change_column(table.stdout).values()) == {"n/a"}
    assert FOOTNOTE in table.stdout.splitlines()
    doc = cli(*args, "--format", "json").json()
    assert doc["previous"]["coverage"]["complete"] is False
    assert set(doc["change"]) == set(m.METRIC_NAMES) and set(doc["change"].values()) == {None}


def test_a_previous_period_inside_the_retention_keeps_its_change(cli, hourly):
    table = cli("--last", "14d", "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    assert table.code == 0 and "n/a" not in table.stdout
    assert change_column(table.stdout)["Total Tokens"].endswith("%")


def test_new_only_when_the_previous_period_is_covered_and_zero(cli, cloud):
    today_ms = int(datetime.now(timezone.utc).timestamp()) * 1000 // DAY_MS * DAY_MS
    cloud.events = hourly_index(today_ms - DAY_MS, today_ms + DAY_MS)
    covered = cli("--from", day(-2), "--to", day(0), "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    assert change_column(covered.stdout)["Total Tokens"] == "new"
    cloud.events = hourly_index(today_ms - 20 * DAY_MS, today_ms + DAY_MS)
    past = cli("--from", day(-20), "--to", day(0), "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    assert change_column(past.stdout)["Total Tokens"] == "n/a"  # the old part may only look empty


def shift_stored_days(path: Path, days: int) -> None:
    """Copy every stored day ``days`` days earlier (UTC days: 24 h each), as if recorded back then."""
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(days)")]
        moved = {"day": f"date(day, '{-days} days')", "start_ms": f"start_ms - {days * DAY_MS}",
                 "end_ms": f"end_ms - {days * DAY_MS}"}
        db.execute(f"INSERT INTO days ({', '.join(columns)}) SELECT {', '.join(moved.get(c, c) for c in columns)} "
                   "FROM days")


def test_a_store_that_serves_the_old_part_restores_the_change(cli, hourly, tmp_path):
    store = str(tmp_path / "usage.db")
    common = ("--timezone", "UTC", "--project-id", PROJECT, "--store", store)
    recorded = cli("--from", day(-29), "--to", day(-9), *common, "--record", "--format", "json")
    assert recorded.code == 0 and recorded.json()["store"]["days_saved"] == 20
    shift_stored_days(tmp_path / "usage.db", 20)  # now days -49 … -10 are stored
    args = ("--from", day(-25), "--to", day(-1), "--timezone", "UTC", "--project-id", PROJECT, "--compare")
    doc = cli(*args, "--store", store, "--format", "json").json()
    assert doc["previous"]["coverage"]["complete"] is True
    assert doc["change"]["total_tokens"] is not None
    assert "n/a" not in cli(*args, "--store", store).stdout
    assert set(cli(*args, "--format", "json").json()["change"].values()) == {None}  # without the store


# -- a store kept in another zone --------------------------------------------------------------

def test_days_stored_in_another_zone_only_are_named_with_the_zone_that_reads_them(cli, hourly, tmp_path):
    store = str(tmp_path / "usage.db")
    span = ("--from", day(-20), "--to", day(-5), "--project-id", PROJECT, "--store", store)
    assert cli(*span, "--timezone", "UTC", "--record").code == 0
    run = cli(*span, "--timezone", "Asia/Shanghai", "--format", "json")
    assert run.code == 0
    assert run.json()["store"]["days_other_zones"] == {"UTC": 15}
    assert run.json()["store"]["days_read"] == 0
    assert ("note: the store holds 15 days of this query recorded in UTC; days are kept per zone, so these are "
            "fetched live (--timezone UTC reads them)") in run.stderr.splitlines()
    assert cli(*span, "--timezone", "UTC", "--format", "json").json()["store"]["days_other_zones"] == {}
    quiet = cli(*span, "--timezone", "Asia/Shanghai", "-q")
    assert quiet.code == 0 and quiet.stderr == ""


def test_days_held_in_the_querys_own_zone_too_are_not_counted(cli, hourly, tmp_path):
    store = str(tmp_path / "usage.db")
    span = ("--from", day(-20), "--to", day(-5), "--project-id", PROJECT, "--store", store)
    assert cli(*span, "--timezone", "UTC", "--record").code == 0
    assert cli(*span, "--timezone", "Asia/Shanghai", "--record").code == 0
    run = cli(*span, "--timezone", "Asia/Shanghai", "--format", "json")
    assert run.json()["store"]["days_other_zones"] == {}
    assert "recorded in" not in run.stderr


def test_other_keys_in_other_zones_are_not_this_query(cli, hourly, tmp_path):
    store = str(tmp_path / "usage.db")
    span = ("--from", day(-20), "--to", day(-5), "--project-id", PROJECT, "--store", store)
    assert cli(*span, "--timezone", "UTC", "--record", "--api-keys", "key-alpha").code == 0
    run = cli(*span, "--timezone", "Asia/Shanghai", "--format", "json")
    assert run.json()["store"]["days_other_zones"] == {}


def test_a_dry_run_names_days_kept_in_another_zone_too(cli, hourly, tmp_path):
    store = str(tmp_path / "usage.db")
    span = ("--from", day(-20), "--to", day(-5), "--project-id", PROJECT, "--store", store)
    assert cli(*span, "--timezone", "UTC", "--record").code == 0
    run = cli(*span, "--timezone", "Asia/Shanghai", "--dry-run")
    assert run.code == 0 and "the store holds 15 days of this query recorded in UTC" in run.stderr
