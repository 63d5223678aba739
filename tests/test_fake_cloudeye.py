"""Tests of the fake Cloud Eye (SYS.MaaS) and the MaaS monitor's names in tests/fakecloud.py.

Requests are signed with huaweicloudsdkcore's Signer (test_fakecloud.Client), as the real script will
sign them, and checked against ShowStatistics over the same events: Cloud Eye's sums per model and
per API key must add up, hour for hour, to the totals of service types 1 and 2.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import fakecloud as fc
from test_fakecloud import HOURLY, HOURLY_INDEX, HOURLY_START, Client, assert_apigw_401, decimal_json, standalone

PROJECT = fc.DEMO_PROJECT_ID
METRICS_PATH = f"/V1.0/{PROJECT}/metrics"
DATA_PATH = f"/V1.0/{PROJECT}/batch-query-metric-data"
INSTANCES_PATH = f"/v1/{PROJECT}/maas/monitor/instances"
HOUR = fc.HOUR_MS
DAY = fc.DAY_MS
TOKENS = ("total_tokens", "prompt_tokens", "completion_tokens")
STATISTICS_TOKENS = {"total_tokens": "total_token", "prompt_tokens": "total_prompt_token",
                     "completion_tokens": "total_completion_token"}
UNSTARTED = fc.FakeCloud(events=HOURLY_INDEX)  # what ShowStatistics answers needs no server


@pytest.fixture(scope="module")
def server() -> Iterator[fc.FakeCloud]:
    with fc.FakeCloud(events=HOURLY_INDEX) as cloud:
        yield cloud


@pytest.fixture
def cloud(server: fc.FakeCloud) -> Iterator[fc.FakeCloud]:
    server.reset()
    yield server
    server.reset()
    server.events = HOURLY_INDEX


@pytest.fixture
def client(cloud: fc.FakeCloud) -> Client:
    return Client(cloud)


def list_metrics(client: Client, **params: str) -> requests.Response:
    return client.send("GET", METRICS_PATH, query=sorted({"namespace": fc.CES_NAMESPACE, **params}.items()))


def all_listed(client: Client, **params: str) -> list[dict[str, Any]]:
    """Every ListMetrics entry, page after page, following meta_data.marker."""
    entries: list[dict[str, Any]] = []
    marker = ""
    while True:
        response = list_metrics(client, **params, **({"start": marker} if marker else {}))
        assert response.status_code == 200, response.text
        page = response.json()
        entries += page["metrics"]
        assert page["meta_data"]["count"] == len(page["metrics"])
        if not page["metrics"]:
            return entries
        marker = page["meta_data"]["marker"]


def metric(name: str, dims: Any) -> dict[str, Any]:
    """A BatchListMetricData metric; ``dims`` as ListMetrics gives them or as (name, value) pairs."""
    pairs = [(d["name"], d["value"]) if isinstance(d, dict) else d for d in dims]
    return {"namespace": fc.CES_NAMESPACE, "metric_name": name,
            "dimensions": [{"name": n, "value": v} for n, v in pairs]}


def batch(client: Client, metrics: list[dict[str, Any]], start: int, end: int, *, period: str = "3600",
          how: str = "sum", **kwargs: Any) -> requests.Response:
    body = {"metrics": metrics, "from": start, "to": end, "period": period, "filter": how}
    return client.send("POST", DATA_PATH, body=json.dumps(body).encode(), **kwargs)


def summed(answer: dict[str, Any], how: str = "sum") -> dict[tuple[str, tuple[tuple[str, str], ...]], Decimal]:
    """Each answered series' datapoints added up, by (metric, dimensions)."""
    return {(m["metric_name"], tuple((d["name"], d["value"]) for d in m["dimensions"])):
            sum((p[how] for p in m["datapoints"]), Decimal(0)) for m in answer["metrics"]}


def instances(client: Client, dims: tuple[str, ...], **body: Any) -> requests.Response:
    payload = {"namespace": fc.CES_NAMESPACE, "start": 0, "limit": 100,
               "query": [{"dim_name": name} for name in dims], **body}
    return client.send("POST", INSTANCES_PATH, body=json.dumps(payload).encode())


def statistics_of_types_1_and_2(cloud: fc.FakeCloud, start: int, end: int,
                                api_keys: list[str] | None = None) -> dict[str, Decimal]:
    """ShowStatistics (real time, types 1 + 2) in Cloud Eye's units: tokens, not thousands."""
    parts = [cloud.expected_usage(start, end, t, "real_time", api_keys) for t in (1, 2)]
    total = {key: sum((Decimal(p[key]) for p in parts), Decimal(0)) for key in fc.RESPONSE_KEYS}
    return {**{name: total[key] * 1000 for name, key in STATISTICS_TOKENS.items()},
            "rpm": total["total_request_count"], "errors": total["total_error_count"]}


def cloud_eye_totals(sums: dict[tuple[str, Any], Decimal], series: set[Any]) -> dict[str, Decimal]:
    """The metrics of these series added up, with req_count_4xx + req_count_5xx as errors."""
    totals = {name: sum((v for (m, dims), v in sums.items() if m == name and dims in series), Decimal(0))
              for name in (*TOKENS, "rpm", "req_count_4xx", "req_count_5xx")}
    totals["errors"] = totals.pop("req_count_4xx") + totals.pop("req_count_5xx")
    return totals


# ---------------------------------------------------------------------------
# events: a model and an API key for every call Cloud Eye counts
# ---------------------------------------------------------------------------


def test_preset_and_my_service_calls_have_a_model_and_a_key_and_custom_endpoints_none() -> None:
    counted = [e for e in HOURLY if fc.cloud_eye_identity(e) is not None]
    assert {(e.service_type, e.infer_type) for e in counted} == {(1, "real_time"), (2, "real_time")}
    for e in counted:
        model_id, model_name, key_id, key_name = fc.cloud_eye_identity(e)
        assert (model_id, model_name) in fc.CES_MODELS[e.service_type]
        assert key_id == fc.ces_key_id(e.api_key) and key_name == e.api_key
    assert all(e.model_id == "" for e in HOURLY if e.service_type == 4)
    # every model of each type takes calls, and the choice is the same on every run
    assert {e.model_id for e in counted} == {m for models in fc.CES_MODELS.values() for m, _ in models}
    assert fc.hourly_events(HOURLY_START, HOURLY_START + DAY) == HOURLY[:len(fc.hourly_events(
        HOURLY_START, HOURLY_START + DAY))]


def test_an_event_without_a_model_gets_its_types_first_model_and_its_labels_key() -> None:
    event = fc.Event(HOURLY_START, 1, "real_time", "key-x", "192.0.2.1", 3, 1, Decimal("1.5"), Decimal("1"),
                     Decimal("0.5"))
    assert fc.cloud_eye_identity(event) == (*fc.CES_MODELS[1][0], fc.ces_key_id("key-x"), "key-x")
    assert fc.cloud_eye_identity(fc.Event(HOURLY_START, 2, "batch", "k", "192.0.2.1")) is None


# ---------------------------------------------------------------------------
# reconciliation with ShowStatistics
# ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(hours=st.lists(st.integers(0, 20 * 24), min_size=2, max_size=5, unique=True))
def test_hourly_sums_per_model_over_any_split_equal_show_statistics_of_types_1_and_2(hours: list[int]) -> None:
    """Pieces of whole hours, each asked within Cloud Eye's caps, add up to ShowStatistics."""
    cuts = [HOURLY_START + h * HOUR for h in sorted(hours)]
    index = HOURLY_INDEX.cloud_eye
    models = [dims for dims in index.series if len(dims) == 1]
    asked = [metric(m, dims) for m in fc.CES_METRIC_NAMES for dims in models]
    sums: dict[tuple[str, Any], Decimal] = {}
    for lo, hi in zip(cuts, cuts[1:]):
        for start in range(lo, hi, 10 * DAY):  # at most 10 days a call, as the hourly period allows ...
            for i in range(0, len(asked), 12):  # ... and 12 series × 240 hours ≤ 3,000 datapoints
                q = fc.parse_batch_query({"metrics": asked[i:i + 12], "from": start, "to": min(start + 10 * DAY, hi),
                                          "period": "3600", "filter": "sum"})
                assert fc.ces_window(q)[0] == start
                for key, value in summed(fc.ces_batch_answer(index, q, fc.CloudEyeSettings(), 0)).items():
                    sums[key] = sums.get(key, Decimal(0)) + value
    expected = fc.cloud_eye_usage(HOURLY, cuts[0], cuts[-1])
    assert cloud_eye_totals(sums, set(models)) == statistics_of_types_1_and_2(UNSTARTED, cuts[0], cuts[-1])
    assert {m: sum((v for (name, _), v in sums.items() if name == m), Decimal(0)) for m in fc.CES_METRIC_NAMES} \
        == expected


def test_over_https_models_and_keys_reconcile_with_show_statistics(client: Client) -> None:
    """The whole path a client takes: list, query in calls within the caps, add up."""
    cloud = client.cloud
    start, end = HOURLY_START + 2 * DAY + 5 * HOUR, HOURLY_START + 17 * DAY + 19 * HOUR  # 15 days 14 hours
    listed = all_listed(client)
    wanted = [e for e in listed if e["metric_name"] in (*TOKENS, "rpm", "req_count_4xx", "req_count_5xx")]
    by_model = [e for e in wanted if len(e["dimensions"]) == 1]
    by_key = [e for e in wanted if len(e["dimensions"]) == 2]
    assert len(by_model) == 6 * 5 and len(by_key) == 6 * 15  # 5 models; 15 (model, key) pairs
    sums: dict[tuple[str, Any], Decimal] = {}
    for group in (by_model, by_key):
        per_call = max(1, fc.CES_MAX_DATAPOINTS // 240)  # 12 series × 10 days of hours = 2,880 datapoints
        for i in range(0, len(group), per_call):
            for lo in range(start, end, 10 * DAY):
                response = batch(client, [metric(e["metric_name"], e["dimensions"]) for e in group[i:i + per_call]],
                                 lo, min(lo + 10 * DAY, end))
                assert response.status_code == 200, response.text
                for key, value in summed(decimal_json(response)).items():
                    sums[key] = sums.get(key, Decimal(0)) + value
    statistics = statistics_of_types_1_and_2(cloud, start, end)
    model_series = {tuple((d["name"], d["value"]) for d in e["dimensions"]) for e in by_model}
    key_series = {tuple((d["name"], d["value"]) for d in e["dimensions"]) for e in by_key}
    assert cloud_eye_totals(sums, model_series) == statistics
    assert cloud_eye_totals(sums, key_series) == statistics
    for label in fc.HOURLY_API_KEYS:  # one key over all models is ShowStatistics' label filter
        series = {s for s in key_series if s[1] == (fc.CES_KEY_DIM, fc.ces_key_id(label))}
        assert cloud_eye_totals(sums, series) == statistics_of_types_1_and_2(cloud, start, end, [label])
    assert all(entry.ces_from is not None for entry in cloud.requests_of("ces_data"))


def test_datapoints_are_hourly_sums_stamped_at_the_hours_start_as_two_decimal_doubles(client: Client) -> None:
    model_id, _ = fc.CES_MODELS[2][0]
    response = batch(client, [metric("total_tokens", [(fc.CES_MODEL_DIM, model_id)])], HOURLY_START,
                     HOURLY_START + DAY)
    answer = response.json()["metrics"][0]
    assert set(answer) == {"namespace", "metric_name", "dimensions", "datapoints", "unit"}
    points = answer["datapoints"]
    assert points and all(set(p) == {"sum", "timestamp"} and p["timestamp"] % HOUR == 0 for p in points)
    assert [p["timestamp"] for p in points] == sorted(p["timestamp"] for p in points)
    assert all(HOURLY_START <= p["timestamp"] < HOURLY_START + DAY for p in points)
    assert '.0, "timestamp"' in response.text  # written as a double is: 1234.0
    for p in points:
        hour = fc.cloud_eye_usage(HOURLY, p["timestamp"], p["timestamp"] + HOUR, model_id=model_id)
        assert Decimal(str(p["sum"])) == hour["total_tokens"]


def test_averages_round_half_up_to_two_decimals() -> None:
    events = [fc.Event(HOURLY_START + minute * 60_000, 2, "real_time", "k", "192.0.2.1", requests)
              for minute, requests in ((0, 1), (1, 1), (2, 2))]
    index = fc.build_index(events).cloud_eye
    dims = ((fc.CES_MODEL_DIM, fc.CES_MODELS[2][0][0]),)
    rows = {how: index.datapoints(dims, "rpm", HOURLY_START, HOURLY_START + HOUR, HOUR, how)
            for how in fc.CES_FILTERS}
    assert rows == {"sum": [(HOURLY_START, Decimal("4.0"))], "average": [(HOURLY_START, Decimal("1.33"))],
                    "max": [(HOURLY_START, Decimal("2.0"))], "min": [(HOURLY_START, Decimal("1.0"))],
                    "variance": [(HOURLY_START, Decimal("0.22"))]}
    assert fc._ces_number(Decimal("0.125")) == Decimal("0.13")


# ---------------------------------------------------------------------------
# BatchListMetricData: the caps move `from` forward, silently
# ---------------------------------------------------------------------------


MODEL_SERIES = [d for d in HOURLY_INDEX.cloud_eye.series if len(d) == 1]


def model_series(count: int) -> list[dict[str, Any]]:
    """``count`` metrics of the model services, all metrics of the first model first."""
    return [metric(name, d) for d in MODEL_SERIES for name in fc.CES_METRIC_NAMES][:count]


def hours_with_calls(dims: Any, start: int, end: int) -> list[int]:
    """The starts of the hours in [start, end) in which the series had calls (Cloud Eye has a
    datapoint for those only)."""
    wanted = dict(dims)
    return sorted({e.at_ms - e.at_ms % HOUR for e in HOURLY if start <= e.at_ms < end
                   and (identity := fc.cloud_eye_identity(e)) is not None and identity[0] == wanted[fc.CES_MODEL_DIM]
                   and wanted.get(fc.CES_KEY_DIM, identity[2]) == identity[2]})


def stamps(response: requests.Response, i: int = 0) -> list[int]:
    assert response.status_code == 200, response.text
    return [p["timestamp"] for p in response.json()["metrics"][i]["datapoints"]]


def test_more_than_ten_days_of_hours_loses_the_oldest_silently(client: Client) -> None:
    end = HOURLY_START + 15 * DAY
    assert stamps(batch(client, model_series(1), HOURLY_START, end)) == hours_with_calls(
        MODEL_SERIES[0], end - 10 * DAY, end)
    assert client.cloud.log[-1].ces_from == end - 10 * DAY


def test_more_than_three_thousand_datapoints_loses_the_oldest_silently(client: Client) -> None:
    end = HOURLY_START + 15 * DAY
    response = batch(client, model_series(13), end - 240 * HOUR, end)  # 13 × 240 = 3,120 datapoints
    moved = end - 230 * HOUR  # 3000 / 13 = 230.8 hours, rounded to whole hours after the move
    assert client.cloud.log[-1].ces_from == moved
    assert stamps(response) == hours_with_calls(MODEL_SERIES[0], moved, end)
    assert sum(len(m["datapoints"]) for m in response.json()["metrics"]) <= fc.CES_MAX_DATAPOINTS
    within = batch(client, model_series(12), end - 240 * HOUR, end)  # 12 × 240 = 2,880: all there
    assert client.cloud.log[-1].ces_from == end - 240 * HOUR
    assert stamps(within) == hours_with_calls(MODEL_SERIES[0], end - 240 * HOUR, end)


@pytest.mark.parametrize("period, span", [("1", 4 * HOUR), ("300", DAY), ("1200", 3 * DAY), ("14400", 30 * DAY),
                                          ("86400", 180 * DAY)])
def test_each_period_has_its_longest_span(period: str, span: int) -> None:
    end = HOURLY_START + 400 * DAY
    q = fc.parse_batch_query({"metrics": [metric("rpm", [("maas_api_id", "x")])], "from": end - span - DAY,
                              "to": end, "period": period, "filter": "sum"})
    assert fc.ces_window(q) == (end - span, end)


def test_from_is_rounded_down_to_the_period_and_the_hour_of_to_is_not_answered(client: Client) -> None:
    start, end = HOURLY_START + 10 * HOUR + 30 * 60_000, HOURLY_START + 40 * HOUR
    expected = hours_with_calls(MODEL_SERIES[0], HOURLY_START + 10 * HOUR, end)
    assert expected[0] == HOURLY_START + 10 * HOUR and expected[-1] < end
    assert stamps(batch(client, model_series(1), start, end)) == expected
    assert client.cloud.log[-1].ces_from == HOURLY_START + 10 * HOUR
    client.cloud.ces.to_inclusive = True
    assert stamps(batch(client, model_series(1), start, end)) == hours_with_calls(
        MODEL_SERIES[0], HOURLY_START + 10 * HOUR, end + HOUR)


def test_retention_keeps_hourly_sums_for_155_days(client: Client) -> None:
    cloud = client.cloud
    now_ms = int(time.time() * 1000) // HOUR * HOUR
    cloud.events = fc.hourly_events(now_ms - 166 * DAY, now_ms - 150 * DAY)
    cloud.ces.retention = True
    assert stamps(batch(client, model_series(1), now_ms - 165 * DAY, now_ms - 158 * DAY)) == []
    cutoff = time.time() * 1000 - 155 * DAY  # the server's is a moment later
    edge = stamps(batch(client, model_series(1), now_ms - 160 * DAY, now_ms - 150 * DAY))
    assert edge and cutoff <= edge[0] < cutoff + 6 * HOUR
    cloud.ces.retention = False
    assert stamps(batch(client, model_series(1), now_ms - 165 * DAY, now_ms - 158 * DAY))


def test_series_and_metrics_cloud_eye_does_not_have_answer_no_datapoints(client: Client) -> None:
    model_id = fc.CES_MODELS[2][0][0]
    asked = [metric("rpm", [(fc.CES_KEY_DIM, fc.ces_key_id("key-alpha"))]),  # no key-only series
             metric("rpm", [(fc.CES_MODEL_DIM, "0" * 32)]), metric("ttft_avg", [(fc.CES_MODEL_DIM, model_id)]),
             {**metric("rpm", [(fc.CES_MODEL_DIM, model_id)]), "namespace": "SYS.ECS"},
             metric("rpm", [(fc.CES_KEY_DIM, fc.ces_key_id("key-alpha")), (fc.CES_MODEL_DIM, model_id)])]
    answer = batch(client, asked, HOURLY_START, HOURLY_START + DAY).json()["metrics"]
    assert [bool(m["datapoints"]) for m in answer] == [False, False, False, False, True]
    assert answer[-1]["dimensions"] == asked[-1]["dimensions"]  # echoed as asked


@pytest.mark.parametrize("change, fragment", [
    ({"metrics": []}, "1 to 500 metrics, got 0"),
    ({"period": 3600}, "period must be one of"),
    ({"period": "7200"}, "period must be one of"),
    ({"filter": "p99"}, "filter must be one of"),
    ({"from": HOURLY_START + DAY}, "from must be less than to"),
    ({"from": 1000}, "from must be an epoch time in ms"),
    ({"from": float(HOURLY_START)}, "from must be an integer"),
    ({"to": None}, "missing required field: to"),
])
def test_invalid_batch_queries_are_a_400_in_cloud_eyes_v1_shape(client: Client, change: dict[str, Any],
                                                                fragment: str) -> None:
    body = {"metrics": model_series(1), "from": HOURLY_START, "to": HOURLY_START + DAY, "period": "3600",
            "filter": "sum", **change}
    response = client.send("POST", DATA_PATH, body=fc.render_json(body).encode())
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["http_code"] == "400" and error["message"]["code"] == "ces.0014"
    assert fragment in error["message"]["details"]


def test_more_than_500_metrics_is_a_400(client: Client) -> None:
    many = [metric("rpm", [(fc.CES_MODEL_DIM, f"{i:032x}")]) for i in range(501)]
    response = batch(client, many, HOURLY_START, HOURLY_START + HOUR)
    assert response.status_code == 400 and "1 to 500 metrics, got 501" in response.json()["message"]["details"]
    assert batch(client, many[:500], HOURLY_START, HOURLY_START + HOUR).status_code == 200


# ---------------------------------------------------------------------------
# ListMetrics
# ---------------------------------------------------------------------------


def test_list_metrics_names_every_metric_of_every_series_with_units(client: Client) -> None:
    listed = all_listed(client)
    assert {e["metric_name"] for e in listed} == set(fc.CES_METRIC_NAMES)
    assert {len(e["dimensions"]) for e in listed} == {1, 2}
    assert all(e["namespace"] == fc.CES_NAMESPACE and e["unit"] for e in listed)
    assert len(listed) == len(fc.CES_METRIC_NAMES) * (5 + 15)
    names = [[d["name"] for d in e["dimensions"]] for e in listed]
    assert all(n in (["maas_api_id"], ["maas_api_id", "maas_key_id"]) for n in names)
    assert all_listed(client, namespace="SYS.ECS") == []
    only = all_listed(client, metric_name="rpm", **{"dim.0": f"maas_key_id,{fc.ces_key_id('key-beta')}"})
    assert len(only) == 5 and all(e["metric_name"] == "rpm" for e in only)


def test_list_metrics_pages_with_the_marker_of_the_last_entry(client: Client) -> None:
    first = list_metrics(client, limit="7").json()
    assert first["meta_data"]["count"] == 7 and first["meta_data"]["total"] == 140
    marker = first["meta_data"]["marker"]
    entry = first["metrics"][-1]
    assert marker == "SYS.MaaS.{}.{}".format(entry["metric_name"],
                                             ",".join(f"{d['name']}:{d['value']}" for d in entry["dimensions"]))
    assert all_listed(client, limit="7") == all_listed(client)
    assert all_listed(client, order="desc") == all_listed(client)[::-1]


def test_list_metrics_paging_can_be_forced_small(client: Client) -> None:
    client.cloud.ces.page_limit = 3
    page = list_metrics(client).json()  # asks for 1000
    assert page["meta_data"]["count"] == 3 and page["meta_data"]["total"] == 140
    client.cloud.clear_log()
    assert len(all_listed(client)) == 140
    assert len([e for e in client.cloud.log if e.kind == "ces_metrics"]) == -(-140 // 3) + 1


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"order": "up"},
                                    {"dim.0": "maas_api_id"}, {"namespace": "MaaS"}])
def test_invalid_list_parameters_are_a_400(client: Client, params: dict[str, str]) -> None:
    response = list_metrics(client, **params)
    assert response.status_code == 400 and response.json()["message"]["code"] == "ces.0013"


def test_idle_or_unlisted_series_drop_out_of_the_list_but_keep_their_data(client: Client) -> None:
    cloud = client.cloud
    now_ms = int(time.time() * 1000) // HOUR * HOUR
    events = fc.hourly_events(now_ms - 3 * DAY, now_ms)
    quiet = fc.ces_key_id("key-beta")
    cloud.events = [e for e in events if e.at_ms < now_ms - DAY or e.api_key != "key-beta"]  # idle for a day
    cloud.ces.idle_hours = 6
    listed = {tuple(d["value"] for d in e["dimensions"]) for e in all_listed(client)}
    assert listed and not any(quiet in values for values in listed)
    assert len({values for values in listed if len(values) == 1}) == 5  # the models still have calls
    pair = [(fc.CES_MODEL_DIM, fc.CES_MODELS[2][0][0]), (fc.CES_KEY_DIM, quiet)]
    assert batch(client, [metric("rpm", pair)], now_ms - 3 * DAY, now_ms).json()["metrics"][0]["datapoints"]
    cloud.ces.idle_hours = None
    cloud.ces.unlisted = {fc.CES_MODELS[1][1][0]}
    listed = {tuple(d["value"] for d in e["dimensions"]) for e in all_listed(client)}
    assert quiet in {v for values in listed for v in values}
    assert not any(values[0] == fc.CES_MODELS[1][1][0] for values in listed)


def test_retention_lists_no_series_without_a_call_in_155_days(client: Client) -> None:
    cloud = client.cloud
    cloud.events = fc.SEED_EVENTS
    newest = max(e.at_ms for e in fc.SEED_EVENTS if fc.cloud_eye_identity(e) is not None)
    cloud.ces.retention = True
    cloud.clock_skew_limit = float("inf")
    cloud.server_time_offset = (newest + 154 * DAY) / 1000 - time.time()
    assert {e["dimensions"][0]["value"] for e in all_listed(client)} == {fc.CES_MODELS[2][0][0]}
    cloud.server_time_offset = (newest + 156 * DAY) / 1000 - time.time()
    assert all_listed(client) == []


def test_a_metric_cloud_eye_lacks_is_neither_listed_nor_answered(client: Client) -> None:
    client.cloud.ces.missing_metrics = {"req_count_5xx"}
    assert "req_count_5xx" not in {e["metric_name"] for e in all_listed(client)}
    pair = next(d for d in HOURLY_INDEX.cloud_eye.series if len(d) == 2)
    answer = batch(client, [metric("req_count_5xx", pair), metric("rpm", pair)], HOURLY_START,
                   HOURLY_START + DAY).json()["metrics"]
    assert answer[0]["datapoints"] == [] and answer[1]["datapoints"]


# ---------------------------------------------------------------------------
# the MaaS monitor's instances: names of models and keys
# ---------------------------------------------------------------------------


def test_instances_name_every_model_and_every_model_and_key(client: Client) -> None:
    models = instances(client, ("maas_api_id",)).json()
    assert models["total"] == 5 and set(models["instances"][0]) == {"maas_api_id"}
    assert {(i["maas_api_id"]["id"], i["maas_api_id"]["name"]) for i in models["instances"]} == {
        m for ms in fc.CES_MODELS.values() for m in ms}
    pairs = instances(client, ("maas_api_id", "maas_key_id")).json()
    assert pairs["total"] == 15
    got = {(i["maas_api_id"]["id"], i["maas_key_id"]["id"]): (i["maas_api_id"]["name"], i["maas_key_id"]["name"])
           for i in pairs["instances"]}
    assert got == client.cloud.cloud_eye_instances()


def test_instances_page_by_start_and_at_most_100_a_page(client: Client) -> None:
    cloud = client.cloud
    cloud.events = [fc.Event(HOURLY_START + i, 2, "real_time", f"key-{i:03d}", "192.0.2.1", 1) for i in range(150)]
    pages = [instances(client, ("maas_api_id", "maas_key_id"), start=start, limit=1000).json()
             for start in (0, 100, 200)]
    assert [len(p["instances"]) for p in pages] == [100, 50, 0] and {p["total"] for p in pages} == {150}
    body = json.dumps({"namespace": fc.CES_NAMESPACE, "query": [{"dim_name": "maas_api_id"}]}).encode()
    assert client.send("POST", INSTANCES_PATH, body=body).json()["total"] == 1  # no start, no limit: 0 and 100


def test_nameless_ids_are_left_out_of_the_instances(client: Client) -> None:
    gone = fc.CES_MODELS[1][0][0]
    client.cloud.ces.nameless = {gone}
    answer = instances(client, ("maas_api_id", "maas_key_id")).json()
    assert answer["total"] == 12 and all(i["maas_api_id"]["id"] != gone for i in answer["instances"])


@pytest.mark.parametrize("body", [{"query": [{"dim_name": "maas_key_id"}]}, {"limit": 0}, {"start": -1},
                                  {"namespace": None}])
def test_invalid_instances_requests_are_a_400(client: Client, body: dict[str, Any]) -> None:
    response = instances(client, ("maas_api_id",), **body)
    assert response.status_code == 400 and response.json()["error_code"] == "ModelArts.4101"


# ---------------------------------------------------------------------------
# signatures, permissions and faults
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["list", "data", "instances"])
def test_every_call_checks_the_signature(client: Client, call: str) -> None:
    send = {"list": lambda **kw: client.send("GET", METRICS_PATH, query=[("namespace", fc.CES_NAMESPACE)], **kw),
            "data": lambda **kw: batch(client, model_series(1), HOURLY_START, HOURLY_START + HOUR, **kw),
            "instances": lambda **kw: client.send("POST", INSTANCES_PATH, body=b"{}", **kw)}[call]
    assert_apigw_401(send(sk=fc.DEMO_SK + "x"))
    assert send(ak=fc.TEMP_AK, sk=fc.TEMP_SK, token=fc.TEMP_TOKEN).status_code in (200, 400)


def test_missing_permissions_are_a_403_in_cloud_eyes_v1_shape(client: Client) -> None:
    cloud = client.cloud
    cloud.denied.add(fc.CES_METRICS_ACTION)
    response = list_metrics(client)
    assert response.status_code == 403
    assert response.json() == {"http_code": "403", "message": {
        "details": "Policy doesn't allow [ces:metrics:list] to be performed", "code": "403"}}
    assert batch(client, model_series(1), HOURLY_START, HOURLY_START + HOUR).status_code == 200
    cloud.denied = {fc.CES_DATA_ACTION}
    assert batch(client, model_series(1), HOURLY_START, HOURLY_START + HOUR).status_code == 403
    assert list_metrics(client).status_code == 200


def test_an_unknown_project_is_a_400_from_cloud_eye_and_a_404_from_the_monitor(client: Client) -> None:
    other = "0123456789abcdef0123456789abcdef"
    response = client.send("GET", f"/V1.0/{other}/metrics", query=[("namespace", fc.CES_NAMESPACE)])
    assert response.status_code == 400 and response.json()["message"]["code"] == "ces.0003"
    response = client.send("POST", f"/v1/{other}/maas/monitor/instances", body=b"{}")
    assert response.status_code == 404 and response.json()["error_code"] == "ModelArts.4104"


def test_fault_401_429_and_5xx_from_cloud_eye(client: Client) -> None:
    cloud = client.cloud
    cloud.add_fault("status", path="ces", status=401)
    cloud.add_fault("status", path="ces", status=429, retry_after="3")
    cloud.add_fault("status", path="ces_data", status=500)
    cloud.add_fault("status", path="ces_metrics", status=503)
    assert_apigw_401(list_metrics(client))
    throttled = batch(client, model_series(1), HOURLY_START, HOURLY_START + HOUR)
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "3"
    assert throttled.json()["error_code"] == "APIGW.0308"  # API Gateway throttles, in its own shape
    failed = list_metrics(client)  # the 500 waits for a data call
    assert failed.status_code == 503 and failed.json()["error_code"] == "APIGW.0201"
    failed = batch(client, model_series(1), HOURLY_START, HOURLY_START + HOUR)
    assert failed.status_code == 500 and failed.json() == {
        "http_code": "500", "message": {"details": "Internal service error.", "code": "ces.0007"}}
    assert list_metrics(client).status_code == 200 and cloud.pending_faults() == []
    assert [e.fault for e in cloud.ces_requests()] == ["status"] * 4 + [None]


def test_fault_403_from_cloud_eye(client: Client) -> None:
    client.cloud.add_fault("status", path="ces_metrics", status=403)
    response = list_metrics(client)
    assert response.status_code == 403 and response.json() == {"http_code": "403", "message": {
        "details": "Policy doesn't allow [ces:metrics:list] to be performed", "code": "403"}}


@pytest.mark.parametrize("fault, params", [("status", {"status": 500}), ("status", {"status": 404}),
                                           ("invalid_json", {}), ("json", {"body": {"instances": "none"}}),
                                           ("html", {"status": 502})])
def test_fault_the_instances_call_fails(client: Client, fault: str, params: dict[str, Any]) -> None:
    client.cloud.add_fault(fault, path="monitor", **params)
    response = instances(client, ("maas_api_id",))
    assert client.cloud.log[-1].fault == fault and client.cloud.log[-1].kind == "monitor"
    if fault == "status":
        assert response.status_code == params["status"] and "error_code" in response.json()
    elif fault == "json":
        assert response.json() == {"instances": "none"}
    else:
        with pytest.raises(ValueError):
            response.json()
    assert instances(client, ("maas_api_id",)).json()["total"] == 5  # once only
    assert list_metrics(client).status_code == 200


def test_cloud_eye_faults_do_not_touch_maas_and_maas_faults_do_not_touch_cloud_eye(client: Client) -> None:
    cloud = client.cloud
    cloud.add_fault("status", path="maas", status=500)
    assert list_metrics(client).status_code == 200
    cloud.add_fault("status", path="ces", status=500)
    body = {"service_type": 2, "start_time": HOURLY_START, "end_time": HOURLY_START + DAY, "infer_type": "real_time"}
    assert client.maas(body).status_code == 500  # the MaaS fault, still queued
    assert client.maas(body).status_code == 200
    assert list_metrics(client).status_code == 500


# ---------------------------------------------------------------------------
# standalone
# ---------------------------------------------------------------------------


def test_standalone_prints_the_cloud_eye_and_monitor_endpoints_and_keeps_155_days() -> None:
    with standalone() as (text, exports):
        assert exports["HW_CES_ENDPOINT"] == exports["HW_MAAS_MONITOR_ENDPOINT"] == exports["HW_MAAS_ENDPOINT"]
        assert "hourly sums kept 155 days" in text
        url = exports["HW_CES_ENDPOINT"] + METRICS_PATH + "?namespace=SYS.MaaS&limit=1000"
        response = requests.get(url, headers=fc.sign_request("GET", url), timeout=5,
                                verify=exports["REQUESTS_CA_BUNDLE"])
        assert response.status_code == 200
        if time.time() * 1000 > max(e.at_ms for e in fc.SEED_EVENTS) + 155 * DAY:  # today, the seed sample is
            assert response.json()["metrics"] == []
    with standalone("--no-retention") as (text, exports):
        assert "Cloud Eye SYS.MaaS: retention off" in text
        url = exports["HW_CES_ENDPOINT"] + METRICS_PATH + "?namespace=SYS.MaaS&limit=1000"
        response = requests.get(url, headers=fc.sign_request("GET", url), timeout=5,
                                verify=exports["REQUESTS_CA_BUNDLE"])
        assert response.json()["meta_data"]["total"] == len(fc.CES_METRIC_NAMES) * (4 + 5)


# ---------------------------------------------------------------------------
# the benchmarks' grid dataset
# ---------------------------------------------------------------------------


def test_grid_calls_every_model_with_every_key_in_every_hour_and_reconciles() -> None:
    start = HOURLY_START - HOURLY_START % HOUR
    events = fc.grid_events(start, start + 5 * HOUR, 3, 2)
    assert len(events) == 5 * 3 * 2
    index = fc.CloudEyeIndex(events)
    assert len(index.instances) == 3 * 2
    assert {name for name, _ in index.instances.values()} == {"grid-model-01", "grid-model-02", "grid-model-03"}
    for dims, (times, _) in index.series.items():  # a datapoint in every hour of every series
        assert sorted(set(times)) == list(range(start, start + 5 * HOUR, HOUR)), dims
    statistics = fc.expected_usage(events, start, start + 5 * HOUR, 2)
    assert fc.cloud_eye_usage(events, start, start + 5 * HOUR)["total_tokens"] == statistics["total_token"] * 1000
    assert fc.grid_events(start, start + 5 * HOUR, 3, 2) == events  # a pure function of the hours
    with pytest.raises(ValueError):
        fc.grid_events(start, start + HOUR, 0, 1)


def test_standalone_grid_dataset_lists_models_times_keys() -> None:
    with standalone("--dataset", "grid", "--grid", "2x3", "--hourly-days", "2") as (text, exports):
        assert "dataset: grid (" in text
        url = exports["HW_CES_ENDPOINT"] + METRICS_PATH + "?namespace=SYS.MaaS&limit=1000"
        response = requests.get(url, headers=fc.sign_request("GET", url), timeout=5,
                                verify=exports["REQUESTS_CA_BUNDLE"])
        assert response.json()["meta_data"]["total"] == len(fc.CES_METRIC_NAMES) * (2 + 2 * 3)


def test_large_answers_are_gzipped_only_for_a_client_that_accepts_it(client: Client) -> None:
    """As gateways commonly do (whether MaaS and Cloud Eye do is not documented): a ListMetrics page
    of 1 KiB or more comes gzipped to a client that accepts gzip, as is to one that does not."""
    client.session.headers["Accept-Encoding"] = "gzip"
    compressed = list_metrics(client)
    assert compressed.status_code == 200 and compressed.headers.get("Content-Encoding") == "gzip"
    client.session.headers["Accept-Encoding"] = "identity"
    plain = list_metrics(client)
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    assert compressed.json() == plain.json() and len(plain.content) >= fc.GZIP_FROM
