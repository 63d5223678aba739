"""Tests of the fake Huawei Cloud itself (tests/fakecloud.py).

Requests are signed here with huaweicloudsdkcore's Signer -- an independent
implementation -- so the fake's own verifier is cross-checked, never trusted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import fakecloud as fc  # noqa: E402

MAAS_PATH = f"/v1/{fc.DEMO_PROJECT_ID}/maas/monitoring/show-statistics"
SEED_BODY = {
    "service_type": 2,
    "start_time": fc.SEED_START_MS,
    "end_time": fc.SEED_END_MS,
    "infer_type": "real_time",
    "timezone": "Asia/Shanghai",
}
DAY_MS = 24 * fc.HOUR_MS


# ---------------------------------------------------------------------------
# helpers and fixtures
# ---------------------------------------------------------------------------


def sdk_date(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(timezone.utc) + offset).strftime("%Y%m%dT%H%M%SZ")


Mutator = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]


class Client:
    """Sends requests signed by the real SDK signer."""

    def __init__(self, cloud: fc.FakeCloud) -> None:
        self.cloud = cloud
        self.session = requests.Session()

    def send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        ak: str = fc.DEMO_AK,
        sk: str = fc.DEMO_SK,
        token: str | None = None,
        sign_host: str | None = None,
        date: str | None = None,
        mutate: Mutator | None = None,
        timeout: float = 5,
        **kwargs: Any,
    ) -> requests.Response:
        header_params = {"Content-Type": "application/json"}
        if token is not None:
            header_params["X-Security-Token"] = token
        if date is not None:
            header_params["X-Sdk-Date"] = date
        request = SdkRequest(
            method, "https", sign_host or urlsplit(self.cloud.url).netloc, path,
            query_params=list(query or []), header_params=header_params, body=body,
        )
        Signer(SimpleNamespace(ak=ak, sk=sk)).sign(request)
        headers, data = dict(request.header_params), request.body or b""
        if mutate is not None:
            headers, data = mutate(headers, data)
        # verify= per request: a REQUESTS_CA_BUNDLE in the environment would
        # override a Session-level setting.
        return self.session.request(method, self.cloud.url + request.uri, headers=headers, data=data,
                                    verify=self.cloud.ca_pem_path, timeout=timeout, **kwargs)

    def maas(self, body: Any, **kwargs: Any) -> requests.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.send("POST", kwargs.pop("path", MAAS_PATH), body=raw, **kwargs)

    def projects(self, name: str | None = None, **kwargs: Any) -> requests.Response:
        return self.send("GET", "/v3/projects", query=[("name", name)] if name is not None else [], **kwargs)


def decimal_json(response: requests.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


def assert_apigw_401(response: requests.Response) -> str:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error_code"] == "APIGW.0301"
    assert body["error_msg"].startswith("Incorrect IAM authentication information: ")
    assert body["request_id"] == response.headers["X-Request-Id"]
    for secret in (fc.DEMO_SK, fc.TEMP_SK, fc.TEMP_TOKEN):
        assert secret not in response.text
    return body["error_msg"]


def assert_maas_400(response: requests.Response, fragment: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "ModelArts.4101"
    assert fragment in body["error_msg"]


@pytest.fixture(scope="module")
def server() -> Iterator[fc.FakeCloud]:
    with fc.FakeCloud() as cloud:
        yield cloud


@pytest.fixture
def cloud(server: fc.FakeCloud) -> Iterator[fc.FakeCloud]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(cloud: fc.FakeCloud) -> Client:
    return Client(cloud)


# ---------------------------------------------------------------------------
# data model
# ---------------------------------------------------------------------------


def test_seed_expected_is_exact() -> None:
    got = fc.expected_usage(fc.SEED_EVENTS, fc.SEED_START_MS, fc.SEED_END_MS, 2)
    assert got == fc.SEED_EXPECTED
    assert list(got) == list(fc.RESPONSE_KEYS)
    assert got["total_token"] == Decimal("2482084.98")
    assert str(got["total_token"]) == "2482084.98"
    # the sample also has batch and other service types in the range
    batch = fc.expected_usage(fc.SEED_EVENTS, fc.SEED_START_MS, fc.SEED_END_MS, 2, "batch")
    assert batch["total_completion_tasks"] > 0 and batch["total_infer_count"] > 0
    for service_type in (1, 4):
        assert fc.expected_usage(fc.SEED_EVENTS, fc.SEED_START_MS, fc.SEED_END_MS, service_type)[
            "total_request_count"] > 0
    rt = [e for e in fc.SEED_EVENTS if e.service_type == 2 and e.infer_type == "real_time"
          and fc.SEED_START_MS <= e.at_ms < fc.SEED_END_MS]
    assert len(rt) >= 2 and len({e.at_ms // DAY_MS for e in rt}) == len(rt)
    assert {e.ip for e in rt} == {"192.0.2.10"}


@settings(max_examples=200, deadline=None)
@given(split=st.integers(fc.SEED_START_MS, fc.SEED_END_MS))
def test_seed_any_two_window_split_adds_up(split: int) -> None:
    a = fc.expected_usage(fc.SEED_EVENTS, fc.SEED_START_MS, split, 2)
    b = fc.expected_usage(fc.SEED_EVENTS, split, fc.SEED_END_MS, 2)
    assert {k: a[k] + b[k] for k in fc.RESPONSE_KEYS} == fc.SEED_EXPECTED


HOURLY_START = 1777593600000  # 2026-05-01T00:00Z
HOURLY_END = HOURLY_START + 20 * DAY_MS
HOURLY = fc.hourly_events(HOURLY_START, HOURLY_END)
HOURLY_INDEX = fc.build_index(HOURLY)


def brute_force(events: list[fc.Event], start: int, end: int, service_type: int, infer_type: str,
                api_keys: list[str] | None, ips: list[str] | None) -> dict[str, Any]:
    """A deliberately naive restatement of the ShowStatistics semantics."""
    picked = [e for e in events
              if start <= e.at_ms < end and e.service_type == service_type and e.infer_type == infer_type
              and (not api_keys or e.api_key in api_keys) and (not ips or e.ip in ips)]
    return {
        "total_request_count": sum(e.request_count for e in picked),
        "total_error_count": sum(e.error_count for e in picked),
        "total_token": sum((e.total_token for e in picked), Decimal(0)),
        "total_prompt_token": sum((e.prompt_token for e in picked), Decimal(0)),
        "total_completion_token": sum((e.completion_token for e in picked), Decimal(0)),
        "total_completion_tasks": sum(e.completion_tasks for e in picked),
        "total_infer_count": sum(e.infer_count for e in picked),
    }


@settings(max_examples=60, deadline=None)
@given(
    cuts=st.lists(st.integers(HOURLY_START - DAY_MS, HOURLY_END + DAY_MS), min_size=2, max_size=6),
    service_type=st.sampled_from([1, 2, 4]),
    infer_type=st.sampled_from(["real_time", "batch"]),
    api_keys=st.none() | st.lists(st.sampled_from(["key-alpha", "key-beta", "", "key-none"]), unique=True),
    ips=st.none() | st.lists(st.sampled_from(["192.0.2.10", "198.51.100.7", "203.0.113.1"]), unique=True),
)
def test_hourly_windows_are_additive(cuts: list[int], service_type: int, infer_type: str,
                                     api_keys: list[str] | None, ips: list[str] | None) -> None:
    cuts = sorted(cuts)
    parts = [fc.expected_usage(HOURLY_INDEX, lo, hi, service_type, infer_type, api_keys, ips)
             for lo, hi in zip(cuts, cuts[1:])]
    whole = fc.expected_usage(HOURLY_INDEX, cuts[0], cuts[-1], service_type, infer_type, api_keys, ips)
    assert {k: sum((p[k] for p in parts), 0) for k in fc.RESPONSE_KEYS} == whole
    assert whole == brute_force(HOURLY, cuts[0], cuts[-1], service_type, infer_type, api_keys, ips)


def test_hourly_events_shape() -> None:
    assert fc.hourly_events(HOURLY_START, HOURLY_END) == HOURLY  # deterministic
    assert len(HOURLY) == 20 * 24 * 3 * 2 * 3 * 2
    assert all(e.at_ms % fc.HOUR_MS == 0 and HOURLY_START <= e.at_ms < HOURLY_END for e in HOURLY)
    assert {(e.service_type, e.infer_type, e.api_key, e.ip) for e in HOURLY} == set(fc._HOURLY_COMBOS)
    assert all(0 <= e.error_count <= e.request_count for e in HOURLY)
    assert all(e.completion_tasks == e.infer_count == 0 for e in HOURLY if e.infer_type == "real_time")
    assert any(e.completion_tasks > 0 for e in HOURLY if e.infer_type == "batch")
    tokens = [t for e in HOURLY for t in (e.total_token, e.prompt_token, e.completion_token)]
    assert all(t.as_tuple().exponent == -3 for t in tokens)
    assert sum(1 for t in tokens if t.as_tuple().digits[-1] != 0) > 0.9 * len(tokens)
    assert len({e.request_count for e in HOURLY}) > 50 and len({e.prompt_token for e in HOURLY}) > 1000
    # a window starting mid-hour starts at the next boundary
    assert fc.hourly_events(HOURLY_START + 1, HOURLY_START + fc.HOUR_MS + 1)[0].at_ms == HOURLY_START + fc.HOUR_MS


def test_a_year_of_hourly_events_indexes_to_the_brute_force_sums() -> None:
    # Speed is the benchmark's business (tests/bench.py); here only the answers are checked.
    events = fc.hourly_events(HOURLY_START, HOURLY_START + 365 * DAY_MS)
    index = fc.build_index(events)
    assert len(index) == 365 * 24 * 36
    for day in (0, 97, 334):
        start, end = HOURLY_START + day * DAY_MS + 1234, HOURLY_START + (day + 30) * DAY_MS
        chosen = [e for e in events if start <= e.at_ms < end and e.service_type == 2 and e.infer_type == "real_time"]
        answer = index.query(start, end, 2)
        assert answer["total_request_count"] == sum(e.request_count for e in chosen)
        assert answer["total_token"] == sum((e.total_token for e in chosen), Decimal(0))


def test_render_json_keeps_decimals_exact() -> None:
    assert fc.render_json(Decimal("1E+3")) == "1000"
    assert fc.render_json(Decimal("0.001")) == "0.001"
    assert fc.render_json(Decimal("1E-7")) == "0.0000001"
    assert fc.render_json({"a": [1, True, None, "x\u00e9"], "b": Decimal("2456504.362")}) == (
        '{"a": [1, true, null, "x\u00e9"], "b": 2456504.362}')
    with pytest.raises(ValueError):
        fc.render_json(Decimal("NaN"))


# ---------------------------------------------------------------------------
# signing
# ---------------------------------------------------------------------------


def test_own_signer_matches_sdk_signer() -> None:
    date = "20260520T101112Z"
    netloc = "localhost:8443"
    path = "/v1/abc/some path/ünï~code"
    query = [("name", "cn south+west 2"), ("b", "ü/"), ("a", "2"), ("a", "1"), ("empty", "")]
    body = b'{"x": 1}'
    request = SdkRequest("POST", "https", netloc, path, query_params=list(query),
                         header_params={"Content-Type": "application/json", "X-Sdk-Date": date,
                                        "X-Security-Token": fc.TEMP_TOKEN}, body=body)
    Signer(SimpleNamespace(ak=fc.TEMP_AK, sk=fc.TEMP_SK)).sign(request)
    url = f"https://{netloc}{quote(path)}?{urlencode(query)}"
    ours = fc.sign_request("POST", url, {"Content-Type": "application/json"}, body, access_key=fc.TEMP_AK,
                           secret_key=fc.TEMP_SK, security_token=fc.TEMP_TOKEN, sdk_date=date)
    assert ours["Authorization"] == request.header_params["Authorization"]


def test_canonical_pieces() -> None:
    assert fc.canonical_uri("/v3/projects") == "/v3/projects/"
    assert fc.canonical_uri("/a%20b/c~d/") == "/a%20b/c~d/"
    assert fc.canonical_query_string("") == ""
    assert fc.canonical_query_string("b=2&a=%2B&a=+") == "a=%20&a=%2B&b=2"
    assert fc.canonical_request("get", "/x", "", {"host": "h", "x-sdk-date": " d "}, ["host", "x-sdk-date"],
                                b"") == ("GET\n/x/\n\nhost:h\nx-sdk-date:d\n\nhost;x-sdk-date\n"
                                         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_sdk_signed_requests_are_accepted(client: Client) -> None:
    assert client.projects("cn-southwest-2").status_code == 200
    assert client.maas(SEED_BODY).status_code == 200
    response = client.maas(SEED_BODY, ak=fc.TEMP_AK, sk=fc.TEMP_SK, token=fc.TEMP_TOKEN)
    assert response.status_code == 200, response.text
    # our own signer works against the server too
    url = client.cloud.url + "/v3/projects?name=cn-north-4"
    response = requests.get(url, headers=fc.sign_request("GET", url), verify=client.cloud.ca_pem_path, timeout=5)
    assert response.status_code == 200 and len(response.json()["projects"]) == 1


def _with_header(name: str, value: str | None) -> Mutator:
    def mutate(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
        headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
        return headers, body
    return mutate


def _tamper_body(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    return headers, body.replace(b'"service_type": 2', b'"service_type": 1')


def _edit_authorization(old: str, new: str) -> Mutator:
    def mutate(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
        return {**headers, "Authorization": headers["Authorization"].replace(old, new)}, body
    return mutate


REJECTIONS: dict[str, Callable[[Client], requests.Response]] = {
    "tampered body": lambda c: c.maas(SEED_BODY, mutate=_tamper_body),
    "wrong secret key": lambda c: c.maas(SEED_BODY, sk=fc.DEMO_SK + "x"),
    "unknown access key": lambda c: c.maas(SEED_BODY, ak="AKUNKNOWN"),
    "stale date": lambda c: c.maas(SEED_BODY, date=sdk_date(-timedelta(minutes=20))),
    "future date": lambda c: c.maas(SEED_BODY, date=sdk_date(timedelta(minutes=16))),
    "garbled date": lambda c: c.maas(SEED_BODY, mutate=_with_header("X-Sdk-Date", "2026-05-20 10:11:12")),
    "unsigned token": lambda c: c.maas(SEED_BODY, ak=fc.TEMP_AK, sk=fc.TEMP_SK,
                                       mutate=_with_header("X-Security-Token", fc.TEMP_TOKEN)),
    "missing token": lambda c: c.maas(SEED_BODY, ak=fc.TEMP_AK, sk=fc.TEMP_SK),
    "wrong token": lambda c: c.maas(SEED_BODY, ak=fc.TEMP_AK, sk=fc.TEMP_SK, token=fc.TEMP_TOKEN + "y"),
    "token with permanent key": lambda c: c.maas(SEED_BODY, token=fc.TEMP_TOKEN),
    # signs "localhost" but the HTTP library sends "localhost:<port>"
    "wrong host": lambda c: c.maas(SEED_BODY, sign_host="localhost", mutate=_with_header("Host", None)),
    "missing authorization": lambda c: c.maas(SEED_BODY, mutate=_with_header("Authorization", None)),
    "garbled authorization": lambda c: c.maas(SEED_BODY, mutate=_with_header("Authorization", "Basic Zm9v")),
    "date not signed": lambda c: c.maas(SEED_BODY, mutate=_edit_authorization(";x-sdk-date", "")),
    "signed header absent": lambda c: c.maas(SEED_BODY, mutate=_with_header("Content-Type", None)),
    "unsorted signed headers": lambda c: c.maas(
        SEED_BODY, mutate=_edit_authorization("content-type;host", "host;content-type")),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_bad_authentication_is_rejected(client: Client, case: str) -> None:
    assert_apigw_401(REJECTIONS[case](client))
    assert client.cloud.maas_requests()  # logged even though rejected
    assert client.cloud.log[-1].auth_error


def test_each_rejection_cause_has_its_own_message(client: Client) -> None:
    messages = {case: assert_apigw_401(send(client)) for case, send in REJECTIONS.items()}
    # The server cannot tell a tampered body from a wrong secret key.
    assert messages.pop("tampered body") == messages["wrong secret key"]
    assert "signature does not match" in messages["wrong secret key"]
    assert "computed for Host 'localhost'" in messages["wrong host"]
    assert len(set(messages.values())) == len(messages), messages


def test_server_clock_skew_is_simulated(client: Client) -> None:
    client.cloud.server_time_offset = 16 * 60
    assert "expired" in assert_apigw_401(client.maas(SEED_BODY))
    client.cloud.server_time_offset = 14 * 60
    assert client.maas(SEED_BODY).status_code == 200


def test_the_date_header_reads_the_server_clock(client: Client) -> None:
    from email.utils import parsedate_to_datetime

    client.cloud.server_time_offset = -20 * 60  # a client can measure the skew it is judged by
    served = parsedate_to_datetime(client.maas(SEED_BODY).headers["Date"])
    assert abs((served - datetime.now(timezone.utc)).total_seconds() + 20 * 60) < 5


# ---------------------------------------------------------------------------
# MaaS and IAM behaviour
# ---------------------------------------------------------------------------


def test_seed_answer_over_https(client: Client) -> None:
    response = client.maas(SEED_BODY)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert decimal_json(response) == fc.SEED_EXPECTED
    assert '"total_token": 2482084.98,' in response.text and "E" not in response.text
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    assert client.cloud.maas_requests() == [SEED_BODY]


def test_windows_over_https_add_up(client: Client) -> None:
    instants = sorted({e.at_ms for e in fc.SEED_EVENTS if fc.SEED_START_MS < e.at_ms < fc.SEED_END_MS})
    for split in [fc.SEED_START_MS + 1] + [t + d for t in instants for d in (0, 1)]:
        parts = [decimal_json(client.maas({**SEED_BODY, "start_time": lo, "end_time": hi}))
                 for lo, hi in ((fc.SEED_START_MS, split), (split, fc.SEED_END_MS))]
        assert {k: parts[0][k] + parts[1][k] for k in fc.RESPONSE_KEYS} == fc.SEED_EXPECTED


def test_filters_and_events_setter(client: Client) -> None:
    cloud = client.cloud
    cloud.events = HOURLY_INDEX
    try:
        for extra in ({"api_keys": ["key-beta"]}, {"api_keys": [""]}, {"ips": ["198.51.100.7"]},
                      {"api_keys": ["key-alpha", ""], "ips": ["192.0.2.10"]}, {"api_keys": []}):
            for infer_type in fc.INFER_TYPES:
                body = {"service_type": 4, "start_time": HOURLY_START + 3 * DAY_MS + 123,
                        "end_time": HOURLY_START + 9 * DAY_MS, "infer_type": infer_type, **extra}
                expected = cloud.expected_usage(body["start_time"], body["end_time"], 4, infer_type,
                                                extra.get("api_keys"), extra.get("ips"))
                assert expected["total_request_count"] > 0
                assert decimal_json(client.maas(body)) == expected
    finally:
        cloud.events = fc.SEED_EVENTS
    assert cloud.events is fc.SEED_EVENTS


def test_retention_counts_no_event_older_than_thirty_days_before_the_clock(client: Client) -> None:
    cloud = client.cloud
    assert cloud.retention_days is None  # the suite's default: fixed historical dates keep their data
    cloud.events = HOURLY_INDEX
    cloud.retention_days = 30
    # The server clock half an hour past HOURLY_START + 35 days (signatures accepted from today):
    # HOURLY_START + 5 days + 30 min is the oldest instant counted, and the next event is at + 1 h.
    cloud.server_time_offset = (HOURLY_START + 35 * DAY_MS + 1_800_000) / 1000 - time.time()
    cloud.clock_skew_limit = float("inf")
    first_counted = HOURLY_START + 5 * DAY_MS + fc.HOUR_MS

    def answer(start: int, end: int) -> dict[str, Any]:
        body = {"service_type": 2, "start_time": start, "end_time": end, "infer_type": "real_time"}
        return decimal_json(client.maas(body))

    try:
        assert answer(HOURLY_START, HOURLY_START + 5 * DAY_MS) == dict.fromkeys(fc.RESPONSE_KEYS, 0)
        straddling = answer(HOURLY_START + 2 * DAY_MS, HOURLY_START + 10 * DAY_MS)
        assert straddling == HOURLY_INDEX.query(first_counted, HOURLY_START + 10 * DAY_MS, 2)
        assert straddling == cloud.expected_usage(HOURLY_START + 2 * DAY_MS, HOURLY_START + 10 * DAY_MS, 2)
        assert straddling != HOURLY_INDEX.query(HOURLY_START + 2 * DAY_MS, HOURLY_START + 10 * DAY_MS, 2)
        recent = (HOURLY_START + 10 * DAY_MS, HOURLY_START + 12 * DAY_MS)
        assert answer(*recent) == HOURLY_INDEX.query(*recent, 2)
        cloud.retention_days = None
        assert answer(HOURLY_START, HOURLY_START + 5 * DAY_MS) == HOURLY_INDEX.query(HOURLY_START,
                                                                                    HOURLY_START + 5 * DAY_MS, 2)
        cloud.retention_days = 30
    finally:
        cloud.reset()
        cloud.events = fc.SEED_EVENTS
    assert cloud.retention_days is None and cloud.server_time_offset == 0


@pytest.mark.parametrize("change, fragment", [
    ({"service_type": 3}, "service_type 3 is not supported"),
    ({"service_type": 5}, "service_type must be one of"),
    ({"service_type": True}, "service_type must be an integer"),
    ({"service_type": "2"}, "service_type must be an integer"),
    ({"start_time": 1778169600000.0}, "start_time must be an integer"),
    ({"end_time": fc.SEED_START_MS + 30 * DAY_MS + 1}, "must not exceed 30 days"),
    ({"end_time": fc.SEED_START_MS}, "end_time must be greater than start_time"),
    ({"infer_type": "realtime"}, "infer_type must be"),
    ({"timezone": "Mars/Olympus_Mons"}, "not a valid IANA time zone"),
    ({"timezone": "../../etc/passwd"}, "not a valid IANA time zone"),
    ({"api_keys": "key-alpha"}, "api_keys must be an array of strings"),
    ({"ips": [1]}, "ips must be an array of strings"),
    ({"region": "cn-southwest-2"}, "unknown field(s): region"),
    ({"infer_type": None}, "missing required field: infer_type"),
])
def test_invalid_parameters_are_rejected(client: Client, change: dict[str, Any], fragment: str) -> None:
    assert_maas_400(client.maas({**SEED_BODY, **change}), fragment)


def test_other_request_errors(client: Client) -> None:
    assert_maas_400(client.maas(b"{not json"), "must be a JSON object")
    assert client.maas({**SEED_BODY, "end_time": fc.SEED_START_MS + 30 * DAY_MS}).status_code == 200
    assert client.maas({k: v for k, v in SEED_BODY.items() if k != "timezone"}).status_code == 200
    response = client.maas(SEED_BODY, path="/v1/0123456789abcdef0123456789abcdef/maas/monitoring/show-statistics")
    assert response.status_code == 404 and response.json()["error_code"] == "ModelArts.4104"
    response = client.send("GET", MAAS_PATH)
    assert response.status_code == 404 and response.json()["error_code"] == "APIGW.0101"
    assert response.json()["request_id"] == response.headers["X-Request-Id"]


def test_iam_projects(client: Client) -> None:
    body = client.projects("cn-southwest-2").json()
    assert {p["name"] for p in body["projects"]} == {"cn-southwest-2", "cn-southwest-2_sub"}
    exact = [p for p in body["projects"] if p["name"] == "cn-southwest-2"]
    assert exact[0]["id"] == fc.DEMO_PROJECT_ID and exact[0]["enabled"] is True
    assert all(re.fullmatch(r"[0-9a-f]{32}", p["id"]) for p in body["projects"])
    assert "self" in body["links"]
    assert len(client.projects().json()["projects"]) == 3
    assert [p["name"] for p in client.projects("cn-north-4").json()["projects"]] == ["cn-north-4"]
    assert client.projects("cn-south-1").json()["projects"] == []


def test_denied_actions_and_fail_all(client: Client) -> None:
    cloud = client.cloud
    cloud.denied.add(fc.IAM_ACTION)
    response = client.projects("cn-southwest-2")
    assert response.status_code == 403
    assert response.json() == {"error_code": "IAM.0003",
                               "error_msg": "Policy doesn't allow iam:projects:get to be performed."}
    assert client.maas(SEED_BODY).status_code == 200
    cloud.denied.add(fc.MAAS_ACTION)
    response = client.maas(SEED_BODY)
    assert response.status_code == 403 and "modelarts:monitoring:get" in response.json()["error_msg"]
    cloud.denied.clear()
    cloud.fail_all = True
    assert client.maas(SEED_BODY).status_code == 500
    assert client.projects("cn-southwest-2").status_code == 200


# ---------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------


def test_fault_status_with_retry_after(client: Client) -> None:
    client.cloud.add_fault("status", status=429, retry_after="7")
    response = client.maas(SEED_BODY)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["error_code"] == "APIGW.0308"
    assert response.json()["request_id"] == response.headers["X-Request-Id"]
    assert client.maas(SEED_BODY).status_code == 200  # consumed
    assert [e.status for e in client.cloud.log] == [429, 200]
    assert client.cloud.log[0].fault == "status"


def test_fault_times_path_and_custom_body(client: Client) -> None:
    cloud = client.cloud
    cloud.add_fault("status", times=2, status=503, error_code="APIGW.0201", error_msg="busy")
    cloud.add_fault("status", path="iam", status=500, body="oops")
    assert client.projects("cn-north-4").text == "oops"
    assert client.maas(SEED_BODY).json()["error_msg"] == "busy"
    assert client.maas(SEED_BODY).status_code == 503
    assert client.maas(SEED_BODY).status_code == 200
    assert cloud.pending_faults() == []
    cloud.add_fault("json", path="any", body={"total_request_count": Decimal("1.50")})
    assert client.projects().text == '{"total_request_count": 1.50}'


def test_fault_reset(client: Client) -> None:
    client.cloud.add_fault("reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        client.maas(SEED_BODY)
    assert client.cloud.log[-1].status is None
    assert client.maas(SEED_BODY).status_code == 200


def test_fault_invalid_json_html_redirect(client: Client) -> None:
    cloud = client.cloud
    cloud.add_fault("invalid_json")
    response = client.maas(SEED_BODY)
    assert response.status_code == 200 and response.text == '{"total_request_count": 1,'
    with pytest.raises(ValueError):
        response.json()
    cloud.add_fault("html", status=502)
    response = client.maas(SEED_BODY)
    assert response.status_code == 502 and response.headers["Content-Type"] == "text/html"
    assert "<html>" in response.text
    cloud.add_fault("redirect", location="https://example.invalid/login")
    response = client.maas(SEED_BODY, allow_redirects=False)
    assert response.status_code == 302 and response.headers["Location"] == "https://example.invalid/login"
    assert all(re.fullmatch(r"[0-9a-f]{32}", e.request_id) for e in cloud.log)


def test_fault_hang_and_delay(client: Client) -> None:
    client.cloud.add_fault("hang", seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.maas(SEED_BODY, timeout=0.3)
    client.cloud.add_fault("delay", seconds=0.2)
    started = time.monotonic()
    assert Client(client.cloud).maas(SEED_BODY).status_code == 200
    assert time.monotonic() - started >= 0.2


# Hostile answers are read with plain http.client / ssl sockets: requests
# would inflate the gzip bomb and hide the framing.

def https_connection(cloud: fc.FakeCloud, timeout: float = 5) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=cloud.ca_pem_path)
    return http.client.HTTPSConnection("localhost", cloud.port, context=context, timeout=timeout)


def post_seed(conn: http.client.HTTPSConnection) -> http.client.HTTPResponse:
    conn.request("POST", MAAS_PATH, body=json.dumps(SEED_BODY), headers={"Content-Type": "application/json"})
    return conn.getresponse()


def raw_tls_post(cloud: fc.FakeCloud, timeout: float = 5) -> ssl.SSLSocket:
    """A TLS socket on which the SEED_BODY request has been sent."""
    context = ssl.create_default_context(cafile=cloud.ca_pem_path)
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", cloud.port), timeout=timeout),
                               server_hostname="localhost")
    body = json.dumps(SEED_BODY).encode()
    sock.sendall(f"POST {MAAS_PATH} HTTP/1.1\r\nHost: localhost:{cloud.port}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def recv_for(sock: ssl.SSLSocket, seconds: float) -> bytes:
    """Everything the server sends in the next ``seconds``."""
    data = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except socket.timeout:  # TimeoutError itself only from Python 3.10
            break
        if not piece:
            break
        data += piece
    return data


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def assert_threads_end(threads: list[threading.Thread], timeout: float = 2.0) -> None:
    assert threads, "no handler thread was seen"
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert [t.name for t in threads if t.is_alive()] == []


def test_fault_trickle_headers_never_finish_the_headers(cloud: fc.FakeCloud) -> None:
    cloud.add_fault("trickle_headers", interval=0.05)
    before = set(threading.enumerate())
    sock = raw_tls_post(cloud)
    try:
        data = recv_for(sock, 0.6)
        handlers = new_threads(before)
    finally:
        sock.close()
    status_line = b"HTTP/1.1 200 OK\r\n"
    assert data.startswith(status_line)
    trickled = len(data) - len(status_line)
    assert 3 <= trickled <= 20, data  # ~12 bytes at 20 per second, never a burst
    assert b"\r\n\r\n" not in data
    assert cloud.log[-1].fault == "trickle_headers" and cloud.log[-1].kind == "maas"
    assert_threads_end(handlers)  # the client hung up: the handler stops writing


def test_fault_trickle_body_completes_as_a_valid_answer(cloud: fc.FakeCloud) -> None:
    interval = 0.005  # ~200 bytes: about a second
    cloud.add_fault("trickle_body", interval=interval)
    conn = https_connection(cloud)
    try:
        started = time.monotonic()
        response = post_seed(conn)
        headers_after = time.monotonic() - started
        raw = response.read()
        body_after = time.monotonic() - started
    finally:
        conn.close()
    assert response.status == 200 and response.getheader("Content-Type") == fc._JSON_TYPE
    assert headers_after < 0.5  # the headers come at once, complete
    assert int(response.getheader("Content-Length")) == len(raw)
    assert body_after >= 0.5 * len(raw) * interval  # the body does not
    assert json.loads(raw, parse_float=Decimal) == fc.SEED_EXPECTED
    assert cloud.log[-1].fault == "trickle_body" and cloud.log[-1].status == 200


def test_fault_endless_chunked_never_ends_and_its_thread_ends_with_the_client(cloud: fc.FakeCloud) -> None:
    cloud.add_fault("endless_chunked")
    before = set(threading.enumerate())
    conn = https_connection(cloud)
    try:
        response = post_seed(conn)
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Type").startswith("application/json")
        first = response.read(65536)  # http.client decodes the chunk framing
        assert first.startswith(b'{"total_token": 1, "pad": "xxx')
        received = len(first)
        while received <= 6 * 1024 * 1024:
            piece = response.read(65536)
            assert piece == b"x" * len(piece) and piece
            received += len(piece)
        handlers = new_threads(before)
    finally:
        response.close()
        conn.close()
    assert cloud.log[-1].fault == "endless_chunked"
    assert_threads_end(handlers)


@pytest.mark.parametrize("size", [None, 4096])
def test_fault_oversized_is_valid_json_of_the_given_size(client: Client, size: int | None) -> None:
    client.cloud.add_fault("oversized", **({} if size is None else {"size": size}))
    response = client.maas(SEED_BODY)
    expected_size = 2 * 1024 * 1024 if size is None else size
    assert response.status_code == 200
    assert len(response.content) == int(response.headers["Content-Length"]) == expected_size
    body = decimal_json(response)
    assert {k: body[k] for k in fc.RESPONSE_KEYS} == fc.SEED_EXPECTED
    assert set(body["pad"]) == {"x"}
    assert client.cloud.log[-1].fault == "oversized"
    assert client.maas(SEED_BODY).status_code == 200  # consumed; the connection is still usable


def test_fault_gzip_bomb_is_small_and_inflates_to_the_given_size(cloud: fc.FakeCloud) -> None:
    inflated = 50_000_000
    cloud.add_fault("gzip_bomb", inflated=inflated)
    conn = https_connection(cloud)
    try:
        response = post_seed(conn)
        raw = response.read()  # http.client does not inflate
    finally:
        conn.close()
    assert response.status == 200 and response.getheader("Content-Encoding") == "gzip"
    assert response.getheader("Content-Type").startswith("application/json")
    assert len(raw) == int(response.getheader("Content-Length")) < 5_000_000
    # The default 2.5 GB scales the same way: still a few MB.
    assert len(raw) * (2_500_000_000 / inflated) < 5_000_000
    decompressor = zlib.decompressobj(31)
    total, tail, pending = 0, b"", raw
    while pending:
        out = decompressor.decompress(pending, 1 << 20)  # bounded: never all of it
        total += len(out)
        tail = (tail + out)[-4096:]
        pending = decompressor.unconsumed_tail
    assert decompressor.eof and decompressor.unused_data == b""
    assert total == inflated
    assert json.loads(tail) == {k: 0 for k in fc.RESPONSE_KEYS}  # spaces, then a JSON answer
    assert fc.gzip_bomb_body(inflated) == raw  # cached
    assert cloud.log[-1].fault == "gzip_bomb"


@pytest.mark.parametrize("encoding", fc.ECHO_SECRET_ENCODINGS)
def test_fault_echo_secret_echoes_the_signing_sk(client: Client, encoding: str) -> None:
    cloud = client.cloud
    cloud.add_fault("echo_secret", encoding=encoding)
    signed = client.maas(SEED_BODY, ak=fc.TEMP_AK, sk=fc.TEMP_SK, token=fc.TEMP_TOKEN)
    cloud.add_fault("echo_secret", encoding=encoding, status=500)
    unsigned = requests.post(cloud.url + MAAS_PATH, json=SEED_BODY, verify=cloud.ca_pem_path, timeout=5)
    assert [e.fault for e in cloud.log] == ["echo_secret", "echo_secret"]
    for response, sk, status in ((signed, fc.TEMP_SK, 400), (unsigned, fc.DEMO_SK, 500)):
        assert response.status_code == status
        body = json.loads(response.content)
        assert set(body) == {"error_code", "error_msg"} and body["error_code"] == "ModelArts.4101"
        msg = body["error_msg"]
        if encoding == "json_escaped":
            assert sk.encode() not in response.content
            assert "".join(f"\\u{ord(c):04x}" for c in sk).encode() in response.content.lower()
            assert sk in msg
        elif encoding == "url_encoded":
            assert sk not in msg and "".join(f"%{b:02X}" for b in sk.encode()) in msg
            assert sk in unquote(msg)
        else:
            assert 380 <= len(msg) <= 420 and sk not in msg
            assert msg[190:204] == sk[:14] and sk[:14] not in msg[:190] + msg[204:]


def test_stop_returns_promptly_during_trickle_and_endless_faults() -> None:
    cloud = fc.FakeCloud().start()
    sockets: list[Any] = []
    try:
        cloud.add_fault("trickle_headers", interval=0.05)
        cloud.add_fault("endless_chunked")
        cloud.add_fault("trickle_body", interval=0.05)
        before = set(threading.enumerate())
        trickle = raw_tls_post(cloud)
        sockets.append(trickle)
        assert recv_for(trickle, 0.3).startswith(b"HTTP/1.1 200 OK\r\n")
        endless = https_connection(cloud)
        sockets.append(endless)
        response = post_seed(endless)
        assert len(response.read(100_000)) == 100_000  # then stop reading: the server blocks in a write
        slow_body = raw_tls_post(cloud)
        sockets.append(slow_body)
        assert b"\r\n\r\n" in recv_for(slow_body, 0.3)
        handlers = new_threads(before)
        started = time.monotonic()
        cloud.stop()
        assert time.monotonic() - started < 2
        assert_threads_end(handlers)
    finally:
        cloud.stop()
        for sock in sockets:
            sock.close()


def test_add_fault_validates() -> None:
    cloud = fc.FakeCloud(tls=False)
    for kwargs in ({"kind": "boom"}, {"kind": "status"}, {"kind": "reset", "path": "s3"},
                   {"kind": "delay", "secs": 1}, {"kind": "reset", "times": 0},
                   {"kind": "echo_secret"}, {"kind": "echo_secret", "encoding": "base64"},
                   {"kind": "trickle_headers", "interval": 0}, {"kind": "trickle_body", "interval": "1"},
                   {"kind": "endless_chunked", "chunk_bytes": 0}, {"kind": "oversized", "size": 10},
                   {"kind": "gzip_bomb", "inflated": 1.5e9}, {"kind": "gzip_bomb", "size": 10**9}):
        with pytest.raises(ValueError):
            cloud.add_fault(**kwargs)


# ---------------------------------------------------------------------------
# server mechanics
# ---------------------------------------------------------------------------


def test_concurrent_https_requests_are_handled_in_parallel(client: Client) -> None:
    cloud = client.cloud
    cloud.latency = 1.0  # long enough for 16 handshakes on a loaded machine to overlap
    cloud.reset_max_in_flight()
    barrier = threading.Barrier(16)

    def one(_: int) -> int:
        own = Client(cloud)  # own connection each
        barrier.wait()
        return own.maas(SEED_BODY).status_code

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(16))) == [200] * 16
    assert cloud.max_in_flight >= 16


def test_keep_alive_and_log(client: Client) -> None:
    cloud = client.cloud
    before = cloud.connection_count
    for _ in range(3):
        assert client.projects("cn-north-4").status_code == 200
    assert cloud.connection_count == before + 1
    entry = cloud.log[-1]
    assert entry.kind == "iam" and entry.method == "GET" and entry.query == {"name": "cn-north-4"}
    assert entry.headers["X-SDK-DATE"] == entry.headers["x-sdk-date"]
    assert entry.status == 200 and entry.json is None and entry.body == b""
    cloud.clear_log()
    assert cloud.log == [] and cloud.maas_requests() == []


def test_silent_client_does_not_block_tls_accept(client: Client) -> None:
    # A connection that never starts its TLS handshake must not stall others.
    with socket.create_connection(("127.0.0.1", client.cloud.port)):
        started = time.monotonic()
        assert client.projects().status_code == 200
        assert time.monotonic() - started < 1


def test_plain_http_mode() -> None:
    with fc.FakeCloud(tls=False, events=HOURLY) as cloud:
        assert cloud.url.startswith("http://127.0.0.1:") and cloud.ca_pem_path is None
        url = f"{cloud.url}{MAAS_PATH}"
        body = json.dumps({"service_type": 1, "start_time": HOURLY_START, "end_time": HOURLY_START + DAY_MS,
                           "infer_type": "batch"}).encode()
        headers = fc.sign_request("POST", url, {"Content-Type": "application/json"}, body)
        response = requests.post(url, data=body, headers=headers, timeout=5)
        assert decimal_json(response) == cloud.expected_usage(HOURLY_START, HOURLY_START + DAY_MS, 1, "batch")
        assert "REQUESTS_CA_BUNDLE" not in cloud.client_env()


def test_temp_dir_is_removed_on_stop() -> None:
    with fc.FakeCloud() as cloud:
        pem = cloud.ca_pem_path
        assert pem is not None and os.path.exists(pem)
        assert cloud.client_env(fc.TEMP_AK)["HW_SECURITY_TOKEN"] == fc.TEMP_TOKEN
    assert not os.path.exists(pem)


@contextlib.contextmanager
def standalone(*args: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``python3 tests/fakecloud.py --port 0 ARGS``: its instructions and the exports they name;
    stopped with Ctrl-C afterwards, which must end it cleanly."""
    proc = subprocess.Popen([sys.executable, str(_HERE / "fakecloud.py"), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            lines.append(line)
            if not line or "Ctrl-C" in line:
                break
        text = "".join(lines)
        yield text, dict(re.findall(r"export (\w+)=(\S+)", text))
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in stderr


def post_seed_body(exports: dict[str, str]) -> dict[str, Any]:
    url = exports["HW_MAAS_ENDPOINT"] + MAAS_PATH
    body = json.dumps(SEED_BODY).encode()
    response = requests.post(url, data=body, timeout=5, verify=exports["REQUESTS_CA_BUNDLE"],
                             headers=fc.sign_request("POST", url, {"Content-Type": "application/json"}, body))
    assert response.status_code == 200, response.text
    return decimal_json(response)


def test_standalone_cli_prints_instructions_and_serves() -> None:
    with standalone() as (text, exports):
        assert exports["HW_ACCESS_KEY"] == fc.DEMO_AK and exports["HW_SECRET_KEY"] == fc.DEMO_SK
        assert exports["HW_MAAS_ENDPOINT"] == exports["HW_IAM_ENDPOINT"]
        assert "maas_rest_usage_stats.py --from 2026-05-08 --to 2026-05-21 --timezone Asia/Shanghai" in text
        url = exports["HW_MAAS_ENDPOINT"] + "/v3/projects"
        response = requests.get(url, headers=fc.sign_request("GET", url), timeout=5,
                                verify=exports["REQUESTS_CA_BUNDLE"])
        assert response.status_code == 200


def test_standalone_cli_models_the_retention_unless_started_with_no_retention() -> None:
    with standalone() as (text, exports):
        assert "retention: 30 days" in text and "restart with --no-retention" in text
        assert post_seed_body(exports) == dict.fromkeys(fc.RESPONSE_KEYS, 0)  # May 2026 is past the retention
    with standalone("--no-retention") as (text, exports):
        assert "retention: off" in text and "--no-retention" not in text
        assert post_seed_body(exports) == fc.SEED_EXPECTED
    with standalone("--dataset", "hourly", "--hourly-days", "40") as (text, exports):
        assert "--last 7d --group-by day" in text and "the last 40 days (the last 30 count)" in text
