#!/usr/bin/env python3
"""A fake Huawei Cloud (IAM + MaaS ShowStatistics + Cloud Eye SYS.MaaS) HTTP(S) server.

Two uses:

* In-process, from pytest: ``with FakeCloud() as cloud: ...`` starts an HTTPS
  server on a free loopback port; tests run the real CLI as a subprocess with
  ``cloud.client_env()`` and compare its output with ``cloud.expected_usage(...)``.
* Standalone, for newcomers: ``python3 tests/fakecloud.py --port 8443`` prints
  demo (fake) keys and the ``export`` lines needed to point the CLI at it.

Only the standard library is used, plus ``trustme`` for the throw-away TLS CA
(imported lazily, so ``--http`` works without it).  The request signature is
verified by an implementation of SDK-HMAC-SHA256 written here from the public
algorithm -- deliberately NOT huaweicloudsdkcore -- so that a signing bug in the
client is caught instead of being reproduced by the same code on both ends.

Sections:
  1. Constants (demo credentials, projects, API limits)
  2. Usage data model: Event, UsageIndex, expected_usage
  3. Datasets: SEED_EVENTS, hourly_events
  4. JSON rendering (exact Decimals)
  5. SDK-HMAC-SHA256 signing / verification
  6. ShowStatistics request validation
  7. Cloud Eye (SYS.MaaS per model and API key) and the MaaS monitor's names
  8. HTTP server: request log, faults, handler, FakeCloud
  9. Standalone command line
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import hashlib
import hmac
import importlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation, localcontext
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import attrgetter, itemgetter
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from zoneinfo import ZoneInfo

# ---------------------------------------------------------------------------
# 1. Constants
# ---------------------------------------------------------------------------

# Fake demo credentials.  "LEAKCHECK" lets tests grep the CLI's output/logs for
# accidental secret leaks.  They are fake, so printing them is fine.
DEMO_AK = "AKFAKEDEMO7Q3XZ2LEAKCHECK"
DEMO_SK = "SKfakeDemo9f8e7d6c5b4a3LEAKCHECKsecret"
# Temporary (STS-style) credentials: requests must also carry a signed
# X-Security-Token header with exactly this value.
TEMP_AK = "AKTEMPDEMO5K8M1LEAKCHECK"
TEMP_SK = "SKtempDemo1a2b3c4d5e6LEAKCHECKsecret"
TEMP_TOKEN = "TOKENfakeDemo-LEAKCHECK-" + "x" * 40

DEMO_REGION = "cn-southwest-2"
DEMO_DOMAIN_ID = "9d2c4b7e1a3f4c5d8e6f7a8b9c0d1e2f"
DEMO_PROJECT_ID = "5f8e2c1a9b7d4e3f8a6b0c2d4e6f8a1b"
DEMO_SUB_PROJECT_ID = "7a1b3c5d7e9f4a2b8c6d0e1f3a5b7c9d"
NORTH4_PROJECT_ID = "c3d5e7f9a1b24c6d8e0f2a4b6c8d0e1f"

# The IAM policy actions that `FakeCloud.denied` understands.
IAM_ACTION = "iam:projects:get"
MAAS_ACTION = "modelarts:monitoring:get"

SERVICE_TYPES = (1, 2, 4)  # 3 exists in the docs' numbering but the API rejects it
INFER_TYPES = ("real_time", "batch")
MAX_SPAN_MS = 30 * 24 * 3600 * 1000  # ShowStatistics refuses wider windows
CLOCK_SKEW_LIMIT_S = 15 * 60  # API Gateway rejects X-Sdk-Date further off than this
MAX_BODY_BYTES = 1 << 20
GZIP_FROM = 1024  # JSON answers this long or longer are gzipped for a client that accepts it
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RETENTION_DAYS = 30  # MaaS keeps statistics for 30 days; older events are no longer counted

# A real ShowStatistics answer (service_type 2, real_time) for
# 2026-05-08 00:00 .. 2026-05-21 00:00 Asia/Shanghai.  SEED_EVENTS reproduce it.
SEED_START_MS = 1778169600000
SEED_END_MS = 1779292800000
SEED_EXPECTED: dict[str, int | Decimal] = {
    "total_request_count": 67188,
    "total_error_count": 8002,
    "total_token": Decimal("2482084.98"),
    "total_prompt_token": Decimal("2456504.362"),
    "total_completion_token": Decimal("24872.928"),
    "total_completion_tasks": 0,
    "total_infer_count": 0,
}


def default_credentials() -> dict[str, tuple[str, str | None]]:
    """AK -> (SK, security token or None)."""
    return {DEMO_AK: (DEMO_SK, None), TEMP_AK: (TEMP_SK, TEMP_TOKEN)}


def default_projects() -> list[dict[str, Any]]:
    # The "_sub" project exists because real IAM returns sub-projects for a
    # name query; the client has to pick the exact region name.
    return [
        {"id": DEMO_PROJECT_ID, "name": "cn-southwest-2"},
        {"id": DEMO_SUB_PROJECT_ID, "name": "cn-southwest-2_sub"},
        {"id": NORTH4_PROJECT_ID, "name": "cn-north-4"},
    ]


# ---------------------------------------------------------------------------
# 2. Usage data model
# ---------------------------------------------------------------------------


# slots=True (Python 3.10+) halves the size of a year of events; 3.9 builds plain ones.
_SLOTS: dict[str, bool] = {"slots": True} if sys.version_info >= (3, 10) else {}


@dataclass(frozen=True, **_SLOTS)
class Event:
    """Usage that happened at one instant.

    Modelling usage as point events (rather than per-day buckets) makes the
    total for any [start, end) window exact and additive, however the client
    splits its date range.  Token fields are in thousands of tokens (the API's
    unit), normally with 3 decimals.

    ``model_id``/``model_name`` (Cloud Eye's ``maas_api_id``) and ``key_id``
    (its ``maas_key_id``; the key's name is ``api_key``) say which model
    service and API key Cloud Eye files the call under.  Left empty on a
    service type 1 or 2 event, they default to the type's first model in
    CES_MODELS and to ces_key_id(api_key) (see cloud_eye_identity).
    """

    at_ms: int
    service_type: int
    infer_type: str
    api_key: str
    ip: str
    request_count: int = 0
    error_count: int = 0
    total_token: Decimal = Decimal(0)
    prompt_token: Decimal = Decimal(0)
    completion_token: Decimal = Decimal(0)
    completion_tasks: int = 0
    infer_count: int = 0
    model_id: str = ""
    model_name: str = ""
    key_id: str = ""


# (event attribute, response key, is a token/Decimal field)
_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("request_count", "total_request_count", False),
    ("error_count", "total_error_count", False),
    ("total_token", "total_token", True),
    ("prompt_token", "total_prompt_token", True),
    ("completion_token", "total_completion_token", True),
    ("completion_tasks", "total_completion_tasks", False),
    ("infer_count", "total_infer_count", False),
)
RESPONSE_KEYS: tuple[str, ...] = tuple(key for _, key, _ in _COLUMNS)

# Sums must never round: with 60 significant digits token totals cannot get
# near the limit, and trapping Inexact turns any surprise into an error.
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])
_AT_MS = attrgetter("at_ms")
_SERIES_KEY = attrgetter("service_type", "infer_type", "api_key", "ip")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building hundreds of thousands of acyclic objects triggers many full
    cyclic-GC passes over the growing heap (~20% of the time); skip them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Series:
    """Events of one (service_type, infer_type, api_key, ip) combination,
    sorted by time, with a prefix sum per column so that any window is two
    bisects and seven subtractions."""

    __slots__ = ("at", "prefix")

    def __init__(self, events: list[Event]) -> None:
        events.sort(key=_AT_MS)
        self.at: list[int] = list(map(_AT_MS, events))
        # map(attrgetter) + accumulate keep the loops in C: indexing a year
        # of hourly data stays well under a second.
        self.prefix: list[list[Any]] = [
            list(itertools.accumulate(map(attrgetter(attr), events), initial=Decimal(0) if is_dec else 0))
            for attr, _, is_dec in _COLUMNS
        ]


def _plain_decimal(d: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent form (1000.000 ->
    1000, 2482084.980 -> 2482084.98); the value is unchanged."""
    if d == d.to_integral_value():
        return d.quantize(Decimal(1), context=_EXACT)
    return d.normalize(_EXACT)


class UsageIndex:
    """Immutable index over events answering ShowStatistics queries in
    O(series * log n)."""

    def __init__(self, events: Iterable[Event]) -> None:
        self.events: tuple[Event, ...] = tuple(events)
        self._cloud_eye: CloudEyeIndex | None = None
        self._cloud_eye_lock = threading.Lock()
        grouped: dict[tuple[int, str, str, str], list[Event]] = {}
        # Nested by (service_type, infer_type) first: every query fixes both.
        self._series: dict[tuple[int, str], dict[tuple[str, str], _Series]] = {}
        with _gc_paused(), localcontext(_EXACT):
            for e in self.events:
                grouped.setdefault(_SERIES_KEY(e), []).append(e)
            for (service_type, infer_type, api_key, ip), evs in grouped.items():
                by_type = self._series.setdefault((service_type, infer_type), {})
                by_type[(api_key, ip)] = _Series(evs)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def cloud_eye(self) -> CloudEyeIndex:
        """The same events as Cloud Eye holds them (built on first use: ShowStatistics tests never
        pay for it)."""
        with self._cloud_eye_lock:
            if self._cloud_eye is None:
                self._cloud_eye = CloudEyeIndex(self.events)
            return self._cloud_eye

    def query(
        self,
        start_ms: int,
        end_ms: int,
        service_type: int,
        infer_type: str = "real_time",
        api_keys: Sequence[str] | None = None,
        ips: Sequence[str] | None = None,
    ) -> dict[str, int | Decimal]:
        """Sum of events with start_ms <= at_ms < end_ms that match.

        ``api_keys`` / ``ips``: None or an empty list means "no filter"
        (an empty-string api key is a real label: online-experience calls).
        """
        if isinstance(api_keys, str) or isinstance(ips, str):
            raise TypeError("api_keys and ips are lists of strings, not a string")
        key_filter = set(api_keys) if api_keys else None
        ip_filter = set(ips) if ips else None
        totals: list[Any] = [Decimal(0) if is_dec else 0 for _, _, is_dec in _COLUMNS]
        with localcontext(_EXACT):
            for (api_key, ip), series in self._series.get((service_type, infer_type), {}).items():
                if key_filter is not None and api_key not in key_filter:
                    continue
                if ip_filter is not None and ip not in ip_filter:
                    continue
                lo = bisect_left(series.at, start_ms)
                hi = bisect_left(series.at, end_ms)
                if lo >= hi:
                    continue
                for i, column in enumerate(series.prefix):
                    totals[i] += column[hi] - column[lo]
            return {
                key: _plain_decimal(total) if is_dec else total
                for (_, key, is_dec), total in zip(_COLUMNS, totals)
            }


# Indexes are cached by the identity of their (immutable) event tuple, so that
# expected_usage(SEED_EVENTS, ...) or expected_usage(cloud.events, ...) in a
# loop does not re-index every time.  Lists are never looked up: they could
# be mutated between calls.  Entries keep their tuple alive, so ids stay unique.
_INDEX_CACHE: dict[int, tuple[tuple[Event, ...], UsageIndex]] = {}
_INDEX_CACHE_SIZE = 4
_INDEX_CACHE_LOCK = threading.Lock()


def build_index(events: Iterable[Event] | UsageIndex) -> UsageIndex:
    """An index for ``events`` (returned as is if it already is one)."""
    if isinstance(events, UsageIndex):
        return events
    if isinstance(events, tuple):
        with _INDEX_CACHE_LOCK:
            hit = _INDEX_CACHE.get(id(events))
            if hit is not None and hit[0] is events:
                return hit[1]
    index = UsageIndex(events)
    with _INDEX_CACHE_LOCK:
        while len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[id(index.events)] = (index.events, index)
    return index


def expected_usage(
    events: Iterable[Event] | UsageIndex,
    start_ms: int,
    end_ms: int,
    service_type: int,
    infer_type: str = "real_time",
    api_keys: Sequence[str] | None = None,
    ips: Sequence[str] | None = None,
) -> dict[str, int | Decimal]:
    """The ShowStatistics response (ints and Decimals) the server gives for
    these parameters -- the very same computation.  For many queries over a
    big list, pass a UsageIndex (``build_index(events)``) to index it once."""
    return build_index(events).query(start_ms, end_ms, service_type, infer_type, api_keys, ips)


# ---------------------------------------------------------------------------
# 3. Datasets
# ---------------------------------------------------------------------------

_CST = timezone(timedelta(hours=8))  # Asia/Shanghai has had no DST since 1991


def _ces_id(kind: str, name: str) -> str:
    """A stable 32-hex id (Cloud Eye's real id formats are not documented)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"fakecloud:{kind}:{name}").hex


def ces_key_id(api_key: str) -> str:
    """Cloud Eye's ``maas_key_id`` of the API key whose name (the ShowStatistics label) is ``api_key``."""
    return _ces_id("key", api_key)


# The model services Cloud Eye files calls under (maas_api_id, name), per service type: preset models
# for 2, the user's own deployed services for 1 (one named in Chinese, as users do: 2 columns a character).
CES_MODELS: dict[int, tuple[tuple[str, str], ...]] = {
    2: tuple((_ces_id("model", name), name) for name in ("DeepSeek-V3", "DeepSeek-R1", "Qwen3-32B")),
    1: tuple((_ces_id("model", name), name) for name in ("客服助手-qwen2.5-7b", "my-glm-4-9b")),
}


def _model(service_type: int, n: int) -> dict[str, str]:
    model_id, name = CES_MODELS[service_type][n]
    return {"model_id": model_id, "model_name": name}


def _cst_ms(month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, month, day, hour, minute, tzinfo=_CST).timestamp() * 1000)


def _seed_events() -> tuple[Event, ...]:
    d = Decimal
    ip = "192.0.2.10"
    return (
        # --- service_type 2, real_time: the three parts of SEED_EXPECTED ----
        # Kept well inside the range (and away from its edges in UTC too) so
        # that any sensible day-splitting of --from/--to counts them once.
        Event(_cst_ms(5, 9, 10), 2, "real_time", "key-alpha", ip,
              30000, 3500, d("1100000.123"), d("1088000.111"), d("11000.012"), **_model(2, 0)),
        Event(_cst_ms(5, 13, 15, 30), 2, "real_time", "key-beta", ip,
              25000, 3002, d("900000.457"), d("890000.250"), d("9000.500"), **_model(2, 1)),
        Event(_cst_ms(5, 19, 21), 2, "real_time", "key-alpha", ip,
              12188, 1500, d("482084.400"), d("478504.001"), d("4872.416"), **_model(2, 0)),
        # --- service_type 2, real_time, far outside the range (must not count)
        Event(_cst_ms(4, 20, 12), 2, "real_time", "key-alpha", ip,
              5000, 100, d("150000.789"), d("149000.456"), d("1000.333")),
        Event(_cst_ms(6, 10, 12), 2, "real_time", "key-beta", ip,
              7000, 70, d("210000.111"), d("208000.001"), d("2000.110")),
        # --- service_type 2, batch (tasks and infer counts are nonzero) ------
        Event(_cst_ms(5, 10, 3), 2, "batch", "key-alpha", ip,
              1200, 15, d("86000.125"), d("80000.500"), d("6000.625"), 12, 1188),
        Event(_cst_ms(5, 16, 8, 45), 2, "batch", "", "198.51.100.7",
              800, 4, d("43000.007"), d("40000.003"), d("3000.004"), 5, 790),
        # --- service_type 1 and 4 --------------------------------------------
        Event(_cst_ms(5, 11, 9), 1, "real_time", "key-alpha", ip,
              4321, 21, d("12345.678"), d("12000.001"), d("345.677"), **_model(1, 0)),
        Event(_cst_ms(5, 17, 18), 1, "real_time", "", "198.51.100.7",
              999, 9, d("2222.222"), d("2000.111"), d("222.111"), **_model(1, 1)),
        Event(_cst_ms(5, 12, 14), 4, "real_time", "key-beta", ip,
              321, 3, d("654.321"), d("600.300"), d("54.021")),
        Event(_cst_ms(5, 18, 6), 4, "batch", "key-beta", ip,
              40, 1, d("99.999"), d("90.009"), d("9.990"), 2, 38),
    )


SEED_EVENTS: tuple[Event, ...] = _seed_events()

HOURLY_SERVICE_TYPES = (1, 2, 4)
HOURLY_API_KEYS = ("key-alpha", "key-beta", "")
HOURLY_IPS = ("192.0.2.10", "198.51.100.7")
_HOURLY_COMBOS: tuple[tuple[int, str, str, str], ...] = tuple(
    itertools.product(HOURLY_SERVICE_TYPES, INFER_TYPES, HOURLY_API_KEYS, HOURLY_IPS)
)
# Traffic shape over the UTC hour of day (quiet night in China, busy afternoon).
_DIURNAL = (3, 4, 5, 6, 7, 8, 8, 7, 6, 6, 5, 5, 4, 3, 2, 1, 1, 1, 1, 1, 1, 1, 2, 2)
# Token amounts (thousands, 3 decimals, last digit never 0) are drawn from
# prebuilt pools: constructing ~1M Decimals per year of data would dominate
# the generation time.
_PROMPT_POOL: tuple[Decimal, ...] = tuple(
    Decimal((i * 7919) % 50_000 * 10 + 1 + i % 9).scaleb(-3) for i in range(4093)
)
_COMPLETION_POOL: tuple[Decimal, ...] = tuple(
    Decimal((i * 104729) % 2_000 * 10 + 1 + i % 9).scaleb(-3) for i in range(1021)
)


# Per combination: the model services its calls may go to (by hour) and its key's id; custom
# endpoints (type 4) are not in Cloud Eye.
_HOURLY_IDENTITIES: tuple[tuple[tuple[tuple[str, str], ...], str], ...] = tuple(
    (CES_MODELS.get(service_type, (("", ""),)), ces_key_id(api_key) if service_type in CES_MODELS else "")
    for service_type, _, api_key, _ in _HOURLY_COMBOS
)


def _hours(start_ms: int, end_ms: int) -> Iterator[tuple[int, int, int]]:
    """Each UTC hour boundary in [start_ms, end_ms): (its epoch ms, the hour number, its diurnal weight)."""
    for at in range(-(-start_ms // HOUR_MS) * HOUR_MS, end_ms, HOUR_MS):
        yield at, at // HOUR_MS, _DIURNAL[(at // HOUR_MS) % 24]


def _hour_values(x: int, diurnal: int) -> tuple[int, int, Decimal, Decimal]:
    """An hour's requests, errors, prompt and completion (thousands) from its mixed seed."""
    requests = 1 + diurnal * (x % 37) + (x >> 9) % 5
    return (requests, requests * ((x >> 14) % 7) // 40, _PROMPT_POOL[(x >> 3) % len(_PROMPT_POOL)],
            _COMPLETION_POOL[(x >> 17) % len(_COMPLETION_POOL)])


def _mixed(hour: int, c: int) -> int:
    """Cheap integer mixing of (hour, combination): every value of that hour's event comes from it."""
    x = ((hour * 0x9E3779B1) ^ ((c + 1) * 0x85EBCA77)) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    return x ^ (x >> 12)


def hourly_events(start_ms: int, end_ms: int) -> list[Event]:
    """Deterministic synthetic usage: one event per UTC hour boundary in
    [start_ms, end_ms) for every combination of service type (1, 2, 4),
    infer type, api key ("key-alpha", "key-beta", "") and ip; values are a
    pure function of the hour and the combination (no randomness).  A type 1
    or 2 event goes to one of its type's CES_MODELS, chosen by the hour."""
    events: list[Event] = []
    append = events.append
    with _gc_paused():
        for at, hour, diurnal in _hours(start_ms, end_ms):
            for c, (service_type, infer_type, api_key, ip) in enumerate(_HOURLY_COMBOS):
                x = _mixed(hour, c)
                requests, errors, prompt, completion = _hour_values(x, diurnal)
                if infer_type == "batch":
                    tasks = (x >> 21) % 4
                    infer = tasks * (3 + (x >> 24) % 50)
                else:
                    tasks = infer = 0
                models, key_id = _HOURLY_IDENTITIES[c]
                model_id, model_name = models[(x >> 27) % len(models)]
                append(Event(at, service_type, infer_type, api_key, ip, requests, errors,
                             prompt + completion, prompt, completion, tasks, infer, model_id, model_name, key_id))
    return events


GRID_DEFAULT = (4, 3)  # --dataset grid: model services, API keys per model service


def grid_model(n: int) -> tuple[str, str]:
    """(maas_api_id, name) of the grid dataset's model service number ``n`` (from 0)."""
    name = f"grid-model-{n + 1:02d}"
    return _ces_id("model", name), name


def grid_key(n: int) -> str:
    """The name (ShowStatistics' key label) of the grid dataset's API key number ``n`` (from 0)."""
    return f"grid-key-{n + 1:02d}"


def grid_events(start_ms: int, end_ms: int, models: int = GRID_DEFAULT[0],
                keys: int = GRID_DEFAULT[1]) -> list[Event]:
    """For the benchmarks: every model service of ``models`` called with each of ``keys`` API keys in
    every UTC hour of [start_ms, end_ms) (preset services, real time, one caller IP), so that Cloud Eye
    has a datapoint in every hour of every series -- the most a run per model and key can receive.
    Values are a pure function of the hour and the pair, as in hourly_events."""
    if models < 1 or keys < 1:
        raise ValueError("the grid needs at least one model service and one key")
    identities = [(*grid_model(m), ces_key_id(grid_key(k)), grid_key(k)) for m in range(models) for k in range(keys)]
    events: list[Event] = []
    append = events.append
    with _gc_paused():
        for at, hour, diurnal in _hours(start_ms, end_ms):
            for c, (model_id, model_name, key_id, key_name) in enumerate(identities):
                requests, errors, prompt, completion = _hour_values(_mixed(hour, c), diurnal)
                append(Event(at, 2, "real_time", key_name, HOURLY_IPS[0], requests, errors,
                             prompt + completion, prompt, completion, 0, 0, model_id, model_name, key_id))
    return events


# ---------------------------------------------------------------------------
# 4. JSON rendering
# ---------------------------------------------------------------------------


def format_decimal(d: Decimal) -> str:
    """Fixed-point text (never exponent notation, never via float)."""
    if not d.is_finite():
        raise ValueError(f"cannot render {d!r} as JSON")
    return format(d, "f")


def render_json(value: Any) -> str:
    """JSON text in which Decimals are exact fixed-point numbers.

    json.dumps cannot do this without going through float, which would turn
    2456504.362 into whatever the binary approximation prints as.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, float):
        return json.dumps(value, allow_nan=False)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}: {render_json(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render_json(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Parse a request body; floats become Decimal so nothing is lost, and
    NaN/Infinity (which Python's json accepts by default) are refused."""
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


# ---------------------------------------------------------------------------
# 5. SDK-HMAC-SHA256
# ---------------------------------------------------------------------------

ALGORITHM = "SDK-HMAC-SHA256"
SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_AUTH_RE = re.compile(
    r"SDK-HMAC-SHA256\s+Access=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-fA-F]{64})\s*"
)
_SDK_DATE_RE = re.compile(r"\d{8}T\d{6}Z")


def _encode(s: str) -> str:
    # quote() always keeps A-Za-z0-9_.- ; "~" is the remaining RFC 3986 unreserved char.
    return quote(s, safe="~")


def canonical_uri(path: str) -> str:
    """Each segment decoded then re-encoded; always ends with '/'."""
    uri = "/".join(_encode(unquote(segment)) for segment in path.split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query_string(query: str | Iterable[tuple[str, str]]) -> str:
    """Sorted ``k=v`` pairs, each side percent-encoded, joined with '&'.

    ``query`` is the raw query string as received (or decoded pairs).  Sorting
    is on the decoded pairs, as the SDK signer does.
    """
    pairs = parse_qsl(query, keep_blank_values=True) if isinstance(query, str) else list(query)
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    path: str,
    query: str | Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """``headers`` must be keyed by lowercase name."""
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query_string(query),
            canonical_headers,  # ends with "\n": an empty line precedes SignedHeaders
            ";".join(signed_headers),
            hashlib.sha256(body).hexdigest(),
        )
    )


def string_to_sign(canonical: str, sdk_date: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def compute_signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    access_key: str = DEMO_AK,
    secret_key: str = DEMO_SK,
    security_token: str | None = None,
    sdk_date: str | None = None,
) -> dict[str, str]:
    """Headers for a signed request (for tests that talk to the fake
    directly).  Signs every given header plus Host, X-Sdk-Date and
    X-Security-Token (names containing '_' are skipped, like the SDK does).
    test_fakecloud.py cross-checks this against huaweicloudsdkcore."""
    parts = urlsplit(url)
    out = dict(headers or {})
    lower = {k.lower() for k in out}
    if "host" not in lower:
        out["Host"] = parts.netloc
    if "x-sdk-date" not in lower:
        out["X-Sdk-Date"] = sdk_date or datetime.now(timezone.utc).strftime(SDK_DATE_FORMAT)
    if security_token is not None and "x-security-token" not in lower:
        out["X-Security-Token"] = security_token
    by_name = {k.lower(): str(v) for k, v in out.items()}
    signed = sorted(name for name in by_name if "_" not in name)
    canonical = canonical_request(method, parts.path or "/", parts.query, by_name, signed, body)
    signature = compute_signature(secret_key, string_to_sign(canonical, by_name["x-sdk-date"]))
    out["Authorization"] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return out


@dataclass(frozen=True)
class AuthResult:
    access_key: str | None
    error: str | None  # None: authenticated; else the cause (never contains a secret)
    canonical_request: str | None = None  # the server's view, for debugging signature mismatches

    @property
    def ok(self) -> bool:
        return self.error is None


def verify_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Mapping[str, tuple[str, str | None]],
    *,
    now: float,
    skew_limit: float = CLOCK_SKEW_LIMIT_S,
) -> AuthResult:
    """Check an SDK-HMAC-SHA256 signed request the way API Gateway does.

    ``headers``: lowercase name -> value, as received (Host included).
    ``now``: server clock, epoch seconds.
    """
    auth = headers.get("authorization")
    if not auth:
        return AuthResult(None, "the Authorization header is missing")
    m = _AUTH_RE.fullmatch(auth.strip())
    if m is None:
        return AuthResult(
            None,
            "the Authorization header is malformed "
            "(expected 'SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=<64 hex>')",
        )
    access_key, signed_text, signature = m.groups()
    if access_key not in credentials:
        return AuthResult(access_key, f"the access key {access_key} does not exist")
    secret_key, token = credentials[access_key]

    signed = signed_text.split(";")
    if any(not h or h != h.lower() for h in signed) or signed != sorted(set(signed)):
        return AuthResult(access_key, "SignedHeaders must be non-empty lowercase names, sorted and unique")
    sdk_date = headers.get("x-sdk-date")
    if sdk_date is None:
        return AuthResult(access_key, "the X-Sdk-Date header is missing")
    required_missing = [h for h in ("host", "x-sdk-date") if h not in signed]
    if required_missing:
        return AuthResult(access_key, f"SignedHeaders must include {' and '.join(required_missing)}")
    absent = [h for h in signed if h not in headers]
    if absent:
        return AuthResult(access_key, f"signed header(s) not present in the request: {', '.join(absent)}")

    try:
        if not _SDK_DATE_RE.fullmatch(sdk_date.strip()):
            raise ValueError
        signed_at = datetime.strptime(sdk_date.strip(), SDK_DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return AuthResult(access_key, "X-Sdk-Date must be a UTC time formatted as YYYYMMDDTHHMMSSZ")
    skew = abs(now - signed_at.timestamp())
    if skew > skew_limit:
        return AuthResult(
            access_key,
            f"the request has expired: X-Sdk-Date {sdk_date.strip()} is {int(skew)} s away from "
            f"the server time (limit {int(skew_limit)} s)",
        )

    sent_token = headers.get("x-security-token")
    if token is not None:
        if sent_token is None:
            return AuthResult(access_key, "X-Security-Token is required for a temporary access key")
        if "x-security-token" not in signed:
            return AuthResult(access_key, "X-Security-Token must be listed in SignedHeaders")
        if not hmac.compare_digest(sent_token.strip().encode("utf-8"), token.encode("utf-8")):
            return AuthResult(access_key, "the X-Security-Token is invalid or has expired")
    elif sent_token is not None:
        return AuthResult(access_key, "X-Security-Token must not be sent with a permanent access key")

    def signature_for(signed_view: Mapping[str, str]) -> tuple[str, str]:
        canonical = canonical_request(method, path, query, signed_view, signed, body)
        return canonical, compute_signature(secret_key, string_to_sign(canonical, sdk_date.strip()))

    canonical, expected = signature_for(headers)
    if hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("ascii")):
        return AuthResult(access_key, None, canonical)
    message = (
        "the signature does not match: check the secret key and how the canonical request "
        "(method, path, query, signed headers, body) is built"
    )
    # A classic client bug: signing "host" without the port (or with it) while
    # the HTTP library sends the other form.  Say so instead of just "mismatch".
    received_host = headers["host"].strip()
    bare_host = received_host.rsplit(":", 1)[0] if not received_host.endswith("]") else received_host
    if bare_host != received_host:
        _, with_bare_host = signature_for({**headers, "host": bare_host})
        if hmac.compare_digest(with_bare_host.encode("ascii"), signature.lower().encode("ascii")):
            message = (f"the signature was computed for Host {bare_host!r} but the request was sent "
                       f"with Host {received_host!r}")
    if "x-sdk-content-sha256" in headers:
        message += " (note: X-Sdk-Content-Sha256 is ignored here; the hash of the raw body is signed)"
    return AuthResult(access_key, message, canonical)


# ---------------------------------------------------------------------------
# 6. ShowStatistics request validation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatisticsQuery:
    service_type: int
    start_time: int
    end_time: int
    infer_type: str
    timezone: str | None = None
    api_keys: tuple[str, ...] | None = None
    ips: tuple[str, ...] | None = None


_REQUIRED_FIELDS = ("service_type", "start_time", "end_time", "infer_type")
_OPTIONAL_FIELDS = ("timezone", "api_keys", "ips")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, Decimal, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _int_field(body: Mapping[str, Any], name: str) -> int:
    value = body[name]
    if type(value) is not int:  # excludes bool (an int subclass) and 1.0
        raise ValueError(f"{name} must be an integer, got {_json_type(value)} {render_json(value)}")
    return value


def _str_list_field(body: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be an array of strings")
    return tuple(value)


def parse_statistics_request(body: Any) -> StatisticsQuery:
    """Validate a ShowStatistics JSON body; ValueError(message) if invalid.

    Optional fields given as JSON null are treated as absent.
    """
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    for name in _REQUIRED_FIELDS:
        if name not in body or body[name] is None:
            raise ValueError(f"missing required field: {name}")

    service_type = _int_field(body, "service_type")
    if service_type == 3:
        raise ValueError("service_type 3 is not supported; valid values are 1, 2 and 4")
    if service_type not in SERVICE_TYPES:
        raise ValueError(f"service_type must be one of 1, 2, 4, got {service_type}")
    start_time = _int_field(body, "start_time")
    end_time = _int_field(body, "end_time")
    if start_time < 0:
        raise ValueError("start_time must not be negative")
    if end_time <= start_time:
        raise ValueError("end_time must be greater than start_time")
    if end_time - start_time > MAX_SPAN_MS:
        raise ValueError(
            f"the time range must not exceed 30 days ({MAX_SPAN_MS} ms), got {end_time - start_time} ms"
        )
    infer_type = body["infer_type"]
    if infer_type not in INFER_TYPES:
        raise ValueError(f"infer_type must be 'real_time' or 'batch', got {render_json(infer_type)}")

    tz = body.get("timezone")
    if tz is not None:
        if not isinstance(tz, str) or not tz:
            raise ValueError("timezone must be a non-empty IANA time zone name")
        try:
            ZoneInfo(tz)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"timezone {render_json(tz)} is not a valid IANA time zone") from None

    return StatisticsQuery(
        service_type=service_type,
        start_time=start_time,
        end_time=end_time,
        infer_type=infer_type,
        timezone=tz,
        api_keys=_str_list_field(body, "api_keys"),
        ips=_str_list_field(body, "ips"),
    )


# ---------------------------------------------------------------------------
# 7. Cloud Eye (SYS.MaaS) and the MaaS monitor's names
# ---------------------------------------------------------------------------
#
# Shapes and limits from huaweicloudsdkces 3.1.x (v1 ListMetrics, BatchListMetricData) and Cloud Eye's
# API reference (ces_03_0034) and FAQ (ces_faq_0010); the monitor's instances call from Huawei's
# cloudeye-exporter (collector/maas.go).  Where they are silent, the fake's choice is said where made.

CES_NAMESPACE = "SYS.MaaS"
CES_MODEL_DIM = "maas_api_id"
CES_KEY_DIM = "maas_key_id"
_CES_DIM_ORDER = (CES_MODEL_DIM, CES_KEY_DIM)
# Cloud Eye counts calls to preset services and My Services, not custom endpoints (MaaS user guide
# usermanual_maas_0068); batch inference is taken to be absent (the CLI's contract refuses it there).
CES_INFER_TYPE = "real_time"
CES_MAX_METRICS = 500  # BatchListMetricData: "包含的指标数据对象个数为[1,500]"; more is a 400
CES_MAX_DATAPOINTS = 3000  # "指标数量*(to-from)/监控周期<=3000", else from moves forward, silently
CES_LIST_LIMIT = 1000  # ListMetrics: limit in [1, 1000], default 1000
CES_TIME_RANGE = (1111111111111, 9999999999999)  # from and to, epoch ms
CES_FILTERS = ("average", "variance", "min", "max", "sum")
CES_RETENTION_DAYS = 155  # hourly sums (FAQ "How Long Is Metric Data Retained?")
MONITOR_LIMIT = 100  # what cloudeye-exporter asks for: the largest page the fake gives, whatever limit asks
# The IAM actions that `FakeCloud.denied` understands for Cloud Eye.
CES_METRICS_ACTION = "ces:metrics:list"
CES_DATA_ACTION = "ces:metricData:list"


@dataclass(frozen=True)
class CesPeriod:
    ms: int  # "1" is raw (1-minute) data: 60 000 ms, says the API reference
    max_span: int  # a longer to - from moves from to to - max_span (the SDK's docstring of from)
    retention: int  # older datapoints are gone (FAQ)


CES_PERIODS: dict[str, CesPeriod] = {
    "1": CesPeriod(60_000, 4 * HOUR_MS, 2 * DAY_MS),
    "60": CesPeriod(60_000, 4 * HOUR_MS, 2 * DAY_MS),  # in the SDK's enum, not in the reference: as "1"
    "300": CesPeriod(300_000, DAY_MS, 10 * DAY_MS),
    "1200": CesPeriod(1_200_000, 3 * DAY_MS, 20 * DAY_MS),
    "3600": CesPeriod(HOUR_MS, 10 * DAY_MS, CES_RETENTION_DAYS * DAY_MS),
    "14400": CesPeriod(4 * HOUR_MS, 30 * DAY_MS, 300 * DAY_MS),
    "86400": CesPeriod(DAY_MS, 180 * DAY_MS, 5 * 365 * DAY_MS),
}

_THOUSAND = Decimal(1000)
# (metric, unit, its value for one event).  Cloud Eye has them per minute, so an hourly sum is the
# hour's amount.  Names from cloudeye-exporter's SYS.MaaS table; units are not documented.  Errors are
# split as 5xx = a quarter (rounded down), 4xx = the rest, so 4xx + 5xx is ShowStatistics' count.
# req_count_2xx is listed too: Cloud Eye has more SYS.MaaS metrics than the CLI reads.
CES_METRICS: tuple[tuple[str, str, Callable[[Event], Any]], ...] = (
    ("total_tokens", "count", lambda e: e.total_token * _THOUSAND),
    ("prompt_tokens", "count", lambda e: e.prompt_token * _THOUSAND),
    ("completion_tokens", "count", lambda e: e.completion_token * _THOUSAND),
    ("rpm", "count/min", attrgetter("request_count")),
    ("req_count_4xx", "count", lambda e: e.error_count - e.error_count // 4),
    ("req_count_5xx", "count", lambda e: e.error_count // 4),
    ("req_count_2xx", "count", lambda e: e.request_count - e.error_count),
)
CES_METRIC_NAMES: tuple[str, ...] = tuple(name for name, _, _ in CES_METRICS)
_CES_UNITS = {name: unit for name, unit, _ in CES_METRICS}

Dims = tuple[tuple[str, str], ...]  # a series: ((maas_api_id, id),) or with (maas_key_id, id)


def cloud_eye_identity(e: Event) -> tuple[str, str, str, str] | None:
    """(maas_api_id, model name, maas_key_id, key name) that Cloud Eye files an event under; None
    for what it does not count (custom endpoints, batch inference)."""
    if e.service_type not in CES_MODELS or e.infer_type != CES_INFER_TYPE:
        return None
    model_id, model_name = (e.model_id, e.model_name) if e.model_id else CES_MODELS[e.service_type][0]
    return model_id, model_name, e.key_id or ces_key_id(e.api_key), e.api_key


def cloud_eye_usage(events: Iterable[Event], start_ms: int, end_ms: int, *, model_id: str | None = None,
                    key_id: str | None = None) -> dict[str, Decimal]:
    """Each CES_METRICS metric summed over the events Cloud Eye counts with start_ms <= at < end_ms
    (of one model and/or key when given), exact: a plain restatement, for tests to compare with."""
    totals = dict.fromkeys(CES_METRIC_NAMES, Decimal(0))
    with localcontext(_EXACT):
        for e in events:
            identity = cloud_eye_identity(e)
            if (identity is None or not start_ms <= e.at_ms < end_ms or model_id not in (None, identity[0])
                    or key_id not in (None, identity[2])):
                continue
            for name, _, value in CES_METRICS:
                totals[name] += value(e)
    return totals


_CES_ROUNDING = Context(prec=60, rounding=ROUND_HALF_UP)
_CENT = Decimal("0.01")


def _ces_number(value: Decimal) -> Decimal:
    """Rounded half up to 2 decimals and written the way a double prints (123.0, 12.5, 12.35):
    Cloud Eye's values are doubles (the SDK types them float)."""
    rounded = value.quantize(_CENT, context=_CES_ROUNDING)
    if rounded == rounded.to_integral_value(context=_CES_ROUNDING):
        return rounded.quantize(Decimal("0.1"), context=_CES_ROUNDING)
    return rounded.normalize(_CES_ROUNDING)


def _rollup(per_minute: list[Decimal], how: str) -> Decimal:
    """A period's value from the minutes that had calls (minutes without any report nothing)."""
    with localcontext(_CES_ROUNDING):
        total = sum(per_minute, Decimal(0))
        if how == "sum":
            result = total
        elif how == "max":
            result = max(per_minute)
        elif how == "min":
            result = min(per_minute)
        else:
            mean = total / len(per_minute)
            result = mean if how == "average" else sum((v - mean) ** 2 for v in per_minute) / len(per_minute)
    return _ces_number(result)


class CloudEyeIndex:
    """The events as Cloud Eye holds them: for each series (a model service alone, and a model
    service with an API key), the events' times in order and their CES_METRICS values; and the
    names of every model and key."""

    def __init__(self, events: Iterable[Event]) -> None:
        grouped: dict[Dims, list[tuple[int, tuple[Any, ...]]]] = {}
        # (model id, key id) -> (model name, key name)
        self.instances: dict[tuple[str, str], tuple[str, str]] = {}
        with _gc_paused(), localcontext(_EXACT):
            for e in events:
                identity = cloud_eye_identity(e)
                if identity is None:
                    continue
                model_id, model_name, key_id, key_name = identity
                row = (e.at_ms, tuple(value(e) for _, _, value in CES_METRICS))
                grouped.setdefault(((CES_MODEL_DIM, model_id),), []).append(row)
                grouped.setdefault(((CES_MODEL_DIM, model_id), (CES_KEY_DIM, key_id)), []).append(row)
                self.instances.setdefault((model_id, key_id), (model_name, key_name))
        self.series: dict[Dims, tuple[list[int], list[tuple[Any, ...]]]] = {}
        for dims, rows in grouped.items():
            rows.sort(key=itemgetter(0))
            self.series[dims] = ([at for at, _ in rows], [values for _, values in rows])
        # Answers already computed: the index never changes (new events make a new index), so the same
        # question has the same answer. The benchmarks' repeated runs then time the client and the
        # network, not this fake summing 150 days of events again (a real Cloud Eye answers in ms).
        self._answered: dict[tuple[Any, ...], list[tuple[int, Decimal]]] = {}
        self._answered_lock = threading.Lock()

    def newest(self, dims: Dims) -> int:
        """When the series last had a call (epoch ms)."""
        return self.series[dims][0][-1]

    def datapoints(self, dims: Dims, metric: str, start_ms: int, end_ms: int, period_ms: int,
                   how: str, offset: int = 0, shift: int = 0) -> list[tuple[int, Decimal]]:
        """(period start, value) of every period with calls at start_ms <= at < end_ms, in order
        (periods start ``offset`` ms after multiples of ``period_ms``; a call at ``at`` counts in the
        period that holds ``at - shift``)."""
        key = (dims, metric, start_ms, end_ms, period_ms, how, offset, shift)
        with self._answered_lock:
            answered = self._answered.get(key)
        if answered is None:
            answered = self._datapoints(dims, metric, start_ms, end_ms, period_ms, how, offset, shift)
            with self._answered_lock:
                if len(self._answered) > 100_000:  # a long-lived standalone fake stays bounded
                    self._answered.clear()
                self._answered[key] = answered
        return list(answered)

    def _datapoints(self, dims: Dims, metric: str, start_ms: int, end_ms: int, period_ms: int,
                    how: str, offset: int, shift: int) -> list[tuple[int, Decimal]]:
        found = self.series.get(dims)
        if found is None:
            return []
        times, values = found
        column = CES_METRIC_NAMES.index(metric)
        periods: dict[int, dict[int, Any]] = {}
        with localcontext(_EXACT):
            for i in range(bisect_left(times, start_ms), bisect_left(times, end_ms)):
                at = times[i]
                moved = at - shift
                minutes = periods.setdefault(moved - (moved - offset) % period_ms, {})
                minute = at - at % 60_000
                minutes[minute] = minutes.get(minute, 0) + values[i][column]
        return [(start, _rollup([Decimal(v) for v in minutes.values()], how))
                for start, minutes in sorted(periods.items())]


@dataclass
class CloudEyeSettings:
    """What the fake Cloud Eye does; ``FakeCloud.reset()`` restores the defaults (``retention``
    from the constructor)."""

    retention: bool = False  # each period's documented retention (hourly: 155 days before the clock)
    # Metrics that ListMetrics never lists and whose data calls answer no datapoints.
    missing_metrics: set[str] = field(default_factory=set)
    # maas_api_id / maas_key_id values whose series ListMetrics leaves out (data calls still answer).
    unlisted: set[str] = field(default_factory=set)
    # ListMetrics leaves out series without a call in the last idle_hours hours, as Cloud Eye drops
    # idle series; with retention, series without a call in the 155 days are left out anyway.
    idle_hours: float | None = None
    page_limit: int | None = None  # ListMetrics pages hold at most this many, whatever limit asks
    # Also answer the datapoint stamped exactly at `to` (real Cloud Eye's choice is not documented).
    to_inclusive: bool = False
    # 4-hour and daily sums start this many ms after multiples of their period since the epoch (28,800,000:
    # days at UTC+8 midnight), not at them as the fake's default and the script assume (not documented).
    rollup_offset: int = 0
    # 4-hour and daily sums hold the calls of the period that starts this many ms later than their stamp
    # says (-28,800,000: a day at UTC+8 midnight stamped at UTC midnight): stamps right, sums not.
    rollup_shift: int = 0
    # maas_api_id / maas_key_id values the monitor's instances call does not name (deleted services).
    nameless: set[str] = field(default_factory=set)

    def listed_since(self, now_ms: int) -> int | None:
        cutoffs = []
        if self.retention:
            cutoffs.append(now_ms - CES_PERIODS["3600"].retention)
        if self.idle_hours is not None:
            cutoffs.append(now_ms - int(self.idle_hours * HOUR_MS))
        return max(cutoffs) if cutoffs else None


_CES_NAMESPACE_RE = re.compile(r"[A-Za-z]\w*\.[A-Za-z]\w*", re.ASCII)
_CES_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class ListMetricsQuery:
    namespace: str | None = None
    metric_name: str | None = None
    dims: tuple[tuple[str, str], ...] = ()
    start: str = ""
    limit: int = CES_LIST_LIMIT
    order: str = "asc"


def parse_list_metrics_query(query: Mapping[str, str]) -> ListMetricsQuery:
    """Validate ListMetrics' query parameters (ValueError(message) if invalid)."""
    namespace, metric_name = query.get("namespace"), query.get("metric_name")
    if namespace is not None and not (3 <= len(namespace) <= 32 and _CES_NAMESPACE_RE.fullmatch(namespace)):
        raise ValueError(f"namespace {namespace!r} must look like service.item")
    if metric_name is not None and not (len(metric_name) <= 96 and _CES_NAME_RE.fullmatch(metric_name)):
        raise ValueError(f"metric_name {metric_name!r} is invalid")
    dims = []
    for i in range(4):
        raw = query.get(f"dim.{i}")
        if raw is None:
            continue
        name, comma, value = raw.partition(",")
        if not comma or not (len(name) <= 32 and _CES_NAME_RE.fullmatch(name)) or not 1 <= len(value) <= 256:
            raise ValueError(f"dim.{i} must be key,value")
        dims.append((name, value))
    limit_text = query.get("limit")
    if limit_text is not None and not (limit_text.isascii() and limit_text.isdigit()
                                       and 1 <= int(limit_text) <= CES_LIST_LIMIT):
        raise ValueError(f"limit must be an integer from 1 to {CES_LIST_LIMIT}")
    order = query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ValueError("order must be asc or desc")
    return ListMetricsQuery(namespace, metric_name, tuple(dims), query.get("start", ""),
                            int(limit_text) if limit_text is not None else CES_LIST_LIMIT, order)


def _ces_marker(metric: str, dims: Dims) -> str:
    # The reference's example: start=SYS.ECS.cpu_util.instance_id:d9112af5-...; two dimensions are
    # joined with "," here (not documented).
    return f"{CES_NAMESPACE}.{metric}." + ",".join(f"{name}:{value}" for name, value in dims)


def _ces_dimensions(dims: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in dims]


def ces_list_metrics(index: CloudEyeIndex, q: ListMetricsQuery, settings: CloudEyeSettings,
                     now_ms: int) -> dict[str, Any]:
    """ListMetrics' answer: one entry per metric and series that has had calls (see settings),
    sorted by marker, paged after ``start``."""
    since = settings.listed_since(now_ms)
    entries: list[tuple[str, str, Dims]] = []
    for dims in index.series if q.namespace in (None, CES_NAMESPACE) else ():
        present = dict(dims)
        if ((since is not None and index.newest(dims) < since) or any(v in settings.unlisted for _, v in dims)
                or any(present.get(name) != value and not (value == "*" and name in present)
                       for name, value in q.dims)):
            continue
        entries += [(_ces_marker(metric, dims), metric, dims) for metric in CES_METRIC_NAMES
                    if metric not in settings.missing_metrics and q.metric_name in (None, metric)]
    descending = q.order == "desc"
    entries.sort(reverse=descending)
    after = [e for e in entries if not q.start or (e[0] < q.start if descending else e[0] > q.start)]
    page = after[:min(q.limit, settings.page_limit or CES_LIST_LIMIT)]
    return {
        "metrics": [{"namespace": CES_NAMESPACE, "metric_name": metric, "dimensions": _ces_dimensions(dims),
                     "unit": _CES_UNITS[metric]} for _, metric, dims in page],
        "meta_data": {"count": len(page), "marker": page[-1][0] if page else "", "total": len(entries)},
    }


@dataclass(frozen=True)
class BatchQuery:
    metrics: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]  # namespace, metric, dimensions
    from_ms: int
    to_ms: int
    period: str
    filter: str


def _ces_string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def parse_batch_query(body: Any) -> BatchQuery:
    """Validate a BatchListMetricData body (ValueError(message) if invalid).  Unknown fields are
    ignored."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    for name in ("metrics", "from", "to", "period", "filter"):
        if body.get(name) is None:
            raise ValueError(f"missing required field: {name}")
    metrics = body["metrics"]
    if not isinstance(metrics, list) or not 1 <= len(metrics) <= CES_MAX_METRICS:
        count = len(metrics) if isinstance(metrics, list) else _json_type(metrics)
        raise ValueError(f"metrics must be an array of 1 to {CES_MAX_METRICS} metrics, got {count}")
    parsed = []
    for i, metric in enumerate(metrics):
        if not isinstance(metric, dict):
            raise ValueError(f"metrics[{i}] must be an object")
        dims = metric.get("dimensions")
        if not isinstance(dims, list) or not 1 <= len(dims) <= 4 or not all(isinstance(d, dict) for d in dims):
            raise ValueError(f"metrics[{i}].dimensions must be an array of 1 to 4 objects")
        parsed.append((_ces_string(metric.get("namespace"), f"metrics[{i}].namespace"),
                       _ces_string(metric.get("metric_name"), f"metrics[{i}].metric_name"),
                       tuple((_ces_string(d.get("name"), f"metrics[{i}].dimensions[{j}].name"),
                              _ces_string(d.get("value"), f"metrics[{i}].dimensions[{j}].value"))
                             for j, d in enumerate(dims))))
    from_ms, to_ms = _int_field(body, "from"), _int_field(body, "to")
    for name, value in (("from", from_ms), ("to", to_ms)):
        if not CES_TIME_RANGE[0] <= value <= CES_TIME_RANGE[1]:
            raise ValueError(f"{name} must be an epoch time in ms from {CES_TIME_RANGE[0]} to {CES_TIME_RANGE[1]}")
    if from_ms >= to_ms:
        raise ValueError("from must be less than to")
    if body["period"] not in CES_PERIODS:  # a string: "3600", not 3600
        raise ValueError(f"period must be one of {', '.join(map(repr, CES_PERIODS))}, got {render_json(body['period'])}")
    if body["filter"] not in CES_FILTERS:
        raise ValueError(f"filter must be one of {', '.join(CES_FILTERS)}, got {render_json(body['filter'])}")
    return BatchQuery(tuple(parsed), from_ms, to_ms, body["period"], body["filter"])


def ces_window(q: BatchQuery, to_inclusive: bool = False) -> tuple[int, int]:
    """[start, end) of the period starts Cloud Eye answers for: from rounded down to the period
    (the reference: 云监控会根据所选择的聚合粒度向前取整from参数), then moved forward, silently, as far as
    the period's longest span and the 3000-datapoint rule need (a moved from lands on a period
    boundary, so the answer never exceeds 3000 datapoints)."""
    p = CES_PERIODS[q.period].ms
    count = len(q.metrics)
    end = (q.to_ms // p + 1) * p if to_inclusive else -(-q.to_ms // p) * p
    span = min(CES_PERIODS[q.period].max_span, CES_MAX_DATAPOINTS * p // count)
    if q.to_ms - q.from_ms > span:
        start = -(-(q.to_ms - span) // p) * p
    else:
        start = q.from_ms - q.from_ms % p
    return max(start, end - (CES_MAX_DATAPOINTS // count) * p), end


def ces_batch_answer(index: CloudEyeIndex, q: BatchQuery, settings: CloudEyeSettings,
                     now_ms: int) -> dict[str, Any]:
    """BatchListMetricData's answer: per requested metric, in order, the datapoints of its series
    within ces_window (and the retention); none for a series or metric Cloud Eye does not have."""
    period = CES_PERIODS[q.period]
    start, end = ces_window(q, settings.to_inclusive)
    if settings.retention:
        start = max(start, -(-(now_ms - period.retention) // period.ms) * period.ms)
    answer = []
    for namespace, metric, dims in q.metrics:
        names = [name for name, _ in dims]
        known = (namespace == CES_NAMESPACE and metric in CES_METRIC_NAMES and metric not in settings.missing_metrics
                 and len(set(names)) == len(names) and set(names) <= set(_CES_DIM_ORDER))
        series = tuple(sorted(dims, key=lambda d: _CES_DIM_ORDER.index(d[0]))) if known else ()
        offset, shift = (settings.rollup_offset, settings.rollup_shift) if period.ms > HOUR_MS else (0, 0)
        points = index.datapoints(series, metric, start, end, period.ms, q.filter, offset, shift) if known else []
        answer.append({"namespace": namespace, "metric_name": metric, "dimensions": _ces_dimensions(dims),
                       "datapoints": [{q.filter: value, "timestamp": at} for at, value in points],
                       "unit": _CES_UNITS[metric] if known else ""})
    return {"metrics": answer}


@dataclass(frozen=True)
class InstancesQuery:
    namespace: str
    start: int
    limit: int
    dims: tuple[str, ...]


def parse_instances_request(body: Any) -> InstancesQuery:
    """Validate the monitor's instances body (ValueError(message) if invalid).  ``start`` and
    ``limit`` may be absent (Go's omitempty drops a 0 start): 0 and 100."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    namespace = _ces_string(body.get("namespace"), "namespace")
    start = 0 if body.get("start") is None else _int_field(body, "start")
    limit = MONITOR_LIMIT if body.get("limit") is None else _int_field(body, "limit")
    if start < 0 or not 1 <= limit <= CES_LIST_LIMIT:
        raise ValueError(f"start must be >= 0 and limit from 1 to {CES_LIST_LIMIT}")
    query = body.get("query")
    if not isinstance(query, list) or not all(isinstance(q, dict) for q in query):
        raise ValueError("query must be an array of {\"dim_name\": ...} objects")
    dims = tuple(q.get("dim_name") for q in query)
    if dims not in (_CES_DIM_ORDER[:1], _CES_DIM_ORDER):
        raise ValueError("query must name maas_api_id, or maas_api_id and maas_key_id")
    return InstancesQuery(namespace, start, limit, dims)


def monitor_instances(index: CloudEyeIndex, q: InstancesQuery, nameless: set[str]) -> dict[str, Any]:
    """The names of every model (or model and key) that had calls, sorted by name, paged by start."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for (model_id, key_id), (model_name, key_name) in index.instances.items() if q.namespace == CES_NAMESPACE else ():
        if model_id in nameless or (len(q.dims) == 2 and key_id in nameless):
            continue
        item = {CES_MODEL_DIM: {"id": model_id, "name": model_name}}
        if len(q.dims) == 2:
            item[CES_KEY_DIM] = {"id": key_id, "name": key_name}
        rows[(model_name, model_id) + ((key_name, key_id) if len(q.dims) == 2 else ())] = item
    ordered = [rows[k] for k in sorted(rows)]
    return {"instances": ordered[q.start:q.start + min(q.limit, MONITOR_LIMIT)], "total": len(ordered)}


# ---------------------------------------------------------------------------
# 8. HTTP server
# ---------------------------------------------------------------------------

_MAAS_PATH_RE = re.compile(r"/v1/([^/]+)/maas/monitoring/show-statistics")
# Cloud Eye and the MaaS monitor are told apart from IAM and MaaS by path, on the same port.
_CES_METRICS_PATH_RE = re.compile(r"/V1\.0/([^/]+)/metrics")
_CES_DATA_PATH_RE = re.compile(r"/V1\.0/([^/]+)/batch-query-metric-data")
_MONITOR_PATH_RE = re.compile(r"/v1/([^/]+)/maas/monitor/instances")
_PATH_KINDS = (("maas", _MAAS_PATH_RE), ("ces_metrics", _CES_METRICS_PATH_RE), ("ces_data", _CES_DATA_PATH_RE),
               ("monitor", _MONITOR_PATH_RE))
_IAM_PROJECTS_PATH = "/v3/projects"
_JSON_TYPE = "application/json;charset=UTF-8"
# Error codes are modelled on the real ones; the ModelArts numbers are invented.
_APIGW_AUTH = "APIGW.0301"
_APIGW_NO_API = "APIGW.0101"
_MAAS_BAD_PARAM = "ModelArts.4101"
_MAAS_NO_PROJECT = "ModelArts.4104"
_MAAS_DENIED = "ModelArts.0203"
_MAAS_INTERNAL = "ModelArts.0001"


class Headers(dict[str, str]):
    """Received headers: a dict keyed by lowercase name whose lookups are
    case-insensitive (``h["X-Sdk-Date"] == h["x-sdk-date"]``)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


def _received_value(value: str) -> str:
    # http.client decodes header bytes as latin-1; the SDK signs the text and
    # sends its UTF-8 bytes, so recover the text when that is what came in.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


@dataclass
class LoggedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]  # decoded; the last value wins for repeated names
    headers: Headers
    body: bytes
    json: Any  # parsed body (floats as Decimal) or None
    kind: str  # "iam" | "maas" | "ces_metrics" | "ces_data" | "monitor" | "other"
    at: float  # the server's monotonic time (FakeCloud.monotonic) when the request was fully received
    request_id: str
    raw_target: str = ""  # the request target as sent (path?query)
    status: int | None = None  # None: no response (reset / hang faults)
    fault: str | None = None  # kind of the injected fault that answered it
    auth_error: str | None = None
    canonical_request: str | None = None  # the server's, when a signature was checked
    ces_from: int | None = None  # BatchListMetricData: the from Cloud Eye used (rounded down, maybe moved)


FAULT_KINDS = (
    "status", "html", "invalid_json", "json", "reset", "hang", "redirect", "delay",
    # hostile answers: slow, endless, huge, or echoing the secret key
    "trickle_headers", "trickle_body", "endless_chunked", "oversized", "gzip_bomb", "echo_secret",
    # answers that parse but cannot be trusted: the normal answer, reshaped
    "duplicate_key", "deep_nesting", "implausible", "echo_in_numbers",
)
# The kinds that let the request be answered as usual, then reshape its 2xx JSON answer.
RESHAPING_FAULTS = ("duplicate_key", "deep_nesting", "implausible", "echo_in_numbers")
IMPLAUSIBLE_WHAT = ("errors", "prompt", "completion")
# "ces" is either Cloud Eye call; "ces_metrics" ListMetrics, "ces_data" BatchListMetricData;
# "monitor" the MaaS monitor's instances call (names).
FAULT_PATHS = ("maas", "iam", "ces", "ces_metrics", "ces_data", "monitor", "any")
_FAULT_PARAMS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (required, optional)
    "status": ({"status"}, {"body", "retry_after", "error_code", "error_msg"}),
    "html": (set(), {"status", "body"}),
    "invalid_json": (set(), {"status"}),
    "json": ({"body"}, {"status"}),
    "reset": (set(), set()),
    "hang": (set(), {"seconds"}),
    "redirect": ({"location"}, {"status"}),
    "delay": (set(), {"seconds"}),
    "trickle_headers": (set(), {"interval"}),
    "trickle_body": (set(), {"interval", "status"}),
    "endless_chunked": (set(), {"chunk_bytes"}),
    "oversized": (set(), {"size", "status"}),
    "gzip_bomb": (set(), {"inflated"}),
    "echo_secret": ({"encoding"}, {"status"}),
    "duplicate_key": (set(), {"key", "value"}),
    "deep_nesting": (set(), {"levels"}),
    "implausible": (set(), {"what"}),
    "echo_in_numbers": (set(), set()),
}
ECHO_SECRET_ENCODINGS = ("json_escaped", "url_encoded", "cut")
# "cut": where the secret key's first characters sit in the ~400-character
# error_msg -- inside the 200-300 characters a shortening client keeps.
ECHO_SECRET_CUT_AT = 190
ECHO_SECRET_CUT_CHARS = 14
ECHO_SECRET_CUT_LENGTH = 400
# Smallest "oversized" / "gzip_bomb" sizes: room for any statistics answer.
_MIN_PADDED_BODY = 1024


def _check_fault_values(kind: str, params: Mapping[str, Any]) -> None:
    """Value checks for the kinds whose params a typo would turn into a busy
    loop or an impossible body (ValueError)."""
    def check(name: str, ok: bool, wanted: str) -> None:
        if not ok:
            raise ValueError(f"fault {kind!r}: {name} must be {wanted}, got {params[name]!r}")

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def integer(value: Any) -> bool:
        return type(value) is int

    if "interval" in params:
        check("interval", number(params["interval"]) and params["interval"] > 0, "a number > 0")
    if "chunk_bytes" in params:
        check("chunk_bytes", integer(params["chunk_bytes"]) and params["chunk_bytes"] >= 1, "an integer >= 1")
    for name in ("size", "inflated"):
        if name in params:
            check(name, integer(params[name]) and params[name] >= _MIN_PADDED_BODY,
                  f"an integer >= {_MIN_PADDED_BODY}")
    if "encoding" in params:
        check("encoding", params["encoding"] in ECHO_SECRET_ENCODINGS, f"one of {ECHO_SECRET_ENCODINGS}")
    if "levels" in params:
        check("levels", integer(params["levels"]) and params["levels"] >= 1, "an integer >= 1")
    if "what" in params:
        check("what", params["what"] in IMPLAUSIBLE_WHAT, f"one of {IMPLAUSIBLE_WHAT}")
    if "key" in params:
        check("key", isinstance(params["key"], str), "a string")


# Default error bodies for "status" faults, modelled on API Gateway / ModelArts.
_FAULT_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: (_MAAS_BAD_PARAM, "Invalid parameter."),
    401: (_APIGW_AUTH, "Incorrect IAM authentication information: injected fault"),
    403: (_MAAS_DENIED, "Permission denied."),
    404: (_APIGW_NO_API, "The API does not exist or has not been published in the environment"),
    429: ("APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit,limit:5,time:1 second"),
    500: (_MAAS_INTERNAL, "Internal server error."),
    502: ("APIGW.0202", "Backend unavailable"),
    503: ("APIGW.0201", "Request error. Backend service unavailable"),
    504: ("APIGW.0203", "Backend timeout"),
}
# ... and for Cloud Eye's own answers (not API Gateway's: 401, 429 and 502-504 stay as above).
_CES_FAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("ces.0014", "Some content in message body is not correct."),
    403: ("403", "Policy doesn't allow [ces:metricData:list] to be performed"),
    404: ("ces.0016", "The requested resource does not exist."),
    500: ("ces.0007", "Internal service error."),
}
_HTML_PAGE = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


# What a client hanging up (or stop() shutting the socket) raises in a write.
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError)
_ZERO_USAGE: dict[str, int] = {key: 0 for key in RESPONSE_KEYS}
_ENDLESS_PREFIX = b'{"total_token": 1, "pad": "'

# gzip_bomb bodies by inflated size (each a few MB at most), built once per process.
_GZIP_BOMB_CACHE: dict[int, bytes] = {}
_GZIP_BOMB_LOCK = threading.Lock()


def gzip_bomb_body(inflated: int, cancel: threading.Event | None = None) -> bytes | None:
    """A gzip member that inflates to exactly ``inflated`` bytes: spaces, then
    a JSON statistics answer of zeros (so it *is* valid JSON, for a client
    patient and reckless enough to inflate it all).  Streamed through the
    compressor, never held inflated; cached per size.  None if ``cancel`` got
    set while building (2.5 GB take several seconds; nothing is cached then)."""
    tail = render_json(_ZERO_USAGE).encode("ascii")
    if inflated < len(tail):
        raise ValueError(f"inflated must be at least {len(tail)} bytes")
    with _GZIP_BOMB_LOCK:
        cached = _GZIP_BOMB_CACHE.get(inflated)
        if cached is not None:
            return cached
        # Z_RLE finds the same 258-byte runs as the default strategy (same
        # size, ~1000:1) in half the time.
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31, zlib.DEF_MEM_LEVEL, zlib.Z_RLE)
        block = memoryview(b" " * (1 << 20))
        full, rest = divmod(inflated - len(tail), len(block))
        parts: list[bytes] = []
        for _ in range(full):
            if cancel is not None and cancel.is_set():
                return None
            parts.append(compressor.compress(block))
        parts += [compressor.compress(block[:rest]), compressor.compress(tail), compressor.flush()]
        body = b"".join(parts)
        _GZIP_BOMB_CACHE[inflated] = body
        return body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@dataclass
class Fault:
    kind: str
    path: str  # one of FAULT_PATHS
    params: dict[str, Any]
    remaining: int

    def matches(self, kind: str) -> bool:
        return self.path in ("any", kind) or (self.path == "ces" and kind.startswith("ces_"))


class _Server(ThreadingHTTPServer):
    # A burst of parallel clients must not overflow the listen queue
    # (the default of 5 makes connections fail or stall under load).
    request_queue_size = 128
    daemon_threads = True
    # Idle keep-alive connections would make server_close() wait forever.
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cloud: FakeCloud, ssl_context: ssl.SSLContext | None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.cloud = cloud
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError):  # "::" then accepts IPv4 too
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # HTTPServer.server_bind would call socket.getfqdn(), a DNS lookup
        # that can take seconds on machines without network.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the per-connection thread.  The TLS handshake happens here,
        # not in the accept loop: one slow or stuck client must not block
        # every other connection.
        conn = request
        self.cloud._connection_opened(conn)
        # Headers and body go out in separate writes; without TCP_NODELAY,
        # Nagle + the client's delayed ACK add ~40 ms to every response.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_context is not None:
                try:
                    conn = self.ssl_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    if self.cloud.verbose:
                        print(f"fakecloud: TLS handshake failed: {exc}", file=sys.stderr)
                    return
                self.cloud._connection_replaced(request, conn)
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            self.cloud._connection_closed(conn)
            if conn is not request:
                self.shutdown_request(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request is normal in fault tests; stay quiet.
        if self.cloud.verbose:
            super().handle_error(request, client_address)


# -- answers that parse but cannot be trusted (the reshaping faults) -----------

# implausible: how far above its bound a part is pushed (more than any total the fake makes).
_IMPLAUSIBLE_MAAS = {"errors": ("total_error_count", "total_request_count", 1),
                     "prompt": ("total_prompt_token", "total_token", Decimal("0.001")),
                     "completion": ("total_completion_token", "total_token", Decimal("0.001"))}
_IMPLAUSIBLE_CES = {"errors": "req_count_4xx", "prompt": "prompt_tokens", "completion": "completion_tokens"}
_IMPLAUSIBLE_CES_EXTRA = {"errors": 10**9, "prompt": 10**12, "completion": 10**12}


def reshaped_answer(fault: Fault, payload: dict, kind: str, signing_secret: Callable[[], str]) -> str:
    """The JSON text of a 2xx answer as a reshaping fault leaves it.

    duplicate_key(key=first key, value=0): the object ends with ``key`` once more.
    deep_nesting(levels=65): an ``extra`` field makes the answer ``levels`` deep
        (the answer object itself is level 1).
    implausible(what="errors"): ShowStatistics: the errors one above the requests,
        or the prompt or completion tokens one token above the total; Cloud Eye data:
        every req_count_4xx (prompt_tokens, completion_tokens) datapoint raised far
        above any rpm (total_tokens) the fake makes.
    echo_in_numbers(): ShowStatistics: the requests and the (thousands of) total
        and prompt tokens are the longest run of digits of the request's SK
        (8 or more, else an answer naming what is missing), errors and completion
        0: a sound answer whose numbers hold a piece of the key.
    """
    p = fault.params
    if fault.kind == "duplicate_key":
        key = p.get("key") or next(iter(payload), "total_request_count")
        text = render_json(payload)
        again = f"{json.dumps(key, ensure_ascii=False)}: {render_json(p.get('value', 0))}"
        return text[:-1] + (", " if payload else "") + again + "}"
    if fault.kind == "deep_nesting":
        levels = int(p.get("levels", 65))
        extra = "[" * (levels - 1) + "]" * (levels - 1) if levels > 1 else "null"
        return "{" + f'"extra": {extra}' + (", " + render_json(payload)[1:] if payload else "}")
    answer = json.loads(render_json(payload), parse_float=Decimal)
    if fault.kind == "implausible":
        what = p.get("what", "errors")
        if kind == "maas":
            part, bound, step = _IMPLAUSIBLE_MAAS[what]
            answer[part] = Decimal(str(answer[bound])) + step  # one request, or one token, too many
        for metric in answer.get("metrics", ()) if kind == "ces_data" else ():
            if metric.get("metric_name") == _IMPLAUSIBLE_CES[what]:
                for point in metric.get("datapoints") or ():
                    for name, value in point.items():
                        if name != "timestamp":
                            point[name] = value + _IMPLAUSIBLE_CES_EXTRA[what]
        return render_json(answer)
    # echo_in_numbers
    runs = sorted(re.findall(r"[0-9]{8,}", signing_secret()), key=len)
    if kind != "maas" or not runs:
        return render_json({"error": "echo_in_numbers needs a ShowStatistics call signed with an SK that holds "
                                     "8 or more digits in a row"})
    digits = runs[-1]
    answer.update(total_request_count=int(digits), total_error_count=0, total_token=Decimal(digits),
                  total_prompt_token=Decimal(digits), total_completion_token=Decimal(0))
    return render_json(answer)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has Content-Length
    server_version = "FakeHuaweiCloud/1.0"
    server: _Server

    request_id: str = ""
    entry: LoggedRequest | None = None
    responded: bool = False

    # -- plumbing ------------------------------------------------------------

    def handle_one_request(self) -> None:
        # One handler instance serves all requests of a keep-alive connection.
        self.request_id = uuid.uuid4().hex
        self.entry = None
        self.responded = False
        super().handle_one_request()

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header reads the server clock, which ``server_time_offset`` moves like the
        # signature check's: a skewed fake shows its skew where a client can measure it.
        return super().date_time_string(self.server.cloud.server_now() if timestamp is None else timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.cloud.verbose:
            super().log_message(format, *args)

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        self.send_header("X-Request-Id", self.request_id or uuid.uuid4().hex)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests (bad request line, unsupported method...): answer
        # in API Gateway style too, and give up on the connection.
        self.close_connection = True
        self._send_json(code, {"error_code": "APIGW.0001", "error_msg": message or _phrase(code),
                               "request_id": self.request_id})

    def _send(self, status: int, body: bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        if self.entry is not None:
            self.entry.status = status  # before writing: the client may look at the log at once
        self.responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        fault, self.reshape = getattr(self, "reshape", None), None
        if fault is not None and 200 <= status < 300 and isinstance(payload, dict):
            text = reshaped_answer(fault, payload, self.entry.kind if self.entry else "other",
                                   lambda: self._signing_secret(self.server.cloud))
        else:
            text = render_json(payload)
        body = text.encode("utf-8")
        accepted = {part.split(";")[0].strip().lower() for part in self.headers.get("Accept-Encoding", "").split(",")}
        if "gzip" in accepted and len(body) >= GZIP_FROM:  # as gateways do; MaaS' and Cloud Eye's own habit is unknown
            body, headers = gzip.compress(body, mtime=0), {**(headers or {}), "Content-Encoding": "gzip"}
        self._send(status, body, _JSON_TYPE, headers)

    def _error(self, status: int, code: str, msg: str, *, request_id: bool = False) -> None:
        payload: dict[str, Any] = {"error_code": code, "error_msg": msg}
        if request_id:
            payload["request_id"] = self.request_id
        self._send_json(status, payload)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        length = int(length_text)  # ValueError -> 400
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > MAX_BODY_BYTES:
            raise OverflowError
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(1024).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise OverflowError
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _drop_connection(self, *, reset: bool) -> None:
        """Close without answering; with reset, send a TCP RST."""
        self.close_connection = True
        sock = self.connection
        if reset:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The makefile() objects hold references; the fd (and so the RST) is
        # only released once all of them are closed.
        for closable in (self.rfile, self.wfile, sock):
            with contextlib.suppress(OSError):
                closable.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = lambda self: self._handle()  # noqa: E731

    # -- request flow --------------------------------------------------------

    def _handle(self) -> None:
        cloud = self.server.cloud
        with cloud._track_in_flight():
            try:
                self._handle_request(cloud)
            except OSError:  # the client went away (timeouts, fault tests): not our problem
                self.close_connection = True
            except Exception:  # a bug in the fake: make it loud, but still answer
                traceback.print_exc()
                if not self.responded:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self._error(500, _MAAS_INTERNAL, "fakecloud internal error (see its stderr)")

    def _handle_request(self, cloud: FakeCloud) -> None:
        try:
            body = self._read_body()
        except OverflowError:
            self.close_connection = True
            self._error(413, "APIGW.0001", "Request entity too large", request_id=True)
            return
        except ValueError:
            self.close_connection = True
            self._error(400, "APIGW.0001", "Malformed request body framing", request_id=True)
            return

        target = urlsplit(self.path)
        path, raw_query = target.path, target.query
        try:
            parsed: Any = parse_json(body) if body else None
        except ValueError:
            parsed = None
        if path.startswith("/v3/"):
            kind = "iam"
        else:
            kind = next((name for name, pattern in _PATH_KINDS if pattern.fullmatch(path)), "other")
        headers = Headers()
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), _received_value(value))
        entry = LoggedRequest(
            method=self.command, path=path, query=dict(parse_qsl(raw_query, keep_blank_values=True)),
            headers=headers, body=body, json=parsed, kind=kind, at=cloud.monotonic(),
            request_id=self.request_id, raw_target=self.path,
        )
        self.entry = entry
        cloud._record(entry)
        if kind == "maas":
            cloud._wait_at_gate()

        if cloud.latency > 0:
            cloud._stop_event.wait(cloud.latency)

        self.reshape = None  # one connection may carry many requests
        fault = cloud._take_fault(kind)
        if fault is not None:
            entry.fault = fault.kind
            if self._apply_fault(fault, cloud):
                return

        if kind == "maas" and cloud.fail_all:
            self._error(500, _MAAS_INTERNAL, "Internal server error (fail_all is set on the fake).")
            return

        # API Gateway looks the API up before authenticating.
        route = None
        if kind == "iam" and path == _IAM_PROJECTS_PATH and self.command in ("GET", "HEAD"):
            route = self._iam_projects
        elif kind == "maas" and self.command == "POST":
            route = self._maas_show_statistics
        elif kind == "ces_metrics" and self.command in ("GET", "HEAD"):
            route = self._ces_list_metrics
        elif kind == "ces_data" and self.command == "POST":
            route = self._ces_batch_data
        elif kind == "monitor" and self.command == "POST":
            route = self._monitor_instances
        if route is None:
            self._error(404, _APIGW_NO_API,
                        "The API does not exist or has not been published in the environment",
                        request_id=True)
            return

        result = verify_request(
            self.command, path, raw_query, headers, body, cloud.credentials,
            now=cloud.server_now(), skew_limit=cloud.clock_skew_limit,
        )
        entry.auth_error, entry.canonical_request = result.error, result.canonical_request
        if not result.ok:
            self._error(401, _APIGW_AUTH, f"Incorrect IAM authentication information: {result.error}",
                        request_id=True)
            return
        route(cloud, entry)

    def _iam_projects(self, cloud: FakeCloud, entry: LoggedRequest) -> None:
        if IAM_ACTION in cloud.denied:
            self._error(403, "IAM.0003", f"Policy doesn't allow {IAM_ACTION} to be performed.")
            return
        name = entry.query.get("name")
        base = "https://iam.myhuaweicloud.com/v3/projects"
        projects = [
            {
                "id": p["id"],
                "name": p["name"],
                "domain_id": p.get("domain_id", DEMO_DOMAIN_ID),
                "description": p.get("description", ""),
                "enabled": p.get("enabled", True),
                "is_domain": False,
                "parent_id": p.get("parent_id", p.get("domain_id", DEMO_DOMAIN_ID)),
                "links": {"self": f"{base}/{p['id']}"},
            }
            for p in cloud.projects
            if name is None or p["name"] == name or p["name"].startswith(name + "_")
        ]
        self_link = base + (f"?name={quote(name, safe='')}" if name is not None else "")
        self._send_json(200, {"projects": projects,
                              "links": {"self": self_link, "previous": None, "next": None}})

    def _maas_show_statistics(self, cloud: FakeCloud, entry: LoggedRequest) -> None:
        match = _MAAS_PATH_RE.fullmatch(entry.path)
        assert match is not None
        project_id = unquote(match.group(1))
        if project_id not in {p["id"] for p in cloud.projects}:
            self._error(404, _MAAS_NO_PROJECT,
                        f"Project {project_id} does not exist or is not accessible with this access key.")
            return
        if MAAS_ACTION in cloud.denied:
            self._error(403, _MAAS_DENIED, f"Policy doesn't allow {MAAS_ACTION} to be performed.")
            return
        try:
            q = parse_statistics_request(entry.json)
        except ValueError as exc:
            self._error(400, _MAAS_BAD_PARAM, f"Invalid parameter: {exc}")
            return
        self._send_json(200, cloud.answer(q))

    def _ces_error(self, status: int, code: str, details: str) -> None:
        # Cloud Eye's v1 APIs answer errors in their own shape (API reference, "Error Codes"),
        # not API Gateway's error_code/error_msg: a client reading only those finds nothing.
        self._send_json(status, {"http_code": str(status), "message": {"details": details, "code": code}})

    def _ces_checked(self, cloud: FakeCloud, entry: LoggedRequest, pattern: re.Pattern[str],
                     action: str) -> bool:
        """False (after answering) when the project or the permission is wrong."""
        match = pattern.fullmatch(entry.path)
        assert match is not None
        if unquote(match.group(1)) not in {p["id"] for p in cloud.projects}:
            self._ces_error(400, "ces.0003", "The tenant ID is left blank or incorrect.")
            return False
        if action in cloud.denied:
            self._ces_error(403, "403", f"Policy doesn't allow [{action}] to be performed")
            return False
        return True

    def _ces_list_metrics(self, cloud: FakeCloud, entry: LoggedRequest) -> None:
        if not self._ces_checked(cloud, entry, _CES_METRICS_PATH_RE, CES_METRICS_ACTION):
            return
        try:
            q = parse_list_metrics_query(entry.query)
        except ValueError as exc:
            self._ces_error(400, "ces.0013", f"The URL parameter is invalid or does not exist: {exc}")
            return
        self._send_json(200, ces_list_metrics(cloud.index.cloud_eye, q, cloud.ces, int(cloud.server_now() * 1000)))

    def _ces_batch_data(self, cloud: FakeCloud, entry: LoggedRequest) -> None:
        if not self._ces_checked(cloud, entry, _CES_DATA_PATH_RE, CES_DATA_ACTION):
            return
        try:
            q = parse_batch_query(entry.json)
        except ValueError as exc:
            self._ces_error(400, "ces.0014", f"Some content in message body is not correct: {exc}")
            return
        entry.ces_from = ces_window(q, cloud.ces.to_inclusive)[0]
        self._send_json(200, ces_batch_answer(cloud.index.cloud_eye, q, cloud.ces, int(cloud.server_now() * 1000)))

    def _monitor_instances(self, cloud: FakeCloud, entry: LoggedRequest) -> None:
        match = _MONITOR_PATH_RE.fullmatch(entry.path)
        assert match is not None
        project_id = unquote(match.group(1))
        if project_id not in {p["id"] for p in cloud.projects}:
            self._error(404, _MAAS_NO_PROJECT,
                        f"Project {project_id} does not exist or is not accessible with this access key.")
            return
        try:
            q = parse_instances_request(entry.json)
        except ValueError as exc:
            self._error(400, _MAAS_BAD_PARAM, f"Invalid parameter: {exc}")
            return
        self._send_json(200, monitor_instances(cloud.index.cloud_eye, q, cloud.ces.nameless))

    def _apply_fault(self, fault: Fault, cloud: FakeCloud) -> bool:
        """Answer (or not) as the fault says; False means "carry on normally"."""
        p = fault.params
        if fault.kind in RESHAPING_FAULTS:  # answered as usual, then reshaped (_send_json)
            self.reshape = fault
            return False
        if fault.kind == "delay":
            cloud._stop_event.wait(float(p.get("seconds", 1.0)))
            return False
        if fault.kind == "reset":
            self._drop_connection(reset=True)
        elif fault.kind == "hang":
            seconds = p.get("seconds")
            cloud._stop_event.wait(None if seconds is None else float(seconds))
            self._drop_connection(reset=False)
        elif fault.kind == "status":
            status = int(p["status"])
            body = p.get("body")
            headers = {"Retry-After": str(p["retry_after"])} if p.get("retry_after") is not None else {}
            kind = self.entry.kind if self.entry is not None else "other"
            if body is None and kind.startswith("ces_") and status in _CES_FAULT_ERRORS:
                code, msg = _CES_FAULT_ERRORS[status]
                if status == 403 and kind == "ces_metrics":
                    msg = msg.replace(CES_DATA_ACTION, CES_METRICS_ACTION)
                body = {"http_code": str(status),
                        "message": {"details": p.get("error_msg", msg), "code": p.get("error_code", code)}}
            elif body is None:
                code, msg = _FAULT_STATUS_ERRORS.get(status, (_MAAS_INTERNAL, "Injected fault."))
                body = {"error_code": p.get("error_code", code), "error_msg": p.get("error_msg", msg),
                        "request_id": self.request_id}
            if isinstance(body, (str, bytes)):
                raw = body.encode("utf-8") if isinstance(body, str) else body
                self._send(status, raw, _JSON_TYPE, headers)
            else:
                self._send_json(status, body, headers)
        elif fault.kind == "html":
            status = int(p.get("status", 502))
            page = p.get("body") or _HTML_PAGE.format(code=status, phrase=_phrase(status))
            self._send(status, page.encode("utf-8"), "text/html")
        elif fault.kind == "invalid_json":
            self._send(int(p.get("status", 200)), b'{"total_request_count": 1,', _JSON_TYPE)
        elif fault.kind == "json":
            body = p["body"]
            if isinstance(body, (str, bytes)):
                raw = body.encode("utf-8") if isinstance(body, str) else body
                self._send(int(p.get("status", 200)), raw, _JSON_TYPE)
            else:
                self._send_json(int(p.get("status", 200)), body)
        elif fault.kind == "redirect":
            self._send(int(p.get("status", 302)), b"", "text/plain", {"Location": str(p["location"])})
        else:
            hostile = getattr(self, "_fault_" + fault.kind)
            try:
                hostile(p, cloud)
            except _CLIENT_GONE:  # the client hung up, or stop() shut the socket
                self._drop_connection(reset=False)
        return True

    # -- hostile answers (trickle, endless, huge, echoing the secret) --------

    def _statistics_answer(self, cloud: FakeCloud) -> dict[str, int | Decimal]:
        """What ShowStatistics would answer for this request's body (zeros if
        the body is not a valid query, e.g. on the IAM path)."""
        try:
            q = parse_statistics_request(self.entry.json if self.entry is not None else None)
        except ValueError:
            return dict(_ZERO_USAGE)
        return cloud.answer(q)

    def _start_stream(self, status: int, headers: Mapping[str, str]) -> None:
        """Send the status line and ``headers`` of an answer that ends the
        connection (its body is written by the caller)."""
        if self.entry is not None:
            self.entry.status = status  # before writing: the client may look at the log at once
        self.responded = True
        self.close_connection = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def _fault_trickle_headers(self, p: Mapping[str, Any], cloud: FakeCloud) -> None:
        interval = float(p.get("interval", 1.0))
        if self.entry is not None:
            self.entry.status = 200  # the status line does go out
        self.responded = True
        self.close_connection = True
        self.wfile.write(f"{self.protocol_version} 200 OK\r\n".encode("ascii"))
        lines = itertools.chain(
            (f"Server: {self.server_version}\r\n", f"Content-Type: {_JSON_TYPE}\r\n",
             f"X-Request-Id: {self.request_id}\r\n"),
            (f"X-Trickle-{n}: {'a' * 32}\r\n" for n in itertools.count(1)),
        )  # never the blank line that ends the headers
        for byte in (line[i:i + 1] for line in lines for i in range(len(line))):
            if cloud._stop_event.wait(interval):
                break
            self.wfile.write(byte.encode("ascii"))
        self._drop_connection(reset=False)

    def _fault_trickle_body(self, p: Mapping[str, Any], cloud: FakeCloud) -> None:
        interval = float(p.get("interval", 1.0))
        body = render_json(self._statistics_answer(cloud)).encode("utf-8")
        self._start_stream(int(p.get("status", 200)), {"Content-Type": _JSON_TYPE,
                                                       "Content-Length": str(len(body))})
        if self.command != "HEAD":
            for i in range(len(body)):
                if cloud._stop_event.wait(interval):
                    break
                self.wfile.write(body[i:i + 1])
        self._drop_connection(reset=False)

    def _fault_endless_chunked(self, p: Mapping[str, Any], cloud: FakeCloud) -> None:
        size = int(p.get("chunk_bytes", 65536))
        frame = b"%x\r\n" % size
        first = frame + (_ENDLESS_PREFIX + b"x" * size)[:size] + b"\r\n"
        chunk = frame + b"x" * size + b"\r\n"
        self._start_stream(200, {"Content-Type": _JSON_TYPE, "Transfer-Encoding": "chunked"})
        if self.command != "HEAD":
            self.wfile.write(first)
            # No sleep: as fast as the client reads.  A write blocked on a
            # client that stopped reading is woken by stop() shutting the socket.
            while not cloud._stop_event.is_set():
                self.wfile.write(chunk)
        self._drop_connection(reset=False)

    def _fault_oversized(self, p: Mapping[str, Any], cloud: FakeCloud) -> None:
        size = int(p.get("size", 2 * 1024 * 1024))
        answer = render_json(self._statistics_answer(cloud)).encode("utf-8")
        head, tail = answer[:-1] + b', "pad": "', b'"}'
        pad = size - len(head) - len(tail)
        if pad < 0:
            raise ValueError(f"oversized: size {size} is smaller than the answer ({len(head) + len(tail)} bytes)")
        self._send(int(p.get("status", 200)), head + b"x" * pad + tail, _JSON_TYPE)

    def _fault_gzip_bomb(self, p: Mapping[str, Any], cloud: FakeCloud) -> None:
        body = gzip_bomb_body(int(p.get("inflated", 2_500_000_000)), cancel=cloud._stop_event)
        if body is None:  # the server stopped while the body was being built
            self._drop_connection(reset=False)
            return
        self._send(200, body, _JSON_TYPE, {"Content-Encoding": "gzip"})

    def _signing_secret(self, cloud: FakeCloud) -> str:
        """The SK of the AK in the Authorization header (DEMO_SK if none is known)."""
        auth = self.entry.headers.get("authorization", "") if self.entry is not None else ""
        m = _AUTH_RE.fullmatch(auth.strip())
        if m is not None and m.group(1) in cloud.credentials:
            return cloud.credentials[m.group(1)][0]
        return DEMO_SK

    def _fault_echo_secret(self, p: Mapping[str, Any], cloud: FakeCloud) -> None:
        status = int(p.get("status", 400))
        sk = self._signing_secret(cloud)
        encoding = p["encoding"]
        if encoding == "json_escaped":
            # Every character of the SK as a \uXXXX escape: the decoded text has
            # the plain SK, the raw bytes do not.
            units = sk.encode("utf-16-be")
            escaped = "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
            before = json.dumps("Invalid parameter: the request was signed with secret key ")[:-1]
            after = json.dumps("; check the credentials.")[1:]
            raw = f'{{"error_code": "{_MAAS_BAD_PARAM}", "error_msg": {before}{escaped}{after}}}'
            self._send(status, raw.encode("ascii"), _JSON_TYPE)
            return
        if encoding == "url_encoded":
            encoded = "".join(f"%{b:02X}" for b in sk.encode("utf-8"))
            msg = (f"Invalid parameter: callback https://auth.example.invalid/cb?sk={encoded}&state=1 "
                   "is not an allowed redirect")
        else:  # "cut": the SK's first characters right where a shortened message ends
            filler = ("Invalid parameter: the statistics request could not be validated because one "
                      "or more of its fields do not match what the service expects for this project; ")
            label = " secret_key="
            head = (filler * 4)[:ECHO_SECRET_CUT_AT - len(label)]
            head = head[:head.rfind(" ")].ljust(ECHO_SECRET_CUT_AT - len(label), ".") + label
            msg = head + sk[:ECHO_SECRET_CUT_CHARS] + " " + filler * 4
            msg = msg[:ECHO_SECRET_CUT_LENGTH]
        self._send_json(status, {"error_code": _MAAS_BAD_PARAM, "error_msg": msg})


class FakeCloud:
    """Fake IAM + MaaS + Cloud Eye + MaaS monitor endpoint on one port (the
    services are told apart by path, so ``url`` is every endpoint).  Settable
    at any time: ``latency``, ``fail_all``, ``denied``, ``events``,
    ``credentials``, ``projects``, ``server_time_offset``, ``clock_skew_limit``,
    ``retention_days``, ``clock``, and ``ces`` (a CloudEyeSettings: retention,
    missing metrics, unlisted or idle series, ListMetrics page size, nameless
    ids).

    ``clock`` (an object with ``now()`` and ``monotonic()``, such as the
    tests' FakeClock; None: the machine's) is the server's time: its
    signature checks, its retention and the ``at`` of its log.

    ``retention_days`` models MaaS's retention: events older than that many
    days before the server clock are no longer counted (a window wholly
    before it answers zeros).  None (the default in the suite, so that tests
    can query fixed historical dates) keeps every event; the standalone
    server keeps RETENTION_DAYS unless started with --no-retention.
    ``ces_retention`` likewise turns on Cloud Eye's (155 days of hourly
    sums; off in the suite, on in the standalone server)."""

    def __init__(
        self,
        *,
        tls: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        events: Iterable[Event] | UsageIndex | None = None,
        credentials: Mapping[str, tuple[str, str | None]] | None = None,
        projects: Iterable[Mapping[str, Any]] | None = None,
        latency: float = 0.0,
        verbose: bool = False,
        retention_days: int | None = None,
        ces_retention: bool = False,
    ) -> None:
        self.tls = tls
        self.host = host
        self.requested_port = port
        self.credentials: dict[str, tuple[str, str | None]] = (
            dict(credentials) if credentials is not None else default_credentials()
        )
        self.projects: list[dict[str, Any]] = (
            [dict(p) for p in projects] if projects is not None else default_projects()
        )
        self.denied: set[str] = set()
        self.fail_all = False
        self.latency = latency
        self._default_latency = latency
        self.verbose = verbose
        self.clock_skew_limit: float = CLOCK_SKEW_LIMIT_S
        self.server_time_offset: float = 0.0  # seconds added to the server clock
        self.clock: Any = None
        self._gate: dict[str, Any] | None = None
        self._gate_changed = threading.Condition()
        self.retention_days = retention_days
        self._default_retention_days = retention_days
        self.ces = CloudEyeSettings(retention=ces_retention)
        self._default_ces_retention = ces_retention
        self._index = build_index(SEED_EVENTS if events is None else events)
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections: set[Any] = set()
        self._connection_count = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self._ca_pem_path: str | None = None
        self._stop_event = threading.Event()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> FakeCloud:
        if self._server is not None:
            return self
        self._stop_event = threading.Event()
        context = self._make_tls_context() if self.tls else None
        try:
            server = _Server((self.host, self.requested_port), self, context)
        except BaseException:
            self._remove_tmpdir()
            raise
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.005},
            name=f"fakecloud:{server.server_port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stop_event.set()  # releases "hang" faults and latency sleeps
        with self._gate_changed:  # and requests held at the gate
            self._gate_changed.notify_all()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # socket.socket.shutdown on the raw fd also wakes a thread blocked
            # in an SSL read (SSLSocket.shutdown would drop the SSL object).
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None
        self._remove_tmpdir()

    def __enter__(self) -> FakeCloud:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _make_tls_context(self) -> ssl.SSLContext:
        ca, cert = _tls_material()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._tmpdir = tempfile.mkdtemp(prefix="fakecloud-")
        self._ca_pem_path = os.path.join(self._tmpdir, "fakecloud-ca.pem")
        ca.cert_pem.write_to_path(self._ca_pem_path)
        return context

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = self._ca_pem_path = None

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeCloud is not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        """Base URL of IAM, MaaS, Cloud Eye and the MaaS monitor (no trailing slash)."""
        if self.tls:
            # The certificate names localhost, 127.0.0.1 and ::1; "localhost"
            # is what a user would type.
            return f"https://localhost:{self.port}"
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def ca_pem_path(self) -> str | None:
        """PEM of the CA that signed the server certificate (None without TLS)."""
        if not self.tls:
            return None
        if self._ca_pem_path is None:
            raise RuntimeError("FakeCloud is not started")
        return self._ca_pem_path

    def client_env(self, access_key: str = DEMO_AK) -> dict[str, str]:
        """Environment variables pointing the CLI at this server.
        (HW_SECURITY_TOKEN is only set for a temporary access key.)"""
        secret_key, token = self.credentials[access_key]
        env = {
            "HW_ACCESS_KEY": access_key,
            "HW_SECRET_KEY": secret_key,
            "HW_IAM_ENDPOINT": self.url,
            "HW_MAAS_ENDPOINT": self.url,
            "HW_CES_ENDPOINT": self.url,
            "HW_MAAS_MONITOR_ENDPOINT": self.url,
        }
        if token is not None:
            env["HW_SECURITY_TOKEN"] = token
        if self.tls:
            env["REQUESTS_CA_BUNDLE"] = str(self.ca_pem_path)
        return env

    # -- data ----------------------------------------------------------------

    @property
    def events(self) -> tuple[Event, ...]:
        return self._index.events

    @events.setter
    def events(self, events: Iterable[Event] | UsageIndex) -> None:
        self._index = build_index(events)  # built first, then swapped in atomically

    @property
    def index(self) -> UsageIndex:
        return self._index

    def expected_usage(
        self,
        start_ms: int,
        end_ms: int,
        service_type: int,
        infer_type: str = "real_time",
        api_keys: Sequence[str] | None = None,
        ips: Sequence[str] | None = None,
    ) -> dict[str, int | Decimal]:
        """What ShowStatistics answers for these parameters now (retention included)."""
        return self._index.query(max(start_ms, self.retained_from_ms()), end_ms, service_type, infer_type,
                                 api_keys, ips)

    def answer(self, q: StatisticsQuery) -> dict[str, int | Decimal]:
        return self.expected_usage(q.start_time, q.end_time, q.service_type, q.infer_type, q.api_keys, q.ips)

    def cloud_eye_usage(self, start_ms: int, end_ms: int, *, model_id: str | None = None,
                        key_id: str | None = None) -> dict[str, Decimal]:
        """Every Cloud Eye metric summed over the calls at start_ms <= at < end_ms (of one model
        and/or key), exact, from the events themselves (not through the served datapoints);
        ``total_tokens`` etc. are tokens, not thousands.  No retention: what a client should get
        from whole hours that Cloud Eye still keeps."""
        return cloud_eye_usage(self.events, start_ms, end_ms, model_id=model_id, key_id=key_id)

    def cloud_eye_instances(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(maas_api_id, maas_key_id) -> (model name, key name) of every pair that had calls."""
        return dict(self._index.cloud_eye.instances)

    # -- clock ---------------------------------------------------------------

    def server_now(self) -> float:
        """The server clock, epoch seconds."""
        wall = time.time() if self.clock is None else self.clock.now().timestamp()
        return wall + self.server_time_offset

    def monotonic(self) -> float:
        """The server's monotonic time (seconds), as the log's ``at`` reads it."""
        return time.monotonic() if self.clock is None else self.clock.monotonic()

    def retained_from_ms(self) -> int:
        """The oldest instant still counted (epoch ms); 0 without a retention."""
        if self.retention_days is None:
            return 0
        return int(self.server_now() * 1000) - self.retention_days * DAY_MS

    # -- request log ---------------------------------------------------------

    @property
    def log(self) -> list[LoggedRequest]:
        """Snapshot (a new list) of the requests received so far, in order."""
        with self._lock:
            return list(self._log)

    def requests_of(self, kind: str) -> list[LoggedRequest]:
        return [e for e in self.log if e.kind == kind]

    def maas_requests(self) -> list[Any]:
        """Parsed bodies of all ShowStatistics calls, whatever their status
        (None for a body that was not JSON)."""
        return [e.json for e in self.requests_of("maas")]

    def ces_requests(self) -> list[LoggedRequest]:
        """The Cloud Eye calls (ListMetrics and BatchListMetricData) received so far, in order."""
        return [e for e in self.log if e.kind.startswith("ces_")]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- concurrency accounting ----------------------------------------------

    @property
    def max_in_flight(self) -> int:
        """Highest number of requests handled at the same time since the
        last reset_max_in_flight()."""
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def reset_max_in_flight(self) -> None:
        with self._lock:
            self._max_in_flight = self._in_flight

    def hold_statistics(self, count: int, *, after: int = 0, timeout: float = 30.0) -> None:
        """Hold ShowStatistics requests until ``count`` of them are in the server at once (the first
        ``after`` pass straight through), so a test sees a client's concurrency without racing it.
        ``timeout`` (real seconds) is only a safety net: a client that never sends that many at
        once gets its answers late, and ``max_in_flight`` tells."""
        with self._gate_changed:
            self._gate = {"count": count, "after": after, "timeout": timeout, "seen": 0, "held": 0}

    def _wait_at_gate(self) -> None:
        with self._gate_changed:
            gate = self._gate
            if gate is None:
                return
            gate["seen"] += 1
            if gate["seen"] <= gate["after"]:
                return
            gate["held"] += 1
            self._gate_changed.notify_all()
            self._gate_changed.wait_for(lambda: gate["held"] >= gate["count"] or self._stop_event.is_set(),
                                        gate["timeout"])

    @property
    def connection_count(self) -> int:
        """TCP connections accepted so far (to check keep-alive reuse)."""
        return self._connection_count

    @contextlib.contextmanager
    def _track_in_flight(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _connection_opened(self, conn: Any) -> None:
        with self._lock:
            self._connections.add(conn)
            self._connection_count += 1

    def _connection_replaced(self, old: Any, new: Any) -> None:
        with self._lock:
            self._connections.discard(old)
            self._connections.add(new)

    def _connection_closed(self, conn: Any) -> None:
        with self._lock:
            self._connections.discard(conn)

    # -- faults --------------------------------------------------------------

    def add_fault(self, kind: str, *, times: int = 1, path: str = "maas", **params: Any) -> Fault:
        """Queue a fault for the next ``times`` requests to ``path`` (one of
        FAULT_PATHS: "maas", "iam", "ces" (either Cloud Eye call),
        "ces_metrics" (ListMetrics), "ces_data" (BatchListMetricData),
        "monitor" (the instances call) or "any").  Faults apply after the
        request is logged, before authentication.  Kinds and params:

        status(status, body=None, retry_after=None, error_code=None, error_msg=None)
            (on a Cloud Eye path, 400/403/404/500 answer in Cloud Eye's v1
            error shape: {"http_code", "message": {"details", "code"}})
        html(status=502, body=None)   invalid_json(status=200)   json(body, status=200)
        reset()   hang(seconds=None: until stop)   redirect(location, status=302)
        delay(seconds=1.0: then answer normally)

        Hostile answers (each stops promptly on stop() and ends its thread
        when the client hangs up):

        trickle_headers(interval=1.0)   the status line, then header bytes one
            every ``interval`` s, forever: the headers never end.
        trickle_body(interval=1.0, status=200)   full headers (Content-Length),
            then the body one byte every ``interval`` s; it completes as the
            normal answer for the request body (zeros if it is not a valid query).
        endless_chunked(chunk_bytes=65536)   200, chunked JSON-looking filler
            ('{"total_token": 1, "pad": "xxx...') as fast as the client reads,
            never ending.
        oversized(size=2 MiB, status=200)   a valid JSON answer of exactly
            ``size`` bytes (the normal answer plus a long "pad" string).
        gzip_bomb(inflated=2_500_000_000)   200, Content-Encoding: gzip, a body
            of a few MB that inflates to ``inflated`` bytes (spaces, then a
            zero answer); built once per size (see gzip_bomb_body).
        echo_secret(encoding, status=400)   a ModelArts.4101 error whose
            error_msg echoes the SK of the request's AK (DEMO_SK if unknown):
            encoding "json_escaped" (every SK character a \\uXXXX escape in the
            raw JSON), "url_encoded" (every character %XX) or "cut" (400
            characters, the SK's first 14 at offset 190).

        Answers that parse but cannot be trusted: the request is answered as
        usual (authentication included), then its 2xx JSON answer reshaped
        (see reshaped_answer): duplicate_key(key=first key, value=0),
        deep_nesting(levels=65), implausible(what="errors"|"prompt"|"completion";
        ShowStatistics and BatchListMetricData), echo_in_numbers() (ShowStatistics).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if path not in FAULT_PATHS:
            raise ValueError(f"unknown fault path {path!r}; expected one of {FAULT_PATHS}")
        if times < 1:
            raise ValueError("times must be >= 1")
        required, optional = _FAULT_PARAMS[kind]
        missing = required - params.keys()
        unexpected = params.keys() - required - optional
        if missing or unexpected:
            raise ValueError(f"fault {kind!r}: missing params {sorted(missing)}, unexpected {sorted(unexpected)}")
        _check_fault_values(kind, params)
        fault = Fault(kind, path, dict(params), times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, kind: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(kind):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def reset(self) -> None:
        """Back to the constructor's settings for faults, log, denied,
        fail_all, latency, clock, gate, retention and ``ces`` (events,
        credentials and projects are kept): for a server shared between tests."""
        self.clear_faults()
        self.clear_log()
        self.denied.clear()
        self.fail_all = False
        self.latency = self._default_latency
        self.server_time_offset = 0.0
        self.clock = None
        with self._gate_changed:
            if self._gate is not None:
                self._gate["count"] = 0  # lets anything held go
            self._gate = None
            self._gate_changed.notify_all()
        self.retention_days = self._default_retention_days
        self.ces = CloudEyeSettings(retention=self._default_ces_retention)
        self.clock_skew_limit = CLOCK_SKEW_LIMIT_S
        self.reset_max_in_flight()


_TLS_LOCK = threading.Lock()
_TLS_CACHE: list[Any] = []


def _tls_material() -> tuple[Any, Any]:
    """(trustme.CA, its server cert for localhost/127.0.0.1/::1), created once
    per process (key generation is the slow part of start())."""
    with _TLS_LOCK:
        if not _TLS_CACHE:
            try:
                trustme = importlib.import_module("trustme")
            except ImportError:
                raise RuntimeError("TLS needs the 'trustme' package (pip install trustme), "
                                   "or run with --http / FakeCloud(tls=False)") from None
            ca = trustme.CA(organization_name="fakecloud test CA")
            _TLS_CACHE[:] = [ca, ca.issue_cert("localhost", "127.0.0.1", "::1")]
        return _TLS_CACHE[0], _TLS_CACHE[1]


# ---------------------------------------------------------------------------
# 9. Standalone command line
# ---------------------------------------------------------------------------


def _retention_line(cloud: FakeCloud) -> str:
    if cloud.retention_days is None:
        return "  retention: off (every event counts)"
    oldest = datetime.fromtimestamp(cloud.retained_from_ms() / 1000, _CST)
    return (f"  retention: {cloud.retention_days} days, like MaaS (nothing before {oldest:%Y-%m-%d %H:%M} "
            "Asia/Shanghai counts; --no-retention turns it off)")


def _cloud_eye_line(cloud: FakeCloud) -> str:
    if not cloud.ces.retention:
        return f"  Cloud Eye {CES_NAMESPACE}: retention off (every hourly sum is kept)"
    return (f"  Cloud Eye {CES_NAMESPACE}: hourly sums kept {CES_RETENTION_DAYS} days, like Cloud Eye; per model "
            "service and API key for preset services and My Services")


def _print_instructions(cloud: FakeCloud, dataset: str, dataset_days: int) -> None:
    env = cloud.client_env()
    lines = [
        f"Fake Huawei Cloud (IAM + MaaS ShowStatistics + Cloud Eye) listening on {cloud.url}",
        f"  dataset: {dataset} ({len(cloud.events)} events); latency: {cloud.latency} s",
        f"  region {DEMO_REGION} -> project id {DEMO_PROJECT_ID}",
        _retention_line(cloud),
        _cloud_eye_line(cloud),
    ]
    if cloud.tls:
        lines.append(f"  CA certificate (trust it via REQUESTS_CA_BUNDLE): {cloud.ca_pem_path}")
    lines += ["", "In another terminal (these are fake demo keys, safe to show):", ""]
    lines += [f"  export {name}={value}" for name, value in env.items()]
    if not cloud.tls:
        lines.append("  unset REQUESTS_CA_BUNDLE")
    if dataset == "seed":
        seed = ", ".join(f"{k}={render_json(v)}" for k, v in SEED_EXPECTED.items())
        lines += ["", "  python3 maas_rest_usage_stats.py --from 2026-05-08 --to 2026-05-21 --timezone Asia/Shanghai",
                  "", f"Expected (service_type 2, real_time, 2026-05-08..2026-05-21 Asia/Shanghai): {seed}"]
        if cloud.retention_days is not None and cloud.retained_from_ms() > SEED_END_MS:
            lines.append("  (the seed sample is older than the retention, so it answers zeros: "
                         "restart with --no-retention to get these numbers)")
    else:
        counted = "all of it counts" if cloud.retention_days is None else f"the last {cloud.retention_days} count"
        lines += ["", "  python3 maas_rest_usage_stats.py --last 7d --group-by day --timezone Asia/Shanghai", "",
                  f"The {dataset} dataset covers the last {dataset_days} days ({counted})."]
    lines += [
        f"Temporary credentials are accepted too: AK={TEMP_AK} SK={TEMP_SK}",
        f"  with header X-Security-Token={TEMP_TOKEN}",
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fake Huawei Cloud IAM + MaaS ShowStatistics + Cloud Eye server for trying the CLI offline.")
    parser.add_argument("--port", type=int, default=8443, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--dataset", choices=("seed", "hourly", "grid"), default="seed",
                        help="seed: a small real-looking sample; hourly: synthetic hourly usage; grid (for the "
                             "benchmarks): every model service called with every key in every hour")
    parser.add_argument("--hourly-days", type=int, default=400,
                        help="days of hourly data before now (with --dataset hourly or grid)")
    parser.add_argument("--grid", default="x".join(map(str, GRID_DEFAULT)), metavar="MODELSxKEYS",
                        help="with --dataset grid: model services and API keys per model service "
                             f"(default {'x'.join(map(str, GRID_DEFAULT))})")
    parser.add_argument("--no-retention", action="store_true",
                        help=f"count every event; by default, like MaaS, nothing older than {RETENTION_DAYS} "
                             f"days before now is counted, and like Cloud Eye, no hourly sum older than "
                             f"{CES_RETENTION_DAYS} days")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    grid_match = re.fullmatch(r"([1-9][0-9]{0,3})x([1-9][0-9]{0,3})", args.grid)
    if grid_match is None:
        parser.error("--grid must be MODELSxKEYS, e.g. 4x3 (each from 1 to 9999)")
    grid = (int(grid_match.group(1)), int(grid_match.group(2)))

    # Ctrl-C and `kill` both end in a clean stop.  SIGINT is set explicitly
    # because a shell starting us in the background (`... &`) ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        end_ms = (int(time.time() * 1000) // HOUR_MS + 1) * HOUR_MS
        if args.dataset == "hourly":
            events: Iterable[Event] = hourly_events(end_ms - args.hourly_days * 24 * HOUR_MS, end_ms)
        elif args.dataset == "grid":
            events = grid_events(end_ms - args.hourly_days * 24 * HOUR_MS, end_ms, *grid)
        else:
            events = SEED_EVENTS
        cloud = FakeCloud(tls=not args.http, host=args.host, port=args.port, events=events,
                          latency=args.latency, verbose=args.verbose,
                          retention_days=None if args.no_retention else RETENTION_DAYS,
                          ces_retention=not args.no_retention)
        try:
            cloud.start()
        except (OSError, RuntimeError) as exc:
            print(f"fakecloud: cannot start: {exc}", file=sys.stderr)
            return 2
        try:
            _print_instructions(cloud, args.dataset, args.hourly_days)
            while True:
                time.sleep(3600)
        finally:
            cloud.stop()
    except KeyboardInterrupt:
        print("\nfakecloud: stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
