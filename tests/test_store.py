"""The history store end to end: --store/--record against the fake cloud, with SQLite checked directly."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import SCRIPT, SECRETS, Run, assert_clean, hourly_index, serve_at
from test_cli import expected_metrics
from test_groups import ms

PID = fakecloud.DEMO_PROJECT_ID
SHANGHAI = ("--timezone", "Asia/Shanghai", "--project-id", PID)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
# Only days inside MaaS's 30-day retention are stored, so the dates are relative to today.
TODAY = datetime.now(ZoneInfo("Asia/Shanghai")).date()


def D(k: int) -> str:
    """Day k of the test window: D(1) is 20 days ago, D(11) is 10 days ago (Asia/Shanghai)."""
    return (TODAY - timedelta(days=21 - k)).isoformat()


RANGE = ("--from", D(1), "--to", D(11))  # ten final days inside the retention


def at(day: str, zone: str = "Asia/Shanghai", time_of_day: str = "00:00") -> int:
    return ms(f"{day}T{time_of_day}", zone)


@pytest.fixture
def hourly(cloud):
    today_ms = int(datetime.now(timezone.utc).timestamp()) * 1000 // DAY_MS * DAY_MS
    cloud.events = hourly_index(today_ms - 120 * DAY_MS, today_ms + 2 * DAY_MS)
    return cloud


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "state" / "maas" / "usage.db"


def rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT day, service_type, api_keys, total_tokens, total_requests FROM days "
                          "ORDER BY day, service_type, api_keys").fetchall()


def test_record_saves_final_days_and_a_second_run_sends_nothing(cli, hourly, store):
    first = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record", "--format", "json")
    assert first.code == 0, first.stderr
    doc = first.json()
    assert [r["start"][:10] for r in doc["rows"]] == [D(k) for k in range(1, 11)]
    assert {r["source"] for r in doc["rows"]} == {"live"}
    assert doc["store"]["days_saved"] == 10 and doc["store"]["days_read"] == 0
    assert len(hourly.maas_requests()) == 10 and len(rows(store)) == 10
    hourly.clear_log()
    again = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record", "--format", "json")
    assert again.code == 0, again.stderr
    assert hourly.log == []
    assert again.json()["store"]["days_saved"] == 0 and again.json()["store"]["days_read"] == 10
    assert again.json()["totals"] == doc["totals"]


def test_a_stored_range_is_answered_without_the_api(cli, hourly, store):
    assert cli(*RANGE, *SHANGHAI, "--store", str(store), "--record").code == 0
    hourly.fail_all = True
    hourly.clear_log()
    run = cli(*RANGE, *SHANGHAI, "--store", str(store), "--format", "json")
    assert run.code == 0, run.stderr
    assert hourly.log == []
    assert run.json()["totals"] == expected_metrics(hourly.events, at(D(1)), at(D(11)))
    assert run.json()["rows"][0]["source"] == "store"
    without = cli(*RANGE, *SHANGHAI, "--format", "json", "--retries", "0")
    assert without.code == 1


def test_partly_stored_range_fetches_only_the_rest_and_sums_exactly(cli, hourly, store):
    assert cli("--from", D(3), "--to", D(6), *SHANGHAI, "--store", str(store), "--record").code == 0
    hourly.clear_log()
    run = cli("--from", f"{D(1)} 12:00", "--to", D(9), *SHANGHAI, "--store", str(store), "--format", "json")
    assert run.code == 0, run.stderr
    spans = sorted((b["start_time"], b["end_time"]) for b in hourly.maas_requests())
    assert spans == [(at(D(1), time_of_day="12:00"), at(D(3))), (at(D(6)), at(D(9)))]
    doc = run.json()
    assert doc["rows"][0]["source"] == "mixed" and doc["store"]["days_read"] == 3
    assert doc["totals"] == expected_metrics(hourly.events, at(D(1), time_of_day="12:00"), at(D(9)))


def test_group_by_day_saves_its_final_days_and_reuses_them(cli, hourly, store):
    run = cli(*RANGE, *SHANGHAI, "--store", str(store), "--group-by", "day", "--service-type", "all",
              "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["store"]["days_saved"] == 30 and len(rows(store)) == 30
    hourly.clear_log()
    week = cli("--from", D(4), "--to", D(11), *SHANGHAI, "--store", str(store), "--group-by", "week",
               "--service-type", "all", "--format", "json")
    assert week.code == 0 and hourly.log == []
    assert {r["source"] for r in week.json()["rows"]} == {"store"}


@pytest.mark.parametrize("zone, dst_day", [("America/New_York", date(2026, 11, 1)),  # 25 hours
                                            ("Europe/Berlin", date(2026, 3, 29))])  # 23 hours
def test_dst_week_is_stored_day_by_local_day(cli, cloud, store, zone, dst_day):
    now = datetime.combine(dst_day + timedelta(days=9), datetime.min.time(), tzinfo=timezone.utc)
    serve_at(cloud, now)
    cloud.events = hourly_index(at(dst_day.isoformat(), "UTC") - 10 * DAY_MS, at(dst_day.isoformat(), "UTC") + 10 * DAY_MS)
    first, last = dst_day - timedelta(days=3), dst_day + timedelta(days=3)
    args = ("--from", first.isoformat(), "--to", last.isoformat(), "--timezone", zone, "--project-id", PID,
            "--store", str(store))
    assert cli(*args, "--record", now=now).code == 0
    with sqlite3.connect(store) as db:
        spans = dict(db.execute("SELECT day, end_ms - start_ms FROM days").fetchall())
    assert len(spans) == 6
    assert spans[dst_day.isoformat()] == DAY_MS + (HOUR_MS if dst_day.month == 11 else -HOUR_MS)
    assert spans[first.isoformat()] == DAY_MS
    cloud.fail_all = True
    run = cli(*args, "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert {row["source"] for row in run.json()["rows"]} == {"store"}
    expected = expected_metrics(cloud.events, at(first.isoformat(), zone), at(last.isoformat(), zone))
    assert run.json()["totals"] == expected


def test_stored_rows_keep_keys_filters_and_zones_apart(cli, hourly, store):
    base = (*RANGE, *SHANGHAI, "--store", str(store), "--record")
    assert cli(*base, "--api-keys", "key-alpha", "key-beta", "--group-by", "api-key").code == 0
    assert cli(*base, "--api-keys", "key-beta", "key-alpha").code == 0
    keys = {row[2] for row in rows(store)}
    assert keys == {'["key-alpha"]', '["key-beta"]', '["key-alpha", "key-beta"]'}
    hourly.clear_log()
    other_zone = cli(*RANGE, "--timezone", "UTC", "--project-id", PID, "--store", str(store), "--format", "json")
    assert other_zone.code == 0 and len(hourly.maas_requests()) == 1  # UTC days are not Shanghai days


def test_a_day_whose_bounds_no_longer_match_the_zone_rules_is_fetched_again(cli, hourly, store):
    assert cli("--from", D(3), "--to", D(4), *SHANGHAI, "--store", str(store), "--record").code == 0
    with sqlite3.connect(store) as db:
        db.execute("UPDATE days SET start_ms = start_ms + 3600000, total_tokens = 1")
    hourly.clear_log()
    run = cli("--from", D(3), "--to", D(4), *SHANGHAI, "--store", str(store), "--format", "json")
    assert run.code == 0 and len(hourly.maas_requests()) == 1
    assert run.json()["totals"]["total_tokens"] != 1


def test_days_older_than_the_retention_are_reported_and_never_stored(cli, hourly, store):
    old = ("--from", "2026-05-01", "--to", "2026-05-04")
    run = cli(*old, *SHANGHAI, "--store", str(store), "--group-by", "day", "--format", "json")
    assert run.code == 0
    assert run.json()["store"]["days_saved"] == 0  # their answers may be empty: never kept as final
    record = cli(*old, *SHANGHAI, "--store", str(store), "--record", "--format", "json")
    assert record.code == 0 and record.json()["store"]["days_saved"] == 0
    assert run.json()["store"]["days_unrecorded"] == ["2026-05-01", "2026-05-02", "2026-05-03"]
    assert "3 day(s)" in run.stderr and "retention" in run.stderr
    quiet = cli(*old, *SHANGHAI, "--store", str(store), "-q")
    assert quiet.stderr == ""


def test_only_final_days_are_recorded(cli, hourly, store):
    run = cli("--from", "today", "--timezone", "UTC", "--project-id", PID, "--store", str(store), "--record")
    assert run.code == 2 and "final" in run.stderr
    assert hourly.log == []
    week = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record", "--group-by", "week")
    assert week.code == 2 and "week" in week.stderr
    no_store = cli(*RANGE, *SHANGHAI, "--record")
    assert no_store.code == 2 and "--store" in no_store.stderr


def test_record_defaults_to_the_last_30_days(cli, hourly, store):
    for hour, days in ((2, 28), (3, 29), (12, 29)):  # a day is final FINAL_AFTER (3 h) after it ends
        now = datetime(2026, 6, 20, hour, 30, tzinfo=timezone.utc)
        run = cli("--timezone", "UTC", "--store", str(store), "--record", "--dry-run", "--project-id", PID, now=now)
        assert run.code == 0, run.stderr
        assert len(run.stdout.splitlines()) == days, hour  # whole final days of the last 30 x 24 h


def test_dry_run_with_a_store_plans_only_the_live_part(cli, hourly, store):
    assert cli("--from", D(3), "--to", D(6), *SHANGHAI, "--store", str(store), "--record").code == 0
    hourly.clear_log()
    plan = cli(*RANGE, *SHANGHAI, "--store", str(store), "--dry-run")
    assert plan.code == 0 and len(plan.stdout.splitlines()) == 2 and hourly.log == []
    blind = cli(*RANGE, "--timezone", "Asia/Shanghai", "--store", str(store), "--dry-run")
    assert blind.code == 0 and len(blind.stdout.splitlines()) == 1 and "whole range" in blind.stderr


def test_store_file_is_private_and_holds_no_secret(cli, hourly, store):
    run = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record",
              env={"HW_ACCESS_KEY": fakecloud.TEMP_AK, "HW_SECRET_KEY": fakecloud.TEMP_SK,
                   "HW_SECURITY_TOKEN": fakecloud.TEMP_TOKEN})
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    for folder in (store.parent, store.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA application_id").fetchone()[0] != 0
    for path in store.parent.iterdir():
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data


def test_store_env_var_is_honoured(cli, hourly, store):
    run = cli(*RANGE, *SHANGHAI, "--record", env={"MAAS_USAGE_STORE": str(store)})
    assert run.code == 0, run.stderr
    assert len(rows(store)) == 10


def _foreign_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")


def _newer_store(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id=1296122195")
        db.execute("PRAGMA user_version=99")
        db.execute("CREATE TABLE days (x)")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: p.mkdir(parents=True), "directory"),
    (lambda p: p.write_text("these are my notes, not a database\n" * 20), "not an SQLite file"),
    (_foreign_db, "another program"),
    (_newer_store, "newer version"),
])
def test_a_path_that_is_not_a_store_is_refused_untouched(cli, cloud, tmp_path, make, fragment):
    path = tmp_path / "usage.db"
    make(path)
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in tmp_path.iterdir()}
    run = cli(*RANGE, *SHANGHAI, "--store", str(path), "--record")
    assert run.code == 2 and str(path) in run.stderr and fragment in run.stderr
    assert cloud.log == []
    assert {p.name: (p.read_bytes() if p.is_file() else None) for p in tmp_path.iterdir()} == before


def _break_writes(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER full BEFORE INSERT ON days BEGIN SELECT RAISE(ABORT, 'disk full'); END")


def test_an_unwritable_store_fails_record_but_not_a_query(cli, hourly, store):
    assert cli("--from", D(3), "--to", D(4), *SHANGHAI, "--store", str(store), "--record").code == 0
    _break_writes(store)
    record = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record")
    assert record.code == 1 and "cannot write to the store" in record.stderr and record.stdout == ""
    query = cli(*RANGE, *SHANGHAI, "--store", str(store), "--group-by", "day", "--format", "json")
    assert query.code == 0 and "cannot write to the store" in query.stderr
    assert query.json()["totals"] == expected_metrics(hourly.events, at(D(1)), at(D(11)))


def test_a_failed_record_is_completed_by_the_next_run(cli, hourly, store):
    hourly.add_fault("status", status=500, times=50, error_msg="down")
    run = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record", "--retries", "0")
    assert run.code == 1 and run.stdout == "" and "down" in run.stderr
    hourly.clear_faults()
    ok = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record", "--format", "json")
    assert ok.code == 0 and ok.json()["store"]["days_saved"] == 10


def test_record_saves_successes_before_a_late_failure(cli, hourly, store):
    hourly.latency = 0.05
    hourly.add_fault("delay", seconds=0.0, times=5)  # the first five answer normally
    hourly.add_fault("status", status=500, times=50, error_msg="down")
    run = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record", "--retries", "0", "--concurrency", "1")
    assert run.code == 1 and run.stdout == ""
    assert len(rows(store)) == 5


def _record_process(store: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--from", D(-7), "--to", D(18),
                             *SHANGHAI, "--store", str(store), "--record", "--concurrency", "1", "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_record_leaves_a_valid_store(cloud_env, hourly, store):
    hourly.latency = 0.05
    process = _record_process(store, cloud_env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not store.exists() or len(hourly.maas_requests()) < 10):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=20)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        saved = db.execute("SELECT count(*) FROM days").fetchone()[0]
    assert 0 < saved < 25
    hourly.latency = 0
    finish = _record_process(store, cloud_env)
    out, err = finish.communicate(timeout=60)
    assert_clean(Run(finish.returncode, out, err))
    assert finish.returncode == 0 and len(rows(store)) == 25


def test_two_records_at_once_both_succeed_and_count_nothing_twice(cloud_env, hourly, store):
    hourly.latency = 0.02
    first, second = _record_process(store, cloud_env), _record_process(store, cloud_env)
    for process in (first, second):
        out, err = process.communicate(timeout=90)
        assert_clean(Run(process.returncode, out, err))
        assert process.returncode == 0, err
    assert len(rows(store)) == 25
    hourly.fail_all = True
    with sqlite3.connect(store) as db:
        stored = db.execute("SELECT sum(total_requests) FROM days").fetchone()[0]
    expected = expected_metrics(hourly.events, at(D(-7)), at(D(18)))
    assert stored == expected["total_requests"]


def test_dry_run_never_creates_a_store(cli, cloud, store):
    run = cli(*RANGE, *SHANGHAI, "--store", str(store), "--dry-run")
    assert run.code == 0 and "does not exist yet" in run.stderr
    assert not store.exists() and not store.parent.exists()


def _corrupt(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert pages >= 2
    with open(path, "r+b") as handle:  # keep the header page, wreck the table's pages
        handle.seek(page)
        handle.write(b"\xff" * page * (pages - 1))


def test_a_damaged_store_fails_record_but_a_query_still_answers_live(cli, hourly, store):
    assert cli(*RANGE, *SHANGHAI, "--store", str(store), "--record").code == 0
    _corrupt(store)
    query = cli(*RANGE, *SHANGHAI, "--store", str(store), "--format", "json")
    assert query.code == 0, query.stderr
    assert "cannot read the store" in query.stderr
    assert query.json()["totals"] == expected_metrics(hourly.events, at(D(1)), at(D(11)))
    record = cli(*RANGE, *SHANGHAI, "--store", str(store), "--record")
    assert record.code == 1 and record.stdout == "" and str(store) in record.stderr


def test_a_store_locked_past_the_timeout_fails_record_but_not_a_query(cli, hourly, store, fake_clock):
    args = ("--from", D(3), "--to", D(5), *SHANGHAI, "--store", str(store))
    assert cli(*args, "--record").code == 0
    with sqlite3.connect(store, isolation_level=None) as holder:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for longer than the busy timeout
        holder.execute("DELETE FROM days WHERE day = ?", (D(4),))
        # The wait is bounded; on the fake clock the test need not sit out the 15 s.
        record_run = cli(*args, "--record", "--from", D(1), clock=fake_clock)
        waited = fake_clock.monotonic()
        query_run = cli(*args, "--group-by", "day", "--from", D(1), clock=fake_clock)
        holder.execute("ROLLBACK")
    assert m.STORE_BUSY_TIMEOUT <= waited < m.STORE_BUSY_TIMEOUT + 1  # waited for the lock, once
    assert record_run.code == 1 and "locked" in record_run.stderr and record_run.stdout == ""
    assert query_run.code == 0 and "cannot write to the store" in query_run.stderr
    assert f"| {D(1)} " in query_run.stdout and "| Total " in query_run.stdout


# -- pure logic: stored days and live spans tile the period ------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402


ZONES = ["Asia/Shanghai", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "UTC"]


@settings(max_examples=150, deadline=None)
@given(zone_name=st.sampled_from(ZONES), start_day=st.integers(0, 3000), length_h=st.integers(1, 24 * 70),
       offset_min=st.integers(0, 24 * 60 - 1), held_bits=st.integers(0, 2 ** 70 - 1))
def test_stored_days_and_live_spans_cover_the_period_exactly_once(zone_name, start_day, length_h, offset_min,
                                                                  held_bits):
    zone = ZoneInfo(zone_name)
    start = datetime(2018, 1, 1, tzinfo=timezone.utc) + timedelta(days=start_day, minutes=offset_min)
    period = m.Period(start, start + timedelta(hours=length_h))
    now = period.end + timedelta(days=1)
    days = m.final_days(period, zone, now)
    held = {day: m.Usage() for index, (day, _) in enumerate(days) if held_bits >> index & 1}
    pieces = sorted([(p.start, p.end) for day, p in days if day in held] +
                    [(span.start, span.end) for span in m.live_spans(period, days, held)])
    assert pieces[0][0] == period.start and pieces[-1][1] == period.end
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous: nothing counted twice or missed
    for day, day_period in days:  # every final day is whole, local, and inside the period
        assert day_period.start.astimezone(zone).date() == day
        assert period.start <= day_period.start and day_period.end <= period.end


def test_final_days_end_more_than_three_hours_ago():
    zone = ZoneInfo("UTC")
    period = m.Period(datetime(2026, 5, 1, tzinfo=timezone.utc), datetime(2026, 5, 4, tzinfo=timezone.utc))
    at_limit = datetime(2026, 5, 4, 3, tzinfo=timezone.utc)
    assert [d.isoformat() for d, _ in m.final_days(period, zone, at_limit)] == ["2026-05-01", "2026-05-02"]
    later = at_limit + timedelta(seconds=1)
    assert len(m.final_days(period, zone, later)) == 3
