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
Exit codes: 0 success, 1 API/network failure, 2 usage error, 3 credentials rejected or missing.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(signum: int, frame: object) -> None:
    os.write(2, b"error: interrupted\n")
    os._exit(130)


if __name__ == "__main__":
    # Ctrl-C while the modules below still load ends like any interrupted run: exit 130, no
    # traceback. main() puts Python's own handler back once it can report it itself.
    signal.signal(signal.SIGINT, _interrupted_while_loading)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import errno  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import date, datetime, timedelta, timezone, tzinfo  # noqa: E402
from decimal import ROUND_HALF_UP, Decimal, localcontext  # noqa: E402
from functools import lru_cache  # noqa: E402
from typing import Any, Callable, Iterable, Mapping, Sequence  # noqa: E402
from urllib.parse import quote, urlsplit  # noqa: E402

__version__ = "1.0.0"
RELEASE_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)  # this version is newer: a clock before it is wrong

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------

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
# The regions where the ShowStatistics API reference documents MaaS (not verified live: no account).
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
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}

MAX_WINDOW = timedelta(days=30)  # API rejects end_time - start_time > 30 days
RETENTION = timedelta(days=30)  # MaaS keeps statistics for 30 days
RATE_LIMIT = 200  # API allows 200 requests per minute per user
RATE_PERIOD = 60.0
# The API counts requests where they arrive. A request waits at most about 2 round trips longer
# on a fresh connection (TCP + TLS) than on a warm one, so starts counted over 60 s + 2 s keep
# "200 arrivals in any 60 s" true for any round trip up to 1 s.
ARRIVAL_MARGIN = 2.0
MAX_CONCURRENCY = 16
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 60.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
PROGRESS_MIN_REQUESTS = 5
THREAD_STACK_BYTES = 1024 * 1024
SIGNAL_CHECK_INTERVAL = 0.2  # seconds between the main thread's checks for Ctrl-C while requests run
FINAL_AFTER = timedelta(hours=3)  # call data lags 1-2 hours; a day is final 3 hours after it ends
MAX_BODY_BYTES = 1024 * 1024  # an answer is a few hundred bytes; more is malformed (and bounds memory)
MAX_CREDENTIALS_BYTES = 64 * 1024  # a credentials file is a few hundred bytes; refuse a huge one
CREDENTIALS_PIPE_WAIT = 30.0  # seconds for a credentials pipe's writer: time to type a passphrase



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
    if not requests:
        return None
    return (Decimal(errors) * 100 / requests).quantize(Decimal("0.01"), ROUND_HALF_UP)


# ShowStatistics' answer fields (API reference, ShowStatistics response), in the contract's METRICS order.
# The bounds: prompt and completion tokens are parts of the total, errors are requests that failed.
METRICS = (
    Metric("total_tokens", "tokens_k", "total_token", 1000, "Total Tokens", ("Tokens",) * 3, "tokens",
           "maas_usage_tokens", "total"),
    Metric("prompt_tokens", "prompt_k", "total_prompt_token", 1000, "Prompt Tokens", ("Prompt",) * 3, "tokens",
           "maas_usage_tokens", "prompt", at_most="total_tokens"),
    Metric("completion_tokens", "completion_k", "total_completion_token", 1000, "Completion Tokens",
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


def read_credentials_file(path: str) -> str:
    """Read a small UTF-8 text file (or a pipe, such as ``<(pass show maas)``, with a bounded wait),
    refusing directories, devices, sockets, binaries and huge files."""
    try:
        kind = os.stat(path).st_mode  # follows links: <(…) is /dev/fd/N, a link to a pipe
        if stat.S_ISDIR(kind):
            raise CredentialsError(f"credentials file {path} is a directory")
        if stat.S_ISFIFO(kind):
            data = read_pipe(path, CREDENTIALS_PIPE_WAIT, MAX_CREDENTIALS_BYTES + 1)
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


def read_pipe(path: str, wait: float, limit: int) -> bytes:
    """Up to ``limit`` bytes of a named pipe, until its writer closes it; TimeoutError when no
    writer comes or it stalls for ``wait`` seconds in all (a plain open would block for good)."""
    import select

    deadline = time.monotonic() + wait
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        data = bytearray()
        while len(data) < limit:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError
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


def load_credentials_file(path: str) -> Credentials:
    credentials = parse_credentials_text(read_credentials_file(path), f"credentials file {path}")
    return dataclasses.replace(credentials, path=path)


def expand_home(path: str, env: Mapping[str, str]) -> str:
    """``~`` at the start of ``path`` means the run's HOME (the environment passed in)."""
    if path == "~" or path.startswith("~/"):
        return (env.get("HOME") or os.path.expanduser("~")) + path[1:]
    return os.path.expanduser(path)


def profile_path(env: Mapping[str, str]) -> str:
    return env.get(PROFILE_ENV) or expand_home("~/.huaweicloud/credentials", env)


def load_credentials(path: str | None, env: Mapping[str, str]) -> Credentials:
    """Apply the precedence: --credentials-file, HW_* env, HUAWEICLOUD_SDK_* env, SDK profile file."""
    if path:
        return load_credentials_file(path)
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
        return load_credentials_file(profile)
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
BUCKET_UNITS = ("hour", "day", "week", "month")
MIN_YEAR, MAX_YEAR = 1970, 9000  # epoch milliseconds; far from datetime's overflow at year 9999
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
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise UsageError(f"{text!r} is outside the years {MIN_YEAR}-{MAX_YEAR}")


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
    local = moment.astimezone(zone)
    target = local.date() + timedelta(days=days)
    if moment == day_start(local.date(), zone):
        return day_start(target, zone)
    return datetime.combine(target, local.time(), tzinfo=zone).astimezone(timezone.utc)


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
        start, end = preset_range(request.preset, zone, now)
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


# Each preset: its calendar unit, and whether it is the current one (up to now) or the whole one before.
PRESETS = {"today": ("day", True), "yesterday": ("day", False), "this-week": ("week", True),
           "last-week": ("week", False), "this-month": ("month", True), "last-month": ("month", False)}


def preset_range(name: str, zone: tzinfo, now: datetime) -> tuple[datetime, datetime]:
    """A preset's start and end as UTC instants: from local midnights, the current unit ending now."""
    unit, current = PRESETS[name]
    first = _first_day(now.astimezone(zone).date(), unit)
    if current:
        return day_start(first, zone), now
    return day_start(_first_day(first - timedelta(days=1), unit), zone), day_start(first, zone)


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
        unit, current = PRESETS[request.preset]
        day = period.start.astimezone(zone).date()
        start = day_start(_first_day(day - timedelta(days=1), unit), zone)
        end = _same_time_a_unit_before(period.end, unit, zone) if current else period.start
        result = Period(start, min(end, period.start))
    elif midnight(period.start) and midnight(period.end):
        days = (period.end.astimezone(zone).date() - period.start.astimezone(zone).date()).days
        result = Period(shift_days(period.start, -days, zone), period.start)
    else:
        result = Period(period.start - (period.end - period.start), period.start)
    if result.start < EPOCH:
        raise UsageError("--compare: the previous period would start before 1970-01-01 00:00:00 UTC")
    return result


def _same_time_a_unit_before(moment: datetime, unit: str, zone: tzinfo) -> datetime:
    """The same local wall time a day, week or month earlier (a repeated time: its first occurrence;
    a skipped one: past the gap); a day the month before lacks is past that month's end."""
    if unit != "month":
        return shift_days(moment, -1 if unit == "day" else -7, zone)
    local = moment.astimezone(zone)
    first = (local.date().replace(day=1) - timedelta(days=1)).replace(day=1)
    try:
        target = first.replace(day=local.day)
    except ValueError:  # March 31 has no February twin: the whole of February
        return day_start(local.date().replace(day=1), zone)
    if moment == day_start(local.date(), zone):
        return day_start(target, zone)
    return datetime.combine(target, local.time(), tzinfo=zone).astimezone(timezone.utc)


def _first_day(day: date, unit: str) -> date:
    """The first local date of the day, week (weeks start on Monday) or month holding ``day``."""
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day


def _hour_start(moment: datetime, zone: tzinfo) -> datetime:
    """The start (UTC) of the local clock hour holding ``moment``: each of a fall-back day's two
    01:00 hours is its own hour, as the offset tells them apart."""
    wall = moment.astimezone(zone)
    return moment.astimezone(timezone.utc) - timedelta(minutes=wall.minute, seconds=wall.second,
                                                       microseconds=wall.microsecond)


def _next_boundary(moment: datetime, unit: str, zone: tzinfo) -> datetime:
    if unit == "hour":
        return _hour_start(moment, zone) + timedelta(hours=1)
    first = _first_day(moment.astimezone(zone).date(), unit)
    if unit == "day":
        following = first + timedelta(days=1)
    elif unit == "week":
        following = first + timedelta(days=7)
    else:
        following = (first + timedelta(days=31)).replace(day=1)
    return day_start(following, zone)


def calendar_bucket(moment: datetime, unit: str, zone: tzinfo) -> Period:
    """The whole local hour, day, week or month that ``moment`` falls in, unclipped by any range."""
    if unit == "hour":
        return Period(_hour_start(moment, zone), _next_boundary(moment, unit, zone))
    return Period(day_start(_first_day(moment.astimezone(zone).date(), unit), zone),
                  _next_boundary(moment, unit, zone))


def split_buckets(period: Period, unit: str | None, zone: tzinfo) -> list[Period]:
    """Calendar buckets following local midnights, the first and last clipped to the period."""
    if unit is None:
        return [period]
    buckets = []
    cursor = period.start
    while cursor < period.end:
        stop = min(_next_boundary(cursor, unit, zone), period.end)
        buckets.append(Period(cursor, stop))
        cursor = stop
    return buckets


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


class Clock:
    """The run's time: ``now`` (whole seconds), the instant every plan is made from, and the
    clocks that move on from it (wall time for signatures, monotonic time for pacing)."""

    def __init__(self, instant: datetime, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._instant = instant.astimezone(timezone.utc)
        # Whole seconds: the API takes milliseconds and the printed period must match what was sent.
        self.now = self._instant.replace(microsecond=0)
        self.monotonic = monotonic
        self._origin = monotonic()

    def wall(self) -> datetime:
        return self._instant + timedelta(seconds=self.monotonic() - self._origin)

    def wait(self, seconds: float, cancel: threading.Event) -> bool:
        """Wait (pacing, backoff) unless ``cancel`` is set meanwhile; True when cancelled."""
        return cancel.wait(seconds)


# ----------------------------------------------------------------------------------------------
# API client: the only code that talks HTTP
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    netloc: str  # host[:port] exactly as sent (and signed) in the Host header
    host: str
    base_path: str

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}{path}"


def parse_endpoint(url: str, option: str) -> Endpoint:
    """Validate a base URL: https (http only for loopback), a host, no credentials or query."""
    try:
        parts = urlsplit(url.strip())
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
    return Endpoint(parts.scheme, parts.netloc, host, parts.path.rstrip("/"))


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
            self._clock.wait(wait, cancel)
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


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter, so parallel retries do not hit the API in step."""
    import random

    return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class ApiCall:
    """One request to send: the client signs, paces and retries it."""

    method: str
    endpoint: Endpoint
    path: str
    what: str  # names the call in messages: "ShowStatistics for 2026-05-08 … (Preset Service)"
    query: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


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

    def request(self, endpoint: Endpoint, project_id: str | None, label: str, body: Mapping[str, Any] | None = None,
                params: tuple[tuple[str, str], ...] = ()) -> ApiCall:
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        return ApiCall(self.method, endpoint, self.path.format(project_id=project_id), f"{self.name} for {label}",
                       query=params, body=data)

    def planned(self, endpoint: Endpoint, project_id: str | None, body: Mapping[str, Any] | None,
                params: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """The dry run's account of a call: method, URL (``{project_id}`` when unknown) and body."""
        from urllib.parse import urlencode

        url = endpoint.url(self.path.format(project_id=project_id or "{project_id}"))
        return {"method": self.method, "url": url + (f"?{urlencode(params)}" if params else ""), "body": body}

    def answer(self, client: Client, endpoint: Endpoint, project_id: str | None, label: str,
               body: Mapping[str, Any] | None = None, params: tuple[tuple[str, str], ...] = ()) -> tuple[Any, Any]:
        """Send one call: its raw JSON answer and what its reader makes of it."""
        call = self.request(endpoint, project_id, label, body, params)
        data = client.send(call)
        return data, self.read(data, call.what, body if body is not None else dict(params))


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


def describe_network_error(exc: Exception, timeout: float) -> str:
    """A short, secret-free description of a requests exception."""
    import requests  # already loaded by the caller; imported for the exception classes

    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        match = re.search(r"certificate verify failed[^'\")]*", text)
        return "TLS certificate verification failed" + (f" ({match.group(0).strip()})" if match else "")
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {timeout:g} s (--timeout)"
    for needle, meaning in (("refused", "connection refused"), ("reset", "connection reset by the server"),
                            ("RemoteDisconnected", "the server closed the connection without answering"),
                            ("Name or service not known", "the host name cannot be resolved"),
                            ("nodename nor servname", "the host name cannot be resolved"),
                            ("getaddrinfo failed", "the host name cannot be resolved")):
        if needle in text:
            return meaning
    return f"network error ({type(exc).__name__})"


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


def api_failure_message(what: str, reply: Reply) -> str:
    """``<what> failed: HTTP <status>: <error_code>: <error_msg> (X-Request-Id: …)``."""
    message = f"{what} failed: HTTP {reply.status}"
    detail = ""
    try:
        data = json.loads(reply.text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        code, msg = data.get("error_code"), data.get("error_msg")
        nested = data.get("error")
        if code is None and msg is None and isinstance(nested, dict):  # IAM: {"error": {"code", "message"}}
            code, msg = nested.get("code"), nested.get("message")
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
    return ("the credentials lack a permission: the IAM user needs modelarts:monitoring:get "
            "(and iam:projects:get when the project id is looked up; or pass --project-id)")


def checked_data(reply: Reply, what: str) -> Any:
    """A final reply as JSON data, or the contract's error for its status."""
    if reply.status in (401, 403):
        raise AuthRejected(api_failure_message(what, reply), hint=auth_hint(reply.status))
    if not 200 <= reply.status < 300:
        message = api_failure_message(what, reply)
        if 300 <= reply.status < 400:
            location = printable(reply.headers.get("Location", ""), 120)
            message += f"; redirect to {location!r} not followed"
        raise ApiError(message)
    return parse_json_text(reply.text, what)


class AttemptDeadline:
    """--timeout for one attempt as a whole. When it passes, the attempt's connection is shut
    down, which ends whatever read is in progress: a per-read timeout never fires on a server
    that trickles a byte a second. Connections report themselves (``watch_current``) from the
    thread that runs the attempt."""

    _current = threading.local()

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> AttemptDeadline:
        try:
            self._timer.start()
        except RuntimeError:
            raise ApiError("cannot start a timer thread: the machine is out of memory or threads") from None
        AttemptDeadline._current.deadline = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
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

    def _expire(self) -> None:
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

    class HTTPPool(connectionpool.HTTPConnectionPool):
        ConnectionCls = watched(connection.HTTPConnection)

    class HTTPSPool(connectionpool.HTTPSConnectionPool):
        ConnectionCls = watched(connection.HTTPSConnection)

    pools = {"http": HTTPPool, "https": HTTPSPool}

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    return Adapter(pool_connections=2, pool_maxsize=MAX_CONCURRENCY, max_retries=0)


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


class Client:
    """Sends any ApiCall: owns the HTTP session, the signer, pacing, retries and the fan-out."""

    def __init__(self, credentials: Credentials, options: ClientOptions, console: Console, clock: Clock,
                 env: Mapping[str, str]) -> None:
        # Imported here: --help, --version, --dry-run and usage errors never pay for them.
        import requests
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
        # Workers and deadline timers need little stack: 8 MiB each (the usual default) would
        # reserve a lot of address space under a memory limit for a few frames of requests.
        threading.stack_size(THREAD_STACK_BYTES)
        self._session = requests.Session()
        # The run's environment, not the process's: no ~/.netrc (it would replace the signed
        # Authorization header), proxies and the CA bundle from ``env`` only.
        self._session.trust_env = False
        self._session.verify = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
        self._adapter = watched_adapter()
        self._session.mount("https://", self._adapter)
        self._session.mount("http://", self._adapter)
        self._session.headers["User-Agent"] = f"maas_rest_usage_stats/{__version__}"
        self._session.headers["Accept-Encoding"] = "identity"  # read_body still caps a compressed answer

    def close(self) -> None:
        self._session.close()

    def _redact(self, text: str) -> str:
        return redact(text, self._credentials.secrets())

    def _cancelled_error(self, call: ApiCall) -> ApiError:
        return ApiError(f"{call.what}: cancelled after another request failed")

    def send(self, call: ApiCall) -> Any:
        """The JSON data of the call's answer: paced, signed afresh and retried per attempt."""
        retries = self.options.retries
        failure, retry_after = "", None
        for attempt in range(retries + 1):
            if attempt:
                delay = retry_after if retry_after is not None else backoff_delay(attempt - 1)
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
                return redact_data(checked_data(outcome, call.what), self._credentials.secrets())
            failure = api_failure_message(call.what, outcome)
            retry_after = parse_retry_after(outcome.headers.get("Retry-After"), self.clock.wall())
        raise ApiError(failure + (f" (after {retries + 1} attempts)" if retries else ""),
                       hint="the service may be overloaded or unreachable; try again later, "
                            "or raise --retries/--timeout")

    def _attempt(self, call: ApiCall) -> Reply | str:
        """One signed exchange within --timeout as a whole: the reply, or a retryable failure."""
        import requests

        url, headers, payload = self._signed(call)
        where = f"{call.method} {call.endpoint.base_path}{call.path}"
        started = self.clock.monotonic()
        deadline = AttemptDeadline(self.options.timeout)
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
        """A retryable failure's description; raises for the failures a retry cannot mend."""
        import requests
        import urllib3

        timeout = self.options.timeout
        if expired or isinstance(exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)):
            return f"{call.what} failed: no answer within {timeout:g} s (--timeout)"
        if isinstance(exc, requests.exceptions.SSLError):
            raise ApiError(f"{call.what} failed: {describe_network_error(exc, timeout)}",
                           hint="the server's certificate is not trusted; for a private CA set "
                                "REQUESTS_CA_BUNDLE to its PEM file") from None
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                            urllib3.exceptions.HTTPError)):
            return f"{call.what} failed: {describe_network_error(exc, timeout)}"
        if isinstance(exc, requests.exceptions.RequestException):
            raise ApiError(f"{call.what} failed: {describe_network_error(exc, timeout)}") from None
        if isinstance(exc, OSError):  # requests reports an unreadable REQUESTS_CA_BUNDLE this way
            raise ApiError(f"{call.what} failed: {exc.strerror or 'cannot load the TLS certificate bundle'}",
                           hint="check that REQUESTS_CA_BUNDLE names a readable PEM file") from None
        raise exc

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

        for _ in range(count):
            try:
                threading.Thread(target=open_one, daemon=True).start()
            except RuntimeError:
                return

    def fan_out(self, tasks: Sequence[Callable[[], Any]], on_result: Callable[[int, Any], None]) -> None:
        """Run every task, concurrently once one signed request of this run has succeeded.

        ``on_result(index, value)`` runs in this thread for each success as it arrives (so a store
        keeps the days that succeeded); the first failure cancels the rest and is raised.
        """
        import queue

        pending = list(range(len(tasks)))
        if pending and not self.warm:
            # A wrong key must cost one failed signature, not a burst: API Gateway locks a key
            # after more than 5 consecutive failures.
            on_result(0, tasks[0]())
            pending = pending[1:]
        jobs: queue.SimpleQueue[int] = queue.SimpleQueue()
        finished: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
        for index in pending:
            jobs.put(index)

        def work() -> None:
            while not self._cancelled.is_set():
                try:
                    index = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    finished.put((index, tasks[index](), None))
                except BaseException as exc:  # handed to the main thread, which raises it
                    finished.put((index, None, exc))

        # Daemon threads: a failure or Ctrl-C ends the run at once instead of waiting for requests
        # still in flight (a hung server would otherwise hold the exit for --timeout).
        for started in range(min(self.options.concurrency, len(pending))):
            try:
                threading.Thread(target=work, daemon=True).start()
            except RuntimeError:  # no memory or no thread left: go on with the workers there are
                if not started:
                    raise ApiError("cannot start a worker thread: the machine is out of memory or threads") from None
                break
        try:
            for _ in pending:
                index, value, failure = _next_finished(finished)
                if failure is not None:
                    raise failure
                on_result(index, value)
        except BaseException:
            self._cancelled.set()
            raise


def _next_finished(finished: Any) -> Any:
    """The next finished task, waiting in short steps: the kernel may deliver Ctrl-C to a worker
    thread blocked in a read, and then only a main thread that wakes up runs Python's handler
    (a plain blocking get would sleep through it until some request ended)."""
    import queue

    while True:
        try:
            return finished.get(timeout=SIGNAL_CHECK_INTERVAL)
        except queue.Empty:
            continue


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
SHOW_STATISTICS = CallKind("ShowStatistics", "POST", "maas", STATISTICS_PATH, usage_of)


def lookup_project_id(client: Client, iam: Endpoint, region: str) -> str:
    """The id of the project named like the region, from IAM."""
    return IAM_PROJECTS.answer(client, iam, None, region, params=(("name", region),))[1]


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

    __slots__ = ("sums",)

    def __init__(self, **sums: Any) -> None:
        unknown = set(sums) - {m.field for m in SUMS}
        if unknown:
            raise TypeError(f"Usage has no sum {sorted(unknown)}")
        self.sums = {m.field: sums.get(m.field, 0 if m.api_unit == 1 else ZERO) for m in SUMS}

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
            return Usage(**{name: value + other.sums[name] for name, value in self.sums.items()})

    def anomalies(self) -> list[str]:
        """The bounds of METRICS these exact sums break: ``total_errors 12 > total_requests 3``."""
        values = self.metrics()
        return [f"{metric.name} {values[metric.name]} > {metric.at_most} {values[metric.at_most]}"
                for metric in SUMS if metric.at_most is not None
                and self.sums[metric.field] > self.sums[METRICS_BY_NAME[metric.at_most].field]]

    def metrics(self) -> dict[str, Any]:
        """The contract's METRICS: actual units as integers (tokens rounded half up), the derived ones."""
        with localcontext() as context:
            context.prec = 60
            values: dict[str, Any] = {}
            for metric in METRICS:
                if metric.field is None:
                    values[metric.name] = metric.derive(values)
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
    bucket: str | None  # hour, day, week, month or None
    by_key: bool
    previous: Period | None = None  # --compare: the period the report is compared with

    @property
    def batch(self) -> bool:
        return self.infer_type == "batch"

    @property
    def groupings(self) -> tuple[Grouping, ...]:
        """The dimensions this query's rows are split by."""
        return tuple(grouping for grouping in GROUPINGS if grouping.split(self))

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
    service_type: int
    api_key: str | None
    bucket: Period | None = None  # the whole calendar hour, day, week or month of a time-bucket row
    stored: dict[date, Usage] = field(default_factory=dict)  # days read from the store
    windows: list[Window] = field(default_factory=list)  # the rest, fetched live

    @property
    def total(self) -> Usage:
        unfetched = [w.label for w in self.windows if w.usage is None]
        if unfetched:
            raise ValueError(f"row total asked before its windows were fetched: {unfetched}")
        return total_of([*self.stored.values(), *(w.usage for w in self.windows if w.usage is not None)])

    @property
    def source(self) -> str:
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


def _bucket_header(query: Query) -> str:
    return {"hour": "Hour", "day": "Day", "week": "Week of", "month": "Month"}[query.bucket]


def _row_bounds(row: Row, query: Query) -> list[str]:
    return [row.period.start.astimezone(query.zone).isoformat(), row.period.end.astimezone(query.zone).isoformat()]


TIME_BUCKET = Grouping(
    "time bucket", split=lambda query: query.bucket is not None, header=_bucket_header,
    label=lambda row, query: bucket_label(row, query),
    json=lambda row, query: dict(zip(("start", "end"), _row_bounds(row, query))),
    csv_columns=("start", "end"), csv=_row_bounds,
    prometheus=lambda row, query: [])  # no time buckets in Prometheus: the collector has no timestamps
SERVICE_TYPE = Grouping(
    "service-type", split=lambda query: len(query.service_types) > 1, header=lambda query: "Service",
    label=lambda row, query: SHORT_SERVICE_NAMES[row.service_type],
    json=lambda row, query: {"service_type": row.service_type, "service_name": SERVICE_NAMES[row.service_type]},
    csv_columns=("service_type",), csv=lambda row, query: [row.service_type],
    # Every sample names its service and the inference type it ran as, split or not.
    prometheus=lambda row, query: [("service_type", str(row.service_type)),
                                   ("service", SERVICE_NAMES[row.service_type]), ("infer_type", query.infer_type)])
API_KEY = Grouping(
    "api-key", split=lambda query: query.by_key, header=lambda query: "API Key",
    label=lambda row, query: printable(row.api_key or '""', KEY_LABEL_WIDTH),
    json=lambda row, query: {"api_key": row.api_key},
    csv_columns=("api_key",), csv=lambda row, query: ["" if row.api_key is None else row.api_key],
    prometheus=lambda row, query: [("api_key", row.api_key)] if query.by_key and row.api_key is not None else [])
GROUPINGS = (TIME_BUCKET, SERVICE_TYPE, API_KEY)  # in the order of table columns, JSON fields and CSV columns


StoredDays = Callable[[Row, Sequence[tuple[date, Period]]], dict[date, Usage]]


def plan_rows(query: Query, now: datetime, stored_days: StoredDays | None = None) -> list[Row]:
    """Rows in time order, then service type, then key, each with its stored days and live windows.

    ``stored_days(row, final_days)`` gives what a history store holds of a row's final days.
    """
    keys: Sequence[str | None] = query.api_keys if query.by_key and query.api_keys is not None else (None,)
    rows = []
    for bucket in split_buckets(query.period, query.bucket, query.zone):
        whole = calendar_bucket(bucket.start, query.bucket, query.zone) if query.bucket else None
        for service_type in query.service_types:
            for key in keys:
                row = Row(bucket, service_type, key, whole)
                days = final_days(bucket, query.zone, now) if stored_days is not None else []
                if stored_days is not None and days:
                    row.stored = stored_days(row, days)
                row.windows = plan_windows(query, row, days)
                rows.append(row)
    return rows


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


def anomalies_of(query: Query, rows: Sequence[Row]) -> list[Anomaly]:
    """The fetched windows and stored days whose figures break a bound, in time order."""
    found = [Anomaly(window.period, window.label, broken, row_scope(row))
             for row, window in windows_of(rows) if window.usage is not None for broken in window.usage.anomalies()]
    for row in rows:
        for day, usage in row.stored.items():
            period = Period(day_start(day, query.zone), day_start(day + timedelta(days=1), query.zone))
            found += [Anomaly(period, f"{day} ({row_scope(row)}) in the store", broken, row_scope(row))
                      for broken in usage.anomalies()]
    return sorted(found, key=lambda anomaly: anomaly.period.start)


def coverage_of(query: Query, rows: Sequence[Row], now: datetime) -> Coverage:
    """The coverage of the rows' live windows; days read from a store are never missing."""
    retained_from = now - RETENTION
    old_parts = sorted((Period(w.period.start, min(w.period.end, retained_from))
                        for _, w in windows_of(rows) if w.period.start < retained_from), key=lambda p: p.start)
    missing: list[Period] = []
    for part in old_parts:
        if missing and part.start <= missing[-1].end:
            missing[-1] = Period(missing[-1].start, max(missing[-1].end, part.end))
        else:
            missing.append(part)
    settling_from = now - FINAL_AFTER
    provisional = max(settling_from, query.period.start) if query.period.end > settling_from else None
    return Coverage(retained_from, tuple(missing), provisional, tuple(anomalies_of(query, rows)))


@dataclass
class Report:
    """What the renderers read: the query, its rows (fetched), their coverage and the store's account."""

    query: Query
    project_id: str | None
    rows: list[Row]
    coverage: Coverage
    store: dict | None = None  # the JSON "store" report, when a store was used
    previous: Report | None = None  # --compare: the same report over the previous period

    @property
    def total(self) -> Usage:
        return total_of(row.total for row in self.rows)


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
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"),
             (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a device")
    raise StoreRefused(f"the store {path} is {kind}, not a regular file; give the path of the file itself")


def writable(path: str) -> bool:
    """Whether a store file and its folder (for ``-wal``/``-shm``) can be written."""
    return os.access(path, os.W_OK) and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK)


class Store:
    """An SQLite file of final daily totals; one transaction per saved day."""

    def __init__(self, path: str, connection: Any) -> None:
        self.path = path
        self._db = connection
        self.days_read = 0
        self.days_saved = 0
        self.days_unstorable = 0
        self.write_failure: str | None = None

    @classmethod
    def open(cls, path: str, lock_timeout: float, read_only: bool = False) -> Store | None:
        """Open or create a store; refuse anything that is not one, without touching it.

        ``read_only`` (for --dry-run) creates nothing: a missing store is None. ``lock_timeout`` bounds
        the wait for another run's lock.
        """
        import sqlite3  # imported here: only runs with a store pay for it

        exists = check_store_path(path)
        if read_only or (exists and not writable(path)):
            if not exists:
                return None
            return cls(path, cls._open_read_only(path, lock_timeout))
        if not exists:
            try:
                _make_private_dirs(os.path.dirname(os.path.abspath(path)))
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                pass  # another run created it a moment ago
            except OSError as exc:
                raise StoreError(f"cannot create the store {path}: {exc.strerror}") from None
        try:
            db = sqlite3.connect(path, timeout=lock_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        try:
            cls._check(db, path, lock_timeout)
        except BaseException:
            db.close()
            raise
        return cls(path, db)

    @classmethod
    def _open_read_only(cls, path: str, lock_timeout: float) -> Any:
        """A read-only connection that never writes ``-wal``/``-shm``: where SQLite cannot create
        them (a read-only file system), the file is read as immutable (nobody can write it there)."""
        import sqlite3

        failure: Exception | None = None
        for options in ("mode=ro", "mode=ro&immutable=1"):
            db = None
            try:
                # A path's bytes as given (os.fsencode): a name that is not UTF-8 is still a name.
                db = sqlite3.connect(f"file:{quote(os.fsencode(os.path.abspath(path)))}?{options}", uri=True,
                                     timeout=lock_timeout, isolation_level=None)
                cls._check(db, path, lock_timeout, create=False)
                return db
            except StoreError as exc:
                failure = exc
            except sqlite3.Error as exc:
                failure = exc
            if db is not None:
                db.close()
        raise StoreError(f"cannot read the store {path}: {failure}")

    @staticmethod
    def _check(db: Any, path: str, lock_timeout: float, create: bool = True) -> None:
        import sqlite3

        try:
            # One statement, one snapshot: another run may be creating this store right now.
            app_id, version, tables = db.execute(
                "SELECT (SELECT application_id FROM pragma_application_id()),"
                " (SELECT user_version FROM pragma_user_version()), (SELECT count(*) FROM sqlite_master)").fetchone()
        except sqlite3.OperationalError as exc:  # locked past the timeout, unreadable: not the file's fault
            raise StoreError(f"cannot read the store {path}: {exc}") from None
        except sqlite3.DatabaseError:
            raise StoreRefused(f"the store {path} is not an SQLite file; choose another path") from None
        if app_id == 0 and version == 0 and tables == 0:
            if create:
                Store._create(db, path, lock_timeout)
        elif app_id != STORE_APPLICATION_ID:
            raise StoreRefused(f"the store {path} is another program's SQLite database; choose another path")
        elif version > STORE_SCHEMA_VERSION:
            raise StoreRefused(f"the store {path} was written by a newer version of this script "
                               f"(schema {version}); upgrade the script")
        elif version < 1:
            raise StoreRefused(f"the store {path} is incomplete (schema version {version})")

    @staticmethod
    def _create(db: Any, path: str, lock_timeout: float) -> None:
        """Create the schema (once, whichever run is first) and switch to WAL.

        Two runs may find the same new file empty: the schema is re-checked under the write lock,
        and SQLite's immediate "locked" answers while the other run initialises are retried.
        """
        import sqlite3

        deadline = time.monotonic() + lock_timeout
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    db.execute(STORE_SCHEMA)
                    db.execute(f"PRAGMA application_id={STORE_APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
                db.execute("COMMIT")
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a nightly writer
                return
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if not isinstance(exc, sqlite3.OperationalError) or time.monotonic() > deadline:
                    raise StoreError(f"cannot initialise the store {path}: {exc}") from None
                time.sleep(0.05)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _key(query: Query, project_id: str, row: Row) -> tuple:
        keys = [row.api_key] if row.api_key is not None else \
            (sorted(query.api_keys) if query.api_keys is not None else None)
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
            rows = self._db.execute(
            f"SELECT day, start_ms, end_ms, {', '.join(m.name for m in SUMS)} FROM days WHERE region=?"
            " AND project_id=? AND infer_type=? AND service_type=? AND api_keys=? AND ips=? AND timezone=?"
            " AND day BETWEEN ? AND ?",
            (*self._key(query, project_id, row), days[0][0].isoformat(), days[-1][0].isoformat())).fetchall()
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
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                columns = ["region", "project_id", "infer_type", "service_type", "api_keys", "ips", "timezone",
                           "day", "start_ms", "end_ms", *values, "fetched_at"]
                self._db.execute(f"INSERT OR REPLACE INTO days ({', '.join(columns)}) "
                                 f"VALUES ({', '.join('?' * len(columns))})",
                                 (*self._key(query, project_id, row), day.isoformat(), period.start_ms,
                                  period.end_ms, *values.values(), fetched_at.isoformat(timespec="seconds")))
        except sqlite3.Error as exc:
            self.write_failure = f"cannot write to the store {self.path}: {exc}"
            return
        self.days_saved += 1


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
    assert row.bucket is not None
    start = row.bucket.start.astimezone(query.zone)
    if query.bucket == "hour":
        label = start.strftime("%Y-%m-%d %H:00") + (f" {_iso_offset(start)}" if _repeated(start) else "")
    else:
        label = start.strftime("%Y-%m") if query.bucket == "month" else start.date().isoformat()
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
    return [f"* partial: the range starts or ends inside this {report.query.bucket}"]


TABLE_WIDTH = 80  # a grouped table and the chart fit a terminal's 80 columns
KEY_LABEL_WIDTH = 16  # a longer key label is cut to 15 characters and "…" in the grouped table
BAR_EIGHTHS = "▏▎▍▌▋▊▉█"  # 1/8 to 8/8 of a character: a bar's length to an eighth


def _table_style(name: str | None, narrow: bool = False) -> Any:
    # Imported here: only table output pays for tabulate.
    import tabulate

    if name:
        return name
    if narrow:  # the same frame, two spaces between columns instead of " | ": 1 column each saved
        line = tabulate.Line("+-", "-", "--", "-+")
        row = tabulate.DataRow("| ", "  ", " |")
        return tabulate.TableFormat(lineabove=line, linebelowheader=tabulate.Line("+=", "=", "==", "=+"),
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
    if metric.style == "percent":
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
    return [format_rate(values[m.name]) if m.style == "percent" else format_compact(values[m.name])
            for m in shown_metrics(batch)]


def row_labels(row: Row, query: Query) -> list[str]:
    """What tells a grouped row from the others: its cell of each grouping the rows are split by."""
    return [grouping.label(row, query) for grouping in query.groupings]


def widest_line(text: str) -> int:
    return max(map(display_width, text.splitlines()), default=0)


def grouped_table(report: Report, table_format: str | None) -> str:
    """One row per group and a Total row, in 80 columns: the full layout when it fits, else shorter
    headers and compact numbers, else (in the default style) also lighter column rules."""
    layouts = [(False, _table_style(table_format)), (True, _table_style(table_format))]
    if not table_format:
        layouts.append((True, _table_style(None, narrow=True)))
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
    layout = 2 if query.bucket == "hour" else 1 if narrow else 0
    headers += [metric.headers[layout] for metric in shown_metrics(query.batch)]

    def cells(usage: Usage) -> list[str]:
        if narrow:
            return narrow_cells(usage, query.batch)
        return [value for _, value in metric_lines(usage, query.batch, compact=True)]

    rows = [row_labels(row, query) + cells(row.total) for row in report.rows]
    rows.append(["Total"] + [""] * (label_columns - 1) + cells(report.total))
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
    parts = [row_labels(row, report.query) for row in report.rows]
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
        parts += [grouped_table(report, table_format), *footnotes(report), ""]
        if chart:
            parts += [*token_chart(report, chart), ""]
    if report.previous is None:
        parts.append(tabulate.tabulate(metric_lines(report.total, query.batch), headers=["Metric", "Value"],
                                       tablefmt=style, disable_numparse=True))
        parts.append(period_line(query))
    else:
        parts.append(tabulate.tabulate(compared_lines(report.total, report.previous.total, query.batch),
                                       headers=["Metric", "Value", "Previous", "Change"], tablefmt=style,
                                       disable_numparse=True, colalign=("left", "left", "left", "right")))
        parts.append(period_line(query))
        parts.append(period_line(report.previous.query).replace("Period:", "Previous:", 1))
    if raw:
        parts.append("Raw responses:")
        parts += [f"{window.label}: {json.dumps(_exact_json(window.response))}"
                  for _, window in windows_of(report.rows)]
    return "\n".join(parts) + "\n"


def metric_changes(current: Usage, previous: Usage) -> dict[str, Decimal | None]:
    """--compare: each metric's change in percent (1 decimal, half up; None when the previous value
    is 0), a percentage's as a difference in percentage points (2 decimals; None when either is)."""
    now, before = current.metrics(), previous.metrics()
    changes: dict[str, Decimal | None] = {}
    for metric in METRICS:
        name = metric.name
        if metric.style == "percent":
            rates = (now[name], before[name])
            changes[name] = None if None in rates else (rates[0] - rates[1]).quantize(Decimal("0.01"), ROUND_HALF_UP)
        elif before[name] == 0:
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


def compared_lines(current: Usage, previous: Usage, batch: bool) -> list[tuple[str, str, str, str]]:
    """The totals table with --compare: metric, value, previous value, change."""
    changes, now, before = metric_changes(current, previous), current.metrics(), previous.metrics()
    return [(metric.label, metric_text(metric, now[metric.name]), metric_text(metric, before[metric.name]),
             change_text(metric, changes[metric.name], now[metric.name])) for metric in shown_metrics(batch)]


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
    document["rows"] = [_json_row(row, query, with_source=report.store is not None) for row in report.rows]
    document["coverage"] = _json_coverage(report.coverage, query.zone)
    if report.previous is not None:
        before = report.previous
        document["previous"] = {"period": _json_period(before.query.period, query.zone),
                                "totals": _json_metrics(before.total),
                                "coverage": _json_coverage(before.coverage, query.zone)}
        if query.groupings:
            document["previous"]["rows"] = [_json_row(row, query, with_source=report.store is not None)
                                            for row in before.rows]
        document["change"] = {name: None if value is None else float(value)
                              for name, value in metric_changes(report.total, before.total).items()}
    if report.store is not None:
        document["store"] = report.store
    if raw:
        document["windows"] = [{"start_ms": window.period.start_ms, "end_ms": window.period.end_ms,
                                "service_type": row.service_type, "api_key": row.api_key,
                                "response": _exact_json(window.response)} for row, window in windows_of(report.rows)]
    return json_document(document, indent=2) + "\n"


def _json_row(row: Row, query: Query, with_source: bool) -> dict[str, Any]:
    document = {name: value for grouping in GROUPINGS for name, value in grouping.json(row, query).items()}
    document.update(partial=row.partial, **_json_metrics(row.total))
    if with_source:
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
    columns = [*(column for grouping in GROUPINGS for column in grouping.csv_columns), *METRIC_NAMES]
    lines = [line(columns)] if header else []
    for row in report.rows + (report.previous.rows if report.previous is not None else []):
        metrics = row.total.metrics()
        lines.append(line([*(value for grouping in GROUPINGS for value in grouping.csv(row, query)),
                           *("" if value is None else f"{value:.2f}" if isinstance(value, Decimal) else value
                             for value in metrics.values())]))
    return "".join(lines)


# --format prometheus: every family's HELP text, in the order they are written.
PROMETHEUS_HELP = {
    "maas_usage_tokens": "Tokens used in the period, by kind (actual tokens).",
    "maas_usage_requests": "Requests in the period.",
    "maas_usage_errors": "Failed requests in the period.",
    "maas_usage_completed_tasks": "Batch tasks completed in the period.",
    "maas_usage_inference_count": "Batch inferences in the period.",
    "maas_usage_period_start_timestamp_seconds": "Start of the period (Unix time).",
    "maas_usage_period_end_timestamp_seconds": "End of the period, exclusive (Unix time).",
    "maas_usage_complete": "1 when no part of the period lies before MaaS's 30-day retention, else 0.",
}


def prometheus_label_value(text: str) -> str:
    """A label value as the text exposition format writes it: backslash, quote and newline escaped."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_seconds(ms: int) -> str:
    """Epoch milliseconds as seconds, exact: ``1778169600`` or ``1778169600.5``."""
    seconds, millis = divmod(ms, 1000)
    return f"{seconds}.{millis:03d}".rstrip("0") if millis else str(seconds)


def _prometheus_labels(report: Report, row: Row) -> list[tuple[str, str]]:
    query = report.query
    return [("region", query.region), ("project_id", report.project_id or ""),
            *(label for grouping in GROUPINGS for label in grouping.prometheus(row, query))]


def _prometheus_samples(row: Row, batch: bool, complete: bool) -> list[tuple[str, str | None, str]]:
    """One row's samples: (family, its ``kind`` label or None, value)."""
    values = row.total.metrics()
    samples = [(metric.family, metric.kind, str(values[metric.name]))
               for metric in shown_metrics(batch) if metric.family is not None]
    return samples + [("maas_usage_period_start_timestamp_seconds", None, prometheus_seconds(row.period.start_ms)),
                      ("maas_usage_period_end_timestamp_seconds", None, prometheus_seconds(row.period.end_ms)),
                      ("maas_usage_complete", None, "1" if complete else "0")]


def render_prometheus(report: Report) -> str:
    """The text exposition format (0.0.4) for node_exporter's textfile collector: gauges, one
    sample per row and metric, no timestamps (rows are never time buckets here)."""
    families: dict[str, list[str]] = {name: [] for name in PROMETHEUS_HELP}
    for row in report.rows:
        labels = _prometheus_labels(report, row)
        for family, kind, value in _prometheus_samples(row, report.query.batch, report.coverage.complete):
            pairs = labels + ([("kind", kind)] if kind else [])
            text = ",".join(f'{name}="{prometheus_label_value(v)}"' for name, v in pairs)
            families[family].append(f"{family}{{{text}}} {value}")
    lines = []
    for family, samples in families.items():
        if samples:
            lines += [f"# HELP {family} {PROMETHEUS_HELP[family]}", f"# TYPE {family} gauge", *samples]
    return "\n".join(lines) + "\n"

def render_plan(query: Query, project_id: str | None, endpoints: Mapping[str, Endpoint], rows: Sequence[Row],
                coverage: Coverage, output_format: str, previous: Sequence[Row] = ()) -> str:
    """The planned requests: the current period's, then (--compare) the previous period's."""
    requests = [window.call.planned(endpoints[window.call.endpoint], project_id, window.body)
                for _, window in windows_of([*rows, *previous])]
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
  %(prog)s --from yesterday --to today --format csv --no-header >> usage.csv   # cron, after 03:00
  %(prog)s --from 2026-11-24T07:15:28+08:00 --format json  # from where the last JSON period ended
  %(prog)s --last 24h --timezone asia/shanghai       # zone names in any case; sent as Asia/Shanghai
  %(prog)s --last 7d --dry-run                        # show the requests, send nothing
  %(prog)s --store ~/.local/share/maas/usage.db --record -q   # nightly, after 03:00
  %(prog)s --last 24h --format prometheus --output /var/lib/node_exporter/textfile/maas.prom -q

credentials: HW_ACCESS_KEY/HW_SECRET_KEY[/HW_SECURITY_TOKEN], HUAWEICLOUD_SDK_AK/SK, --credentials-file,
  or ~/.huaweicloud/credentials. Keys are never accepted on the command line and never printed.
exit codes: 0 success, 1 API or network failure, 2 usage error, 3 credentials missing or rejected.
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
    presets = {"today": "local today 00:00 to now", "yesterday": "the whole of yesterday",
               "this-week": "Monday 00:00 of this week to now",
               "last-week": "the whole previous Monday-to-Monday week",
               "this-month": "from the 1st of this month to now",
               "last-month": "the whole previous calendar month (1st 00:00 to the 1st of this month)"}
    for name, meaning in presets.items():  # one range at a time: settings_from refuses two
        when.add_argument(f"--{name}", dest="presets", action="append_const", const=name, help=meaning)
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
    what.add_argument("--timeout", type=float, default=30.0, metavar="S", help="seconds for each attempt as a whole: connect, TLS, headers, body (default 30)")
    what.add_argument("--retries", type=int, default=3, metavar="N", help="retries for 429/5xx/network (default 3)")
    what.add_argument("--concurrency", type=int, default=MAX_CONCURRENCY, metavar="N",
                      help=f"requests in flight, 1-{MAX_CONCURRENCY} (default {MAX_CONCURRENCY})")

    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=tuple(FORMAT_OPTIONS), default="table",
                     help="table (default; a Filters: line names the key, IP and batch filters in effect), "
                          "json for scripts and agents, csv for spreadsheets and cron, prometheus for "
                          "node_exporter's textfile collector (no time buckets)")
    out.add_argument("--group-by", nargs="+", action="extend", metavar="BY",
                     help="rows per hour (local clock hours, always fetched live), day, week or month, "
                          "and/or per service-type, api-key; repeatable")
    out.add_argument("--table-format", metavar="STYLE", help="a tabulate style (grid, github, plain …)")
    out.add_argument("--chart", action="store_true",
                     help="tables with --group-by day, week or month: a bar chart of total tokens per row "
                          "after the grouped table (eighth blocks on UTF-8 output, else #)")
    out.add_argument("--no-header", action="store_true", help="CSV without its header line")
    out.add_argument("--raw", action="store_true", help="also show each window's raw API response")
    out.add_argument("--output", metavar="PATH",
                     help="write the result to PATH instead of stdout, atomically (a reader never sees half a "
                          "file; a failed run leaves the old file); keeps the old file's mode")
    out.add_argument("--dry-run", action="store_true", help="print the planned requests; send nothing")
    out.add_argument("-v", "--verbose", action="store_true", help="log each HTTP exchange on stderr")
    out.add_argument("-q", "--quiet", action="store_true", help="no notes or progress on stderr")
    out.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

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
    choices = (*BUCKET_UNITS, "service-type", "api-key")
    words = [w.strip().lower() for value in values for w in value.split(",") if w.strip()]
    for word in words:
        if word not in choices:
            raise UsageError(f"--group-by: unknown grouping {word!r}", hint=f"choose from {', '.join(choices)}")
    units = [w for w in dict.fromkeys(words) if w in BUCKET_UNITS]
    if len(units) > 1:
        raise UsageError(f"--group-by takes at most one of hour, day, week and month, not {' and '.join(units)}")
    by_key = "api-key" in words
    if by_key and not api_keys:
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


def check_clock(now: datetime) -> None:
    """A system clock before this script's release cannot be right: say so, rather than let the range
    it gives (or the signatures, which the API rejects after 15 minutes of skew) take the blame."""
    if now < RELEASE_DATE:
        raise UsageError(f"the system clock says {format_instant(now.astimezone(timezone.utc))} UTC, before this "
                         f"script was released ({RELEASE_DATE.date()}): it cannot be right",
                         hint="set the system clock (for example with NTP: timedatectl set-ntp true), then run again")


def check_table_format(name: str | None) -> None:
    if name is None:
        return
    import tabulate  # only when a style is named

    if name not in tabulate.tabulate_formats:
        raise UsageError(f"unknown --table-format {name!r}",
                         hint="choose from " + ", ".join(tabulate.tabulate_formats))


# Which output options each format takes; any other combination is a usage error.
FORMAT_OPTIONS = {"table": ("--table-format", "--raw", "--chart"), "json": ("--raw",), "csv": ("--no-header",),
                  "prometheus": ()}


def check_format_options(output_format: str, given: Sequence[str]) -> None:
    for option in given:
        if option not in FORMAT_OPTIONS[output_format]:
            formats = [name for name, options in FORMAT_OPTIONS.items() if option in options]
            raise UsageError(f"{option} applies to --format {' and '.join(formats)} only, not {output_format}")


def check_prometheus_rows(output_format: str, query: Query, record: bool) -> None:
    """Prometheus samples carry no timestamps here (the textfile collector has none), so a series
    per time bucket would be wrong."""
    if output_format == "prometheus" and query.bucket is not None:
        what = "--record (its result is per day)" if record else f"--group-by {query.bucket}"
        raise UsageError(f"--format prometheus cannot be combined with {what}: the textfile collector has "
                         f"no timestamps, so a series per {query.bucket} would be wrong",
                         hint="drop the time bucket, or use --format json or csv for rows per time bucket")


def check_output_path(path: str | None, header: bool) -> None:
    if path is not None and not header:
        raise UsageError("--output always replaces its file: it cannot be combined with --no-header",
                         hint="to append, leave out --output and use >> FILE")


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

    mode: str  # "query", "record" or "dry-run"
    query: Query
    project_id: str | None  # --project-id, else HW_PROJECT_ID / HUAWEICLOUD_SDK_PROJECT_ID
    credentials_file: str | None
    maas: Endpoint
    iam: Endpoint
    client: ClientOptions
    output: OutputOptions
    store: StoreOptions | None

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """Every endpoint by the name a CallKind goes to."""
        return {"maas": self.maas, "iam": self.iam}


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
        url, source = default, "the default endpoint"
    elif source == sdk_env:
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


def record_query(query: Query, now: datetime) -> Query:
    """--record: the range's whole final days, one row per day."""
    if query.bucket in ("hour", "week", "month"):
        raise UsageError(f"--record saves days: it cannot be combined with --group-by {query.bucket}")
    days = final_days(query.period, query.zone, now)
    if not days:
        raise UsageError("the range holds no whole final day to record (a day is final 3 hours after "
                         "its local midnight)", hint="try --from yesterday, or the default last 30 days")
    return dataclasses.replace(query, period=Period(days[0][1].start, days[-1][1].end), bucket="day")


def settings_from(args: argparse.Namespace, env: Mapping[str, str], now: datetime,
                  console: Console, stdout_encoding: str | None = None) -> Settings:
    """Validate every flag and env var; raises UsageError before anything is read or sent.
    ``stdout_encoding`` picks the chart's bar characters."""
    check_text_inputs(args, env)
    check_clock(now)
    for flag in ("from", "to", "until", "last", "timezone", "region", "project_id", "credentials_file",
                 "endpoint", "iam_endpoint", "store", "table_format", "output"):
        value = getattr(args, "start" if flag == "from" else flag)
        if value is not None and not value.strip():
            raise UsageError(f"--{flag.replace('_', '-')} was given an empty value")
    presets = list(dict.fromkeys(args.presets or ()))
    ranges = [name for name, given in (("--from/--to/--until", args.start or args.to or args.until),
                                       ("--last", args.last)) if given] + [f"--{name}" for name in presets]
    if len(ranges) > 1:
        raise UsageError(f"{' and '.join(ranges)} cannot be combined: choose one way to give the range")
    if args.to and args.until:
        raise UsageError("--to and --until cannot be combined (--to is exclusive, --until inclusive)")
    if not REGION_RE.fullmatch(args.region):
        raise UsageError(f"--region {args.region!r} is not a region id like cn-southwest-2")
    note = region_note(args.region)
    if note:
        console.note(note)
    project_id, _ = flag_or_env(args.project_id, "--project-id", env, *PROJECT_ENVS)
    if project_id is not None and not PROJECT_ID_RE.fullmatch(project_id):
        raise UsageError("the project id must be 32 lowercase letters and digits",
                         hint="find it in the console under My Credentials > API Credentials")
    if not 0 < args.timeout <= 3600:
        raise UsageError("--timeout must be a number of seconds above 0 (at most 3600)")
    if not 0 <= args.retries <= 10:
        raise UsageError("--retries must be between 0 and 10")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    check_format_options(args.format, [name for name, given in (("--table-format", args.table_format),
                                                                ("--no-header", args.no_header),
                                                                ("--raw", args.raw),
                                                                ("--chart", args.chart)) if given])
    check_output_path(args.output, not args.no_header)
    store_path, _ = flag_or_env(args.store, "--store", env, "MAAS_USAGE_STORE")
    if args.record and not store_path:
        raise UsageError("--record needs a store: --store PATH or MAAS_USAGE_STORE")
    check_table_format(args.table_format)

    zone_name, zone = zone_setting(args.timezone, env, now, console)
    last = args.last or ("30d" if args.record and not ranges else None)  # --record defaults to 30 days
    preset = presets[0] if presets else None
    request = RangeRequest(args.start, args.to, args.until, last, preset)
    period = resolve_period(request, zone, now)

    given_keys = None if args.api_keys is None else tuple(dict.fromkeys(args.api_keys))
    bucket, by_key, by_type = parse_group_by(args.group_by, given_keys)
    api_keys = given_keys or None  # a bare --api-keys means all keys, as the original skill script took it
    query = Query(region=args.region, zone_name=zone_name, zone=zone, period=period, infer_type=args.infer_type,
                  service_types=parse_service_types(args.service_type, by_type), api_keys=api_keys,
                  ips=parse_ips(args.ips), bucket=bucket, by_key=by_key)
    maas = parse_endpoint_setting(args.endpoint, "--endpoint", env, "HW_MAAS_ENDPOINT", "MODELARTS", args.region,
                                  MAAS_ENDPOINT_EXCEPTIONS.get(args.region,
                                                               MAAS_ENDPOINT_TEMPLATE.format(region=args.region)))
    iam = parse_endpoint_setting(args.iam_endpoint, "--iam-endpoint", env, "HW_IAM_ENDPOINT", "IAM", args.region,
                                 IAM_ENDPOINT_TEMPLATE.format(region=args.region))
    if args.record:
        query = record_query(query, now)
    check_prometheus_rows(args.format, query, args.record)
    if args.compare:
        if args.record or args.format == "prometheus":
            raise UsageError(f"--compare cannot be combined with {'--record' if args.record else '--format prometheus'}",
                             hint="compare in a table, JSON or CSV")
        query = dataclasses.replace(query, previous=previous_period(request, query.period, zone))
    if args.chart and not query.bucket:
        raise UsageError("--chart draws a bar per time bucket: it needs --group-by "
                         + " or ".join(BUCKET_UNITS))
    mode = "dry-run" if args.dry_run else "record" if args.record else "query"
    return Settings(
        mode=mode, query=query, project_id=project_id, credentials_file=args.credentials_file, maas=maas, iam=iam,
        client=ClientOptions(args.timeout, args.retries, args.concurrency),
        output=OutputOptions(args.format, args.table_format, not args.no_header, args.raw,
                             None if args.output is None else expand_home(args.output, env),
                             # a file written by --output is UTF-8 whatever the terminal
                             bar_characters("utf-8" if args.output else stdout_encoding) if args.chart else None),
        store=StoreOptions(expand_home(store_path, env), mode == "record", STORE_BUSY_TIMEOUT) if store_path else None)


# ----------------------------------------------------------------------------------------------
# The run: settings -> store -> plan -> fetch -> render
# ----------------------------------------------------------------------------------------------


def run(settings: Settings, env: Mapping[str, str], clock: Clock, console: Console) -> str:
    """One run after validation; returns the text for stdout."""
    store = open_store(settings.store, console, read_only=settings.mode == "dry-run")
    try:
        if settings.mode == "dry-run":
            return dry_run(settings, store, console, clock.now)
        return query_usage(settings, store, env, clock, console)
    finally:
        if store is not None:
            store.close()


def open_store(options: StoreOptions | None, console: Console, read_only: bool) -> Store | None:
    """Open the store; one that cannot be opened fails --record but only costs a note otherwise."""
    if options is None:
        return None
    try:
        store = Store.open(options.path, options.lock_timeout, read_only=read_only)
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
    if query is None:
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


def dry_run(settings: Settings, store: Store | None, console: Console, now: datetime) -> str:
    query = settings.query
    project_id = resolve_project_id(settings.project_id, None, None)
    if project_id is None:
        console.note("no project id given: the URLs show {project_id}"
                     + ("; without it the store cannot be matched, so the whole range is planned" if store else ""))
    rows = plan(settings, store, project_id, console, now, query)
    previous = plan(settings, store, project_id, console, now, query.previous_query())
    warn_about_retention(query, unrecorded_days(query, rows + previous, now) if store else None, console, now)
    coverage = coverage_of(query, rows, now)
    return render_plan(query, project_id, settings.endpoints, rows, coverage, settings.output.format, previous)


def query_usage(settings: Settings, store: Store | None, env: Mapping[str, str], clock: Clock,
                console: Console) -> str:
    query, now = settings.query, clock.now
    credentials = load_credentials(settings.credentials_file, env)
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
        if store is None:  # while IAM answers, open the MaaS connections the windows will need
            planned = sum(len(windows_of(plan_rows(q, now))) for q in (query, previous_query) if q is not None)
            connected().preopen(settings.maas, min(planned, settings.client.concurrency))
        return lookup_project_id(connected(), settings.iam, query.region)

    try:
        project_id = resolve_project_id(settings.project_id, credentials, looked_up)
        assert project_id is not None  # the lookup always answers or raises
        rows = plan(settings, store, project_id, console, now, query)
        previous_rows = plan(settings, store, project_id, console, now, previous_query)
        unrecorded = unrecorded_days(query, rows + previous_rows, now) if store else None
        warn_about_retention(query, unrecorded, console, now)
        windows = windows_of(rows + previous_rows)  # the previous period's after the current ones
        if windows:
            fetch(connected(), settings.endpoints, project_id, windows, console,
                  save=None if store is None else lambda row, window: save_day(store, query, project_id, row,
                                                                                window, now))
    finally:
        if client is not None:
            client.close()
    shown = printed_labels(query, rows, credentials.secrets())
    report = Report(shown, project_id, rows, coverage_of(shown, rows, now))
    if previous_query is not None:
        shown = printed_labels(previous_query, previous_rows, credentials.secrets())
        report.previous = Report(shown, project_id, previous_rows, coverage_of(shown, previous_rows, now))
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
                        "days_unrecorded": unrecorded}
    return render(report, settings.output)


def fetch(client: Client, endpoints: Mapping[str, Endpoint], project_id: str, windows: Sequence[tuple[Row, Window]],
          console: Console, save: Callable[[Row, Window], None] | None) -> None:
    """Fill every window with its call's answer; ``save`` keeps each whole final day as it arrives."""
    def task(window: Window) -> Callable[[], tuple[Any, Any]]:
        endpoint = endpoints[window.call.endpoint]
        return lambda: window.call.answer(client, endpoint, project_id, window.label, window.body)

    if not client.warm and windows:  # the first window goes alone: open the connections for the rest meanwhile
        client.preopen(endpoints[windows[0][1].call.endpoint], min(len(windows), client.options.concurrency) - 1)
    done = 0

    def arrived(index: int, answer: tuple[Any, Any]) -> None:
        nonlocal done
        row, window = windows[index]
        window.response, window.usage = answer
        if save is not None:
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
    if output.format == "json":
        return render_json(report, output.raw)
    if output.format == "csv":
        return render_csv(report, output.header)
    if output.format == "prometheus":
        return render_prometheus(report)
    return render_table(report, output.table_format, output.raw, output.chart)


def retention_note(period: Period, now: datetime, zone: tzinfo) -> str | None:
    oldest = now - RETENTION
    if period.start >= oldest:
        return None
    return (f"MaaS keeps statistics for 30 days only: the part of the range before "
            f"{format_instant(oldest.astimezone(zone))} may come back empty")


def warn_about_retention(query: Query, unrecorded: Sequence[str] | None, console: Console, now: datetime) -> None:
    """Warn when part of what is fetched live is older than MaaS's 30-day retention.

    ``unrecorded`` is the store's list of such dates, or None when no store is used.
    """
    if unrecorded is None:
        start = query.period.start if query.previous is None else query.previous.start
        note = retention_note(Period(start, query.period.end), now, query.zone)
        if note:
            console.note(note)
    elif unrecorded:
        console.note(f"{len(unrecorded)} day(s) of the range are older than MaaS's 30-day retention and not in "
                     f"the store ({unrecorded[0]} … {unrecorded[-1]}): their live answers may be empty")


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None,
         now: datetime | None = None, stdout: Any = None, stderr: Any = None) -> int:
    """Run the command line ``argv`` with the given environment, clock and streams; the exit code."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C is KeyboardInterrupt from here on
    env = os.environ if env is None else env
    stdout = sys.stdout if stdout is None else stdout
    console = Console(sys.stderr if stderr is None else stderr)
    clock = Clock(datetime.now(timezone.utc) if now is None else now)
    try:
        args = build_parser().parse_args(argv)
        console.quiet, console.verbose = args.quiet, args.verbose  # notes made while validating obey -q too
        settings = settings_from(args, env, clock.now, console, getattr(stdout, "encoding", None))
        output = run(settings, env, clock, console)
        if settings.output.path is not None:
            replace_file(settings.output.path, output)
            return EXIT_OK
    except ParserExit as printed:  # --help and --version
        return write_result(stdout, printed.text, console) if printed.status == 0 else printed.status
    except ToolError as exc:
        console.error(str(exc), exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    return write_result(stdout, output, console)


class OutputFileError(ToolError):
    exit_code = EXIT_API


def replace_file(path: str, output: str) -> None:
    """Replace ``path`` with ``output`` (UTF-8) atomically: a temporary file in the same folder,
    then a rename, so that a reader sees the old file or the new one, never half of one. Whatever
    goes wrong (a full disk, Ctrl-C), the old file stays and the temporary file goes.

    The new file keeps the mode of the one it replaces, else gets 0666 & ~umask as from ``>``.
    A symlink is followed: its target is replaced, as a shell redirect writes through it.
    """
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    temporary = None
    try:
        while temporary is None:
            candidate = os.path.join(folder, f".{name}.{os.urandom(4).hex()}.tmp")
            try:  # the kernel applies the umask to 0666, exactly as for a shell redirect
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            except FileExistsError:
                continue
            temporary = candidate
        if mode is not None:
            os.chmod(temporary, mode)
        with open(fd, "wb") as file:
            file.write(output.encode("utf-8"))
            file.flush()
            os.fsync(file.fileno())  # the rename must never publish data still only in the page cache
        os.replace(temporary, target)
        temporary = None
    except OSError as exc:
        raise OutputFileError(f"cannot write {path}: {exc.strerror or exc}",
                              hint="check that the folder exists, is writable and has space") from None
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass


def write_result(stdout: Any, output: str, console: Console) -> int:
    """Write the result (UTF-8 whatever the locale: key labels may be any text). Every failure
    to write it (a closed stdout, a full disk, a reader gone away) is exit 1 with an error line."""
    try:
        if stdout is None:  # Python's stdout when the process was started with fd 1 closed
            raise OSError(errno.EBADF, "stdout is closed")
        buffer = getattr(stdout, "buffer", None)
        if buffer is not None:
            stdout.flush()
            buffer.write(output.encode("utf-8"))
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before main's own handler is in place, or after it
        sys.exit(EXIT_INTERRUPTED)
