"""Per model and per API key from Cloud Eye (SYS.MaaS), end to end against the fake Cloud Eye:
rows exact against the fake's own sums, the calls within Cloud Eye's limits, whole hours, the
filters Cloud Eye cannot apply, permissions and missing metrics."""

from __future__ import annotations

import bisect
import csv
import io
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fakecloud as fc
from conftest import hourly_index, local_ms, oracle_metrics, serve_at

HOUR = fc.HOUR_MS
DAY = fc.DAY_MS
LIMIT_SERIES, LIMIT_DATAPOINTS, LIMIT_SPAN = 500, 3000, 10 * DAY


def ms(text: str, zone: str = "Asia/Shanghai") -> int:
    return local_ms(text, zone)


@pytest.fixture
def hourly(cloud):
    cloud.events = hourly_index(ms("2026-04-01T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    return cloud


def half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def oracle(sums: dict) -> dict:
    """The contract's METRICS from Cloud Eye's metric sums (tokens are tokens), with rationals."""
    requests, errors = int(sums["rpm"]), int(sums["req_count_4xx"] + sums["req_count_5xx"])
    return {"total_tokens": half_up(Fraction(str(sums["total_tokens"]))),
            "prompt_tokens": half_up(Fraction(str(sums["prompt_tokens"]))),
            "completion_tokens": half_up(Fraction(str(sums["completion_tokens"]))),
            "total_requests": requests, "total_errors": errors,
            "error_rate": None if not requests else half_up(Fraction(errors * 10000, requests)) / 100,
            "total_completion_tasks": 0, "total_infer_count": 0}


def statistics_of_types_1_and_2(cloud, start: int, end: int) -> dict:
    parts = [cloud.expected_usage(start, end, t, "real_time") for t in (1, 2)]
    return oracle_metrics({key: sum((Decimal(p[key]) for p in parts), Decimal(0)) for key in parts[0]})


def metrics_of(row: dict) -> dict:
    return {name: row[name] for name in oracle({"rpm": 0, "req_count_4xx": 0, "req_count_5xx": 0,
                                                "total_tokens": 0, "prompt_tokens": 0, "completion_tokens": 0})}


def data_calls(cloud) -> list:
    return [e.json for e in cloud.requests_of("ces_data")]


def test_daily_rows_per_model_are_cloud_eyes_exact_sums(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-11", "--timezone", "Asia/Shanghai",
              "--group-by", "day", "model", "--format", "json")
    assert run.code == 0, run.stderr
    document = run.json()
    models = {model for model, _ in hourly.cloud_eye_instances()}
    assert len(document["rows"]) == 3 * len(models)
    for row in document["rows"]:
        assert row["source"] == "cloud_eye" and row["api_key"] is None and row["api_key_id"] is None
        start = ms(row["start"][:16])
        assert metrics_of(row) == oracle(hourly.cloud_eye_usage(start, start + DAY, model_id=row["model_id"]))
    assert document["totals"] == statistics_of_types_1_and_2(hourly, ms("2026-05-08T00:00"), ms("2026-05-11T00:00"))
    assert document["service_types"] == [1, 2]


def test_key_rows_without_api_keys_sum_each_key_over_models(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "UTC", "--group-by", "api-key",
              "--format", "json")
    assert run.code == 0, run.stderr
    rows = run.json()["rows"]
    keys = {key for _, key in hourly.cloud_eye_instances()}
    assert {row["api_key_id"] for row in rows} == keys
    for row in rows:
        assert row["model_id"] is None
        assert metrics_of(row) == oracle(hourly.cloud_eye_usage(ms("2026-05-08T00:00", "UTC"),
                                                                ms("2026-05-10T00:00", "UTC"), key_id=row["api_key_id"]))


def test_model_and_key_rows_by_hour_in_csv(cli, hourly):
    run = cli("--from", "2026-05-08 10:00", "--to", "2026-05-08 13:00", "--timezone", "Asia/Shanghai",
              "--group-by", "hour", "model", "api-key", "--format", "csv")
    assert run.code == 0, run.stderr
    lines = list(csv.DictReader(io.StringIO(run.stdout)))
    assert list(lines[0])[:7] == ["start", "end", "service_type", "api_key", "model_id", "model", "api_key_id"]
    pairs = hourly.cloud_eye_instances()
    assert len(lines) == 3 * len(pairs)
    for line in lines:
        start = ms(line["start"][:16])
        expected = oracle(hourly.cloud_eye_usage(start, start + HOUR, model_id=line["model_id"],
                                                 key_id=line["api_key_id"]))
        assert int(line["total_tokens"]) == expected["total_tokens"]
        assert int(line["total_requests"]) == expected["total_requests"]


def test_thirty_days_of_20_series_go_in_one_wave_of_calls_within_cloud_eyes_limits(cli, hourly):
    """The fake moves `from` forward, silently, when a call is too big: exact sums prove none was.
    Older than 155 days, the run reads hours (what the fake keeps without its retention)."""
    start, end = ms("2026-04-20T00:00", "UTC"), ms("2026-05-20T00:00", "UTC")
    models = {model for model, _ in hourly.cloud_eye_instances()}
    hourly.ces.missing_metrics = {"req_count_5xx", "completion_tokens"}  # 4 metrics x models
    run = cli("--from", "2026-04-20", "--to", "2026-05-20", "--timezone", "UTC", "--group-by", "model",
              "--format", "json")
    assert run.code == 0, run.stderr
    calls = data_calls(hourly)
    assert 6 <= len(calls) <= 16  # as many as keep answers small, in one wave of 16
    assert sum(len(body["metrics"]) * (body["to"] - body["from"]) // HOUR for body in calls) == 4 * len(models) * 720
    for body in calls:
        assert len(body["metrics"]) <= LIMIT_SERIES and body["to"] - body["from"] <= LIMIT_SPAN
        assert len(body["metrics"]) * (body["to"] - body["from"]) // HOUR <= LIMIT_DATAPOINTS
        assert body["period"] == "3600" and body["filter"] == "sum"
    for row in run.json()["rows"]:
        expected = oracle(hourly.cloud_eye_usage(start, end, model_id=row["model_id"]))
        assert row["total_tokens"] == expected["total_tokens"]
        assert row["total_requests"] == expected["total_requests"]


def test_a_span_is_split_into_the_fewest_calls_within_the_limits():
    import maas_rest_usage_stats as m

    assert m.span_split(24, 30 * 24, 240, 3000) == (120, 24)  # 6 calls of 24 series, 120 hours
    assert m.span_split(2000, 5, 240, 3000) == (5, 500)
    assert m.span_split(3, 2, 240, 3000) == (2, 3)
    assert m.span_split(24, 898, 180, 1361) == (113, 12)  # 16 calls: 150 days of 4-hour sums, 2 x 8
    assert m.span_split(1, 5000, 240, 200) == (200, 1)


def test_a_metric_cloud_eye_does_not_list_is_null_never_0(cli, hourly):
    hourly.ces.missing_metrics = {"req_count_5xx"}
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model",
              "--format", "json")
    assert run.code == 0, run.stderr
    document = run.json()
    assert document["totals"]["total_errors"] is None and document["totals"]["error_rate"] is None
    assert all(row["total_errors"] is None for row in document["rows"])
    assert "req_count_5xx" in run.stderr
    table = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model")
    assert table.code == 0 and "| Total Errors      | -" in table.stdout


def test_the_period_is_widened_to_whole_hours_with_a_note(cli, hourly):
    run = cli("--from", "2026-05-08 00:30", "--to", "2026-05-08 05:10", "--timezone", "UTC", "--group-by", "model",
              "--format", "json")
    assert run.code == 0, run.stderr
    period = run.json()["period"]
    assert (period["start_ms"], period["end_ms"]) == (ms("2026-05-08T00:00", "UTC"), ms("2026-05-08T06:00", "UTC"))
    assert "widened to 2026-05-08 00:00:00 ~ 2026-05-08 06:00:00" in run.stderr


def test_kolkata_days_are_not_whole_hours_of_cloud_eye(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "Asia/Kolkata", "--group-by", "day", "model")
    assert run.code == 2 and "Asia/Kolkata" in run.stderr
    assert hourly.ces_requests() == []
    assert cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "Asia/Kolkata",
               "--group-by", "model").code == 0


@pytest.mark.parametrize("args", [
    ("--group-by", "model", "--infer-type", "batch"),
    ("--group-by", "model", "--ips", "192.0.2.10"),
    ("--group-by", "api-key", "--ips", "192.0.2.10"),
    ("--group-by", "model", "--service-type", "4"),
    ("--group-by", "api-key", "--service-type", "all"),
    ("--group-by", "model", "--api-keys", "key-alpha"),
    ("--group-by", "api-key", "--infer-type", "batch"),
    ("--group-by", "model", "service-type", "--service-type", "1", "2"),  # it would be silently one row a model
    ("--group-by", "api-key", "service-type"),
])
def test_filters_cloud_eye_cannot_apply_are_usage_errors(cli, cloud, args):
    run = cli("--last", "2d", *args)
    assert run.code == 2, run.stderr
    assert cloud.log == []


def test_group_by_api_key_with_api_keys_keeps_its_show_statistics_meaning(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "api-key",
              "--api-keys", "key-alpha", "--format", "json")
    assert run.code == 0, run.stderr
    assert hourly.ces_requests() == [] and [r["api_key"] for r in run.json()["rows"]] == ["key-alpha"]
    assert "model_id" not in run.json()["rows"][0]


def test_a_403_from_cloud_eye_names_its_permissions(cli, hourly):
    hourly.denied.add(fc.CES_DATA_ACTION)
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--group-by", "model")
    assert run.code == 3
    assert "ces:metrics:list" in run.stderr and "ces:metricData:list" in run.stderr
    # Cloud Eye's own error shape {"http_code", "message": {"details", "code"}} is read, not dropped
    assert "HTTP 403: 403: Policy doesn't allow" in run.stderr, run.stderr


def test_the_dry_run_plans_list_metrics_and_says_the_data_calls_depend_on_it(cli, cloud):
    run = cli("--last", "2d", "--group-by", "model", "--dry-run", "--project-id", fc.DEMO_PROJECT_ID)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:6] == [
        f"GET {cloud.url}/V1.0/{fc.DEMO_PROJECT_ID}/metrics?namespace=SYS.MaaS&metric_name={metric}&limit=1000"
        for metric in ("total_tokens", "prompt_tokens", "completion_tokens", "rpm", "req_count_4xx", "req_count_5xx")]
    assert lines[6].startswith(f"POST {cloud.url}/v1/{fc.DEMO_PROJECT_ID}/maas/monitor/instances ")
    assert len(lines) == 9 and all("/maas/monitoring/show-statistics " in line for line in lines[7:])
    assert "depend on ListMetrics' answers" in run.stderr and cloud.log == []
    compared = cli("--last", "2d", "--group-by", "model", "--dry-run", "--project-id", fc.DEMO_PROJECT_ID, "--compare")
    assert compared.code == 0 and compared.stdout.splitlines()[:9] == lines and len(compared.stdout.splitlines()) == 11


def test_coverage_uses_cloud_eyes_155_days(cli, hourly):
    now = serve_at(hourly, datetime(2026, 10, 1, tzinfo=timezone.utc))
    run = cli("--from", "2026-04-20", "--to", "2026-05-20", "--timezone", "UTC", "--group-by", "model",
              "--format", "json", now=now)
    assert run.code == 0, run.stderr
    coverage = run.json()["coverage"]
    assert coverage["retained_from_ms"] == int((now - timedelta(days=155)).timestamp() * 1000)
    assert coverage["complete"] is False and "155 days" in run.stderr


def test_rows_carry_the_monitors_model_and_key_names(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model", "api-key",
              "--format", "json")
    assert run.code == 0, run.stderr
    names = hourly.cloud_eye_instances()
    rows = run.json()["rows"]
    assert {(r["model_id"], r["api_key_id"]): (r["model"], r["api_key"]) for r in rows} == names
    assert [(r["model"], r["api_key"]) for r in rows] == sorted((r["model"], r["api_key"]) for r in rows)
    table = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model")
    assert "DeepSeek-V3" in table.stdout
    # a model's keys read as its breakdown: the Model column comes first, whatever order the flags name
    for order in (("model", "api-key"), ("api-key", "model")):
        both = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", *order, "-q")
        header = next(line for line in both.stdout.splitlines() if "Model" in line)
        assert header.index("Model") < header.index("API Key"), header


def test_names_failing_leave_ids_and_a_note_and_the_run_succeeds(cli, hourly):
    hourly.add_fault("status", path="monitor", status=500, times=10)
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model",
              "--format", "json", "--retries", "0")
    assert run.code == 0, run.stderr
    assert all(row["model"] is None and row["model_id"] for row in run.json()["rows"])
    assert "names are not available" in run.stderr
    table = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model",
                env={"HW_MAAS_MONITOR_ENDPOINT": "https://127.0.0.1:9"}, )
    assert table.code == 0, table.stderr
    assert sorted({model for model, _ in hourly.cloud_eye_instances()})[0][:15] in table.stdout


@pytest.fixture
def late_may(hourly):
    """Runs on 2026-05-25 (the fake's clock too, so signatures match): May 8-21 lies within MaaS's 30 days."""
    return serve_at(hourly, datetime(2026, 5, 25, tzinfo=timezone.utc))


def test_reconciliation_with_show_statistics_of_types_1_and_2(cli, hourly, late_may):
    run = cli("--from", "2026-05-08", "--to", "2026-05-15", "--timezone", "Asia/Shanghai", "--group-by", "model",
              "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    document = run.json()
    statistics = statistics_of_types_1_and_2(hourly, ms("2026-05-08T00:00"), ms("2026-05-15T00:00"))
    assert document["reconciliation"] == {"statistics": statistics, "cloud_eye": document["totals"],
                                          "tokens_ratio": 1.0}
    assert sorted(b["service_type"] for b in hourly.maas_requests()) == [1, 2]
    assert all(b["infer_type"] == "real_time" for b in hourly.maas_requests())
    table = cli("--from", "2026-05-08", "--to", "2026-05-15", "--timezone", "Asia/Shanghai", "--group-by", "model",
                now=late_may)
    assert "ShowStatistics, same period, preset + my services: " in table.stdout
    assert "Cloud Eye rows: " in table.stdout and "(100.00 %)" in table.stdout


def test_a_model_cloud_eye_does_not_list_becomes_the_not_listed_row(cli, hourly, late_may):
    gone = fc.CES_MODELS[2][1][0]
    hourly.ces.unlisted = {gone}
    run = cli("--from", "2026-05-08", "--to", "2026-05-15", "--timezone", "Asia/Shanghai", "--group-by", "model",
              "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    document = run.json()
    start, end = ms("2026-05-08T00:00"), ms("2026-05-15T00:00")
    statistics = statistics_of_types_1_and_2(hourly, start, end)
    assert document["totals"] == statistics
    (extra,) = [row for row in document["rows"] if row["model"] == "(not listed by Cloud Eye)"]
    assert metrics_of(extra) == oracle(hourly.cloud_eye_usage(start, end, model_id=gone))
    assert extra["source"] == "show_statistics" and "(not listed by Cloud Eye)" in run.stderr
    assert document["reconciliation"]["tokens_ratio"] < 0.99


def test_no_reconciliation_past_maas_30_days(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model",
              "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["reconciliation"] is None and hourly.maas_requests() == []


def test_prometheus_labels_name_the_model_and_key(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model", "api-key",
              "--format", "prometheus")
    assert run.code == 0, run.stderr
    samples = [line for line in run.stdout.splitlines() if line.startswith("maas_usage_requests{")]
    assert len(samples) == len(hourly.cloud_eye_instances())
    for (model_id, key_id), (model, key) in hourly.cloud_eye_instances().items():
        assert any(f'model_id="{model_id}"' in line and f'model="{model}"' in line and f'api_key_id="{key_id}"' in line
                   and f'api_key="{key}"' in line for line in samples)


def test_list_metrics_pages_are_followed(cli, hourly):
    hourly.ces.page_limit = 7
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model",
              "--format", "json")
    assert run.code == 0, run.stderr
    assert len(hourly.requests_of("ces_metrics")) > 2
    assert len(run.json()["rows"]) == len({model for model, _ in hourly.cloud_eye_instances()})


def test_the_json_dry_run_plans_list_metrics(cli, cloud):
    run = cli("--last", "2d", "--group-by", "api-key", "--dry-run", "--format", "json")
    assert run.code == 0, run.stderr
    requests = run.json()["requests"]
    listings, (names, *statistics) = requests[:6], requests[6:]
    assert all(request["method"] == "GET" and request["body"] is None for request in listings)
    assert [request["url"].split("/V1.0/", 1)[1] for request in listings] == [
        f"{{project_id}}/metrics?namespace=SYS.MaaS&metric_name={metric}&limit=1000"
        for metric in ("total_tokens", "prompt_tokens", "completion_tokens", "rpm", "req_count_4xx", "req_count_5xx")]
    assert names["method"] == "POST" and names["url"].endswith("/v1/{project_id}/maas/monitor/instances")
    assert names["body"]["start"] == 0 and names["body"]["namespace"] == "SYS.MaaS"
    # the reconciliation: ShowStatistics for preset and My Services over the same (whole-hour) period
    assert sorted(request["body"]["service_type"] for request in statistics) == [1, 2]


def test_nothing_listed_is_zero_rows_and_a_note(cli, cloud):
    cloud.events = []
    run = cli("--last", "2d", "--group-by", "model", "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["rows"] == [] and run.json()["totals"]["total_tokens"] == 0
    assert "lists no SYS.MaaS series" in run.stderr


def test_a_chart_of_days_per_model(cli, hourly):
    run = cli("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "UTC", "--group-by", "day", "model",
              "--chart")
    assert run.code == 0, run.stderr
    assert "Total Tokens\n" in run.stdout and "DeepSeek-V3" in run.stdout


def test_max_requests_counts_the_calls_listmetrics_makes_necessary(cli, hourly):
    run = cli("--from", "2026-04-20", "--to", "2026-05-20", "--timezone", "UTC", "--group-by", "model",
              "--max-requests", "2")
    assert run.code == 2 and "--max-requests 2" in run.stderr
    assert hourly.requests_of("ces_data") == [] and len(hourly.requests_of("ces_metrics")) >= 1


def test_a_cloud_eye_plan_too_large_is_refused_before_any_call_is_built(cli, hourly, monkeypatch):
    """The count comes from the plan's arithmetic (ces_calls), not from its bodies: refusing a plan of
    thousands of series builds none of them (it took gigabytes when it did)."""
    def never(*args, **kwargs):
        raise AssertionError("a data call was built")

    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "ces_window", never)
    run = cli("--from", "2026-04-20", "--to", "2026-05-20", "--timezone", "UTC", "--group-by", "model",
              "--max-requests", "3")
    assert run.code == 2 and "more than --max-requests 3" in run.stderr, run.stderr



def test_sums_stay_exact_when_cloud_eye_also_answers_the_hour_of_to_and_calls_are_retried(cli, hourly):
    hourly.ces.to_inclusive = True
    hourly.add_fault("status", path="ces_data", status=500, times=2)
    run = cli("--from", "2026-04-20", "--to", "2026-05-20", "--timezone", "UTC", "--group-by", "model",
              "--format", "json")
    assert run.code == 0, run.stderr
    start, end = ms("2026-04-20T00:00", "UTC"), ms("2026-05-20T00:00", "UTC")
    for row in run.json()["rows"]:
        assert metrics_of(row) == oracle(hourly.cloud_eye_usage(start, end, model_id=row["model_id"]))


def test_a_401_from_cloud_eye_is_exit_3(cli, hourly):
    hourly.add_fault("status", path="ces_metrics", status=401)
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--group-by", "api-key")
    assert run.code == 3 and "ces:metrics:list" in run.stderr


def test_raw_shows_every_answer_a_cloud_eye_run_read(cli, hourly, late_may):
    """--raw: Cloud Eye's data answers (which the rows are summed from) and the reconciliation's
    ShowStatistics answers, each naming its call; the JSON windows as the answers came."""
    args = ("--from", "2026-05-08", "--to", "2026-05-15", "--timezone", "Asia/Shanghai", "--group-by", "model",
            "--raw")
    run = cli(*args, "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    windows = run.json()["windows"]
    data = [w for w in windows if w.get("call") == "Cloud Eye BatchListMetricData"]
    statistics = [w for w in windows if w.get("call", "").startswith("ShowStatistics")]
    assert len(data) == len(hourly.requests_of("ces_data")) >= 1 and len(data) + len(statistics) == len(windows)
    assert sorted(w["service_type"] for w in statistics) == [1, 2]
    sent = {(m["metric_name"], tuple((d["name"], d["value"]) for d in m["dimensions"]))
            for w in data for m in w["response"]["metrics"]}
    assert sent == {(m["metric_name"], tuple((d["name"], d["value"]) for d in m["dimensions"]))
                    for body in data_calls(hourly) for m in body["metrics"]}
    table = cli(*args, now=late_may)
    raw = table.stdout.split("Raw responses:\n", 1)[1].splitlines()
    assert len(raw) == len(windows)
    assert sum(line.startswith("Cloud Eye BatchListMetricData for ") for line in raw) == len(data)


def test_prometheus_complete_is_about_cloud_eyes_155_days(cli, hourly):
    now = serve_at(hourly, datetime(2026, 6, 20, tzinfo=timezone.utc))
    run = cli("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model",
              "--format", "prometheus", now=now)
    assert run.code == 0, run.stderr
    assert "Cloud Eye 155 days" in run.stdout
    complete = [line for line in run.stdout.splitlines() if line.startswith("maas_usage_complete{")]
    assert complete and all(line.endswith(" 1") for line in complete)  # 43 days back: inside 155, past 30


@pytest.mark.parametrize("body, detail", [
    ({"http_code": "400", "message": {"details": "Some content in message body is not correct", "code": "ces.0014"}},
     "ces.0014: Some content in message body is not correct"),  # Cloud Eye v1
    ({"code": 400, "element": "Bad Request", "message": "The system received a request which cannot be recognized",
      "details": {"details": "Some content in message body is not correct", "code": "ces.0014"}},
     "ces.0014: Some content in message body is not correct"),  # Cloud Eye's older v1 shape
    ({"error_code": "ces.0001", "error_msg": "The content must be specified."},
     "ces.0001: The content must be specified."),  # Cloud Eye v2 and API Gateway
    ({"error": {"code": "1101", "message": "project not found"}}, "1101: project not found"),  # IAM
])
def test_each_documented_error_shape_is_read(body, detail):
    import json

    import maas_rest_usage_stats as script

    reply = script.Reply(400, json.dumps(body), "", {})
    assert script.api_failure_message("Cloud Eye ListMetrics", reply) == f"Cloud Eye ListMetrics failed: HTTP 400: {detail}"


def test_the_readme_shows_the_hourly_fakes_model_rows_and_reconciliation(cli, cloud):
    """The README's "Per model and per key" example is what the hourly fake answers (run within
    MaaS's 30 days, so the reconciliation line is there)."""
    from conftest import ROOT

    cloud.events = hourly_index(ms("2026-11-01T00:00", "UTC"), ms("2026-12-01T00:00", "UTC"))
    now = serve_at(cloud, datetime(2026, 12, 2, 12, tzinfo=timezone.utc))
    args = ("--from", "2026-11-23", "--to", "2026-11-30", "--timezone", "Asia/Shanghai", "--group-by", "model")
    run = cli(*args, "-q", now=now)
    assert run.code == 0, run.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = "$ python3 maas_rest_usage_stats.py " + " ".join(args) + "\n"
    shown = readme.split(command, 1)[1].split("\n…", 1)[0] + "\n"  # a cut label holds a … too
    lines = run.stdout.splitlines(keepends=True)
    reconciliation = next(i for i, line in enumerate(lines) if line.startswith("ShowStatistics, same period"))
    assert shown == "".join(lines[:reconciliation + 1])


def test_last_30_days_widened_to_whole_hours_is_still_reconciled_with_a_note(cli, cloud):
    """--last 30d starts mid-hour: whole hours widen it past MaaS's 30 days by minutes. The run
    still compares (the common question), and says that ShowStatistics may count less of that hour."""
    now = serve_at(cloud, datetime(2026, 5, 31, 12, 20, tzinfo=timezone.utc))
    cloud.events = hourly_index(ms("2026-04-25T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--last", "30d", "--timezone", "UTC", "--group-by", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    document = run.json()
    assert document["period"]["start"] == "2026-05-01T12:00:00+00:00"
    reconciliation = document["reconciliation"]
    assert reconciliation is not None and "before MaaS's 30 days" in run.stderr
    assert reconciliation["tokens_ratio"] >= 1.0  # ShowStatistics counts 20 minutes of the first hour at most
    assert all(row["model"] != "(not listed by Cloud Eye)" for row in document["rows"])
    a_day_more = cli("--last", "31d", "--timezone", "UTC", "--group-by", "model", "--format", "json", now=now)
    assert a_day_more.code == 0 and a_day_more.json()["reconciliation"] is None


@pytest.mark.parametrize("hours, calls", [(24, 6 + 3), (720, 6 + 16), (721, 6 + 13), (3600, 6 + 29)])
def test_connections_opened_while_iam_answers_match_the_calls_of_four_models(hours, calls):
    """Before ListMetrics answers, the run opens Cloud Eye connections for the calls four model
    services (24 series) would need: the same count as the data calls those series then take."""
    import maas_rest_usage_stats as script

    start = datetime(2026, 5, 1, tzinfo=timezone.utc)
    period = script.Period(start, start + timedelta(hours=hours))
    query = type("Q", (), {"period": period, "bucket": None, "zone": timezone.utc})()
    later = start + timedelta(days=400)  # past the hourly sums' 155 days: hours only
    assert script.cloud_eye_calls_expected(query, later, 16) == calls
    per_model = [(name, (("maas_api_id", f"m{i}"),)) for i in range(4) for name in script.CES_METRIC_NAMES]
    assert len(per_model) == script.CES_EXPECTED_SERIES
    sums = script.BucketSums(query, script.split_buckets(query.period, None, timezone.utc))
    windows = script.ces_windows(query, per_model, script.ces_calls(query, later, len(per_model), 16), sums)
    assert 6 + len(windows) == calls  # 6 ListMetrics, one a metric


# ----------------------------------------------------------------------------------------------
# Rollups: 4-hour and daily sums where they lie whole inside a row, hours elsewhere
# ----------------------------------------------------------------------------------------------

RUN_AT = datetime(2026, 5, 31, 12, 20, tzinfo=timezone.utc)


def query_of(start: datetime, end: datetime, zone: str = "UTC", bucket: str | None = None):
    import zoneinfo

    import maas_rest_usage_stats as script

    period = script.whole_hours(script.Period(start, end))
    return type("Q", (), {"period": period, "bucket": script.UNITS[bucket] if bucket else None,
                          "zone": zoneinfo.ZoneInfo(zone)})()


def spans_of(query, now: datetime) -> list[tuple[str, int]]:
    import maas_rest_usage_stats as script

    return [(rollup.name, (hi - lo) // rollup.ms) for rollup, lo, hi in script.ces_spans(query, now)]


@pytest.mark.parametrize("days, zone, bucket, spans", [
    (30, "Asia/Shanghai", None, [("4-hour", 3), ("daily", 29), ("4-hour", 2), ("hourly", 5)]),
    (30, "UTC", "day", [("4-hour", 3), ("daily", 29), ("4-hour", 2), ("hourly", 5)]),
    (30, "Asia/Shanghai", "day", [("4-hour", 179), ("hourly", 5)]),  # its days start at 16:00 UTC
    (30, "America/Chicago", "day", [("hourly", 721)]),  # at 05:00 UTC
    (30, "UTC", "hour", [("hourly", 721)]),
    (200, "UTC", None, [("hourly", 1084), ("4-hour", 2), ("daily", 154), ("4-hour", 2), ("hourly", 5)]),
])
def test_coarser_sums_stand_for_whole_periods_inside_a_row_and_the_hourly_retention(days, zone, bucket, spans):
    """Daily and 4-hour sums only where a row's buckets hold them whole, within the 155 days that
    hourly sums are kept and ending 2 hours before now; hours at every edge."""
    assert spans_of(query_of(RUN_AT - timedelta(days=days), RUN_AT, zone, bucket), RUN_AT) == spans


ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "America/Chicago", "Europe/London")


@settings(max_examples=150, deadline=None)
@given(start_hours=st.integers(0, 250 * 24), hours=st.integers(1, 200 * 24), zone=st.sampled_from(ZONES),
       bucket=st.sampled_from([None, "hour", "day", "week", "month"]), series=st.integers(1, 60),
       wave=st.integers(1, 16))
def test_the_calls_cover_every_series_hour_once_within_the_limits(start_hours, hours, zone, bucket, series, wave):
    import maas_rest_usage_stats as script

    start = RUN_AT.replace(minute=0) - timedelta(hours=start_hours)
    query = query_of(start, start + timedelta(hours=hours), zone, bucket)
    buckets = script.split_buckets(query.period, query.bucket, query.zone)
    starts = [b.start_ms for b in buckets]
    calls = script.ces_calls(query, RUN_AT, series, wave)
    spans = script.ces_spans(query, RUN_AT)
    hours = [(script.CES_HOURLY, query.period.start_ms, query.period.end_ms)]
    fewest = min(len(script.ces_split(spans, series, LIMIT_DATAPOINTS))  # coarser sums need their check too
                 + len(script.ces_split(script.checked_periods(spans), series, LIMIT_DATAPOINTS, checks=True)),
                 len(script.ces_split(hours, series, LIMIT_DATAPOINTS)))
    assert len(calls) <= max(wave, fewest)  # never more than the wave, or than the fewest calls possible
    covered: dict[int, list[tuple[int, int]]] = {}
    checked: dict[int, list[tuple[int, int, int]]] = {}
    for rollup, lo, hi, first, count, checks in calls:
        assert 1 <= count <= LIMIT_SERIES and lo % rollup.ms == 0 and (hi - lo) % rollup.ms == 0
        if checks:  # the hours of a coarser rollup's first period: every series, beside the data calls
            assert rollup.seconds == 3600 and any(c.rollup.ms == hi - lo and c.start <= lo and hi <= c.end
                                                  and not c.checks for c in calls)
            assert not any(c.rollup.ms == hi - lo and c.end > hi and not c.checks for c in calls)  # the newest
            checked.setdefault(hi - lo, []).append((lo, first, count))
            continue
        assert count * (hi - lo) // rollup.ms <= LIMIT_DATAPOINTS and hi - lo <= rollup.max_days * DAY
        if rollup.seconds != 3600:
            assert to_ms(RUN_AT - timedelta(days=155)) <= lo and hi <= to_ms(RUN_AT - timedelta(hours=2))
            for at in range(lo, hi, rollup.ms):  # each coarser sum lies inside one row
                assert bisect.bisect_right(starts, at) == bisect.bisect_right(starts, at + rollup.ms - 1)
        for index in range(first, first + count):
            covered.setdefault(index, []).append((lo, hi))
    assert sorted(covered) == list(range(series))
    assert set(checked) == {c.rollup.ms for c in calls if c.rollup.seconds != 3600}
    for parts in checked.values():
        assert len({lo for lo, _, _ in parts}) == 1 and sorted(i for _, f, n in parts for i in range(f, f + n)) \
            == list(range(series))
    for parts in covered.values():
        parts.sort()
        assert parts[0][0] == query.period.start_ms and parts[-1][1] == query.period.end_ms
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def exact_rows(cloud, document: dict) -> None:
    """Each Cloud Eye row against the fake's own sums over its start and end."""
    for row in document["rows"]:
        start, end = (int(datetime.fromisoformat(row[edge]).timestamp() * 1000) for edge in ("start", "end"))
        assert metrics_of(row) == oracle(cloud.cloud_eye_usage(start, end, model_id=row["model_id"])), row["start"]


def periods_asked(cloud) -> set[str]:
    return {body["period"] for body in data_calls(cloud)}


@pytest.mark.parametrize("zone, periods", [("UTC", {"3600", "14400", "86400"}), ("Asia/Shanghai", {"3600", "14400"}),
                                           ("America/Chicago", {"3600"})])
def test_rows_from_coarser_sums_are_the_exact_sums_of_their_hours(cli, cloud, zone, periods):
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-04-25T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--last", "20d", "--timezone", zone, "--group-by", "day", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert periods_asked(cloud) == periods
    rows = run.json()["rows"]
    assert rows and all(row["source"] == "cloud_eye" for row in rows)
    exact_rows(cloud, run.json())


def test_coarser_sums_stamped_off_their_period_are_read_again_as_hours(cli, cloud):
    """Were Cloud Eye's days to start at UTC+8 midnight, the run would not add them: it says so and
    reads those periods as hours; the rows stay exact."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-04-25T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    cloud.ces.rollup_offset = 8 * HOUR
    run = cli("--last", "20d", "--timezone", "UTC", "--group-by", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert "are read again as hourly sums" in run.stderr
    bodies = data_calls(cloud)
    daily = [body for body in bodies if body["period"] == "86400"]  # 4-hour sums at UTC+8 are still aligned
    assert daily and all(any(again["period"] == "3600" and again["from"] == body["from"] for again in bodies)
                         for body in daily)
    document = run.json()
    exact_rows(cloud, document)
    assert document["reconciliation"]["tokens_ratio"] == 1.0


@pytest.mark.parametrize("max_requests", ["3", "4", "9"])
def test_small_answers_never_cost_more_requests_than_max_requests_allows(cli, cloud, max_requests):
    """Splitting calls for small answers stays within --max-requests (with the reconciliation's 2
    ShowStatistics windows): a run the plain split allows is never refused for it."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-05-20T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--last", "3d", "--timezone", "UTC", "--group-by", "model", "--format", "json",
              "--max-requests", max_requests, now=now)
    assert run.code == 0, run.stderr
    assert len(data_calls(cloud)) + len(cloud.requests_of("maas")) <= int(max_requests)
    assert len(data_calls(cloud)) > 1 or max_requests == "3"
    assert run.json()["reconciliation"]["tokens_ratio"] == 1.0


def test_raw_names_each_data_calls_rollup(cli, cloud):
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-05-20T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--last", "5d", "--timezone", "UTC", "--group-by", "model", "--raw", now=now)
    assert run.code == 0, run.stderr
    assert "(daily sums, series 1-" in run.stdout and "(hourly sums, series 1-" in run.stdout


def shifted_days(cli, cloud, until: str):
    """20 days of day rows per model at RUN_AT, the fake's events until ``until`` (UTC), its coarser
    sums filled from the hours 8 before (UTC+8 days stamped at UTC midnight)."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-04-25T00:00", "UTC"), ms(until, "UTC"))
    cloud.ces.rollup_shift = -8 * HOUR
    run = cli("--last", "20d", "--timezone", "UTC", "--group-by", "day", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    return run


def test_coarser_sums_that_are_not_the_sum_of_their_hours_are_read_again_as_hours(cli, cloud):
    """Were Cloud Eye's days stamped at UTC midnight but to hold UTC+8 days, the stamps would pass:
    the hours read beside each rollup's newest period catch it, and the rows stay exact."""
    run = shifted_days(cli, cloud, "2026-06-01T00:00")
    assert "Cloud Eye's 4-hour and daily sums could not stand for their hours here" in run.stderr
    bodies = data_calls(cloud)
    checks = [body for body in bodies if body["period"] == "3600" and body["to"] - body["from"] in (DAY, 4 * HOUR)
              and any(other["period"] != "3600" and other["from"] <= body["from"] and body["to"] <= other["to"]
                      for other in bodies)]
    assert checks  # the hours of each rollup's newest period, asked for beside it
    exact_rows(cloud, run.json())
    assert run.json()["reconciliation"]["tokens_ratio"] == 1.0


def test_a_passed_check_adds_the_checked_hours_once(cli, cloud):
    """The check's hours are compared, never added: the rows are the sums of each hour once."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-04-25T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--last", "20d", "--timezone", "UTC", "--group-by", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert "do not stand for their hours" not in run.stderr
    assert {body["period"] for body in data_calls(cloud)} == {"3600", "14400", "86400"}
    assert run.json()["reconciliation"]["tokens_ratio"] == 1.0
    document = run.json()
    exact_rows(cloud, document)


@pytest.mark.parametrize("missing", [{"total_tokens"}, {"rpm"}, {"total_tokens", "rpm"}, {"req_count_5xx", "completion_tokens"}])
def test_a_metric_cloud_eye_does_not_list_is_unknown_in_the_reconciliation_not_short(cli, cloud, missing):
    """Within MaaS's 30 days: a metric Cloud Eye lacks is `-` in the line and null in JSON, never a
    shortfall (no "(not listed by Cloud Eye)" row of zeros); the note names only what is not listed."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-05-20T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    cloud.ces.missing_metrics = set(missing)
    table = cli("--last", "3d", "--timezone", "UTC", "--group-by", "model", now=now)
    assert table.code == 0, table.stderr
    line = next(text for text in table.stdout.splitlines() if text.startswith("ShowStatistics, same period"))
    assert line.endswith("Cloud Eye rows: -") == ("total_tokens" in missing), line
    run = cli("--last", "3d", "--timezone", "UTC", "--group-by", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    document = run.json()
    assert (document["reconciliation"]["tokens_ratio"] is None) == ("total_tokens" in missing)
    assert all(row["model"] != "(not listed by Cloud Eye)" for row in document["rows"]) and "fall short" not in run.stderr
    note = next(text for text in run.stderr.splitlines() if "Cloud Eye lists no" in text)
    assert all(name in note for name in missing) and "req_count_4xx" not in note


@pytest.mark.parametrize("service_type", ["1", "2"])
def test_one_service_type_alone_is_refused_cloud_eye_counts_both_together(cli, cloud, service_type):
    run = cli("--last", "3d", "--group-by", "model", "--service-type", service_type)
    assert run.code == 2 and run.stdout == "" and cloud.log == []
    assert f"--service-type {service_type}: it counts preset services and My Services together" in run.stderr
    both = cli("--last", "3d", "--group-by", "model", "--service-type", "1", "2", "--format", "json")
    assert both.code == 0, both.stderr


def test_a_zone_that_is_whole_hours_off_utc_only_at_the_ends_is_refused_for_buckets(cli, cloud):
    """Lord Howe is UTC+11 in summer, UTC+10:30 in winter: its months between cannot be made of hours."""
    run = cli("--from", "2025-03-01", "--to", "2025-11-01", "--timezone", "Australia/Lord_Howe",
              "--group-by", "model", "month")
    assert run.code == 2 and "Australia/Lord_Howe is not a whole number of hours from UTC" in run.stderr
    assert cloud.log == []
    whole = cli("--from", "2025-03-01", "--to", "2025-11-01", "--timezone", "Australia/Lord_Howe", "--group-by", "model")
    assert whole.code == 0, whole.stderr  # without a time bucket, whole hours still sum the range


def test_a_check_of_a_period_without_calls_is_made_again_on_the_largest_sum(cli, cloud):
    """The newest day and 4 hours had no calls (the models went quiet): comparing 0 with 0 proves
    nothing, so each rollup's largest sum is checked against its hours in one more round trip."""
    run = shifted_days(cli, cloud, "2026-05-25T00:00")
    assert "could not stand for their hours" in run.stderr
    seconds = [body for body in data_calls(cloud) if len(body["metrics"]) == 1 and body["period"] == "3600"
               and body["to"] - body["from"] in (DAY, 4 * HOUR)]
    assert {body["to"] - body["from"] for body in seconds} == {DAY, 4 * HOUR}
    exact_rows(cloud, run.json())
    cloud.ces.rollup_shift = 0  # the same quiet end, sums right: the second check passes
    sound = cli("--last", "20d", "--timezone", "UTC", "--group-by", "day", "model", "--format", "json", now=RUN_AT)
    assert sound.code == 0 and "could not stand" not in sound.stderr
    exact_rows(cloud, sound.json())


def test_coarser_sums_with_no_calls_to_check_them_by_are_read_as_hours(cli, cloud):
    """Calls only in the newest hours: the coarser sums are all empty, which cannot tell a quiet
    period from a rollup Cloud Eye does not keep, so those periods are read as hours."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-05-31T11:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--last", "10d", "--timezone", "UTC", "--group-by", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert "no calls to check them by" in run.stderr
    document = run.json()
    assert document["rows"]
    exact_rows(cloud, document)


@pytest.mark.parametrize("max_requests", ["8", "10", "12"])
def test_a_max_requests_too_small_for_a_failed_check_takes_hours_from_the_start(cli, cloud, max_requests):
    """Coarser sums are planned only when their check's worst case (a second check, then hours)
    still fits --max-requests: else hours alone, and no run fails midway for it."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-04-25T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    cloud.ces.rollup_shift = -8 * HOUR
    run = cli("--last", "20d", "--timezone", "UTC", "--group-by", "model", "--format", "json",
              "--max-requests", max_requests, now=now)
    assert run.code == 0, run.stderr
    assert len(data_calls(cloud)) + len(cloud.requests_of("maas")) <= int(max_requests)
    exact = run.json()
    exact_rows(cloud, exact)


def test_compare_gives_the_previous_periods_cloud_eye_rows_and_the_totals_change(cli, cloud):
    """--compare with a Cloud Eye grouping: the previous period (whole hours too) read the same way,
    its rows in JSON and CSV, Previous and Change on the totals."""
    now = serve_at(cloud, RUN_AT)
    cloud.events = hourly_index(ms("2026-05-01T00:00", "UTC"), ms("2026-06-01T00:00", "UTC"))
    run = cli("--from", "2026-05-20", "--to", "2026-05-27", "--timezone", "UTC", "--group-by", "model", "--compare",
              "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert len(cloud.requests_of("ces_metrics")) == 6 and len(cloud.requests_of("monitor")) == 1  # one listing
    document = run.json()
    previous = document["previous"]
    assert previous["period"]["start"] == "2026-05-13T00:00:00+00:00" and previous["period"]["end"].startswith("2026-05-20")
    assert previous["rows"] and all(row["source"] == "cloud_eye" for row in previous["rows"])
    exact_rows(cloud, {"rows": previous["rows"]})
    exact_rows(cloud, document)
    tokens, before = document["totals"]["total_tokens"], previous["totals"]["total_tokens"]
    assert document["change"]["total_tokens"] == float((Decimal(tokens - before) * 100 / before).quantize(
        Decimal("0.1"), rounding="ROUND_HALF_UP"))
    table = cli("--from", "2026-05-20", "--to", "2026-05-27", "--timezone", "UTC", "--group-by", "model", "--compare",
                now=now)
    assert table.code == 0, table.stderr
    assert "Previous" in table.stdout and "Change" in table.stdout and "Previous: 2026-05-13 00:00:00" in table.stdout
    csv_run = cli("--from", "2026-05-20", "--to", "2026-05-27", "--timezone", "UTC", "--group-by", "model",
                  "--compare", "--format", "csv", now=now)
    starts = {line["start"][:10] for line in csv.DictReader(io.StringIO(csv_run.stdout))}
    assert starts == {"2026-05-20", "2026-05-13"}


def test_a_series_reads_the_same_whatever_order_its_dimensions_come_in():
    """A coarser sum and the hours that check it must meet under one key (else a sound rollup would be
    rejected): dimensions are read in name order."""
    import maas_rest_usage_stats as script

    dims = [{"name": "maas_key_id", "value": "k"}, {"name": "maas_api_id", "value": "m"}]
    body = {"from": 0, "to": 2 * HOUR, "filter": "sum", "period": "3600",
            "metrics": [{"namespace": "SYS.MaaS", "metric_name": "rpm", "dimensions": dims[::-1]}]}
    answer = script.datapoints_of({"metrics": [{"metric_name": "rpm", "dimensions": dims,
                                                "datapoints": [{"timestamp": 0, "sum": 3}]}]}, "x", body)
    assert answer == [(("rpm", (("maas_api_id", "m"), ("maas_key_id", "k"))), [(0, Decimal(3))])]
