"""The output and input safety rules (issue 19, items 4, 5 and 7) on what main added since: Cloud Eye's
answers (ListMetrics, BatchListMetricData, the MaaS monitor's names), --check's checklist, and the fake
cloud's reshaping faults (duplicate_key, deep_nesting, implausible, echo_in_numbers).

Every answer is read one way (a key twice or nesting past 64 levels is malformed), its strings are masked
at the source (never its numbers), Cloud Eye's sums are held to the bounds of METRICS (Metric.at_most),
and the names Cloud Eye and the monitor send are escaped and aligned by display columns like key labels.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest

import fakecloud as fc
import maas_rest_usage_stats as m
from conftest import serve_at
from test_check import check  # noqa: F401 (a fixture)
from test_input_text import UNSAFE, assert_no_unsafe, grouped_lines
from test_plausibility import DIGIT_SK, SEED_RANGE, digit_keys  # noqa: F401 (a fixture)

DAYS = ("--from", "2026-05-08", "--to", "2026-05-11", "--timezone", "UTC")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp()) * 1000


# Model names as users give them: CJK (two columns a character), combining marks (none), a zero-width
# space (none) and, in the hostile set, what a terminal must not get.
WIDE_NAMES = {"DeepSeek-V3": "深度求索-V3-满血版", "Qwen3-32B": "Qwe\u0301n3-32B\u0308-Ωmega",
              "my-glm-4-9b": "智谱\u200b清言-glm"}
HOSTILE_NAMES = {"DeepSeek-V3": "ds\x1b[2J\u202ev3\x9b", "Qwen3-32B": "qwen\u2066\u2069\x7f"}


@lru_cache(maxsize=4)
def renamed_models_index(names: tuple[tuple[str, str], ...]) -> fc.UsageIndex:
    """May 2026's hourly usage (May 5-12) with some of the fake's model services renamed."""
    renamed = dict(names)
    events = fc.hourly_events(ms("2026-05-05T00:00"), ms("2026-05-12T00:00"))
    return fc.build_index(tuple(dataclasses.replace(e, model_name=renamed.get(e.model_name, e.model_name))
                                for e in events))


@pytest.fixture
def wide(cloud):
    cloud.events = renamed_models_index(tuple(WIDE_NAMES.items()))
    return cloud


@pytest.fixture
def hostile(cloud):
    cloud.events = renamed_models_index(tuple(HOSTILE_NAMES.items()))
    return cloud


@pytest.fixture
def hourly(cloud):
    cloud.events = renamed_models_index(())
    return cloud


# ----------------------------------------------------------------------------------------------
# Display width: Cloud Eye's model names in the grouped table and the chart
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("table_format", [None, "github", "grid"])
def test_cloud_eye_rows_with_cjk_and_combining_model_names_align_by_display_columns(cli, wide, table_format):
    run = cli(*DAYS, "--group-by", "day", "model", *(("--table-format", table_format) if table_format else ()))
    assert run.code == 0, run.stderr
    lines = grouped_lines(run.stdout)
    assert len(lines) == 3 * 5 + 1  # three days of five model services, and the Total row
    assert len({m.display_width(line) for line in lines}) == 1, lines[:6]
    header = next(line for line in run.stdout.splitlines() if "Model" in line)
    assert m.display_width(header) == m.display_width(lines[0])
    if table_format is None:
        assert m.display_width(lines[0]) <= 80
        cells = {re.split(r"\s{2,}", line.strip())[1] for line in lines[:5]}
        # cut at 16 display columns: 深度求索-V3-满血版 is 18, 客服助手-qwen2.5-7b 20; the others fit
        assert cells == {"深度求索-V3-满…", "客服助手-qwen2.…", "Qwe\u0301n3-32B\u0308-Ωmega", "智谱\u200b清言-glm",
                         "DeepSeek-R1"}, cells


def test_cloud_eye_model_and_key_rows_keep_80_columns_with_wide_names(cli, wide):
    run = cli(*DAYS, "--group-by", "model", "api-key")
    assert run.code == 0, run.stderr
    table = run.stdout.split("\n\n")[0].splitlines()[1:]  # the grouped table, without its title
    assert len(table) == 1 + 1 + 1 + 5 * 3 + 1 + 1  # borders, header, 15 rows, Total
    assert len({m.display_width(line) for line in table}) == 1, table
    assert m.display_width(table[0]) <= 80
    assert sum("深度求索-V3-满…" in line for line in table) == 3


def test_the_chart_pads_cloud_eye_model_names_by_display_columns(cli, wide):
    run = cli(*DAYS, "--group-by", "day", "model", "--chart")
    assert run.code == 0, run.stderr
    chart = run.stdout.split("Total Tokens\n")[-1].split("\n\n")[0].splitlines()
    assert len(chart) == 3 * 5 and {m.display_width(line) for line in chart} == {80}, chart
    assert any("深度求索" in line for line in chart) and any("\u0301" in line for line in chart)


# ----------------------------------------------------------------------------------------------
# Escaping: names and ids from Cloud Eye and the monitor, --check's lines
# ----------------------------------------------------------------------------------------------

def test_hostile_model_names_from_the_monitor_are_escaped_in_every_output(cli, hostile):
    table = cli(*DAYS, "--group-by", "day", "model", "--chart")
    assert table.code == 0, table.stderr
    assert_no_unsafe(table.stdout)
    assert table.stdout.count("ds\\x1b[2J\\u202e…") == 3 * 2  # escaped, cut at 16 columns: table and chart
    document = cli(*DAYS, "--group-by", "model", "--format", "json")
    assert document.code == 0 and not UNSAFE.search(document.stdout)
    assert {row["model"] for row in document.json()["rows"]} >= set(HOSTILE_NAMES.values())  # exact once parsed
    # CSV and Prometheus are data: the names parse back exactly (as in JSON), one row or sample a line
    rows = list(csv.DictReader(io.StringIO(cli(*DAYS, "--group-by", "model", "--format", "csv").stdout, newline="")))
    assert len(rows) == 5 and {row["model"] for row in rows} >= set(HOSTILE_NAMES.values())
    prometheus = cli(*DAYS, "--group-by", "model", "--format", "prometheus")
    assert prometheus.code == 0 and f'model="{HOSTILE_NAMES["DeepSeek-V3"]}"' in prometheus.stdout


def test_hostile_series_ids_from_list_metrics_are_escaped_in_the_table(cli, cloud):
    ids = {fc.CES_MODELS[2][0][0]: "id\x1b]0;pwned\x07\u202e"}
    events = fc.hourly_events(ms("2026-05-05T00:00"), ms("2026-05-12T00:00"))
    cloud.events = fc.build_index(tuple(dataclasses.replace(e, model_id=ids.get(e.model_id, e.model_id))
                                        for e in events))
    cloud.add_fault("status", path="monitor", status=500, times=5)  # no names: the rows show the ids
    run = cli(*DAYS, "--group-by", "model", "--retries", "0")
    assert run.code == 0, run.stderr
    assert_no_unsafe(run.stdout + run.stderr)
    assert "| id\\x1b]0;pwned\\… |" in run.stdout  # escaped, then cut at 16 columns
    document = cli(*DAYS, "--group-by", "model", "--format", "json", "--retries", "0")
    assert document.code == 0 and not UNSAFE.search(document.stdout)
    assert "id\x1b]0;pwned\x07\u202e" in {row["model_id"] for row in document.json()["rows"]}


def test_a_server_message_in_the_checklist_is_escaped_and_masked(check, cloud):
    cloud.add_fault("status", path="maas", status=400,
                    error_msg=f"bad\x1b[31m \u202eevil\r\nline two {fc.DEMO_SK}")
    result = check("--format", "table")
    assert result.run.code == 1, result.run.stderr
    assert_no_unsafe(result.run.stdout)
    assert "bad\\x1b[31m \\u202eevil\\r\\nline two ***" in result.run.stdout
    (permission,) = [line for line in result.run.stdout.splitlines() if line.startswith("FAIL")]
    assert "permission" in permission
    document = check()
    assert not UNSAFE.search(document.run.stdout)


def test_checklist_hint_lines_stay_under_their_step_with_a_wide_detail(check, cloud):
    cloud.add_fault("status", path="maas", status=403, error_msg="权限不足：缺少 modelarts:monitoring:get")
    result = check("--format", "table")
    lines = result.run.stdout.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert "权限不足" in lines[at] and lines[at + 1].startswith(" " * 8) and "hint: " in lines[at + 1]
    assert lines[at + 1].index("hint:") == len("FAIL  ") + max(map(len, (
        "credentials", "MaaS endpoint", "IAM endpoint", "Cloud Eye endpoint", "clock", "signature and project",
        "permission", "Cloud Eye metrics"))) + 2


# ----------------------------------------------------------------------------------------------
# Answers read one way: Cloud Eye, the monitor and the check's ListMetrics
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, call", [("ces_metrics", "Cloud Eye ListMetrics"),
                                        ("ces_data", "Cloud Eye BatchListMetricData")])
@pytest.mark.parametrize("fault, params, what", [
    ("duplicate_key", {}, "appears twice in one object"),
    ("duplicate_key", {"key": "metrics"}, 'the key "metrics" appears twice in one object'),
    ("deep_nesting", {"levels": 65}, "nested deeper than 64 levels"),
    ("deep_nesting", {"levels": 5000}, "nested deeper than 64 levels"),
])
def test_a_cloud_eye_answer_read_two_ways_or_nested_too_deep_is_malformed(cli, hourly, path, call, fault, params,
                                                                           what):
    hourly.add_fault(fault, path=path, **params)
    run = cli(*DAYS, "--group-by", "model", "--retries", "0")
    assert run.code == 1 and run.stdout == ""
    assert f"malformed response from {call}" in run.stderr and what in run.stderr, run.stderr


def test_an_answer_64_levels_deep_is_read(cli, hourly):
    hourly.add_fault("deep_nesting", path="ces_data", levels=64)
    run = cli(*DAYS, "--group-by", "model", "--format", "json")
    assert run.code == 0, run.stderr


@pytest.mark.parametrize("fault, params", [("duplicate_key", {}), ("deep_nesting", {"levels": 100})])
def test_a_names_answer_read_two_ways_leaves_ids_and_a_note(cli, hourly, fault, params):
    hourly.add_fault(fault, path="monitor", **params)
    run = cli(*DAYS, "--group-by", "model", "--format", "json")
    assert run.code == 0, run.stderr
    assert "names are not available (malformed response from MaaS monitor instances" in run.stderr
    assert all(row["model"] is None and row["model_id"] for row in run.json()["rows"])


@pytest.mark.parametrize("fault, params, what", [("duplicate_key", {}, "appears twice in one object"),
                                                 ("deep_nesting", {}, "nested deeper than 64 levels")])
def test_the_checks_list_metrics_answer_is_read_one_way(check, cloud, fault, params, what):
    cloud.add_fault(fault, path="ces_metrics", **params)
    result = check()
    step = result.steps["Cloud Eye metrics"]
    assert step["status"] == "FAIL" and "malformed response from Cloud Eye ListMetrics" in step["detail"]
    assert what in step["detail"] and result.run.code == 1


def test_a_datapoint_beyond_any_account_is_malformed(cli, hourly):
    hourly.add_fault("json", path="ces_data", body={"metrics": [{
        "namespace": "SYS.MaaS", "metric_name": "total_tokens", "unit": "count",
        "dimensions": [{"name": "maas_api_id", "value": fc.CES_MODELS[2][0][0]}],
        "datapoints": [{"sum": 10 ** 19, "timestamp": ms("2026-05-08T00:00")}]}]})
    run = cli(*DAYS, "--group-by", "model", "--retries", "0")
    assert run.code == 1 and "malformed response from Cloud Eye BatchListMetricData" in run.stderr
    assert "out of range" in run.stderr


# ----------------------------------------------------------------------------------------------
# Redaction at the source: Cloud Eye's strings, never its numbers
# ----------------------------------------------------------------------------------------------

def test_a_model_name_holding_a_piece_of_the_key_is_masked_and_the_sums_stay_exact(cli, cloud):
    cloud.events = renamed_models_index((("DeepSeek-V3", f"leak-{fc.DEMO_SK[3:15]}"),))
    run = cli(*DAYS, "--group-by", "model", "--format", "json", "--raw")
    assert run.code == 0, run.stderr
    models = {row["model"] for row in run.json()["rows"]}
    assert "leak-***" in models
    plain = cli(*DAYS, "--group-by", "model", "--format", "json", env={"HW_MAAS_MONITOR_ENDPOINT": None})
    assert plain.json()["totals"] == run.json()["totals"]


def test_cloud_eye_sums_holding_digits_of_the_key_print_exactly(cli, cloud, digit_keys):  # noqa: F811
    digits = int(DIGIT_SK[2:12])  # 2482084980: ten characters of the SK
    cloud.add_fault("json", path="ces_data", body={"metrics": [{
        "namespace": "SYS.MaaS", "metric_name": "total_tokens", "unit": "count",
        "dimensions": [{"name": "maas_api_id", "value": fc.CES_MODELS[2][0][0]}],
        "datapoints": [{"sum": digits, "timestamp": ms("2026-05-08T00:00")}]}]})
    run = cli(*DAYS, "--group-by", "model", "--format", "json", "--retries", "0", "--concurrency", "1",
              env=digit_keys)  # one data call: the one the fault answers
    assert run.code == 0, run.stderr
    assert run.json()["totals"]["total_tokens"] == digits and "***" not in run.stdout


# ----------------------------------------------------------------------------------------------
# Plausibility: Cloud Eye's sums held to Metric.at_most
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("what, broken", [("errors", "total_errors"), ("prompt", "prompt_tokens"),
                                          ("completion", "completion_tokens")])
def test_cloud_eye_sums_that_break_a_bound_are_summed_as_sent_and_flagged(cli, hourly, what, broken):
    sound = cli(*DAYS, "--group-by", "model", "--format", "json").json()
    assert "anomalies" not in sound["coverage"]
    hourly.add_fault("implausible", path="ces_data", what=what, times=10)
    run = cli(*DAYS, "--group-by", "model", "--format", "json")
    assert run.code == 0, run.stderr
    anomalies = run.json()["coverage"]["anomalies"]
    assert anomalies and all(a["what"].startswith(f"{broken} ") and "(Cloud Eye, model '" in a["what"]
                             for a in anomalies)
    assert len(anomalies) == len({a["what"] for a in anomalies})
    assert "the answer for Cloud Eye's hours 2026-05-08 00:00:00 ~ 2026-05-11 00:00:00 (Cloud Eye, model '" \
        in run.stderr and "it is summed as sent" in run.stderr
    assert run.json()["totals"][broken] > sound["totals"][broken]  # as sent: nothing dropped or capped
    assert all(run.json()["totals"][name] == sound["totals"][name] for name in ("total_tokens", "total_requests")
               if name != broken)


def test_the_reconciliations_show_statistics_answers_are_held_to_the_bounds_too(cli, hourly):
    now = serve_at(hourly, datetime(2026, 5, 25, tzinfo=timezone.utc))  # May 8-11 within MaaS's 30 days
    hourly.add_fault("implausible", path="maas", what="errors")
    run = cli(*DAYS, "--group-by", "model", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    assert run.json()["reconciliation"] is not None
    (anomaly,) = run.json()["coverage"]["anomalies"]
    assert re.fullmatch(r"total_errors (\d+) > total_requests (\d+) \((Preset|My) Service\)", anomaly["what"])
    assert "the answer for 2026-05-08 00:00:00 ~ 2026-05-11 00:00:00 (" in run.stderr


def test_a_metric_cloud_eye_does_not_list_bounds_nothing(cli, hourly):
    hourly.ces.missing_metrics = {"total_tokens"}
    run = cli(*DAYS, "--group-by", "model", "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["totals"]["total_tokens"] is None and "anomalies" not in run.json()["coverage"]


def test_the_bounds_skip_a_missing_metric():
    usage = m.Usage(frozenset({"total_tokens"}), prompt_k=m.Decimal(5), errors=2, requests=1)
    assert usage.anomalies() == ["total_errors 2 > total_requests 1"]


# ----------------------------------------------------------------------------------------------
# The fake cloud's reshaping faults on ShowStatistics
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, params, what", [
    ("duplicate_key", {"key": "total_token"}, 'the key "total_token" appears twice in one object'),
    ("deep_nesting", {"levels": 65}, "nested deeper than 64 levels"),
    ("deep_nesting", {"levels": 20000}, "nested deeper than 64 levels"),
])
def test_show_statistics_faults_read_two_ways_are_malformed(cli, cloud, fault, params, what):
    cloud.add_fault(fault, **params)
    run = cli(*SEED_RANGE, "--raw", "--retries", "0")
    assert run.code == 1 and "malformed response from ShowStatistics for 2026-05-08" in run.stderr
    assert what in run.stderr


@pytest.mark.parametrize("what, broken", [("errors", "total_errors 67189 > total_requests 67188"),
                                          ("prompt", "prompt_tokens 2482084981 > total_tokens 2482084980"),
                                          ("completion", "completion_tokens 2482084981 > total_tokens 2482084980")])
def test_show_statistics_implausible_fault_is_flagged(cli, cloud, what, broken):
    cloud.add_fault("implausible", what=what)
    run = cli(*SEED_RANGE, "--format", "json")
    assert run.code == 0, run.stderr
    assert [a["what"] for a in run.json()["coverage"]["anomalies"]] == [f"{broken} (Preset Service)"]


def test_echo_in_numbers_prints_every_number_exactly(cli, cloud, digit_keys):  # noqa: F811
    cloud.add_fault("echo_in_numbers", times=3)
    digits = max(re.findall(r"[0-9]{8,}", DIGIT_SK), key=len)
    for output, expected in (("json", f'"total_requests": {digits}'), ("csv", f",{digits},0,"),
                             ("prometheus", f"}} {digits}\n")):
        run = cli(*SEED_RANGE, "--format", output, env=digit_keys)
        assert run.code == 0, run.stderr
        assert expected in run.stdout and "***" not in run.stdout, run.stdout


@pytest.mark.parametrize("kind, params", [("deep_nesting", {"levels": 0}), ("implausible", {"what": "tokens"}),
                                          ("duplicate_key", {"key": 3}), ("echo_in_numbers", {"times_": 1})])
def test_reshaping_faults_refuse_bad_params(cloud, kind, params):
    with pytest.raises(ValueError):
        cloud.add_fault(kind, **params)


@pytest.mark.parametrize("shape", ["a timestamp twice", "a series twice"])
def test_a_cloud_eye_answer_that_repeats_a_datapoint_or_a_series_is_malformed(cli, cloud, shape):
    """Summing both would count an hour twice, and taking one would be a guess: exit 1, no numbers."""
    dims = [{"name": "maas_api_id", "value": fc.CES_MODELS[2][0][0]}]
    point = {"sum": 1000, "timestamp": ms("2026-05-08T00:00")}
    metrics = ([{"namespace": "SYS.MaaS", "metric_name": "total_tokens", "unit": "count", "dimensions": dims,
                 "datapoints": [point, dict(point, sum=5)]}] if shape == "a timestamp twice" else
               [{"namespace": "SYS.MaaS", "metric_name": "total_tokens", "unit": "count", "dimensions": dims,
                 "datapoints": [point]}] * 2)
    cloud.add_fault("json", path="ces_data", body={"metrics": metrics}, times=100)
    run = cli(*DAYS, "--group-by", "model", "--format", "json", "--retries", "0")
    assert run.code == 1 and run.stdout == ""
    assert "repeats a series or a datapoint's timestamp" in run.stderr
