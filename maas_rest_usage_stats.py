#!/usr/bin/env python3
"""Report Huawei Cloud MaaS inference usage (tokens, requests, errors) for a time range.

The MaaS ShowStatistics API answers one question: how much did this project use between two
instants, for one service type, in windows of at most 30 days. This script turns a human time
range (``--from/--to``, ``--last 7d``, ``--yesterday`` …) in the user's time zone into those
windows, signs each request with huaweicloudsdkcore's SDK-HMAC-SHA256 ``Signer``, sends them
concurrently with retries and pacing, sums the answers exactly and prints a table, JSON or CSV.

    export HW_ACCESS_KEY=... HW_SECRET_KEY=...
    python3 maas_rest_usage_stats.py --from 2026-05-08 --to 2026-05-21

The command-line contract (flags, formats, exit codes) is documented in README.md.
Exit codes: 0 success, 1 API/network failure, 2 usage error, 3 credentials rejected or missing,
4 --fail-over's budget share reached (result printed), 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP.
"""

from __future__ import annotations

import os
import signal
import sys


# The signals that end a run like Ctrl-C, each with the shell's exit code 128 + its number.
ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _interrupted_while_loading(signum: int, frame: object) -> None:
    os.write(2, b"error: interrupted\n")
    os._exit(128 + signum)


if __name__ == "__main__":
    # Ctrl-C, SIGTERM or SIGHUP while the modules below still load ends like any interrupted run:
    # exit 128 + the signal, no traceback. main() puts its own handlers in place once it can report
    # them itself. A signal ignored from the start (nohup, a background job) stays ignored.
    for _signum in ENDING_SIGNALS:
        if signal.getsignal(_signum) != signal.SIG_IGN:
            signal.signal(_signum, _interrupted_while_loading)

import argparse  # noqa: E402
import bisect  # noqa: E402
import dataclasses  # noqa: E402
import errno  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from abc import ABC, abstractmethod  # noqa: E402
from collections import deque  # noqa: E402
import contextlib  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import date, datetime, timedelta, timezone, tzinfo  # noqa: E402
from decimal import ROUND_HALF_UP, Decimal, localcontext  # noqa: E402
from functools import lru_cache  # noqa: E402
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union  # noqa: E402
from urllib.parse import quote, urlsplit  # noqa: E402

__version__ = "1.0.0"
RELEASE_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)  # this version is newer: a clock before it is wrong

# requirements.txt's lines, here too: the script is often copied without that file, and a Python
# that lacks a package must be told the exact command that installs it.
REQUIREMENTS = (
    "huaweicloudsdkcore>=3.1.60,<4",
    "requests>=2.32.2,<3",
    "urllib3>=2,<3",
    "tzlocal>=5.0,<6",
    "tabulate>=0.9,<0.11",
)

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------

# Custom Endpoint is type 4, not 3: the official page says 3, the skill's authors found the API takes only
# 1, 2 and 4 (task-query-tokens-usage.md); 3 is refused.
SERVICE_NAMES = {1: "My Service", 2: "Preset Service", 4: "Custom Endpoint"}
SHORT_SERVICE_NAMES = {1: "My", 2: "Preset", 4: "Custom"}  # table columns stay narrow
SERVICE_ALIASES = {
    "1": 1, "my": 1, "my-service": 1,
    "2": 2, "preset": 2, "preset-service": 2,
    "4": 4, "custom": 4, "custom-endpoint": 4,
}
DEFAULT_SERVICE_TYPE = 2
INFER_TYPES = ("real_time", "batch")

DEFAULT_REGION = "cn-southwest-2"
# Where ShowStatistics is offered: cn-southwest-2 (the skill's task-query-tokens-usage.md, "only supports
# cn-southwest-2"); ap-southeast-1 from the product specification only (not verified live: no account).
STATISTICS_REGIONS = {"cn-southwest-2": "China site", "ap-southeast-1": "international site, CN-Hong Kong"}
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$", re.ASCII)
PROJECT_ID_RE = re.compile(r"^[a-z0-9]{32}$")
# Default endpoints as in the Huawei Cloud SDK's region tables (huaweicloudsdkmodelarts' ModelArtsRegion,
# huaweicloudsdkiam's IamRegion; neither is a dependency): every region follows the template, except
# that ModelArts clients reach ap-southeast-1 under .myhuaweicloud.cn.
MAAS_ENDPOINT_TEMPLATE = "https://modelarts.{region}.myhuaweicloud.com"
MAAS_ENDPOINT_EXCEPTIONS = {"ap-southeast-1": "https://modelarts.ap-southeast-1.myhuaweicloud.cn"}
IAM_ENDPOINT_TEMPLATE = "https://iam.{region}.myhuaweicloud.com"
# huaweicloudsdkcore's EnvRegionProvider: HUAWEICLOUD_SDK_REGION_MODELARTS_AP_SOUTHEAST_1=url[,url…]
SDK_REGION_ENV = "HUAWEICLOUD_SDK_REGION_{service}_{region}"
STATISTICS_PATH = "/v1/{project_id}/maas/monitoring/show-statistics"  # ShowStatistics API reference
IAM_PROJECTS_PATH = "/v3/projects"  # IAM KeystoneListProjects: ?name= filters by the region's name
# Cloud Eye (huaweicloudsdkces' CesRegion: ces.{region}.myhuaweicloud.com in both documented regions).
CES_ENDPOINT_TEMPLATE = "https://ces.{region}.myhuaweicloud.com"
LIST_METRICS_PATH = "/V1.0/{project_id}/metrics"  # Cloud Eye API reference, ListMetrics
# MaaS calls per model service (dimension maas_api_id) and key: MaaS user guide, usermanual_maas_0068.
CES_NAMESPACE = "SYS.MaaS"
CES_MODEL_DIMENSION, CES_KEY_DIMENSION = "maas_api_id", "maas_key_id"
BATCH_METRIC_DATA_PATH = "/V1.0/{project_id}/batch-query-metric-data"  # Cloud Eye API reference, BatchListMetricData
# huaweicloudsdkces' BatchListMetricDataRequestBody docstrings: metrics "[1,500]"; a to - from over a
# period's span (CES_ROLLUPS) moves from forward; the API reference: series x (to - from) / period <=
# 3000, else from moves forward too. All silently: every call keeps within all three.
CES_MAX_SERIES = 500
CES_MAX_DATAPOINTS = 3000
CES_LIST_LIMIT = 1000  # ListMetrics: limit in [1, 1000]
CES_MAX_DIMENSION_VALUE = 256  # huaweicloudsdkces MetricsDimension.value: "长度为[1,256]个字符"
# Not Cloud Eye's: the most series a run lists and keeps (10,000 model-key pairs of 6 metrics; with
# Cloud Eye's longest ids, under 60 MB), so that whatever ListMetrics answers, memory stays bounded.
CES_MAX_LISTED = 60_000
CES_RETENTION = timedelta(days=155)  # Cloud Eye FAQ "How Long Is Metric Data Retained?": hourly sums, 155 days
MONITOR_ENDPOINT_TEMPLATE = "https://maas.{region}.myhuaweicloud.com"  # cloudeye-exporter's default (unverified)
MONITOR_INSTANCES_PATH = "/v1/{project_id}/maas/monitor/instances"  # cloudeye-exporter, collector/maas*.go
MONITOR_PAGE = 100
MONITOR_MAX_PAGES = 100  # not the monitor's: names of the first 10,000 instances, then ids (a note)
MONITOR_MAX_NAME = 256  # not the monitor's: characters of a name kept (the table shows 16), so names stay small
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}

MAX_WINDOW = timedelta(days=30)  # related-apis.md: end_time at most 30 days after start_time
RETENTION = timedelta(days=30)  # task-query-tokens-usage.md: MaaS keeps statistics for 30 days
RATE_LIMIT = 200  # related-apis.md: per user at most 200 requests a minute (1000 in all)
TOKEN_FIELD_UNIT = 1000  # related-apis.md: token fields are in thousands (2482084.98 -> 2,482,084,980 tokens)
# The permissions ShowStatistics and the project lookup need (the skill's SKILL.md).
MAAS_PERMISSION, IAM_PERMISSION = "modelarts:monitoring:get", "iam:projects:get"
# API Gateway locks an access key for 5 minutes after more than 5 consecutive failed signatures (its
# documented rule, as the product specification states it): a run sends one signed request first.
SIGNATURE_LOCKOUT = 5
RATE_PERIOD = 60.0
RATE_WAIT_STEP = 1.0  # seconds: a wait for the rate limit is told to the progress line at least this often
# The API counts requests where they arrive. A request waits at most about 2 round trips longer
# on a fresh connection (TCP + TLS) than on a warm one, so starts counted over 60 s + 2 s keep
# "200 arrivals in any 60 s" true for any round trip up to 1 s.
ARRIVAL_MARGIN = 2.0
MAX_CONCURRENCY = 16
# Connection pools kept at once, one per host a run can use (MaaS, IAM, Cloud Eye, the MaaS monitor):
# with fewer, urllib3 drops the least recently used host's pool, and the connections opened early in it.
HOST_POOLS = 4
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
PROGRESS_MIN_REQUESTS = 5
THREAD_STACK_BYTES = 1024 * 1024  # a worker runs a few frames of requests: 8 MiB (the usual default) is waste
THREAD_START_WAIT = 10.0  # seconds for a new thread to get under way: far beyond any scheduler's delay
M_ARENA_MAX = -8  # glibc's mallopt() parameter for the number of malloc arenas (malloc.h)
THREADS_HINT = "raise the memory limit (ulimit -v, systemd LimitAS=) or lower --concurrency"
MAX_REQUESTS = 2000  # --max-requests: about 10 minutes at the API's limit
SIGNAL_CHECK_INTERVAL = 0.2  # seconds between the main thread's checks for Ctrl-C while requests run
POLL_INTERVAL = 0.05  # seconds between looks at a busy store, or at a silent pipe on a clock not the machine's
# Call data takes 1 to 2 hours to appear (the MaaS console documentation, as the product specification
# quotes it): a day is final 3 hours after it ends.
FINAL_AFTER = timedelta(hours=3)
MAX_BODY_BYTES = 1024 * 1024  # an answer is a few hundred bytes; more is malformed (and bounds memory)
LARGE_ANSWER = 64 * 1024  # characters of answer text above which answers are parsed one at a time
LARGE_ANSWERS = threading.Lock()
MAX_CREDENTIALS_BYTES = 64 * 1024  # a credentials file is a few hundred bytes; refuse a huge one
CREDENTIALS_PIPE_WAIT = 30.0  # seconds for a credentials pipe's writer: time to type a passphrase
STDOUT_STALL = 120.0  # seconds a non-blocking stdout may stay full before its reader counts as stuck



@dataclass(frozen=True)
class Metric:
    """One figure of a report, in every place it appears: adding a metric is one row of METRICS.

    ``field`` names its exact sum in a ``Usage`` (None: derived from the other sums by ``derive``);
    ``api_field`` is the ShowStatistics answer field it is read from and ``api_unit`` the actual units
    per unit of that field (the token fields are in thousands). ``name`` is the JSON key, the CSV column
    and the store's column; ``label`` the totals table's line; ``headers`` the grouped table's column as
    (full, narrow, with hour rows). ``style`` picks the formatting: tokens, count or percent. ``at_most``
    names the metric it can never exceed: an answer that breaks the bound is summed as sent but flagged.
    """

    name: str
    field: str | None
    api_field: str | None
    api_unit: int
    label: str
    headers: tuple[str, str, str]
    style: str
    family: str | None = None  # its Prometheus family, and the ``kind`` label within it
    kind: str | None = None
    batch_only: bool = False  # shown for --infer-type batch only; real-time answers may omit it
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    at_most: str | None = None


def _error_rate(values: Mapping[str, Any]) -> Decimal | None:
    """Percent of requests that failed, 2 decimals half up; None without requests."""
    requests, errors = values["total_requests"], values["total_errors"]
    if not requests or errors is None:
        return None
    return (Decimal(errors) * 100 / requests).quantize(Decimal("0.01"), ROUND_HALF_UP)


# ShowStatistics' answer fields (API reference, ShowStatistics response), in the contract's METRICS order.
# The bounds: prompt and completion tokens are parts of the total, errors are requests that failed.
METRICS = (
    Metric("total_tokens", "tokens_k", "total_token", TOKEN_FIELD_UNIT, "Total Tokens", ("Tokens",) * 3, "tokens",
           "maas_usage_tokens", "total"),
    Metric("prompt_tokens", "prompt_k", "total_prompt_token", TOKEN_FIELD_UNIT, "Prompt Tokens", ("Prompt",) * 3,
           "tokens", "maas_usage_tokens", "prompt", at_most="total_tokens"),
    Metric("completion_tokens", "completion_k", "total_completion_token", TOKEN_FIELD_UNIT, "Completion Tokens",
           ("Completion", "Compl.", "Compl."), "tokens", "maas_usage_tokens", "completion", at_most="total_tokens"),
    Metric("total_requests", "requests", "total_request_count", 1, "Total Requests", ("Requests", "Reqs", "Reqs"),
           "count", "maas_usage_requests"),
    Metric("total_errors", "errors", "total_error_count", 1, "Total Errors", ("Errors", "Errors", "Errs"),
           "count", "maas_usage_errors", at_most="total_requests"),
    Metric("error_rate", None, None, 1, "Error Rate", ("Err %",) * 3, "percent", derive=_error_rate),
    Metric("total_completion_tasks", "completion_tasks", "total_completion_tasks", 1, "Completed Tasks",
           ("Tasks",) * 3, "count", "maas_usage_completed_tasks", batch_only=True),
    Metric("total_infer_count", "infer_count", "total_infer_count", 1, "Inference Count", ("Infers",) * 3,
           "count", "maas_usage_inference_count", batch_only=True),
)
METRIC_NAMES = tuple(metric.name for metric in METRICS)
METRICS_BY_NAME = {metric.name: metric for metric in METRICS}
SUMS = tuple(metric for metric in METRICS if metric.field)  # the metrics a Usage holds exact sums of
TOKEN_FIELDS = tuple(m.api_field for m in SUMS if m.style == "tokens")
COUNT_FIELDS = tuple(m.api_field for m in SUMS if m.style == "count" and not m.batch_only)
BATCH_FIELDS = tuple(m.api_field for m in SUMS if m.batch_only)


def shown_metrics(batch: bool) -> tuple[Metric, ...]:
    """The metrics a report shows: the batch counters only for batch inference."""
    return tuple(metric for metric in METRICS if batch or not metric.batch_only)


ENV_AK, ENV_SK, ENV_TOKEN = "HW_ACCESS_KEY", "HW_SECRET_KEY", "HW_SECURITY_TOKEN"
SDK_AK, SDK_SK, SDK_TOKEN = "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN"
PROJECT_ENVS = ("HW_PROJECT_ID", "HUAWEICLOUD_SDK_PROJECT_ID")
PROFILE_ENV = "HUAWEICLOUD_SDK_CREDENTIALS_FILE"

EXIT_OK, EXIT_API, EXIT_USAGE, EXIT_CREDENTIALS = 0, 1, 2, 3
EXIT_BUDGET = 4  # --fail-over: the budget share was reached; the result is printed in full
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT

# ----------------------------------------------------------------------------------------------
# Errors: each failure carries the exit code the contract gives it
# ----------------------------------------------------------------------------------------------


class ToolError(Exception):
    """Base of every failure reported to the user as ``error: <message>``."""

    exit_code = EXIT_API

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(ToolError):
    exit_code = EXIT_USAGE


class CredentialsError(ToolError):
    """Missing or unusable credentials; the hint always says how to provide them."""

    exit_code = EXIT_CREDENTIALS

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint or CREDENTIALS_HELP)


class ApiError(ToolError):
    exit_code = EXIT_API


class AuthRejected(ApiError):
    """HTTP 401/403: the cloud refused the keys or the permissions."""

    exit_code = EXIT_CREDENTIALS


class MalformedResponse(ApiError):
    pass


class MissingPackages(ToolError):
    """This Python lacks packages the run needs: a set-up problem, found before anything is sent."""

    exit_code = EXIT_USAGE


# ----------------------------------------------------------------------------------------------
# Packages: checked, not imported, so --help and usage errors never need them
# ----------------------------------------------------------------------------------------------

NETWORK_PACKAGES = ("huaweicloudsdkcore", "requests", "urllib3")  # the Signer and the HTTP stack


def needed_packages(output_format: str, os_zone: bool) -> tuple[str, ...]:
    """The packages a run that sends requests needs: the network ones, tabulate for a table, and
    tzlocal when the zone is the OS's."""
    return (*NETWORK_PACKAGES, *(("tzlocal",) if os_zone else ()),
            *(("tabulate",) if output_format == "table" else ()))


def installed_version(name: str) -> str | None:
    """The version of an importable package ("" without metadata), None when this Python cannot
    import it. Nothing is imported: finding the spec and reading the metadata is cheap."""
    import importlib.util

    try:
        if importlib.util.find_spec(name) is None:
            return None
    except (ImportError, ValueError):
        return None
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def _name_and_floor(requirement: str) -> tuple[str, str]:
    """``requests>=2.32.2,<3`` -> ``("requests", "2.32.2")``."""
    name, floor = re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement).groups()
    return name, floor


def lacking_packages(names: Iterable[str]) -> list[str]:
    """The REQUIREMENTS lines of ``names`` that this Python does not meet: the package is missing,
    or older than the line's floor (a newer one is trusted)."""
    lacking = []
    for line in REQUIREMENTS:
        name, floor = _name_and_floor(line)
        if name not in names:
            continue
        version = installed_version(name)
        if version is None or (version and _release(version) < _release(floor)):
            lacking.append(line)
    return lacking


def missing_packages_error(lacking: Sequence[str]) -> MissingPackages:
    """The error naming this Python, what it lacks and the command that installs it."""
    import shlex

    python = sys.executable or "python3"
    names = []
    for line in lacking:
        name, floor = _name_and_floor(line)
        version = installed_version(name)
        names.append(f"{name} ({version} installed, needs >={floor})" if version else name)
    script = os.path.abspath(__file__)
    requirements = " ".join(shlex.quote(line) for line in lacking)
    message = (f"this Python ({python}, {'.'.join(map(str, sys.version_info[:3]))}) lacks packages the script "
               f"needs: {', '.join(names)}")
    if externally_managed():  # pip refuses to install into it (PEP 668): a virtualenv is the way
        venv = os.path.join(os.path.dirname(script), ".venv")
        return MissingPackages(message, hint=(
            f"this Python is the system's (PEP 668: pip will not install into it); make a virtualenv with it "
            f"and run the script with that one's python: {shlex.quote(python)} -m venv {shlex.quote(venv)} && "
            f"{shlex.quote(venv)}/bin/python -m pip install {requirements} && "
            f"{shlex.quote(venv)}/bin/python {shlex.quote(script)} …"))
    return MissingPackages(message, hint=(
        f"install them for this Python: {shlex.quote(python)} -m pip install {requirements}; or, if they are "
        f"installed in a virtualenv, run the script with that virtualenv's python "
        f"(/path/to/venv/bin/python {shlex.quote(script)} …)"))


def externally_managed() -> bool:
    """Whether this Python is marked as the system's, outside a virtualenv (PEP 668's EXTERNALLY-MANAGED
    file beside its standard library): pip install then fails with externally-managed-environment."""
    import sysconfig

    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return False
    try:
        return os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
    except (KeyError, TypeError, OSError):
        return False


# ----------------------------------------------------------------------------------------------
# Credentials
# ----------------------------------------------------------------------------------------------

CREDENTIALS_HELP = (
    f"set {ENV_AK} and {ENV_SK} (or {SDK_AK} and {SDK_SK}), "
    "or pass --credentials-file PATH, or create ~/.huaweicloud/credentials with a [basic] section"
)
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: header-safe
_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_FILE_KEYS = {
    ENV_AK: "ak", SDK_AK: "ak", "AK": "ak",
    ENV_SK: "sk", SDK_SK: "sk", "SK": "sk",
    ENV_TOKEN: "token", SDK_TOKEN: "token", "SECURITY_TOKEN": "token",
    "HW_PROJECT_ID": "project_id", "HUAWEICLOUD_SDK_PROJECT_ID": "project_id", "PROJECT_ID": "project_id",
}


@dataclass(frozen=True)
class Credentials:
    """An AK/SK pair (and temporary token); ``repr`` never shows the values."""

    ak: str = field(repr=False)
    sk: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)
    source: str = ""
    project_id: str | None = None
    path: str | None = None  # the file the keys came from, for the permission warning

    def __repr__(self) -> str:
        token = ", security_token=<hidden>" if self.security_token else ""
        return f"Credentials(source={self.source!r}, ak=<hidden>, sk=<hidden>{token})"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.ak, self.sk, self.security_token) if s)


def _checked_credentials(ak: str, sk: str, token: str | None, source: str,
                         project_id: str | None = None) -> Credentials:
    for name, value in (("access key", ak), ("secret key", sk), ("security token", token)):
        if value is not None and not _KEY_CHARS.fullmatch(value):
            raise CredentialsError(
                f"the {name} from {source} is empty or contains spaces or non-ASCII characters")
    return Credentials(ak, sk, token or None, source, project_id or None)


def read_credentials_file(path: str, clock: Clock | None = None) -> str:
    """Read a small UTF-8 text file (or a pipe, such as ``<(pass show maas)``, with a wait bounded
    on ``clock``, the machine's by default), refusing directories, devices, sockets, binaries and huge files."""
    try:
        kind = os.stat(path).st_mode  # follows links: <(…) is /dev/fd/N, a link to a pipe
        if stat.S_ISDIR(kind):
            raise CredentialsError(f"credentials file {path} is a directory")
        if stat.S_ISFIFO(kind):
            data = read_pipe(path, CREDENTIALS_PIPE_WAIT, MAX_CREDENTIALS_BYTES + 1, clock or Clock())
        elif not stat.S_ISREG(kind):
            raise CredentialsError(f"credentials file {path} is a device or a socket, not a file")
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CREDENTIALS_BYTES + 1)
    except FileNotFoundError:
        raise CredentialsError(f"credentials file {path} does not exist") from None
    except TimeoutError:
        raise CredentialsError(f"credentials file {path} is a pipe that gave no credentials within "
                               f"{CREDENTIALS_PIPE_WAIT:g} s") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from None
    if len(data) > MAX_CREDENTIALS_BYTES:
        raise CredentialsError(
            f"credentials file {path} is larger than {MAX_CREDENTIALS_BYTES // 1024} KiB: not a credentials file")
    if b"\x00" in data:
        raise CredentialsError(f"credentials file {path} is binary, not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None


def read_pipe(path: str, wait: float, limit: int, clock: Clock) -> bytes:
    """Up to ``limit`` bytes of a named pipe, until its writer closes it; TimeoutError when no
    writer comes or it stalls for ``wait`` seconds of ``clock`` in all (a plain open would block for good)."""
    import select

    deadline = clock.monotonic() + wait
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        data = bytearray()
        while len(data) < limit:
            left = deadline - clock.monotonic()
            if left <= 0:
                raise TimeoutError
            if not clock.wait_readable(poller, left):
                continue
            piece = os.read(fd, limit - len(data))
            if not piece:  # the writer closed the pipe (before any writer came, poll waits)
                return bytes(data)
            data += piece
        return bytes(data)
    finally:
        os.close(fd)


def file_permission_warning(path: str) -> str | None:
    """A warning when a credentials file is readable by group or others (POSIX only)."""
    if os.name != "posix":
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"credentials file {path} is readable by other users; run: chmod 600 {path}"
    return None


def _content_lines(text: str) -> list[tuple[int, str]]:
    """Numbered non-blank, non-comment lines (BOM and CRLF already handled by decoding/splitlines)."""
    lines = []
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((number, stripped))
    return lines


def _shell_value(value: str, where: str) -> str:
    """The value of a shell-style assignment: quotes removed, a trailing ``# comment`` dropped."""
    import shlex  # imported here: only KEY=VALUE credentials files need it

    try:
        words = shlex.split(value, comments=True)
    except ValueError:
        raise CredentialsError(f"{where}: unbalanced quotes") from None
    if len(words) > 1:
        raise CredentialsError(f"{where}: the value contains spaces")
    return words[0] if words else ""


def _parse_assignments(lines: list[tuple[int, str]], source: str) -> Credentials:
    found: dict[str, str] = {}
    for number, line in lines:
        match = _ASSIGNMENT.match(line)
        if not match:
            raise CredentialsError(f"{source}, line {number}: expected KEY=VALUE like the other lines")
        key = _FILE_KEYS.get(match.group(1).upper())
        if key:
            found[key] = _shell_value(match.group(2), f"{source}, line {number}")
    if not found.get("ak") or not found.get("sk"):
        raise CredentialsError(
            f"{source} has KEY=VALUE lines but no {ENV_AK} and {ENV_SK} (or {SDK_AK} and {SDK_SK})")
    return _checked_credentials(found["ak"], found["sk"], found.get("token"), source, found.get("project_id"))


def _parse_console_csv(lines: list[tuple[int, str]], source: str) -> Credentials:
    import csv  # imported here, like the other single-use modules: --version stays fast

    try:
        rows = list(csv.reader(line for _, line in lines))
    except csv.Error:
        raise CredentialsError(f"{source} looks like a CSV file but cannot be read as one") from None
    header = [c.strip().lower() for c in rows[0]]
    try:
        ak_col, sk_col = header.index("access key id"), header.index("secret access key")
    except ValueError:
        raise CredentialsError(
            f"{source} looks like a CSV file but has no 'Access Key Id' and 'Secret Access Key' columns") from None
    token_col = header.index("security token") if "security token" in header else None
    if len(rows) < 2:
        raise CredentialsError(f"{source} has a CSV header but no row of keys")
    row = rows[1]
    if len(row) <= max(ak_col, sk_col):
        raise CredentialsError(f"{source}, line 2: the row has fewer columns than the header")
    token = row[token_col].strip() if token_col is not None and token_col < len(row) else None
    return _checked_credentials(row[ak_col].strip(), row[sk_col].strip(), token, source)


def _parse_profile(text: str, source: str) -> Credentials:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        where = f", line {line}" if line else ""
        raise CredentialsError(f"{source}{where}: not a valid credentials profile (INI) file") from None
    if not parser.has_section("basic"):
        raise CredentialsError(f"{source} has no [basic] section with ak and sk")
    section = parser["basic"]
    if not section.get("ak") or not section.get("sk"):
        raise CredentialsError(f"{source}: the [basic] section needs both ak and sk")
    return _checked_credentials(section["ak"].strip(), section["sk"].strip(),
                                section.get("security_token", "").strip() or None, source,
                                section.get("project_id", "").strip() or None)


def parse_credentials_text(text: str, source: str) -> Credentials:
    """Parse any supported credentials-file format. Messages name lines, never their content."""
    lines = _content_lines(text)
    if not lines:
        raise CredentialsError(f"{source} contains no credentials")
    first = lines[0][1]
    if first.startswith("["):
        return _parse_profile(text.lstrip("\ufeff"), source)
    if "access key id" in first.lower():
        return _parse_console_csv(lines, source)
    if _ASSIGNMENT.match(first):
        return _parse_assignments(lines, source)
    if len(lines) == 1:
        fields_ = [f.strip() for f in first.split(",")]
        if len(fields_) in (2, 3) and all(fields_[:2]):
            return _checked_credentials(fields_[0], fields_[1], fields_[2] if len(fields_) == 3 else None, source)
        if "," in first:
            raise CredentialsError(f"{source}, line {lines[0][0]}: expected AK,SK or AK,SK,TOKEN")
        raise CredentialsError(
            f"{source} has only one line: expected the AK on line 1 and the SK on line 2 (or AK,SK on one line)")
    if len(lines) > 3:
        raise CredentialsError(
            f"{source} has {len(lines)} lines: expected AK and SK (and optionally a security token), "
            "one per line, or KEY=VALUE lines")
    for position, (number, line) in enumerate(lines):
        # Keys never hold ',' or '='; a token (the third value) may end in base64 '=' padding.
        if "," in line or ("=" in line and position < 2):
            raise CredentialsError(f"{source}, line {number}: mixes formats; expected one value per line")
    values = [line for _, line in lines]
    return _checked_credentials(values[0], values[1], values[2] if len(values) == 3 else None, source)


def load_credentials_file(path: str, clock: Clock | None = None) -> Credentials:
    credentials = parse_credentials_text(read_credentials_file(path, clock), f"credentials file {path}")
    return dataclasses.replace(credentials, path=path)


def expand_home(path: str, env: Mapping[str, str]) -> str:
    """``~`` at the start of ``path`` means the run's HOME (the environment passed in)."""
    if path == "~" or path.startswith("~/"):
        return (env.get("HOME") or os.path.expanduser("~")) + path[1:]
    return os.path.expanduser(path)


def profile_path(env: Mapping[str, str]) -> str:
    return env.get(PROFILE_ENV) or expand_home("~/.huaweicloud/credentials", env)


def load_credentials(path: str | None, env: Mapping[str, str], clock: Clock | None = None) -> Credentials:
    """Apply the precedence: --credentials-file, HW_* env, HUAWEICLOUD_SDK_* env, SDK profile file.
    ``clock`` bounds the wait for a credentials pipe."""
    if path:
        return load_credentials_file(path, clock)
    for ak_name, sk_name, token_name in ((ENV_AK, ENV_SK, ENV_TOKEN), (SDK_AK, SDK_SK, SDK_TOKEN)):
        ak, sk = env.get(ak_name, "").strip(), env.get(sk_name, "").strip()
        if ak and sk:
            return _checked_credentials(ak, sk, env.get(token_name, "").strip() or None,
                                        f"environment variables {ak_name}/{sk_name}")
        if ak or sk:
            present, missing = (ak_name, sk_name) if ak else (sk_name, ak_name)
            raise CredentialsError(f"{present} is set but {missing} is not")
    profile = profile_path(env)
    if env.get(PROFILE_ENV) or os.path.isfile(profile):
        return load_credentials_file(profile, clock)
    raise CredentialsError("no Huawei Cloud credentials found")


# ----------------------------------------------------------------------------------------------
# Time: pure functions of (arguments, now, zone)
# ----------------------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DATE_RE = re.compile(r"^(\d{4})(-?)(\d{2})\2(\d{2})$", re.ASCII)  # YYYY-MM-DD or YYYYMMDD
# A local date-time, or an ISO 8601 instant when an offset or Z follows (a JSON period fed back).
_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ Tt](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6}))?)?"
                      r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$", re.ASCII)
_LAST_RE = re.compile(r"^(\d+)([dh])$", re.ASCII)
# Epoch milliseconds; far from datetime's overflow at year 9999. 1969: a local time on its last day may
# be after the epoch in UTC (New York's 1969-12-31 20:00); the range's own check refuses the rest.
MIN_YEAR, MAX_YEAR = 1969, 9000
MAX_LAST_DAYS = 3660  # ten years: a longer --last is a typo, and long before the API kept any data


@dataclass(frozen=True)
class Period:
    """A half-open interval [start, end) of aware UTC datetimes."""

    start: datetime
    end: datetime

    @property
    def start_ms(self) -> int:
        return to_epoch_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_epoch_ms(self.end)


def to_epoch_ms(moment: datetime) -> int:
    # Integer arithmetic: float timestamps can land a millisecond off.
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int, zone: tzinfo) -> datetime:
    return (EPOCH + timedelta(milliseconds=ms)).astimezone(zone)


# -- Time zones: IANA names only, as the API takes them; anything else is refused with the names meant --

# Files of the zone database that are not zones: aliases of the OS zone or of a default rule, a
# placeholder, and folders of duplicates (right/ counts leap seconds, which epoch milliseconds do not).
NOT_ZONES = frozenset({"localtime", "posixrules", "factory"})
NOT_ZONE_FOLDERS = ("posix/", "right/")
ZONE_AREAS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia", "Europe",
              "Indian", "Pacific")
# Zones in rough order of how many people keep their time: hints name the most used first.
POPULOUS_ZONES = (
    "Asia/Kolkata", "Asia/Shanghai", "America/New_York", "America/Chicago", "Asia/Jakarta", "Asia/Karachi",
    "Africa/Lagos", "America/Sao_Paulo", "Asia/Dhaka", "America/Mexico_City", "Europe/Moscow", "Asia/Tokyo",
    "Asia/Manila", "Africa/Cairo", "Asia/Ho_Chi_Minh", "Europe/Berlin", "Asia/Tehran", "Europe/Istanbul",
    "Asia/Bangkok", "Europe/London", "Europe/Paris", "America/Los_Angeles", "Europe/Rome", "Africa/Johannesburg",
    "Asia/Seoul", "America/Bogota", "Europe/Madrid", "Africa/Nairobi", "America/Argentina/Buenos_Aires",
    "America/Denver", "Asia/Riyadh", "Asia/Taipei", "America/Lima", "Australia/Sydney", "America/Toronto",
    "Asia/Singapore", "Asia/Hong_Kong", "Asia/Dubai", "Europe/Kyiv", "America/Phoenix",
)
ZONE_HINTS = 5  # at most this many zone names in a hint
_UTC_OFFSET_RE = re.compile(r"^(?:UTC|GMT|UT)?\s*([+-])(\d{1,2})(?::?([0-5]\d))?$", re.ASCII | re.IGNORECASE)
_ABBREVIATION_RE = re.compile(r"^[A-Za-z]{2,6}$", re.ASCII)


def not_a_zone(name: str) -> bool:
    lowered = name.lower()
    return lowered in NOT_ZONES or lowered.startswith(NOT_ZONE_FOLDERS)


@lru_cache(maxsize=1)  # listing the database reads every file's header: once per process
def zone_names() -> dict[str, str]:
    """Every zone of the database, keyed by its name in lower case."""
    from zoneinfo import available_timezones  # imported here: only runs that need zones pay for them

    return {name.lower(): name for name in available_timezones() if not not_a_zone(name)}


def _spelled_on_disk(name: str) -> bool:
    """Whether ``name`` is a file of a zoneinfo folder spelled exactly so (a case-insensitive file
    system opens ``asia/shanghai`` too, but the API must get ``Asia/Shanghai``). Cheaper than
    listing the whole database."""
    from zoneinfo import TZPATH

    for folder in TZPATH:
        here = folder
        for part in name.split("/"):
            try:
                if part not in os.listdir(here):
                    break
            except OSError:
                break
            here = os.path.join(here, part)
        else:
            if os.path.isfile(here):
                return True
    return False


def canonical_zone_name(name: str) -> str | None:
    """The IANA zone that ``name`` spells, matched case-insensitively; None for anything else."""
    from zoneinfo import ZoneInfo

    if not name or not_a_zone(name) or name.startswith(("/", ".")) or ".." in name or "\\" in name:
        return None
    if _spelled_on_disk(name):
        try:
            ZoneInfo(name)
            return name
        except (ValueError, OSError):  # a data file such as zone.tab
            pass
    return zone_names().get(name.lower())


def resolve_zone(text: str, now: datetime) -> tuple[str, tzinfo]:
    """The IANA name and zone that --timezone names; anything else is refused with the zones meant."""
    from zoneinfo import ZoneInfo

    name = text.strip()
    canonical = canonical_zone_name(name)
    if canonical is None:
        raise zone_refusal(name, now)
    return canonical, ZoneInfo(canonical)


def zone_refusal(name: str, now: datetime) -> UsageError:
    """Why ``name`` is not a zone, with a hint naming the IANA zones it may mean."""
    if not_a_zone(name):
        real = canonical_zone_name(name.split("/", 1)[1]) if "/" in name else None
        return UsageError(f"{name!r} is a file of the zone database, not a time zone",
                          hint=f"use {real}" if real else "leave out --timezone for the OS zone, or use an IANA "
                                                          "name such as Asia/Shanghai")
    offset = parse_utc_offset(name)
    if offset is not None:
        return UsageError(f"{name!r} is a UTC offset, not a time zone", hint=offset_hint(offset, now))
    if _ABBREVIATION_RE.match(name):
        abbreviation = name.upper()
        zones = zones_where(lambda zone: zone.tzname(now) == abbreviation, now)
        if zones:
            return UsageError(f"{name!r} is an abbreviation, not a time zone",
                              hint=f"zones that use {abbreviation} now: {', '.join(zones)}")
        later = now + timedelta(days=182)
        zones = zones_where(lambda zone: zone.tzname(later) == abbreviation, later)
        if zones:
            return UsageError(f"{name!r} is an abbreviation, not a time zone",
                              hint=f"{abbreviation} is not in use now; zones that use it at other times of the "
                                   f"year: {', '.join(zones)}")
    close = close_zone_names(name)
    return UsageError(f"unknown time zone {name!r}",
                      hint=f"did you mean {' or '.join(close)}?" if close else
                      "use an IANA name such as Asia/Shanghai, Europe/Berlin or UTC")


def parse_utc_offset(text: str) -> timedelta | None:
    """The offset that ``+08:00``, ``UTC+8``, ``GMT-5`` or ``+0530`` means; None for other text."""
    match = _UTC_OFFSET_RE.match(text)
    if not match:
        return None
    offset = timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))
    return -offset if match.group(1) == "-" else offset


def format_offset(offset: timedelta) -> str:
    minutes = abs(offset) // timedelta(minutes=1)
    return f"UTC{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def fixed_offset_zone(offset: timedelta) -> str | None:
    """The database's zone of a fixed whole-hour offset: UTC, or Etc/GMT-8 for UTC+08:00 (the
    POSIX sign convention); None where there is none (half hours, beyond -12 h and +14 h)."""
    if offset % timedelta(hours=1) or not timedelta(hours=-12) <= offset <= timedelta(hours=14):
        return None
    hours = offset // timedelta(hours=1)
    return "UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"


def offset_hint(offset: timedelta, now: datetime) -> str:
    fixed = fixed_offset_zone(offset)
    if fixed is not None:
        inverted = "" if fixed == "UTC" else " (the sign is inverted by POSIX convention)"
        return (f"use {fixed} for a fixed {format_offset(offset)}{inverted}, or the IANA name of the place "
                "to follow its daylight saving")
    zones = zones_where(lambda zone: zone.utcoffset(now) == offset, now)
    if zones:
        return f"zones now at {format_offset(offset)}: {', '.join(zones)}"
    return f"no zone is at {format_offset(offset)} now; use an IANA name such as Asia/Shanghai"


@lru_cache(maxsize=1)
def place_zones() -> list[str]:
    """The zones worth suggesting: zone.tab's list, one name per place (no old aliases such as
    Asia/Calcutta), where the database ships it; else every Area/Place name."""
    from zoneinfo import TZPATH

    known = set(zone_names().values())
    for folder in TZPATH:
        try:
            with open(os.path.join(folder, "zone.tab"), encoding="utf-8") as table:
                names = {line.split("\t")[2].strip() for line in table
                         if line.strip() and not line.startswith("#") and line.count("\t") >= 2}
        except OSError:
            continue
        if names & known:
            return sorted(names & known)
    return sorted(name for name in known if name.split("/", 1)[0] in ZONE_AREAS and "/" in name)


def zones_where(test: Callable[[tzinfo], bool], at: datetime) -> list[str]:
    """Up to ZONE_HINTS place zones that pass ``test``, the most used first: the populous list,
    then alphabetically, with the first zone of each offset (``at`` that instant) leading, so that
    every meaning of an ambiguous abbreviation shows (CST: China, US Central, Cuba)."""
    from zoneinfo import ZoneInfo

    rank = {name: index for index, name in enumerate(POPULOUS_ZONES)}
    matching = sorted((name for name in place_zones() if test(ZoneInfo(name))),
                      key=lambda name: (rank.get(name, len(rank)), name))
    leaders: dict[timedelta | None, str] = {}
    for name in matching:
        leaders.setdefault(ZoneInfo(name).utcoffset(at), name)
    ordered = [*leaders.values(), *(name for name in matching if name not in leaders.values())]
    return ordered[:ZONE_HINTS]


def close_zone_names(name: str) -> list[str]:
    """The IANA names closest to a misspelt one (``Asia/Shangai``), or to a bare place (``tokyo``)."""
    names = zone_names()
    close = _closest(name.lower(), list(names))
    if close:
        return [names[lowered] for lowered in close]
    places = {zone.rsplit("/", 1)[-1].lower(): zone for zone in reversed(place_zones())}
    return [places[place] for place in _closest(name.lower().replace(" ", "_"), list(places))]


def _closest(word: str, choices: list[str]) -> list[str]:
    """The best few matches, those about as close as the best one."""
    import difflib  # imported here: only a refused zone pays for it

    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.75)
    ratios = [difflib.SequenceMatcher(None, word, choice).ratio() for choice in close]
    return [choice for choice, ratio in zip(close, ratios) if ratio >= ratios[0] - 0.05]


# A POSIX TZ rule (``CST-8``, ``CET-1CEST,M3.5.0,M10.5.0/3``): names, offsets west of UTC, DST dates.
_POSIX_NAME = r"(?:[A-Za-z]{3,}|<[A-Za-z0-9+-]{3,}>)"
_POSIX_OFFSET = r"[+-]?\d{1,2}(?::\d{2}){0,2}"
_POSIX_DATE = r"(?:M\d{1,2}\.\d\.\d|J?\d{1,3})(?:/[+-]?\d{1,3}(?::\d{2}){0,2})?"
_POSIX_TZ_RE = re.compile(rf"^{_POSIX_NAME}({_POSIX_OFFSET})(?:({_POSIX_NAME})({_POSIX_OFFSET})?"
                          rf"(?:,{_POSIX_DATE},{_POSIX_DATE})?)?$", re.ASCII)


@dataclass(frozen=True)
class PosixRule:
    """A POSIX TZ rule's UTC offsets: standard time and, with DST, daylight time."""

    standard: timedelta
    daylight: timedelta | None


def parse_posix_tz(value: str) -> PosixRule | None:
    match = _POSIX_TZ_RE.match(value)
    if not match:
        return None
    standard = _posix_utc_offset(match.group(1))
    daylight = _posix_utc_offset(match.group(3)) if match.group(3) else None
    if standard is None or (match.group(3) and daylight is None):
        return None
    if match.group(2) and daylight is None:
        daylight = standard + timedelta(hours=1)  # POSIX: DST is one hour ahead unless given
    return PosixRule(standard, daylight)


def _posix_utc_offset(text: str) -> timedelta | None:
    """The UTC offset of a POSIX one, which counts west of UTC (``-8`` is UTC+08:00); None if impossible."""
    hours, minutes, seconds = ([int(part) for part in text.lstrip("+-").split(":")] + [0, 0])[:3]
    if hours > 24 or minutes > 59 or seconds > 59:
        return None
    west = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return west if text.startswith("-") else -west


def zone_for_posix_rule(value: str, rule: PosixRule, now: datetime) -> tuple[str, str]:
    """The zone a POSIX TZ rule stands for, and the note that says so: a rule without DST is its
    fixed-offset zone; one with DST is the OS zone when that is at one of its offsets now."""
    from zoneinfo import ZoneInfo

    choose = "set --timezone to the IANA name of the zone you mean"
    if rule.daylight is None:
        fixed = fixed_offset_zone(rule.standard)
        if fixed is not None:
            return fixed, (f"TZ={value!r} is a POSIX rule, not a zone name: using {fixed}, a fixed "
                           f"{format_offset(rule.standard)}; {choose}")
        return "UTC", (f"TZ={value!r} is a POSIX rule for {format_offset(rule.standard)}, which has no fixed-offset "
                       f"zone (those are whole hours from UTC-12 to UTC+14): using UTC; {choose}")
    system = system_zone_name()
    offsets = f"{format_offset(rule.standard)} or {format_offset(rule.daylight)}"
    if system is not None and ZoneInfo(system).utcoffset(now) in (rule.standard, rule.daylight):
        return system, (f"TZ={value!r} is a POSIX rule, not a zone name: using the OS zone {system}, which is at "
                        f"its {offsets} now; {choose}")
    return "UTC", (f"TZ={value!r} is a POSIX rule with daylight saving, not a zone name, and the OS zone "
                   f"{system or '(unknown)'} is not at its {offsets} now: using UTC; {choose}")


def local_zone_name(env: Mapping[str, str], now: datetime) -> tuple[str | None, str | None]:
    """The OS time zone's IANA name (``TZ`` first) or None when unknown, and a note when ``TZ`` is
    not a zone name: the zone used then is never changed silently."""
    value = env.get("TZ", "")
    from_env = tz_name_from_env(value)
    if from_env:
        return from_env, None
    rule_text = value[1:] if value.startswith(":") else value
    if not rule_text:
        return system_zone_name(), None
    rule = parse_posix_tz(rule_text)
    if rule is not None:
        return zone_for_posix_rule(rule_text, rule, now)
    system = system_zone_name()
    return system, (f"TZ={value!r} is neither a zone name nor a POSIX rule: ignored, using the OS zone "
                    f"{system or 'UTC'}; set --timezone to choose the zone")


def system_zone_name() -> str | None:
    """The OS zone as tzlocal finds it (it reads the files, ignoring a TZ that names no zone)."""
    try:
        import tzlocal  # imported here: only runs that need the OS zone pay for it

        name = tzlocal.get_localzone_name()
    except Exception:  # tzlocal raises assorted errors on odd systems; UTC is the documented fallback
        return None
    return canonical_zone_name(name) if name else None


def tz_name_from_env(value: str | None) -> str | None:
    """An IANA name from a ``TZ`` value (``Asia/Tokyo``, ``:Asia/Tokyo`` or a zoneinfo file path)."""
    if not value:
        return None
    value = value[1:] if value.startswith(":") else value
    if canonical_zone_name(value) == value:
        return value
    if os.path.isabs(value) and os.path.exists(value):
        parts = os.path.realpath(value).split(os.sep)
        for start in range(len(parts)):
            if canonical_zone_name("/".join(parts[start:])) == "/".join(parts[start:]):
                return "/".join(parts[start:])
    return None


def _exists(local: datetime) -> bool:
    """Whether a wall-clock time exists in its zone (is not skipped by a DST jump)."""
    round_trip = local.astimezone(timezone.utc).astimezone(local.tzinfo)
    return round_trip.replace(tzinfo=None) == local.replace(tzinfo=None)


def day_start(day: date, zone: tzinfo) -> datetime:
    """The first valid instant of a local day (UTC): midnight, or the end of a DST gap over it."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    if _exists(midnight):
        return midnight.astimezone(timezone.utc)
    # In a gap, fold=1 maps to an instant before the jump and fold=0 to one after it:
    # bisect between them for the transition instant, which is the day's first valid time.
    low = midnight.replace(fold=1).astimezone(timezone.utc)
    high = midnight.replace(fold=0).astimezone(timezone.utc)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).date() == day:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def parse_day(text: str, zone: tzinfo, now: datetime) -> date | None:
    """The local date named by ``today``, ``yesterday``, ``YYYY-MM-DD`` or ``YYYYMMDD``; None for other forms."""
    word = text.strip().lower()
    today = now.astimezone(zone).date()
    if word in ("today", "yesterday"):
        return today - timedelta(days=1 if word == "yesterday" else 0)
    match = _DATE_RE.match(text.strip())
    if not match:
        return None
    try:
        day = date(int(match.group(1)), int(match.group(3)), int(match.group(4)))
    except ValueError:
        raise UsageError(f"{text!r} is not a valid date") from None
    _check_year(day.year, text)
    return day


def _check_year(year: int, text: str) -> None:
    if year < MIN_YEAR:
        raise UsageError(f"{text!r} is before 1970-01-01 00:00:00 UTC, where the API's time begins")
    if year > MAX_YEAR:
        raise UsageError(f"{text!r} is after the year {MAX_YEAR}")


def parse_when(text: str, zone: tzinfo, now: datetime) -> datetime:
    """Parse a WHEN value (a date, a local date-time, an ISO 8601 instant with an offset, now, today
    or yesterday) into a UTC instant; fractions of a second are cut to the millisecond."""
    if text.strip().lower() == "now":
        return now.astimezone(timezone.utc)
    day = parse_day(text, zone, now)
    if day is not None:
        return day_start(day, zone)
    match = _TIME_RE.match(text.strip())
    if not match:
        raise UsageError(f"cannot read the time {text!r}",
                         hint="use YYYY-MM-DD, YYYYMMDD, 'YYYY-MM-DD HH:MM[:SS]', an ISO 8601 instant such as "
                              "2026-05-08T09:30:00+08:00 or ...Z, now, today or yesterday")
    year, month, day_of_month, hour, minute, second = (int(g) for g in match.groups(default="0")[:6])
    millisecond = int((match.group(7) or "").ljust(3, "0")[:3])  # rounded down: the API counts ms
    offset = _utc_offset(match, text)
    try:
        moment = datetime(year, month, day_of_month, hour, minute, second, millisecond * 1000,
                          tzinfo=offset or zone)
    except ValueError:
        raise UsageError(f"{text!r} is not a valid date or time") from None
    _check_year(moment.year, text)
    if offset is None and not _exists(moment):
        raise UsageError(f"{text!r} does not exist in this time zone (the clocks skip it for daylight saving)")
    return moment.astimezone(timezone.utc)


def _utc_offset(match: re.Match, text: str) -> timezone | None:
    """The fixed offset an ISO 8601 instant carries (``Z``, ``+08:00``, ``-0530``), None for local time."""
    if match.group(8):
        return timezone.utc
    if not match.group(9):
        return None
    hours, minutes = int(match.group(10)), int(match.group(11) or 0)
    if hours > 23 or minutes > 59:
        raise UsageError(f"{text!r} has an impossible UTC offset")
    return timezone((-1 if match.group(9) == "-" else 1) * timedelta(hours=hours, minutes=minutes))


def parse_last(text: str) -> timedelta:
    match = _LAST_RE.match(text.strip().lower())
    if not match or int(match.group(1)) < 1:
        raise UsageError(f"cannot read --last {text!r}", hint="use a whole number of days or hours, like 7d or 24h")
    count, unit = int(match.group(1)), timedelta(days=1) if match.group(2) == "d" else timedelta(hours=1)
    if count > timedelta(days=MAX_LAST_DAYS) // unit:  # before multiplying: a huge count overflows timedelta
        raise UsageError(f"--last {text!r} is longer than {MAX_LAST_DAYS} days ({MAX_LAST_DAYS * 24} h)")
    return count * unit


def shift_days(moment: datetime, days: int, zone: tzinfo) -> datetime:
    """The same local wall time ``days`` calendar days away; a skipped time moves past the gap."""
    return same_wall_time_on(moment.astimezone(zone).date() + timedelta(days=days), moment, zone)


def same_wall_time_on(day: date, moment: datetime, zone: tzinfo) -> datetime:
    """``moment``'s local wall time on another local ``day`` (a skipped time moves past the gap; a
    repeated one is its first occurrence); the start of a day is the start of the other day."""
    local = moment.astimezone(zone)
    if moment == day_start(local.date(), zone):
        return day_start(day, zone)
    return datetime.combine(day, local.time(), tzinfo=zone).astimezone(timezone.utc)


# -- Calendar units: values, so that a unit (or a preset) is one record and an unknown one a KeyError --

@dataclass(frozen=True)
class CalendarUnit(ABC):
    """A unit of local calendar time that rows are grouped by and presets count in. All instants
    are UTC; "local" means in ``zone``."""

    name: str  # as --group-by names it
    header: str  # the grouped table's column
    label_format: str  # strftime of a row's label, from the unit's local start

    @abstractmethod
    def shift(self, moment: datetime, count: int, zone: tzinfo) -> datetime:
        """The start of the unit ``count`` units after (before, if negative) the one holding ``moment``."""

    @abstractmethod
    def same_time_before(self, moment: datetime, zone: tzinfo) -> datetime:
        """The same elapsed local time in the unit before: Dec 10 14:00 is Nov 10 14:00; a time the
        unit before lacks is that unit's end."""

    @abstractmethod
    def wall_start(self, wall: datetime) -> datetime:
        """The local wall-clock start of the unit holding a naive local ``wall`` time."""

    @property
    @abstractmethod
    def even_step(self) -> timedelta | None:
        """The unit's length on a clock without offset changes, when every unit has the same (months don't)."""

    def start(self, moment: datetime, zone: tzinfo) -> datetime:
        return self.shift(moment, 0, zone)

    def next(self, moment: datetime, zone: tzinfo) -> datetime:
        return self.shift(moment, 1, zone)

    def previous(self, moment: datetime, zone: tzinfo) -> datetime:
        return self.shift(moment, -1, zone)


@dataclass(frozen=True)
class ClockHours(CalendarUnit):
    """Local clock hours: each of a fall-back day's two 01:00 hours is its own hour, as the offset
    tells them apart."""

    def shift(self, moment: datetime, count: int, zone: tzinfo) -> datetime:
        wall = moment.astimezone(zone)
        start = moment.astimezone(timezone.utc) - timedelta(minutes=wall.minute, seconds=wall.second,
                                                            microseconds=wall.microsecond)
        return start + timedelta(hours=count)

    def same_time_before(self, moment: datetime, zone: tzinfo) -> datetime:
        start = self.start(moment, zone)
        return min(self.previous(moment, zone) + (moment - start), start)

    def wall_start(self, wall: datetime) -> datetime:
        return wall.replace(minute=0, second=0, microsecond=0)

    @property
    def even_step(self) -> timedelta | None:
        return timedelta(hours=1)


@dataclass(frozen=True)
class LocalDays(CalendarUnit):
    """A unit of whole local days, from the start of its first day (local midnight, or the end of a
    DST gap over it): a DST day is 23 or 25 hours."""

    first_day: Callable[[date], date]  # the first day of the unit holding a day
    add: Callable[[date, int], date]  # a unit's first day moved by whole units
    days: int | None = None  # its length in days, when every unit has the same

    def wall_start(self, wall: datetime) -> datetime:
        return datetime.combine(self.first_day(wall.date()), datetime.min.time())

    @property
    def even_step(self) -> timedelta | None:
        return None if self.days is None else timedelta(days=self.days)

    def shift(self, moment: datetime, count: int, zone: tzinfo) -> datetime:
        return day_start(self.add(self.first_day(moment.astimezone(zone).date()), count), zone)

    def same_time_before(self, moment: datetime, zone: tzinfo) -> datetime:
        day = moment.astimezone(zone).date()
        first = self.first_day(day)
        twin = self.add(first, -1) + (day - first)
        if twin >= first:  # March 31 has no February twin: the whole of February
            return day_start(first, zone)
        return same_wall_time_on(twin, moment, zone)


def _add_months(first: date, count: int) -> date:
    months = first.year * 12 + first.month - 1 + count
    return date(months // 12, months % 12 + 1, 1)


HOUR = ClockHours("hour", "Hour", "%Y-%m-%d %H:00")
DAY = LocalDays("day", "Day", "%Y-%m-%d", first_day=lambda day: day, add=lambda day, n: day + timedelta(days=n),
                days=1)
WEEK = LocalDays("week", "Week of", "%Y-%m-%d", first_day=lambda day: day - timedelta(days=day.weekday()),  # Monday
                 add=lambda day, n: day + timedelta(weeks=n), days=7)
MONTH = LocalDays("month", "Month", "%Y-%m", first_day=lambda day: day.replace(day=1), add=_add_months)
UNITS = {unit.name: unit for unit in (HOUR, DAY, WEEK, MONTH)}  # --group-by's order


@dataclass(frozen=True)
class RangeRequest:
    """The time-range flags as given on the command line."""

    start: str | None = None
    to: str | None = None
    until: str | None = None
    last: str | None = None
    preset: str | None = None  # a key of PRESETS


def resolve_period(request: RangeRequest, zone: tzinfo, now: datetime) -> Period:
    """Turn the time-range flags into a Period of UTC instants; ``--to`` is exclusive, clamped to now."""
    now = now.astimezone(timezone.utc)  # instants stay in UTC: same-tzinfo arithmetic is wall-clock
    if request.last:
        start, end = now - parse_last(request.last), now
    elif request.preset:
        start, end = PRESETS[request.preset].range(zone, now)
    else:
        start, end = _explicit_range(request, zone, now)
    if start >= end:
        if start > now:
            raise UsageError("the range starts in the future")
        raise UsageError(
            f"the range is empty: the start ({start.astimezone(zone):%Y-%m-%d %H:%M:%S}) is not before "
            f"the end ({end.astimezone(zone):%Y-%m-%d %H:%M:%S}); --to is exclusive, --until names the "
            "last day included")
    if start < EPOCH:  # start_time is epoch milliseconds
        raise UsageError(f"the range starts at {start.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}, before "
                         "1970-01-01 00:00:00 UTC, where the API's time begins",
                         hint=f"start at {EPOCH.astimezone(zone):%Y-%m-%d %H:%M:%S} in this time zone or later")
    return Period(start, end)


@dataclass(frozen=True)
class Preset:
    """A range flag (``--this-week``) that names a calendar unit: the current one up to now, or the
    whole one before; --compare takes the unit before that, as far as the same elapsed local time
    for a current unit (so this month's 10 days compare with last month's first 10, not all 30)."""

    name: str  # the flag without its dashes
    help: str
    unit: CalendarUnit
    current: bool  # the current unit up to now, else the whole unit before

    def range(self, zone: tzinfo, now: datetime) -> tuple[datetime, datetime]:
        """The start and end as UTC instants."""
        start = self.unit.start(now, zone)
        return (start, now) if self.current else (self.unit.previous(now, zone), start)

    def previous(self, period: Period, zone: tzinfo) -> Period:
        """--compare: the period before ``period`` (this preset's range)."""
        end = self.unit.same_time_before(period.end, zone) if self.current else period.start
        return Period(self.unit.previous(period.start, zone), min(end, period.start))


PRESETS = {preset.name: preset for preset in (
    Preset("today", "local today 00:00 to now", DAY, current=True),
    Preset("yesterday", "the whole of yesterday", DAY, current=False),
    Preset("this-week", "Monday 00:00 of this week to now", WEEK, current=True),
    Preset("last-week", "the whole previous Monday-to-Monday week", WEEK, current=False),
    Preset("this-month", "from the 1st of this month to now", MONTH, current=True),
    Preset("last-month", "the whole previous calendar month (1st 00:00 to the 1st of this month)", MONTH,
           current=False),
)}


def _explicit_range(request: RangeRequest, zone: tzinfo, now: datetime) -> tuple[datetime, datetime]:
    """--from/--to/--until (each optional) as UTC instants; the end is clamped to now."""
    if request.until:
        last_day = parse_day(request.until, zone, now)
        if last_day is None:
            raise UsageError(f"--until takes a date (YYYY-MM-DD, YYYYMMDD, today or yesterday), "
                             f"not {request.until!r}")
        end = day_start(last_day + timedelta(days=1), zone)
    elif request.to:
        end = parse_when(request.to, zone, now)
    else:
        end = now
    end = min(end, now)
    if request.start:
        start = parse_when(request.start, zone, now)
    elif request.to or request.until:
        start = shift_days(end, -7, zone)
    else:
        start = end - timedelta(days=7)
    return start, end


def split_windows(start_ms: int, end_ms: int,
                  limit_ms: int = MAX_WINDOW // timedelta(milliseconds=1)) -> list[tuple[int, int]]:
    """Consecutive windows covering [start_ms, end_ms) exactly, each at most ``limit_ms`` long."""
    windows = []
    cursor = start_ms
    while cursor < end_ms:
        stop = min(cursor + limit_ms, end_ms)
        windows.append((cursor, stop))
        cursor = stop
    return windows


def previous_period(request: RangeRequest, period: Period, zone: tzinfo) -> Period:
    """--compare: the period before. After a whole-unit preset (yesterday, last week, last month)
    the unit before; after a current one (today, this week, this month) the unit before up to the
    same elapsed local time, clamped to that unit's end; after any other range the span just before
    it of the same number of local days when both ends are local midnights, else the same length."""
    def midnight(moment: datetime) -> bool:
        return moment == day_start(moment.astimezone(zone).date(), zone)

    if request.preset:
        result = PRESETS[request.preset].previous(period, zone)
    elif midnight(period.start) and midnight(period.end):
        days = (period.end.astimezone(zone).date() - period.start.astimezone(zone).date()).days
        result = Period(shift_days(period.start, -days, zone), period.start)
    else:
        result = Period(period.start - (period.end - period.start), period.start)
    if result.start < EPOCH:
        raise UsageError("--compare: the previous period would start before 1970-01-01 00:00:00 UTC")
    return result


def calendar_bucket(moment: datetime, unit: CalendarUnit, zone: tzinfo) -> Period:
    """The whole local hour, day, week or month that ``moment`` falls in, unclipped by any range."""
    return Period(unit.start(moment, zone), unit.next(moment, zone))


def split_buckets(period: Period, unit: CalendarUnit | None, zone: tzinfo) -> list[Period]:
    """Calendar buckets following local midnights, the first and last clipped to the period."""
    if unit is None:
        return [period]
    buckets = []
    cursor = period.start
    while cursor < period.end:
        stop = min(unit.next(cursor, zone), period.end)
        buckets.append(Period(cursor, stop))
        cursor = stop
    return buckets


# tzdata's offset changes since 1970 are a week apart or more (Brazil 2000, Gaza): a look every
# two days sees each one.
OFFSET_PROBE = timedelta(days=2)


def offset_changes(period: Period, zone: tzinfo) -> list[datetime]:
    """The instants inside ``period`` where the zone's UTC offset changes, found by a look every
    OFFSET_PROBE and bisected to the millisecond."""
    def offset(ms: int) -> timedelta | None:
        return from_epoch_ms(ms, zone).utcoffset()

    changes: list[datetime] = []
    step = OFFSET_PROBE // timedelta(milliseconds=1)
    low, end = period.start_ms, period.end_ms
    before = offset(low)
    while low < end:
        high = min(low + step, end)
        if offset(high) != before:
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == before else (low, middle)
            changes.append(from_epoch_ms(high, timezone.utc))
            before = offset(high)
        low = high
    return changes


def bucket_count(period: Period, unit: CalendarUnit, zone: tzinfo) -> int:
    """``len(split_buckets(period, unit, zone))`` for hours, days or weeks, without making them:
    between two offset changes the local clock runs evenly, so the boundaries it passes are
    counted by arithmetic; across each change the next boundary is found as split_buckets finds it."""
    count, cursor = 0, period.start
    changes = iter([*offset_changes(period, zone), period.end])
    change = next(changes)
    while cursor < period.end:
        count += 1
        while change <= cursor:
            change = next(changes)
        passed, last = _clock_boundaries(cursor, change, unit, zone)
        count += passed
        cursor = unit.next(last, zone)
    return count


def _clock_boundaries(start: datetime, stop: datetime, unit: CalendarUnit, zone: tzinfo) -> tuple[int, datetime]:
    """How many boundaries of an even unit (hour, day, week) lie strictly between ``start`` and
    ``stop`` on the local clock, the offset staying ``start``'s, and the last of them (``start`` when none)."""
    wall = start.astimezone(zone).replace(tzinfo=None)
    step = unit.even_step
    assert step is not None, f"{unit.name} units differ in length"
    first = unit.wall_start(wall) + step
    room = wall + (stop - start) - first
    if room <= timedelta(0):
        return 0, start
    passed = (room - timedelta(microseconds=1)) // step + 1
    return passed, start + (first + (passed - 1) * step - wall)


def window_count(period: Period, unit: CalendarUnit | None, zone: tzinfo) -> int:
    """How many windows of at most 30 days the buckets of ``period`` need: one per hour, day or
    week; as many as split_windows makes for each month (31 days need two) or the whole range."""
    if unit is not None and unit.even_step is not None and unit.even_step <= MAX_WINDOW:
        return bucket_count(period, unit, zone)
    limit_ms = MAX_WINDOW // timedelta(milliseconds=1)
    return sum(len(range(span.start_ms, span.end_ms, limit_ms)) for span in split_buckets(period, unit, zone))


# ----------------------------------------------------------------------------------------------
# Console: every line for stderr goes through here, with secrets redacted and outside text escaped
# ----------------------------------------------------------------------------------------------

# What outside text (server messages, labels, paths) must not bring to a terminal: C0 and C1 controls
# and DEL, bidirectional overrides, isolates and marks (U+202E turns a line around), line and paragraph
# separators, and lone surrogates (an undecodable byte in an argument or path, a \ud800 in an answer).
_UNSAFE_BEYOND_C0 = r"\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(rf"[\x00-\x1f{_UNSAFE_BEYOND_C0}]")
_UNSAFE_IN_JSON = re.compile(f"[{_UNSAFE_BEYOND_C0}]")  # json.dumps escapes the C0 controls in strings itself
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SURROGATES = re.compile("[\ud800-\udfff]")  # lone ones: valid in JSON text, in no UTF-8


SECRET_PIECE = 8  # no run of this many characters of a secret may appear in any output
# Every piece of SECRET_PIECE characters holds a whole block of this many characters that starts at a
# multiple of it (SECRET_PIECE >= 2 * _BLOCK - 1): one look-up per block finds where pieces may start.
_BLOCK = 4
_BLOCKS = re.compile(".{" + str(_BLOCK) + "}", re.DOTALL)
_BLOCK_CHUNK = 64 * 1024  # text looked at per pass: bounded memory for any body
# The escaped forms a server may echo a secret in, every character JSON-escaped (\u0073) or URL-encoded
# (%73), in either case: one escape, its width and where its hex digits start.
_ESCAPES = ((r"\\u[0-9A-Fa-f]{4}", 6, 2), (r"%[0-9A-Fa-f]{2}", 3, 1))


@dataclass(frozen=True)
class SecretPieces:
    """What the redactor looks for: every piece of SECRET_PIECE characters of the secrets, every block
    of _BLOCK characters inside them, and the secrets too short to have a piece (masked whole)."""

    pieces: frozenset[str]
    blocks: frozenset[str]
    spreads: frozenset[str]  # SECRET_PIECE + _BLOCK characters: every piece around a block, one look-up
    short: tuple[str, ...]
    escaped_runs: tuple[tuple[re.Pattern, int, int], ...]  # runs of escapes long enough to hold one


@lru_cache(maxsize=8)
def secret_pieces(secrets: tuple[str, ...]) -> SecretPieces:
    def substrings(length: int) -> frozenset[str]:
        return frozenset(s[i:i + length] for s in secrets for i in range(len(s) - length + 1))

    short = tuple(secret for secret in secrets if 0 < len(secret) < SECRET_PIECE)
    shortest = min(map(len, short), default=SECRET_PIECE)
    return SecretPieces(substrings(SECRET_PIECE), substrings(_BLOCK), substrings(SECRET_PIECE + _BLOCK), short,
                        tuple((re.compile(f"(?:{escape}){{{shortest},}}"), width, digits)
                              for escape, width, digits in _ESCAPES))


def _merged_into(spans: list[tuple[int, int]], start: int, end: int) -> None:
    """Add a span to spans ordered by start, merging it with the last one when they touch."""
    if spans and start <= spans[-1][1]:
        spans[-1] = (spans[-1][0], max(spans[-1][1], end))
    else:
        spans.append((start, end))


def _plain_spans(text: str, wanted: SecretPieces) -> list[tuple[int, int]]:
    """Where pieces (and short secrets) occur as they are: pieces are looked for only around the
    blocks that belong to a secret, one set look-up per block of the text."""
    spans: list[tuple[int, int]] = []
    unchecked = 0
    for base in range(0, len(text), _BLOCK_CHUNK) if wanted.pieces else ():
        blocks = _BLOCKS.findall(text, base, base + _BLOCK_CHUNK)
        if wanted.blocks.isdisjoint(blocks):
            continue
        for index, block in enumerate(blocks):
            if block not in wanted.blocks:
                continue
            at = base + index * _BLOCK
            first = at + _BLOCK - SECRET_PIECE  # the pieces that hold this block start here to ``at``
            if first >= 0 and text[first:at + SECRET_PIECE] in wanted.spreads:
                _merged_into(spans, first, at + SECRET_PIECE)
            else:
                for start in range(max(first, unchecked), at + 1):
                    if text[start:start + SECRET_PIECE] in wanted.pieces:
                        _merged_into(spans, start, start + SECRET_PIECE)
            unchecked = at + 1
    for secret in wanted.short:
        at = text.find(secret)
        while at >= 0:
            spans.append((at, at + len(secret)))
            at = text.find(secret, at + 1)
    return spans


def secret_spans(text: str, secrets: Iterable[str]) -> list[tuple[int, int]]:
    """The ordered, merged spans of ``text`` that hold a piece of a secret, as is or escaped."""
    wanted = secret_pieces(tuple(secrets))
    spans = _plain_spans(text, wanted)
    for pattern, width, digits in wanted.escaped_runs if "\\u" in text or "%" in text else ():
        # In pieces of the text (overlapping by a piece's length): the regex engine keeps state for
        # every repetition of a run, so a body of nothing but escapes would cost tens of MB at once.
        runs = (run for base in range(0, len(text), _BLOCK_CHUNK)
                for run in pattern.finditer(text, base, base + _BLOCK_CHUNK + width * SECRET_PIECE))
        for run in runs:
            escapes = run.group()
            decoded = "".join(chr(int(escapes[i + digits:i + width], 16)) for i in range(0, len(escapes), width))
            spans += [(run.start() + start * width, run.start() + end * width)
                      for start, end in _plain_spans(decoded, wanted)]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        _merged_into(merged, start, end)
    return merged


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every piece of SECRET_PIECE or more characters of a secret, as is or escaped,
    replaced by ``***``: a message cut short or an escaped echo leaks no part either. Linear: one set
    look-up per block of the text, a few more where a block belongs to a secret."""
    spans = secret_spans(text, secrets)
    if not spans:
        return text
    parts, cursor = [], 0
    for start, end in spans:
        parts += [text[cursor:start], "***"]
        cursor = end
    return "".join(parts) + text[cursor:]


def redact_data(data: Any, secrets: Iterable[str]) -> Any:
    """Parsed JSON with every piece of a secret masked in its strings, keys included. Numbers are never
    touched: masking the text instead could turn a total that holds 8 digits of a key into ``***``."""
    secrets = tuple(secrets)
    strings: list[str] = []
    _strings_of(data, strings)
    if not secret_spans("\n".join(strings), secrets):  # one pass for the whole answer: usually nothing
        return data
    return _masked(data, secrets)


def _strings_of(value: Any, strings: list[str]) -> None:
    if isinstance(value, str):
        strings.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            strings.append(key)
            _strings_of(item, strings)
    elif isinstance(value, list):
        for item in value:
            _strings_of(item, strings)


def _masked(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(key, secrets): _masked(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, secrets) for item in value]
    return value


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # Python's stand-in for an undecodable byte: shown as that byte
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def escaped(text: str) -> str:
    """Outside text safe for a terminal: controls, bidi overrides and undecodable bytes written as
    escapes (``\\x1b``, ``\\u202e``, ``\\xff``), everything else (CJK, accents, emoji) as it is."""
    return _UNSAFE.sub(_escape, text)


def printable(text: str, limit: int = 300) -> str:
    """Outside text escaped for a terminal (``escaped``) and cut to at most ``limit`` columns."""
    return cut_to_width(escaped(str(text).strip()), limit)


def display_width(text: str) -> int:
    """The columns a terminal gives ``text``: East Asian wide and fullwidth characters (CJK) take two,
    combining marks and format characters none."""
    if text.isascii():
        return len(text)
    import unicodedata  # only for text that is not ASCII

    return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf") else 2 if unicodedata.east_asian_width(c) in "WF"
               else 1 for c in text)


def cut_to_width(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` columns, else its start and ``…`` in that many."""
    if display_width(text) <= width:
        return text
    used = 0
    for end, char in enumerate(text):
        used += display_width(char)
        if used > width - 1:
            return text[:end] + "…"
    return text


def padded(text: str, width: int) -> str:
    """``text`` and spaces to fill ``width`` columns (ljust counts characters, not columns)."""
    return text + " " * (width - display_width(text))


def seconds_left(wait: float, remaining: int) -> float:
    """About how long ``remaining`` requests take when the next start must wait ``wait`` seconds:
    after it, RATE_LIMIT more may start every RATE_PERIOD."""
    return wait + RATE_PERIOD * ((max(remaining, 1) - 1) // RATE_LIMIT)


def pacing_seconds(requests: int) -> float:
    """About how long ``requests`` take at the API's limit, by the RateLimiter's rule: RATE_LIMIT
    start at once, and each further RATE_LIMIT one paced period (RATE_PERIOD + ARRIVAL_MARGIN) later."""
    return (RATE_PERIOD + ARRIVAL_MARGIN) * ((max(requests, 1) - 1) // RATE_LIMIT)


def format_duration(seconds: float) -> str:
    """``50 s``, ``1 min 2 s``, ``7 h 35 min``, ``12 days 3 h``: the two largest units."""
    total = math.ceil(seconds)
    minutes, secs = divmod(total, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    if days:
        return f"{days} day{'s' if days > 1 else ''}" + (f" {hrs} h" if hrs else "")
    if hours:
        return f"{hours} h" + (f" {mins} min" if mins else "")
    if minutes:
        return f"{minutes} min" + (f" {secs} s" if secs else "")
    return f"{secs} s"


def long_run_note(requests: int) -> str | None:
    """Before the first request: a run the API's limit makes slow says so."""
    if requests <= RATE_LIMIT:
        return None
    return (f"{requests:,} requests: at the API's {RATE_LIMIT} per minute this takes about "
            f"{format_duration(pacing_seconds(requests))}")


class Console:
    """Notes, progress, verbose logs and errors on stderr; the result alone goes to stdout."""

    def __init__(self, stream: Any, quiet: bool = False, verbose: bool = False) -> None:
        self.stream = stream  # None when stderr is closed
        self.quiet = quiet
        self.verbose = verbose
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._progress_shown = False
        self._done = self._total = 0
        self._rate_wait: float | None = None

    def hide(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(secrets)

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _write(self, line: str) -> None:
        with self._lock:
            if self._progress_shown:
                self._emit("\r\x1b[K")
                self._progress_shown = False
            self._emit(escaped(self.redact(line)) + "\n")

    def _emit(self, text: str) -> None:
        """Write to stderr; a closed or broken stderr changes nothing else in the run."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # ValueError: a closed file
            self.stream = None

    def note(self, message: str) -> None:
        if not self.quiet:
            self._write(f"note: {message}")

    def warn(self, message: str) -> None:
        self._write(f"warning: {message}")

    def debug(self, message: str) -> None:
        if self.verbose:
            self._write(message)

    def error(self, message: str, hint: str | None = None) -> None:
        self._write(f"error: {message}")
        if hint:
            self._write(f"hint: {hint}")

    def progress(self, done: int, total: int) -> None:
        with self._lock:
            self._done, self._total = done, total
            self._show_progress()

    def rate_wait(self, seconds: float | None) -> None:
        """The rate limiter's wait before the next start (None once a start went out after one)."""
        with self._lock:
            self._rate_wait = seconds
            self._show_progress()

    def _show_progress(self) -> None:
        done, total = self._done, self._total
        if self.quiet or total < PROGRESS_MIN_REQUESTS or not self._is_terminal():
            return
        line = f"{done}/{total} requests"
        if self._rate_wait is not None and done < total:
            left = seconds_left(self._rate_wait, total - done)
            line += (f", waiting for the API limit ({RATE_LIMIT}/min), about "
                     + (f"{math.ceil(left)} s" if left < 120 else f"{math.ceil(left / 60)} min") + " left")
        self._emit(f"\r{line}\x1b[K" + ("\r\x1b[K" if done >= total else ""))
        self._progress_shown = done < total

    def _is_terminal(self) -> bool:
        try:
            return self.stream is not None and self.stream.isatty()
        except (OSError, ValueError):
            return False


class SystemClock:
    """The machine's clocks, the default of ``main(clock=...)``. With ``start`` (``main(now=...)``),
    the wall clock reads ``start`` when made and runs on from it with monotonic time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start
        self._origin = time.monotonic()

    def now(self) -> datetime:
        if self._start is None:
            return datetime.now(timezone.utc)
        return self._start + timedelta(seconds=time.monotonic() - self._origin)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Clock:
    """The run's time, all of it read from one clock (``main``'s ``clock``, else the machine's):
    ``now`` (whole seconds), the instant every plan is made from; ``wall()`` for signatures and
    Retry-After dates; ``monotonic()`` for pacing and deadlines; and every wait of the run. Only the
    bounds on real I/O stay on the machine's monotonic time (an attempt's deadline in DeadlineTimer,
    the name lookup's in Resolver, --check's probes, the main thread's wait for a worker's answer):
    they time sockets, which a fake clock cannot hurry."""

    def __init__(self, source: Any = None) -> None:
        self.source = SystemClock() if source is None else source
        self.started = self.source.now().astimezone(timezone.utc)
        # Whole seconds: the API takes milliseconds and the printed period must match what was sent.
        self.now = self.started.replace(microsecond=0)

    def wall(self) -> datetime:
        return self.source.now().astimezone(timezone.utc)

    def monotonic(self) -> float:
        return self.source.monotonic()

    def sleep(self, seconds: float) -> None:
        """A short wait of the main thread (Ctrl-C still ends it there)."""
        self.source.sleep(seconds)

    def wait(self, seconds: float, cancel: threading.Event) -> bool:
        """Wait (pacing, backoff) unless ``cancel`` is set meanwhile; True when cancelled."""
        if isinstance(self.source, SystemClock):
            return cancel.wait(seconds)  # a failure elsewhere or Ctrl-C ends the wait at once
        if not cancel.is_set():
            self.source.sleep(seconds)
        return cancel.is_set()

    def wait_readable(self, poller: Any, seconds: float) -> bool:
        """Whether ``poller`` (a ``select.poll``) reports its file readable within ``seconds``: the
        machine's clock blocks in poll; another clock looks once, else sleeps a step on itself."""
        if isinstance(self.source, SystemClock):
            return bool(poller.poll(seconds * 1000))
        if poller.poll(0):
            return True
        self.source.sleep(min(seconds, POLL_INTERVAL))
        return False


# ----------------------------------------------------------------------------------------------
# API client: the only code that talks HTTP
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    netloc: str  # host[:port] exactly as sent (and signed) in the Host header
    host: str
    base_path: str
    source: str = ""  # where the URL came from, for messages: "from --endpoint", "the default endpoint for …"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}{path}"

    @property
    def address(self) -> str:
        """``host:port`` as connections go to it (the scheme's port when the URL names none)."""
        port = urlsplit(f"{self.scheme}://{self.netloc}").port or (443 if self.scheme == "https" else 80)
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    @property
    def described(self) -> str:
        """The address and where the URL came from: ``localhost:8443, from --endpoint``."""
        return f"{self.address}, {self.source}" if self.source else self.address


def parse_endpoint(url: str, option: str, source: str | None = None) -> Endpoint:
    """Validate a base URL: https (http only for loopback), a host, no credentials or query.
    ``option`` names it in usage errors; ``source`` (default ``from <option>``) in network errors."""
    try:
        parts = urlsplit(url.strip())
        bracketed = re.fullmatch(r"(?:[^@]*@)?\[([^\]]*)\](?::[0-9]*)?", parts.netloc)
        if bracketed:  # Python < 3.11.4's urlsplit takes any text in brackets for an IPv6 address
            import ipaddress

            ipaddress.IPv6Address(bracketed.group(1))
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        raise UsageError(f"{option} {url!r} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise UsageError(f"{option} {url!r} is not an http(s) URL", hint="write it like https://host[:port]")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise UsageError(f"{option} {url!r} has an invalid port") from None
    host = parts.hostname or ""
    if not host or parts.username is not None or parts.query or parts.fragment:
        raise UsageError(f"{option} {url!r} must be a plain base URL (no user, query or fragment)")
    if parts.scheme == "http" and host not in LOOPBACK_HOSTS:
        raise UsageError(f"{option} {url!r} uses plain http, which is allowed only for loopback hosts",
                         hint="use https://")
    if not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", parts.netloc) or not re.fullmatch(r"[A-Za-z0-9._~/\-]*", parts.path):
        raise UsageError(f"{option} {url!r} contains characters that do not belong in a host or path")
    return Endpoint(parts.scheme, parts.netloc, host, parts.path.rstrip("/"),
                    f"from {option}" if source is None else source)


def proxy_for(endpoint: Endpoint, env: Mapping[str, str]) -> str | None:
    """The proxy an https endpoint is reached through (``HTTPS_PROXY``/``ALL_PROXY`` minus
    ``NO_PROXY``). Loopback http never goes through one: the signed request would travel in clear."""
    def variable(name: str) -> str:
        return (env.get(name) or env.get(name.upper()) or "").strip()

    if endpoint.scheme != "https":
        return None
    proxy = variable("https_proxy") or variable("all_proxy")
    host = endpoint.host.lower()
    for entry in (e.strip().lower().lstrip(".") for e in variable("no_proxy").split(",")):
        if entry == "*" or entry in (host, endpoint.netloc.lower()) or (entry and host.endswith("." + entry)):
            return None
    return proxy or None


class RateLimiter:
    """At most ``limit`` starts in any rolling ``period`` seconds; bursts below that pass at once."""

    def __init__(self, limit: int, period: float, clock: Clock,
                 on_wait: Callable[[float | None], None] | None = None) -> None:
        self.limit, self.period = limit, period
        self._clock = clock
        self._on_wait = on_wait  # told each wait, then None once a start went out after waiting
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, cancel: threading.Event) -> bool:
        """Wait for a free start; False (nothing counted) if ``cancel`` is set meanwhile."""
        waited = False
        while True:
            with self._lock:
                now = self._clock.monotonic()
                while self._starts and self._starts[0] <= now - self.period:
                    self._starts.popleft()
                if cancel.is_set():
                    return False
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    break
                # At least a millisecond: float rounding must never make a wait that moves no clock.
                wait = max(self._starts[0] + self.period - now, 0.001)
            if self._on_wait is not None:  # outside the lock: the callback writes to a terminal
                self._on_wait(wait)
            waited = True
            self._clock.wait(min(wait, RATE_WAIT_STEP), cancel)  # the progress line counts down each step
        if waited and self._on_wait is not None:
            self._on_wait(None)
        return True


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After in seconds or as an HTTP date, capped at RETRY_AFTER_CAP."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):
        seconds = float(value)
    else:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - now).total_seconds()
    return max(0.0, min(seconds, RETRY_AFTER_CAP))


def backoff_delay(attempt: int, seed: str) -> float:
    """Exponential backoff with jitter, so parallel retries do not hit the API in step. The jitter
    is drawn from ``seed`` (the run's start instant and the request), so it differs between requests
    and runs, yet a run on a fixed clock waits the same every time."""
    import random

    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.Random(f"{seed} {attempt}").uniform(0.5, 1.0)


@dataclass(frozen=True)
class ApiCall:
    """One request to send: the client signs, paces and retries it."""

    method: str
    endpoint: Endpoint
    path: str
    what: str  # names the call in messages: "ShowStatistics for 2026-05-08 … (Preset Service)"
    query: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    not_found_hint: str = ""  # the hint after an HTTP 404 (its CallKind's)


@dataclass(frozen=True)
class CallKind:
    """One API operation as a value: the endpoint it goes to, its method and path, and how its answer
    is read. ``fetch``, the dry-run plan and the messages work from it for any operation; adding an
    API call is a CallKind, its reader, and the windows (or the one call) that use it."""

    name: str  # names its calls in messages: "ShowStatistics for 2026-05-08 … (Preset Service)"
    method: str
    endpoint: str  # the name of the endpoint in Settings.endpoints: "maas", "iam"
    path: str  # may hold {project_id}
    read: Callable[[Any, str, Mapping[str, Any]], Any]  # (JSON data, what, body or params) -> what it fills
    not_found_hint: str = ""  # what an HTTP 404 most likely means for this call, and what to check

    def request(self, endpoint: Endpoint, project_id: str | None, label: str, body: Mapping[str, Any] | None = None,
                params: tuple[tuple[str, str], ...] = ()) -> ApiCall:
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        return ApiCall(self.method, endpoint, self.path.format(project_id=project_id), f"{self.name} for {label}",
                       query=params, body=data, not_found_hint=self.not_found_hint)

    def planned(self, endpoint: Endpoint, project_id: str | None, body: Mapping[str, Any] | None,
                params: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """The dry run's account of a call: method, URL (``{project_id}`` when unknown) and body."""
        from urllib.parse import urlencode

        url = endpoint.url(self.path.format(project_id=project_id or "{project_id}"))
        return {"method": self.method, "url": url + (f"?{urlencode(params)}" if params else ""), "body": body}

    def answer(self, client: Client, endpoint: Endpoint, project_id: str | None, label: str,
               body: Mapping[str, Any] | None = None, params: tuple[tuple[str, str], ...] = (),
               keep: Keep = True) -> tuple[Any, Any]:
        """Send one call: its raw JSON answer (None unless ``keep``; what ``keep`` makes of it when it is
        a function) and what its reader makes of it."""
        call = self.request(endpoint, project_id, label, body, params)
        return client.send(call, lambda data: self.read(data, call.what, body if body is not None else dict(params)),
                           keep)


Keep = Union[bool, Callable[[Any], Any]]  # keep an answer's data (True), or what the function makes of it


@dataclass(frozen=True)
class Reply:
    status: int
    text: str
    request_id: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class ClientOptions:
    timeout: float
    retries: int
    concurrency: int
    keep_answers: bool = True  # each window keeps its parsed answer (--raw prints them); else only what it read


@dataclass(frozen=True)
class NetworkProblem:
    """What went wrong below HTTP, in words, and whether another attempt may mend it."""

    text: str
    retry: bool = True
    hint: str | None = None


class NameNotResolvedInTime(TimeoutError):
    """The host name's lookup outlasted the attempt (it goes on, for the next attempt to wait for)."""


class AnswerCutShort(ConnectionError):
    """The connection closed in the middle of the status line or headers: a network failure, not an answer."""


CA_HINT = "the server's certificate is not trusted; for a private CA set REQUESTS_CA_BUNDLE to its PEM file"
# OpenSSL's reasons for bytes that are no TLS record at all: most often an HTTP answer to the ClientHello.
NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "PACKET_LENGTH_TOO_LONG",
                   "RECORD_LAYER_FAILURE", "UNKNOWN_PROTOCOL"}


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: requests wraps urllib3, which wraps ssl and socket."""
    chain: list[BaseException] = []
    pending: list[Any] = [exc]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or any(current is seen for seen in chain):
            continue
        chain.append(current)
        pending += [getattr(current, "reason", None), current.__cause__, current.__context__,
                    *[arg for arg in current.args if isinstance(arg, BaseException)]]
    return chain


def raised_in(exc: BaseException, function: str) -> bool:
    """Whether ``exc`` was raised inside a Python function of that name (its traceback's frames)."""
    import traceback

    return any(frame.name == function for frame in traceback.extract_tb(exc.__traceback__))


def describe_network_error(exc: Exception, timeout: float, expired: bool = False) -> NetworkProblem:
    """A short, secret-free description of a failure below HTTP, and whether to try again."""
    chain = exception_chain(exc)
    handshake = any(raised_in(e, "do_handshake") for e in chain)  # ssl's (and urllib3's, for TLS in TLS)
    problem = setup_problem(chain, timeout, expired, handshake) or connection_problem(chain, handshake)
    if problem is not None:
        return problem
    cause = next((e for e in chain if isinstance(e, OSError) and e.strerror), None)
    if cause is not None:
        return NetworkProblem(f"network error: {printable(cause.strerror, 80)}")
    return NetworkProblem(f"network error ({type(exc).__name__})")


def _first(chain: Sequence[BaseException], *kinds: type) -> Any:
    return next((e for e in chain if isinstance(e, kinds)), None)


def setup_problem(chain: Sequence[BaseException], timeout: float, expired: bool,
                  handshake: bool) -> NetworkProblem | None:
    """Failures of getting there: the certificate, the name, the time allowed, TLS."""
    import socket
    import ssl

    import requests
    import urllib3
    from urllib3.util.ssl_match_hostname import CertificateError

    # This client's CA file (REQUESTS_CA_BUNDLE) missing or unreadable: found by urllib3 as it sets up
    # TLS, or by requests before it connects (an OSError of its own, no errno).
    unreadable = next((e for e in chain if isinstance(e, OSError) and not isinstance(e, ssl.SSLError) and (
        (e.errno and raised_in(e, "ssl_wrap_socket") and not handshake)
        or (not e.errno and "CA certificate bundle" in str(e)))), None)
    if unreadable is not None:
        return NetworkProblem("cannot load the TLS certificates to trust "
                              f"({printable(unreadable.strerror or str(unreadable), 120)})", retry=False,
                              hint="check that REQUESTS_CA_BUNDLE names a readable PEM file of CA certificates")
    certificate = _first(chain, ssl.SSLCertVerificationError, CertificateError)
    if certificate is not None:
        reason = getattr(certificate, "verify_message", None) or str(certificate.args[-1] if certificate.args else "")
        reason = printable(str(reason), 120).rstrip(".")
        return NetworkProblem("TLS certificate verification failed" + (f": {reason}" if reason else ""),
                              retry=False, hint=CA_HINT)
    if _first(chain, NameNotResolvedInTime):
        return NetworkProblem(f"the host name was not resolved within {timeout:g} s (--timeout)")
    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)
    if expired or any(isinstance(e, timeouts) and not isinstance(e, urllib3.exceptions.NewConnectionError)
                      for e in chain):
        return NetworkProblem(f"no answer within {timeout:g} s (--timeout)")
    if _first(chain, socket.gaierror):
        return NetworkProblem("the host name cannot be resolved")
    tls = _first(chain, ssl.SSLError)
    if tls is None:
        return None
    if any(raised_in(e, "ssl_wrap_socket") for e in chain) and not handshake:  # this client's own TLS set-up
        return NetworkProblem(f"cannot load the TLS certificates to trust ({printable(str(tls), 120)})",
                              retry=False, hint="check that REQUESTS_CA_BUNDLE names a readable PEM file "
                                                "of CA certificates")
    return tls_problem(tls, handshake)


def connection_problem(chain: Sequence[BaseException], handshake: bool) -> NetworkProblem | None:
    """Failures of a connection that was made: closed, reset, refused, or an answer cut short; the
    first kind in this order that the chain holds (all may mend on another attempt)."""
    import http.client

    import urllib3

    kinds = [((AnswerCutShort,), "the connection closed in the middle of the answer's status line or headers"),
             ((http.client.RemoteDisconnected,), "the server closed the connection without answering"),
             ((ConnectionResetError,), "the connection was reset during the TLS handshake" if handshake
              else "connection reset by the server"),
             ((ConnectionRefusedError,), "connection refused"),
             ((http.client.IncompleteRead, urllib3.exceptions.IncompleteRead),
              "the connection closed in the middle of the answer"),
             ((http.client.BadStatusLine,), "the answer did not start with an HTTP status line")]
    return next((NetworkProblem(text) for found, text in kinds if _first(chain, *found)), None)


def tls_problem(error: Any, handshake: bool) -> NetworkProblem:
    """A TLS failure named as such: an EOF is transient; an alert or a server that speaks no TLS is not."""
    import ssl

    reason = str(getattr(error, "reason", None) or "")
    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or reason == "UNEXPECTED_EOF_WHILE_READING":
        return NetworkProblem("the server closed the connection during the TLS handshake" if handshake
                              else "the server cut the TLS connection short")
    if reason in NOT_TLS_REASONS:
        return NetworkProblem("the server did not speak TLS", retry=False,
                              hint="an https:// endpoint needs a TLS port: check the URL's scheme and port")
    words = reason.lower().replace("_", " ") or printable(str(error), 120)
    if "alert " in words:
        return NetworkProblem(f"the TLS handshake failed: the server sent the alert \"{words.split('alert ', 1)[1]}\"",
                              retry=False, hint="the server refused this client's TLS: check the endpoint's URL, "
                                                "and the proxy if one is in the way (HTTPS_PROXY)")
    # Anything else inside the handshake is a set-up the two sides do not share; after it, a damaged record.
    return NetworkProblem(f"the TLS handshake failed: {words}" if handshake else f"TLS error: {words}",
                          retry=not handshake)


MAX_JSON_DEPTH = 64  # an answer is an object of numbers: nesting this deep is no answer (and json recurses)
_JSON_SKIPPED = re.compile(r'"[^"]*"|[^\[\]{}"]+')  # strings (their escapes gone) and all but brackets


def json_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects deeper than ``limit``, found without parsing it:
    strings and everything but brackets dropped, then the innermost pairs peeled, a level a pass."""
    if text.count("[") + text.count("{") <= limit:
        return False
    # In JSON text a backslash always starts a pair, so without the escaped backslashes every \" left
    # is an escaped quote: what remains between quotes is a string.
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    brackets = _JSON_SKIPPED.sub("", unescaped).replace("{", "[").replace("}", "]")
    for _ in range(limit):
        peeled = brackets.replace("[]", "")
        if peeled == brackets:  # empty, or not balanced (the parser says so)
            return False
        brackets = peeled
    return bool(brackets)


def parse_json_text(text: str, what: str) -> Any:
    """Parse a response body with exact decimals. NaN and Infinity, a key twice in one object (which
    value would count?) and nesting deeper than MAX_JSON_DEPTH are malformed."""
    def reject(constant: str) -> Any:
        raise ValueError(constant)

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(pairs)
        if len(data) < len(pairs):
            seen: set[str] = set()
            twice = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise MalformedResponse(f'malformed response from {what}: the key "{printable(twice, 60)}" '
                                    "appears twice in one object")
        return data

    if json_too_deep(text):
        raise MalformedResponse(f"malformed response from {what}: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=reject, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError):
        snippet = printable(text, 80)
        raise MalformedResponse(f"malformed response from {what}: not valid JSON ({snippet!r})") from None


def _error_parts(data: dict) -> tuple[Any, Any]:
    """An error body's code and message, in each shape the APIs document: API Gateway and MaaS
    ``{"error_code", "error_msg"}``; IAM ``{"error": {"code", "message"}}``; Cloud Eye v1
    ``{"http_code", "message": {"details", "code"}}`` and its older ``{"code", "message",
    "details": {"details", "code"}}`` (Cloud Eye API reference, "Error Codes")."""
    if data.get("error_code") is not None or data.get("error_msg") is not None:
        return data.get("error_code"), data.get("error_msg")
    for nested, message in (("error", "message"), ("message", "details"), ("details", "details")):
        inner = data.get(nested)
        if isinstance(inner, dict):
            return inner.get("code"), inner.get(message)
    return None, None


def api_failure_message(what: str, reply: Reply) -> str:
    """``<what> failed: HTTP <status>: <error_code>: <error_msg> (X-Request-Id: …)``."""
    message = f"{what} failed: HTTP {reply.status}"
    detail = ""
    try:
        data = json.loads(reply.text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        code, msg = _error_parts(data)
        detail = ": ".join(printable(str(part), 200) for part in (code, msg)
                           if isinstance(part, (str, int)) and not isinstance(part, bool) and str(part))
    elif reply.text.lstrip()[:1] == "<":
        detail = "an HTML page instead of JSON"
    message += f": {detail}" if detail else ""
    return message + (f" (X-Request-Id: {reply.request_id})" if reply.request_id else "")


def auth_hint(status: int) -> str:
    if status == 401:
        return ("the signature was rejected: check that the AK and SK belong together and are active, "
                "that a temporary AK comes with its security token, and that this machine's clock is "
                "correct (signed requests expire after 15 minutes)")
    return (f"the credentials lack a permission: the IAM user needs {MAAS_PERMISSION} "
            f"(and {IAM_PERMISSION} when the project id is looked up; or pass --project-id)")


def checked_data(reply: Reply, what: str, not_found_hint: str = "") -> Any:
    """A final reply as JSON data, or the contract's error for its status."""
    if reply.status in (401, 403):
        raise AuthRejected(api_failure_message(what, reply), hint=auth_hint(reply.status))
    if not 200 <= reply.status < 300:
        message = api_failure_message(what, reply)
        if 300 <= reply.status < 400:
            location = printable(reply.headers.get("Location", ""), 120)
            message += f"; redirect to {location!r} not followed"
        raise ApiError(message, hint=not_found_hint if reply.status == 404 and not_found_hint else None)
    return parse_json_text(reply.text, what)


def start_thread(run: Callable[[Callable[[], None]], None], what: str) -> None:
    """Start a thread (daemon-like: it never holds up the exit) running ``run(ready)``; ``run``
    calls ``ready()`` once it is under way. ApiError (exit 1) when it cannot start: the system
    refuses one (RuntimeError "can't start new thread", MemoryError) or it dies before it is ready.

    Not threading.Thread: its start() waits without a bound for the new thread to report from its
    bootstrap, and a thread that dies there of MemoryError (under ``ulimit -v``) never reports.
    """
    import _thread

    started = _thread.allocate_lock()
    started.acquire()
    try:
        _thread.start_new_thread(run, (started.release,))
    except (RuntimeError, MemoryError):
        raise ApiError(f"cannot start {what}: the machine is out of memory or threads", hint=THREADS_HINT) from None
    if not started.acquire(timeout=THREAD_START_WAIT):
        raise ApiError(f"{what} did not start within {THREAD_START_WAIT:g} s: the machine is out of memory or threads",
                       hint=THREADS_HINT)


def limit_thread_memory() -> None:
    """Keep what each thread reserves small, so that a run fits an address-space limit (``ulimit -v``,
    systemd LimitAS=) by what it uses: stacks of THREAD_STACK_BYTES instead of the usual 8 MiB, and on
    glibc one malloc arena for all threads instead of one per thread (64 MiB of address space each).
    MALLOC_ARENA_MAX works only from the environment at start; mallopt() works at any time."""
    threading.stack_size(THREAD_STACK_BYTES)
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes  # imported here: only runs that send requests start threads

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):  # no C library to ask: nothing to cap
        return
    mallopt(M_ARENA_MAX, 1)  # musl's mallopt does nothing, which is right: it has no arenas


class DeadlineTimer:
    """One thread that ends the attempts whose --timeout has passed (a threading.Timer per attempt
    would cost a thread, and under glibc an arena's worth of address space, each)."""

    def __init__(self) -> None:
        self._due: dict[AttemptDeadline, float] = {}
        self._wake = threading.Condition()
        self._started = False
        self._closed = False

    def add(self, deadline: AttemptDeadline, seconds: float) -> None:
        with self._wake:
            if not self._started:
                start_thread(self._run, "the timer thread")
                self._started = True
            self._due[deadline] = time.monotonic() + seconds
            self._wake.notify()

    def remove(self, deadline: AttemptDeadline) -> None:
        with self._wake:
            self._due.pop(deadline, None)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def _run(self, ready: Callable[[], None]) -> None:
        ready()
        while True:
            with self._wake:
                if self._closed:
                    return
                now = time.monotonic()
                expired = [deadline for deadline, due in self._due.items() if due <= now]
                for deadline in expired:
                    del self._due[deadline]
                if not expired:
                    self._wake.wait(min(self._due.values()) - now if self._due else None)
                    continue
            for deadline in expired:  # outside the lock: shutting a socket down may take a moment
                deadline.expire()


class AttemptDeadline:
    """--timeout for one attempt as a whole. When it passes, the attempt's connection is shut
    down, which ends whatever read is in progress: a per-read timeout never fires on a server
    that trickles a byte a second. Connections report themselves (``watch_current``) from the
    thread that runs the attempt; the client's DeadlineTimer calls ``expire``."""

    _current = threading.local()

    def __init__(self, seconds: float, timer: DeadlineTimer) -> None:
        self.expired = False
        self._seconds = seconds
        self._timer = timer
        self._sockets: list[Any] = []
        self._lock = threading.Lock()

    def __enter__(self) -> AttemptDeadline:
        self._timer.add(self, self._seconds)
        AttemptDeadline._current.deadline = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.remove(self)
        AttemptDeadline._current.deadline = None

    @classmethod
    def watch_current(cls, connection: Any) -> None:
        deadline = getattr(cls._current, "deadline", None)
        sock = getattr(connection, "sock", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            # The socket itself: a response that closes its connection keeps reading from it
            # after http.client has let go of it.
            deadline._sockets.append(sock)
            expired = deadline.expired
        if expired:
            _shut_down(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)


def _shut_down(sock: Any) -> None:
    import socket

    try:
        # The plain socket's shutdown: an SSLSocket's own would drop its state under a reader.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _only_tls_records_pending(sock: Any) -> bool:
    """Whether what a readable idle TLS socket holds is only TLS's own records (session tickets):
    a non-blocking read processes them and finds no data. Data or EOF mean the connection is done."""
    import ssl

    if not isinstance(sock, ssl.SSLSocket):
        return False
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0)
        sock.recv(1)
        return False
    except ssl.SSLWantReadError:
        return True
    except (OSError, ValueError):
        return False
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass


def pool_slots(pool: Any) -> tuple[Callable[..., Any], Callable[[Any], None]] | None:
    """A urllib3 pool's ``_get_conn``/``_put_conn`` (private; tested with urllib3 2.x): taking a free
    slot's connection and handing it back is the only way to fill a pool in advance. None when a
    version has no such methods: then nothing is opened early, which costs only the saving."""
    get, put = getattr(pool, "_get_conn", None), getattr(pool, "_put_conn", None)
    return (get, put) if callable(get) and callable(put) else None


class Resolver:
    """Host names looked up once per run, each wait bounded by the attempt's --timeout: getaddrinfo
    cannot be interrupted, so it runs in a thread of its own and the attempt stops waiting for it
    (the next attempt waits for the same lookup; a failed lookup is made afresh)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lookups: dict[tuple[str, int], Any] = {}

    def addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The IP addresses of ``host``, in the system's order; raises ``socket.gaierror`` or
        ``NameNotResolvedInTime``."""
        import concurrent.futures
        import ipaddress

        try:
            ipaddress.ip_address(host.split("%")[0])
            return [host]
        except ValueError:
            pass
        with self._lock:
            lookup = self._lookups.get((host, port))
            if lookup is None or (lookup.done() and lookup.exception() is not None):
                lookup = self._lookups[(host, port)] = self._started(host, port)
        ends = None if timeout is None else time.monotonic() + timeout
        # In short steps, like _next_finished: a signal that lands just before a long wait starts
        # (or in another thread) would otherwise leave Ctrl-C unanswered until the wait ends.
        while True:
            step = SIGNAL_CHECK_INTERVAL if ends is None else min(SIGNAL_CHECK_INTERVAL, ends - time.monotonic())
            try:
                infos = lookup.result(max(step, 0))
                return list(dict.fromkeys(str(info[4][0]) for info in infos))
            except concurrent.futures.TimeoutError:
                if ends is not None and time.monotonic() >= ends:
                    raise NameNotResolvedInTime(f"{host} was not resolved within {timeout:g} s") from None

    @staticmethod
    def _started(host: str, port: int) -> Any:
        import socket
        from concurrent.futures import Future

        from urllib3.util.connection import allowed_gai_family

        lookup: Future = Future()

        def look_up() -> None:
            try:
                lookup.set_result(socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM))
            except BaseException as exc:  # handed to whichever attempt waits for it
                lookup.set_exception(exc)

        import _thread

        try:  # not threading.Thread, whose start() can wait for ever (see start_thread): a thread that
            # dies before it looks up leaves the attempt to end at --timeout, like a slow lookup
            _thread.start_new_thread(look_up, ())
        except (RuntimeError, MemoryError):  # no thread left: look it up in this one, unbounded, rather than fail
            look_up()
        return lookup


class HeaderLines:
    """A response's socket file while ``HTTPResponse.begin`` reads the status line and headers,
    noting a line that the connection cut short: http.client takes a cut header block for a whole one."""

    def __init__(self, fp: Any) -> None:
        self.fp, self.started, self.cut = fp, False, False

    def readline(self, limit: int = -1) -> bytes:
        line = self.fp.readline(limit)
        if not (line.endswith(b"\n") or 0 <= limit <= len(line)) and (line or self.started):
            self.cut = True  # the end of the stream before the blank line that ends the headers
        self.started = self.started or bool(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)


def final_response_class() -> type:
    """http.client's response, reading to the final answer: it skips 100 Continue only, and would take
    ``103 Early Hints`` (or any other interim answer) for the status; a status line or header block
    that the connection cut short is ``AnswerCutShort``, a network failure, not an answer."""
    import http.client

    class FinalResponse(http.client.HTTPResponse):
        def begin(self) -> None:
            lines = self.fp = HeaderLines(self.fp)
            try:
                super().begin()
            except http.client.HTTPException:
                if lines.cut:
                    raise AnswerCutShort("the connection closed in the middle of the headers") from None
                raise
            finally:
                if self.fp is lines:
                    self.fp = lines.fp
            if lines.cut:
                self.close()
                raise AnswerCutShort("the connection closed in the middle of the headers")

        def _read_status(self) -> Any:  # private, in every http.client since Python 3.0
            while True:
                version, status, reason = super()._read_status()
                if not 100 <= status < 200 or status == 101:  # 101 ends HTTP on the connection: final
                    return version, status, reason
                http.client.parse_headers(self.fp)  # an interim answer's headers, not the final ones

    return FinalResponse


def resolving_connection(base: Any, resolver: Resolver) -> Any:
    """urllib3's connection class ``base`` whose host name lookup and connect share --timeout (through
    the run's ``resolver``, and urllib3's private ``_new_conn``/``_dns_host``; without them, urllib3's
    own unbounded lookup), and whose responses are read to the final answer."""
    import socket

    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    class Resolving(base):
        response_class = final_response_class()

        def _new_conn(self) -> Any:
            host, timeout = getattr(self, "_dns_host", None), self.timeout
            if not isinstance(host, str):
                return super()._new_conn()
            budget = timeout if isinstance(timeout, (int, float)) else None
            started = time.monotonic()
            try:
                addresses = resolver.addresses(host, self.port, budget)
            except socket.gaierror as exc:
                raise NameResolutionError(self.host, self, exc) from exc
            except NameNotResolvedInTime as exc:
                raise ConnectTimeoutError(self, str(exc)) from exc
            try:
                for address in addresses[:-1]:  # getaddrinfo answers at least one address or raises
                    try:
                        return self._connected(address, budget, started)
                    except NewConnectionError:
                        continue  # refused or unreachable there: the next address
                return self._connected(addresses[-1], budget, started)
            finally:
                self._dns_host, self.timeout = host, timeout

        def _connected(self, address: str, budget: float | None, started: float) -> Any:
            self._dns_host = address  # an IP address: urllib3's own lookup of it asks no server
            if budget is not None:  # the lookup and the connect share --timeout
                self.timeout = max(budget - (time.monotonic() - started), 0.001)
            return super()._new_conn()

    return Resolving


def watched_adapter() -> Any:
    """requests' HTTPAdapter whose connections report to the attempt's deadline, through urllib3's
    public hooks (a pool's ``ConnectionCls``, a manager's ``pool_classes_by_scheme``)."""
    import requests
    from urllib3 import connection, connectionpool

    def watched(base: Any) -> Any:
        class Watched(base):
            def connect(self) -> None:
                super().connect()
                AttemptDeadline.watch_current(self)

            @property
            def is_connected(self) -> bool:
                # A TLS 1.3 server sends session tickets just after the handshake: on an idle pooled
                # (pre-opened) connection they read as pending bytes, which urllib3 takes for a
                # closed connection, and it would open another.
                return bool(super().is_connected) or _only_tls_records_pending(self.sock)

            def request(self, *args: Any, **kwargs: Any) -> Any:
                AttemptDeadline.watch_current(self)
                return super().request(*args, **kwargs)
        return Watched

    resolver = Resolver()  # one per adapter: one per run

    class HTTPPool(connectionpool.HTTPConnectionPool):
        ConnectionCls = watched(resolving_connection(connection.HTTPConnection, resolver))

    class HTTPSPool(connectionpool.HTTPSConnectionPool):
        ConnectionCls = watched(resolving_connection(connection.HTTPSConnection, resolver))

    pools = {"http": HTTPPool, "https": HTTPSPool}

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    return Adapter(pool_connections=HOST_POOLS, pool_maxsize=MAX_CONCURRENCY, max_retries=0)


def read_body(raw: Any, content_encoding: str | None, what: str) -> bytes:
    """A response body of at most MAX_BODY_BYTES (after decoding), read in pieces: an endless,
    oversized or compressed-bomb answer is a malformed response, never a full memory."""
    import zlib

    encoding = (content_encoding or "identity").strip().lower()
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}.get(encoding)
    if wbits is None and encoding != "identity":
        raise MalformedResponse(f"malformed response from {what}: unsupported Content-Encoding {encoding!r}")
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    body = bytearray()
    try:
        for piece in raw.stream(64 * 1024, decode_content=False):
            room = MAX_BODY_BYTES + 1 - len(body)
            body += decoder.decompress(piece, room) if decoder is not None else piece
            if len(body) > MAX_BODY_BYTES:
                raise MalformedResponse(f"malformed response from {what}: the body is larger than "
                                        f"{MAX_BODY_BYTES // (1024 * 1024)} MiB")
    except zlib.error:
        raise MalformedResponse(f"malformed response from {what}: the {encoding} body cannot be decoded") from None
    return bytes(body)


class Workers:
    """The client's threads, at most ``limit``: they run queued jobs (opening connections early, then
    requests) until the client closes, so the connections a run opens early and the requests it sends
    share the same few threads."""

    def __init__(self, limit: int) -> None:
        import queue  # imported here: only runs that send requests need it

        self.limit = limit
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # started and under way
        self._alive = 0  # still serving (a thread ends early only when it dies, of MemoryError)
        self._unfinished = 0  # jobs queued or running

    def run(self, jobs: Sequence[Callable[[], None]], threads: int) -> int:
        """Queue ``jobs`` for up to ``threads`` threads (at most ``limit``); the number of threads
        there are. A thread that cannot start leaves its share to those that did."""
        with self._lock:
            self._unfinished += len(jobs)
        for job in jobs:
            self._jobs.put(job)
        while self._threads < min(threads, self.limit):
            try:
                start_thread(self._serve, "a worker thread")
            except ApiError:
                break
            self._threads += 1
        return self._threads

    @property
    def threads(self) -> int:
        """The threads started so far (``run``'s ``threads`` counts them all, not only new ones)."""
        return self._threads

    @property
    def idle(self) -> bool:
        """Whether nothing more will be done: no job left, or no thread left to do it."""
        with self._lock:
            return self._unfinished == 0 or self._alive == 0

    def close(self) -> None:
        for _ in range(self._threads):
            self._jobs.put(None)

    def _serve(self, ready: Callable[[], None]) -> None:
        with self._lock:
            self._alive += 1
        try:
            ready()
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                try:
                    job()
                finally:
                    with self._lock:
                        self._unfinished -= 1
        finally:
            with self._lock:
                self._alive -= 1


def new_session(env: Mapping[str, str]) -> Any:
    """A requests session as every exchange of a run uses it: the run's environment, not the
    process's (no ~/.netrc, which would replace the signed Authorization header; proxies and the
    CA bundle from ``env`` only), and answers asked for uncompressed (read_body still caps one)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
    session.headers["User-Agent"] = f"maas_rest_usage_stats/{__version__}"
    session.headers["Accept-Encoding"] = "identity"
    return session


class Client:
    """Sends any ApiCall: owns the HTTP session, the signer, pacing, retries and the fan-out."""

    def __init__(self, credentials: Credentials, options: ClientOptions, console: Console, clock: Clock,
                 env: Mapping[str, str]) -> None:
        # Imported here: --help, --version, --dry-run and usage errors never pay for it (nor for requests).
        from huaweicloudsdkcore.signer.signer import Signer

        self._credentials = credentials
        self._signer = Signer(credentials)
        self.options = options
        self.console = console
        self.clock = clock
        self._env = env
        # Waits (pacing, backoff) go through the cancel event, so one failure stops every worker.
        self._limiter = RateLimiter(RATE_LIMIT, RATE_PERIOD + ARRIVAL_MARGIN, clock, on_wait=console.rate_wait)
        self._cancelled = threading.Event()
        self.warm = False  # set once a signed request of this run has succeeded
        limit_thread_memory()
        self._workers = Workers(options.concurrency)
        self._timer = DeadlineTimer()
        self._session = new_session(env)
        self._adapter = watched_adapter()
        self._session.mount("https://", self._adapter)
        self._session.mount("http://", self._adapter)

    def close(self) -> None:
        self._workers.close()
        self._timer.close()
        self._session.close()

    def _redact(self, text: str) -> str:
        return redact(text, self._credentials.secrets())

    def _jitter_seed(self, call: ApiCall) -> str:
        return f"{self.clock.started.isoformat()} {call.method} {call.path} {call.what} {call.body!r}"

    def _cancelled_error(self, call: ApiCall) -> ApiError:
        return ApiError(f"{call.what}: cancelled after another request failed")

    def send(self, call: ApiCall, read: Callable[[Any], Any] | None = None, keep: Keep = True) -> Any:
        """The JSON data of the call's answer: paced, signed afresh and retried per attempt. With
        ``read``: (the data, or what ``keep`` makes of it, or None unless ``keep``; what ``read``
        makes of it)."""
        retries = self.options.retries
        failure, retry_after = "", None
        for attempt in range(retries + 1):
            if attempt:
                delay = retry_after if retry_after is not None else backoff_delay(attempt - 1, self._jitter_seed(call))
                self.console.debug(f"retrying in {delay:.1f} s ({attempt}/{retries})")
                if self.clock.wait(delay, self._cancelled):
                    raise self._cancelled_error(call)
            if not self._limiter.acquire(self._cancelled):
                raise self._cancelled_error(call)
            outcome = self._attempt(call)
            if isinstance(outcome, str):
                failure, retry_after = outcome, None
                continue
            if 200 <= outcome.status < 300:
                self.warm = True
            if outcome.status not in RETRY_STATUSES:
                return self._parsed(outcome, call, read, keep)
            failure = api_failure_message(call.what, outcome)
            retry_after = parse_retry_after(outcome.headers.get("Retry-After"), self.clock.wall())
        raise ApiError(failure + (f" (after {retries + 1} attempts)" if retries else ""),
                       hint="the service may be overloaded or unreachable; try again later, "
                            "or raise --retries/--timeout")

    def _parsed(self, reply: Reply, call: ApiCall, read: Callable[[Any], Any] | None, keep: Keep) -> Any:
        """A final reply's data, its strings masked, and what ``read`` makes of it. Large answers are
        parsed and read one at a time, and their data let go unless kept (or kept as ``keep`` makes
        it, --raw's text): sixteen parsed 1 MiB answers of tiny objects at once would take hundreds
        of MB, and parsing (CPU, under the GIL) gains nothing from threads."""
        with LARGE_ANSWERS if len(reply.text) > LARGE_ANSWER else contextlib.nullcontext():
            data = redact_data(checked_data(reply, call.what, call.not_found_hint), self._credentials.secrets())
            if read is None:
                return data
            value = read(data)
            return ((keep(data) if callable(keep) else data) if keep else None), value

    def _attempt(self, call: ApiCall) -> Reply | str:
        """One signed exchange within --timeout as a whole: the reply, or a retryable failure."""
        import requests

        url, headers, payload = self._signed(call)
        where = f"{call.method} {call.endpoint.base_path}{call.path}"
        started = self.clock.monotonic()
        deadline = AttemptDeadline(self.options.timeout, self._timer)  # real time: it bounds real socket I/O
        try:
            with deadline:
                proxy = proxy_for(call.endpoint, self._env)
                response = self._session.request(call.method, url, headers=headers, data=payload or None,
                                                  timeout=self.options.timeout, allow_redirects=False,
                                                  proxies={"https": proxy} if proxy else {}, stream=True)
                try:
                    body = read_body(response.raw, response.headers.get("Content-Encoding"), call.what)
                finally:
                    response.close()
            if deadline.expired:  # what was cut short may still have looked like an answer
                raise TimeoutError
        except Exception as exc:  # mapped below; anything unexpected is raised again
            if isinstance(exc, ToolError) and not deadline.expired:
                raise
            failure = self._network_failure(call, exc, deadline.expired)
            self.console.debug(f"{where} -> {failure}")
            return failure
        # An error body only feeds messages: hide any echoed key before it is cut short. A success is
        # parsed first and its strings masked (send): masking its text could change a number.
        text = body.decode("utf-8", errors="replace")
        if not 200 <= response.status_code < 300:
            text = self._redact(text)
        request_id = printable(self._redact(response.headers.get("X-Request-Id", "")), 80)
        elapsed_ms = (self.clock.monotonic() - started) * 1000
        self.console.debug(f"{where} -> HTTP {response.status_code} in {elapsed_ms:.0f} ms "
                           f"(X-Request-Id: {request_id or '-'})")
        received = requests.structures.CaseInsensitiveDict(
            {name: self._redact(value) for name, value in response.headers.items()})
        return Reply(response.status_code, text, request_id, received)

    def _network_failure(self, call: ApiCall, exc: Exception, expired: bool) -> str:
        """A retryable failure's description; raises for the failures a retry cannot mend. Both name
        the host and port, and where the endpoint's URL came from."""
        import requests
        import urllib3

        if not expired and not isinstance(exc, (requests.exceptions.RequestException, urllib3.exceptions.HTTPError)):
            if isinstance(exc, OSError):  # requests reports an unreadable REQUESTS_CA_BUNDLE this way
                raise ApiError(f"{call.what} failed: {exc.strerror or 'cannot load the TLS certificate bundle'}",
                               hint="check that REQUESTS_CA_BUNDLE names a readable PEM file") from None
            raise exc
        problem = describe_network_error(exc, self.options.timeout, expired)
        if isinstance(exc, requests.exceptions.RequestException) and not isinstance(
                exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            problem = dataclasses.replace(problem, retry=False)  # a request requests cannot make (a bad URL)
        where = call.endpoint.described
        proxy = proxy_for(call.endpoint, self._env)
        if proxy and any(isinstance(e, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError))
                         for e in exception_chain(exc)):
            parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            where += f", through the proxy {printable(parts.hostname or '?', 80)}:{port}"  # never its user or password
        message = f"{call.what} failed: {problem.text} ({where})"
        if not problem.retry:
            raise ApiError(message, hint=problem.hint) from None
        return message

    def _signed(self, call: ApiCall) -> tuple[str, dict, bytes]:
        from huaweicloudsdkcore.sdk_request import SdkRequest

        endpoint = call.endpoint
        headers = {"Host": endpoint.netloc, "X-Sdk-Date": self.clock.wall().strftime("%Y%m%dT%H%M%SZ")}
        if call.body:
            headers["Content-Type"] = "application/json"
        if self._credentials.security_token:
            headers["X-Security-Token"] = self._credentials.security_token
        request = SdkRequest(method=call.method, schema=endpoint.scheme, host=endpoint.netloc,
                             resource_path=endpoint.base_path + call.path, query_params=list(call.query),
                             header_params=headers, body=call.body)
        self._signer.sign(request)
        # Send exactly what was signed: the SDK's URI (its canonical query), headers and bytes.
        return request.url, dict(request.header_params), request.body

    def preopen(self, endpoint: Endpoint, count: int) -> None:
        """Open and TLS-handshake up to ``count`` connections to ``endpoint`` in the background, in
        the pool (same CA bundle, same proxy) its requests will take them from. Nothing is sent
        on them; one that fails to open costs nothing but the saving."""
        import requests

        if count <= 0:
            return
        proxy = proxy_for(endpoint, self._env)
        try:
            prepared = requests.Request("POST", endpoint.url("/")).prepare()
            pool = self._adapter.get_connection_with_tls_context(prepared, self._session.verify,
                                                           {"https": proxy} if proxy else {})
        except Exception:  # an older requests, a bad CA bundle: the requests themselves will say
            return
        slots = pool_slots(pool)
        if slots is None:
            return
        get, put = slots

        def open_one() -> None:
            try:
                connection = get(timeout=0)
            except Exception:  # no free slot: the pool is full already
                return
            try:
                connection.timeout = self.options.timeout
                if connection.sock is None:
                    connection.connect()
            except Exception:
                connection.close()
            put(connection)

        # A thread each, beside those an earlier preopen (another host) still occupies; a thread that
        # cannot start costs only the saving.
        self._workers.run([open_one] * count, self._workers.threads + count)

    def fan_out(self, tasks: Sequence[Callable[[], Any]], on_result: Callable[[int, Any], None]) -> None:
        """Run every task, concurrently once one signed request of this run has succeeded.

        ``on_result(index, value)`` runs in this thread for each success as it arrives (so a store
        keeps the days that succeeded); the first failure cancels the rest and is raised.
        """
        import queue

        pending = list(range(len(tasks)))
        if pending and not self.warm:
            # A wrong key must cost one failed signature, not a burst (SIGNATURE_LOCKOUT).
            on_result(0, tasks[0]())
            pending = pending[1:]
        if not pending:
            return
        finished: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()

        def job(index: int) -> Callable[[], None]:
            def run() -> None:
                if self._cancelled.is_set():
                    return
                try:
                    finished.put((index, tasks[index](), None))
                except BaseException as exc:  # handed to the main thread, which raises it
                    finished.put((index, None, exc))
            return run

        # The workers never hold up the exit: a failure or Ctrl-C ends the run at once instead of
        # waiting for requests still in flight (a hung server would otherwise hold it for --timeout).
        if not self._workers.run([job(index) for index in pending], len(pending)):
            raise ApiError("cannot start a worker thread: the machine is out of memory or threads", hint=THREADS_HINT)
        try:
            for _ in pending:
                index, value, failure = _next_finished(finished, self._workers)
                if failure is not None:
                    raise failure
                on_result(index, value)
        except BaseException:
            self._cancelled.set()
            raise


def _next_finished(finished: Any, workers: Workers) -> Any:
    """The next finished task, waiting in short steps: the kernel may deliver Ctrl-C to a worker
    thread blocked in a read, and then only a main thread that wakes up runs Python's handler
    (a plain blocking get would sleep through it until some request ended). A result that no
    thread is left to deliver (one died of MemoryError) is an error, never a wait."""
    import queue

    while True:
        try:
            return finished.get(timeout=SIGNAL_CHECK_INTERVAL)
        except queue.Empty:
            if workers.idle:
                break
    try:  # the last worker may have delivered just before it was seen idle
        return finished.get_nowait()
    except queue.Empty:
        raise ApiError("a worker thread ended without its result: the machine is out of memory",
                       hint=THREADS_HINT) from None


# The API calls: each is a CallKind and the reader of its answer.

def project_id_of(data: Any, what: str, params: Mapping[str, Any]) -> str:
    """IAM's answer to ``GET /v3/projects?name=<region>``: the id of the project named exactly so."""
    region = params["name"]
    projects = data.get("projects") if isinstance(data, dict) else None
    if not isinstance(projects, list):
        raise MalformedResponse(f"malformed response from {what}: no 'projects' list")
    exact = [p for p in projects if isinstance(p, dict) and p.get("name") == region]
    if not exact:
        raise ApiError(f"IAM has no project named {region} for these credentials",
                       hint="check --region, or pass --project-id")
    project = exact[0].get("id")
    if not isinstance(project, str) or not PROJECT_ID_RE.fullmatch(project):
        raise MalformedResponse(f"malformed response from {what}: the project id is not 32 lowercase "
                                "letters and digits")
    return project


def usage_of(data: Any, what: str, body: Mapping[str, Any]) -> Usage:
    """ShowStatistics' answer for one window: the usage it reports (batch answers carry batch counters)."""
    return Usage.from_response(data, what, body["infer_type"] == "batch")


IAM_PROJECTS = CallKind("IAM project lookup", "GET", "iam", IAM_PROJECTS_PATH, project_id_of)
SHOW_STATISTICS = CallKind("ShowStatistics", "POST", "maas", STATISTICS_PATH, usage_of, not_found_hint=(
    "the project id may not belong to the region: check that the one given (--project-id, HW_PROJECT_ID, "
    "HUAWEICLOUD_SDK_PROJECT_ID or the profile's project_id) is --region's, or give none and IAM looks it up; "
    "a MaaS endpoint (--endpoint) of another region also answers 404"))


def lookup_project_id(client: Client, iam: Endpoint, region: str) -> str:
    """The id of the project named like the region, from IAM."""
    return IAM_PROJECTS.answer(client, iam, None, region, params=(("name", region),))[1]


Series = tuple[str, tuple[tuple[str, str], ...]]  # (metric name, ((dimension, value), ...))


@dataclass(frozen=True)
class MetricList:
    """What one page of Cloud Eye's ListMetrics holds: its metrics and the model services they cover."""

    metrics: int
    models: frozenset[str]  # the distinct maas_api_id dimension values
    total: int  # meta_data.total: more than ``metrics`` when further pages exist
    series: tuple[Series, ...] = ()  # the page's SYS.MaaS entries: (metric, dimensions in name order)


def metric_list_of(data: Any, what: str, params: Mapping[str, Any]) -> MetricList:
    """ListMetrics' answer, checked against huaweicloudsdkces' ListMetricsResponse: ``metrics``
    ``[{namespace, metric_name, dimensions: [{name, value}], unit}]`` and ``meta_data {count, marker, total}``."""
    def malformed(why: str) -> MalformedResponse:
        return MalformedResponse(f"malformed response from {what}: {why}")

    def text(value: Any) -> bool:
        return isinstance(value, str)

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    metrics = data.get("metrics") if isinstance(data, dict) else None
    meta = data.get("meta_data") if isinstance(data, dict) else None
    if not isinstance(metrics, list):
        raise malformed("no 'metrics' list")
    if not isinstance(meta, dict) or not count(meta.get("count")) or not count(meta.get("total")) \
            or not text(meta.get("marker", "")):
        raise malformed("no 'meta_data' with a count, a total and a marker")
    models, series = set(), []
    for number, metric in enumerate(metrics, start=1):
        dimensions = metric.get("dimensions") if isinstance(metric, dict) else None
        if not (isinstance(dimensions, list) and text(metric.get("namespace")) and text(metric.get("metric_name"))
                and text(metric.get("unit", ""))):
            raise malformed(f"metric {number} lacks a namespace, a metric_name or a dimensions list")
        for dimension in dimensions:
            if not (isinstance(dimension, dict) and text(dimension.get("name")) and text(dimension.get("value"))
                    and 0 < len(dimension["value"]) <= CES_MAX_DIMENSION_VALUE):
                raise malformed(f"metric {number} has a dimension without a name and a value of 1 to "
                                f"{CES_MAX_DIMENSION_VALUE} characters")
            if dimension["name"] == CES_MODEL_DIMENSION:
                models.add(dimension["value"])
        if metric["namespace"] == CES_NAMESPACE:  # dimensions in name order, as data answers are read
            series.append((metric["metric_name"], tuple(sorted((d["name"], d["value"]) for d in dimensions))))
    return MetricList(len(metrics), frozenset(models), max(meta["total"], len(metrics)), tuple(series))


LIST_METRICS = CallKind("Cloud Eye ListMetrics", "GET", "ces", LIST_METRICS_PATH, metric_list_of)


# ----------------------------------------------------------------------------------------------
# Usage: exact sums of the API's answers
# ----------------------------------------------------------------------------------------------

_PLAUSIBLE_MAX = Decimal(10) ** 15  # far above any real account; larger means a broken answer
ZERO = Decimal(0)


def _field(data: Mapping[str, Any], name: str, integral: bool, what: str) -> Any:
    if name not in data:
        raise MalformedResponse(f"malformed response from {what}: field {name!r} is missing")
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise MalformedResponse(f"malformed response from {what}: field {name!r} is not a number")
    number = Decimal(value)
    if not number.is_finite() or number < 0 or number > _PLAUSIBLE_MAX:
        raise MalformedResponse(f"malformed response from {what}: field {name!r} is out of range")
    if integral:
        if number != number.to_integral_value():
            raise MalformedResponse(f"malformed response from {what}: field {name!r} is not a whole number")
        return int(number)
    return number


class Usage:
    """Exact sums, one per metric of SUMS, in the API's units: counts as integers, tokens in
    thousands as Decimal. ``Usage(requests=3, tokens_k=Decimal("1.5"))``; a sum not given is 0."""

    __slots__ = ("sums", "missing")

    def __init__(self, missing: frozenset[str] = frozenset(), **sums: Any) -> None:
        unknown = set(sums) - {m.field for m in SUMS}
        if unknown:
            raise TypeError(f"Usage has no sum {sorted(unknown)}")
        self.sums = {m.field: sums.get(m.field, 0 if m.api_unit == 1 else ZERO) for m in SUMS}
        self.missing = missing  # metric names the source does not have: shown as "-" (null), never 0

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__getattribute__("sums")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Usage) and self.sums == other.sums

    def __hash__(self) -> int:
        return hash(tuple(self.sums.values()))

    def __repr__(self) -> str:
        return "Usage(" + ", ".join(f"{name}={value!r}" for name, value in self.sums.items()) + ")"

    @classmethod
    def from_response(cls, data: Any, what: str, batch: bool) -> Usage:
        if not isinstance(data, dict):
            raise MalformedResponse(f"malformed response from {what}: not a JSON object")
        # Real-time answers may omit the batch counters; batch answers must carry them.
        return cls(**{m.field: _field(data, m.api_field, m.api_unit == 1, what)
                      for m in SUMS if batch or not m.batch_only or m.api_field in data})

    @classmethod
    def from_units(cls, values: Mapping[str, int]) -> Usage:
        """From actual units keyed by metric name (whole tokens, as the store keeps them)."""
        return cls(**{m.field: values[m.name] if m.api_unit == 1 else Decimal(values[m.name]) / m.api_unit
                      for m in SUMS})

    def units(self) -> dict[str, int] | None:
        """The sums in actual units keyed by metric name, or None when one is not a whole unit."""
        values = {}
        for metric in SUMS:
            exact = self.sums[metric.field] * metric.api_unit
            if exact != int(exact):
                return None
            values[metric.name] = int(exact)
        return values

    def __add__(self, other: Usage) -> Usage:
        with localcontext() as context:
            context.prec = 60  # sums stay exact far beyond any real total
            return Usage(self.missing | other.missing,
                         **{name: value + other.sums[name] for name, value in self.sums.items()})

    def completed(self, other: Usage, at_least: bool) -> Usage:
        """``other``'s sum where this one lacks the metric, and (``at_least``) each other sum no less
        than ``other``'s: totals that take ShowStatistics' where Cloud Eye has none or falls short."""
        sums = {}
        for m in SUMS:
            mine, theirs = self.sums[m.field], other.sums[m.field]
            if m.name in self.missing:
                sums[m.field] = theirs
            else:
                sums[m.field] = max(mine, theirs) if at_least else mine
        return Usage(self.missing & other.missing, **sums)

    def anomalies(self) -> list[str]:
        """The bounds of METRICS these exact sums break: ``total_errors 12 > total_requests 3``."""
        values = self.metrics()
        return [f"{metric.name} {values[metric.name]} > {metric.at_most} {values[metric.at_most]}"
                for metric in SUMS if metric.at_most is not None
                and not {metric.name, metric.at_most} & self.missing  # a metric not sent bounds nothing
                and self.sums[metric.field] > self.sums[METRICS_BY_NAME[metric.at_most].field]]

    def metrics(self) -> dict[str, Any]:
        """The contract's METRICS: actual units as integers (tokens rounded half up), the derived ones."""
        with localcontext() as context:
            context.prec = 60
            values: dict[str, Any] = {}
            for metric in METRICS:
                if metric.field is None:
                    values[metric.name] = metric.derive(values)
                elif metric.name in self.missing:
                    values[metric.name] = None
                elif metric.api_unit == 1:
                    values[metric.name] = self.sums[metric.field]
                else:
                    exact = self.sums[metric.field] * metric.api_unit
                    values[metric.name] = int(exact.quantize(Decimal(1), ROUND_HALF_UP))
            return values


def total_of(usages: Iterable[Usage]) -> Usage:
    total = Usage()
    for usage in usages:
        total = total + usage
    return total


# ----------------------------------------------------------------------------------------------
# Plan: the rows of a run, each owning its stored days and its live windows
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """Everything a run asks the API, validated; no credentials, no network."""

    region: str
    zone_name: str
    zone: tzinfo
    period: Period
    infer_type: str
    service_types: tuple[int, ...]
    api_keys: tuple[str, ...] | None
    ips: tuple[str, ...] | None
    bucket: CalendarUnit | None  # the time unit rows are grouped by, if any
    by_key: bool
    previous: Period | None = None  # --compare: the period the report is compared with
    by_model: bool = False
    one_service_type_asked: bool = False  # --service-type 1 or 2 alone: what Cloud Eye cannot tell apart
    by_service_type: bool = False  # --group-by service-type: what Cloud Eye cannot split by either

    @property
    def batch(self) -> bool:
        return self.infer_type == "batch"

    @property
    def cloud_eye(self) -> bool:
        """Whether rows come from Cloud Eye: split by model, or by key without --api-keys."""
        return self.by_model or (self.by_key and self.api_keys is None)

    @property
    def groupings(self) -> tuple[Grouping, ...]:
        """The dimensions this query's rows are split by."""
        return tuple(sorted((grouping for grouping in GROUPINGS if grouping.split(self)), key=lambda g: g.column))

    def previous_query(self) -> Query | None:
        """The same query over the previous period (--compare), else None."""
        if self.previous is None:
            return None
        return dataclasses.replace(self, period=self.previous, previous=None)


@dataclass
class Window:
    """One request of a row (ShowStatistics: at most 30 days) and, once fetched, its answer and what
    the call's reader made of it."""

    period: Period
    body: dict
    label: str
    call: CallKind = SHOW_STATISTICS
    day: date | None = None  # set when the window is exactly one whole final day (it may be stored)
    response: Any = None
    usage: Usage | None = None


@dataclass
class Row:
    """One output row: a time bucket, a service type and (when split by key) one key."""

    period: Period  # the row's part of the range
    service_type: int | None  # None for Cloud Eye rows: it does not tell preset from own services
    api_key: str | None
    bucket: Period | None = None  # the whole calendar hour, day, week or month of a time-bucket row
    stored: dict[date, Usage] = field(default_factory=dict)  # days read from the store
    windows: list[Window] = field(default_factory=list)  # the rest, fetched live
    model_id: str | None = None  # Cloud Eye rows: maas_api_id, its name, and maas_key_id
    model: str | None = None
    api_key_id: str | None = None
    cloud_eye: Usage | None = None  # Cloud Eye rows: the sum of their hours

    @property
    def total(self) -> Usage:
        unfetched = [w.label for w in self.windows if w.usage is None]
        if unfetched:
            raise ValueError(f"row total asked before its windows were fetched: {unfetched}")
        return total_of([*self.stored.values(), *(w.usage for w in self.windows if w.usage is not None),
                         *([self.cloud_eye] if self.cloud_eye is not None else [])])

    @property
    def source(self) -> str:
        if self.cloud_eye is not None:  # a Cloud Eye row has an id; the row of what it did not list has none
            return "cloud_eye" if self.model_id or self.api_key_id else "show_statistics"
        if self.stored:
            return "mixed" if self.windows else "store"
        return "live"

    @property
    def partial(self) -> bool:
        """Whether the range cuts this row's calendar bucket (it starts or ends inside it)."""
        return self.bucket is not None and self.bucket != self.period


@dataclass(frozen=True)
class Grouping:
    """One dimension rows can be split by, in every output: adding a dimension is one record of
    GROUPINGS. JSON rows and CSV lines carry every grouping's fields (null or empty where rows are not
    split that way), so their shape never depends on the flags; the grouped table shows a column and
    Prometheus a label for the groupings the query splits by."""

    name: str
    split: Callable[[Query], bool]  # whether the query's rows are split by it
    header: Callable[[Query], str]  # the grouped table's column
    label: Callable[[Row, Query], str]  # a row's cell in that column
    json: Callable[[Row, Query], dict[str, Any]]  # the fields of a JSON row
    csv_columns: tuple[str, ...]
    csv: Callable[[Row, Query], list[Any]]  # the CSV line's values for csv_columns
    prometheus: Callable[[Row, Query], list[tuple[str, str]]]  # the labels of a row's samples
    column: int  # its place among the grouped table's columns (JSON and CSV keep GROUPINGS' order)
    cloud_eye_only: bool = False  # its JSON fields and CSV columns appear in Cloud Eye runs only


def _bucket_header(query: Query) -> str:
    assert query.bucket is not None
    return query.bucket.header


def _row_bounds(row: Row, query: Query) -> list[str]:
    return [row.period.start.astimezone(query.zone).isoformat(), row.period.end.astimezone(query.zone).isoformat()]


TIME_BUCKET = Grouping(
    "time bucket", split=lambda query: query.bucket is not None, header=_bucket_header,
    label=lambda row, query: bucket_label(row, query) if row.bucket is not None else "whole period",
    json=lambda row, query: dict(zip(("start", "end"), _row_bounds(row, query))),
    csv_columns=("start", "end"), csv=_row_bounds,
    prometheus=lambda row, query: [], column=0)  # no time buckets in Prometheus: the collector has no timestamps
SERVICE_TYPE = Grouping(
    "service-type", split=lambda query: len(query.service_types) > 1 and not query.cloud_eye,
    header=lambda query: "Service", label=lambda row, query: SHORT_SERVICE_NAMES[row.service_type],
    json=lambda row, query: {"service_type": row.service_type, "service_name": SERVICE_NAMES.get(row.service_type)},
    csv_columns=("service_type",), csv=lambda row, query: ["" if row.service_type is None else row.service_type],
    # Every sample names its service and the inference type it ran as, split or not.
    prometheus=lambda row, query: [*([("service_type", str(row.service_type)),
                                      ("service", SERVICE_NAMES[row.service_type])]
                                     if row.service_type is not None else []), ("infer_type", query.infer_type)],
    column=1)
API_KEY = Grouping(
    "api-key", split=lambda query: query.by_key, header=lambda query: "API Key",
    label=lambda row, query: printable((row.api_key if row.api_key is not None else row.api_key_id) or '""',
                                       KEY_LABEL_WIDTH),
    json=lambda row, query: {"api_key": row.api_key},
    csv_columns=("api_key",), csv=lambda row, query: ["" if row.api_key is None else row.api_key],
    prometheus=lambda row, query: [("api_key", row.api_key)] if query.by_key and row.api_key is not None else [],
    column=3)  # after the model: a model's keys read as its breakdown
MODEL = Grouping(
    "model", split=lambda query: query.by_model, header=lambda query: "Model",
    label=lambda row, query: printable(row.model or row.model_id or "", KEY_LABEL_WIDTH),
    json=lambda row, query: {"model_id": row.model_id, "model": row.model},
    csv_columns=("model_id", "model"), csv=lambda row, query: [row.model_id or "", row.model or ""],
    prometheus=lambda row, query: [("model_id", row.model_id or ""), ("model", row.model or row.model_id or "")]
    if query.by_model else [], column=2, cloud_eye_only=True)
API_KEY_ID = Grouping(  # the key's Cloud Eye id: API_KEY's column shows the name, else this id
    "api-key", split=lambda query: False, header=lambda query: "API Key Id", label=lambda row, query: "",
    json=lambda row, query: {"api_key_id": row.api_key_id},
    csv_columns=("api_key_id",), csv=lambda row, query: [row.api_key_id or ""],
    prometheus=lambda row, query: [("api_key_id", row.api_key_id)] if row.api_key_id is not None else [],
    column=4, cloud_eye_only=True)
GROUPINGS = (TIME_BUCKET, SERVICE_TYPE, API_KEY, MODEL, API_KEY_ID)  # in the order of JSON fields and CSV columns


def output_groupings(query: Query) -> tuple[Grouping, ...]:
    """The groupings whose fields a query's JSON rows, CSV lines and Prometheus samples carry."""
    return tuple(grouping for grouping in GROUPINGS if query.cloud_eye or not grouping.cloud_eye_only)


StoredDays = Callable[[Row, Sequence[tuple[date, Period]]], dict[date, Usage]]


def plan_rows(query: Query, now: datetime, stored_days: StoredDays | None = None) -> list[Row]:
    """Rows in time order, then service type, then key, each with its stored days and live windows.

    ``stored_days(row, final_days)`` gives what a history store holds of a row's final days.
    """
    rows = []
    for bucket in split_buckets(query.period, query.bucket, query.zone):
        whole = calendar_bucket(bucket.start, query.bucket, query.zone) if query.bucket else None
        for service_type in query.service_types:
            for key in row_keys(query):
                row = Row(bucket, service_type, key, whole)
                days = final_days(bucket, query.zone, now) if stored_days is not None else []
                if stored_days is not None and days:
                    row.stored = stored_days(row, days)
                row.windows = plan_windows(query, row, days)
                rows.append(row)
    return rows


def row_keys(query: Query) -> Sequence[str | None]:
    """The key of each row per bucket and service type: each key label when split by key, else None."""
    return query.api_keys if query.by_key and query.api_keys is not None else (None,)


def plan_windows(query: Query, row: Row, days: Sequence[tuple[date, Period]]) -> list[Window]:
    """The live windows of a row: what its stored days leave, in windows of at most 30 days."""
    whole_days = {(period.start_ms, period.end_ms): day for day, period in days}
    windows = []
    for span in live_spans(row.period, days, row.stored):
        for start_ms, end_ms in split_windows(span.start_ms, span.end_ms):
            label = (f"{format_instant(from_epoch_ms(start_ms, query.zone))} ~ "
                     f"{format_instant(from_epoch_ms(end_ms, query.zone))} ({row_scope(row)})")
            period = Period(from_epoch_ms(start_ms, timezone.utc), from_epoch_ms(end_ms, timezone.utc))
            windows.append(Window(period, request_body(query, row, start_ms, end_ms), label,
                                  day=whole_days.get((start_ms, end_ms))))
    return windows


def row_scope(row: Row) -> str:
    """What a row's windows are about besides their time: ``Preset Service, key 'k'``."""
    return SERVICE_NAMES[row.service_type] + (f", key {row.api_key!r}" if row.api_key is not None else "")


def request_body(query: Query, row: Row, start_ms: int, end_ms: int) -> dict:
    body: dict[str, Any] = {"service_type": row.service_type, "start_time": start_ms, "end_time": end_ms,
                            "timezone": query.zone_name, "infer_type": query.infer_type}
    if row.api_key is not None:
        body["api_keys"] = [row.api_key]
    elif query.api_keys is not None:
        body["api_keys"] = list(query.api_keys)
    if query.ips is not None:
        body["ips"] = list(query.ips)
    return body


def live_spans(period: Period, days: Sequence[tuple[date, Period]], held: Mapping[date, Usage]) -> list[Period]:
    """The parts of ``period`` that the held (stored) days do not cover."""
    spans, cursor = [], period.start
    for day, day_period in days:
        if day in held:
            if cursor < day_period.start:
                spans.append(Period(cursor, day_period.start))
            cursor = day_period.end
    if cursor < period.end:
        spans.append(Period(cursor, period.end))
    return spans


def final_days(period: Period, zone: tzinfo, now: datetime) -> list[tuple[date, Period]]:
    """The whole local days inside ``period`` that ended more than FINAL_AFTER ago."""
    days: list[tuple[date, Period]] = []
    day = period.start.astimezone(zone).date()
    while True:
        start, end = day_start(day, zone), day_start(day + timedelta(days=1), zone)
        if end > period.end or end >= now - FINAL_AFTER:  # final: ended MORE than 3 hours ago
            return days
        if start >= period.start:
            days.append((day, Period(start, end)))
        day += timedelta(days=1)


def windows_of(rows: Sequence[Row]) -> list[tuple[Row, Window]]:
    """Every live window with its row, in the order they are sent."""
    return [(row, window) for row in rows for window in row.windows]


def request_count(query: Query) -> int:
    """How many requests the plan of ``query`` and its previous period holds before any store,
    counted without building it: ``len(windows_of(plan_rows(...)))`` for both, in no time and memory
    however large."""
    periods = [q for q in (query, query.previous_query()) if q is not None]
    return len(query.service_types) * len(row_keys(query)) * sum(
        window_count(q.period, q.bucket, q.zone) for q in periods)


def unrecorded_days(query: Query, rows: Sequence[Row], now: datetime) -> list[str]:
    """Local dates of the live part that lie before MaaS's retention."""
    cutoff = now - RETENTION
    dates: set[date] = set()
    for _, window in windows_of(rows):
        day = window.period.start.astimezone(query.zone).date()
        while day_start(day, query.zone) < min(cutoff, window.period.end):
            dates.add(day)
            day += timedelta(days=1)
    return sorted(d.isoformat() for d in dates)


@dataclass(frozen=True)
class Anomaly:
    """Figures of one answer or stored day that break a bound of METRICS, summed as sent all the same."""

    period: Period
    source: str  # the window or stored day, as the note names it
    broken: str  # the bound: "total_errors 12 > total_requests 3"
    scope: str  # the row's service type and key: "Preset Service"

    @property
    def what(self) -> str:
        return f"{self.broken} ({self.scope})"


@dataclass(frozen=True)
class Coverage:
    """How far a result can be trusted: the live parts older than MaaS's retention (the API may
    have answered them with zeros), the newest part, whose call data may still arrive, and the
    answers whose figures cannot be right."""

    retained_from: datetime
    missing: tuple[Period, ...]
    provisional_from: datetime | None
    anomalies: tuple[Anomaly, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing


def anomalies_of(query: Query, rows: Sequence[Row], answers: Sequence[Window] = ()) -> list[Anomaly]:
    """The fetched windows and stored days whose figures break a bound, in time order; ``answers``:
    a Cloud Eye run's other windows (the reconciliation's ShowStatistics ones are checked)."""
    found = [Anomaly(window.period, window.label, broken, row_scope(row))
             for row, window in windows_of(rows) if window.usage is not None for broken in window.usage.anomalies()]
    found += [Anomaly(window.period, window.label, broken, SERVICE_NAMES[window.body["service_type"]])
              for window in answers if isinstance(window.usage, Usage) for broken in window.usage.anomalies()]
    for row in rows:
        for day, usage in row.stored.items():
            period = Period(day_start(day, query.zone), day_start(day + timedelta(days=1), query.zone))
            found += [Anomaly(period, f"{day} ({row_scope(row)}) in the store", broken, row_scope(row))
                      for broken in usage.anomalies()]
    for row in rows:  # Cloud Eye's hours of a row, summed; not the row of what it did not list (a difference)
        if row.cloud_eye is not None and row.source == "cloud_eye":
            scope = cloud_eye_scope(row)
            source = (f"Cloud Eye's hours {format_instant(row.period.start.astimezone(query.zone))} ~ "
                      f"{format_instant(row.period.end.astimezone(query.zone))} ({scope})")
            found += [Anomaly(row.period, source, broken, scope) for broken in row.cloud_eye.anomalies()]
    return sorted(found, key=lambda anomaly: anomaly.period.start)


def cloud_eye_scope(row: Row) -> str:
    """What a Cloud Eye row is about besides its time: ``Cloud Eye, model 'glm-5', key 'ops'``."""
    parts = [f"model {row.model or row.model_id!r}" if row.model_id else "",
             f"key {row.api_key or row.api_key_id!r}" if row.api_key_id else ""]
    return ", ".join(["Cloud Eye", *filter(None, parts)])


def coverage_of(query: Query, rows: Sequence[Row], now: datetime, answers: Sequence[Window] = ()) -> Coverage:
    """The coverage of the rows' live windows; days read from a store are never missing. Cloud Eye
    rows cover the query's period, with Cloud Eye's retention."""
    retained_from = now - (CES_RETENTION if query.cloud_eye else RETENTION)
    spans = [query.period] if query.cloud_eye else [w.period for _, w in windows_of(rows)]
    old_parts = sorted((Period(span.start, min(span.end, retained_from))
                        for span in spans if span.start < retained_from), key=lambda p: p.start)
    missing: list[Period] = []
    for part in old_parts:
        if missing and part.start <= missing[-1].end:
            missing[-1] = Period(missing[-1].start, max(missing[-1].end, part.end))
        else:
            missing.append(part)
    settling_from = now - FINAL_AFTER
    provisional = max(settling_from, query.period.start) if query.period.end > settling_from else None
    return Coverage(retained_from, tuple(missing), provisional, tuple(anomalies_of(query, rows, answers)))


@dataclass
class Report:
    """What the renderers read: the query, its rows (fetched), their coverage and the store's account."""

    query: Query
    project_id: str | None
    rows: list[Row]
    coverage: Coverage
    store: dict | None = None  # the JSON "store" report, when a store was used
    previous: Report | None = None  # --compare: the same report over the previous period
    reconciliation: Reconciliation | None = None  # Cloud Eye rows against ShowStatistics
    answers: list[Window] = field(default_factory=list)  # Cloud Eye runs: the data calls and reconciliation's
    budget: Budget | None = None  # --budget: the total against it
    costs: CostEstimate | None = None  # --prices: each row's estimated cost

    @property
    def total(self) -> Usage:
        """The rows' sum; with a reconciliation, a metric Cloud Eye lacks is ShowStatistics', and when
        Cloud Eye falls short every metric is at least ShowStatistics' (never less)."""
        total = total_of(row.total for row in self.rows)
        if self.reconciliation is None:
            return total
        return total.completed(self.reconciliation.statistics, at_least=self.reconciliation.short())

    def raw_windows(self) -> list[tuple[Row | None, Window]]:
        """--raw: every window answered, the rows' own (ShowStatistics) first, then a Cloud Eye run's."""
        return [*windows_of(self.rows), *((None, window) for window in self.answers)]


# ----------------------------------------------------------------------------------------------
# Cloud Eye: per model and per key
# ----------------------------------------------------------------------------------------------

# Cloud Eye's SYS.MaaS metrics (cloudeye-exporter's table) that make each sum of a Usage, and the
# actual units per Usage unit (tokens are per token in Cloud Eye, in thousands in a Usage).
CES_SUMS = {"tokens_k": ("total_tokens",), "prompt_k": ("prompt_tokens",), "completion_k": ("completion_tokens",),
            "requests": ("rpm",), "errors": ("req_count_4xx", "req_count_5xx")}
CES_METRIC_NAMES = tuple(name for names in CES_SUMS.values() for name in names)
# The metrics that count calls: every period's sum of them is a whole number.
CES_COUNTS = frozenset(name for m in SUMS if m.api_unit == 1 for name in CES_SUMS.get(m.field or "", ()))
CES_PLAUSIBLE_MAX = _PLAUSIBLE_MAX * max(metric.api_unit for metric in SUMS)  # tokens are tokens in Cloud Eye
CES_PERMISSION_HINT = ("the credentials lack a Cloud Eye permission: the IAM user needs ces:metrics:list and "
                       "ces:metricData:list (CES ReadOnlyAccess)")


def datapoints_of(data: Any, what: str, body: Mapping[str, Any]) -> list[tuple[Series, list[tuple[int, Decimal]]]]:
    """BatchListMetricData's answer (huaweicloudsdkces' BatchListMetricDataResponse): per series its
    hourly sums in [from, to), exact on their decimal text."""
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, list):
        raise MalformedResponse(f"malformed response from {what}: no 'metrics' list")
    asked = {(m["metric_name"], tuple(sorted((d["name"], d["value"]) for d in m["dimensions"])))
             for m in body["metrics"]}
    hourly = int(body["period"]) * 1000 == CES_HOURLY.ms
    answer, seen = [], set()
    for number, metric in enumerate(metrics, start=1):
        try:
            # dimensions in name order: the same series reads the same in every answer, whatever order it comes in
            series = (metric["metric_name"], tuple(sorted((d["name"], d["value"]) for d in metric["dimensions"])))
            points = [(point["timestamp"], point[body["filter"]]) for point in metric.get("datapoints") or []]
            twice = series in seen or len({at for at, _ in points}) < len(points)
            seen.add(series)
        except (KeyError, TypeError):
            raise MalformedResponse(f"malformed response from {what}: metric {number} lacks a metric_name, "
                                    "dimensions or datapoints with a timestamp and a sum") from None
        if twice:  # which one would count? Summing both would count the period twice
            raise MalformedResponse(f"malformed response from {what}: metric {number} repeats a series or a "
                                    "datapoint's timestamp")
        if series not in asked:  # another call's, or a series summed twice under another name
            raise MalformedResponse(f"malformed response from {what}: metric {number} is a series it was not "
                                    "asked for")
        for at, value in points:
            if isinstance(at, bool) or not isinstance(at, int) or isinstance(value, bool) \
                    or not isinstance(value, (int, Decimal)) or not Decimal(value).is_finite() or value < 0:
                raise MalformedResponse(f"malformed response from {what}: metric {number} has a datapoint "
                                        "that is not a timestamp and a number")
            if value > CES_PLAUSIBLE_MAX:  # the bound of ShowStatistics' fields, in Cloud Eye's units
                raise MalformedResponse(f"malformed response from {what}: metric {number} has a datapoint "
                                        "out of range")
            if series[0] in CES_COUNTS and value != int(value):
                raise MalformedResponse(f"malformed response from {what}: metric {number} ({series[0]}) has a "
                                        "datapoint that is not a whole number of calls")
            if hourly and at % CES_HOURLY.ms:  # an hour's sum is stamped with its start; any other stamp
                # would count calls twice (a coarser rollup off its grid is rejected and read as hours instead)
                raise MalformedResponse(f"malformed response from {what}: metric {number} has a datapoint "
                                        "stamped off the start of an hour")
        # A datapoint outside [from, to) belongs to another call (Cloud Eye may answer the hour of ``to``).
        answer.append((series, [(at, Decimal(value)) for at, value in points if body["from"] <= at < body["to"]]))
    return answer


BATCH_METRIC_DATA = CallKind("Cloud Eye BatchListMetricData", "POST", "ces", BATCH_METRIC_DATA_PATH, datapoints_of)


@dataclass(frozen=True)
class Names:
    """One page of the MaaS monitor's instances: model and key names by id, and how many pairs exist."""

    models: dict[str, str]
    keys: dict[str, str]
    count: int
    total: int


def names_of(data: Any, what: str, body: Mapping[str, Any]) -> Names:
    """``{"instances": [{"maas_api_id": {"id", "name"}, "maas_key_id": {"id", "name"}}], "total": N}``
    (Huawei's cloudeye-exporter, collector/maas*.go)."""
    instances = data.get("instances") if isinstance(data, dict) else None
    total = data.get("total") if isinstance(data, dict) else None
    if not isinstance(instances, list) or isinstance(total, bool) or not isinstance(total, int):
        raise MalformedResponse(f"malformed response from {what}: no 'instances' list and 'total'")
    names: dict[str, dict[str, str]] = {CES_MODEL_DIMENSION: {}, CES_KEY_DIMENSION: {}}
    for instance in instances:
        for dimension, found in names.items():
            item = instance.get(dimension) if isinstance(instance, dict) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("name"), str) \
                    and len(item["id"]) <= CES_MAX_DIMENSION_VALUE:  # a longer id is no series' (and no memory's)
                found[item["id"]] = item["name"][:MONITOR_MAX_NAME]
    return Names(names[CES_MODEL_DIMENSION], names[CES_KEY_DIMENSION], len(instances), total)


MONITOR_INSTANCES = CallKind("MaaS monitor instances", "POST", "monitor", MONITOR_INSTANCES_PATH, names_of)


def names_body(start: int) -> dict[str, Any]:
    """The monitor's instances call for a page of model and key names (cloudeye-exporter's query)."""
    return {"namespace": CES_NAMESPACE, "start": start, "limit": MONITOR_PAGE,
            "query": [{"dim_name": CES_MODEL_DIMENSION}, {"dim_name": CES_KEY_DIMENSION}]}


def names_page(client: Client, endpoint: Endpoint | None, project_id: str, start: int) -> Names | ToolError | None:
    """One page of the monitor's names; its failure returned, not raised (names are best effort: a
    failed page must not cancel the run's other calls); None without a monitor endpoint."""
    if endpoint is None:
        return None
    try:
        return MONITOR_INSTANCES.answer(client, endpoint, project_id, "model and key names", names_body(start))[1]
    except ToolError as exc:
        return exc


def more_names_pages(first: Names | ToolError | None) -> range:
    """The starts of the pages after the first, at its size (a monitor may page by fewer than asked),
    at most MONITOR_MAX_PAGES in all."""
    if not isinstance(first, Names) or not 0 < first.count < first.total:
        return range(0)
    return range(first.count, first.total, first.count)[:MONITOR_MAX_PAGES - 1]


def model_and_key_names(client: Client, endpoint: Endpoint | None, project_id: str, first: Names | ToolError | None,
                        console: Console) -> tuple[dict[str, str], dict[str, str]]:
    """Names by id from the first page and the others (fetched together, from the main thread), best
    effort: when any page fails, a note says why and rows keep their ids."""
    starts = more_names_pages(first)
    found: dict[int, Names | ToolError | None] = {}
    if starts:
        client.fan_out([functools.partial(names_page, client, endpoint, project_id, start) for start in starts],
                       found.__setitem__)
        if isinstance(first, Names) and len(starts) < ceil_div(first.total - first.count, first.count):
            console.note(f"model and key names are read for the first {MONITOR_MAX_PAGES * first.count:,} "
                         f"instances the MaaS monitor lists ({MONITOR_MAX_PAGES} pages): others show Cloud Eye's ids")
    pages = [first, *(found[index] for index in range(len(starts)))]
    failed = next((page for page in pages if isinstance(page, ToolError)), None)
    if failed is not None:
        console.note(f"model and key names are not available ({failed}): rows show Cloud Eye's ids")
        return {}, {}
    models: dict[str, str] = {}
    keys: dict[str, str] = {}
    for page in pages:
        if isinstance(page, Names):  # None: no monitor endpoint
            models.update(page.models)
            keys.update(page.keys)
    return models, keys


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def evened(total: int, size: int) -> int:
    """The size of the even parts that split ``total`` into as many parts as ``size`` needs."""
    return ceil_div(total, ceil_div(total, size))


def whole_hours(period: Period) -> Period:
    """The period widened to whole UTC hours (start down, end up): Cloud Eye sums whole hours."""
    start_ms = period.start_ms - period.start_ms % CES_HOURLY.ms
    end_ms = ceil_div(period.end_ms, CES_HOURLY.ms) * CES_HOURLY.ms
    return Period(from_epoch_ms(start_ms, timezone.utc), from_epoch_ms(end_ms, timezone.utc))


def cloud_eye_query(query: Query, console: Console) -> Query:
    """A Cloud Eye grouping's rules: what Cloud Eye cannot filter by is refused, the period widened
    to whole hours (a note says so), the service types are the two Cloud Eye covers."""
    if not query.cloud_eye:
        return query
    grouping = "--group-by model" if query.by_model else "--group-by api-key without --api-keys"
    refusals = [(query.batch, "--infer-type batch"), (query.ips is not None, "--ips"),
                (query.by_service_type, "--group-by service-type: it counts preset services and My Services "
                 "together"),
                (4 in query.service_types, "service type 4: it does not cover custom endpoints (--service-type 4 "
                 "or all, or --group-by service-type, ask for them)"),
                (query.one_service_type_asked, f"--service-type {query.service_types[0]}: it counts preset "
                 "services and My Services together")]
    for refused, flag in refusals:
        if refused:
            raise UsageError(f"{grouping} reads Cloud Eye, which cannot apply {flag}",
                             hint="leave it out, or group without model and key (ShowStatistics)")
    period = whole_hours(query.period)
    if query.bucket is not None:  # the offset at each end, and every boundary between buckets (Lord Howe
        # moves by half an hour for summer)
        inner = [bucket.start for bucket in split_buckets(query.period, query.bucket, query.zone)[1:]]
        for moment in (query.period.start, query.period.end, *inner):
            if moment.astimezone(query.zone).utcoffset() % timedelta(hours=1):
                raise UsageError(f"the time zone {query.zone_name} is not a whole number of hours from UTC: "
                                 f"Cloud Eye's hourly sums cannot make its {query.bucket.name}s",
                                 hint="use a zone a whole number of hours from UTC, or drop the time bucket")
    if period != query.period:
        start, end = (format_instant(moment.astimezone(query.zone)) for moment in (period.start, period.end))
        console.note(f"Cloud Eye sums whole hours: the period is widened to {start} ~ {end}")
    previous = whole_hours(query.previous) if query.previous else None
    if query.previous and query.previous.end == query.period.start:  # the span just before: it ends where
        # the widened period starts (widened on its own, it would share an hour with it); the same length
        # when it had the same length (--last 1d), else its own start (--last-month, a month cut short)
        same = query.previous.end - query.previous.start == query.period.end - query.period.start
        previous = Period(period.start - (period.end - period.start) if same else previous.start, period.start)
    return dataclasses.replace(query, period=period, service_types=(1, 2), previous=previous)


def ces_dimensions(query: Query) -> tuple[str, ...]:
    """The dimension set of the series a query reads: per model, or per model and key."""
    return (CES_MODEL_DIMENSION, CES_KEY_DIMENSION) if query.by_key else (CES_MODEL_DIMENSION,)


def list_params(metric: str, marker: str = "") -> tuple[tuple[str, str], ...]:
    """ListMetrics' query for one SYS.MaaS metric (its series alone: a small answer, whatever else
    the namespace holds), after the page whose marker is ``marker``."""
    return (("namespace", CES_NAMESPACE), ("metric_name", metric), ("limit", str(CES_LIST_LIMIT)),
            *((("start", marker),) if marker else ()))


CES_NARROW_HINT = "narrow it: a shorter range, or group by model or by key alone; or raise --max-requests"


class Listing:
    """What the ListMetrics pages of a run have cost so far, across the metrics listed in parallel.
    A page after each metric's first is a request, and every series listed needs a share of a data
    call (500 at most in one): once those alone pass --max-requests, or the series pass
    CES_MAX_LISTED, listing stops with the refusal, whatever pages a server would go on answering."""

    def __init__(self, limit: int, counted: int) -> None:
        self.limit, self.requests, self.series = limit, counted, 0
        self._lock = threading.Lock()

    def page(self, listed: int, first: bool) -> None:
        with self._lock:
            self.requests += not first
            self.series += listed
            needed = self.requests + ceil_div(self.series, CES_MAX_SERIES)
        if self.series > CES_MAX_LISTED:
            raise UsageError(f"Cloud Eye lists more than {CES_MAX_LISTED:,} {CES_NAMESPACE} series for this grouping, "
                             "more than a run keeps", hint="group by model alone: it reads a series per model, "
                             "not per model and key")
        if needed > self.limit:
            raise UsageError(f"Cloud Eye lists series that need at least {needed:,} requests, more than "
                             f"--max-requests {self.limit} (what was sent so far only listed them)",
                             hint=CES_NARROW_HINT)


def listed_series(client: Client, endpoint: Endpoint, project_id: str, query: Query, metric: str,
                  listing: Listing) -> list[Series]:
    """Every series of ``metric`` that ListMetrics lists with the query's dimension set, page after
    page (``start`` is the marker of the page before; a marker seen before is malformed: its pages
    would go round for ever), each page counted in ``listing``."""
    wanted, found, marker, seen, markers = set(ces_dimensions(query)), [], "", 0, set()
    while True:
        data, page = LIST_METRICS.answer(client, endpoint, project_id, f"{CES_NAMESPACE} {metric}",
                                         params=list_params(metric, marker))
        kept = [s for s in page.series if s[0] == metric and {name for name, _ in s[1]} == wanted]
        listing.page(len(kept), first=not markers and not marker)  # the series this grouping reads
        found += kept
        seen += page.metrics
        marker = data["meta_data"].get("marker", "")
        if not page.metrics or not marker or seen >= page.total:
            return sorted(set(found))
        if marker in markers:
            raise MalformedResponse(f"malformed response from {LIST_METRICS.name} ({CES_NAMESPACE} {metric}): "
                                    "its pages go round (a page marker came back)")
        markers.add(marker)


@dataclass(frozen=True)
class Rollup:
    """A Cloud Eye rollup period (BatchListMetricData's ``period``): sums of the calls in each period,
    stamped with the period's start, and how long a span one call may ask for."""

    name: str
    seconds: int
    max_days: int  # the SDK docstring of ``from``: a longer to - from moves from forward

    @property
    def ms(self) -> int:
        return self.seconds * 1000


# The rollups a run reads (Cloud Eye FAQ "What Is Rollup?": 5 and 20 minutes, 1 hour, 4 hours, 1 day;
# spans from the SDK docstring of ``from``). Hourly sums make every row; a 4-hour or daily sum stands
# for the hours it holds where they lie whole inside one row's bucket, for an answer a quarter or a
# 24th of the size. The API reference says Cloud Eye rounds ``from`` down to the period; that 4-hour
# and daily periods start at multiples of their length since the epoch (UTC midnight) and sum the
# same calls as their hours is not said. So every run checks them (BucketSums): each coarser answer's
# stamps, and its newest period of every series against that period's hours (asked for beside it, in
# the same wave). A rollup that fails is read again as hours, with a note.
CES_HOURLY = Rollup("hourly", 3600, 10)
CES_ROLLUPS = (Rollup("daily", 86400, 180), Rollup("4-hour", 14400, 30), CES_HOURLY)
# Coarser sums only for periods that ended this long ago: MaaS calls take 1 to 2 hours to reach the
# statistics (FINAL_AFTER's source), and the hours are where the newest calls show first.
CES_SETTLE = timedelta(hours=2)
# A data call's answer is about 60 bytes a datapoint: ~200 fit the first flight of a new TCP connection
# (Linux's initial window of 10 segments, ~14 KB). While they fit in one wave of calls, answers are
# kept that small: a larger one waits a round trip for each doubling of the window.
CES_QUICK_DATAPOINTS = 200
CES_EXPECTED_SERIES = 4 * len(CES_METRIC_NAMES)  # a guess, 4 model services: see cloud_eye_calls_expected
Span = tuple[Rollup, int, int]  # (rollup, from, to): epoch ms, whole periods of the rollup


class CesCall(NamedTuple):
    """One data call: a span of one rollup for a slice of the series; ``checks``: its hours check the
    newest period of a coarser rollup (it adds nothing to the rows)."""

    rollup: Rollup
    start: int
    end: int
    first: int
    count: int
    checks: bool = False


def ces_rollups(query: Query) -> tuple[Rollup, ...]:
    """The rollups whose periods never straddle two rows: every boundary between the query's buckets
    is a multiple of the period (days in UTC: all three; in Asia/Shanghai: 4-hour and hourly)."""
    inner = [bucket.start_ms for bucket in split_buckets(query.period, query.bucket, query.zone)[1:]]
    return tuple(rollup for rollup in CES_ROLLUPS if all(ms % rollup.ms == 0 for ms in inner))


def aligned_spans(lo: int, hi: int, rollups: Sequence[Rollup]) -> list[Span]:
    """[lo, hi) in the coarsest whole periods that fit, finer ones at the edges (hours last)."""
    if lo >= hi:
        return []
    rollup, finer = rollups[0], rollups[1:]
    if not finer:
        return [(rollup, lo, hi)]
    first, last = ceil_div(lo, rollup.ms) * rollup.ms, hi // rollup.ms * rollup.ms
    if first >= last:
        return aligned_spans(lo, hi, finer)
    return [*aligned_spans(lo, first, finer), (rollup, first, last), *aligned_spans(last, hi, finer)]


def ces_spans(query: Query, now: datetime) -> list[Span]:
    """The (whole-hour) period in rollup spans: coarser sums only inside the hourly sums' 155 days
    and CES_SETTLE before now, hours elsewhere; neighbouring spans of one rollup joined."""
    lo, hi, hour = query.period.start_ms, query.period.end_ms, CES_HOURLY.ms
    coarse_lo = min(hi, max(lo, ceil_div(to_epoch_ms(now - CES_RETENTION), hour) * hour))
    coarse_hi = max(coarse_lo, min(hi, to_epoch_ms(now - CES_SETTLE) // hour * hour))
    return joined([(CES_HOURLY, lo, coarse_lo), *aligned_spans(coarse_lo, coarse_hi, ces_rollups(query)),
                   (CES_HOURLY, coarse_hi, hi)])


def joined(spans: Iterable[Span]) -> list[Span]:
    """The spans in order without empty ones, neighbours of one rollup made one."""
    out: list[Span] = []
    for rollup, start, end in spans:
        if start < end and out and out[-1][0] == rollup and out[-1][2] == start:
            out[-1] = (rollup, out[-1][1], end)
        elif start < end:
            out.append((rollup, start, end))
    return out


def ces_split(spans: Sequence[Span], series: int, datapoints: int, checks: bool = False) -> list[CesCall]:
    """The calls that cover every series over the spans, each within Cloud Eye's limits (its
    rollup's span, 500 series) and ``datapoints`` (at most 3,000)."""
    calls = []
    for rollup, lo, hi in spans:
        periods, per_call = span_split(series, (hi - lo) // rollup.ms, rollup.max_days * 86400 // rollup.seconds,
                                       datapoints)
        if checks:  # a checked period's hours stay in one call per series: its reader knows them by their span
            periods = (hi - lo) // rollup.ms
            per_call = evened(series, max(1, min(CES_MAX_SERIES, datapoints // periods, series)))
        calls += [CesCall(rollup, start, min(hi, start + periods * rollup.ms), first, min(per_call, series - first),
                          checks)
                  for start in range(lo, hi, periods * rollup.ms) for first in range(0, series, per_call)]
    return calls


def span_split(series: int, periods: int, max_periods: int, datapoints: int) -> tuple[int, int]:
    """Periods and series per call for one span: the fewest calls of at most ``datapoints`` each."""
    best: tuple[int, int, int] | None = None
    for batches in range(1, series + 1):
        per_call = min(CES_MAX_SERIES, ceil_div(series, batches))
        length = min(max_periods, periods, datapoints // per_call)
        if length < 1 or (best is not None and per_call == best[2]):
            continue
        calls = ceil_div(series, per_call) * ceil_div(periods, length)
        if best is None or calls < best[0]:
            best = (calls, length, per_call)
    if best is None:  # one series a call is more than ``datapoints``: its periods are the limit
        return max(1, min(max_periods, periods, datapoints)), 1
    _, length, per_call = best
    return evened(periods, length), evened(series, per_call)


def checked_periods(spans: Sequence[Span]) -> list[Span]:
    """For each coarser rollup among the spans, its newest period (the likeliest to have calls, and
    the first to lag if Cloud Eye rolls up late), to be read as hours too."""
    last: dict[Rollup, int] = {}
    for rollup, _, hi in spans:
        if rollup != CES_HOURLY:
            last[rollup] = hi
    return [(CES_HOURLY, hi - rollup.ms, hi) for rollup, hi in last.items()]


def coarse_fallback(spans: Sequence[Span], series: int) -> int:
    """The most calls a plan of these spans can add after its wave: a second check of each coarser
    rollup, and its spans read again as hours."""
    coarse = [(CES_HOURLY, lo, hi) for rollup, lo, hi in spans if rollup != CES_HOURLY]
    return len({rollup for rollup, _, _ in spans if rollup != CES_HOURLY}) + len(
        ces_split(coarse, series, CES_MAX_DATAPOINTS))


def ces_calls(query: Query, now: datetime, series: int, wave: int, budget: int | None = None) -> list[CesCall]:
    """The data calls for ``series`` series: coarser sums where they fit (ces_spans) with the hours
    that check them, else hours alone when that takes fewer calls than one ``wave`` of concurrent
    calls allows (each span is a call at least), or when the coarser plan could need more than
    ``budget`` requests in all (--max-requests) should its check fail; as few calls as Cloud Eye's
    limits allow, or, while they fit in the wave, as many as keep each answer near CES_QUICK_DATAPOINTS."""
    if not series:
        return []
    spans = ces_spans(query, now)
    hours = spread_calls([(CES_HOURLY, query.period.start_ms, query.period.end_ms)], [], series, wave)
    if all(rollup == CES_HOURLY for rollup, _, _ in spans):
        return hours
    coarse = spread_calls(spans, checked_periods(spans), series, wave)
    if budget is not None and len(coarse) + coarse_fallback(spans, series) > budget:
        return hours
    return min([coarse, hours], key=lambda calls: (len(calls) > wave, len(calls) if len(calls) > wave else 0))


def spread_calls(spans: Sequence[Span], checks: Sequence[Span], series: int, wave: int) -> list[CesCall]:
    total = sum((hi - lo) // rollup.ms for rollup, lo, hi in [*spans, *checks]) * series
    datapoints = min(CES_MAX_DATAPOINTS, max(CES_QUICK_DATAPOINTS, ceil_div(total, max(1, wave))))
    while True:
        calls = ces_split(spans, series, datapoints) + ces_split(checks, series, datapoints, checks=True)
        if len(calls) <= wave or datapoints >= CES_MAX_DATAPOINTS:
            return calls
        datapoints = min(CES_MAX_DATAPOINTS, datapoints + ceil_div(datapoints, 4))


def ces_wave(concurrency: int, max_requests: int, statistics: int) -> int:
    """How many data calls go out at once: the connections that open while IAM answers, beside the
    reconciliation's ``statistics`` windows and the names call's (each early connection takes one of
    the ``concurrency`` workers; a call past them waits 2 round trips for a connection of its own)."""
    return max(1, min(concurrency - 1, max_requests) - statistics)


def cloud_eye_calls_expected(query: Query, now: datetime, wave: int) -> int:
    """The Cloud Eye calls to open connections for while IAM answers, before ListMetrics tells how
    many series there are: its calls (one a metric) and the data calls of CES_EXPECTED_SERIES. A
    guess: each data call past it opens its connection after ListMetrics (2 round trips more); each
    short of it is a handshake that carries no request."""
    return len(CES_METRIC_NAMES) + len(ces_calls(query, now, CES_EXPECTED_SERIES, wave))


def ces_windows(query: Query, series: Sequence[Series], calls: Sequence[CesCall], sums: BucketSums) -> list[Window]:
    """The BatchListMetricData calls (ces_calls) that cover every series over the (whole-hour)
    period, read into ``sums``, and the hours that check each coarser rollup's newest period."""
    sums.checked.update((call.end - call.start, call.start) for call in calls if call.checks)
    return [ces_window(query, call.rollup, call.start, call.end, series[call.first:call.first + call.count],
                       f"series {call.first + 1}-{call.first + call.count} of {len(series)}"
                       + (f", checking the {CES_ROLLUP_NAMES[call.end - call.start]} sums" if call.checks else ""),
                       sums.check_call() if call.checks else sums.call()) for call in calls]


CES_ROLLUP_NAMES = {rollup.ms: rollup.name for rollup in CES_ROLLUPS}


def ces_window(query: Query, rollup: Rollup, lo: int, hi: int, batch: Sequence[Series], which: str,
               call: CallKind) -> Window:
    body = {"metrics": [{"namespace": CES_NAMESPACE, "metric_name": name,
                         "dimensions": [{"name": n, "value": v} for n, v in dims]} for name, dims in batch],
            "from": lo, "to": hi, "period": str(rollup.seconds), "filter": "sum"}
    start, end = (format_instant(from_epoch_ms(ms, query.zone)) for ms in (lo, hi))
    return Window(Period(from_epoch_ms(lo, timezone.utc), from_epoch_ms(hi, timezone.utc)), body,
                  f"{start} ~ {end} ({rollup.name} sums, {which})", call=call)


def hours_again(period: CloudEyePeriod, series: Sequence[Series]) -> list[Window]:
    """The spans of a period's rejected rollups, read again as hourly sums of every series."""
    rejected = period.sums.rejected_rollups()
    spans = joined(sorted({(CES_HOURLY, w.body["from"], w.body["to"]) for w in period.windows
                           if int(w.body["period"]) * 1000 in rejected}))
    return [ces_window(period.query, CES_HOURLY, call.start, call.end, series[call.first:call.first + call.count],
                       f"series {call.first + 1}-{call.first + call.count} of {len(series)}, again",
                       period.sums.call()) for call in ces_split(spans, len(series), CES_MAX_DATAPOINTS)]


def row_key(query: Query, dims: tuple[tuple[str, str], ...]) -> tuple[str | None, str | None]:
    """(model id, key id) of the row a series adds to: None where rows are not split that way."""
    found = dict(dims)
    return (found.get(CES_MODEL_DIMENSION) if query.by_model else None,
            found.get(CES_KEY_DIMENSION) if query.by_key else None)


def ces_usage(sums: Mapping[str, Decimal], missing: frozenset[str], what: str) -> Usage:
    """A Usage from Cloud Eye's metric sums: tokens into thousands, exactly; counts whole."""
    values: dict[str, Any] = {}
    with localcontext() as context:
        context.prec = 60
        for metric in SUMS:
            names = CES_SUMS.get(metric.field or "", ())
            if not names:
                continue
            total = sum((sums.get(name, ZERO) for name in names), ZERO)
            if metric.api_unit != 1:
                values[metric.field] = total / metric.api_unit
            elif total != total.to_integral_value():
                raise MalformedResponse(f"malformed response from {what}: {' + '.join(names)} is not a whole number")
            else:
                values[metric.field] = int(total)
    return Usage(missing, **values)


def missing_metrics(series: Sequence[Series]) -> frozenset[str]:
    """The report's metrics whose Cloud Eye metrics ListMetrics does not list."""
    listed = {name for name, _ in series}
    return frozenset(metric.name for metric in SUMS
                     if any(name not in listed for name in CES_SUMS.get(metric.field or "", ())))


def cloud_eye_plan(settings: Settings, project_id: str | None, console: Console, now: datetime) -> list[dict[str, Any]]:
    """A dry run's Cloud Eye calls: the first page of ListMetrics for each metric and of the names
    (one for both periods of --compare), then each period's reconciliation windows; the data calls
    depend on ListMetrics' answers."""
    console.note("the Cloud Eye data calls (BatchListMetricData) depend on ListMetrics' answers: they are not planned")
    planned = [LIST_METRICS.planned(settings.ces, project_id, None, list_params(metric)) for metric in CES_METRIC_NAMES]
    if settings.monitor is not None:
        planned.append(MONITOR_INSTANCES.planned(settings.monitor, project_id, names_body(0)))
    for query in (settings.query, settings.query.previous_query()):
        if query is not None:
            planned += [window.call.planned(settings.endpoints[window.call.endpoint], project_id, window.body)
                        for _, window in windows_of(statistics_rows(query, now))]
    return planned


@dataclass(frozen=True)
class Reconciliation:
    """ShowStatistics (service types 1 and 2) over a Cloud Eye run's period, beside Cloud Eye's rows."""

    statistics: Usage
    cloud_eye: Usage

    @property
    def tokens_ratio(self) -> Decimal | None:
        """Cloud Eye's share of ShowStatistics' tokens; None when either has none to compare."""
        if not self.statistics.tokens_k or "total_tokens" in self.cloud_eye.missing:
            return None
        with localcontext() as context:
            context.prec = 60
            ratio = self.cloud_eye.tokens_k / self.statistics.tokens_k
            if ratio.adjusted() > 6:  # a billion % or more: ShowStatistics counts next to nothing
                return None
            return ratio.quantize(Decimal("0.0001"), ROUND_HALF_UP)

    def _compared(self) -> list[tuple[str, Decimal, Decimal]]:
        """(what, ShowStatistics', Cloud Eye's) for tokens and requests, of those Cloud Eye lists (a
        metric it lacks is unknown: neither short nor over)."""
        return [(word, theirs, ours) for word, metric, theirs, ours in (
            ("tokens", "total_tokens", self.statistics.tokens_k, self.cloud_eye.tokens_k),
            ("requests", "total_requests", Decimal(self.statistics.requests), Decimal(self.cloud_eye.requests)))
            if metric not in self.cloud_eye.missing]

    def short(self) -> bool:
        """Whether Cloud Eye's rows fall short by more than 1 % of tokens or of requests."""
        return any(theirs - ours > theirs / 100 for _, theirs, ours in self._compared())

    def exceeds(self) -> list[str]:
        """What (tokens, requests) Cloud Eye's rows exceed ShowStatistics' by more than 1 %: the same
        calls cannot be more in one than in the other, so one of them counts something twice."""
        return [word for word, theirs, ours in self._compared() if ours - theirs > theirs / 100]

    def line(self) -> str:
        statistics, cloud_eye = self.statistics.metrics(), self.cloud_eye.metrics()
        ratio = self.tokens_ratio
        tokens = "-" if cloud_eye["total_tokens"] is None else format_tokens(cloud_eye["total_tokens"])
        return (f"ShowStatistics, same period, preset + my services: {format_tokens(statistics['total_tokens'])}, "
                f"{statistics['total_requests']:,} requests; Cloud Eye rows: {tokens}"
                + (f" ({ratio * 100:.2f} %)" if ratio is not None else ""))

    def json(self) -> dict[str, Any]:
        ratio = self.tokens_ratio
        return {"statistics": _json_metrics(self.statistics), "cloud_eye": _json_metrics(self.cloud_eye),
                "tokens_ratio": None if ratio is None else float(ratio)}


NOT_LISTED = "(not listed by Cloud Eye)"


def statistics_rows(query: Query, now: datetime) -> list[Row]:
    """ShowStatistics rows for what Cloud Eye covers (types 1 and 2, real time) over the same period,
    when it lies inside MaaS's 30 days; else none. A period that whole hours widened past them by less
    than an hour (``--last 30d``) is still compared: ShowStatistics may count less of that hour, never
    more, so it can only lift Cloud Eye's share, which the line then says."""
    if query.period.start <= now - RETENTION - timedelta(milliseconds=CES_HOURLY.ms):
        return []
    return plan_rows(dataclasses.replace(query, by_model=False, by_key=False, bucket=None, service_types=(1, 2),
                                         infer_type="real_time"), now)


def not_listed_row(query: Query, reconciliation: Reconciliation) -> Row:
    """What ShowStatistics counts beyond Cloud Eye's rows, so that the totals are never less."""
    # Per metric: where Cloud Eye counts more (requests short, tokens over, say), nothing is left to carry
    difference = Usage(reconciliation.cloud_eye.missing, **{
        name: max(value - reconciliation.cloud_eye.sums[name], 0 * value)
        for name, value in reconciliation.statistics.sums.items()})
    row = Row(query.period, None, NOT_LISTED if not query.by_model else None, None,
              model=NOT_LISTED if query.by_model else None)
    row.cloud_eye = difference
    return row


def check_cloud_eye_calls(count: int, limit: int, console: Console) -> None:
    """--max-requests and the long-run note for the calls ListMetrics' answer makes necessary."""
    if count > limit:
        seconds = pacing_seconds(count)
        raise UsageError(f"Cloud Eye lists series that need {count:,} requests, more than --max-requests {limit}"
                         + (f": at {RATE_LIMIT} per minute that takes about {format_duration(seconds)}"
                            if seconds >= 1 else "") + " (what was sent so far only listed them)",
                         hint=CES_NARROW_HINT)
    note = long_run_note(count)
    if note:
        console.note(note)


@dataclass
class CloudEyePeriod:
    """A period a Cloud Eye run reads (--compare: two, one ListMetrics and names for both): its
    query, its reconciliation's ShowStatistics rows, its sums and its data windows."""

    query: Query
    statistics: list[Row]
    sums: BucketSums
    windows: list[Window] = field(default_factory=list)


def cloud_eye_answers(client: Client, endpoints: Mapping[str, Endpoint], project_id: str,
                      periods: Sequence[CloudEyePeriod], console: Console, max_requests: int,
                      now: datetime) -> tuple[list[Series], dict[str, str], dict[str, str]]:
    """ListMetrics, the names' first page and the reconciliation's ShowStatistics windows in parallel
    (once a signed request has passed), then every period's data calls together through ``fetch``
    (each answer added into its sums), then hourly calls again for a coarser rollup whose sums did
    not stand for their hours, then the names' other pages together: the series, the model and key
    names; the periods' windows filled."""
    try:
        found: dict[int, Any] = {}
        reconciled = [window for period in periods for _, window in windows_of(period.statistics)]
        check_cloud_eye_calls(len(reconciled), max_requests, console)
        listing = Listing(max_requests, len(reconciled))
        client.fan_out([*(functools.partial(listed_series, client, endpoints["ces"], project_id, periods[0].query,
                                            metric, listing) for metric in CES_METRIC_NAMES),
                        lambda: names_page(client, endpoints.get("monitor"), project_id, 0),
                        *(window_task(client, endpoints, project_id, window) for window in reconciled)],
                       found.__setitem__)
        series = sorted({s for index in range(len(CES_METRIC_NAMES)) for s in found[index]})
        first_names = found[len(CES_METRIC_NAMES)]
        for index, window in enumerate(reconciled, start=len(CES_METRIC_NAMES) + 1):
            window.response, window.usage = found[index]
        wave = ces_wave(client.options.concurrency, max_requests, len(reconciled))
        # the wave and --max-requests shared between the periods; the calls counted before any is built
        plans = [ces_calls(period.query, now, len(series), max(1, wave // len(periods)),
                           (max_requests - listing.requests) // len(periods)) for period in periods]
        # with the reconciliation's windows and the listing's pages after each metric's first
        check_cloud_eye_calls(sum(map(len, plans)) + listing.requests, max_requests, console)
        for period, calls in zip(periods, plans):
            period.windows = ces_windows(period.query, series, calls, period.sums)
        fetch_each(client, endpoints, project_id, [window for period in periods for window in period.windows], console)
        # a round trip more, only when a newest period had no calls to compare
        read_more(client, endpoints, project_id, periods, second_checks, console)
        rejected = {CES_ROLLUP_NAMES[ms] for period in periods for ms in period.sums.rejected_rollups()}
        if rejected:
            console.note(f"Cloud Eye's {in_words(sorted(rejected))} sums could not stand for their hours here "
                         "(stamped off their UTC start, not the sum of the hours checked beside them, or no calls to "
                         "check them by): those periods are read again as hourly sums")
        read_more(client, endpoints, project_id, periods, lambda period: hours_again(period, series), console)
        # names past the first page: only now, from this thread (a task's own fan-out could wait for ever)
        models, key_names = model_and_key_names(client, endpoints.get("monitor"), project_id, first_names, console)
    except AuthRejected as exc:
        if not str(exc).startswith("Cloud Eye"):  # ShowStatistics' own refusal keeps its hint
            raise
        raise AuthRejected(str(exc), hint=CES_PERMISSION_HINT) from None
    return series, models, key_names


def fetch_each(client: Client, endpoints: Mapping[str, Endpoint], project_id: str, windows: Sequence[Window],
               console: Console) -> None:
    """Cloud Eye's windows (no row of their own) through ``fetch``; none is nothing sent."""
    if windows:
        fetch(client, endpoints, project_id, [(None, window) for window in windows], console, save=None)


def read_more(client: Client, endpoints: Mapping[str, Endpoint], project_id: str, periods: Sequence[CloudEyePeriod],
              more: Callable[[CloudEyePeriod], list[Window]], console: Console) -> None:
    """The windows ``more`` adds to each period, fetched together and kept with their period."""
    added = [more(period) for period in periods]
    fetch_each(client, endpoints, project_id, [window for windows in added for window in windows], console)
    for period, windows in zip(periods, added):
        period.windows += windows


def second_checks(period: CloudEyePeriod) -> list[Window]:
    """The hours of each unproven rollup's largest sum (BucketSums.unproven): one series, one period."""
    return [ces_window(period.query, CES_HOURLY, at, at + period_ms, [largest],
                       f"checking the {CES_ROLLUP_NAMES[period_ms]} sums by their largest", period.sums.second_call())
            for period_ms, (at, largest) in period.sums.unproven().items()]


def noted_missing(series: Sequence[Series], query: Query, console: Console) -> frozenset[str]:
    """The metrics Cloud Eye does not list (none when it lists no series at all), each named in a note."""
    if not series:
        console.note(f"Cloud Eye lists no {CES_NAMESPACE} series with the dimensions {', '.join(ces_dimensions(query))}"
                     ": no model service had calls it keeps")
        return frozenset()
    missing = missing_metrics(series)
    if missing:
        listed = {name for name, _ in series}
        console.note("Cloud Eye lists no " + in_words(sorted(
            name for metric in SUMS if metric.name in missing for name in CES_SUMS[metric.field or ""]
            if name not in listed)) + f": {in_words(sorted(missing))} show as -")
    return missing


RowKey = tuple[Optional[str], Optional[str]]  # (model id, key id) of a Cloud Eye row


class BucketSums:
    """Cloud Eye's sums added up exactly per (bucket index, row key) as each data call answers (a
    period counts in the bucket its start lies in), apart per rollup until its check has passed: a
    run holds its sums, never every datapoint, so 150 days of a thousand series take the memory of
    their rows.

    The check of a coarser rollup: its sums carry stamps at multiples of its period, and its newest
    period (``checked``) holds, for every series, what the hours of that period add up to. When
    no series had calls then, its largest sum is checked against its hours instead (``second``); a
    rollup with no calls at all cannot be checked, and is read as hours."""

    def __init__(self, query: Query, buckets: Sequence[Period]) -> None:
        self.query, self.buckets = query, buckets
        self.starts = [bucket.start_ms for bucket in buckets]
        self.partial: dict[int, dict[tuple[int, RowKey], dict[str, Decimal]]] = {}  # per rollup (ms)
        self.checked: dict[int, int] = {}  # coarser rollup (ms) -> the start of its checked period
        self.coarse: dict[tuple[int, Series], Decimal] = {}  # (rollup, series) -> its checked period's sum
        self.hours: dict[tuple[int, Series], tuple[Decimal, int]] = {}  # -> that period's hours: sum, count
        self.largest: dict[int, tuple[Decimal, int, Series]] = {}  # rollup -> its largest sum: value, start, series
        self.second: dict[int, tuple[Decimal, int]] = {}  # rollup -> hours of its largest sum's period: sum, count
        self.misstamped: set[int] = set()  # rollups with a sum stamped off a multiple of their period
        self._lock = threading.Lock()  # answers arrive in the workers' threads

    def call(self) -> CallKind:
        """BatchListMetricData whose reader adds each answer in: its windows' usage is the count of
        periods added."""
        return dataclasses.replace(BATCH_METRIC_DATA, read=lambda data, what, body: self.add(
            datapoints_of(data, what, body), int(body["period"]) * 1000))

    def check_call(self) -> CallKind:
        """BatchListMetricData for the hours of a checked period: kept beside the rollup's sum."""
        return dataclasses.replace(BATCH_METRIC_DATA, read=lambda data, what, body: self.add_check(
            datapoints_of(data, what, body), body["to"] - body["from"]))

    def second_call(self) -> CallKind:
        """BatchListMetricData for the hours of a rollup's largest sum (its second check)."""
        return dataclasses.replace(BATCH_METRIC_DATA, read=lambda data, what, body: self.add_second(
            datapoints_of(data, what, body), body["to"] - body["from"]))

    def add(self, answer: Sequence[tuple[Series, list[tuple[int, Decimal]]]], period_ms: int = CES_HOURLY.ms) -> int:
        added = 0
        checked = self.checked.get(period_ms)
        with self._lock, localcontext() as context:
            context.prec = 60
            if period_ms != CES_HOURLY.ms and any(at % period_ms for _, points in answer for at, _ in points):
                self.misstamped.add(period_ms)
                return added
            sums = self.partial.setdefault(period_ms, {})
            for (name, dims), points in answer:
                for at, value in points:
                    if checked is not None:
                        if at == checked:
                            self.coarse[(period_ms, (name, dims))] = value
                        if value > self.largest.get(period_ms, (ZERO,))[0]:
                            self.largest[period_ms] = (value, at, (name, dims))
                    index = bisect.bisect_right(self.starts, at) - 1
                    if 0 <= index and at < self.buckets[index].end_ms:
                        found = sums.setdefault((index, row_key(self.query, dims)), {})
                        found[name] = found.get(name, ZERO) + value
                        added += 1
        return added

    def add_check(self, answer: Sequence[tuple[Series, list[tuple[int, Decimal]]]], period_ms: int) -> int:
        with self._lock, localcontext() as context:
            context.prec = 60
            for series, points in answer:
                self.hours[(period_ms, series)] = (sum((value for _, value in points), ZERO), len(points))
        return 0

    def add_second(self, answer: Sequence[tuple[Series, list[tuple[int, Decimal]]]], period_ms: int) -> int:
        with self._lock, localcontext() as context:
            context.prec = 60
            points = [value for _, found in answer for _, value in found]
            self.second[period_ms] = (sum(points, ZERO), len(points))
        return 0

    @staticmethod
    def _differ(coarse: Decimal, hours: Decimal, count: int) -> bool:
        """More apart than Cloud Eye's rounding allows: it cuts each sum after 2 decimals, so sums of
        whole numbers must match exactly."""
        return abs(coarse - hours) > Decimal("0.01") * (count + 1)

    def unproven(self) -> dict[int, tuple[int, Series]]:
        """The coarser rollups whose checked period had no calls, though other periods did: the start
        and series of their largest sum, to check against its hours."""
        return {period_ms: (at, series) for period_ms, (_, at, series) in self.largest.items()
                if period_ms not in self.misstamped and self._vacuous(period_ms)}

    def _vacuous(self, period_ms: int) -> bool:
        return not any(value for (ms, _), value in self.coarse.items() if ms == period_ms) \
            and not any(hours for (ms, _), (hours, _) in self.hours.items() if ms == period_ms)

    def rejected_rollups(self) -> set[int]:
        """The coarser rollups whose sums do not stand for their hours: stamped off their period, a
        checked period's sum unlike its hours', a largest sum unlike its hours' (the second check),
        or no calls at all to check them by."""
        rejected = set(self.misstamped)
        for (period_ms, series), (hours, count) in self.hours.items():
            if self._differ(self.coarse.get((period_ms, series), ZERO), hours, count):
                rejected.add(period_ms)
        for period_ms in self.checked:
            if period_ms in rejected or not self._vacuous(period_ms):
                continue
            if period_ms not in self.largest or period_ms not in self.second \
                    or self._differ(self.largest[period_ms][0], *self.second[period_ms]):
                rejected.add(period_ms)
        return rejected

    def sums(self) -> dict[tuple[int, RowKey], dict[str, Decimal]]:
        """The sums of every rollup that passed its check (hours always do)."""
        rejected, total = self.rejected_rollups(), {}
        with localcontext() as context:
            context.prec = 60
            for period_ms, sums in self.partial.items():
                if period_ms in rejected:
                    continue
                for key, values in sums.items():
                    found = total.setdefault(key, {})
                    for name, value in values.items():
                        found[name] = found.get(name, ZERO) + value
        return total


def cloud_eye_rows(client: Client, endpoints: Mapping[str, Endpoint], project_id: str, queries: Sequence[Query],
                   console: Console, now: datetime, max_requests: int = MAX_REQUESTS
                   ) -> list[tuple[list[Row], Reconciliation | None, list[Window]]]:
    """For each query (--compare: the period and the one before), one row per bucket and listed
    model/key, summed from Cloud Eye's sums; with the reconciliation (and the row of what Cloud Eye
    did not list) when the period lies inside MaaS's 30 days, and every window answered (for --raw)."""
    periods = [CloudEyePeriod(query, statistics_rows(query, now),
                              BucketSums(query, split_buckets(query.period, query.bucket, query.zone)))
               for query in queries]
    series, models, key_names = cloud_eye_answers(client, endpoints, project_id, periods, console, max_requests, now)
    missing = noted_missing(series, queries[0], console)
    return [period_rows(period, series, models, key_names, missing, console, now) for period in periods]


def period_rows(period: CloudEyePeriod, series: Sequence[Series], models: Mapping[str, str],
                key_names: Mapping[str, str], missing: frozenset[str], console: Console,
                now: datetime) -> tuple[list[Row], Reconciliation | None, list[Window]]:
    query, statistics, totals = period.query, period.statistics, period.sums.sums()
    keys = sorted({row_key(query, dims) for _, dims in series},
                  key=lambda k: (models.get(k[0] or "", k[0] or ""), key_names.get(k[1] or "", k[1] or "")))
    rows = []
    for index, bucket in enumerate(period.sums.buckets):
        whole = calendar_bucket(bucket.start, query.bucket, query.zone) if query.bucket else None
        for model_id, key_id in keys:
            row = Row(bucket, None, key_names.get(key_id) if key_id else None, whole, model_id=model_id,
                      model=models.get(model_id) if model_id else None, api_key_id=key_id)
            row.cloud_eye = ces_usage(totals.get((index, (model_id, key_id)), {}), missing, BATCH_METRIC_DATA.name)
            rows.append(row)
    answers = [*period.windows, *(window for _, window in windows_of(statistics))]
    if not statistics:
        return rows, None, answers
    reconciliation = Reconciliation(total_of(row.total for row in statistics), total_of(row.total for row in rows))
    if query.period.start < now - RETENTION:
        console.note(f"the period's first hour, {format_instant(query.period.start.astimezone(query.zone))}, begins "
                     "before MaaS's 30 days: ShowStatistics may count less of it than Cloud Eye does")
    if reconciliation.short():
        console.note(f"Cloud Eye's rows fall short of ShowStatistics by more than 1 % for "
                     f"{format_instant(query.period.start.astimezone(query.zone))} ~ "
                     f"{format_instant(query.period.end.astimezone(query.zone))}: the row {NOT_LISTED} "
                     "carries the difference (a model or key idle for hours drops out of Cloud Eye's lists)")
        rows.append(not_listed_row(query, reconciliation))
    over = reconciliation.exceeds()
    if over and query.period.start >= now - RETENTION:  # else the note above says why ShowStatistics has less
        console.note(f"Cloud Eye's rows exceed ShowStatistics by more than 1 % of {in_words(over)} for "
                     f"{format_instant(query.period.start.astimezone(query.zone))} ~ "
                     f"{format_instant(query.period.end.astimezone(query.zone))}: the same calls cannot be more in "
                     "one than the other, so one of them counts some twice; the rows are Cloud Eye's as it answered")
    return rows, reconciliation, answers


# ----------------------------------------------------------------------------------------------
# History store: final daily totals in SQLite, for ranges past the 30-day retention
# ----------------------------------------------------------------------------------------------

STORE_APPLICATION_ID = 0x4D414153  # "MAAS" in PRAGMA application_id marks our files
STORE_SCHEMA_VERSION = 1
STORE_BUSY_TIMEOUT = 15.0  # seconds a run waits for another run's write lock
STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS days (
    region TEXT NOT NULL,
    project_id TEXT NOT NULL,
    infer_type TEXT NOT NULL,
    service_type INTEGER NOT NULL,
    api_keys TEXT NOT NULL,          -- JSON: the row's key, or the sorted key filter, or null
    ips TEXT NOT NULL,               -- JSON: the sorted --ips filter, or null
    timezone TEXT NOT NULL,
    day TEXT NOT NULL,               -- local date, YYYY-MM-DD
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    total_requests INTEGER NOT NULL,
    total_errors INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL,   -- actual tokens (the API's thousands x 1000), exact
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    total_completion_tasks INTEGER NOT NULL,
    total_infer_count INTEGER NOT NULL,
    fetched_at TEXT NOT NULL,        -- UTC, ISO 8601
    PRIMARY KEY (region, project_id, infer_type, service_type, api_keys, ips, timezone, day)
) WITHOUT ROWID
"""


class StoreRefused(UsageError):
    """The store path is not a usable store file: exit 2, nothing touched, nothing sent."""


class StoreError(ToolError):
    """The store could not be written."""

    exit_code = EXIT_API


class StoreDamaged(ToolError):
    """A stored row that cannot be right: the run fails (a plain query too), as for a malformed answer."""

    exit_code = EXIT_API


def _make_private_dirs(folder: str) -> None:
    """Create missing folders with mode 0700 (os.makedirs gives the mode to the last one only)."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for messages: "a directory", "a device" …"""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a device")


def check_store_path(path: str) -> bool:
    """Whether the store exists; anything but a regular file (or nothing) is refused unopened:
    a symlink could create or touch a file elsewhere, and a FIFO or device would block."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreError(f"cannot read the store {path}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return True
    raise StoreRefused(f"the store {path} is {file_kind(mode)}, not a regular file; give the path of the file itself")


def writable(path: str) -> bool:
    """Whether a store file and its folder (for ``-wal``/``-shm``) can be written."""
    return os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)


def while_locked(db: Any, clock: Clock, seconds: float, action: Callable[[], Any]) -> Any:
    """``action()`` on ``db``, tried again while another run holds the lock, ``seconds`` at most on
    the run's clock; a failed try is rolled back. The connections' own busy timeout is 0: SQLite
    would wait for the lock in C, off the run's clock."""
    import sqlite3

    deadline = clock.monotonic() + seconds
    while True:
        try:
            return action()
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.OperationalError) or "locked" not in str(exc) \
                    or clock.monotonic() >= deadline:
                raise
        clock.sleep(POLL_INTERVAL)


class Store:
    """An SQLite file of final daily totals; one transaction per saved day."""

    def __init__(self, path: str, connection: Any, clock: Clock, lock_timeout: float) -> None:
        self.path = path
        self._db = connection
        self._clock, self._lock_timeout = clock, lock_timeout
        self.days_read = 0
        self.days_saved = 0
        self.days_unstorable = 0
        self.write_failure: str | None = None

    @classmethod
    def open(cls, path: str, lock_timeout: float, clock: Clock, read_only: bool = False) -> Store | None:
        """Open or create a store; refuse anything that is not one, without touching it.

        ``read_only`` (for --dry-run) creates nothing: a missing store is None. ``lock_timeout`` bounds
        the wait for another run's lock, on ``clock``.
        """
        import sqlite3  # imported here: only runs with a store pay for it

        exists = check_store_path(path)
        if read_only or (exists and not writable(path)):
            if not exists:
                return None
            return cls(path, cls._open_read_only(path, clock, lock_timeout), clock, lock_timeout)
        if not exists:
            try:
                _make_private_dirs(os.path.dirname(os.path.abspath(path)))
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass  # another run created it a moment ago
            except OSError as exc:
                raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None
        try:
            db = sqlite3.connect(path, timeout=0, isolation_level=None)  # busy: see while_locked
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        try:
            cls._check(db, path, clock, lock_timeout)
        except BaseException:
            db.close()
            raise
        return cls(path, db, clock, lock_timeout)

    @classmethod
    def _open_read_only(cls, path: str, clock: Clock, lock_timeout: float) -> Any:
        """A read-only connection that never writes ``-wal``/``-shm``: where SQLite cannot create
        them (a read-only file system), the file is read as immutable (nobody can write it there)."""
        import sqlite3

        failure: Exception | None = None
        for options in ("mode=ro", "mode=ro&immutable=1"):
            db = None
            try:
                # A path's bytes as given (os.fsencode): a name that is not UTF-8 is still a name.
                db = sqlite3.connect(f"file:{quote(os.fsencode(os.path.abspath(path)))}?{options}", uri=True,
                                     timeout=0, isolation_level=None)
                cls._check(db, path, clock, lock_timeout, create=False)
                return db
            except StoreError as exc:
                failure = exc
            except sqlite3.Error as exc:
                failure = exc
            if db is not None:
                db.close()
        raise StoreError(f"cannot read the store {path}: {failure}")

    @staticmethod
    def _check(db: Any, path: str, clock: Clock, lock_timeout: float, create: bool = True) -> None:
        import sqlite3

        try:
            # One statement, one snapshot: another run may be creating this store right now.
            app_id, version, tables = while_locked(db, clock, lock_timeout, lambda: db.execute(
                "SELECT (SELECT application_id FROM pragma_application_id()),"
                " (SELECT user_version FROM pragma_user_version()), (SELECT count(*) FROM sqlite_master)").fetchone())
        except sqlite3.OperationalError as exc:  # locked past the timeout, unreadable: not the file's fault
            raise StoreError(f"cannot read the store {path}: {exc}") from None
        except sqlite3.DatabaseError:
            raise StoreRefused(f"the store {path} is not an SQLite file; choose another path") from None
        if app_id == 0 and version == 0 and tables == 0:
            if create:
                Store._create(db, path, clock, lock_timeout)
        elif app_id != STORE_APPLICATION_ID:
            raise StoreRefused(f"the store {path} is another program's SQLite database; choose another path")
        elif version > STORE_SCHEMA_VERSION:
            raise StoreRefused(f"the store {path} was written by a newer version of this script "
                               f"(schema {version}); upgrade the script")
        elif version < 1:
            raise StoreRefused(f"the store {path} is incomplete (schema version {version})")

    @staticmethod
    def _create(db: Any, path: str, clock: Clock, lock_timeout: float) -> None:
        """Create the schema (once, whichever run is first) and switch to WAL.

        Two runs may find the same new file empty: the schema is re-checked under the write lock,
        and the "locked" answers while the other run initialises are retried.
        """
        import sqlite3

        def initialise() -> None:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                db.execute(STORE_SCHEMA)
                db.execute(f"PRAGMA application_id={STORE_APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
            db.execute("COMMIT")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a nightly writer

        try:
            while_locked(db, clock, lock_timeout, initialise)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot initialise the store {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _key(query: Query, project_id: str, row: Row) -> tuple:
        keys = ([row.api_key] if row.api_key is not None
                else sorted(query.api_keys) if query.api_keys is not None else None)
        ips = sorted(query.ips) if query.ips is not None else None
        return (query.region, project_id, query.infer_type, row.service_type, json.dumps(keys),
                json.dumps(ips), query.zone_name)

    def lookup(self, query: Query, project_id: str, row: Row,
               days: Sequence[tuple[date, Period]]) -> dict[date, Usage]:
        """The stored days among ``days`` whose bounds still match today's zone rules."""
        import sqlite3

        if not days:
            return {}
        wanted = {day.isoformat(): (day, period) for day, period in days}
        try:
            rows = while_locked(self._db, self._clock, self._lock_timeout, lambda: self._db.execute(
            f"SELECT day, start_ms, end_ms, {', '.join(m.name for m in SUMS)} FROM days WHERE region=?"
            " AND project_id=? AND infer_type=? AND service_type=? AND api_keys=? AND ips=? AND timezone=?"
            " AND day BETWEEN ? AND ?",
            (*self._key(query, project_id, row), days[0][0].isoformat(), days[-1][0].isoformat())).fetchall())
        except sqlite3.Error as exc:  # a damaged page or a lock held past the timeout
            raise StoreError(f"cannot read the store {self.path}: {exc}") from None
        found = {}
        for day, start_ms, end_ms, *sums in rows:
            if day not in wanted:
                continue
            usage = self._checked(day, start_ms, end_ms, sums)
            # Bounds that no longer match the day's: the zone's rules changed since, so the day is fetched again.
            if (start_ms, end_ms) == (wanted[day][1].start_ms, wanted[day][1].end_ms):
                found[wanted[day][0]] = usage
        self.days_read += len(found)
        return found

    def _checked(self, day: str, start_ms: Any, end_ms: Any, sums: Sequence[Any]) -> Usage:
        """A stored day's usage, validated like an answer (its key is the one it was looked up by):
        whole sums from 0 to the answers' bound, a start before the end. SQLite keeps any value in any
        column, so a damaged or hand-edited file may hold text, fractions or negative numbers."""
        def damaged(what: str) -> StoreDamaged:
            return StoreDamaged(f"the store {self.path} holds a damaged row for {day}: {what}",
                                hint="delete that row (or the store) and record the day again while MaaS still "
                                     "keeps it (30 days), or restore the store from a backup")

        if type(start_ms) is not int or type(end_ms) is not int or not start_ms < end_ms:
            raise damaged(f"its start ({printable(repr(start_ms), 40)}) is not a time before its end "
                          f"({printable(repr(end_ms), 40)})")
        for metric, value in zip(SUMS, sums):
            most = _PLAUSIBLE_MAX * metric.api_unit
            if type(value) is not int or not 0 <= value <= most:
                raise damaged(f"{metric.name} is {printable(repr(value), 40)}, not a whole number from 0 to {most}")
        return Usage.from_units(dict(zip((m.name for m in SUMS), sums)))

    def days_in_other_zones(self, query: Query, project_id: str, rows: Sequence[Row]) -> set[tuple]:
        """The day rows (zone, service type, keys, date) of ``rows``' keys on the query's local dates
        that the store holds under other time zones only: days are kept per zone, so these are
        fetched live. Best effort: a store that cannot be read here answers none."""
        import sqlite3

        first = query.period.start.astimezone(query.zone).date().isoformat()
        last = (query.period.end - timedelta(milliseconds=1)).astimezone(query.zone).date().isoformat()
        found: set[tuple] = set()
        for key in {self._key(query, project_id, row)[:-1] for row in rows}:  # the key without the zone
            try:
                held = while_locked(self._db, self._clock, self._lock_timeout, lambda: self._db.execute(
                    "SELECT timezone, day FROM days WHERE region=? AND project_id=? AND infer_type=?"
                    " AND service_type=? AND api_keys=? AND ips=? AND day BETWEEN ? AND ?",
                    (*key, first, last)).fetchall())
            except sqlite3.Error:
                return set()
            here = {day for zone, day in held if zone == query.zone_name}
            found.update((zone, *key[3:6], day) for zone, day in held if day not in here)
        return found

    def save(self, query: Query, project_id: str, row: Row, day: date, period: Period,
             usage: Usage, fetched_at: datetime) -> None:
        """Save one final day in its own transaction; a failure is kept in ``write_failure``."""
        import sqlite3

        if self.write_failure:  # one failure is enough: do not wait out the lock again for every day
            return
        values = usage.units()  # the store keeps whole tokens only
        if values is None:
            self.days_unstorable += 1
            return

        def insert() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                columns = ["region", "project_id", "infer_type", "service_type", "api_keys", "ips", "timezone",
                           "day", "start_ms", "end_ms", *values, "fetched_at"]
                self._db.execute(f"INSERT OR REPLACE INTO days ({', '.join(columns)}) "
                                 f"VALUES ({', '.join('?' * len(columns))})",
                                 (*self._key(query, project_id, row), day.isoformat(), period.start_ms,
                                  period.end_ms, *values.values(), fetched_at.isoformat(timespec="seconds")))

        try:
            while_locked(self._db, self._clock, self._lock_timeout, insert)
        except sqlite3.Error as exc:
            self.write_failure = f"cannot write to the store {self.path}: {exc}"
            return
        self.days_saved += 1


# ----------------------------------------------------------------------------------------------
# Budgets and estimated cost: the totals against a token budget and a price list
# ----------------------------------------------------------------------------------------------

# --budget 130M: the table's K and M, and B for a billion.
BUDGET_SCALES = {"": 1, "K": 10 ** 3, "M": 10 ** 6, "B": 10 ** 9}
_BUDGET_RE = re.compile(r"^(\d{1,15}(?:\.\d{1,9})?)([KMB]?)$", re.ASCII | re.IGNORECASE)
MAX_BUDGET = 10 ** 15  # tokens: as _PLAUSIBLE_MAX, far above any account
_PERCENT_RE = re.compile(r"^(\d{1,6}(?:\.\d{1,4})?)%?$", re.ASCII)
MAX_FAIL_OVER = 10000  # percent: a projection may run far past 100 %, not 100 times past it
SHARE_PLACES = 1  # the table's shares: 74.9 %
JSON_SHARE_PLACES = 2  # JSON's shares, like error_rate: 74.85
RATIO_PLACES = 6  # Prometheus' ratios: 0.748538
# --prices: Huawei's international price pages quote per 1,000 tokens; other price lists per 1,000,000.
PRICE_PER = (1000, 1000000)
PRICES_HEADER = ("model", "input", "output", "per", "currency")
ANY_MODEL = "*"  # the price of every model not listed
MAX_PRICES_BYTES = 256 * 1024  # a price list is a few KB: a larger file is a mistake, refused unread
_PRICE_RE = re.compile(r"^\d{1,12}(?:\.\d{1,12})?$", re.ASCII)  # no sign, exponent, NaN or thousands separator
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$", re.ASCII)  # an ISO 4217 code: CNY, USD, EUR
CENTS = Decimal("0.01")  # costs are shown to 2 decimals


def rounded_quotient(numerator: int, denominator: int, places: int) -> Decimal:
    """numerator / denominator rounded half up to ``places`` decimals, exactly (integer arithmetic)."""
    scaled = numerator * 10 ** places
    return Decimal((2 * scaled + denominator) // (2 * denominator)).scaleb(-places).quantize(
        Decimal(1).scaleb(-places))


def parse_budget(text: str) -> int:
    """--budget: whole tokens from ``130M``, ``1.5B``, ``50000``."""
    match = _BUDGET_RE.fullmatch(text.strip())
    hint = "give tokens, optionally with K, M or B (thousands, millions, billions): --budget 130M"
    if match is None:
        raise UsageError(f"--budget {json_quoted(text)} is not a number of tokens", hint=hint)
    tokens = Decimal(match[1]) * BUDGET_SCALES[match[2].upper()]
    if tokens != tokens.to_integral_value():
        raise UsageError(f"--budget {json_quoted(text)} is not a whole number of tokens", hint=hint)
    if not 1 <= tokens <= MAX_BUDGET:
        raise UsageError(f"--budget must be from 1 to {MAX_BUDGET:,} tokens, not {json_quoted(text)}", hint=hint)
    return int(tokens)


def parse_fail_over(text: str) -> Decimal:
    """--fail-over: a percent above 0 (``90``, ``100``, ``87.5%``)."""
    match = _PERCENT_RE.fullmatch(text.strip())
    percent = Decimal(match[1]) if match else None
    if percent is None or not 0 < percent <= MAX_FAIL_OVER:
        raise UsageError(f"--fail-over {json_quoted(text)} is not a percent above 0 (at most {MAX_FAIL_OVER})",
                         hint="--fail-over 90 exits 4 once 90 % of the budget is used (or projected)")
    return percent


@dataclass(frozen=True)
class BudgetOptions:
    tokens: int
    fail_over: Decimal | None  # --fail-over PCT
    unit: CalendarUnit | None  # the unit of a current preset (--today, --this-week, --this-month): projected


def reaches(numerator: int, denominator: int, percent: Decimal) -> bool:
    """Whether numerator / denominator, as a percent, reaches ``percent`` (exactly)."""
    top, bottom = percent.as_integer_ratio()
    return numerator * 100 * bottom >= top * denominator


@dataclass(frozen=True)
class Budget:
    """A report's tokens against a budget and, for a current calendar period, the linear projection
    to its end: tokens used / time elapsed x the whole period."""

    tokens: int
    used: int | None  # None when the source lacks total tokens
    period: Period  # the range measured
    end: datetime | None  # a current period's end (projected), else None

    @property
    def elapsed_ms(self) -> int:
        return self.period.end_ms - self.period.start_ms

    @property
    def whole_ms(self) -> int:
        assert self.end is not None
        return to_epoch_ms(self.end) - self.period.start_ms

    @property
    def projects(self) -> bool:
        return self.end is not None and self.used is not None

    def projected(self) -> int | None:
        if not self.projects:
            return None
        return (2 * self.used * self.whole_ms + self.elapsed_ms) // (2 * self.elapsed_ms)

    def fraction(self, projected: bool = False) -> tuple[int, int] | None:
        """The share of the budget used (or projected) as numerator and denominator, exact."""
        if self.used is None or (projected and not self.projects):
            return None
        if projected:
            return self.used * self.whole_ms, self.elapsed_ms * self.tokens
        return self.used, self.tokens

    def share(self, places: int, projected: bool = False) -> Decimal | None:
        """Percent of the budget used (or projected), rounded half up."""
        fraction = self.fraction(projected)
        return None if fraction is None else rounded_quotient(fraction[0] * 100, fraction[1], places)

    def ratio(self, projected: bool = False) -> Decimal | None:
        """The share as a ratio (Prometheus), rounded half up to RATIO_PLACES."""
        fraction = self.fraction(projected)
        return None if fraction is None else rounded_quotient(*fraction, RATIO_PLACES)

    def runs_out(self) -> datetime | None:
        """When the budget is (or was) used up at the period's pace, when that is before the period's
        end; the second, rounded down."""
        fraction = self.fraction(projected=True)
        if fraction is None or not self.used or fraction[0] < fraction[1]:
            return None
        moment_ms = self.period.start_ms + self.tokens * self.elapsed_ms // self.used
        return from_epoch_ms(moment_ms - moment_ms % 1000, timezone.utc)

    def crossed(self, percent: Decimal) -> str | None:
        """--fail-over: which share reached ``percent`` (the projected one when there is one), else None."""
        projected = self.projects
        fraction = self.fraction(projected)
        if fraction is None or not reaches(*fraction, percent):
            return None
        return f"the {'projected' if projected else 'used'} share ({self.share(SHARE_PLACES, projected)} %)"


def budget_of(options: BudgetOptions, usage: Usage, period: Period, zone: tzinfo, project: bool = True,
              now: datetime | None = None) -> Budget:
    """The budget over ``period``; a current preset's period is projected to its unit's end (the
    unit holding the period's last instant: Cloud Eye's whole hours may widen the start). Its pace
    is over the time elapsed until ``now``: whole hours may also widen the end past it, into an
    hour not yet lived (at 00:30, a pace over one hour would halve the projection)."""
    end = None
    if project and options.unit is not None:
        end = options.unit.next(period.end - timedelta(milliseconds=1), zone)
        if now is not None and now < period.end:
            period = Period(period.start, now)
    return Budget(options.tokens, usage.metrics()["total_tokens"], period, end)


@dataclass(frozen=True)
class Price:
    model: str
    input: Decimal  # per ``per`` prompt tokens
    output: Decimal  # per ``per`` completion tokens
    per: int
    line: int


@dataclass(frozen=True)
class PriceList:
    """--prices: one currency, prices by model (casefolded), ``*`` for every model not listed."""

    path: str
    currency: str
    prices: Mapping[str, Price]

    def for_row(self, row: Row) -> Price | None:
        """A model row's price: by its id, else its name, else ``*``; a row without a model: ``*``."""
        if row.model_id is not None:
            for name in (row.model_id, row.model):
                if name and name.casefold() in self.prices:
                    return self.prices[name.casefold()]
        return self.prices.get(ANY_MODEL)


def prices_error(path: str, message: str, line: int | None = None) -> UsageError:
    where = f"{printable(path)}, line {line}" if line is not None else printable(path)
    return UsageError(f"--prices {where}: {message}",
                      hint="the file is CSV with the header model,input,output,per,currency; per is 1000 or "
                           "1000000; model * prices every model not listed")


def read_prices_text(path: str) -> str:
    """The file's text: a regular file of at most MAX_PRICES_BYTES, UTF-8 (a BOM tolerated)."""
    try:
        found = os.stat(path)
        if not stat.S_ISREG(found.st_mode):
            raise prices_error(path, f"is {file_kind(found.st_mode)}, not a regular file")
        if found.st_size > MAX_PRICES_BYTES:
            raise prices_error(path, f"is larger than {MAX_PRICES_BYTES // 1024} KiB: not a price list")
        with open(path, "rb") as handle:
            data = handle.read(MAX_PRICES_BYTES + 1)
    except (OSError, ValueError) as exc:
        raise prices_error(path, f"cannot be read ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    if len(data) > MAX_PRICES_BYTES:
        raise prices_error(path, f"is larger than {MAX_PRICES_BYTES // 1024} KiB: not a price list")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise prices_error(path, "is not UTF-8 text", data.count(b"\n", 0, exc.start) + 1) from None


def parse_price_line(path: str, number: int, cells: Sequence[str]) -> Price:
    """One line of a price list, checked cell by cell."""
    if len(cells) != len(PRICES_HEADER):
        raise prices_error(path, f"{len(cells)} columns, expected {len(PRICES_HEADER)} "
                                 f"({','.join(PRICES_HEADER)})", number)
    model, *amounts, per, _ = (cell.strip() for cell in cells)
    if not model:
        raise prices_error(path, "the model is empty (* prices every model not listed)", number)
    values = []
    for name, text in zip(("input", "output"), amounts):
        if text.startswith("-") and _PRICE_RE.fullmatch(text[1:]):
            raise prices_error(path, f"the {name} price {json_quoted(text)} is negative", number)
        if not _PRICE_RE.fullmatch(text):
            raise prices_error(path, f"the {name} price {json_quoted(text)} is not a number", number)
        values.append(Decimal(text))
    if per not in {str(value) for value in PRICE_PER}:
        raise prices_error(path, f"per is {json_quoted(per)}: prices are per 1000 or per 1000000 tokens", number)
    return Price(model, values[0], values[1], int(per), number)


def parse_prices(path: str, text: str) -> PriceList:
    """A price list from its text: the header, then one line per model; one currency."""
    import csv

    lines = [(number, cells) for number, cells in enumerate(csv.reader(text.splitlines()), 1)
             if cells and any(cell.strip() for cell in cells) and not cells[0].lstrip().startswith("#")]
    if not lines:
        raise prices_error(path, "is empty")
    number, header = lines[0]
    if tuple(cell.strip().lower() for cell in header) != PRICES_HEADER:
        raise prices_error(path, f"the header must be {','.join(PRICES_HEADER)}", number)
    prices: dict[str, Price] = {}
    currencies: dict[str, int] = {}
    for number, cells in lines[1:]:
        price = parse_price_line(path, number, cells)
        currency = cells[-1].strip().upper()
        if not _CURRENCY_RE.fullmatch(currency):
            raise prices_error(path, f"the currency {json_quoted(cells[-1].strip())} is not a 3-letter code "
                                     "(CNY, USD …)", number)
        currencies.setdefault(currency, number)
        if len(currencies) > 1:
            first, second = currencies
            raise prices_error(path, f"several currencies ({first} on line {currencies[first]}, {second}): "
                                     "costs in one currency only", number)
        earlier = prices.get(price.model.casefold())
        if earlier is not None:
            raise prices_error(path, f"the model {json_quoted(price.model)} is priced twice (also on line "
                                     f"{earlier.line})", number)
        prices[price.model.casefold()] = price
    if not prices:
        raise prices_error(path, "has a header but no prices")
    return PriceList(path, next(iter(currencies)), prices)


def load_prices(path: str | None, by_model: bool) -> PriceList | None:
    """--prices, validated before any request: without model rows only the ``*`` price can apply."""
    if path is None:
        return None
    prices = parse_prices(path, read_prices_text(path))
    if not by_model and ANY_MODEL not in prices.prices:
        raise prices_error(path, "has no * row: without --group-by model the rows have no model, so only a "
                                 "* price applies")
    return prices


def cost_of(usage: Usage, price: Price | None) -> Decimal | None:
    """(prompt x input + completion x output) / per, exact, from the shown (whole) token counts."""
    values = usage.metrics()
    prompt, completion = values["prompt_tokens"], values["completion_tokens"]
    if price is None or prompt is None or completion is None:
        return None
    with localcontext() as context:
        context.prec = 80  # exact: tokens below 10^15, prices of 24 digits, per a power of ten
        return (prompt * price.input + completion * price.output) / price.per


@dataclass(frozen=True)
class CostEstimate:
    """Estimated costs of a report's rows (None where no price applies) in one currency."""

    currency: str
    rows: tuple[Decimal | None, ...]

    @property
    def total(self) -> Decimal | None:
        """The sum of the rows that have a cost; None (``-``, null) when rows exist and none has one."""
        if self.rows and all(cost is None for cost in self.rows):
            return None
        with localcontext() as context:
            context.prec = 80
            return sum((cost for cost in self.rows if cost is not None), ZERO)

    @property
    def complete(self) -> bool:
        return None not in self.rows


def estimate_costs(prices: PriceList, rows: Sequence[Row], console: Console | None = None) -> CostEstimate:
    """Each row's cost. A model the list lacks (no ``*``) is a usage error naming it; a row without
    a model or without token counts is left out of the total, with a note."""
    unpriced = sorted({printable(row.model or row.model_id or "") for row in rows
                       if row.model_id is not None and prices.for_row(row) is None})
    if unpriced:
        raise prices_error(prices.path, f"no price for the model{'s' if len(unpriced) > 1 else ''} "
                                        f"{', '.join(unpriced)} and no * row")
    costs = tuple(cost_of(row.total, prices.for_row(row)) for row in rows)
    if console is not None and None in costs:
        console.note("some rows have no price or no token counts (the rows not listed by Cloud Eye need a * row): "
                     "their cost is not in the estimated total")
    return CostEstimate(prices.currency, costs)


def format_cost(cost: Decimal | None, currency: str | None = None) -> str:
    """``1,234.57`` (half up), with `` USD`` when ``currency`` is given; ``-`` for no cost."""
    if cost is None:
        return "-"
    return f"{cost.quantize(CENTS, ROUND_HALF_UP):,}" + (f" {currency}" if currency else "")


def format_period_end(moment: datetime, zone: tzinfo) -> str:
    """A period's end as its last day's ``24:00`` when it is a local midnight: ``2026-12-31 24:00``."""
    local = moment.astimezone(zone)
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return f"{local.date() - timedelta(days=1)} 24:00"
    return local.strftime("%Y-%m-%d %H:%M")


def budget_lines(budget: Budget, zone: tzinfo, previous: Budget | None = None) -> list[str]:
    """``Budget: 130.00 M tokens; used 97.31 M tokens (74.9 %)`` and, for a current period, ``At this
    pace: …``; with --compare the previous period's use."""
    if budget.used is None:
        return [f"Budget: {format_tokens(budget.tokens)}; used unknown (no total tokens)"]
    lines = [f"Budget: {format_tokens(budget.tokens)}; used {format_tokens(budget.used)} "
             f"({budget.share(SHARE_PLACES)} %)"]
    if previous is not None and previous.used is not None:
        lines[0] += f"; previous period {format_tokens(previous.used)} ({previous.share(SHARE_PLACES)} %)"
    projected, runs_out = budget.projected(), budget.runs_out()
    if projected is not None and budget.end is not None:
        line = (f"At this pace: {format_tokens(projected)} by {format_period_end(budget.end, zone)} "
                f"({budget.share(SHARE_PLACES, projected=True)} %)")
        if runs_out is not None:
            verb = "ran out" if budget.used >= budget.tokens else "runs out"
            line += f"; the budget {verb} about {runs_out.astimezone(zone):%Y-%m-%d %H:%M}"
        lines.append(line)
    return lines


def cost_line(costs: CostEstimate, previous: CostEstimate | None = None) -> str:
    line = f"Estimated cost: {format_cost(costs.total, costs.currency)}"
    if previous is not None:
        line += f"; previous period {format_cost(previous.total, previous.currency)}"
    return line + " (from --prices; the bill is the authority)"


def json_budget(budget: Budget, zone: tzinfo) -> dict[str, Any]:
    def number(value: Decimal | None) -> float | None:
        return None if value is None else float(value)

    runs_out = budget.runs_out()
    return {"tokens": budget.tokens, "used": budget.used, "used_percent": number(budget.share(JSON_SHARE_PLACES)),
            "projected": budget.projected(),
            "projected_percent": number(budget.share(JSON_SHARE_PLACES, projected=True)),
            "runs_out": None if runs_out is None else runs_out.astimezone(zone).isoformat(),
            "projected_to": None if not budget.projects or budget.end is None
            else budget.end.astimezone(zone).isoformat()}


def json_cost(value: Decimal | None) -> float | None:
    """A cost for JSON: rounded half up to cents, as the table shows it."""
    return None if value is None else float(value.quantize(CENTS, ROUND_HALF_UP))


# ----------------------------------------------------------------------------------------------
# Rendering: table, JSON, CSV and Prometheus from the same Report
# ----------------------------------------------------------------------------------------------


def format_instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_tokens(tokens: int, unit: bool = True) -> str:
    """``2,482.08 M tokens``; without ``unit`` the compact ``2,482.08M`` of grouped tables."""
    suffix = " tokens" if unit else ""

    def scaled(scale: int) -> Decimal:
        return (Decimal(tokens) / scale).quantize(Decimal("0.01"), ROUND_HALF_UP)

    if tokens >= 10 ** 6 or scaled(1000) >= 1000:  # 999,995 tokens reads 1.00 M, not 1,000.00 K
        return f"{scaled(10 ** 6):,}{' M' if unit else 'M'}{suffix}"
    return f"{scaled(1000):,}{' K' if unit else 'K'}{suffix}"


COMPACT_SUFFIXES = ((10 ** 3, "K"), (10 ** 6, "M"), (10 ** 9, "B"), (10 ** 12, "T"))


def format_compact(value: int) -> str:
    """At most 6 characters: below 100,000 the exact ``99,736``, else 4 significant digits and a suffix
    (``1.149B``, ``38.24M``, ``943.5K``). The narrow grouped table's numbers."""
    def scaled(scale: int) -> Decimal:
        exact = Decimal(value) / scale
        return exact.quantize(Decimal(1).scaleb(max(exact.adjusted(), 0) - 3), ROUND_HALF_UP)

    if value < 100_000:
        return f"{value:,}"
    for scale, suffix in COMPACT_SUFFIXES[:-1]:
        if scaled(scale) < 1000:  # 999,950 reads 1.000M, not 1000.0K
            return f"{scaled(scale)}{suffix}"
    scale, suffix = COMPACT_SUFFIXES[-1]
    return f"{scaled(scale):,}{suffix}"


def format_rate(rate: Decimal | None) -> str:
    return "-" if rate is None else f"{rate:.2f}%"


def services_title(service_types: Sequence[int]) -> str:
    if set(service_types) == set(SERVICE_NAMES):
        return "All Services"
    return " + ".join(SERVICE_NAMES[t] for t in service_types)


def period_line(query: Query) -> str:
    start, end = query.period.start.astimezone(query.zone), query.period.end.astimezone(query.zone)
    names = dict.fromkeys(n for n in (start.tzname(), end.tzname()) if n)
    return f"Period: {format_instant(start)} ~ {format_instant(end)} ({'/'.join(names)})"


def json_document(document: Any, **options: Any) -> str:
    """JSON text with every character kept as it is (CJK labels read as labels) except those a
    terminal must not get, written as \\u escapes: the same document, and any UTF-8 writer takes it
    (a lone surrogate included)."""
    text = json.dumps(document, ensure_ascii=False, **options)
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def json_quoted(text: str) -> str:
    """``text`` as a JSON string literal whose every character prints (the others \\u-escaped)."""
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in json.dumps(text, ensure_ascii=False))


def filters_line(query: Query) -> str | None:
    """The filters in effect, so that a pasted table never reads as the unfiltered total. Never
    shortened: the labels are what tells one filter from another."""
    filters = []
    if query.batch:
        filters.append("infer type batch")
    if query.api_keys is not None:
        filters.append("API keys " + ", ".join(json_quoted(key) for key in query.api_keys))
    if query.ips is not None:
        filters.append("IPs " + ", ".join(query.ips))
    return "Filters: " + "; ".join(filters) if filters else None


def bucket_label(row: Row, query: Query) -> str:
    """``YYYY-MM-DD HH:00``, a day's date, the week's Monday (even when the range clips the week),
    or YYYY-MM; a trailing ``*`` marks a partial bucket."""
    assert row.bucket is not None and query.bucket is not None
    start = row.bucket.start.astimezone(query.zone)
    label = start.strftime(query.bucket.label_format)
    if query.bucket is HOUR and _repeated(start):
        label += f" {_iso_offset(start)}"
    return label + ("*" if row.partial else "")


def _repeated(wall: datetime) -> bool:
    """Whether this wall time occurs twice (the hour a fall-back day repeats)."""
    other = wall.replace(fold=1 - wall.fold)
    return other.utcoffset() != wall.utcoffset()


def _iso_offset(wall: datetime) -> str:
    """The UTC offset as in ISO 8601: ``-04:00``."""
    return wall.isoformat()[-6:]


def footnotes(report: Report) -> list[str]:
    """The lines under the grouped table: what a ``*`` on a bucket label means, when one has it."""
    if not any(row.partial for row in report.rows):
        return []
    return [f"* partial: the range starts or ends inside this {report.query.bucket.name}"]


TABLE_WIDTH = 80  # a grouped table and the chart fit a terminal's 80 columns
KEY_LABEL_WIDTH = 16  # a longer key label is cut to 15 characters and "…" in the grouped table
BAR_EIGHTHS = "▏▎▍▌▋▊▉█"  # 1/8 to 8/8 of a character: a bar's length to an eighth


def _table_style(name: str | None, gap: int = 0) -> Any:
    # Imported here: only table output pays for tabulate.
    import tabulate

    if name:
        return name
    if gap:  # the same frame, ``gap`` spaces between columns instead of " | ": 3 - gap columns each saved
        line = tabulate.Line("+-", "-", "-" * gap, "-+")
        row = tabulate.DataRow("| ", " " * gap, " |")
        return tabulate.TableFormat(lineabove=line, linebelowheader=tabulate.Line("+=", "=", "=" * gap, "=+"),
                                    linebetweenrows=None, linebelow=line, headerrow=row, datarow=row,
                                    padding=0, with_header_hide=None)
    # The original skill's layout: a grid with a rule under the header and none between rows.
    line = tabulate.Line("+", "-", "+", "+")
    return tabulate.TableFormat(lineabove=line, linebelowheader=tabulate.Line("+", "=", "+", "+"),
                                linebetweenrows=None, linebelow=line,
                                headerrow=tabulate.DataRow("|", "|", "|"), datarow=tabulate.DataRow("|", "|", "|"),
                                padding=1, with_header_hide=None)


def metric_text(metric: Metric, value: Any, compact: bool = False) -> str:
    """A metric's value as the tables show it; ``compact`` drops the `` tokens`` unit (grouped rows)."""
    if metric.style == "percent" or value is None:
        return format_rate(value)
    if metric.style == "tokens":
        return format_tokens(value, unit=not compact)
    return f"{value:,}"


def metric_lines(usage: Usage, batch: bool, compact: bool = False) -> list[tuple[str, str]]:
    values = usage.metrics()
    return [(metric.label, metric_text(metric, values[metric.name], compact)) for metric in shown_metrics(batch)]


def narrow_cells(usage: Usage, batch: bool) -> list[str]:
    """A grouped row's metrics in at most 6 characters each (the error rate as it is)."""
    values = usage.metrics()
    return [format_rate(values[m.name]) if m.style == "percent" or values[m.name] is None
            else format_compact(values[m.name])
            for m in shown_metrics(batch)]


def row_labels(row: Row, query: Query) -> list[str]:
    """What tells a grouped row from the others: its cell of each grouping the rows are split by."""
    return [grouping.label(row, query) for grouping in query.groupings]


TABLE_ROW_LABELS = ("Total", NOT_LISTED)  # the rows a table adds itself


def table_labels(report: Report) -> list[list[str]]:
    """Each row's labels in the table and the chart, where Cloud Eye's names (from the monitor, any
    text) must not hide one id behind another: a model or key label shared by several ids (the same
    name, or names cut to the same 16 columns) or one that reads as the table's own Total or
    (not listed by Cloud Eye) row ends in ``#`` and the last 6 characters of its id."""
    query = report.query
    labels = [row_labels(row, query) for row in report.rows]
    reserved = {printable(label, KEY_LABEL_WIDTH) for label in TABLE_ROW_LABELS}
    for column, grouping in enumerate(query.groupings):
        id_of = {MODEL: lambda row: row.model_id, API_KEY: lambda row: row.api_key_id}.get(grouping)
        if id_of is None:
            continue
        ids: dict[str, set[str]] = {}
        for row, label in zip(report.rows, labels):
            if id_of(row) is not None:
                ids.setdefault(label[column], set()).add(id_of(row))
        for row, label in zip(report.rows, labels):
            shown, found = label[column], id_of(row)
            if found is not None and (len(ids[shown]) > 1 or shown in reserved):
                tail = printable(found[-6:])
                label[column] = cut_to_width(shown, KEY_LABEL_WIDTH - display_width(tail) - 1) + "#" + tail
    return labels


def widest_line(text: str) -> int:
    return max(map(display_width, text.splitlines()), default=0)


def grouped_table(report: Report, table_format: str | None) -> str:
    """One row per group and a Total row, in 80 columns: the full layout when it fits, else shorter
    headers and compact numbers, else (in the default style) also lighter column rules: two spaces
    between columns, then one (an hour's 16-column label beside a 16-column key or model label)."""
    layouts = [(False, _table_style(table_format)), (True, _table_style(table_format))]
    if not table_format:
        layouts += [(True, _table_style(None, gap=2)), (True, _table_style(None, gap=1))]
    for narrow, style in layouts:
        text = _grouped_table(report, style, narrow)
        if widest_line(text) <= TABLE_WIDTH:
            break
    return text


class _TabulateWidths:
    """What tabulate uses of the wcwidth package: the width of a cell's text in columns."""

    wcswidth = staticmethod(display_width)


def _grouped_table(report: Report, style: Any, narrow: bool) -> str:
    import tabulate

    query = report.query
    headers = [grouping.header(query) for grouping in query.groupings]
    label_columns = len(headers)
    # An hour's label is 6 to 13 characters wider than a day's: hour rows take the shortest headers.
    layout = 2 if query.bucket is HOUR else 1 if narrow else 0
    headers += [metric.headers[layout] for metric in shown_metrics(query.batch)]

    def cells(usage: Usage) -> list[str]:
        if narrow:
            return narrow_cells(usage, query.batch)
        return [value for _, value in metric_lines(usage, query.batch, compact=True)]

    rows = [labels + cells(row.total) for row, labels in zip(report.rows, table_labels(report))]
    rows.append(["Total"] + [""] * (label_columns - 1) + cells(report.total))
    if report.costs is not None:  # the estimated cost of each row, and of all; narrow: no thousands separator
        headers.append(f"Est.{report.costs.currency}" if narrow else f"Est. {report.costs.currency}")
        for line, cost in zip(rows, (*report.costs.rows, report.costs.total)):
            line.append(format_cost(cost).replace(",", "") if narrow else format_cost(cost))
    align = ["left"] * label_columns + ["right"] * (len(headers) - label_columns)
    # tabulate widens every column by MIN_PADDING beyond its header; a month of days must fit
    # in 80 columns, so the grouped table is drawn without that extra space. It counts characters,
    # not columns, unless the optional wcwidth package is there: our widths stand in for it, so that
    # CJK labels (two columns a character) keep the frame aligned.
    saved = tabulate.MIN_PADDING, tabulate.WIDE_CHARS_MODE, tabulate.wcwidth
    tabulate.MIN_PADDING, tabulate.WIDE_CHARS_MODE, tabulate.wcwidth = 0, True, _TabulateWidths
    try:
        return tabulate.tabulate(rows, headers=headers, tablefmt=style, colalign=align, disable_numparse=True)
    finally:
        tabulate.MIN_PADDING, tabulate.WIDE_CHARS_MODE, tabulate.wcwidth = saved


def bar_characters(encoding: str | None) -> str:
    """The chart's bars: eighth blocks where the output is UTF-8 (a text stream without an encoding
    takes any text), else ``#`` in whole characters."""
    import codecs

    try:
        utf8 = encoding is None or codecs.lookup(encoding).name.startswith("utf-8")
    except LookupError:
        utf8 = False
    return BAR_EIGHTHS if utf8 else "#"


def bar(tokens: int, most: int, width: int, blocks: str) -> str:
    """``tokens``'s share of ``most`` as a bar of ``width`` characters (the last of ``blocks`` is a whole
    one, the others its fractions); a row with any tokens gets at least the thinnest bar."""
    steps = len(blocks)
    units = (2 * tokens * width * steps + most) // (2 * most) if most else 0  # rounded half up
    if tokens and not units:
        units = 1
    whole, part = divmod(units, steps)
    return blocks[-1] * whole + (blocks[part - 1] if part else "")


def token_chart(report: Report, blocks: str) -> list[str]:
    """Total tokens per grouped row as bars in 80 columns (label, bar, value), the largest row's full."""
    parts = table_labels(report)
    widths = [max(map(display_width, column)) for column in zip(*parts)]
    labels = [" ".join(padded(part, width) for part, width in zip(row, widths)).rstrip() for row in parts]
    tokens = [row.total.metrics()["total_tokens"] for row in report.rows]
    values = [format_tokens(count, unit=False) for count in tokens]
    label_width, value_width = max(map(display_width, labels)), max(map(len, values))
    width = TABLE_WIDTH - label_width - value_width - 2
    return ["Total Tokens"] + [f"{padded(label, label_width)} {bar(count, max(tokens), width, blocks):<{width}} "
                               f"{value:>{value_width}}" for label, count, value in zip(labels, tokens, values)]


def render_table(report: Report, table_format: str | None, raw: bool, chart: str | None = None) -> str:
    """The table result; ``chart`` (the bar characters) adds the chart after the grouped table."""
    import tabulate

    query = report.query
    style = _table_style(table_format)
    parts = [f"MaaS {services_title(query.service_types)} Usage Statistics - Region: {query.region}"]
    filters = filters_line(query)
    if filters:
        parts.append(filters)
    if query.groupings:
        # A blank line after the table and its footnotes: markdown styles must not merge two tables.
        parts += [grouped_table(report, table_format), *footnotes(report),
                  *([report.reconciliation.line()] if report.reconciliation is not None else []), ""]
        if chart:
            parts += [*token_chart(report, chart), ""]
    if report.previous is None:
        parts.append(tabulate.tabulate(metric_lines(report.total, query.batch), headers=["Metric", "Value"],
                                       tablefmt=style, disable_numparse=True))
    else:
        known = comparable(report)
        parts.append(tabulate.tabulate(compared_lines(report.total, report.previous.total, query.batch, known),
                                       headers=["Metric", "Value", "Previous", "Change"], tablefmt=style,
                                       disable_numparse=True, colalign=("left", "left", "left", "right")))
        if not known:
            parts.append(UNKNOWN_CHANGE_FOOTNOTE)
    parts += budget_and_cost_lines(report)
    parts.append(period_line(query))
    if report.previous is not None:
        parts.append(period_line(report.previous.query).replace("Period:", "Previous:", 1))
    if raw:
        parts.append("Raw responses:")
        parts += [f"{window.label if row else f'{window.call.name} for {window.label}'}: "
                  f"{window.response or 'null'}" for row, window in report.raw_windows()]
    return "\n".join(parts) + "\n"


def budget_and_cost_lines(report: Report) -> list[str]:
    """The lines under the totals: the budget (and its projection), the estimated cost."""
    previous = report.previous
    lines = []
    if report.budget is not None:
        lines += budget_lines(report.budget, report.query.zone, previous.budget if previous is not None else None)
    if report.costs is not None:
        lines.append(cost_line(report.costs, previous.costs if previous is not None else None))
    return lines


UNKNOWN_CHANGE_FOOTNOTE = ("n/a: the previous period lies (partly) before MaaS's 30-day retention; "
                           "a history store (--store) keeps it")


def comparable(report: Report) -> bool:
    """--compare: whether a change can be told. Not when part of either period lies before MaaS's
    retention and was fetched live: the API may answer it with zeros, and a change from them
    (``new``, ``+900%``) would be made up."""
    return report.coverage.complete and (report.previous is None or report.previous.coverage.complete)


def metric_changes(current: Usage, previous: Usage) -> dict[str, Decimal | None]:
    """--compare: each metric's change in percent (1 decimal, half up; None when the previous value
    is 0 or either is unknown: Cloud Eye without the metric), a percentage's as a difference in
    percentage points (2 decimals; None when either is)."""
    now, before = current.metrics(), previous.metrics()
    changes: dict[str, Decimal | None] = {}
    for metric in METRICS:
        name = metric.name
        if metric.style == "percent":
            rates = (now[name], before[name])
            changes[name] = None if None in rates else (rates[0] - rates[1]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        elif before[name] == 0 or now[name] is None or before[name] is None:
            changes[name] = None
        else:
            change = (Decimal(now[name]) - before[name]) * 100 / before[name]
            changes[name] = change.quantize(Decimal("0.1"), ROUND_HALF_UP)
    return changes


def change_text(metric: Metric, change: Decimal | None, value: Any) -> str:
    """``+12.5%``, ``+1.20 pp`` for a percentage, ``new`` from zero, ``-`` when both are zero."""
    if metric.style == "percent":
        return "-" if change is None else f"{change:+.2f} pp"
    if change is None:
        return "new" if value else "-"
    return f"{change:+.1f}%"


def compared_lines(current: Usage, previous: Usage, batch: bool,
                   known: bool = True) -> list[tuple[str, str, str, str]]:
    """The totals table with --compare: metric, value, previous value, change (``n/a`` unless ``known``)."""
    changes, now, before = metric_changes(current, previous), current.metrics(), previous.metrics()

    def change(metric: Metric) -> str:
        if not known:
            return "n/a"
        if None in (now[metric.name], before[metric.name]):  # a metric Cloud Eye does not list: no change
            return "-"
        return change_text(metric, changes[metric.name], now[metric.name])

    return [(metric.label, metric_text(metric, now[metric.name]), metric_text(metric, before[metric.name]),
             change(metric)) for metric in shown_metrics(batch)]


def _json_metrics(usage: Usage) -> dict[str, Any]:
    # The percentages are rounded to 2 decimals already: as JSON numbers they read the same.
    return {name: float(value) if isinstance(value, Decimal) else value for name, value in usage.metrics().items()}


def _json_period(period: Period, zone: tzinfo, with_ms: bool = True) -> dict[str, Any]:
    bounds = {"start": period.start.astimezone(zone).isoformat(), "end": period.end.astimezone(zone).isoformat()}
    return {**bounds, "start_ms": period.start_ms, "end_ms": period.end_ms} if with_ms else bounds


def _json_instant(moment: datetime | None, zone: tzinfo, name: str) -> dict[str, Any]:
    if moment is None:
        return {name: None, f"{name}_ms": None}
    return {name: moment.astimezone(zone).isoformat(), f"{name}_ms": to_epoch_ms(moment)}


def _json_coverage(coverage: Coverage, zone: tzinfo) -> dict[str, Any]:
    document = {"complete": coverage.complete, **_json_instant(coverage.retained_from, zone, "retained_from"),
                "missing": [_json_period(part, zone) for part in coverage.missing],
                **_json_instant(coverage.provisional_from, zone, "provisional_from")}
    if coverage.anomalies:  # only when there are any: the coverage of a sound answer reads as it always did
        document["anomalies"] = [{**_json_period(anomaly.period, zone, with_ms=False), "what": anomaly.what}
                                 for anomaly in coverage.anomalies]
    return document


def _header(query: Query, project_id: str | None) -> dict[str, Any]:
    return {"schema_version": 1, "region": query.region, "project_id": project_id,
            "timezone": query.zone_name, "infer_type": query.infer_type,
            "service_types": list(query.service_types),
            "api_keys": None if query.api_keys is None else list(query.api_keys),
            "ips": None if query.ips is None else list(query.ips),
            "period": _json_period(query.period, query.zone)}


def _exact_json(value: Any) -> Any:
    """A raw answer for re-serialising: the API sends doubles, whose shortest decimal text survives
    float() unchanged; anything else odd (huge exponents) is kept as its text."""
    if isinstance(value, Decimal):
        if value.is_finite() and value.adjusted() < 18:
            integral = value == value.to_integral_value() and "." not in str(value)
            return int(value) if integral else float(value)
        return str(value)
    if isinstance(value, dict):
        return {k: _exact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact_json(v) for v in value]
    return value


def render_json(report: Report, raw: bool) -> str:
    query = report.query
    document = _header(query, report.project_id)
    document["totals"] = _json_metrics(report.total)
    document["rows"] = _json_rows(report, report.store is not None)
    document["coverage"] = _json_coverage(report.coverage, query.zone)
    document.update(_json_budget_and_cost(report))
    if report.previous is not None:
        before = report.previous
        document["previous"] = {"period": _json_period(before.query.period, query.zone),
                                "totals": _json_metrics(before.total),
                                "coverage": _json_coverage(before.coverage, query.zone),
                                **_json_budget_and_cost(before)}
        if query.groupings:
            document["previous"]["rows"] = _json_rows(before, report.store is not None)
        document["change"] = {name: None if value is None or not comparable(report) else float(value)
                              for name, value in metric_changes(report.total, before.total).items()}
    if report.store is not None:
        document["store"] = report.store
    if query.cloud_eye:
        document["reconciliation"] = None if report.reconciliation is None else report.reconciliation.json()
    if not raw:
        return json_document(document, indent=2) + "\n"
    # Each window's answer goes in as the text it is kept as, parsed again one at a time: the parsed
    # answers of a hostile server (1 MiB of empty objects each) never all sit in memory together.
    marker = f"raw-answer-{os.urandom(8).hex()}-"
    windows = report.raw_windows()
    document["windows"] = [_json_window(row, window, f"{marker}{index}") for index, (row, window) in enumerate(windows)]
    text = json_document(document, indent=2)
    parts, at = [], 0
    for index, (_, window) in enumerate(windows):
        found = text.index(f'"{marker}{index}"', at)
        indent = " " * (found - text.rindex("\n", 0, found) - 1 - len('"response": '))
        answer = json_document(json.loads(window.response or "null"), indent=2).replace("\n", "\n" + indent)
        parts += [text[at:found], answer]
        at = found + len(f'"{marker}{index}"')
    return "".join([*parts, text[at:], "\n"])


def raw_text(data: Any) -> str:
    """An answer as --raw keeps it until printed: JSON text (a few bytes an item, where parsed items
    take a hundred), its numbers as the API sent them."""
    return json.dumps(_exact_json(data))


def _json_window(row: Row | None, window: Window, response: str) -> dict[str, Any]:
    """--raw: one answered window (``response``: a stand-in for its answer). A Cloud Eye run's
    windows (no row of their own) name their call."""
    document = {"start_ms": window.period.start_ms, "end_ms": window.period.end_ms,
                "service_type": row.service_type if row else window.body.get("service_type"),
                "api_key": row.api_key if row else None}
    if row is None:
        document["call"] = window.call.name
    document["response"] = response
    return document


def _json_rows(report: Report, with_source: bool) -> list[dict[str, Any]]:
    rows = [_json_row(row, report.query, with_source) for row in report.rows]
    if report.costs is not None:
        for document, cost in zip(rows, report.costs.rows):
            document["cost"] = json_cost(cost)
    return rows


def _json_budget_and_cost(report: Report) -> dict[str, Any]:
    """JSON's ``budget`` and ``cost`` (each only when asked for); every cost is an estimate."""
    document: dict[str, Any] = {}
    if report.budget is not None:
        document["budget"] = json_budget(report.budget, report.query.zone)
    if report.costs is not None:
        document["cost"] = {"currency": report.costs.currency, "total": json_cost(report.costs.total),
                            "estimated": True, "complete": report.costs.complete}
    return document


def _json_row(row: Row, query: Query, with_source: bool) -> dict[str, Any]:
    document = {name: value for grouping in output_groupings(query)
                for name, value in grouping.json(row, query).items()}
    document.update(partial=row.partial, **_json_metrics(row.total))
    if with_source or row.cloud_eye is not None:
        document["source"] = row.source
    return document


def render_csv(report: Report, header: bool) -> str:
    import csv
    import io

    def line(values: list[Any]) -> str:
        # The csv module quotes a field holding a character of its line terminator: with "\r\n" a lone
        # CR in a key label is quoted too (with "\n" it would split the row); lines still end in "\n".
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerow(values)
        return out.getvalue()[:-2] + "\n"

    query = report.query
    columns = [*(column for grouping in output_groupings(query) for column in grouping.csv_columns), *METRIC_NAMES,
               *(CSV_COST_COLUMNS if report.costs is not None else ())]
    lines = [line(columns)] if header else []
    for part in (report, report.previous):
        if part is not None:
            lines += [line(values) for values in _csv_lines(part, query)]
    return "".join(lines)


def _csv_lines(report: Report, query: Query) -> list[list[Any]]:
    """A report's CSV lines (split as ``query``'s rows), with the estimated cost when --prices was given."""
    costs = report.costs
    lines = []
    for index, row in enumerate(report.rows):
        metrics = row.total.metrics()
        line = [*(value for grouping in output_groupings(query) for value in grouping.csv(row, query)),
                *("" if value is None else f"{value:.2f}" if isinstance(value, Decimal) else value
                  for value in metrics.values())]
        if costs is not None:
            cost = costs.rows[index]
            line += ["" if cost is None else format(cost.quantize(CENTS, ROUND_HALF_UP), "f"), costs.currency]
        lines.append(line)
    return lines


CSV_COST_COLUMNS = ("estimated_cost", "currency")  # --prices: after the metrics, so no column moves


# --format prometheus: every family's HELP text, in the order they are written.
PROMETHEUS_HELP = {
    "maas_usage_tokens": "Tokens used in the period, by kind (actual tokens).",
    "maas_usage_requests": "Requests in the period.",
    "maas_usage_errors": "Failed requests in the period.",
    "maas_usage_completed_tasks": "Batch tasks completed in the period.",
    "maas_usage_inference_count": "Batch inferences in the period.",
    "maas_usage_period_start_timestamp_seconds": "Start of the period (Unix time).",
    "maas_usage_period_end_timestamp_seconds": "End of the period, exclusive (Unix time).",
    "maas_usage_complete": "1 when no part of the period lies before its source's retention (MaaS 30 days, "
                           "Cloud Eye 155 days for model and key rows), else 0.",
    "maas_usage_estimated_cost": "Estimated cost of the period from --prices (the bill is the authority).",
    "maas_usage_budget_tokens": "The token budget given with --budget.",
    "maas_usage_budget_used_ratio": "Tokens used in the period / the budget.",
    "maas_usage_budget_projected_ratio": "Tokens projected to the current period's end at its pace / the budget.",
}


def prometheus_label_value(text: str) -> str:
    """A label value as the text exposition format writes it: backslash, quote and newline escaped;
    a lone surrogate (no UTF-8 holds it) as the text of its escape, so the collector reads ``\\ud83d``."""
    text = _SURROGATES.sub(_escape, text)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_seconds(ms: int) -> str:
    """Epoch milliseconds as seconds, exact: ``1778169600`` or ``1778169600.5``."""
    seconds, millis = divmod(ms, 1000)
    return f"{seconds}.{millis:03d}".rstrip("0") if millis else str(seconds)


def _prometheus_labels(report: Report, row: Row | None) -> list[tuple[str, str]]:
    """A row's labels; without a row (the budget's samples, for the whole run) the run's own."""
    query = report.query
    return [("region", query.region), ("project_id", report.project_id or ""),
            *(label for grouping in output_groupings(query) if row is not None
              for label in grouping.prometheus(row, query))]


def _prometheus_series(report: Report) -> list[tuple[str, list[tuple[str, str]], str]]:
    """Every sample: its family, labels and value; per row, then the run's budget gauges."""
    series = []
    costs = report.costs
    for index, row in enumerate(report.rows):
        labels = _prometheus_labels(report, row)
        series += [(family, labels + ([("kind", kind)] if kind else []), value)
                   for family, kind, value in _prometheus_samples(row, report.query.batch, report.coverage.complete)]
        if costs is not None and costs.rows[index] is not None:
            series.append(("maas_usage_estimated_cost", labels + [("currency", costs.currency)],
                           format(costs.rows[index].quantize(CENTS, ROUND_HALF_UP), "f")))
    labels = _prometheus_labels(report, None)
    return series + [(family, labels, value) for family, value in _prometheus_budget(report)]


def _prometheus_budget(report: Report) -> list[tuple[str, str]]:
    """--budget's gauges: the budget, the share used, and the projected share when there is one."""
    budget = report.budget
    if budget is None:
        return []
    samples = [("maas_usage_budget_tokens", str(budget.tokens))]
    for family, projected in (("maas_usage_budget_used_ratio", False), ("maas_usage_budget_projected_ratio", True)):
        ratio = budget.ratio(projected)
        if ratio is not None:
            samples.append((family, format(ratio, "f")))
    return samples


def _prometheus_samples(row: Row, batch: bool, complete: bool) -> list[tuple[str, str | None, str]]:
    """One row's samples: (family, its ``kind`` label or None, value)."""
    values = row.total.metrics()
    samples = [(metric.family, metric.kind, str(values[metric.name]))
               for metric in shown_metrics(batch) if metric.family is not None and values[metric.name] is not None]
    return samples + [("maas_usage_period_start_timestamp_seconds", None, prometheus_seconds(row.period.start_ms)),
                      ("maas_usage_period_end_timestamp_seconds", None, prometheus_seconds(row.period.end_ms)),
                      ("maas_usage_complete", None, "1" if complete else "0")]


def render_prometheus(report: Report) -> str:
    """The text exposition format (0.0.4) for node_exporter's textfile collector: gauges, one
    sample per row and metric, no timestamps (rows are never time buckets here)."""
    families: dict[str, list[str]] = {name: [] for name in PROMETHEUS_HELP}
    for family, pairs, value in _prometheus_series(report):
        text = ",".join(f'{name}="{prometheus_label_value(v)}"' for name, v in pairs)
        families[family].append(f"{family}{{{text}}} {value}")
    lines = []
    for family, samples in families.items():
        if samples:
            lines += [f"# HELP {family} {PROMETHEUS_HELP[family]}", f"# TYPE {family} gauge", *samples]
    return "\n".join(lines) + "\n"

def render_plan(query: Query, project_id: str | None, endpoints: Mapping[str, Endpoint], rows: Sequence[Row],
                coverage: Coverage, output_format: str, previous: Sequence[Row] = (),
                first: Sequence[dict[str, Any]] = ()) -> str:
    """The planned requests: ``first`` (planned calls), the current period's, then (--compare) the previous
    period's."""
    requests = [*first, *(window.call.planned(endpoints[window.call.endpoint], project_id, window.body)
                          for _, window in windows_of([*rows, *previous]))]
    if output_format == "json":
        document = {"schema_version": 1, "dry_run": True, **{k: v for k, v in _header(query, project_id).items()
                                                            if k in ("region", "project_id", "timezone", "period")},
                    "coverage": _json_coverage(coverage, query.zone)}
        if query.previous is not None:
            document["previous"] = {"period": _json_period(query.previous, query.zone)}
        document["requests"] = requests
        return json_document(document, indent=2) + "\n"
    return "".join(f"{request['method']} {request['url']}"
                   + ("" if request["body"] is None else " " + json_document(request["body"], separators=(",", ":")))
                   + "\n" for request in requests)


@dataclass(frozen=True)
class OutputFormat:
    """One --format: its renderer and the output options it takes (any other is a usage error)."""

    name: str
    render: Callable[[Report, Any], str]  # (report, OutputOptions) -> the text for stdout
    options: tuple[str, ...]


FORMATS = {output_format.name: output_format for output_format in (
    OutputFormat("table", lambda report, out: render_table(report, out.table_format, out.raw, out.chart),
                 ("--table-format", "--raw", "--chart")),
    OutputFormat("json", lambda report, out: render_json(report, out.raw), ("--raw",)),
    OutputFormat("csv", lambda report, out: render_csv(report, out.header), ("--no-header",)),
    OutputFormat("prometheus", lambda report, out: render_prometheus(report), ()),
)}


def in_words(names: Sequence[str], last: str = "and") -> str:
    """``hour, day, week and month``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


# ----------------------------------------------------------------------------------------------
# First contact: --check
# ----------------------------------------------------------------------------------------------

CLOCK_WARN = timedelta(minutes=1)  # signatures still pass, but a clock this far off is drifting
CLOCK_LIMIT = timedelta(minutes=15)  # API Gateway rejects a signature whose X-Sdk-Date is further off
ENDPOINT_STEPS = {"maas": "MaaS endpoint", "iam": "IAM endpoint", "ces": "Cloud Eye endpoint"}
SIGNATURE_HINT = ("API Gateway rejected the signature: check that the AK and SK belong together and are active, "
                  "that a temporary AK comes with its security token, and this machine's clock; the check signs "
                  f"nothing more (a key is locked for 5 minutes after more than {SIGNATURE_LOCKOUT} failed "
                  "signatures)")
NETWORK_HINT = "check the network, a firewall, HTTPS_PROXY/NO_PROXY, or raise --timeout"


@dataclass(frozen=True)
class CheckStep:
    """One line of the checklist. A FAIL carries the exit code of its kind: 1 network or API,
    3 credentials (missing, rejected by a 401 or 403, or a clock that makes every signature fail)."""

    step: str
    status: str  # "ok", "warn", "FAIL" or "skip" (its premise failed, or it is not needed)
    detail: str
    hint: str | None = None
    exit_code: int = EXIT_OK

    @property
    def passed(self) -> bool:
        return self.status in ("ok", "warn")


class ChecklistFailed(ToolError):
    """A step of --check failed: the checklist is still the result on stdout."""

    def __init__(self, steps: Sequence[CheckStep], output: str) -> None:
        failed = [step for step in steps if step.status == "FAIL"]
        super().__init__(f"--check: {len(failed)} step(s) failed, the first: {failed[0].step}",
                         hint="the checklist on stdout says what to do")
        self.exit_code = failed[0].exit_code
        self.output = output


def check_account(settings: Settings, env: Mapping[str, str], clock: Clock, console: Console) -> str:
    """--check: credentials, endpoints, clock, signature and project, permission, Cloud Eye. Each
    step sends at most one request (no retries, no fan-out) and runs only when its premise holds;
    nothing is signed after a 401. The checklist, or ChecklistFailed carrying it."""
    timeout = settings.client.timeout
    credentials_step, credentials = check_credentials(settings, env, clock)
    if credentials is not None:
        console.hide(credentials.secrets())
    steps = [credentials_step]
    given = settings.project_id or (credentials.project_id if credentials is not None else None)
    endpoints = {"maas": settings.maas, "iam": None if given else settings.iam, "ces": settings.ces}
    session = new_session(env)
    try:
        probed: dict[str, CheckStep] = {}
        checked = {name: check_endpoint(ENDPOINT_STEPS[name], endpoint, probed, session, env, timeout)
                   for name, endpoint in endpoints.items()}
        steps += checked.values()
        reachable = {name: endpoints[name] is not None and step.passed for name, step in checked.items()}
        # The host the first signature goes to: its clock is the one that judges it.
        timed = next((endpoints[name] for name in ("iam", "maas", "ces") if reachable[name]), None)
        clock_step, skew = check_clock(timed, session, env, timeout, clock)
    finally:
        session.close()
    steps.append(clock_step)
    blocked = ("no credentials (see the credentials step)" if credentials is None else
               "this machine's clock is more than 15 minutes off: every signature would be rejected"
               if skew is not None and abs(skew) > CLOCK_LIMIT else None)
    steps += signed_checks(settings, credentials, reachable, blocked, env, clock, console)
    output = render_checklist(steps, settings.output.format, credentials.secrets() if credentials is not None else ())
    if any(step.status == "FAIL" for step in steps):
        raise ChecklistFailed(steps, output)
    return output


def check_credentials(settings: Settings, env: Mapping[str, str],
                      clock: Clock) -> tuple[CheckStep, Credentials | None]:
    """Step 1: which source the keys come from (never a value) and, for a file, its permissions."""
    try:
        credentials = load_credentials(settings.credentials_file, env, clock)
    except CredentialsError as exc:
        return CheckStep("credentials", "FAIL", str(exc), exc.hint, exc.exit_code), None
    detail = credentials.source
    if credentials.path is not None and settings.credentials_file is None:
        detail += f" (the SDK profile{', from ' + PROFILE_ENV if env.get(PROFILE_ENV) else ''})"
    if credentials.security_token:
        detail += ", with a security token"
    if credentials.project_id:
        detail += ", with a project_id"
    if credentials.path is None:
        return CheckStep("credentials", "ok", detail), credentials
    try:
        mode = os.stat(credentials.path).st_mode
    except OSError:  # a pipe that is gone once read
        return CheckStep("credentials", "ok", detail), credentials
    detail += f", mode {stat.S_IMODE(mode):04o}" if stat.S_ISREG(mode) else ", a pipe"
    warning = file_permission_warning(credentials.path) if stat.S_ISREG(mode) else None
    if warning:
        return CheckStep("credentials", "warn", f"{detail}: readable by other users",
                         f"run: chmod 600 {credentials.path}"), credentials
    return CheckStep("credentials", "ok", detail), credentials


def within(seconds: float, task: Callable[[], Any]) -> Any:
    """``task()``, or TimeoutError after ``seconds``: name resolution has no timeout of its own, and
    a handshake's per-read timeout does not bound it as a whole. The task runs in a daemon thread
    (left behind on a timeout); the wait wakes often, so Ctrl-C still ends it."""
    import queue

    finished: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()

    def work(ready: Callable[[], None]) -> None:
        ready()
        try:
            finished.put((task(), None))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            finished.put((None, exc))

    try:
        start_thread(work, "a probe thread")
    except ApiError:  # no thread to be had: run it here, bounded by the socket timeouts only
        return task()
    deadline = time.monotonic() + seconds
    while True:
        try:
            value, failure = finished.get(timeout=min(SIGNAL_CHECK_INTERVAL, max(deadline - time.monotonic(), 0.001)))
            break
        except queue.Empty:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
    if failure is not None:
        raise failure
    return value


def check_endpoint(step: str, endpoint: Endpoint | None, probed: dict[str, CheckStep], session: Any,
                   env: Mapping[str, str], timeout: float) -> CheckStep:
    """Step 2, for one endpoint: its URL and source, DNS and a verified TLS handshake (once a host)."""
    if endpoint is None:
        return CheckStep(step, "skip", "not used: the project id is given, so IAM is not asked")
    where = f"{endpoint.url('')} ({endpoint.source})"
    proxy = proxy_for(endpoint, env)
    host = f"{endpoint.scheme}://{endpoint.netloc} {proxy}"
    earlier = probed.get(host)
    if earlier is not None:
        return dataclasses.replace(earlier, step=step, detail=f"{where}: the same host as the {earlier.step}",
                                   hint=earlier.hint and f"see the {earlier.step}")
    phase = ["DNS"]
    try:
        found = within(timeout, lambda: probe_host(endpoint, proxy, session, timeout, phase))
    except Exception as exc:  # every failure of a probe is reported, none raised
        detail, hint = describe_probe_failure(exc, timeout, endpoint)
        result = CheckStep(step, "FAIL", f"{where}: {phase[0]}: {detail}", hint, EXIT_API)
    else:
        result = CheckStep(step, "ok", f"{where}: {found}")
    probed[host] = result
    return result


def probe_host(endpoint: Endpoint, proxy: str | None, session: Any, timeout: float, phase: list[str]) -> str:
    """Resolve the host (unless a proxy does) and complete a verified TLS handshake, sending no
    request; the connection is left in the session's pool for the clock step. ``phase[0]`` tells
    which part a failure or a timeout happened in."""
    import socket

    import requests
    import urllib3

    if proxy is None:
        port = int(endpoint.address.rsplit(":", 1)[1])
        addresses = list(dict.fromkeys(info[4][0] for info in
                                       socket.getaddrinfo(endpoint.host, port, type=socket.SOCK_STREAM)))
        found = f"resolves to {', '.join(addresses[:3])}"
    else:
        found = f"through the proxy {urlsplit(proxy if '://' in proxy else 'http://' + proxy).hostname}"
    if endpoint.scheme != "https":
        return found + "; plain HTTP (a loopback host), no TLS"
    phase[0] = "TLS"
    prepared = requests.Request("GET", endpoint.url("/")).prepare()
    pool = session.get_adapter(prepared.url).get_connection_with_tls_context(
        prepared, session.verify, {"https": proxy} if proxy else {})
    slots = pool_slots(pool)
    if slots is None:
        return found + "; TLS not tested (this urllib3 has no pool slots to open a connection with)"
    get, put = slots
    connection = get(timeout=timeout)
    try:
        connection.timeout = timeout
        connection.connect()
        version = getattr(connection.sock, "version", lambda: None)() or "TLS"
    except BaseException as exc:
        connection.close()
        if isinstance(exc, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)):
            phase[0] = "TCP"  # urllib3 raises these from the socket's connect, before any TLS
        raise
    finally:
        put(connection)
    return f"{found}; {version}, certificate verified"


def describe_probe_failure(exc: Exception, timeout: float, endpoint: Endpoint) -> tuple[str, str]:
    """What went wrong below HTTP in a probe, read as a run reads it (describe_network_error), and
    what to do."""
    problem = describe_network_error(exc, timeout)
    hints = {"the host name cannot be resolved": f"check the host name ({endpoint.source}) and this machine's DNS",
             "connection refused": f"check the port in the URL; {NETWORK_HINT}"}
    return problem.text, problem.hint or hints.get(problem.text, NETWORK_HINT)


def check_clock(endpoint: Endpoint | None, session: Any, env: Mapping[str, str], timeout: float,
                clock: Clock) -> tuple[CheckStep, timedelta | None]:
    """Step 3: this machine's clock against the server's ``Date``, from one unsigned GET of the
    endpoint's root (API Gateway answers it, 404 or not, before any authentication)."""
    from email.utils import parsedate_to_datetime

    if endpoint is None:
        return CheckStep("clock", "skip", "no endpoint could be reached"), None
    proxy = proxy_for(endpoint, env)

    def ask() -> Any:
        response = session.get(endpoint.url("/"), timeout=timeout, allow_redirects=False, stream=True,
                               proxies={"https": proxy} if proxy else {})
        response.close()
        return response

    sent = clock.wall()
    try:
        response = within(timeout, ask)
    except Exception as exc:  # reported as the step's failure
        detail, hint = describe_probe_failure(exc, timeout, endpoint)
        return CheckStep("clock", "FAIL", f"GET {endpoint.url('/')}: {detail}", hint, EXIT_API), None
    received = clock.wall()
    try:
        server = parsedate_to_datetime(response.headers.get("Date", ""))
    except (TypeError, ValueError, IndexError):
        server = None
    if server is None or server.tzinfo is None:
        return CheckStep("clock", "warn", f"{endpoint.host} sent no usable Date header: the skew is unknown",
                         "make sure this machine's clock follows NTP"), None
    # Date is whole seconds, cut down: its middle is half a second on; ours, the middle of the exchange.
    skew = server + timedelta(seconds=0.5) - (sent + (received - sent) / 2)
    seconds = round(abs(skew).total_seconds())
    if seconds < 2:
        return CheckStep("clock", "ok", f"in step with {endpoint.host}'s Date (within 2 s)"), skew
    side = "behind" if skew > timedelta(0) else "ahead of"
    detail = f"this machine is {format_duration(seconds)} {side} {endpoint.host}'s Date"
    if abs(skew) > CLOCK_LIMIT:
        return CheckStep("clock", "FAIL", f"{detail}: more than 15 minutes off, so every signature is rejected",
                         "set the clock right (NTP: timedatectl set-ntp true); signed requests expire after "
                         "15 minutes", EXIT_CREDENTIALS), skew
    if abs(skew) > CLOCK_WARN:
        return CheckStep("clock", "warn", f"{detail}: signatures still pass (up to 15 minutes)",
                         "set the clock right (NTP: timedatectl set-ntp true) before it drifts further"), skew
    return CheckStep("clock", "ok", detail), skew


def signed_checks(settings: Settings, credentials: Credentials | None, reachable: Mapping[str, bool],
                  blocked: str | None, env: Mapping[str, str], clock: Clock, console: Console) -> list[CheckStep]:
    """Steps 4 to 6, in order, one signed request each at most; nothing is signed after a 401."""
    later = (("permission", "maas", check_permission), ("Cloud Eye metrics", "ces", check_cloud_eye))
    if credentials is None or blocked is not None:
        names = ("signature and project", *(name for name, _, _ in later))
        return [CheckStep(name, "skip", blocked or "no credentials") for name in names]
    client = Client(credentials, dataclasses.replace(settings.client, retries=0), console, clock, env)
    try:
        step, project_id = check_project(settings, credentials, client, reachable["iam"])
        steps = [step]
        for name, endpoint, check in later:
            premise = ("nothing more is signed after a rejected signature"
                       if any(signature_rejected(earlier) for earlier in steps) else
                       "no project id (see the signature and project step)" if project_id is None else
                       f"the {ENDPOINT_STEPS[endpoint]} cannot be reached" if not reachable[endpoint] else None)
            steps.append(CheckStep(name, "skip", premise) if premise else
                         check(name, settings, client, project_id, clock))
        return steps
    finally:
        client.close()


def signature_rejected(step: CheckStep) -> bool:
    return step.status == "FAIL" and step.hint == SIGNATURE_HINT


def call_failure(step: str, exc: ToolError, hints: Mapping[int, str]) -> CheckStep:
    """A failed call as a FAIL line: its message, and the hint for its HTTP status (a 401 is the
    signature's, unless ``hints`` knows better), else the error's own."""
    match = re.search(r" failed: HTTP (\d{3})\b", str(exc))  # the contract's "<call> failed: HTTP <status>"
    status = int(match.group(1)) if match else None
    hint = hints.get(status) if status in hints else SIGNATURE_HINT if status == 401 else exc.hint
    return CheckStep(step, "FAIL", str(exc), hint or "run again with -v to log the exchange; its X-Request-Id "
                                                     "helps Huawei Cloud support", exc.exit_code)


def check_project(settings: Settings, credentials: Credentials, client: Client,
                  iam_reachable: bool) -> tuple[CheckStep, str | None]:
    """Step 4: the given project id, else the IAM lookup (the first signed request)."""
    step, region = "signature and project", settings.query.region
    try:
        project_id = resolve_project_id(settings.project_id, credentials, None)
    except CredentialsError as exc:
        return CheckStep(step, "FAIL", str(exc), "correct project_id in the credentials file, or pass --project-id",
                         exc.exit_code), None
    if project_id is not None:
        origin = "the credentials file's" if settings.project_id is None else "the given"
        return CheckStep(step, "ok", f"{origin} project id {project_id}: IAM is not asked, so the next step "
                                     "tests the signature"), project_id
    if not iam_reachable:
        return CheckStep(step, "skip", "the IAM endpoint cannot be reached"), None
    try:
        project_id = lookup_project_id(client, settings.iam, region)
    except ToolError as exc:
        return call_failure(step, exc, {403: f"the key lacks {IAM_PERMISSION}: grant it, or pass --project-id "
                                             "(the console lists project ids under My Credentials)"}), None
    return CheckStep(step, "ok", f"IAM accepted the signature; project {project_id} is named {region}"), project_id


def check_permission(step: str, settings: Settings, client: Client, project_id: str, clock: Clock) -> CheckStep:
    """Step 5: one ShowStatistics request for the last hour (preset services, real time)."""
    end = clock.now
    body = {"service_type": DEFAULT_SERVICE_TYPE, "start_time": to_epoch_ms(end - timedelta(hours=1)),
            "end_time": to_epoch_ms(end), "timezone": settings.query.zone_name, "infer_type": "real_time"}
    try:
        usage = SHOW_STATISTICS.answer(client, settings.maas, project_id, "the last hour", body)[1]
    except ToolError as exc:
        return call_failure(step, exc, {
            403: f"the key lacks {MAAS_PERMISSION}: grant it to the IAM user (or its group)",
            404: f"the project id may not belong to {settings.query.region}: check --region and the project id"})
    metrics = usage.metrics()
    return CheckStep(step, "ok", f"ShowStatistics for the last hour ({SERVICE_NAMES[DEFAULT_SERVICE_TYPE]}): "
                                 f"{metrics['total_requests']:,} requests, {metrics['total_tokens']:,} tokens "
                                 f"({MAAS_PERMISSION})")


def check_cloud_eye(step: str, settings: Settings, client: Client, project_id: str, clock: Clock) -> CheckStep:
    """Step 6: one ListMetrics call for SYS.MaaS: the metrics and model services Cloud Eye lists."""
    permission = ("the key lacks ces:metrics:list (CES ReadOnlyAccess has it): Cloud Eye's rows per model "
                  "and per API key need it")
    try:
        found = LIST_METRICS.answer(client, settings.ces, project_id, CES_NAMESPACE,
                                    params=(("namespace", CES_NAMESPACE), ("limit", str(CES_LIST_LIMIT))))[1]
    except ToolError as exc:
        # After a signature that passed, a 401 from Cloud Eye is its permission rather than the key's.
        return call_failure(step, exc, {403: permission, **({401: permission} if client.warm else {})})
    if not found.metrics:
        return CheckStep(step, "warn", f"ListMetrics lists no {CES_NAMESPACE} metrics yet: Cloud Eye lists a "
                                       "model service once it has been called",
                         "call a model (a preset service or one of My Services), then check again")
    paged = found.total > found.metrics  # one page only: the model services on it, at least
    shown = f"{found.metrics} of {found.total}" if paged else f"{found.metrics}"
    return CheckStep(step, "ok", f"ListMetrics for {CES_NAMESPACE}: {shown} metrics, {'at least ' if paged else ''}"
                                 f"{len(found.models)} model service(s) (ces:metrics:list)")


def render_checklist(steps: Sequence[CheckStep], output_format: str, secrets: Iterable[str] = ()) -> str:
    """The checklist: aligned lines (status, step, detail; a hint line under a step that has one), or JSON.
    Details and hints hold outside text (server messages, paths, host names): masked and escaped here."""
    secrets = tuple(secrets)

    def shown(text: str) -> str:
        return printable(redact(text, secrets), 1000)

    if output_format == "json":
        document = {"schema_version": 1,
                    "check": [{"step": step.step, "status": step.status, "detail": shown(step.detail),
                               "hint": None if step.hint is None else shown(step.hint)} for step in steps],
                    "ok": not any(step.status == "FAIL" for step in steps)}
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    width = max(display_width(step.step) for step in steps)
    lines = []
    for step in steps:
        lines.append(f"{step.status:<4}  {padded(step.step, width)}  {shown(step.detail)}".rstrip())
        if step.hint:
            lines.append(" " * (width + 8) + f"hint: {shown(step.hint)}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  %(prog)s --from 2026-05-08 --to 2026-05-21          # May 8 up to (not including) May 21
  %(prog)s --from 2026-05-01 --until 2026-05-19       # May 1 to May 19, both included
  %(prog)s --last 30d --service-type all --format json
  %(prog)s --this-month --group-by day --format csv
  %(prog)s --last-week --timezone Europe/Berlin       # the whole previous Monday-to-Monday week
  %(prog)s --yesterday --group-by hour                # a row per local clock hour (23 or 25 on DST days)
  %(prog)s --from yesterday --to today --timezone Asia/Shanghai --format csv --no-header >> usage.csv
  %(prog)s --from 2026-11-24T07:15:28+08:00 --format json  # from where the last JSON period ended
  %(prog)s --last 24h --timezone asia/shanghai       # zone names in any case; sent as Asia/Shanghai
  %(prog)s --last 7d --dry-run                        # show the requests, send nothing
  %(prog)s --check                                    # first contact: keys, endpoints, clock, permissions
  %(prog)s --store ~/.local/share/maas/usage.db --record --timezone Asia/Shanghai -q   # nightly, after 03:00
  %(prog)s --last 24h --format prometheus --output /var/lib/node_exporter/textfile/maas.prom -q
  %(prog)s --this-month --budget 130M --fail-over 90 -q   # exit 4 when the month's pace reaches 90 %%
  %(prog)s --this-month --group-by model --prices prices.csv   # estimated cost per model (the bill decides)

credentials, the first found: --credentials-file, HW_ACCESS_KEY/HW_SECRET_KEY[/HW_SECURITY_TOKEN],
  HUAWEICLOUD_SDK_AK/SK[/SECURITY_TOKEN], the SDK profile (HUAWEICLOUD_SDK_CREDENTIALS_FILE or
  ~/.huaweicloud/credentials). Keys are never accepted on the command line and never printed.
exit codes: 0 success; 1 API or network failure, a malformed answer, or a result that could not be
  written; 2 usage error (or a package this Python lacks); 3 credentials missing or rejected;
  4 --fail-over: the budget share was reached (the result is printed in full); 130 Ctrl-C, 143 SIGTERM,
  129 SIGHUP (each ends the run with stdout empty).
"""


class ParserExit(Exception):
    """argparse finished the run itself (--help, --version): what it printed, and its status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status)
        self.status, self.text = status, text


class _Parser(argparse.ArgumentParser):
    """argparse that neither prints nor exits: main writes the text to its own stdout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._printed: list[str] = []

    def error(self, message: str) -> Any:  # argparse's own exit would skip our error format
        raise UsageError(message, hint=f"see {self.prog} --help")

    def _print_message(self, message: str, file: Any = None) -> None:
        self._printed.append(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise ParserExit(status, "".join(self._printed) + (message or ""))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="maas_rest_usage_stats.py",
        description="Report Huawei Cloud MaaS token, request and error totals for a time range, "
                    "exactly as the console counts them (ShowStatistics API).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)  # an abbreviation saved in a cron line must not change meaning later
    when = parser.add_argument_group("time range (default: the last 7 days)")
    when.add_argument("--from", dest="start", metavar="WHEN",
                      help="start: YYYY-MM-DD, YYYYMMDD, 'YYYY-MM-DD HH:MM[:SS[.fff]]' (local time), an ISO 8601 "
                           "instant with an offset or Z (2026-11-24T07:15:28+08:00, such as a JSON period.end), "
                           "now, today or yesterday; not before 1970-01-01 UTC")
    when.add_argument("--to", metavar="WHEN", help="end, exclusive (default now; clamped to now)")
    when.add_argument("--until", metavar="DATE", help="last day included (YYYY-MM-DD, YYYYMMDD, today, yesterday)")
    when.add_argument("--last", metavar="N{d,h}",
                      help=f"rolling window ending now: 7d, 30d, 24h … (at most {MAX_LAST_DAYS}d)")
    for preset in PRESETS.values():  # one range at a time: FLAG_RULES refuses two
        when.add_argument(f"--{preset.name}", dest="presets", action="append_const", const=preset.name,
                          help=preset.help)
    when.add_argument("--compare", action="store_true",
                      help="also report the previous period (the unit before a preset, else the same length "
                           "just before) with the change")
    when.add_argument("--timezone", metavar="IANA",
                      help="IANA time zone, any case (asia/shanghai is sent as Asia/Shanghai); UTC offsets "
                           "(+08:00: use Etc/GMT-8), abbreviations (CST) and non-zones (localtime, posix/…) are "
                           "refused with the zones meant. Default: the OS zone (a POSIX TZ rule such as CST-8 "
                           "becomes Etc/GMT-8, with a note), else UTC")

    what = parser.add_argument_group("query")
    what.add_argument("--region", default=DEFAULT_REGION,
                      help=f"region id (default {DEFAULT_REGION}); ShowStatistics is documented in "
                           + " and ".join(STATISTICS_REGIONS) + ", others get a note")
    # List flags add up when repeated (--api-keys a --api-keys b): argparse's default keeps the last only.
    what.add_argument("--service-type", nargs="+", action="extend", metavar="T",
                      help="1/my, 2/preset (default), 4/custom, or all (default with --group-by service-type); "
                           "repeatable")
    what.add_argument("--infer-type", choices=INFER_TYPES, default="real_time", help="default real_time")
    what.add_argument("--api-keys", nargs="*", action="extend", metavar="KEY",
                      help='API-key labels to filter by; "" means online-experience calls; '
                           'no KEY at all means all keys; repeatable')
    what.add_argument("--ips", nargs="+", action="extend", metavar="IP",
                      help="caller IP addresses to filter by; repeatable")
    what.add_argument("--project-id", metavar="ID",
                      help="project id (default: HW_PROJECT_ID or HUAWEICLOUD_SDK_PROJECT_ID, the credentials "
                           "file's project_id, else looked up in IAM)")
    what.add_argument("--credentials-file", metavar="PATH", help="file with the AK/SK (see README)")
    what.add_argument("--endpoint", metavar="URL",
                      help="MaaS base URL (env HW_MAAS_ENDPOINT, else HUAWEICLOUD_SDK_REGION_MODELARTS_{REGION}; "
                           "default https://modelarts.{region}.myhuaweicloud.com, .cn for ap-southeast-1)")
    what.add_argument("--iam-endpoint", metavar="URL",
                      help="IAM base URL (env HW_IAM_ENDPOINT, else HUAWEICLOUD_SDK_REGION_IAM_{REGION}; "
                           "default https://iam.{region}.myhuaweicloud.com)")
    what.add_argument("--ces-endpoint", metavar="URL",
                      help="Cloud Eye base URL (env HW_CES_ENDPOINT, else HUAWEICLOUD_SDK_REGION_CES_{REGION}; "
                           "default https://ces.{region}.myhuaweicloud.com)")
    what.add_argument("--monitor-endpoint", metavar="URL",
                      help="MaaS monitor base URL for model and key names (env HW_MAAS_MONITOR_ENDPOINT; "
                           "default https://maas.{region}.myhuaweicloud.com)")
    what.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds for each attempt as a whole: connect, TLS, headers, body (default 30)")
    what.add_argument("--retries", type=int, default=3, metavar="N", help="retries after HTTP 429, 500, 502, 503, 504 and network errors (default 3)")
    what.add_argument("--concurrency", type=int, default=MAX_CONCURRENCY, metavar="N",
                      help=f"requests in flight, 1-{MAX_CONCURRENCY} (default {MAX_CONCURRENCY})")
    what.add_argument("--max-requests", type=int, default=MAX_REQUESTS, metavar="N",
                      help=f"refuse a query that needs more than N requests (default {MAX_REQUESTS}: about "
                           f"{format_duration(pacing_seconds(MAX_REQUESTS))} at the API's {RATE_LIMIT}/min), "
                           "dry runs included; counted before anything is sent")

    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=tuple(FORMAT_OPTIONS), default="table",
                     help="table (default; a Filters: line names the key, IP and batch filters in effect), "
                          "json for scripts and agents, csv for spreadsheets and cron, prometheus for "
                          "node_exporter's textfile collector (no time buckets)")
    out.add_argument("--group-by", nargs="+", action="extend", metavar="BY",
                     help="rows per hour (local clock hours, always fetched live), day, week or month, "
                          "and/or per service-type, api-key (the labels of --api-keys; without it, each key "
                          "from Cloud Eye), model (from Cloud Eye); repeatable")
    out.add_argument("--table-format", metavar="STYLE", help="a tabulate style (grid, github, plain …)")
    out.add_argument("--chart", action="store_true",
                     help=f"tables with --group-by {in_words(list(UNITS), 'or')}: "
                          "a bar chart of total tokens per row "
                          "after the grouped table (eighth blocks on UTF-8 output, else #)")
    out.add_argument("--no-header", action="store_true", help="CSV without its header line")
    out.add_argument("--raw", action="store_true", help="also show each window's raw API response")
    out.add_argument("--output", metavar="PATH",
                     help="write the result to PATH instead of stdout, atomically (a reader never sees half a "
                          "file; a failed run leaves the old file); PATH is a regular file or absent, never a "
                          "symlink, device or pipe; keeps the old file's mode, owner and group")
    out.add_argument("--dry-run", action="store_true", help="print the planned requests; send nothing")
    out.add_argument("--check", action="store_true",
                     help="first contact: test the credentials, endpoints (DNS, TLS), clock, signature and project, "
                          "the ShowStatistics permission and Cloud Eye, one line per step (table or json); at most "
                          "one request a step")
    out.add_argument("-v", "--verbose", action="store_true", help="log each HTTP exchange on stderr")
    out.add_argument("-q", "--quiet", action="store_true", help="no notes or progress on stderr")
    out.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    money = parser.add_argument_group("budget and estimated cost")
    money.add_argument("--budget", metavar="N",
                       help="a token budget (K, M, B suffixes: 130M): the share used, and for --today, --this-week "
                            "and --this-month the projection to the period's end at its pace so far")
    money.add_argument("--fail-over", metavar="PCT",
                       help="with --budget: exit 4 (the result still printed) when the projected share, else the "
                            "used share, reaches PCT percent (90, 100, 87.5)")
    money.add_argument("--prices", metavar="FILE",
                       help="CSV model,input,output,per,currency (per 1000 or 1000000 tokens; model * for every "
                            "other model): estimated cost per --group-by model row and in total")

    keep = parser.add_argument_group("history store (MaaS keeps 30 days; a store keeps final days for good)")
    keep.add_argument("--store", metavar="PATH", help="SQLite file of final daily totals (env MAAS_USAGE_STORE)")
    keep.add_argument("--record", action="store_true",
                      help="fetch and save the range's whole final days (default: the last 30 days)")
    return parser


def parse_service_types(values: Sequence[str] | None, split_by_type: bool = False) -> tuple[int, ...]:
    """The service types asked for. Without --service-type: Preset Service, or all three when rows
    are split by type (a split into one row would be a silent no-op)."""
    if values is None:
        return tuple(SERVICE_NAMES) if split_by_type else (DEFAULT_SERVICE_TYPE,)
    types: set[int] = set()
    for value in values:
        word = value.strip().lower()
        if word == "all":
            types.update(SERVICE_NAMES)
        elif word == "3":
            raise UsageError("service type 3 is not accepted by the API: Custom Endpoint is 4",
                             hint="use --service-type 4 (or custom)")
        elif word in SERVICE_ALIASES:
            types.add(SERVICE_ALIASES[word])
        else:
            raise UsageError(f"unknown service type {value!r}",
                             hint="use 1/my, 2/preset, 4/custom or all")
    return tuple(sorted(types))


def parse_ips(values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    import ipaddress

    ips = []
    for value in values:
        try:
            ips.append(str(ipaddress.ip_address(value.strip())))
        except ValueError:
            raise UsageError(f"--ips: {value!r} is not an IP address") from None
    return tuple(dict.fromkeys(ips))


def parse_group_by(values: Sequence[str] | None,
                   api_keys: tuple[str, ...] | None) -> tuple[str | None, bool, bool]:
    """The time bucket (or None), whether rows are split by key, and whether by service type."""
    if not values:
        return None, False, False
    choices = tuple(dict.fromkeys((*UNITS, *(grouping.name for grouping in GROUPINGS if grouping is not TIME_BUCKET))))
    words = group_by_words(values)
    for word in words:
        if word not in choices:
            raise UsageError(f"--group-by: unknown grouping {word!r}", hint=f"choose from {', '.join(choices)}")
    units = [w for w in dict.fromkeys(words) if w in UNITS]
    if len(units) > 1:
        raise UsageError(f"--group-by takes at most one of {in_words(list(UNITS))}, not {' and '.join(units)}")
    by_key = "api-key" in words
    if by_key and api_keys == ():  # without --api-keys: Cloud Eye's keys (cloud_eye_query)
        bare = "a bare --api-keys means all keys: " if api_keys == () else ""
        raise UsageError(f"{bare}--group-by api-key needs the keys to split by: --api-keys KEY [KEY …]")
    return (units[0] if units else None), by_key, "service-type" in words


PATH_OPTIONS = ("credentials_file", "store", "output")  # opened as given, whatever bytes name them
PROXY_ENVS = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # how Python hands over bytes that are not UTF-8 (surrogateescape)


def check_text_inputs(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Bytes that are not UTF-8 in an option or in an environment value read as text are a usage error
    naming it: such text could neither be sent nor printed. Paths are opened as given (a TZ that is no
    zone is ignored with a note; keys are the credentials loader's to refuse, without showing them)."""
    for dest, value in vars(args).items():
        for text in value if isinstance(value, list) else [value]:
            if dest not in PATH_OPTIONS and isinstance(text, str) and _UNDECODABLE.search(text):
                option = "--from" if dest == "start" else "--" + dest.replace("_", "-")
                raise UsageError(f"{option}: {printable(text, 60)} is not UTF-8 text", hint="give it in UTF-8")
    for name in (*(PROJECT_ENVS if args.project_id is None else ()), *PROXY_ENVS):
        if _UNDECODABLE.search(env.get(name, "")):
            raise UsageError(f"the environment variable {name} is not UTF-8 text: {printable(env[name], 60)}",
                             hint=f"set {name} in UTF-8, or unset it")


def check_release_clock(now: datetime) -> None:
    """A system clock before this script's release cannot be right: say so, rather than let the range
    it gives (or the signatures, which the API rejects after 15 minutes of skew) take the blame."""
    if now < RELEASE_DATE:
        raise UsageError(f"the system clock says {format_instant(now.astimezone(timezone.utc))} UTC, before this "
                         f"script was released ({RELEASE_DATE.date()}): it cannot be right",
                         hint="set the system clock (for example with NTP: timedatectl set-ntp true), then run again")


def group_by_words(values: Sequence[str] | None) -> list[str]:
    """--group-by's words: ``day service-type`` and ``day,service-type`` alike, in any case."""
    return [w.strip().lower() for value in values or () for w in value.split(",") if w.strip()]


def check_table_format(name: str | None) -> None:
    if name is None or lacking_packages(("tabulate",)):  # without tabulate, the run says so before a table
        return
    import tabulate  # only when a style is named

    if name not in tabulate.tabulate_formats:
        raise UsageError(f"unknown --table-format {name!r}",
                         hint="choose from " + ", ".join(tabulate.tabulate_formats))


# Which output options each format takes; any other combination is a usage error.
FORMAT_OPTIONS = {name: output_format.options for name, output_format in FORMATS.items()}


@dataclass(frozen=True)
class Excludes:
    """``flag`` cannot be given with any of ``others``; the message may name the first one given as {other}."""

    flag: str
    others: tuple[str, ...]
    message: str
    hint: str | None = None

    def broken_by(self, given: Sequence[str]) -> str | None:
        others = [other for other in self.others if other in given]
        return self.message.format(other=others[0]) if self.flag in given and others else None


@dataclass(frozen=True)
class Needs:
    """``flag`` needs one of ``others``."""

    flag: str
    others: tuple[str, ...]
    message: str
    hint: str | None = None

    def broken_by(self, given: Sequence[str]) -> str | None:
        return self.message if self.flag in given and not set(self.others) & set(given) else None


@dataclass(frozen=True)
class AtMostOne:
    """At most one of ``groups`` (the flags of a group count as one); the message names those given as {given}."""

    groups: tuple[tuple[str, ...], ...]
    message: str
    hint: str | None = None

    def broken_by(self, given: Sequence[str]) -> str | None:
        group_of = {flag: "/".join(group) for group in self.groups for flag in group}
        named = list(dict.fromkeys(group_of[flag] for flag in given if flag in group_of))
        return self.message.format(given=" and ".join(named)) if len(named) > 1 else None


def format_only_rules() -> list[Excludes]:
    """FORMAT_OPTIONS as rules: an output option with a format that does not take it."""
    options = dict.fromkeys(option for taken in FORMAT_OPTIONS.values() for option in taken)
    rules = []
    for option in options:
        takers = " and ".join(name for name, taken in FORMAT_OPTIONS.items() if option in taken)
        rules += [Excludes(option, (f"--format {name}",), f"{option} applies to --format {takers} only, not {name}")
                  for name, taken in FORMAT_OPTIONS.items() if option not in taken]
    return rules


# Prometheus samples carry no timestamps here (the textfile collector has none), so a series per time
# bucket would be wrong.
PROMETHEUS_BUCKETS = ("--format prometheus cannot be combined with {what}: the textfile collector has no "
                      "timestamps, so a series per {unit} would be wrong")
PROMETHEUS_HINT = "drop the time bucket, or use --format json or csv for rows per time bucket"
# Which flags exclude or need which, checked in this order before any value is read. Flags are named as
# flags_given names them: "--format csv", "--group-by day", and "--store" for the flag or MAAS_USAGE_STORE.
FLAG_RULES = (
    # --check tests the account with requests of its own: what shapes a query or its output would be ignored.
    Excludes("--check", ("--from", "--to", "--until", "--last", *(f"--{name}" for name in PRESETS), "--compare",
                         "--service-type", "--api-keys", "--ips", "--group-by", "--table-format", "--chart",
                         "--no-header", "--raw", "--output", "--dry-run", "--record", "--budget", "--fail-over",
                         "--prices",
                         *(f"--format {name}" for name in FORMATS if name not in ("table", "json"))),
             "--check cannot be combined with {other}",
             hint="--check prints a checklist in the table or json format; run the query on its own"),
    AtMostOne((("--from", "--to", "--until"), ("--last",), *((f"--{name}",) for name in PRESETS)),
              "{given} cannot be combined: choose one way to give the range"),
    Excludes("--to", ("--until",), "--to and --until cannot be combined (--to is exclusive, --until inclusive)"),
    *format_only_rules(),
    Excludes("--output", ("--no-header",), "--output always replaces its file: it cannot be combined with --no-header",
             hint="to append, leave out --output and use >> FILE"),
    Needs("--record", ("--store",), "--record needs a store: --store PATH or MAAS_USAGE_STORE"),
    Excludes("--record", tuple(f"--group-by {name}" for name, unit in UNITS.items() if unit is not DAY),
             "--record saves days: it cannot be combined with {other}"),
    Excludes("--format prometheus", ("--record",),
             PROMETHEUS_BUCKETS.format(what="--record (its result is per day)", unit="day"), PROMETHEUS_HINT),
    *(Excludes("--format prometheus", (f"--group-by {name}",),
               PROMETHEUS_BUCKETS.format(what=f"--group-by {name}", unit=name), PROMETHEUS_HINT) for name in UNITS),
    Excludes("--compare", ("--record", "--format prometheus"), "--compare cannot be combined with {other}",
             hint="compare in a table, JSON or CSV"),
    # Cloud Eye files calls by model and key only; the other filters are refused by cloud_eye_query, which
    # knows whether --group-by api-key reads Cloud Eye (it does without --api-keys).
    Excludes("--group-by model", ("--api-keys",), "--group-by model reads Cloud Eye, which cannot apply --api-keys",
             hint="group by model and api-key to see each key's share of each model"),
    Needs("--chart", (*(f"--group-by {name}" for name in UNITS), "--record"),
          "--chart draws a bar per time bucket: it needs --group-by " + " or ".join(UNITS)),
    Needs("--fail-over", ("--budget",), "--fail-over needs --budget: the share it fails over is the budget's",
          hint="--budget 130M --fail-over 90"),
)


def flags_given(args: argparse.Namespace, env: Mapping[str, str]) -> list[str]:
    """The flags given, as FLAG_RULES names them; the presets in command-line order."""
    given = [flag for flag, value in (("--from", args.start), ("--to", args.to), ("--until", args.until),
                                      ("--last", args.last)) if value]
    given += [f"--{name}" for name in dict.fromkeys(args.presets or ())]
    given += [flag for flag, value in (("--compare", args.compare), ("--record", args.record),
                                       ("--store", store_path(args, env)), ("--output", args.output),
                                       ("--table-format", args.table_format), ("--no-header", args.no_header),
                                       ("--raw", args.raw), ("--chart", args.chart), ("--check", args.check),
                                       ("--dry-run", args.dry_run), ("--service-type", args.service_type),
                                       ("--api-keys", args.api_keys is not None), ("--ips", args.ips),
                                       ("--group-by", args.group_by), ("--budget", args.budget),
                                       ("--fail-over", args.fail_over), ("--prices", args.prices)) if value]
    return [*given, f"--format {args.format}", *(f"--group-by {word}" for word in group_by_words(args.group_by))]


def check_flag_rules(given: Sequence[str]) -> None:
    """Refuse the first rule of FLAG_RULES that ``given`` breaks."""
    for rule in FLAG_RULES:
        message = rule.broken_by(given)
        if message is not None:
            raise UsageError(message, hint=rule.hint)


def output_refusal(path: str) -> str | None:
    """Why --output cannot replace ``path``, or None for a regular file or nothing. lstat: a symlink
    is refused, never followed (as root, one planted in a shared folder would aim the rename anywhere)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:  # nothing there, or a folder that is missing or unreadable: the write names it
        return None
    if stat.S_ISREG(mode):
        return None
    return f"--output {path} is {file_kind(mode)}, not a regular file"


def protected_files(settings: Settings, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The files --output must never replace, each with what it is: the store with its -wal and
    -shm, the credentials file (--credentials-file, else the SDK profile: named, never read here)
    and this script."""
    files = []
    if settings.store is not None:
        files += [(settings.store.path + suffix, f"the store's {suffix} file" if suffix else "the store")
                  for suffix in ("", "-wal", "-shm")]
    files += [(path, "the credentials file") for path in (settings.credentials_file, profile_path(env)) if path]
    return files + [(os.path.abspath(__file__), "this script")]


def check_output_target(settings: Settings, env: Mapping[str, str]) -> None:
    """--output's path, before anything is opened or sent: a regular file or nothing, and none of
    the run's own files (the same file by device and inode, or by path when it does not exist yet)."""
    path = settings.output.path
    if path is None:
        return
    refusal = output_refusal(path)
    if refusal is not None:
        raise UsageError(refusal, hint="--output replaces a regular file or creates one; for anything else "
                                       "leave out --output and redirect stdout")
    check_output_folder(path)
    try:
        found = os.lstat(path)
        target: tuple[int, int] | None = (found.st_dev, found.st_ino)
    except OSError:
        target = None
    resolved = os.path.realpath(path)
    for other, what in protected_files(settings, env):
        try:
            found = os.stat(other)
            same = (found.st_dev, found.st_ino) == target
        except (OSError, ValueError):
            same = False
        if same or os.path.realpath(other) == resolved:
            raise UsageError(f"--output {path} is {what} ({other}): the result would destroy it",
                             hint="choose another path for --output")


def check_output_folder(path: str) -> None:
    """--output's folder, found now rather than after the requests (a cron line would spend them):
    a path that names a folder, a folder that does not exist or is not one, are usage errors; one
    that cannot be searched is left to the write, which names the cause."""
    import shlex

    if path.endswith(("/", os.sep)):
        raise UsageError(f"--output {path} names a folder, not a file", hint="name the file to write in it")
    folder = os.path.dirname(path) or "."
    try:
        mode = os.stat(folder).st_mode
    except FileNotFoundError:
        raise UsageError(f"--output {path}: the folder {folder} does not exist",
                         hint=f"create it first (mkdir -p {shlex.quote(folder)}): --output makes no folder") from None
    except NotADirectoryError:
        mode = 0
    except OSError:
        return
    if not stat.S_ISDIR(mode):
        raise UsageError(f"--output {path}: {folder} is not a folder", hint="choose a path in a folder")


@dataclass(frozen=True)
class OutputOptions:
    format: str  # table, json, csv or prometheus
    table_format: str | None
    header: bool
    raw: bool
    path: str | None = None  # --output: replace this file atomically instead of writing stdout
    chart: str | None = None  # --chart: the bar characters for the output's encoding


@dataclass(frozen=True)
class StoreOptions:
    path: str
    strict: bool  # --record (not a dry run): a store that cannot be opened, read or written fails the run
    lock_timeout: float  # seconds to wait for another run's lock


@dataclass(frozen=True)
class Settings:
    """The whole validated command line; nothing reads the parsed arguments after this."""

    mode: str  # "query", "record", "dry-run" or "check"
    query: Query
    project_id: str | None  # --project-id, else HW_PROJECT_ID / HUAWEICLOUD_SDK_PROJECT_ID
    credentials_file: str | None
    maas: Endpoint
    iam: Endpoint
    ces: Endpoint
    client: ClientOptions
    output: OutputOptions
    store: StoreOptions | None
    packages: tuple[str, ...] = ()  # the packages a run that sends requests needs
    monitor: Endpoint | None = None  # the MaaS monitor (Cloud Eye's model and key names)
    max_requests: int = MAX_REQUESTS  # checked for Cloud Eye runs once ListMetrics has answered
    budget: BudgetOptions | None = None  # --budget, --fail-over
    prices: PriceList | None = None  # --prices, read and checked before any request

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """Every endpoint by the name a CallKind goes to."""
        return {"maas": self.maas, "iam": self.iam, "ces": self.ces,
                **({"monitor": self.monitor} if self.monitor is not None else {})}


def flag_or_env(flag_value: str | None, flag: str, env: Mapping[str, str], *names: str) -> tuple[str | None, str]:
    """A setting's value and where it came from: the flag, else the first env var set."""
    if flag_value is not None:
        return flag_value, flag
    for name in names:
        if env.get(name, "").strip():
            return env[name].strip(), name
    return None, ""


def parse_endpoint_setting(flag_value: str | None, flag: str, env: Mapping[str, str], env_name: str,
                           sdk_service: str, region: str, default: str) -> Endpoint:
    """A base URL's precedence: the flag, the ``HW_*`` variable, the SDK's own override for the
    region, the region's default; errors name the source of the URL in use."""
    sdk_env = SDK_REGION_ENV.format(service=sdk_service, region=region.upper().replace("-", "_"))
    url, source = flag_or_env(flag_value, flag, env, env_name, sdk_env)
    if url is None:
        url, source = default, f"the default endpoint for {region}"
        return parse_endpoint(url, source, source)
    if source == sdk_env:
        url = url.split(",")[0]  # the SDK takes a list of endpoints and uses the first
    return parse_endpoint(url, source)


def region_note(region: str) -> str | None:
    if region in STATISTICS_REGIONS:
        return None
    documented = " and ".join(f"{name} ({site})" for name, site in STATISTICS_REGIONS.items())
    return f"MaaS ShowStatistics is documented only in {documented}; region {region} may not offer it"


def zone_setting(flag_value: str | None, env: Mapping[str, str], now: datetime, console: Console) -> tuple[str, tzinfo]:
    """The zone's IANA name and zone: --timezone, else the OS zone, else UTC; a note says so."""
    if flag_value is not None:
        return resolve_zone(flag_value, now)
    name, note = local_zone_name(env, now)
    if note is not None:
        console.note(note)
    if name is None:
        console.note("cannot determine the OS time zone; using UTC (set --timezone)")
        name = "UTC"
    return resolve_zone(name, now)


def resolve_project_id(given: str | None, credentials: Credentials | None,
                       lookup: Callable[[], str] | None) -> str | None:
    """The project id's precedence: ``given`` (--project-id, else the env vars: validated with the
    command line), the credentials file or profile, then IAM (``lookup``). None when none applies."""
    if given is not None:
        return given
    if credentials is not None and credentials.project_id is not None:
        if not PROJECT_ID_RE.fullmatch(credentials.project_id):
            raise CredentialsError("the project id in the credentials file is not 32 lowercase letters and digits")
        return credentials.project_id
    return lookup() if lookup is not None else None


def check_request_count(query: Query, limit: int) -> None:
    """--max-requests: refuse a plan larger than ``limit``, saying how long it would take and how to
    narrow it. Counted, not built: a plan of millions of requests is refused at once."""
    needed = request_count(query)
    if needed <= limit:
        return
    ways = ["a shorter range"]
    units = list(UNITS.values())  # finest first
    if query.bucket is not None and query.bucket is not units[-1]:
        coarser = units[units.index(query.bucket) + 1]
        ways.insert(0, f"a coarser bucket (--group-by {coarser.name} instead of {query.bucket.name})")
    if query.by_key:
        ways.append("fewer --api-keys")
    if len(query.service_types) > 1:
        ways.append("fewer service types")
    raise UsageError(f"this query needs {needed:,} requests, more than --max-requests {limit}: at the API's "
                     f"{RATE_LIMIT} per minute that takes about {format_duration(pacing_seconds(needed))}",
                     hint=f"narrow it: {', '.join(ways)}; or raise --max-requests")


def record_period(period: Period, zone: tzinfo, now: datetime) -> Period:
    """--record: the range's whole final days (its rows are days)."""
    days = final_days(period, zone, now)
    if not days:
        raise UsageError("the range holds no whole final day to record (a day is final 3 hours after "
                         "its local midnight)", hint="try --from yesterday, or the default last 30 days")
    return Period(days[0][1].start, days[-1][1].end)


def settings_from(args: argparse.Namespace, env: Mapping[str, str], now: datetime,
                  console: Console, stdout_encoding: str | None = None) -> Settings:
    """Validate every flag and env var, one concern a step; raises UsageError before anything is read
    or sent. ``stdout_encoding`` picks the chart's bar characters."""
    check_text_inputs(args, env)
    check_release_clock(now)
    check_no_empty_values(args)
    check_flag_rules(flags_given(args, env))
    query = cloud_eye_query(_query_filters(args, *_range_and_zone(args, env, now, console), console), console)
    if args.max_requests < 1:  # every run's bound, Cloud Eye's (checked once ListMetrics answers) too
        raise UsageError("--max-requests must be at least 1")
    if not args.check and not query.cloud_eye:  # the check plans no query; Cloud Eye's calls need its list
        check_request_count(query, args.max_requests)
    project_id, maas, iam, ces = _endpoints(args, env)
    client = _client_options(args)
    mode = "check" if args.check else "dry-run" if args.dry_run else "record" if args.record else "query"
    os_zone = args.timezone is None and not tz_name_from_env(env.get("TZ"))  # the zone comes from tzlocal
    return Settings(mode=mode, query=query, project_id=project_id, credentials_file=args.credentials_file,
                    maas=maas, iam=iam, ces=ces, client=client, output=_output_options(args, env, stdout_encoding),
                    store=_store_options(args, env), packages=needed_packages(args.format, os_zone=os_zone),
                    monitor=monitor_endpoint(args, env), max_requests=args.max_requests,
                    budget=_budget_options(args), prices=load_prices(args.prices, query.by_model))


def _budget_options(args: argparse.Namespace) -> BudgetOptions | None:
    """--budget and --fail-over; a current preset (not --record's days) is projected to its unit's end."""
    if args.budget is None:
        return None
    preset = PRESETS[args.presets[0]] if args.presets else None
    unit = preset.unit if preset is not None and preset.current and not args.record else None
    return BudgetOptions(parse_budget(args.budget),
                         None if args.fail_over is None else parse_fail_over(args.fail_over), unit)


TEXT_FLAGS = ("from", "to", "until", "last", "timezone", "region", "project_id", "credentials_file", "endpoint",
              "iam_endpoint", "ces_endpoint", "monitor_endpoint", "store", "table_format", "output", "budget",
              "fail_over", "prices")


def check_no_empty_values(args: argparse.Namespace) -> None:
    """An empty value (``--store ""``, often an unset shell variable) is refused, never read as not given."""
    for flag in TEXT_FLAGS:
        value = getattr(args, "start" if flag == "from" else flag)
        if value is not None and not value.strip():
            raise UsageError(f"--{flag.replace('_', '-')} was given an empty value")


def _range_and_zone(args: argparse.Namespace, env: Mapping[str, str], now: datetime,
                    console: Console) -> tuple[str, tzinfo, Period, Period | None]:
    """The zone's name and zone, the period, and with --compare the period before it."""
    zone_name, zone = zone_setting(args.timezone, env, now, console)
    preset = args.presets[0] if args.presets else None  # FLAG_RULES refused two different ones
    given = args.start or args.to or args.until or args.last or preset
    last = args.last or ("30d" if args.record and not given else None)  # --record defaults to 30 days
    request = RangeRequest(args.start, args.to, args.until, last, preset)
    period = resolve_period(request, zone, now)
    if args.record:
        period = record_period(period, zone, now)
    return zone_name, zone, period, previous_period(request, period, zone) if args.compare else None


def _query_filters(args: argparse.Namespace, zone_name: str, zone: tzinfo, period: Period,
                   previous: Period | None, console: Console) -> Query:
    """What is asked and how rows are split: --region, --group-by, --service-type, --infer-type,
    --api-keys, --ips."""
    if not REGION_RE.fullmatch(args.region):
        raise UsageError(f"--region {args.region!r} is not a region id like cn-southwest-2")
    note = region_note(args.region)
    if note:
        console.note(note)
    given_keys = None if args.api_keys is None else tuple(dict.fromkeys(args.api_keys))
    unit, by_key, by_type = parse_group_by(args.group_by, given_keys)
    bucket = UNITS[unit] if unit else None
    if args.record:  # --record saves (and shows) days
        bucket = DAY
    service_types = parse_service_types(args.service_type, by_type)
    return Query(region=args.region, zone_name=zone_name, zone=zone, period=period, infer_type=args.infer_type,
                 service_types=service_types,
                 api_keys=given_keys or None,  # a bare --api-keys means all keys, as the original skill script took it
                 ips=parse_ips(args.ips), bucket=bucket, by_key=by_key, previous=previous,
                 by_model="model" in group_by_words(args.group_by),
                 one_service_type_asked=args.service_type is not None and set(service_types) < {1, 2},
                 by_service_type=by_type)


def _endpoints(args: argparse.Namespace,
               env: Mapping[str, str]) -> tuple[str | None, Endpoint, Endpoint, Endpoint]:
    """The project id, and the MaaS, IAM and Cloud Eye base URLs of the (checked) region."""
    project_id, _ = flag_or_env(args.project_id, "--project-id", env, *PROJECT_ENVS)
    if project_id is not None and not PROJECT_ID_RE.fullmatch(project_id):
        raise UsageError("the project id must be 32 lowercase letters and digits",
                         hint="find it in the console under My Credentials > API Credentials")
    maas = parse_endpoint_setting(args.endpoint, "--endpoint", env, "HW_MAAS_ENDPOINT", "MODELARTS", args.region,
                                  MAAS_ENDPOINT_EXCEPTIONS.get(args.region,
                                                               MAAS_ENDPOINT_TEMPLATE.format(region=args.region)))
    iam = parse_endpoint_setting(args.iam_endpoint, "--iam-endpoint", env, "HW_IAM_ENDPOINT", "IAM", args.region,
                                 IAM_ENDPOINT_TEMPLATE.format(region=args.region))
    ces = parse_endpoint_setting(args.ces_endpoint, "--ces-endpoint", env, "HW_CES_ENDPOINT", "CES", args.region,
                                 CES_ENDPOINT_TEMPLATE.format(region=args.region))
    return project_id, maas, iam, ces


def monitor_endpoint(args: argparse.Namespace, env: Mapping[str, str]) -> Endpoint:
    """The MaaS monitor's base URL: --monitor-endpoint, else HW_MAAS_MONITOR_ENDPOINT, else the default."""
    url, source = flag_or_env(args.monitor_endpoint, "--monitor-endpoint", env, "HW_MAAS_MONITOR_ENDPOINT")
    if url is None:
        source = f"the default monitor endpoint for {args.region}"
        return parse_endpoint(MONITOR_ENDPOINT_TEMPLATE.format(region=args.region), source, source)
    return parse_endpoint(url, source)


def _client_options(args: argparse.Namespace) -> ClientOptions:
    """--timeout, --retries and --concurrency."""
    if not 0 < args.timeout <= 3600:
        raise UsageError("--timeout must be a number of seconds above 0 (at most 3600)")
    if not 0 <= args.retries <= 10:
        raise UsageError("--retries must be between 0 and 10")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    return ClientOptions(args.timeout, args.retries, args.concurrency, keep_answers=args.raw)


def _output_options(args: argparse.Namespace, env: Mapping[str, str], stdout_encoding: str | None) -> OutputOptions:
    check_table_format(args.table_format)
    # a file written by --output is UTF-8 whatever the terminal
    chart = bar_characters("utf-8" if args.output else stdout_encoding) if args.chart else None
    return OutputOptions(args.format, args.table_format, not args.no_header, args.raw,
                         None if args.output is None else expand_home(args.output, env), chart)


def store_path(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    return flag_or_env(args.store, "--store", env, "MAAS_USAGE_STORE")[0]


def _store_options(args: argparse.Namespace, env: Mapping[str, str]) -> StoreOptions | None:
    """The history store: --store, else MAAS_USAGE_STORE; --record (not a dry run) must be able to use it."""
    path = store_path(args, env)
    if not path:
        return None
    return StoreOptions(expand_home(path, env), strict=args.record and not args.dry_run,
                        lock_timeout=STORE_BUSY_TIMEOUT)


# ----------------------------------------------------------------------------------------------
# The run: settings -> store -> plan -> fetch -> render
# ----------------------------------------------------------------------------------------------


def run(settings: Settings, env: Mapping[str, str], clock: Clock, console: Console) -> tuple[str, str | None]:
    """One run after validation; returns the text for stdout and, when --fail-over's share was
    reached, the line that says so."""
    check_packages(settings, console)
    if settings.mode == "check":  # first contact: its own requests, no store
        return check_account(settings, env, clock, console), None
    if settings.query.cloud_eye and settings.store is not None:
        console.note("the store keeps ShowStatistics days, not Cloud Eye rows: it is not used for this run")
    store = open_store(None if settings.query.cloud_eye else settings.store, console, clock,
                       read_only=settings.mode == "dry-run")
    try:
        if settings.mode == "dry-run":
            return dry_run(settings, store, console, clock.now), None
        report = query_usage(settings, store, env, clock, console)
        return render(report, settings.output), budget_alarm(report, settings.budget)
    finally:
        if store is not None:
            store.close()


def check_packages(settings: Settings, console: Console) -> None:
    """A run that sends requests ends here when this Python lacks a package it needs; a dry run,
    which needs none, notes what a real run would lack."""
    lacking = lacking_packages(settings.packages)
    if not lacking:
        return
    error = missing_packages_error(lacking)
    if settings.mode != "dry-run":
        raise error
    console.note(f"a real run would fail: {error}; {error.hint}")


def open_store(options: StoreOptions | None, console: Console, clock: Clock, read_only: bool) -> Store | None:
    """Open the store; one that cannot be opened fails --record but only costs a note otherwise."""
    if options is None:
        return None
    try:
        store = Store.open(options.path, options.lock_timeout, clock, read_only=read_only)
    except StoreError as exc:
        if options.strict:
            raise
        console.note(f"{exc}; continuing without the store")
        return None
    if store is None:
        console.note(f"the store {options.path} does not exist yet: the whole range is planned")
    elif os.name == "posix" and os.stat(options.path).st_mode & (stat.S_IRGRP | stat.S_IROTH):
        console.note(f"the store {options.path} is readable by other users; run: chmod 600 {options.path}")
    return store


def plan(settings: Settings, store: Store | None, project_id: str | None, console: Console,
         now: datetime, query: Query | None) -> list[Row]:
    """The rows of ``query`` (the run's, or its previous period's; None: none); with a store (and a
    project id to match it), its final days are read from it.

    A store that cannot be read fails --record; a plain query notes it and plans the whole range live.
    """
    if query is None or query.cloud_eye:  # Cloud Eye rows are planned from ListMetrics' answer
        return []
    if store is None or project_id is None:
        return plan_rows(query, now)
    try:
        return plan_rows(query, now, lambda row, days: store.lookup(query, project_id, row, days))
    except StoreError as exc:
        if settings.store is not None and settings.store.strict:
            raise
        console.note(f"{exc}; querying the whole range live")
        return plan_rows(query, now)


def plan_periods(settings: Settings, store: Store | None, project_id: str | None, console: Console,
                 now: datetime) -> tuple[list[Row], list[Row], list[str] | None, dict[str, int]]:
    """The rows of the query and of its previous period (--compare; else none), as a run or a dry
    run plans them, with what planning tells: the retention note (and the days a store could not
    record), and the store's days of this query in other zones."""
    query, previous_query = settings.query, settings.query.previous_query()
    rows = plan(settings, store, project_id, console, now, query)
    previous = plan(settings, store, project_id, console, now, previous_query)
    unrecorded = unrecorded_days(query, rows + previous, now) if store else None
    warn_about_retention(query, unrecorded, console, now)
    other_zones = (other_zone_counts(store, project_id, [(query, rows), (previous_query, previous)], console)
                   if store is not None and project_id is not None else {})
    return rows, previous, unrecorded, other_zones


def dry_run(settings: Settings, store: Store | None, console: Console, now: datetime) -> str:
    query = settings.query
    project_id = resolve_project_id(settings.project_id, None, None)
    if project_id is None:
        console.note("no project id given: the URLs show {project_id}"
                     + ("; without it the store cannot be matched, so the whole range is planned" if store else ""))
    rows, previous, _, _ = plan_periods(settings, store, project_id, console, now)
    coverage = coverage_of(query, rows, now)
    first = cloud_eye_plan(settings, project_id, console, now) if query.cloud_eye else []
    return render_plan(query, project_id, settings.endpoints, rows, coverage, settings.output.format, previous, first)


def query_usage(settings: Settings, store: Store | None, env: Mapping[str, str], clock: Clock,
                console: Console) -> Report:
    query, now = settings.query, clock.now
    credentials = load_credentials(settings.credentials_file, env, clock)
    console.hide(credentials.secrets())
    warning = file_permission_warning(credentials.path) if credentials.path else None
    if warning:
        console.warn(warning)
    client: Client | None = None

    def connected() -> Client:  # built only when a request is due: a fully stored range needs none
        nonlocal client
        if client is None:
            client = Client(credentials, settings.client, console, clock, env)
        return client

    previous_query = query.previous_query()

    def looked_up() -> str:
        concurrency = settings.client.concurrency
        if query.cloud_eye:  # while IAM answers, open the connections of the calls that follow it: the
            # names beside ListMetrics, then the reconciliation's windows beside the data calls (per host:
            # in a pool of its own, or one they share)
            wanted: dict[tuple[str, str], tuple[Endpoint, int]] = {}
            statistics = len(windows_of(statistics_rows(query, now)))
            wave = ces_wave(concurrency, settings.max_requests, statistics)
            for endpoint, count in ((settings.monitor, 1), (settings.maas, statistics),
                                    (settings.ces, cloud_eye_calls_expected(query, now, wave))):
                if endpoint is not None and count:
                    host = (endpoint.scheme, endpoint.netloc)
                    wanted[host] = (endpoint, wanted.get(host, (endpoint, 0))[1] + count)
            for endpoint, count in wanted.values():
                connected().preopen(endpoint, min(count, concurrency))
        elif store is None:  # while IAM answers, open the MaaS connections the windows will need
            connected().preopen(settings.maas, min(request_count(query), concurrency))
        return lookup_project_id(connected(), settings.iam, query.region)

    try:
        project_id = resolve_project_id(settings.project_id, credentials, looked_up)
        assert project_id is not None  # the lookup always answers or raises
        rows, previous_rows, unrecorded, other_zones = plan_periods(settings, store, project_id, console, now)
        windows = windows_of(rows + previous_rows)  # the previous period's after the current ones
        note = long_run_note(len(windows))
        if note:
            console.note(note)
        if windows:
            fetch(connected(), settings.endpoints, project_id, windows, console,
                  save=None if store is None else lambda row, window: save_day(store, query, project_id, row,
                                                                                window, now))
        reconciliation, answers, previous_answers, previous_reconciliation = None, [], [], None
        if query.cloud_eye:  # --compare: the previous period's rows too, summed the same way, in the same calls
            read = cloud_eye_rows(connected(), settings.endpoints, project_id,
                                  [query, *([previous_query] if previous_query is not None else [])], console, now,
                                  settings.max_requests)
            rows, reconciliation, answers = read[0]
            if previous_query is not None:
                previous_rows, previous_reconciliation, previous_answers = read[1]
    finally:
        if client is not None:
            client.close()
    shown = printed_labels(query, rows, credentials.secrets())
    report = Report(shown, project_id, rows, coverage_of(shown, rows, now, answers), reconciliation=reconciliation,
                    answers=answers)
    if previous_query is not None:
        shown = printed_labels(previous_query, previous_rows, credentials.secrets())
        report.previous = Report(shown, project_id, previous_rows,
                                 coverage_of(shown, previous_rows, now, previous_answers), answers=previous_answers,
                                 reconciliation=previous_reconciliation)  # its totals follow the same rule
    for anomaly in report.coverage.anomalies + (report.previous.coverage.anomalies if report.previous else ()):
        console.note(f"the answer for {anomaly.source} cannot be right ({anomaly.broken}); "
                     "it is summed as sent (JSON: coverage.anomalies)")
    if store is not None:
        if store.days_unstorable:
            console.note(f"{store.days_unstorable} day(s) not saved: the API answered with finer than whole "
                         "tokens, which the store keeps only exactly")
        if store.write_failure:
            if settings.store is not None and settings.store.strict:
                raise StoreError(store.write_failure)
            console.note(f"{store.write_failure}; the result is complete all the same")
        report.store = {"path": store.path, "days_read": store.days_read, "days_saved": store.days_saved,
                        "days_unrecorded": unrecorded, "days_other_zones": other_zones}
    assess(report, settings, console, now)
    return report


def assess(report: Report, settings: Settings, console: Console, now: datetime | None = None) -> None:
    """--budget and --prices: the report (and the previous period's) against the budget and the prices."""
    for each in (report, report.previous):
        if each is None:
            continue
        if settings.budget is not None:
            each.budget = budget_of(settings.budget, each.total, each.query.period, each.query.zone,
                                    project=each is report, now=now)
            if each.budget.used is None and each is report:
                unchecked = "the rows carry no total tokens (Cloud Eye lists no total_tokens)"
                if settings.budget.fail_over is not None:  # never a silent pass of --fail-over
                    raise ApiError(f"--fail-over cannot be checked: {unchecked}",
                                   hint="group without model and key (ShowStatistics counts the tokens), or check "
                                        "in the console whether Cloud Eye lists total_tokens for SYS.MaaS")
                console.warn(f"--budget: {unchecked}, so the budget cannot be checked")
        if settings.prices is not None:
            each.costs = estimate_costs(settings.prices, each.rows, console if each is report else None)


def budget_alarm(report: Report, options: BudgetOptions | None) -> str | None:
    """--fail-over: the stderr line when the share reached it, else None."""
    if options is None or options.fail_over is None or report.budget is None:
        return None
    crossed = report.budget.crossed(options.fail_over)
    if crossed is None:
        return None
    return (f"{crossed} of the budget ({format_tokens(options.tokens)}) reaches --fail-over {options.fail_over} %: "
            f"exit {EXIT_BUDGET}")


def other_zone_counts(store: Store, project_id: str, planned: Sequence[tuple[Query | None, list[Row]]],
                      console: Console) -> dict[str, int]:
    """Day rows of the planned rows' keys that the store holds under other time zones only, by
    zone; a note for each says how to read them."""
    found: set[tuple] = set()
    for query, rows in planned:
        if query is not None:
            found |= store.days_in_other_zones(query, project_id, rows)
    counts: dict[str, int] = {}
    for zone, *_ in sorted(found):
        counts[zone] = counts.get(zone, 0) + 1
    for zone, count in counts.items():
        console.note(f"the store holds {count} day{'s' if count > 1 else ''} of this query recorded in "
                     f"{printable(zone)}; days are kept per zone, so these are fetched live "
                     f"(--timezone {printable(zone)} reads them)")
    return counts


def window_task(client: Client, endpoints: Mapping[str, Endpoint], project_id: str,
                window: Window) -> Callable[[], tuple[Any, Any]]:
    """A window's call, to run in a worker: (its answer as --raw keeps it, what its reader makes of it)."""
    endpoint = endpoints[window.call.endpoint]
    return lambda: window.call.answer(client, endpoint, project_id, window.label, window.body,
                                      keep=raw_text if client.options.keep_answers else False)


def fetch(client: Client, endpoints: Mapping[str, Endpoint], project_id: str,
          windows: Sequence[tuple[Row | None, Window]], console: Console,
          save: Callable[[Row, Window], None] | None) -> None:
    """Fill every window with its call's answer; ``save`` keeps each whole final day as it arrives."""
    task = functools.partial(window_task, client, endpoints, project_id)

    if not client.warm and windows:  # the first window goes alone: open the connections for the rest meanwhile
        client.preopen(endpoints[windows[0][1].call.endpoint], min(len(windows), client.options.concurrency) - 1)
    done = 0

    def arrived(index: int, answer: tuple[Any, Any]) -> None:
        nonlocal done
        row, window = windows[index]
        window.response, window.usage = answer
        if save is not None and row is not None:
            save(row, window)
        done += 1
        console.progress(done, len(windows))

    client.fan_out([task(window) for _, window in windows], arrived)


def save_day(store: Store, query: Query, project_id: str, row: Row, window: Window, now: datetime) -> None:
    """Save a window that is one whole final day. A day older than MaaS's retention may have come
    back empty: saving it would keep those zeros for good, so only days inside it are saved."""
    if window.day is not None and window.usage is not None and window.period.start >= now - RETENTION:
        store.save(query, project_id, row, window.day, window.period, window.usage, now)


def printed_labels(query: Query, rows: Sequence[Row], secrets: tuple[str, ...]) -> Query:
    """The query and its rows as printed, once their requests are done: a key label holding a piece
    of a key (an AK given to --api-keys by mistake) is masked like server text; nothing else is."""
    for row in rows:
        if row.api_key is not None:
            row.api_key = redact(row.api_key, secrets)
    if query.api_keys is None:
        return query
    return dataclasses.replace(query, api_keys=tuple(redact(key, secrets) for key in query.api_keys))


def render(report: Report, output: OutputOptions) -> str:
    return FORMATS[output.format].render(report, output)


def retention_note(period: Period, now: datetime, zone: tzinfo, cloud_eye: bool = False) -> str | None:
    oldest = now - (CES_RETENTION if cloud_eye else RETENTION)
    if period.start >= oldest:
        return None
    keeper = "Cloud Eye keeps hourly sums for 155 days" if cloud_eye else "MaaS keeps statistics for 30 days"
    return (f"{keeper} only: the part of the range before "
            f"{format_instant(oldest.astimezone(zone))} may come back empty")


def warn_about_retention(query: Query, unrecorded: Sequence[str] | None, console: Console, now: datetime) -> None:
    """Warn when part of what is fetched live is older than MaaS's 30-day retention.

    ``unrecorded`` is the store's list of such dates, or None when no store is used.
    """
    if unrecorded is None:
        start = query.period.start if query.previous is None else query.previous.start
        note = retention_note(Period(start, query.period.end), now, query.zone, query.cloud_eye)
        if note:
            console.note(note)
    elif unrecorded:
        console.note(f"{len(unrecorded)} day(s) of the range are older than MaaS's 30-day retention and not in "
                     f"the store ({unrecorded[0]} … {unrecorded[-1]}): their live answers may be empty")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: the run ends as with Ctrl-C, with the exit code 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class Signals:
    """SIGINT, SIGTERM and SIGHUP while main runs: each ends the run by an exception in the main
    thread (KeyboardInterrupt, or Terminated), so every ``finally`` on the way runs: the store's
    transaction rolls back, --output's temporary file goes. Inside ``held()`` a signal waits for
    the block's end. A signal ignored from the start (nohup, a background job) stays ignored."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._holding = False
        self._pending: int | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers: a caller's thread keeps the caller's
        for signum in ENDING_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is not None and previous != signal.SIG_IGN:  # None: a handler set outside Python
                self._previous[signum] = previous
                signal.signal(signum, self._interrupt)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            signum, self._pending = self._pending, None
            if signum is not None:
                self._interrupt(signum, None)

    def _interrupt(self, signum: int, frame: object) -> None:
        if self._holding:
            self._pending = self._pending or signum
            return
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         now: datetime | None = None, clock: Any = None, stdout: Any = None, stderr: Any = None) -> int:
    """Run the command line ``argv`` with the given environment, clock and streams; the exit code.

    ``clock`` has ``now()`` (an aware datetime), ``monotonic()`` and ``sleep(seconds)``: every read
    of the time and every wait of the run goes through it. ``now`` is the machine's clock set to
    read that instant at the start.
    """
    if now is not None and clock is not None:
        raise TypeError("main() takes now= or clock=, not both")
    signals = Signals()
    signals.install()  # from here on SIGINT, SIGTERM and SIGHUP end the run as Ctrl-C does
    env = os.environ if env is None else env
    stdout = sys.stdout if stdout is None else stdout
    console = Console(sys.stderr if stderr is None else stderr)
    clock = Clock(SystemClock(now) if clock is None else clock)  # the run's clock reads the one given
    try:
        args = build_parser().parse_args(argv)
        console.quiet, console.verbose = args.quiet, args.verbose  # notes made while validating obey -q too
        settings = settings_from(args, env, clock.now, console, getattr(stdout, "encoding", None))
        check_output_target(settings, env)
        output, alarm = run(settings, env, clock, console)
        if settings.output.path is None:
            code = write_result(stdout, output, console)
        else:
            replace_file(settings.output.path, output, signals)
            code = EXIT_OK
        if code == EXIT_OK and alarm is not None:  # the whole result is out; the exit code tells cron
            console.warn(alarm)
            return EXIT_BUDGET
        return code
    except ParserExit as printed:  # --help and --version
        return write_result(stdout, printed.text, console) if printed.status == 0 else printed.status
    except ToolError as exc:
        console.error(str(exc), exc.hint)
        if isinstance(exc, ChecklistFailed):  # a failed check still prints its checklist
            return write_result(stdout, exc.output, console) or exc.exit_code
        return exc.exit_code
    except MemoryError:
        console.error("out of memory", hint="raise the memory limit (ulimit -v, systemd LimitAS=)")
        return EXIT_API
    except KeyboardInterrupt as exc:  # Ctrl-C, or Terminated (SIGTERM, SIGHUP)
        console.error(f"interrupted by {exc}" if isinstance(exc, Terminated) else "interrupted")
        return exc.exit_code if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        signals.restore()


class OutputFileError(ToolError):
    exit_code = EXIT_API


def replace_file(path: str, output: str, signals: Signals) -> None:
    """Replace ``path`` with ``output`` (UTF-8) by a rename in its folder: a reader sees the old
    file or the new one, never half of one. Whatever goes wrong (a full disk, a signal), the old
    file stays and the temporary file goes: signals are held while it is created or removed.

    ``path`` must still be a regular file or nothing (checked again: a symlink planted since the
    run began is refused too). The new file keeps the old one's mode, and its owner and group where
    the process may set them; a new file gets 0666 & ~umask, as from ``>``.
    """
    refusal = output_refusal(path)
    if refusal is not None:
        raise OutputFileError(refusal)
    folder, name = os.path.split(path)
    temporary = None
    try:
        try:
            old: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            old = None
        while temporary is None:
            candidate = os.path.join(folder, f".{name[:200]}.{os.urandom(4).hex()}.tmp")
            with signals.held():
                try:  # the kernel applies the umask to 0666, exactly as for a shell redirect
                    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                                 | getattr(os, "O_CLOEXEC", 0), 0o666)
                except FileExistsError:
                    continue
                temporary = candidate
                file = open(fd, "wb")
        with file:
            if old is not None:
                keep_owner_and_mode(file.fileno(), temporary, old)
            file.write(utf8(output))
            file.flush()
            os.fsync(file.fileno())  # the rename must never publish data still only in the page cache
        os.replace(temporary, path)
        temporary = None
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {exc.strerror or exc}",
                              hint="check that the folder exists, is writable and has space") from None
    finally:
        if temporary is not None:
            with signals.held():
                try:
                    os.unlink(temporary)
                except OSError:
                    pass


def keep_owner_and_mode(fd: int, path: str, old: os.stat_result) -> None:
    """Give the file open as ``fd`` (at ``path``) the owner, group and mode of ``old``: as root all
    three, as a user the mode and any group of theirs (a root cron job or a chgrp'd file must not
    take a collector's read access away). The mode comes last: a chown clears set-id bits."""
    if hasattr(os, "fchown"):
        for uid in (old.st_uid, -1):
            try:
                os.fchown(fd, uid, old.st_gid)
                break
            except OSError:  # not allowed to give it away: keep what the process may
                continue
    if hasattr(os, "fchmod"):
        os.fchmod(fd, stat.S_IMODE(old.st_mode))
    else:
        os.chmod(path, stat.S_IMODE(old.st_mode))


def utf8(output: str) -> bytes:
    """The result as UTF-8. A lone surrogate, which no UTF-8 can hold (a server's name may be the valid
    JSON ``"\\ud83d"``; CSV and Prometheus keep labels as they came), is written as its escape."""
    return output.encode("utf-8", "backslashreplace")


def write_result(stdout: Any, output: str, console: Console) -> int:
    """Write the result (UTF-8 whatever the locale: key labels may be any text), all of it. Every
    failure to write it (a closed stdout, a full disk, a reader gone away or stuck) is exit 1 with
    an error line."""
    try:
        if stdout is None:  # Python's stdout when the process was started with fd 1 closed
            raise OSError(errno.EBADF, "stdout is closed")
        fd = _descriptor(stdout)
        buffer = getattr(stdout, "buffer", None)
        if fd is not None:
            stdout.flush()
            write_all(fd, utf8(output))
        elif buffer is not None:
            stdout.flush()
            buffer.write(utf8(output))
            buffer.flush()
        else:
            stdout.write(output)
            stdout.flush()
    except (OSError, ValueError) as exc:  # ValueError: a closed file object
        # What stays buffered must not fail again in the interpreter's own flush at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        console.error(f"cannot write the result to stdout: {reason}")
        return EXIT_API
    return EXIT_OK


def _descriptor(stream: Any) -> int | None:
    """The POSIX file descriptor under ``stream``; None for an in-memory stream (or elsewhere)."""
    if os.name != "posix":
        return None
    try:
        return stream.fileno()
    except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError; a closed file's ValueError is not
        return None


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, also when it is non-blocking (left so by Node's child_process,
    make -j, agent runtimes): a full pipe is waited for, as a blocking write would wait, as long as
    its reader takes something every STDOUT_STALL seconds."""
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            if not poller.poll(STDOUT_STALL * 1000):
                raise OSError(errno.ETIMEDOUT, f"its reader took nothing for {STDOUT_STALL:g} s") from None


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as interrupted:  # a signal before main's own handlers are in place, or after
        sys.exit(interrupted.exit_code if isinstance(interrupted, Terminated) else EXIT_INTERRUPTED)
