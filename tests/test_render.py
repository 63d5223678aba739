"""Parsing answers, exact sums, metrics, formatting, option parsers, pacing and the three outputs."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import maas_rest_usage_stats as m  # noqa: E402
from conftest import FakeClock  # noqa: E402

UTC = timezone.utc
NOW = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
PROJECT = "0123456789abcdef0123456789abcdef"
PROPERTY = settings(deadline=None, max_examples=200)

SEED_TEXT = ('{"total_token": 2482084.98, "total_prompt_token": 2456501.23, "total_completion_token": 24871.05, '
             '"total_request_count": 67188, "total_error_count": 8002}')
FIELDS = m.TOKEN_FIELDS + m.COUNT_FIELDS
METRICS = set(m.METRIC_NAMES)


def answer(**overrides) -> dict:
    data = {"total_token": Decimal("1.5"), "total_prompt_token": Decimal("1"), "total_completion_token": Decimal("0.5"),
            "total_request_count": 3, "total_error_count": 1}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def usage(text: str, batch: bool = False) -> m.Usage:
    return m.Usage.from_response(m.parse_json_text(text, "test"), "test", batch)


def make_query(*, zone=SHANGHAI, zone_name="Asia/Shanghai", start=date(2026, 5, 8), end=date(2026, 5, 21),
               service_types=(2,), bucket=None, api_keys=None, by_key=False, infer_type="real_time", ips=None):
    period = m.Period(m.day_start(start, zone), m.day_start(end, zone))
    return m.Query(region="cn-southwest-2", zone_name=zone_name, zone=zone, period=period, infer_type=infer_type,
                   service_types=tuple(service_types), api_keys=api_keys, ips=ips, bucket=bucket, by_key=by_key)


def make_result(query: m.Query, responses_for=lambda window: m.parse_json_text(SEED_TEXT, "x")) -> m.Report:
    """A report as a run builds it: planned rows whose windows are filled with what their parsed
    answers make, and the answers as --raw keeps them (their text)."""
    rows = m.plan_rows(query, NOW)
    for _, window in m.windows_of(rows):
        answer = responses_for(window)
        window.usage = m.Usage.from_response(answer, window.label, query.batch)
        window.response = m.raw_text(answer)
    return m.Report(query, PROJECT, rows, m.coverage_of(query, rows, NOW))


def seed_result() -> m.Report:
    return make_result(make_query())


# ----------------------------------------------------------------------------------------------
# Usage.from_response
# ----------------------------------------------------------------------------------------------


def test_response_numbers_are_parsed_as_exact_decimals():
    parsed = usage(SEED_TEXT)
    assert parsed.tokens_k == Decimal("2482084.98")
    assert parsed.prompt_k == Decimal("2456501.23")
    assert parsed.completion_k == Decimal("24871.05")
    assert (parsed.requests, parsed.errors) == (67188, 8002)
    assert isinstance(parsed.requests, int) and isinstance(parsed.errors, int)


def test_many_digit_decimals_survive_parsing_exactly():
    parsed = usage('{"total_token": 0.123456789012345678901, "total_prompt_token": 0, '
                   '"total_completion_token": 0, "total_request_count": 0, "total_error_count": 0}')
    assert parsed.tokens_k == Decimal("0.123456789012345678901")


@pytest.mark.parametrize("name", FIELDS)
def test_a_missing_field_is_malformed(name):
    with pytest.raises(m.MalformedResponse) as caught:
        m.Usage.from_response(answer(**{name: ...}), "window X", False)
    assert caught.value.exit_code == 1
    assert name in str(caught.value)
    assert "window X" in str(caught.value)


@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("bad", ["123", None, True, False, -1, Decimal("-0.01"), Decimal("NaN"), Decimal("sNaN"),
                                 Decimal("Infinity"), Decimal("-Infinity"), 1.5, [1], {"v": 1},
                                 Decimal("1E+400"), 10 ** 16])
def test_a_field_that_is_not_a_plausible_non_negative_number_is_malformed(name, bad):
    with pytest.raises(m.MalformedResponse):
        m.Usage.from_response(answer(**{name: bad}), "test", False)


@pytest.mark.parametrize("name", m.COUNT_FIELDS)
@pytest.mark.parametrize("bad", [Decimal("1.5"), Decimal("0.001")])
def test_a_fractional_count_is_malformed(name, bad):
    with pytest.raises(m.MalformedResponse) as caught:
        m.Usage.from_response(answer(**{name: bad}), "test", False)
    assert "whole number" in str(caught.value)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_the_response_text_are_malformed(constant):
    text = SEED_TEXT.replace("2482084.98", constant)
    with pytest.raises(m.MalformedResponse):
        usage(text)


@pytest.mark.parametrize("text", ["", "not json", "{", "<html></html>", '{"total_token": 1,}'])
def test_invalid_json_is_malformed(text):
    with pytest.raises(m.MalformedResponse):
        m.parse_json_text(text, "test")


@pytest.mark.parametrize("data", [[], "x", 1, None, [answer()]])
def test_a_response_that_is_not_an_object_is_malformed(data):
    with pytest.raises(m.MalformedResponse):
        m.Usage.from_response(data, "test", False)


@pytest.mark.parametrize("name", m.BATCH_FIELDS)
def test_batch_answers_must_carry_the_batch_fields(name):
    data = answer(total_completion_tasks=4, total_infer_count=9)
    del data[name]
    with pytest.raises(m.MalformedResponse) as caught:
        m.Usage.from_response(data, "test", True)
    assert name in str(caught.value)


def test_batch_fields_are_read_for_batch_and_optional_for_real_time():
    batch = m.Usage.from_response(answer(total_completion_tasks=4, total_infer_count=9), "test", True)
    assert (batch.completion_tasks, batch.infer_count) == (4, 9)
    real_time = m.Usage.from_response(answer(), "test", False)
    assert (real_time.completion_tasks, real_time.infer_count) == (0, 0)


@pytest.mark.parametrize("bad", [-1, Decimal("2.5"), "4", True])
def test_batch_fields_are_validated_when_present_in_real_time_answers(bad):
    with pytest.raises(m.MalformedResponse):
        m.Usage.from_response(answer(total_completion_tasks=bad), "test", False)


def test_malformed_answer_stops_the_report_before_any_sum():
    query = make_query(bucket=m.DAY, start=date(2026, 5, 8), end=date(2026, 5, 10))
    answers = iter([answer(), answer(total_error_count="1")])
    with pytest.raises(m.MalformedResponse):
        make_result(query, lambda window: next(answers))


def test_a_row_total_is_refused_before_its_windows_are_fetched():
    (row,) = m.plan_rows(make_query(), NOW)
    with pytest.raises(ValueError):
        row.total  # noqa: B018


# ----------------------------------------------------------------------------------------------
# Exact sums
# ----------------------------------------------------------------------------------------------


def test_ten_times_a_tenth_of_a_thousand_tokens_is_exactly_1000_tokens():
    tenth = m.Usage(tokens_k=Decimal("0.1"))
    total = m.total_of([tenth] * 10)
    assert total.tokens_k == Decimal("1")
    assert total.metrics()["total_tokens"] == 1000
    assert sum([0.1] * 10) != 1.0  # the float accumulation this guards against


def test_adding_usages_adds_every_field():
    def usage(requests, errors, tokens_k, prompt_k, completion_k, completion_tasks, infer_count):
        return m.Usage(requests=requests, errors=errors, tokens_k=tokens_k, prompt_k=prompt_k,
                       completion_k=completion_k, completion_tasks=completion_tasks, infer_count=infer_count)

    a = usage(1, 2, Decimal("0.001"), Decimal("4.5"), Decimal("6"), 7, 8)
    b = usage(10, 20, Decimal("0.002"), Decimal("0.5"), Decimal("60"), 70, 80)
    assert a + b == usage(11, 22, Decimal("0.003"), Decimal("5.0"), Decimal("66"), 77, 88)


def test_sums_stay_exact_beyond_the_default_decimal_precision():
    big = m.Usage(tokens_k=Decimal("999999999999999.999"))
    tiny = m.Usage(tokens_k=Decimal("0.000000000000001"))
    assert (big + tiny).tokens_k == Decimal("999999999999999.999000000000001")


THOUSANDTHS = st.integers(min_value=0, max_value=10 ** 15).map(lambda n: Decimal(n).scaleb(-3))


@PROPERTY
@given(values=st.lists(st.tuples(THOUSANDTHS, st.integers(0, 10 ** 9), st.booleans()), max_size=60))
def test_sum_of_two_group_sums_equals_the_whole_sum_exactly(values):
    usages = [m.Usage(requests=count, tokens_k=tokens, prompt_k=tokens) for tokens, count, _ in values]
    left = m.total_of(u for u, (_, _, side) in zip(usages, values) if side)
    right = m.total_of(u for u, (_, _, side) in zip(usages, values) if not side)
    whole = m.total_of(usages)
    assert left + right == whole
    # and equals the integer computation in thousandths
    assert whole.tokens_k * 1000 == sum(int(t * 1000) for t, _, _ in values)
    assert whole.requests == sum(c for _, c, _ in values)


# ----------------------------------------------------------------------------------------------
# metrics()
# ----------------------------------------------------------------------------------------------


def test_seed_metrics():
    metrics = usage(SEED_TEXT).metrics()
    assert metrics["total_tokens"] == 2482084980
    assert metrics["prompt_tokens"] == 2456501230
    assert metrics["completion_tokens"] == 24871050
    assert metrics["error_rate"] == Decimal("11.91")
    assert (metrics["total_requests"], metrics["total_errors"]) == (67188, 8002)
    assert set(metrics) == METRICS


def test_error_rate_is_none_without_requests():
    assert m.Usage().metrics()["error_rate"] is None
    assert m.Usage(errors=0, requests=0, tokens_k=Decimal(5)).metrics()["error_rate"] is None


@pytest.mark.parametrize("thousands, tokens", [
    (Decimal("0.0005"), 1), (Decimal("0.0025"), 3), (Decimal("0.0015"), 2), (Decimal("0.0004999"), 0),
    (Decimal("2482084.9805"), 2482084981), (Decimal("0"), 0), (Decimal("1"), 1000),
])
def test_tokens_round_half_up_to_whole_tokens(thousands, tokens):
    assert m.Usage(tokens_k=thousands).metrics()["total_tokens"] == tokens


@pytest.mark.parametrize("errors, requests, rate", [
    (1, 800, Decimal("0.13")),    # 0.125 -> half up, not to even
    (1, 8, Decimal("12.50")),
    (3, 1600, Decimal("0.19")),   # 0.1875
    (1, 3, Decimal("33.33")),
    (2, 3, Decimal("66.67")),
    (0, 5, Decimal("0.00")),
    (5, 5, Decimal("100.00")),
])
def test_error_rate_is_percent_rounded_half_up_to_two_decimals(errors, requests, rate):
    result = m.Usage(requests=requests, errors=errors).metrics()["error_rate"]
    assert result == rate
    assert result.as_tuple().exponent == -2


def test_totals_round_from_their_exact_sum_not_from_rounded_rows():
    query = make_query(bucket=m.DAY, start=date(2026, 5, 8), end=date(2026, 5, 10))
    text = SEED_TEXT.replace("2482084.98", "0.0004")
    result = make_result(query, lambda call: m.parse_json_text(text, "x"))
    rows = [row.total.metrics()["total_tokens"] for row in result.rows]
    assert rows == [0, 0]
    assert result.total.metrics()["total_tokens"] == 1  # 0.8 tokens


# ----------------------------------------------------------------------------------------------
# format_tokens, format_rate, services_title
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens, text", [
    (2482084980, "2,482.08 M tokens"),
    (512300, "512.30 K tokens"),
    (1_000_000, "1.00 M tokens"),
    (1000, "1.00 K tokens"),
    (999, "1.00 K tokens"),            # below 1 M the contract reads K
    (0, "0.00 K tokens"),
    (994_999, "995.00 K tokens"),
    (999_995, "1.00 M tokens"),        # would read 1,000.00 K
    (1005, "1.01 K tokens"),           # half up
    (2_482_085_000, "2,482.09 M tokens"),
    (1_234_567_890_123, "1,234,567.89 M tokens"),
    (24871050, "24.87 M tokens"),
])
def test_format_tokens(tokens, text):
    assert m.format_tokens(tokens) == text


def test_format_tokens_without_unit():
    assert m.format_tokens(2482084980, unit=False) == "2,482.08M"
    assert m.format_tokens(512300, unit=False) == "512.30K"
    assert m.format_tokens(12, unit=False) == "0.01K"


@pytest.mark.parametrize("rate, text", [(Decimal("11.91"), "11.91%"), (None, "-"), (Decimal("0.00"), "0.00%"),
                                        (Decimal("100.00"), "100.00%"), (Decimal("12.5"), "12.50%")])
def test_format_rate(rate, text):
    assert m.format_rate(rate) == text


@pytest.mark.parametrize("types, title", [
    ((2,), "Preset Service"), ((1,), "My Service"), ((4,), "Custom Endpoint"),
    ((1, 2), "My Service + Preset Service"), ((2, 4), "Preset Service + Custom Endpoint"),
    ((1, 2, 4), "All Services"),
])
def test_services_title(types, title):
    assert m.services_title(types) == title


# ----------------------------------------------------------------------------------------------
# Option parsers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, expected", [
    (["2"], (2,)), (["preset"], (2,)), (["preset-service"], (2,)), (["PRESET"], (2,)),
    (["1"], (1,)), (["my"], (1,)), (["my-service"], (1,)),
    (["4"], (4,)), (["custom"], (4,)), (["custom-endpoint"], (4,)),
    (["all"], (1, 2, 4)), (["4", "1"], (1, 4)), (["2", "preset"], (2,)), (["all", "2"], (1, 2, 4)),
])
def test_parse_service_types_accepts_names_numbers_and_all(values, expected):
    assert m.parse_service_types(values) == expected


def test_service_type_3_is_rejected_with_a_message_naming_4():
    with pytest.raises(m.UsageError) as caught:
        m.parse_service_types(["3"])
    assert caught.value.exit_code == 2
    assert "4" in str(caught.value)
    assert "Custom Endpoint" in str(caught.value)


@pytest.mark.parametrize("value", ["5", "0", "", "presets", "custom endpoint", "1,2", "two"])
def test_unknown_service_types_are_rejected(value):
    with pytest.raises(m.UsageError) as caught:
        m.parse_service_types([value])
    assert caught.value.exit_code == 2


def test_parse_ips_validates_normalises_and_deduplicates():
    assert m.parse_ips(None) is None
    assert m.parse_ips(["10.0.0.1", " 10.0.0.1 ", "2001:DB8::1", "::1"]) == ("10.0.0.1", "2001:db8::1", "::1")


@pytest.mark.parametrize("value", ["999.1.1.1", "10.0.0.1/24", "example.com", "", "10.0.0", "1.2.3.4.5"])
def test_parse_ips_rejects_non_addresses(value):
    with pytest.raises(m.UsageError) as caught:
        m.parse_ips(["10.0.0.1", value])
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("values, keys, expected", [
    (None, None, (None, False, False)),
    ([], None, (None, False, False)),
    (["day"], None, ("day", False, False)),
    (["WEEK"], None, ("week", False, False)),
    (["month", "service-type"], None, ("month", False, True)),
    (["day,service-type"], None, ("day", False, True)),
    (["service-type"], None, (None, False, True)),
    (["api-key"], ("k1", "k2"), (None, True, False)),
    (["api-key"], ("",), (None, True, False)),
    (["day", "api-key"], ("k1",), ("day", True, False)),
    (["day", "day"], None, ("day", False, False)),
])
def test_parse_group_by(values, keys, expected):
    assert m.parse_group_by(values, keys) == expected


@pytest.mark.parametrize("values, keys", [
    (["day", "week"], None), (["day,month"], None), (["hour", "day"], None), (["api-key"], ()),
    (["days"], None),
])
def test_parse_group_by_rejects(values, keys):
    with pytest.raises(m.UsageError) as caught:
        m.parse_group_by(values, keys)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("url, scheme, netloc, host, base", [
    ("https://modelarts.cn-southwest-2.myhuaweicloud.com", "https", "modelarts.cn-southwest-2.myhuaweicloud.com",
     "modelarts.cn-southwest-2.myhuaweicloud.com", ""),
    ("https://example.com:8443/base/", "https", "example.com:8443", "example.com", "/base"),
    ("http://127.0.0.1:8080", "http", "127.0.0.1:8080", "127.0.0.1", ""),
    ("http://localhost", "http", "localhost", "localhost", ""),
    ("http://[::1]:9000/x", "http", "[::1]:9000", "::1", "/x"),
    ("  https://example.com/  ", "https", "example.com", "example.com", ""),
])
def test_parse_endpoint_accepts_https_and_loopback_http(url, scheme, netloc, host, base):
    endpoint = m.parse_endpoint(url, "--endpoint")
    assert (endpoint.scheme, endpoint.netloc, endpoint.host, endpoint.base_path) == (scheme, netloc, host, base)


def test_endpoint_url_keeps_the_port_and_base_path():
    endpoint = m.parse_endpoint("https://example.com:8443/base", "--endpoint")
    assert endpoint.url("/v1/p") == "https://example.com:8443/base/v1/p"


@pytest.mark.parametrize("url", [
    "example.com", "modelarts.cn-southwest-2.myhuaweicloud.com:443", "//example.com",
    "http://example.com", "http://10.0.0.1", "http://localhost.example.com", "http://127.0.0.1.nip.io",
    "https://user:pw@example.com", "https://user@example.com", "https://example.com?x=1",
    "https://example.com/#frag", "https://example.com:99999", "https://example.com:port",
    "ftp://example.com", "file:///etc/passwd", "https://", "https://exa mple.com", "",
])
def test_parse_endpoint_rejects_everything_else(url):
    with pytest.raises(m.UsageError) as caught:
        m.parse_endpoint(url, "--endpoint")
    assert caught.value.exit_code == 2


def test_parse_endpoint_error_names_the_option():
    with pytest.raises(m.UsageError) as caught:
        m.parse_endpoint("http://example.com", "--iam-endpoint")
    assert "--iam-endpoint" in str(caught.value)


# ----------------------------------------------------------------------------------------------
# The run's clock
# ----------------------------------------------------------------------------------------------


def test_the_runs_now_is_its_clocks_now_in_whole_seconds():
    assert m.Clock(FakeClock(NOW + timedelta(microseconds=999_999))).now == NOW


def test_a_wait_on_a_given_clock_sleeps_on_it_and_not_once_cancelled():
    clock = FakeClock(NOW)
    run_clock, cancel = m.Clock(clock), threading.Event()
    assert run_clock.wait(2.5, cancel) is False
    assert clock.sleeps == [2.5] and run_clock.monotonic() == 2.5
    assert run_clock.wall() == NOW + timedelta(seconds=2.5)
    cancel.set()
    assert run_clock.wait(2.5, cancel) is True
    assert clock.sleeps == [2.5]


def test_main_takes_now_or_a_clock_not_both():
    with pytest.raises(TypeError):
        m.main(["--version"], env={}, now=NOW, clock=FakeClock(NOW))


def test_backoff_jitter_keeps_its_range_differs_between_requests_and_repeats_for_the_same_one():
    for attempt in range(6):
        ceiling = min(m.BACKOFF_CAP, m.BACKOFF_BASE * 2 ** attempt)
        delays = [m.backoff_delay(attempt, f"run start, request {n}") for n in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 190
        assert delays == [m.backoff_delay(attempt, f"run start, request {n}") for n in range(200)]


# ----------------------------------------------------------------------------------------------
# RateLimiter with a fake clock
# ----------------------------------------------------------------------------------------------


class LimiterClock(FakeClock):
    """A fake clock whose monotonic time moves only when the limiter waits, and never for nothing."""

    def __init__(self) -> None:
        super().__init__(NOW)

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter must never spin on a zero or negative sleep"
        assert len(self.sleeps) < 10_000, "the limiter keeps sleeping"
        super().sleep(seconds)


class Pacer:
    def __init__(self, clock: FakeClock) -> None:
        self._limiter = m.RateLimiter(m.RATE_LIMIT, m.RATE_PERIOD, m.Clock(clock))
        self._never = threading.Event()

    def acquire(self) -> None:
        assert self._limiter.acquire(self._never)


def limiter(clock: FakeClock) -> Pacer:
    return Pacer(clock)


def test_rate_limit_constants_match_the_api():
    assert (m.RATE_LIMIT, m.RATE_PERIOD) == (200, 60.0)


def test_200_starts_pass_immediately():
    clock = LimiterClock()
    pacer = limiter(clock)
    for _ in range(200):
        pacer.acquire()
    assert clock.sleeps == []
    assert clock.monotonic() == 0


def test_the_201st_start_waits_until_the_first_is_60_seconds_old():
    clock = LimiterClock()
    pacer = limiter(clock)
    pacer.acquire()              # t = 0
    clock.advance(10.0)
    for _ in range(199):         # t = 10
        pacer.acquire()
    assert clock.sleeps == []
    pacer.acquire()              # the 201st: waits until t = 60, in steps the progress line counts down
    assert clock.monotonic() == 60.0
    assert clock.sleeps == [m.RATE_WAIT_STEP] * 50
    pacer.acquire()              # the 202nd: the other 199 started at t = 10, so it waits until t = 70
    assert clock.monotonic() == 70.0


def test_starts_older_than_the_period_free_their_slots():
    clock = LimiterClock()
    pacer = limiter(clock)
    for _ in range(200):
        pacer.acquire()
    clock.advance(60.0)
    for _ in range(200):
        pacer.acquire()
    assert clock.sleeps == []


# Arrival gaps in quarter seconds: binary fractions keep the fake clock's arithmetic exact.
GAPS = st.lists(st.integers(min_value=0, max_value=120).map(lambda q: q / 4), min_size=1, max_size=700)


@settings(deadline=None, max_examples=100)
@given(gaps=GAPS)
def test_never_more_than_200_starts_in_any_60_seconds_and_no_needless_wait(gaps):
    clock = LimiterClock()
    pacer = limiter(clock)
    starts: list[float] = []
    arrival = 0.0
    for gap in gaps:
        arrival += gap
        clock.advance(max(0.0, arrival - clock.monotonic()))
        pacer.acquire()
        starts.append(clock.monotonic())
    assert starts == sorted(starts)
    for i, first in enumerate(starts):
        in_window = sum(1 for s in starts[i:i + 201] if s < first + 60)
        assert in_window <= 200
    # Bursts pass at once: a start is delayed only as far as the 200-per-60 s rule demands.
    arrival = 0.0
    for i, (gap, start) in enumerate(zip(gaps, starts)):
        arrival += gap
        earliest = max(arrival, starts[i - 1] if i else 0.0)
        if i >= 200:
            earliest = max(earliest, starts[i - 200] + 60)
        assert start == earliest


# ----------------------------------------------------------------------------------------------
# parse_retry_after
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [("5", 5.0), (" 7 ", 7.0), ("0", 0.0), ("60", 60.0), ("61", 60.0),
                                            ("120", 60.0), ("86400", 60.0)])
def test_retry_after_seconds_are_capped_at_60(value, seconds):
    assert m.parse_retry_after(value, NOW) == seconds


def test_retry_after_http_date():
    assert m.parse_retry_after(format_datetime(NOW + timedelta(seconds=30), usegmt=True), NOW) == 30.0
    assert m.parse_retry_after("Tue, 24 Nov 2026 05:00:45 GMT", NOW) == 45.0


def test_retry_after_http_date_far_ahead_is_capped_and_past_is_zero():
    assert m.parse_retry_after(format_datetime(NOW + timedelta(minutes=10), usegmt=True), NOW) == 60.0
    assert m.parse_retry_after(format_datetime(NOW - timedelta(minutes=10), usegmt=True), NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "-5", "Wed, 99 Foo 2026", "12abc", "1e3"])
def test_retry_after_garbage_is_none(value):
    assert m.parse_retry_after(value, NOW) is None


def test_retry_after_superscript_digit_is_garbage_not_a_crash():
    assert m.parse_retry_after("\u00b2", NOW) is None


# ----------------------------------------------------------------------------------------------
# Output: table, CSV, JSON
# ----------------------------------------------------------------------------------------------


def table_rows(text: str) -> dict[str, str]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def test_table_for_the_seed_numbers():
    text = m.render_table(seed_result(), None, False)
    lines = text.splitlines()
    assert lines[0] == "MaaS Preset Service Usage Statistics - Region: cn-southwest-2"
    assert lines[-1] == "Period: 2026-05-08 00:00:00 ~ 2026-05-21 00:00:00 (CST)"
    rows = table_rows(text)
    assert rows == {
        "Metric": "Value",
        "Total Tokens": "2,482.08 M tokens",
        "Prompt Tokens": "2,456.50 M tokens",
        "Completion Tokens": "24.87 M tokens",
        "Total Requests": "67,188",
        "Total Errors": "8,002",
        "Error Rate": "11.91%",
    }
    assert list(rows)[1:] == ["Total Tokens", "Prompt Tokens", "Completion Tokens", "Total Requests",
                              "Total Errors", "Error Rate"]
    assert text.endswith("\n")


def test_table_for_batch_adds_tasks_and_inference_count():
    query = make_query(infer_type="batch")
    text_answer = SEED_TEXT[:-1] + ', "total_completion_tasks": 1234, "total_infer_count": 56789}'
    result = make_result(query, lambda call: m.parse_json_text(text_answer, "x"))
    rows = table_rows(m.render_table(result, None, False))
    assert rows["Completed Tasks"] == "1,234"
    assert rows["Inference Count"] == "56,789"


def test_table_error_rate_is_a_dash_without_requests():
    zero = '{"total_token": 0, "total_prompt_token": 0, "total_completion_token": 0, ' \
           '"total_request_count": 0, "total_error_count": 0}'
    result = make_result(make_query(), lambda call: m.parse_json_text(zero, "x"))
    rows = table_rows(m.render_table(result, None, False))
    assert rows["Error Rate"] == "-"
    assert rows["Total Tokens"] == "0.00 K tokens"


def test_table_with_several_service_types_has_a_grouped_table_then_totals():
    result = make_result(make_query(service_types=(1, 2, 4)))
    text = m.render_table(result, None, False)
    lines = text.splitlines()
    assert lines[0] == "MaaS All Services Usage Statistics - Region: cn-southwest-2"
    grouped_total = [line for line in lines if re.match(r"\| Total +\|", line)]
    assert len(grouped_total) == 1
    assert "7,446.25M" in grouped_total[0]  # three times 2,482.08... M, summed exactly then formatted
    assert table_rows(text)["Total Tokens"] == "7,446.25 M tokens"
    service_rows = [line.split("|")[1].strip() for line in lines if re.match(r"\| (My|Preset|Custom) +\|", line)]
    assert service_rows == ["My", "Preset", "Custom"]
    assert lines.index(grouped_total[0]) < next(i for i, line in enumerate(lines) if "Total Tokens" in line)
    assert lines[-1].startswith("Period: ")


def test_table_period_line_names_both_zone_abbreviations_across_dst():
    query = make_query(zone=NEW_YORK, zone_name="America/New_York", start=date(2026, 3, 1), end=date(2026, 3, 15))
    lines = m.render_table(make_result(query), None, False).splitlines()
    assert lines[-1] == "Period: 2026-03-01 00:00:00 ~ 2026-03-15 00:00:00 (EST/EDT)"


def test_table_format_is_passed_to_tabulate():
    text = m.render_table(seed_result(), "github", False)
    assert "| Total Tokens      | 2,482.08 M tokens |" in text


def test_table_raw_appends_each_window_response():
    text = m.render_table(seed_result(), None, True)
    assert "Raw responses:" in text
    assert "2482084.98" in text


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


CSV_COLUMNS = ["start", "end", "service_type", "api_key", *m.METRIC_NAMES]


def test_csv_round_trips_through_the_csv_module():
    text = m.render_csv(seed_result(), True)
    reader = csv.reader(io.StringIO(text))
    assert next(reader) == CSV_COLUMNS
    rows = parse_csv(text)
    assert rows == [{
        "start": "2026-05-08T00:00:00+08:00", "end": "2026-05-21T00:00:00+08:00", "service_type": "2",
        "api_key": "", "total_tokens": "2482084980", "prompt_tokens": "2456501230",
        "completion_tokens": "24871050", "total_requests": "67188", "total_errors": "8002",
        "error_rate": "11.91", "total_completion_tasks": "0", "total_infer_count": "0",
    }]


def test_csv_without_header_has_only_data_lines():
    text = m.render_csv(seed_result(), False)
    lines = text.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("2026-05-08T00:00:00+08:00,")


def test_csv_rows_per_day_service_and_key_with_awkward_labels():
    keys = ("plain", "", 'comma, "quote"', "new\nline")
    query = make_query(bucket=m.DAY, start=date(2026, 5, 8), end=date(2026, 5, 10), service_types=(2, 4),
                       api_keys=keys, by_key=True)
    rows = parse_csv(m.render_csv(make_result(query), True))
    assert len(rows) == 2 * 2 * len(keys)
    assert [r["api_key"] for r in rows[:len(keys)]] == list(keys)
    assert {r["service_type"] for r in rows} == {"2", "4"}
    assert rows[0]["start"] == "2026-05-08T00:00:00+08:00" and rows[0]["end"] == "2026-05-09T00:00:00+08:00"
    assert rows[-1]["start"] == "2026-05-09T00:00:00+08:00"


def test_csv_error_rate_is_empty_without_requests():
    zero = '{"total_token": 0, "total_prompt_token": 0, "total_completion_token": 0, ' \
           '"total_request_count": 0, "total_error_count": 0}'
    rows = parse_csv(m.render_csv(make_result(make_query(), lambda c: m.parse_json_text(zero, "x")), True))
    assert rows[0]["error_rate"] == ""


def test_json_schema_for_the_seed():
    document = json.loads(m.render_json(seed_result(), False), parse_float=Decimal)
    assert set(document) == {"schema_version", "region", "project_id", "timezone", "infer_type", "service_types",
                             "api_keys", "ips", "period", "totals", "rows", "coverage"}
    assert document["schema_version"] == 1
    assert document["region"] == "cn-southwest-2"
    assert document["project_id"] == PROJECT
    assert document["timezone"] == "Asia/Shanghai"
    assert document["infer_type"] == "real_time"
    assert document["service_types"] == [2]
    assert document["api_keys"] is None and document["ips"] is None
    assert document["period"] == {"start": "2026-05-08T00:00:00+08:00", "end": "2026-05-21T00:00:00+08:00",
                                  "start_ms": 1778169600000, "end_ms": 1779292800000}
    assert document["totals"] == {"total_tokens": 2482084980, "prompt_tokens": 2456501230,
                                  "completion_tokens": 24871050, "total_requests": 67188, "total_errors": 8002,
                                  "error_rate": Decimal("11.91"), "total_completion_tasks": 0,
                                  "total_infer_count": 0}
    assert len(document["rows"]) == 1
    row = document["rows"][0]
    assert set(row) == {"start", "end", "service_type", "service_name", "api_key", "partial"} | METRICS
    assert (row["service_type"], row["service_name"], row["api_key"]) == (2, "Preset Service", None)


def test_json_integers_are_integers_and_rate_is_null_without_requests():
    zero = '{"total_token": 0, "total_prompt_token": 0, "total_completion_token": 0, ' \
           '"total_request_count": 0, "total_error_count": 0}'
    document = json.loads(m.render_json(make_result(make_query(), lambda c: m.parse_json_text(zero, "x")), False))
    assert document["totals"]["error_rate"] is None
    assert all(isinstance(document["totals"][k], int) for k in METRICS - {"error_rate"})


def test_json_raw_adds_windows_with_the_exact_response():
    query = make_query(start=date(2026, 3, 1), end=date(2026, 5, 1), service_types=(2, 4),
                       api_keys=("k1", "k2"), by_key=True, ips=("10.0.0.1",))
    document = json.loads(m.render_json(make_result(query), True), parse_float=Decimal)
    assert document["api_keys"] == ["k1", "k2"] and document["ips"] == ["10.0.0.1"]
    windows = document["windows"]
    assert len(windows) == 3 * 2 * 2  # 61 days -> 3 windows, per service type and key
    for window in windows:
        assert set(window) == {"start_ms", "end_ms", "service_type", "api_key", "response"}
        assert window["end_ms"] - window["start_ms"] <= 30 * 86_400_000
        assert window["api_key"] in ("k1", "k2")
        assert window["response"]["total_token"] == Decimal("2482084.98")
    assert {row["api_key"] for row in document["rows"]} == {"k1", "k2"}


def test_json_rows_api_key_is_null_when_rows_are_not_split_by_key():
    query = make_query(api_keys=("k1", "k2"), by_key=False)
    document = json.loads(m.render_json(make_result(query), True))
    assert document["api_keys"] == ["k1", "k2"]
    assert [row["api_key"] for row in document["rows"]] == [None]
    assert {w["api_key"] for w in document["windows"]} == {None}


def test_json_day_rows_follow_local_midnights():
    query = make_query(zone=NEW_YORK, zone_name="America/New_York", bucket=m.DAY,
                       start=date(2026, 3, 7), end=date(2026, 3, 10))
    document = json.loads(m.render_json(make_result(query), False))
    assert [(r["start"], r["end"]) for r in document["rows"]] == [
        ("2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00"),
        ("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"),
        ("2026-03-09T00:00:00-04:00", "2026-03-10T00:00:00-04:00"),
    ]


def test_request_body_carries_the_contract_fields():
    query = make_query(api_keys=("k1", ""), ips=("10.0.0.1",))
    calls = [window for _, window in m.windows_of(m.plan_rows(query, NOW))]
    assert [c.body for c in calls] == [{"service_type": 2, "start_time": 1778169600000, "end_time": 1779292800000,
                                        "timezone": "Asia/Shanghai", "infer_type": "real_time",
                                        "api_keys": ["k1", ""], "ips": ["10.0.0.1"]}]
    assert re.search(r"2026-05-08 00:00:00 ~ 2026-05-21 00:00:00", calls[0].label)


@pytest.mark.parametrize("body, detail", [
    ('{"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information"}',
     ": APIGW.0301: Incorrect IAM authentication information"),
    ('{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "x"}}',
     ": 401: The request you have made requires authentication."),
    ("<html><body>Bad gateway</body></html>", ": an HTML page instead of JSON"),
    ("[" * 50000, ""),
])
def test_api_failure_message_names_the_apis_own_error(body, detail):
    reply = m.Reply(502, body, "req-1", {})
    assert m.api_failure_message("IAM project lookup", reply) == f"IAM project lookup failed: HTTP 502{detail} " \
                                                                 "(X-Request-Id: req-1)"


def test_json_raw_splices_each_kept_answer_as_if_it_were_rendered_in_place():
    """--raw keeps answers as text and splices them in indented: the output is the one document
    with every answer inside, byte for byte (the old way, one parsed answer each, is the oracle)."""
    query = make_query(start=date(2026, 3, 1), end=date(2026, 5, 1), service_types=(2, 4),
                       api_keys=("k1", "k2\u202e"), by_key=True)
    nested = SEED_TEXT[:-1] + ', "extra": [{}, {"a": [1, 2.25, "\\u4e2d\\u0007"]}, []], "e": 1e400}'
    report = make_result(query, lambda window: m.parse_json_text(nested, "x"))
    text = m.render_json(report, True)
    document = json.loads(text)
    answer = json.loads(m.raw_text(m.parse_json_text(nested, "x")))
    expected = dict(document, windows=[dict(window, response=answer) for window in document["windows"]])
    assert text == m.json_document(expected, indent=2) + "\n"
    assert all(window["response"]["extra"][1]["a"][2] == "\u4e2d\u0007" for window in document["windows"])
