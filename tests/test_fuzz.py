"""Property-based fuzzing of the real script (its ``main``, in-process) against the fake cloud.

Three inputs a user or a server controls are generated: the argument list, the credentials
file, and the statistics answer. Whatever they are, the contract must hold: exit 0-3, no
traceback, no secret on stdout or stderr, nothing on stdout on failure (``run_script``/``cli`` in
conftest assert all of that on every run), and when an answer is accepted its totals are exact.

Each example is one in-process run (a few milliseconds); the runs are derandomized so CI is
reproducible (``--hypothesis-seed`` still explores when run by hand).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import fakecloud
from conftest import Run, oracle_metrics

AK, SK = fakecloud.DEMO_AK, fakecloud.DEMO_SK
PROJECT = fakecloud.DEMO_PROJECT_ID
SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
MAX_LIVE_REQUESTS = 60  # keeps a fuzzed run far below the 200-per-minute pacing (which would sleep)

FUZZ = settings(deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large])

# ------------------------------------------------------------------------------------------------
# 1. Argument lists
# ------------------------------------------------------------------------------------------------

FLAGS = [
    "--from", "--to", "--until", "--last", "--this-month", "--timezone", "--region", "--service-type",
    "--infer-type", "--api-keys", "--ips", "--project-id", "--credentials-file", "--endpoint",
    "--iam-endpoint", "--timeout", "--retries", "--concurrency", "--format", "--group-by",
    "--table-format", "--no-header", "--raw", "--dry-run", "-v", "--verbose", "-q", "--quiet",
    "--fro", "--last=7d", "--format=json", "-", "--", "-h",
]
HOSTILE_VALUES = [
    # dates and times
    "2026-05-08", "2026-05-21", "2026-02-30", "2026-13-01", "2026-05-08 10:30", "2026-05-08T25:00",
    "2026-03-29 02:30", "1970-01-01", "1969-12-31", "9999-12-31", "0000-01-01", "now", "today",
    "yesterday", "tomorrow", "NOW", " today ", "2026-5-8", "２０２６-05-08",
    # durations
    "7d", "24h", "1h", "30d", "0d", "-1d", "7w", "1e3d", "999999999999999999999d", "٣d",
    # zones
    "UTC", "Asia/Shanghai", "America/New_York", "Europe/Dublin", "Mars/Olympus", "../../etc/passwd",
    "/etc/localtime", "utc",
    # service and infer types, groups, formats
    "1", "2", "3", "4", "all", "my", "preset", "custom-endpoint", "ALL", "batch", "real_time",
    "day", "week", "month", "service-type", "api-key", "day,week", "json", "csv", "table", "grid", "xml",
    # regions, ids, addresses
    "cn-southwest-2", "cn-north-4", "ap-southeast-9", "CN_SOUTH", PROJECT, PROJECT.upper(), "0" * 32,
    "192.0.2.10", "::1", "198.51.100.7", "256.1.1.1", "key-alpha", "key-beta",
    # endpoints (none that needs DNS or an unreachable network)
    "http://example.com", "ftp://localhost", "https://user:pw@localhost", "localhost:8443",
    "https://localhost:99999", "http://127.0.0.2",
    # files
    "/nonexistent/credentials", "/dev/null", "/", "/etc/hostname",
    # numbers and garbage
    "0", "-1", "1", "10", "11", "16", "17", "0.5", "1e309", "nan", "inf", "-0", "abc", "",
    " ", "\t", "'", '"', "\\", "%s", "{project_id}", "$(id)", "é", "日本", "\u202e", "\U0001f600",
    "\u00a0", "--7d", "=", "a" * 300,
]
# Unicode text without NUL (argv cannot hold it) or lone surrogates (not encodable).
ARG_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
ARGUMENT = st.one_of(st.sampled_from(FLAGS), st.sampled_from(HOSTILE_VALUES), ARG_TEXT)


DATES = ["today", "yesterday", "now", "2026-05-08", "2026-05-21", "2026-10-30", "2026-11-01 08:30",
         "2026-11-20T12:00"]
RANGES = st.one_of(
    st.just([]),
    st.just(["--this-month"]),
    st.sampled_from(["7d", "24h", "1h", "3d", "30d", "45d", "100d"]).map(lambda n: ["--last", n]),
    st.sampled_from(DATES).map(lambda d: ["--from", d]),
    st.tuples(st.sampled_from(DATES), st.sampled_from(["--to", "--until"]), st.sampled_from(DATES))
    .map(lambda t: ["--from", t[0], t[1], t[2]]),
)
# Options with plausible values; each value is swapped for a hostile one a fifth of the time.
OPTIONS: dict[str, list[list[str]]] = {
    "--timezone": [["UTC"], ["Asia/Shanghai"], ["America/New_York"], ["Europe/Dublin"], ["Australia/Lord_Howe"]],
    "--region": [["cn-southwest-2"], ["cn-north-4"]],
    "--service-type": [["2"], ["all"], ["1", "4"], ["my"], ["custom"]],
    "--infer-type": [["real_time"], ["batch"]],
    "--api-keys": [["key-alpha"], ["key-alpha", ""], [""], ["key-beta", "key-alpha"]],
    "--ips": [["192.0.2.10"], ["198.51.100.7", "::1"]],
    "--project-id": [[PROJECT], [fakecloud.NORTH4_PROJECT_ID]],
    "--timeout": [["5"], ["0.5"], ["30"]],
    "--retries": [["0"], ["1"]],
    "--concurrency": [["1"], ["4"], ["16"]],
    "--format": [["table"], ["json"], ["csv"]],
    "--group-by": [["day"], ["week"], ["month"], ["service-type"], ["api-key"], ["day", "service-type"],
                   ["month", "api-key"]],
    "--table-format": [["grid"], ["github"], ["plain"]],
    "--no-header": [[]], "--raw": [[]], "-v": [[]], "-q": [[]],
}


@st.composite
def argument_lists(draw) -> list[str]:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.lists(ARGUMENT, max_size=10))  # pure noise
    args = list(draw(RANGES))
    for flag in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=5, unique=True)):
        values = draw(st.sampled_from(OPTIONS[flag]))
        if values and draw(st.integers(0, 4)) == 0:
            values = [draw(ARGUMENT)]
        args += [flag, *values]
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):
        args.insert(draw(st.integers(0, len(args))), draw(ARGUMENT))
    return args


def _planned_requests(plan: Run) -> int:
    return plan.stdout.count("POST")  # one per request, in the table and the JSON plan alike


@settings(FUZZ, max_examples=150)
@given(args=argument_lists(), dry_run=st.booleans())
@example(args=["--last", "7d", "--format", "json"], dry_run=False)
@example(args=["--service-type", "all", "--group-by", "day", "--last", "3d"], dry_run=False)
def test_any_argument_list_keeps_the_contract(cli, cloud, args, dry_run):
    """Exit 0-3, no traceback, no secret, no partial output: for any argv, dry run or not."""
    plan = cli(*args, "--dry-run")  # the dry run is itself a fuzzed run (conftest checks it)
    event(f"dry run: exit {plan.code}")
    if dry_run or plan.code != 0 or _planned_requests(plan) > MAX_LIVE_REQUESTS:
        return
    cloud.clear_log()
    run = cli(*args)
    event(f"live run: exit {run.code}, {'no' if not cloud.log else 'some'} requests")
    if run.code == 2:
        assert cloud.log == [], "a usage error came after requests were sent"


# ------------------------------------------------------------------------------------------------
# 2. Credentials files
# ------------------------------------------------------------------------------------------------

# Keys the script may parse out of a generated file; "LEAK" marks them so an echo of any line's
# content (keys or not) is caught: the script's own messages never say "LEAK".
OTHER_AK, OTHER_SK = "AKLEAKOTHER0001", "SKLEAKother-secret-0001"
CREDENTIAL_FRAGMENTS = [
    AK, SK, fakecloud.TEMP_AK, fakecloud.TEMP_SK, fakecloud.TEMP_TOKEN, OTHER_AK, OTHER_SK,
    "LEAKcontent", "User Name,Access Key Id,Secret Access Key", "Security Token", "[basic]", "[other]",
    "ak = ", "sk = ", "ak=", "sk=", "security_token = ", "project_id = ", f"project_id = {PROJECT}",
    "HW_ACCESS_KEY=", "HW_SECRET_KEY=", "HW_SECURITY_TOKEN=", "HUAWEICLOUD_SDK_AK=", "HUAWEICLOUD_SDK_SK=",
    "export ", ",", ", ", "=", "'", '"', "#", "# comment", " ", "\t", "\n", "\n", "\n", "\r\n", "\r",
    "\ufeff", "é", "\u2028", "\x0c", "\x00", "user,", "[", "]", ";",
]
TEXT_FILE = st.lists(st.sampled_from(CREDENTIAL_FRAGMENTS), max_size=16).map(lambda parts: "".join(parts).encode())
BINARY_FILE = st.binary(max_size=300)
GOOD_FILES = st.sampled_from([f"{AK}\n{SK}\n", f"{AK},{SK}", f"HW_ACCESS_KEY={AK}\nHW_SECRET_KEY={SK}\n",
                              f"[basic]\nak = {AK}\nsk = {SK}\n",
                              f"User Name,Access Key Id,Secret Access Key\nme,{AK},{SK}\n"]).map(str.encode)


@settings(FUZZ, max_examples=150)
@given(content=st.one_of(TEXT_FILE, BINARY_FILE, GOOD_FILES), prefix=st.sampled_from([b"", b"\xef\xbb\xbf"]))
@example(content=f"{AK}\n{SK}\n".encode(), prefix=b"")
@example(content=f"{OTHER_AK}\n{OTHER_SK}\n".encode(), prefix=b"")
def test_any_credentials_file_is_used_or_refused_without_leaking(cli, cloud, tmp_path_factory, content, prefix):
    path: Path = tmp_path_factory.mktemp("creds") / "credentials"
    path.write_bytes(prefix + content)
    path.chmod(0o600)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "0", "--credentials-file", str(path))
    assert run.code in (0, 1, 3), run.stderr
    event(f"exit {run.code}")
    assert "LEAK" not in run.stdout + run.stderr, "a line of the credentials file was echoed"
    if run.code == 0:
        assert "| Total Requests    | 67,188" in run.stdout  # the demo keys, read correctly
    else:
        assert len(cloud.log) <= 1  # a refused file sends nothing, rejected keys cost one request
    cloud.clear_log()


# ------------------------------------------------------------------------------------------------
# 3. Statistics answers
# ------------------------------------------------------------------------------------------------

COUNT_FIELDS = ("total_request_count", "total_error_count")
TOKEN_FIELDS = ("total_token", "total_prompt_token", "total_completion_token")
BATCH_FIELDS = ("total_completion_tasks", "total_infer_count")
PLAUSIBLE_MAX = Decimal(10) ** 15


def _number_text(value: Decimal, style: str) -> str:
    if style == "exponent":
        return f"{value:E}"
    if style == "padded":
        return f"{value:f}" + ("" if "." in f"{value:f}" else ".") + "000"
    return f"{value:f}"


COUNT_VALUES = st.builds(_number_text, st.integers(0, 10**12).map(Decimal),
                         st.sampled_from(["plain", "plain", "exponent", "padded"]))
# Thousands of tokens: up to 6 decimals, half-way cases (x.0005) included on purpose.
TOKEN_VALUES = st.one_of(
    st.builds(_number_text, st.decimals(min_value=0, max_value=10**11, places=3, allow_nan=False,
                                        allow_infinity=False), st.sampled_from(["plain", "exponent", "padded"])),
    st.builds(lambda i, tail: f"{i}.{tail}", st.integers(0, 10**9),
              st.sampled_from(["0005", "0015", "0025", "4995", "9995", "0004999", "5", "123456", "000001"])),
    st.sampled_from(["0.1", "0.2", "0.3", "1.0005", "2.675", "1.1E+2", "5E-4", "0.0005", "1e-9", "-0", "0.0"]),
)
BAD_VALUES = st.sampled_from([
    '"1"', "null", "true", "false", "[]", "{}", "-1", "-0.001", "NaN", "Infinity", "-Infinity", "1e400",
    "1" + "0" * 20, "0.5", '""', "[1]", "1.", ".5", "01", "0x10", "+1", "1e", "--1",
])
GARBAGE = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "[]", "null", '"x"', "{", "}", "{}{}", "<html></html>", "[" * 2000, "\ufeff{}"]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                 lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children,
                                                                                   max_size=3),
                 max_leaves=10).map(json.dumps),
)


@st.composite
def answer_bodies(draw) -> str:
    mode = draw(st.sampled_from(["valid", "valid", "valid", "one-bad", "garbage"]))
    if mode == "garbage":
        return draw(GARBAGE)
    fields = {name: draw(COUNT_VALUES) for name in COUNT_FIELDS}
    fields.update({name: draw(TOKEN_VALUES) for name in TOKEN_FIELDS})
    for name in BATCH_FIELDS:
        if draw(st.booleans()):
            fields[name] = draw(COUNT_VALUES)
    if draw(st.booleans()):
        fields["extra_" + draw(st.sampled_from(["field", "info", "request_id"]))] = draw(
            st.sampled_from(['"x"', "null", "[1, 2]", '{"a": 1}', "3.5"]))
    if mode == "one-bad":
        victim = draw(st.sampled_from(sorted(fields)))
        if draw(st.booleans()):
            del fields[victim]
        else:
            fields[victim] = draw(BAD_VALUES)
    items = [f'"{name}": {value}' for name, value in fields.items()]
    items = draw(st.permutations(items))
    spacing = draw(st.sampled_from(["", " ", "\n  "]))
    return "{" + spacing + ("," + spacing).join(items) + spacing + "}"


def _reject(constant: str):
    raise ValueError(constant)


def _read_like_the_api(raw: str):
    """The answer as exact numbers, or None when it is not a JSON object of plausible numbers."""
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_reject)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    values = {}
    for name in (*COUNT_FIELDS, *TOKEN_FIELDS, *BATCH_FIELDS):
        if name not in data:
            if name in BATCH_FIELDS:
                values[name] = Decimal(0)
                continue
            return None
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
            return None
        number = Decimal(value)
        if not number.is_finite() or number < 0:
            return None
        if name not in TOKEN_FIELDS and number != number.to_integral_value():
            return None
        values[name] = number
    return values


@settings(FUZZ, max_examples=150)
@given(raw=answer_bodies())
@example(raw='{"total_request_count": 3, "total_error_count": 1, "total_token": 0.0005, '
             '"total_prompt_token": 2.675, "total_completion_token": 1.0005E+0}')
@example(raw='{"total_request_count": 10, "total_error_count": 0, "total_token": 0.1, '
             '"total_prompt_token": 0.2, "total_completion_token": 0.3}')
def test_any_answer_gives_exact_totals_or_a_malformed_response_error(cli, cloud, raw):
    cloud.clear_faults()
    cloud.add_fault("json", body=raw, times=1)
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "0", "--format", "json")
    assert run.code in (0, 1), run.stderr
    event(f"exit {run.code}")
    values = _read_like_the_api(raw)
    if values is None:
        # Not an object of non-negative, finite numbers (counts whole): never a result.
        assert run.code == 1 and "malformed response" in run.stderr, (raw, run.stderr)
        return
    if run.code == 0:
        assert run.json()["totals"] == oracle_metrics(values), raw
    elif all(value <= PLAUSIBLE_MAX for value in values.values()):
        # A well-formed, plausible answer must be accepted (only absurd sizes may be refused).
        pytest.fail(f"a well-formed answer was refused: {raw!r}\n{run.stderr}")
