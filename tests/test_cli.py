"""End to end: the real script as a subprocess against the fake cloud (IAM + MaaS over HTTPS)."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import fakecloud
from conftest import base_env, oracle_metrics, run_script

SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
SEED_BODY = {"service_type": 2, "start_time": 1778169600000, "end_time": 1779292800000,
             "timezone": "Asia/Shanghai", "infer_type": "real_time"}
SEED_TABLE = """\
MaaS Preset Service Usage Statistics - Region: cn-southwest-2
+-------------------+-------------------+
| Metric            | Value             |
+===================+===================+
| Total Tokens      | 2,482.08 M tokens |
| Prompt Tokens     | 2,456.50 M tokens |
| Completion Tokens | 24.87 M tokens    |
| Total Requests    | 67,188            |
| Total Errors      | 8,002             |
| Error Rate        | 11.91%            |
+-------------------+-------------------+
Period: 2026-05-08 00:00:00 ~ 2026-05-21 00:00:00 (CST)
"""
DAY_MS = 86_400_000


def expected_metrics(events, start_ms, end_ms, service_type=2, infer_type="real_time", api_keys=None, ips=None):
    """The contract's METRICS from the fake cloud's own exact answer for the whole range."""
    return oracle_metrics(fakecloud.expected_usage(events, start_ms, end_ms, service_type, infer_type, api_keys, ips))


def write_private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_bytes(text.encode("utf-8"))
    path.chmod(mode)
    return path


# -- the seed example ---------------------------------------------------------------------------

def test_seed_example_prints_the_seed_table_exactly(cli, cloud):
    run = cli(*SEED_RANGE)
    assert run.code == 0, run.stderr
    assert run.stdout == SEED_TABLE
    assert cloud.maas_requests() == [SEED_BODY]


def test_seed_example_json_follows_the_schema(cli, cloud):
    run = cli(*SEED_RANGE, "--format", "json")
    assert run.code == 0, run.stderr
    doc = run.json()
    assert doc["schema_version"] == 1
    assert doc["project_id"] == fakecloud.DEMO_PROJECT_ID
    assert doc["timezone"] == "Asia/Shanghai"
    assert doc["period"] == {"start": "2026-05-08T00:00:00+08:00", "end": "2026-05-21T00:00:00+08:00",
                             "start_ms": 1778169600000, "end_ms": 1779292800000}
    assert doc["totals"] == {"total_tokens": 2482084980, "prompt_tokens": 2456504362,
                             "completion_tokens": 24872928, "total_requests": 67188, "total_errors": 8002,
                             "error_rate": 11.91, "total_completion_tasks": 0, "total_infer_count": 0}
    assert len(doc["rows"]) == 1 and doc["rows"][0]["service_name"] == "Preset Service"
    assert "windows" not in doc


def test_raw_adds_each_windows_response(cli):
    run = cli(*SEED_RANGE, "--format", "json", "--raw")
    assert run.code == 0, run.stderr
    (window,) = run.json()["windows"]
    assert window["response"]["total_token"] == 2482084.98
    table = cli(*SEED_RANGE, "--raw")
    assert table.stdout.startswith(SEED_TABLE) and "2482084.98" in table.stdout


def test_batch_adds_completed_tasks_and_inference_count(cli, cloud):
    run = cli(*SEED_RANGE, "--infer-type", "batch", "--format", "json")
    assert run.code == 0, run.stderr
    expected = expected_metrics(cloud.events, 1778169600000, 1779292800000, infer_type="batch")
    assert run.json()["totals"] == expected
    assert expected["total_completion_tasks"] > 0
    table = cli(*SEED_RANGE, "--infer-type", "batch")
    assert f"| Completed Tasks   | {expected['total_completion_tasks']:,}" in table.stdout
    assert "| Inference Count   |" in table.stdout


# -- long ranges: windows and exact totals ------------------------------------------------------

def test_hundred_day_range_is_four_windows_with_exact_totals(cli, cloud):
    start = datetime(2026, 5, 1, tzinfo=timezone.utc)
    cloud.events = fakecloud.hourly_events(int((start - timedelta(days=5)).timestamp() * 1000),
                                           int((start + timedelta(days=110)).timestamp() * 1000))
    run = cli("--from", "2026-05-01", "--to", "2026-08-09", "--timezone", "UTC", "--format", "json",
              "--service-type", "all")
    assert run.code == 0, run.stderr
    start_ms, end_ms = 1777593600000, 1777593600000 + 100 * DAY_MS
    bodies = cloud.maas_requests()
    assert len(bodies) == 12  # 4 windows x 3 service types
    for service_type in (1, 2, 4):
        windows = sorted((b["start_time"], b["end_time"]) for b in bodies if b["service_type"] == service_type)
        assert windows[0][0] == start_ms and windows[-1][1] == end_ms
        assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
        assert all(end - begin <= 30 * DAY_MS for begin, end in windows)
    doc = run.json()
    by_type = {row["service_type"]: row for row in doc["rows"]}
    for service_type in (1, 2, 4):
        expected = expected_metrics(cloud.events, start_ms, end_ms, service_type)
        assert {k: by_type[service_type][k] for k in expected} == expected
    assert doc["totals"]["total_requests"] == sum(r["total_requests"] for r in doc["rows"])


def test_api_keys_and_ips_filters_are_sent_and_applied(cli, cloud):
    run = cli(*SEED_RANGE, "--api-keys", "key-alpha", "", "--ips", "192.0.2.10", "--format", "json")
    assert run.code == 0, run.stderr
    (body,) = cloud.maas_requests()
    assert body["api_keys"] == ["key-alpha", ""] and body["ips"] == ["192.0.2.10"]
    expected = expected_metrics(cloud.events, SEED_BODY["start_time"], SEED_BODY["end_time"],
                                api_keys=["key-alpha", ""], ips=["192.0.2.10"])
    assert run.json()["totals"] == expected
    assert run.json()["api_keys"] == ["key-alpha", ""]


def test_year_query_sends_its_windows_concurrently(cli, cloud):
    cloud.hold_statistics(13)  # no answer until 13 are in flight: counted without racing the client
    run = cli("--last", "365d", "--timezone", "UTC", "--format", "json")
    assert run.code == 0, run.stderr
    assert len(cloud.maas_requests()) == 13
    assert cloud.max_in_flight == 13  # the IAM lookup proved the keys, so all windows go at once


def test_given_project_id_sends_one_request_alone_before_fanning_out(cli, cloud):
    cloud.latency = 0.2
    cloud.hold_statistics(3, after=1)  # the other three are counted in flight without racing the client
    run = cli("--last", "100d", "--timezone", "UTC", "--project-id", fakecloud.DEMO_PROJECT_ID)
    assert run.code == 0, run.stderr
    log = [entry for entry in cloud.log if entry.kind == "maas"]
    assert len(log) == 4 and not [e for e in cloud.log if e.kind == "iam"]
    first_done = log[0].at + 0.2
    assert all(entry.at >= first_done - 0.05 for entry in log[1:])
    assert cloud.max_in_flight == 3


# -- project id ---------------------------------------------------------------------------------

def test_project_id_comes_from_iam_choosing_the_exact_region_name(cli, cloud):
    run = cli(*SEED_RANGE, "--format", "json")
    assert run.code == 0, run.stderr
    iam = [e for e in cloud.log if e.kind == "iam"]
    assert len(iam) == 1 and iam[0].query.get("name") in ("cn-southwest-2", ["cn-southwest-2"])
    assert run.json()["project_id"] == fakecloud.DEMO_PROJECT_ID


@pytest.mark.parametrize("source", ["flag", "HW_PROJECT_ID", "HUAWEICLOUD_SDK_PROJECT_ID"])
def test_given_project_id_skips_iam(cli, cloud, source):
    args, env = list(SEED_RANGE), {}
    if source == "flag":
        args += ["--project-id", fakecloud.DEMO_PROJECT_ID]
    else:
        env[source] = fakecloud.DEMO_PROJECT_ID
    run = cli(*args, env=env)
    assert run.code == 0, run.stderr
    assert not [e for e in cloud.log if e.kind == "iam"]
    assert run.stdout == SEED_TABLE


def test_malformed_project_id_is_a_usage_error_and_sends_nothing(cli, cloud):
    run = cli(*SEED_RANGE, "--project-id", "../../v3/users")
    assert run.code == 2 and "project id" in run.stderr
    assert cloud.log == []


def test_region_without_a_project_fails_with_a_hint(cli, cloud):
    run = cli(*SEED_RANGE, "--region", "ap-southeast-9")
    assert run.code == 1
    assert "no project named ap-southeast-9" in run.stderr and "--project-id" in run.stderr


# -- credentials --------------------------------------------------------------------------------

AK, SK = fakecloud.DEMO_AK, fakecloud.DEMO_SK
CREDENTIAL_FILES = {
    "one-per-line": f"{AK}\n{SK}\n",
    "comma": f"{AK},{SK}\n",
    "key-value": f"export HW_ACCESS_KEY='{AK}'\nHW_SECRET_KEY=\"{SK}\"\n",
    "sdk-key-value": f"HUAWEICLOUD_SDK_AK={AK}\nHUAWEICLOUD_SDK_SK={SK}\n",
    "console-csv": f"User Name,Access Key Id,Secret Access Key\nmaas-reader,{AK},{SK}\n",
    "bom-crlf-comments": f"\ufeff# my keys\r\n\r\n{AK}\r\n# secret next\r\n{SK}\r\n",
    "profile": f"[basic]\nak = {AK}\nsk = {SK}\n",
}


@pytest.mark.parametrize("name", sorted(CREDENTIAL_FILES))
def test_every_credentials_file_format_works(cli, tmp_path, name):
    path = write_private(tmp_path / "aksk.txt", CREDENTIAL_FILES[name])
    run = cli(*SEED_RANGE, "--credentials-file", str(path), env={"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None})
    assert run.code == 0, run.stderr
    assert run.stdout == SEED_TABLE
    assert "warning" not in run.stderr


def test_group_readable_credentials_file_is_warned_about(cli, tmp_path):
    path = write_private(tmp_path / "aksk.txt", f"{AK}\n{SK}\n", mode=0o644)
    run = cli(*SEED_RANGE, "--credentials-file", str(path))
    assert run.code == 0
    assert "warning:" in run.stderr and "chmod 600" in run.stderr


def test_sdk_environment_variables_work(cli):
    run = cli(*SEED_RANGE, env={"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None,
                                "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK})
    assert run.code == 0, run.stderr
    assert run.stdout == SEED_TABLE


def test_sdk_profile_file_supplies_keys_and_project_id(cli, cloud, tmp_path):
    profile = write_private(tmp_path / "credentials",
                            f"[basic]\nak = {AK}\nsk = {SK}\nproject_id = {fakecloud.DEMO_PROJECT_ID}\n")
    run = cli(*SEED_RANGE, env={"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None,
                                "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(profile)})
    assert run.code == 0, run.stderr
    assert not [e for e in cloud.log if e.kind == "iam"]


def test_security_token_is_sent_as_a_signed_header(cli, cloud):
    run = cli(*SEED_RANGE, env={"HW_ACCESS_KEY": fakecloud.TEMP_AK, "HW_SECRET_KEY": fakecloud.TEMP_SK,
                                "HW_SECURITY_TOKEN": fakecloud.TEMP_TOKEN})
    assert run.code == 0, run.stderr
    maas = [e for e in cloud.log if e.kind == "maas"][0]
    headers = {k.lower(): v for k, v in maas.headers.items()}
    assert "x-security-token" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_temporary_keys_without_their_token_are_rejected_with_exit_3(cli, cloud):
    run = cli(*SEED_RANGE, env={"HW_ACCESS_KEY": fakecloud.TEMP_AK, "HW_SECRET_KEY": fakecloud.TEMP_SK})
    assert run.code == 3
    assert "HTTP 401" in run.stderr and "security token" in run.stderr


def test_missing_credentials_say_how_to_provide_them(cli, cloud):
    run = cli(*SEED_RANGE, env={"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None})
    assert run.code == 3
    for name in ("HW_ACCESS_KEY", "HW_SECRET_KEY", "--credentials-file"):
        assert name in run.stderr
    assert cloud.log == []


def test_half_given_keys_are_a_credentials_error(cli):
    run = cli(*SEED_RANGE, env={"HW_SECRET_KEY": None})
    assert run.code == 3 and "HW_ACCESS_KEY is set but HW_SECRET_KEY is not" in run.stderr


@pytest.mark.parametrize("content", ["", "# only a comment\n", f"{AK}\n", "a\nb\nc\nd\n",
                                     "User Name,Access Key Id\nme,AKX\n"])
def test_unusable_credentials_files_exit_3_naming_the_file(cli, tmp_path, cloud, content):
    path = write_private(tmp_path / "bad.txt", content)
    run = cli(*SEED_RANGE, "--credentials-file", str(path))
    assert run.code == 3 and str(path) in run.stderr
    assert cloud.log == []


def test_wrong_secret_key_is_rejected_once_with_exit_3(cli, cloud):
    run = cli("--last", "90d", "--project-id", fakecloud.DEMO_PROJECT_ID,
              env={"HW_SECRET_KEY": "SKwrongButPlausible0123456789abcdefghij"})
    assert run.code == 3
    assert "HTTP 401" in run.stderr and "APIGW.0301" in run.stderr and "X-Request-Id" in run.stderr
    assert "clock" in run.stderr  # the hint names the usual causes
    assert len(cloud.log) == 1  # no fan-out and no retry with a bad signature


# -- time ranges with a fixed zone (dry run: nothing is sent) ------------------------------------

def dry_plan(cli, *args):
    run = cli(*args, "--dry-run", "--format", "json", "--timezone", "America/New_York")
    assert run.code == 0, run.stderr
    return run.json()


def test_dry_run_needs_no_credentials_and_sends_nothing(home):
    env = base_env(home)
    run = run_script([*SEED_RANGE, "--dry-run"], env)
    assert run.code == 0, run.stderr
    body = json.dumps(SEED_BODY, separators=(",", ":"))
    assert run.stdout == ("POST https://modelarts.cn-southwest-2.myhuaweicloud.com/v1/{project_id}"
                          f"/maas/monitoring/show-statistics {body}\n")


def test_dry_run_json_lists_every_request(cli, cloud):
    plan = dry_plan(cli, "--from", "2026-01-01", "--to", "2026-03-01", "--project-id", fakecloud.DEMO_PROJECT_ID)
    assert plan["dry_run"] is True and plan["project_id"] == fakecloud.DEMO_PROJECT_ID
    assert [r["body"]["start_time"] for r in plan["requests"]] == [1767243600000, 1767243600000 + 30 * DAY_MS]
    assert all(r["url"].endswith(f"/v1/{fakecloud.DEMO_PROJECT_ID}/maas/monitoring/show-statistics")
               for r in plan["requests"])
    assert cloud.log == []


def test_last_7d_ends_now_and_is_exactly_seven_days(cli):
    before = datetime.now(timezone.utc).timestamp() * 1000
    plan = dry_plan(cli, "--last", "7d")
    after = datetime.now(timezone.utc).timestamp() * 1000
    period = plan["period"]
    assert before - 1000 <= period["end_ms"] <= after + 1000
    assert period["end_ms"] - period["start_ms"] == 7 * DAY_MS


def test_default_range_is_the_last_seven_days(cli):
    period = dry_plan(cli)["period"]
    assert period["end_ms"] - period["start_ms"] == 7 * DAY_MS


def test_last_24h_is_one_day(cli):
    period = dry_plan(cli, "--last", "24h")["period"]
    assert period["end_ms"] - period["start_ms"] == DAY_MS


def test_this_month_starts_on_the_first_at_local_midnight(cli):
    period = dry_plan(cli, "--this-month")["period"]
    assert period["start"][8:19] == "01T00:00:00"


def test_until_includes_the_named_day(cli):
    plan = dry_plan(cli, "--from", "2026-05-01", "--until", "2026-05-19")
    assert plan["period"]["start"] == "2026-05-01T00:00:00-04:00"
    assert plan["period"]["end"] == "2026-05-20T00:00:00-04:00"


def test_from_yesterday_to_today_is_the_whole_of_yesterday(cli):
    period = dry_plan(cli, "--from", "yesterday", "--to", "today")["period"]
    assert period["start"][11:19] == "00:00:00" and period["end"][11:19] == "00:00:00"
    assert 23 * 3600_000 <= period["end_ms"] - period["start_ms"] <= 25 * 3600_000


def test_date_times_are_accepted_with_space_or_t(cli):
    a = dry_plan(cli, "--from", "2026-05-01 08:30", "--to", "2026-05-02T09:15:30")["period"]
    assert a["start"] == "2026-05-01T08:30:00-04:00" and a["end"] == "2026-05-02T09:15:30-04:00"


def test_timezone_name_goes_into_every_body(cli):
    plan = dry_plan(cli, "--last", "40d")
    assert {r["body"]["timezone"] for r in plan["requests"]} == {"America/New_York"}


def test_old_ranges_note_the_30_day_retention(cli):
    run = cli("--from", "2025-01-01", "--to", "2025-01-05", "--timezone", "UTC", "--format", "json")
    assert run.code == 0
    assert "30 days" in run.stderr
    quiet = cli("--from", "2025-01-01", "--to", "2025-01-05", "--timezone", "UTC", "-q")
    assert quiet.stderr == ""


# -- usage errors: exit 2, nothing sent ------------------------------------------------------------

def test_help_and_version_work_without_anything(home):
    help_run = run_script(["--help"], base_env(home))
    assert help_run.code == 0 and "--from" in help_run.stdout and "exit codes" in help_run.stdout
    version = run_script(["--version"], base_env(home))
    assert version.code == 0 and version.stdout.startswith("maas_rest_usage_stats.py ")


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_main_writes_help_and_version_to_its_stdout_and_returns_0(flag):
    import maas_rest_usage_stats as m

    stdout, stderr = io.StringIO(), io.StringIO()
    assert m.main([flag], env={}, stdout=stdout, stderr=stderr) == 0  # returned, not raised as SystemExit
    assert stdout.getvalue().startswith("usage:" if flag == "--help" else "maas_rest_usage_stats.py ")
    assert stderr.getvalue() == ""


# -- API and network failures ------------------------------------------------------------------

def test_missing_permission_is_exit_3_with_the_iam_action(cli, cloud):
    cloud.denied.add("modelarts:monitoring:get")
    run = cli(*SEED_RANGE)
    assert run.code == 3
    assert "HTTP 403" in run.stderr and "modelarts:monitoring:get" in run.stderr


def test_iam_permission_denied_suggests_project_id(cli, cloud):
    cloud.denied.add("iam:projects:get")
    run = cli(*SEED_RANGE)
    assert run.code == 3 and "--project-id" in run.stderr


def test_transient_5xx_is_retried_and_totals_stay_exact(cli, cloud, fake_clock):
    cloud.add_fault("status", status=503, times=2)
    run = cli(*SEED_RANGE, clock=fake_clock)
    assert run.code == 0, run.stderr
    assert run.stdout == SEED_TABLE
    assert len(fake_clock.sleeps) == 2  # two backoffs, on the run's clock


def test_429_retry_after_is_honoured(cli, cloud, fake_clock):
    cloud.add_fault("status", status=429, retry_after="1")
    run = cli(*SEED_RANGE, "--format", "json", clock=fake_clock)
    assert run.code == 0, run.stderr
    maas = [e for e in cloud.log if e.kind == "maas"]
    assert len(maas) == 2 and maas[1].at - maas[0].at >= 0.95


def test_persistent_5xx_fails_with_status_and_request_id(cli, cloud, fake_clock):
    cloud.add_fault("status", status=500, times=10)
    run = cli(*SEED_RANGE, "--retries", "1", clock=fake_clock)
    assert run.code == 1
    assert "HTTP 500" in run.stderr and "X-Request-Id" in run.stderr and "2 attempts" in run.stderr
    assert len([e for e in cloud.log if e.kind == "maas"]) == 2


def test_one_failed_window_means_no_partial_totals(cli, cloud):
    cloud.add_fault("status", status=400, error_code="ModelArts.4101", error_msg="bad window")
    run = cli("--last", "100d", "--timezone", "UTC", "--format", "json")
    assert run.code == 1 and run.stdout == ""
    assert "ModelArts.4101" in run.stderr and "bad window" in run.stderr


@pytest.mark.parametrize("kind, params, fragment", [
    ("html", {"status": 502}, "HTML"),
    ("invalid_json", {}, "malformed response"),
    ("json", {"body": {"total_request_count": "12"}}, "malformed response"),
    ("json", {"body": "NaN"}, "malformed response"),
])
def test_bad_answers_fail_cleanly(cli, cloud, kind, params, fragment):
    cloud.add_fault(kind, times=10, **params)
    run = cli(*SEED_RANGE, "--retries", "0")
    assert run.code == 1 and fragment in run.stderr


def test_redirects_are_not_followed(cli, cloud):
    cloud.add_fault("redirect", location="https://evil.example/steal")
    run = cli(*SEED_RANGE)
    assert run.code == 1 and "not followed" in run.stderr
    assert len([e for e in cloud.log if e.kind == "maas"]) == 1


def test_connection_reset_is_retried(cli, cloud, fake_clock):
    cloud.add_fault("reset")
    run = cli(*SEED_RANGE, clock=fake_clock)
    assert run.code == 0, run.stderr
    assert run.stdout == SEED_TABLE


def test_untrusted_certificate_fails(cli, cloud):
    run = cli(*SEED_RANGE, env={"REQUESTS_CA_BUNDLE": None})
    assert run.code == 1
    assert "certificate" in run.stderr and "REQUESTS_CA_BUNDLE" in run.stderr
    assert cloud.log == []


def test_verbose_logs_exchanges_without_secrets(cli):
    run = cli(*SEED_RANGE, "-v")
    assert run.code == 0
    assert "GET /v3/projects -> HTTP 200" in run.stderr
    assert "show-statistics -> HTTP 200" in run.stderr and "X-Request-Id" in run.stderr


def test_plain_http_works_for_loopback(home):
    with fakecloud.FakeCloud(tls=False) as server:
        env = base_env(home)
        env.update({"HW_ACCESS_KEY": AK, "HW_SECRET_KEY": SK, "HW_MAAS_ENDPOINT": server.url,
                    "HW_IAM_ENDPOINT": server.url})
        run = run_script(SEED_RANGE, env)
    assert run.code == 0, run.stderr
    assert run.stdout == SEED_TABLE


def test_csv_output_parses_back(cli):
    run = cli(*SEED_RANGE, "--format", "csv")
    assert run.code == 0
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert rows == [{"start": "2026-05-08T00:00:00+08:00", "end": "2026-05-21T00:00:00+08:00",
                     "service_type": "2", "api_key": "", "total_tokens": "2482084980",
                     "prompt_tokens": "2456504362", "completion_tokens": "24872928", "total_requests": "67188",
                     "total_errors": "8002", "error_rate": "11.91", "total_completion_tasks": "0",
                     "total_infer_count": "0"}]
    no_header = cli(*SEED_RANGE, "--format", "csv", "--no-header")
    assert no_header.stdout == run.stdout.split("\n", 1)[1]


def test_output_is_utf8_whatever_the_locale(cli):
    run = cli(*SEED_RANGE, "--api-keys", "café-键", "--dry-run", env={"PYTHONIOENCODING": "ascii", "LANG": "C"})
    assert run.code == 0, run.stderr
    assert '"api_keys":["café-键"]' in run.stdout


def test_printed_periods_match_the_milliseconds_sent(cli):
    period = dry_plan(cli, "--last", "7d")["period"]
    assert "." not in period["start"] and period["start_ms"] % 1000 == 0


def test_flag_abbreviations_are_refused(cli, cloud):
    run = cli(*SEED_RANGE, "--form", "json")
    assert run.code == 2 and "unrecognized" in run.stderr


def test_default_zone_is_the_operating_systems(cli):
    run = cli(*SEED_RANGE[:4], "--dry-run", "--format", "json", env={"TZ": "Asia/Shanghai"})
    assert run.code == 0, run.stderr
    plan = run.json()
    assert plan["timezone"] == "Asia/Shanghai"
    assert plan["requests"][0]["body"] == SEED_BODY


@pytest.mark.parametrize("target", ["process", "worker thread"])
def test_ctrl_c_ends_the_run_at_once_without_output(cloud_env, cloud, target):
    """Ctrl-C is exit 130 at once, also when the kernel hands SIGINT to a thread blocked in a read
    (the main thread must wake up to run Python's handler: a plain blocking wait slept through it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import SCRIPT, SECRETS
    if target == "worker thread" and not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux's /proc to find the worker threads")
    cloud.add_fault("hang", times=20)
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--last", "100d", "--timezone", "UTC", "--timeout", "30"],
                               env=cloud_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while len(cloud.maas_requests()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    if target == "process":
        process.send_signal(signal.SIGINT)
    else:  # kill() with a thread's id makes that thread the signal's preferred recipient
        threads = sorted(int(t) for t in os.listdir(f"/proc/{process.pid}/task") if int(t) != process.pid)
        os.kill(threads[-1], signal.SIGINT)
    started = time.monotonic()
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 5  # not the 30 s --timeout of the hung requests
    assert process.returncode == 130 and out == "" and "error: interrupted" in err and "Traceback" not in err
    assert not any(secret in out + err for secret in SECRETS)


def test_a_failed_window_does_not_wait_for_hung_ones(cli, cloud):
    import time

    cloud.add_fault("delay", seconds=0)  # the first request (sent alone) succeeds
    cloud.add_fault("hang", times=2)  # the next two never answer
    cloud.add_fault("status", status=400, error_code="ModelArts.4101", error_msg="bad window")  # the last fails
    started = time.monotonic()
    run = cli("--last", "100d", "--timezone", "UTC", "--timeout", "30", "--project-id", fakecloud.DEMO_PROJECT_ID)
    assert run.code == 1 and "bad window" in run.stderr
    assert len(cloud.maas_requests()) == 4
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("content", ["", f"{AK}\n", "User Name,Access Key Id\nme,AKX\n"])
def test_every_credentials_error_says_how_to_provide_them(cli, tmp_path, content):
    path = write_private(tmp_path / "bad.txt", content)
    run = cli(*SEED_RANGE, "--credentials-file", str(path))
    assert run.code == 3
    assert "hint:" in run.stderr and "HW_ACCESS_KEY" in run.stderr and "--credentials-file" in run.stderr


def test_readme_shows_the_seed_table_exactly(cli):
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "$ python3 maas_rest_usage_stats.py " + " ".join(SEED_RANGE) + "\n"
    assert command in readme
    shown = readme.split(command, 1)[1].split("```", 1)[0]
    assert shown == SEED_TABLE


def test_the_readme_is_for_users_first_and_at_most_450_lines():
    """The first-contact issue's bound: what a user needs, at most 450 lines; development material
    lives in tests/README.md; nothing is left marked as still to be written."""
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 450
    assert "<!-- pending" not in readme and "tests/README.md" in readme


def test_help_names_every_group_by_value():
    """--help's --group-by text names each value the flag takes (model and api-key were missing)."""
    import maas_rest_usage_stats as m

    action = next(a for a in m.build_parser()._actions if "--group-by" in a.option_strings)
    names = {*m.UNITS, *(grouping.name for grouping in m.GROUPINGS if grouping is not m.TIME_BUCKET)}
    assert names == {"hour", "day", "week", "month", "service-type", "api-key", "model"}
    assert all(name in action.help for name in names), action.help
