"""Hostile conditions, end to end: the real script against a misbehaving fake cloud.

Every promise here is about not lying and not leaking: a run either prints exact totals (exit 0)
or prints nothing on stdout and says on stderr what failed and what to do (exit 1, 2 or 3).
``cli`` (conftest) already checks, on every run, that no fake AK/SK/token reaches stdout or
stderr, that there is no traceback, that the exit code is 0-3 and that a failed run printed no
result; the tests below add what each scenario must say and how many requests it may cost.

Nothing sits out a wait of the run's clock: tests of Retry-After and backoff give the run the
``fake_clock`` (conftest) and read the waits off it. What stays real time is kept short:
``--timeout 1`` where a fault makes an attempt time out, ``--retries 1`` to bound the attempts.
"""

from __future__ import annotations

import email.utils
import re
import socket
import time
from pathlib import Path

import pytest

import fakecloud
from conftest import SECRETS, base_env, run_script

AK, SK = fakecloud.DEMO_AK, fakecloud.DEMO_SK
PROJECT = fakecloud.DEMO_PROJECT_ID
SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
SEED_LABEL = "2026-05-08 00:00:00 ~ 2026-05-21 00:00:00 (Preset Service)"
# The seed answer printed as the table (the same text test_cli.py checks for the happy path).
SEED_TABLE_ROWS = ("| Total Tokens      | 2,482.08 M tokens |", "| Total Requests    | 67,188            |",
                   "| Total Errors      | 8,002             |", "| Error Rate        | 11.91%            |")
SEED_TOTALS = {"total_tokens": 2482084980, "prompt_tokens": 2456504362, "completion_tokens": 24872928,
               "total_requests": 67188, "total_errors": 8002, "error_rate": 11.91,
               "total_completion_tasks": 0, "total_infer_count": 0}
# A 100-day range in UTC: four windows of at most 30 days.
HUNDRED_DAYS = ["--from", "2026-01-01", "--to", "2026-04-11", "--timezone", "UTC"]
HUNDRED_DAY_LABELS = ["2026-01-01 00:00:00 ~ 2026-01-31 00:00:00", "2026-01-31 00:00:00 ~ 2026-03-02 00:00:00",
                      "2026-03-02 00:00:00 ~ 2026-04-01 00:00:00", "2026-04-01 00:00:00 ~ 2026-04-11 00:00:00"]
# The seed answer as raw response text, to be spoiled one field at a time.
SEED_FIELDS = {"total_request_count": "67188", "total_error_count": "8002", "total_token": "2482084.98",
               "total_prompt_token": "2456504.362", "total_completion_token": "24872.928",
               "total_completion_tasks": "0", "total_infer_count": "0"}


def maas(cloud: fakecloud.FakeCloud) -> list[fakecloud.LoggedRequest]:
    return [entry for entry in cloud.log if entry.kind == "maas"]


def iam(cloud: fakecloud.FakeCloud) -> list[fakecloud.LoggedRequest]:
    return [entry for entry in cloud.log if entry.kind == "iam"]


def body_text(**changes: str | None) -> str:
    """The seed answer as JSON text, with fields replaced by raw JSON text (None: removed)."""
    fields = {**SEED_FIELDS, **changes}
    return "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items() if value is not None) + "}"


def assert_seed_table(run) -> None:
    assert run.code == 0, run.stderr
    assert run.stdout.startswith("MaaS Preset Service Usage Statistics - Region: cn-southwest-2\n")
    for row in SEED_TABLE_ROWS:
        assert row in run.stdout


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    path.chmod(mode)
    return path


# ================================================================================================
# 429 and Retry-After
# ================================================================================================

def test_retry_after_in_seconds_is_honoured(cli, cloud, fake_clock):
    cloud.add_fault("status", status=429, retry_after="2")
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "-v", clock=fake_clock)
    assert_seed_table(run)
    first, second = maas(cloud)
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.95  # the backoff alone would wait at most 0.5 s
    assert "retrying in 2.0 s (1/3)" in run.stderr


def test_retry_after_http_date_is_honoured(cli, cloud, fake_clock):
    retry_at = int(fake_clock.now().timestamp()) + 4  # an HTTP date has a resolution of one second
    cloud.add_fault("status", status=429, retry_after=email.utils.formatdate(retry_at, usegmt=True))
    wall_minus_monotonic = fake_clock.now().timestamp() - fake_clock.monotonic()
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "-v", clock=fake_clock)
    assert_seed_table(run)
    first, second = maas(cloud)
    expected = retry_at - (first.at + wall_minus_monotonic)  # what was left when the 429 came back
    assert expected >= 1.0, "the machine is too slow for this test to tell a wait from a backoff"
    assert expected - 0.3 <= second.at - first.at <= expected + 0.7, (expected, second.at - first.at)
    match = re.search(r"retrying in ([0-9.]+) s", run.stderr)
    assert match and abs(float(match.group(1)) - expected) <= 0.3, (expected, run.stderr)


def test_retry_after_date_in_the_past_means_retry_at_once(cli, cloud, fake_clock):
    cloud.add_fault("status", status=429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "-v", clock=fake_clock)
    assert_seed_table(run)
    assert "retrying in 0.0 s" in run.stderr
    first, second = maas(cloud)
    assert second.at - first.at < 0.25


def test_unreadable_retry_after_falls_back_to_backoff(cli, cloud, fake_clock):
    cloud.add_fault("status", status=429, retry_after="soon, maybe")
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "-v", clock=fake_clock)
    assert_seed_table(run)
    match = re.search(r"retrying in ([0-9.]+) s", run.stderr)
    assert match and 0.2 <= float(match.group(1)) <= 0.5, run.stderr  # 0.5 s x [0.5, 1]


@pytest.mark.parametrize("retry_after", ["3600", "http-date-2h"])
def test_huge_retry_after_is_capped_at_60_seconds(cli, cloud, fake_clock, retry_after):
    """Without waiting a minute: the -v line announces 60.0 s and the run's clock waits just that."""
    if retry_after == "http-date-2h":
        retry_after = email.utils.formatdate(fake_clock.now().timestamp() + 7200, usegmt=True)
    cloud.add_fault("status", status=429, retry_after=retry_after)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "-v", "--retries", "1", clock=fake_clock)
    first, second = maas(cloud)
    assert fake_clock.sleeps == [60.0] and second.at - first.at == 60.0  # no second attempt before then
    stderr = run.stderr
    assert "retrying in 60.0 s (1/1)" in stderr
    assert "HTTP 429" in stderr
    assert "Traceback" not in stderr
    for secret in SECRETS:
        assert secret not in stderr


def test_persistent_429_stops_after_the_retries_with_the_throttling_message(cli, cloud):
    cloud.add_fault("status", status=429, retry_after="0", times=10)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "2")
    assert run.code == 1
    assert "HTTP 429" in run.stderr and "APIGW.0308" in run.stderr and "(after 3 attempts)" in run.stderr
    assert len(maas(cloud)) == 3


# ================================================================================================
# 5xx: retried, then exact totals or a clear failure
# ================================================================================================

@pytest.mark.parametrize("status", [500, 502, 504])
def test_transient_server_error_is_retried_and_totals_stay_exact(cli, cloud, fake_clock, status):
    cloud.add_fault("status", status=status)
    run = cli(*SEED_RANGE, "--format", "json", clock=fake_clock)
    assert run.code == 0, run.stderr
    assert run.json()["totals"] == SEED_TOTALS
    assert [e.status for e in maas(cloud)] == [status, 200]


def test_a_run_of_different_server_errors_then_success_gives_the_seed_table(cli, cloud):
    for status in (500, 502, 503, 504):
        cloud.add_fault("status", status=status, retry_after="0")
    run = cli(*SEED_RANGE, "--retries", "4")
    assert_seed_table(run)
    assert [e.status for e in maas(cloud)] == [500, 502, 503, 504, 200]


def test_iam_server_error_is_retried_too(cli, cloud):
    cloud.add_fault("status", status=503, path="iam", retry_after="0")
    run = cli(*SEED_RANGE)
    assert_seed_table(run)
    assert [e.status for e in iam(cloud)] == [503, 200]


@pytest.mark.parametrize("status, retries", [(502, 2), (503, 2), (504, 0)])
def test_persistent_server_error_fails_after_exactly_n_plus_1_attempts(cli, cloud, status, retries):
    cloud.add_fault("status", status=status, retry_after="0", times=20)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", str(retries))
    assert run.code == 1
    attempts = maas(cloud)
    assert len(attempts) == retries + 1
    assert f"HTTP {status}" in run.stderr and SEED_LABEL in run.stderr
    # The X-Request-Id named is the one of the last attempt, as the server sent it.
    assert f"X-Request-Id: {attempts[-1].request_id}" in run.stderr
    if retries:
        assert f"(after {retries + 1} attempts)" in run.stderr
    else:
        assert "attempts" not in run.stderr
    assert "--retries" in run.stderr  # what to do next


def test_each_retry_is_signed_afresh(cli, cloud, fake_clock):
    cloud.add_fault("status", status=503, retry_after="1")
    run = cli(*SEED_RANGE, "--project-id", PROJECT, clock=fake_clock)
    assert_seed_table(run)
    first, second = maas(cloud)
    assert second.at - first.at >= 0.95
    assert second.headers["X-Sdk-Date"] > first.headers["X-Sdk-Date"]
    assert second.headers["Authorization"] != first.headers["Authorization"]
    assert second.auth_error is None and second.status == 200  # the new signature is valid


# ================================================================================================
# Answers that are not what they claim: HTML, invalid JSON, malformed fields
# ================================================================================================

def test_html_page_with_status_200_is_a_malformed_response(cli, cloud):
    cloud.add_fault("html", status=200)
    run = cli(*SEED_RANGE, "--project-id", PROJECT)
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and SEED_LABEL in run.stderr


def test_html_error_page_is_named_as_html_with_its_status(cli, cloud):
    cloud.add_fault("html", status=404)
    run = cli(*SEED_RANGE, "--project-id", PROJECT)
    assert run.code == 1
    assert "HTTP 404" in run.stderr and "HTML page" in run.stderr
    assert len(maas(cloud)) == 1  # 404 is not retried


def test_persistent_html_503_is_retried_then_reported(cli, cloud, fake_clock):
    cloud.add_fault("html", status=503, times=5)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "1", clock=fake_clock)
    assert run.code == 1
    assert "HTTP 503" in run.stderr and "HTML page" in run.stderr and "(after 2 attempts)" in run.stderr
    assert len(maas(cloud)) == 2


@pytest.mark.parametrize("raw", [
    pytest.param("", id="empty-body"),
    pytest.param("   \r\n", id="whitespace"),
    pytest.param("{", id="truncated-brace"),
    pytest.param(body_text()[:-1], id="missing-closing-brace"),
    pytest.param("not json at all", id="text"),
    pytest.param(b"\xff\xfe{\x00}", id="invalid-utf8"),
    pytest.param("{'total_token': 1}", id="single-quotes"),
    pytest.param(body_text() + " trailing", id="trailing-garbage"),
    pytest.param("[" * 50_000 + "]" * 50_000, id="deeply-nested"),
])
def test_status_200_that_is_not_json_is_a_malformed_response(cli, cloud, raw):
    cloud.add_fault("json", body=raw)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--format", "json")
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and SEED_LABEL in run.stderr


MALFORMED_BODIES = {
    "missing-total_token": body_text(total_token=None),
    "missing-total_request_count": body_text(total_request_count=None),
    "missing-everything": "{}",
    "string-tokens": body_text(total_token='"2482084.98"'),
    "string-count": body_text(total_error_count='"8002"'),
    "negative-count": body_text(total_error_count="-1"),
    "negative-tokens": body_text(total_prompt_token="-0.001"),
    "nan": body_text(total_token="NaN"),
    "infinity": body_text(total_completion_token="Infinity"),
    "minus-infinity": body_text(total_prompt_token="-Infinity"),
    "null-tokens": body_text(total_completion_token="null"),
    "null-count": body_text(total_request_count="null"),
    "fractional-count": body_text(total_request_count="67188.5"),
    "tiny-fractional-count": body_text(total_error_count="1e-3"),
    "boolean-count": body_text(total_request_count="true"),
    "object-tokens": body_text(total_token='{"value": 1}'),
    "array-tokens": body_text(total_token="[2482084.98]"),
    "astronomic-tokens": body_text(total_token="1e400"),
    "astronomic-count": body_text(total_request_count="1" + "0" * 30),
    "json-array": "[" + body_text() + "]",
    "json-string": '"ok"',
    "json-number": "42",
    "json-null": "null",
    "json-true": "true",
    "error-object-with-200": '{"error_code": "ModelArts.0001", "error_msg": "oops"}',
    "negative-batch-field-in-real-time": body_text(total_infer_count="-1"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_BODIES))
def test_status_200_with_malformed_fields_exits_1_with_nothing_on_stdout(cli, cloud, name):
    cloud.add_fault("json", body=MALFORMED_BODIES[name])
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--format", "json")
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and SEED_LABEL in run.stderr
    assert len(maas(cloud)) == 1  # a malformed answer is not retried


def test_batch_answer_without_the_batch_fields_is_malformed(cli, cloud):
    cloud.add_fault("json", body=body_text(total_completion_tasks=None))
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--infer-type", "batch")
    assert run.code == 1 and "malformed response" in run.stderr and "total_completion_tasks" in run.stderr


@pytest.mark.parametrize("body, fragment", [
    ('{"links": {}}', "no 'projects' list"),
    ('{"projects": {"id": "x"}}', "no 'projects' list"),
    ('{"projects": [{"name": "cn-southwest-2", "id": "../../v3/users"}]}', "project id"),
    ('{"projects": [{"name": "cn-southwest-2", "id": 42}]}', "project id"),
    ("<html>login</html>", "not valid JSON"),
])
def test_malformed_iam_answer_is_reported_and_no_statistics_are_requested(cli, cloud, body, fragment):
    cloud.add_fault("json", body=body, path="iam")
    run = cli(*SEED_RANGE)
    assert run.code == 1
    assert "malformed response from IAM project lookup" in run.stderr and fragment in run.stderr
    assert maas(cloud) == []


def test_deeply_nested_error_body_is_reported_not_crashed_on(cli, cloud):
    cloud.add_fault("status", status=400, body="[" * 100_000 + "]" * 100_000)
    run = cli(*SEED_RANGE, "--project-id", PROJECT)
    assert run.code == 1 and "HTTP 400" in run.stderr


# ================================================================================================
# The network: resets, silence, refusal, redirects
# ================================================================================================

def test_reset_of_the_iam_lookup_is_retried(cli, cloud, fake_clock):
    cloud.add_fault("reset", path="iam")
    run = cli(*SEED_RANGE, clock=fake_clock)
    assert_seed_table(run)
    assert [e.status for e in iam(cloud)] == [None, 200]


def test_connection_reset_every_time_fails_naming_the_reset(home):
    # Plain HTTP on loopback: over TLS the client sees the same RST as an EOF (checked below).
    with fakecloud.FakeCloud(tls=False) as server:
        server.add_fault("reset", times=10)
        env = {**base_env(home), **server.client_env()}
        started = time.monotonic()
        run = run_script([*SEED_RANGE, "--project-id", PROJECT, "--retries", "1"], env)
        elapsed = time.monotonic() - started
        attempts = maas(server)
    assert run.code == 1
    assert "reset" in run.stderr and SEED_LABEL in run.stderr and "(after 2 attempts)" in run.stderr
    assert len(attempts) == 2 and all(e.status is None for e in attempts)
    assert elapsed < 10


def test_connection_dropped_every_time_over_tls_fails_cleanly(cli, cloud, fake_clock):
    cloud.add_fault("reset", times=10)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "1", clock=fake_clock)
    assert run.code == 1
    assert "connection" in run.stderr and SEED_LABEL in run.stderr
    assert len(maas(cloud)) == 2


def test_silent_server_times_out_within_a_bounded_time(cli, cloud, fake_clock):
    cloud.add_fault("hang", times=10)
    started = time.monotonic()  # the --timeout is real time: it bounds real socket reads
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--timeout", "1", "--retries", "1", clock=fake_clock)
    elapsed = time.monotonic() - started
    assert run.code == 1
    assert "--timeout" in run.stderr and "no answer within 1 s" in run.stderr and SEED_LABEL in run.stderr
    assert len(maas(cloud)) == 2
    assert elapsed < 10


def test_silent_iam_times_out_too(cli, cloud):
    cloud.add_fault("hang", path="iam", times=10)
    started = time.monotonic()
    run = cli(*SEED_RANGE, "--timeout", "1", "--retries", "0")
    assert time.monotonic() - started < 10
    assert run.code == 1
    assert "IAM project lookup" in run.stderr and "--timeout" in run.stderr
    assert maas(cloud) == []


def test_slow_answer_within_the_timeout_is_accepted(cli, cloud):
    cloud.add_fault("delay", seconds=0.5)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--timeout", "3", "--retries", "0")
    assert_seed_table(run)


def test_connection_refused_fails_after_its_retries(cli, cloud, fake_clock):
    url = f"https://127.0.0.1:{closed_port()}"
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "1",
              env={"HW_MAAS_ENDPOINT": url, "HW_IAM_ENDPOINT": url}, clock=fake_clock)
    assert run.code == 1
    assert "connection refused" in run.stderr and SEED_LABEL in run.stderr and "(after 2 attempts)" in run.stderr
    assert cloud.log == []


def test_connection_refused_by_iam_fails_before_any_statistics_request(cli, cloud):
    run = cli(*SEED_RANGE, "--retries", "0", env={"HW_IAM_ENDPOINT": f"https://127.0.0.1:{closed_port()}"})
    assert run.code == 1
    assert "IAM project lookup" in run.stderr and "connection refused" in run.stderr
    assert cloud.log == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_even_to_a_working_url(cli, cloud, status):
    # Following it would succeed (same server, same path): the script must not.
    target = f"{cloud.url}/v1/{PROJECT}/maas/monitoring/show-statistics"
    cloud.add_fault("redirect", location=target, status=status)
    run = cli(*SEED_RANGE, "--project-id", PROJECT)
    assert run.code == 1
    assert f"HTTP {status}" in run.stderr and "not followed" in run.stderr
    assert len(cloud.log) == 1


# ================================================================================================
# Rejected credentials: exit 3, never retried, a hint that helps
# ================================================================================================

def test_injected_401_is_exit_3_without_retry_and_hints_at_keys_and_clock(cli, cloud):
    cloud.add_fault("status", status=401, times=5)
    run = cli(*HUNDRED_DAYS, "--project-id", PROJECT)
    assert run.code == 3
    assert "HTTP 401" in run.stderr and "APIGW.0301" in run.stderr
    assert "AK and SK" in run.stderr and "clock" in run.stderr
    assert len(cloud.log) == 1  # four windows planned, one request sent


def test_injected_403_is_exit_3_without_retry_and_names_the_iam_action(cli, cloud):
    cloud.add_fault("status", status=403, times=5)
    run = cli(*HUNDRED_DAYS, "--project-id", PROJECT)
    assert run.code == 3
    assert "HTTP 403" in run.stderr and "modelarts:monitoring:get" in run.stderr
    assert len(cloud.log) == 1


@pytest.mark.parametrize("status, fragment", [(401, "clock"), (403, "iam:projects:get")])
def test_rejected_iam_lookup_is_exit_3_and_sends_no_statistics_request(cli, cloud, status, fragment):
    cloud.add_fault("status", status=status, path="iam", times=5)
    run = cli(*SEED_RANGE)
    assert run.code == 3
    assert f"HTTP {status}" in run.stderr and fragment in run.stderr
    assert len(cloud.log) == 1 and maas(cloud) == []


@pytest.mark.parametrize("offset", [+1200, -1200])
def test_clock_skew_of_20_minutes_is_exit_3_with_a_clock_hint(cli, cloud, offset):
    cloud.server_time_offset = offset
    run = cli(*HUNDRED_DAYS, "--project-id", PROJECT)
    assert run.code == 3
    assert "HTTP 401" in run.stderr and "expired" in run.stderr and "clock" in run.stderr
    assert len(cloud.log) == 1


# ================================================================================================
# All or nothing: one window fails, nothing is printed
# ================================================================================================

def test_one_window_failing_for_good_means_no_output(cli, cloud):
    # The first window is sent alone and succeeds (the delay fault answers normally); with one
    # request in flight, window 2 then takes both 503s, its try and its retry.
    cloud.add_fault("delay", seconds=0)
    cloud.add_fault("status", status=503, times=2, retry_after="0")
    run = cli(*HUNDRED_DAYS, "--project-id", PROJECT, "--retries", "1", "--concurrency", "1", "--format", "json")
    assert run.code == 1 and run.stdout == ""
    statuses = [e.status for e in maas(cloud)]
    assert statuses[:3] == [200, 503, 503]
    assert f"ShowStatistics for {HUNDRED_DAY_LABELS[1]} (Preset Service) failed: HTTP 503" in run.stderr
    assert "(after 2 attempts)" in run.stderr


def test_one_rejected_window_among_concurrent_successes_means_no_output(cli, cloud):
    cloud.add_fault("delay", seconds=0)
    cloud.add_fault("status", status=400, error_code="ModelArts.4101", error_msg="window refused")
    run = cli(*HUNDRED_DAYS, "--project-id", PROJECT, "--format", "csv")
    assert run.code == 1 and run.stdout == ""
    statuses = [e.status for e in maas(cloud)]
    assert statuses[0] == 200 and statuses.count(400) == 1
    assert "ModelArts.4101" in run.stderr and "window refused" in run.stderr


def test_one_malformed_window_among_good_ones_means_no_output(cli, cloud):
    cloud.add_fault("delay", seconds=0)
    cloud.add_fault("delay", seconds=0)
    cloud.add_fault("json", body=body_text(total_token="-5"))
    run = cli(*HUNDRED_DAYS, "--project-id", PROJECT, "--concurrency", "1", "--service-type", "all")
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and "out of range" in run.stderr


# ================================================================================================
# Bad input: exit 2 (usage) or 3 (credentials), a clear message, and no request at all
# ================================================================================================

USAGE_ERRORS = {
    "month-13": (["--from", "2026-13-01"], "not a valid date"),
    "feb-29-non-leap": (["--from", "2026-02-29"], "not a valid date"),
    "until-april-31": (["--until", "2026-04-31"], "not a valid date"),
    "hour-24": (["--from", "2026-05-08 24:00"], "not a valid date or time"),
    "year-0": (["--from", "0000-01-01"], "not a valid date"),
    "reversed-until": (["--from", "2026-05-08", "--until", "2026-05-07"], "not before"),
    "empty-range": (["--from", "2026-05-08 10:00", "--to", "2026-05-08 10:00"], "not before"),
    "future-start": (["--from", "2999-01-01"], "future"),
    "last-abc": (["--last", "abc"], "--last"),
    "last-weeks": (["--last", "5w"], "--last"),
    "last-negative": (["--last", "-3d"], "--last"),
    "last-no-unit": (["--last", "7"], "--last"),
    "last-0h": (["--last", "0h"], "--last"),
    "last-millennium": (["--last", "400000d"], "3660 days"),
    "this-month-and-from": (["--this-month", "--from", "2026-05-08"], "cannot be combined"),
    "zone-traversal": (["--timezone", "../../etc/passwd"], "unknown time zone"),
    "zone-absolute": (["--timezone", "/etc/localtime"], "unknown time zone"),
    "zone-dotdot-inside": (["--timezone", "Asia/../Asia/Shanghai"], "unknown time zone"),
    "zone-empty": (["--timezone", ""], "--timezone was given an empty value"),
    "zone-data-file": (["--timezone", "zone.tab"], "unknown time zone"),
    "service-type-3-among-others": (["--service-type", "2", "3"], "Custom Endpoint is 4"),
    "service-type-name": (["--service-type", "premium"], "unknown service type"),
    "service-type-0": (["--service-type", "0"], "unknown service type"),
    "service-type-empty": (["--service-type", ""], "unknown service type"),
    "bare-api-keys-with-group-by-key": (["--api-keys", "--group-by", "api-key"], "a bare --api-keys means all keys"),
    "group-by-key-comma-form": (["--group-by", "service-type,api-key"], "--api-keys"),
    "group-by-unknown": (["--group-by", "minute"], "unknown grouping"),
    "ip-octet-256": (["--ips", "192.0.2.256"], "not an IP address"),
    "ip-cidr": (["--ips", "192.0.2.0/24"], "not an IP address"),
    "ip-hostname": (["--ips", "localhost"], "not an IP address"),
    "ip-empty": (["--ips", "10.0.0.1", ""], "not an IP address"),
    "region-no-number": (["--region", "cn-southwest"], "region"),
    "region-upper": (["--region", "CN-SOUTHWEST-2"], "region"),
    "region-traversal": (["--region", "../cn-southwest-2"], "region"),
    "region-empty": (["--region", ""], "region"),
    "project-id-short": (["--project-id", PROJECT[:-1]], "project id"),
    "project-id-upper": (["--project-id", PROJECT.upper()], "project id"),
    "http-private-ip": (["--endpoint", "http://10.0.0.1:8443"], "loopback"),
    "http-loopback-lookalike": (["--endpoint", "http://localhost.example.com"], "loopback"),
    "http-iam": (["--iam-endpoint", "http://iam.cn-southwest-2.myhuaweicloud.com"], "loopback"),
    "endpoint-no-scheme": (["--endpoint", "localhost:8443"], "not an http(s) URL"),
    "endpoint-scheme-relative": (["--endpoint", "//localhost:8443"], "not an http(s) URL"),
    "endpoint-ftp": (["--endpoint", "ftp://localhost"], "not an http(s) URL"),
    "endpoint-userinfo": (["--endpoint", "https://user:pw@localhost"], "no user"),
    "endpoint-user-only": (["--iam-endpoint", "https://user@localhost"], "no user"),
    "endpoint-query": (["--endpoint", "https://localhost/?x=1"], "no user, query or fragment"),
    "endpoint-bad-port": (["--endpoint", "https://localhost:99999"], "invalid port"),
    "endpoint-space": (["--endpoint", "https://local host"], "do not belong"),
    "timeout-zero": (["--timeout", "0"], "--timeout"),
    "timeout-nan": (["--timeout", "nan"], "--timeout"),
    "timeout-inf": (["--timeout", "inf"], "--timeout"),
    "retries-negative": (["--retries", "-1"], "--retries"),
    "retries-eleven": (["--retries", "11"], "--retries"),
    "retries-fraction": (["--retries", "1.5"], "--retries"),
    "concurrency-zero": (["--concurrency", "0"], "--concurrency"),
    "raw-with-csv": (["--raw", "--format", "csv"], "--raw"),
    "no-header-with-table": (["--no-header"], "--no-header applies to --format csv only"),
    "no-header-with-json": (["--no-header", "--format", "json"], "--no-header applies to --format csv only"),
    "table-format-with-json": (["--table-format", "github", "--format", "json"], "--table-format applies to"),
    "table-format-with-csv": (["--table-format", "github", "--format", "csv"], "--table-format applies to"),
    "service-type-3": (["--service-type", "3"], "Custom Endpoint is 4"),
    "service-type-unknown": (["--service-type", "bogus"], "unknown service type"),
    "zone-unknown": (["--timezone", "Mars/Olympus"], "unknown time zone"),
    "date-invalid": (["--from", "2026-02-30"], "not a valid date"),
    "range-reversed": (["--from", "2026-05-21", "--to", "2026-05-08"], "not before"),
    "last-zero": (["--last", "0d"], "--last"),
    "last-and-this-month": (["--last", "7d", "--this-month"], "cannot be combined"),
    "to-and-until": (["--to", "2026-05-08", "--until", "2026-05-09"], "cannot be combined"),
    "region-malformed": (["--region", "CN_SOUTH"], "region"),
    "ips-malformed": (["--ips", "not-an-ip"], "not an IP address"),
    "concurrency-seventeen": (["--concurrency", "17"], "--concurrency"),
    "format-unknown": (["--format", "xml"], "invalid choice"),
    "flag-unknown": (["--no-such-flag"], "unrecognized"),
    "group-by-key-with-a-bare-api-keys": (["--group-by", "api-key", "--api-keys"], "--api-keys"),
    "group-by-two-units": (["--group-by", "day", "month"], "at most one"),
    "table-format-unknown": (["--table-format", "nope"], "unknown --table-format"),
    "infer-type-unknown": (["--infer-type", "stream"], "invalid choice"),
    "stray-positional": (["--", "--last", "7d"], "unrecognized"),
}


@pytest.mark.parametrize("name", sorted(USAGE_ERRORS))
def test_bad_input_is_a_usage_error_and_sends_nothing(cli, cloud, name):
    args, fragment = USAGE_ERRORS[name]
    run = cli(*args)
    assert run.code == 2, run.stderr
    assert run.stderr.startswith("error:") and fragment in run.stderr, run.stderr
    assert cloud.log == []


@pytest.mark.parametrize("env", [
    {"HW_MAAS_ENDPOINT": "http://example.com"},
    {"HW_IAM_ENDPOINT": "https://user:secret@localhost"},
    {"HW_PROJECT_ID": "not-a-project-id"},
    {"HUAWEICLOUD_SDK_PROJECT_ID": PROJECT.upper()},
], ids=["env-maas-http", "env-iam-userinfo", "env-project-id", "env-sdk-project-id"])
def test_bad_environment_values_are_usage_errors_and_send_nothing(cli, cloud, env):
    run = cli(*SEED_RANGE, env=env)
    assert run.code == 2, run.stderr
    assert run.stderr.startswith("error:")
    assert cloud.log == []


@pytest.mark.parametrize("url", ["https://[::1", "https://[not-an-ip]:8443"])
def test_unbalanced_ipv6_endpoint_is_a_usage_error(cli, cloud, url):
    run = cli(*SEED_RANGE, "--endpoint", url)
    assert run.code == 2 and "--endpoint" in run.stderr
    assert cloud.log == []


@pytest.mark.parametrize("args", [["--project-id", PROJECT + "\n"], ["--region", "cn-southwest-2\n"]],
                         ids=["project-id", "region"])
def test_value_with_a_trailing_newline_is_a_usage_error(cli, cloud, args):
    run = cli(*SEED_RANGE, *args)
    assert run.code == 2, run.stderr
    assert cloud.log == []


@pytest.mark.parametrize("args", [["--from", ""], ["--from", "", "--to", "2026-05-21"], ["--to", ""],
                                  ["--until", ""], ["--last", ""]],
                         ids=["from", "from-with-to", "to", "until", "last"])
def test_empty_time_value_is_a_usage_error_not_the_default_range(cli, cloud, args):
    run = cli(*args, "--timezone", "UTC")
    assert run.code == 2, run.stdout
    assert cloud.log == []


def _bad_credentials_files(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (path, message fragment); each file is made here."""
    (folder / "a-directory").mkdir()
    return {
        "missing": (str(folder / "no-such-file"), "does not exist"),
        "directory": (str(folder / "a-directory"), "is a directory"),
        "empty": (str(write_private(folder / "empty", b"")), "contains no credentials"),
        "binary": (str(write_private(folder / "binary", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))),
                   "binary"),
        "latin-1": (str(write_private(folder / "latin1", f"{AK}\n{SK}\xe9\n".encode("latin-1"))), "not UTF-8"),
        "one-line-only": (str(write_private(folder / "one-line", f"{AK}\n")), "only one line"),
        "csv-without-key-columns": (str(write_private(folder / "no-cols.csv",
                                                      f"User Name,Access Key Id,Password\nme,{AK},{SK}\n")),
                                    "'Access Key Id' and 'Secret Access Key'"),
        "csv-header-only": (str(write_private(folder / "header.csv",
                                              "User Name,Access Key Id,Secret Access Key\n")), "no row of keys"),
        "profile-without-basic": (str(write_private(folder / "profile", f"[other]\nak = {AK}\nsk = {SK}\n")),
                                  "[basic]"),
        "huge": (str(write_private(folder / "huge", f"{AK}\n{SK}\n" + "#" * (64 * 1024))), "larger than 64 KiB"),
        "key-with-space": (str(write_private(folder / "space", f"{AK},{SK} extra\n")), "contains spaces"),
    }


def test_bad_credentials_files_are_exit_3_naming_the_file_and_send_nothing(cli, cloud, tmp_path):
    for name, (path, fragment) in _bad_credentials_files(tmp_path).items():
        run = cli(*SEED_RANGE, "--credentials-file", path)
        assert run.code == 3, (name, run.stderr)
        assert path in run.stderr and fragment in run.stderr, (name, run.stderr)
        assert cloud.log == [], name


def test_bad_profile_named_by_the_sdk_variable_is_exit_3(cli, cloud, tmp_path):
    profile = write_private(tmp_path / "credentials", "[basic]\nak = \n")
    run = cli(*SEED_RANGE, env={"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None,
                                "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(profile)})
    assert run.code == 3 and str(profile) in run.stderr
    assert cloud.log == []


# ================================================================================================
# TLS
# ================================================================================================

def test_trusting_the_fakes_ca_through_requests_ca_bundle_works(cloud, home):
    env = {**base_env(home), **cloud.client_env()}
    assert env["REQUESTS_CA_BUNDLE"] == str(cloud.ca_pem_path)
    run = run_script([*SEED_RANGE, "--format", "json"], env)
    assert run.code == 0, run.stderr
    assert run.json()["totals"] == SEED_TOTALS


def test_certificate_from_another_ca_fails_before_any_request_is_sent(cli, cloud, tmp_path):
    trustme = pytest.importorskip("trustme")
    other = tmp_path / "other-ca.pem"
    trustme.CA(organization_name="not the fake's CA").cert_pem.write_to_path(str(other))
    run = cli(*SEED_RANGE, "--retries", "3", env={"REQUESTS_CA_BUNDLE": str(other)})
    assert run.code == 1
    assert "certificate" in run.stderr and "REQUESTS_CA_BUNDLE" in run.stderr
    assert cloud.log == []  # the TLS handshake failed: not even the IAM request reached the server


def test_garbage_ca_bundle_fails_cleanly(cli, cloud, tmp_path):
    bundle = write_private(tmp_path / "garbage.pem", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    run = cli(*SEED_RANGE, env={"REQUESTS_CA_BUNDLE": str(bundle)})
    assert run.code == 1 and "REQUESTS_CA_BUNDLE" in run.stderr
    assert cloud.log == []


def test_missing_ca_bundle_file_fails_cleanly(cli, cloud, tmp_path):
    run = cli(*SEED_RANGE, env={"REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem")})
    assert run.code == 1 and "REQUESTS_CA_BUNDLE" in run.stderr
    assert cloud.log == []


# ================================================================================================
# Secrets
# ================================================================================================

def test_credentials_repr_str_and_format_hide_every_value():
    import maas_rest_usage_stats as m

    credentials = m.Credentials(fakecloud.TEMP_AK, fakecloud.TEMP_SK, fakecloud.TEMP_TOKEN, "unit test", PROJECT)
    views = [repr(credentials), str(credentials), f"{credentials}", f"{credentials!r}",
             "%s" % (credentials,),  # noqa: UP031 - %-formatting is one of the views checked
             format(credentials, ""), repr([credentials]), str({"c": credentials}), repr((credentials,))]
    for view in views:
        for secret in (fakecloud.TEMP_AK, fakecloud.TEMP_SK, fakecloud.TEMP_TOKEN):
            assert secret not in view, view
        assert "<hidden>" in view
    plain = m.Credentials(AK, SK, None, "env")
    assert AK not in repr(plain) and SK not in str(plain) and "security_token" not in repr(plain)


@pytest.mark.parametrize("status, code", [(400, 1), (401, 3), (403, 3), (500, 1)])
def test_server_error_message_echoing_the_keys_is_redacted(cli, cloud, status, code):
    cloud.add_fault("status", status=status, times=5, retry_after="0",
                    error_msg=f"signature mismatch for AK {AK} with SK {SK}")
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "1", "-v")
    assert run.code == code
    assert f"HTTP {status}" in run.stderr
    assert "signature mismatch for AK *** with SK ***" in run.stderr  # the rest of the message survives


def test_security_token_echoed_by_the_server_is_redacted(cli, cloud):
    cloud.add_fault("status", status=401, error_msg=f"token {fakecloud.TEMP_TOKEN} expired")
    run = cli(*SEED_RANGE, "--project-id", PROJECT,
              env={"HW_ACCESS_KEY": fakecloud.TEMP_AK, "HW_SECRET_KEY": fakecloud.TEMP_SK,
                   "HW_SECURITY_TOKEN": fakecloud.TEMP_TOKEN})
    assert run.code == 3 and "token *** expired" in run.stderr


def test_keys_echoed_in_a_malformed_answer_or_a_redirect_are_redacted(cli, cloud):
    cloud.add_fault("json", body=f'{{"echo": "{AK}/{SK}"')
    run = cli(*SEED_RANGE, "--project-id", PROJECT)
    assert run.code == 1 and "not valid JSON" in run.stderr and "***" in run.stderr
    cloud.add_fault("redirect", location=f"https://evil.example/?ak={AK}&sk={SK}")
    run = cli(*SEED_RANGE, "--project-id", PROJECT)
    assert run.code == 1 and "not followed" in run.stderr and "evil.example" in run.stderr


@pytest.mark.parametrize("output", ["table", "json"])
def test_raw_output_never_repeats_a_key_the_server_echoes(cli, cloud, output):
    cloud.add_fault("json", body=body_text(total_infer_count=f'0, "caller": "{AK}"'))
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--raw", "--format", output)
    assert run.code in (0, 1)


def test_credentials_file_error_names_the_line_number_not_its_content(cli, cloud, tmp_path):
    key_value = write_private(tmp_path / "env-file", f"HW_ACCESS_KEY={AK}\nHW_SECRET_KEY={SK}\n"
                                                     f"oops this line holds {SK} and words\n")
    run = cli(*SEED_RANGE, "--credentials-file", str(key_value))
    assert run.code == 3 and "line 3" in run.stderr
    assert "oops" not in run.stderr and "words" not in run.stderr
    one_per_line = write_private(tmp_path / "lines", f"# keys\n{AK}\n{SK},trailing-part\n")
    run = cli(*SEED_RANGE, "--credentials-file", str(one_per_line))
    assert run.code == 3 and "line 3" in run.stderr and "trailing-part" not in run.stderr
    assert cloud.log == []


def test_verbose_dry_run_and_raw_runs_never_show_a_key(cli, cloud):
    # conftest checks the secrets; here each mode must also have produced what it promises.
    verbose = cli(*SEED_RANGE, "-v", "--raw", env={"HW_SECURITY_TOKEN": None})
    assert verbose.code == 0 and "show-statistics -> HTTP 200" in verbose.stderr
    temp = cli(*SEED_RANGE, "-v", "--format", "json", "--raw",
               env={"HW_ACCESS_KEY": fakecloud.TEMP_AK, "HW_SECRET_KEY": fakecloud.TEMP_SK,
                    "HW_SECURITY_TOKEN": fakecloud.TEMP_TOKEN})
    assert temp.code == 0 and temp.json()["totals"] == SEED_TOTALS
    sent = len(cloud.log)
    dry = cli(*SEED_RANGE, "--dry-run", "-v", "--format", "json")
    assert dry.code == 0 and dry.json()["dry_run"] is True
    assert len(cloud.log) == sent  # a dry run sends nothing
