"""Text from outside is shown, never obeyed: key labels, server messages, paths and arguments.

Control characters (C0, C1, DEL) and bidirectional overrides reach no terminal raw, a CR in a label
never splits a CSV row, wide (CJK) characters keep tables aligned, repeated list flags add up, bytes
that are not UTF-8 end in a usage error or work, and a clock that cannot be right is named as such.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import datetime, timezone

import pytest

import fakecloud
import maas_rest_usage_stats as m

PROJECT = fakecloud.DEMO_PROJECT_ID
SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--project-id", PROJECT]
# Every character class a terminal must not get raw: ESC (C0), CSI (C1), DEL, a right-to-left override,
# an isolate, a mark and the Arabic letter mark.
HOSTILE_LABEL = "ops\x1b[31m\x9b2J\x7f\u202eevil\u2066x\u2069\u200f\u061c"
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def assert_no_unsafe(text: str) -> None:
    assert not UNSAFE.search(text), repr(UNSAFE.search(text))


# ----------------------------------------------------------------------------------------------
# Control and bidi characters: escaped wherever outside text is shown
# ----------------------------------------------------------------------------------------------

def test_a_hostile_key_label_is_escaped_in_the_table_and_the_filters_line(cli):
    run = cli(*SEED_RANGE, "--api-keys", HOSTILE_LABEL, "plain", "--group-by", "api-key")
    assert run.code == 0, run.stderr
    assert_no_unsafe(run.stdout)
    assert "| ops\\x1b[31m\\x9b… |" in run.stdout  # escaped, then cut at 16 columns in the grouped table
    assert 'Filters: API keys "ops\\u001b[31m\\u009b2J\\u007f\\u202eevil\\u2066x\\u2069\\u200f\\u061c", "plain"' \
        in run.stdout


def test_json_keeps_a_hostile_label_exact_but_escaped(cli):
    run = cli(*SEED_RANGE, "--api-keys", HOSTILE_LABEL, "--group-by", "api-key", "--format", "json")
    assert run.code == 0, run.stderr
    assert_no_unsafe(run.stdout)
    assert run.json()["rows"][0]["api_key"] == HOSTILE_LABEL and run.json()["api_keys"] == [HOSTILE_LABEL]


def test_a_dry_run_plan_escapes_the_labels_in_its_bodies(cli):
    for output in ("table", "json"):
        run = cli(*SEED_RANGE, "--api-keys", HOSTILE_LABEL, "--dry-run", "--format", output)
        assert run.code == 0, run.stderr
        assert_no_unsafe(run.stdout)
        assert "\\u202eevil" in run.stdout


def test_a_server_message_with_escape_sequences_is_escaped_in_the_error(cli, cloud):
    cloud.add_fault("status", status=400, error_msg="bad\x1b]0;pwned\x07 \u202ereversed\r\nsecond line")
    run = cli(*SEED_RANGE)
    assert run.code == 1
    assert_no_unsafe(run.stderr)
    assert "bad\\x1b]0;pwned\\x07 \\u202ereversed\\r\\nsecond line" in run.stderr


def test_a_raw_answer_with_a_lone_surrogate_is_written_as_an_escape(cli, cloud):
    cloud.add_fault("json", body='{"total_request_count": 1, "total_error_count": 0, "total_token": 1, '
                                 '"total_prompt_token": 1, "total_completion_token": 0, "echo": "\\ud800\\u202e"}',
                    times=2)
    run = cli(*SEED_RANGE, "--raw", "--format", "json")
    assert run.code == 0, run.stderr
    run.stdout.encode("utf-8")  # a strict UTF-8 writer takes it
    assert_no_unsafe(run.stdout)
    assert run.json()["windows"][0]["response"]["echo"] == "\ud800\u202e"
    table = cli(*SEED_RANGE, "--raw")
    assert table.code == 0 and '"echo": "\\ud800\\u202e"' in table.stdout


@pytest.mark.parametrize("text, shown", [
    ("\x1b[2J", "\\x1b[2J"), ("\x9b", "\\x9b"), ("\x7f", "\\x7f"), ("a\u202eb", "a\\u202eb"),
    ("tab\there", "tab\\there"), ("line\nbreak\rend", "line\\nbreak\\rend"), ("a\u2028b", "a\\u2028b"),
    ("bytes \udcff\udc80", "bytes \\xff\\x80"), ("日本語 é 😀", "日本語 é 😀"),
])
def test_printable_escapes_what_a_terminal_must_not_get_and_keeps_the_rest(text, shown):
    assert m.printable(text) == shown


# ----------------------------------------------------------------------------------------------
# CSV: a CR or LF in a label never splits a row
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["cr\rinside", "lf\ninside", "crlf\r\ninside", 'quote " and, comma'])
def test_a_line_break_in_a_key_label_never_splits_a_csv_row(cli, label):
    run = cli(*SEED_RANGE, "--api-keys", label, "other", "--group-by", "api-key", "--format", "csv")
    assert run.code == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout, newline="")))
    assert len(rows) == 3 and [row[3] for row in rows[1:]] == [label, "other"]
    assert run.stdout.endswith("\n") and not run.stdout.endswith("\r\n")
    unquoted = re.sub(r'"(?:[^"]|"")*"', "", run.stdout)
    assert unquoted.count("\n") == 3 and "\r" not in unquoted


# ----------------------------------------------------------------------------------------------
# Wide characters: tables align by display columns (CJK takes two)
# ----------------------------------------------------------------------------------------------

CJK_KEYS = ("生产环境-主密钥", "测试-长长长长长长长长的标签", "plain-key")  # 16, 28 and 9 columns


def grouped_lines(stdout: str) -> list[str]:
    """The grouped table's rows and its Total row, in any table style."""
    return [line for line in stdout.splitlines() if line.lstrip("| ").startswith(("2026-05-", "Total "))
            and not re.search("Total (Tokens|Requests|Errors)", line)]


@pytest.mark.parametrize("table_format", [None, "github", "simple", "grid"])
def test_a_grouped_table_with_cjk_key_labels_aligns_by_display_columns(cli, cloud, table_format):
    from test_chart_and_columns import MAY, renamed_keys_index

    cloud.events = renamed_keys_index(CJK_KEYS)
    run = cli(*MAY, "--group-by", "day", "api-key", "--api-keys", *CJK_KEYS,
              *(("--table-format", table_format) if table_format else ()))
    assert run.code == 0, run.stderr
    lines = grouped_lines(run.stdout)
    assert len(lines) == 31 * 3 + 1
    widths = {m.display_width(line) for line in lines}
    assert len(widths) == 1, lines[:4]
    if table_format is None:
        assert widths <= set(range(81))
        labels = {re.split(r"\s{2,}|\s\|\s", line.strip("| "))[1] for line in lines[:3]}
        assert labels == {"生产环境-主密钥", "测试-长长长长长…", "plain-key"}  # cut at 16 columns


def test_the_chart_pads_cjk_labels_by_display_columns(cli, cloud):
    from test_chart_and_columns import MAY, renamed_keys_index

    cloud.events = renamed_keys_index(CJK_KEYS)
    run = cli(*MAY[:2], "--to", "2026-05-04", *MAY[4:], "--group-by", "day", "api-key", "--api-keys", *CJK_KEYS,
              "--chart")
    assert run.code == 0, run.stderr
    chart = run.stdout.split("Total Tokens\n")[-1].split("\n\n")[0].splitlines()
    assert len(chart) == 9 and {m.display_width(line) for line in chart} == {80}, chart


COMBINING_KEYS = ("cafe\u0301-prod-cle\u0301", "Zoe\u0308-\u0915\u093f-key-\U0001f511-ops-x", "plain-key")  # 14, 19, 9


@pytest.mark.parametrize("table_format", [None, "github"])
def test_a_grouped_table_with_combining_mark_key_labels_aligns_by_display_columns(cli, cloud, table_format):
    from test_chart_and_columns import MAY, renamed_keys_index

    cloud.events = renamed_keys_index(COMBINING_KEYS)
    run = cli(*MAY, "--group-by", "day", "api-key", "--api-keys", *COMBINING_KEYS,
              *(("--table-format", table_format) if table_format else ()))
    assert run.code == 0, run.stderr
    lines = grouped_lines(run.stdout)
    assert len(lines) == 31 * 3 + 1
    assert len({m.display_width(line) for line in lines}) == 1, lines[:4]
    header = next(line for line in run.stdout.splitlines() if "API Key" in line)
    assert m.display_width(header) == m.display_width(lines[0])
    if table_format is None:
        assert m.display_width(lines[0]) <= 80
        labels = {re.split(r"\s{2,}|\s\|\s", line.strip("| "))[1] for line in lines[:3]}
        # combining marks take no column (a spacing one, Devanagari's vowel sign, one), the key emoji
        # two: the second label is cut at 16 columns
        assert labels == {"cafe\u0301-prod-cle\u0301", "Zoe\u0308-\u0915\u093f-key-\U0001f511-o…", "plain-key"}, labels


def test_the_chart_pads_combining_mark_labels_by_display_columns(cli, cloud):
    from test_chart_and_columns import MAY, renamed_keys_index

    cloud.events = renamed_keys_index(COMBINING_KEYS)
    run = cli(*MAY[:2], "--to", "2026-05-04", *MAY[4:], "--group-by", "day", "api-key", "--api-keys",
              *COMBINING_KEYS, "--chart")
    assert run.code == 0, run.stderr
    chart = run.stdout.split("Total Tokens\n")[-1].split("\n\n")[0].splitlines()
    assert len(chart) == 9 and {m.display_width(line) for line in chart} == {80}, chart


@pytest.mark.parametrize("text, width, cut", [
    ("key-0123456789abcdef", 16, "key-0123456789a…"), ("生产环境-主密钥x", 16, "生产环境-主密钥x"),
    ("生产环境-主密钥xy", 16, "生产环境-主密钥…"), ("a生产环境主密钥钥", 16, "a生产环境主密钥…"),
    ("e\u0301" * 16, 16, "e\u0301" * 16), ("日本" * 10, 16, "日本日本日本日…"),
])
def test_labels_are_cut_by_display_columns(text, width, cut):
    assert m.cut_to_width(text, width) == cut and m.display_width(cut) <= width


# ----------------------------------------------------------------------------------------------
# Repeated list flags add up
# ----------------------------------------------------------------------------------------------

def test_repeated_api_keys_and_ips_flags_add_up(cli, cloud):
    run = cli(*SEED_RANGE, "--api-keys", "a", "--api-keys", "b", "c", "--ips", "192.0.2.1", "--ips", "192.0.2.2",
              "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["api_keys"] == ["a", "b", "c"] and run.json()["ips"] == ["192.0.2.1", "192.0.2.2"]
    (body,) = cloud.maas_requests()
    assert body["api_keys"] == ["a", "b", "c"] and body["ips"] == ["192.0.2.1", "192.0.2.2"]


def test_repeated_service_type_and_group_by_flags_add_up(cli):
    run = cli(*SEED_RANGE, "--service-type", "1", "--service-type", "4", "--group-by", "day",
              "--group-by", "service-type", "--dry-run", "--format", "json")
    assert run.code == 0, run.stderr
    bodies = run.json()["requests"]
    assert {request["body"]["service_type"] for request in bodies} == {1, 4} and len(bodies) == 2 * 13


@pytest.mark.parametrize("args, keys", [(["--api-keys"], None), (["--api-keys", "--api-keys"], None),
                                        (["--api-keys", "--api-keys", "a"], ["a"]), (["--api-keys", "a", "--api-keys"], ["a"])])
def test_a_bare_api_keys_still_means_all_keys_when_repeated(cli, cloud, args, keys):
    run = cli(*SEED_RANGE, *args, "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["api_keys"] == keys and cloud.maas_requests()[0].get("api_keys") == keys


def test_a_bare_api_keys_with_group_by_api_key_is_still_a_usage_error(cli, cloud):
    run = cli(*SEED_RANGE, "--api-keys", "--group-by", "api-key")
    assert run.code == 2 and "a bare --api-keys means all keys" in run.stderr and cloud.log == []


# ----------------------------------------------------------------------------------------------
# Bytes that are not UTF-8: a usage error naming the argument, or a path that works
# ----------------------------------------------------------------------------------------------

NOT_UTF8 = os.fsdecode(b"\xff\xfe")  # what Python makes of such bytes in argv, the environment or a path


@pytest.mark.parametrize("option, value", [
    ("--api-keys", "k"), ("--ips", "192.0.2.1"), ("--service-type", "2"), ("--group-by", "day"),
    ("--from", "2026-05-08"), ("--to", "2026-05-21"), ("--last", "7d"), ("--timezone", "UTC"),
    ("--region", "cn-southwest-2"), ("--project-id", PROJECT), ("--endpoint", "https://example.com"),
    ("--iam-endpoint", "https://example.com"), ("--table-format", "grid"), ("--until", "2026-05-20"),
])
def test_an_option_that_is_not_utf8_is_a_usage_error_naming_it(cli, cloud, option, value):
    run = cli(option, value + NOT_UTF8, *(["--dry-run"] if option != "--dry-run" else []))
    assert run.code == 2 and run.stdout == ""
    assert f"error: {option}: {value}\\xff\\xfe is not UTF-8 text" in run.stderr and cloud.log == []


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "no_proxy", "HW_PROJECT_ID"])
def test_an_environment_value_that_is_not_utf8_is_a_usage_error_naming_it(cli, cloud, name):
    run = cli("--last", "1d", env={name: "x" + NOT_UTF8})
    assert run.code == 2 and f"the environment variable {name} is not UTF-8 text: x\\xff\\xfe" in run.stderr
    assert cloud.log == []


def test_a_tz_that_is_not_utf8_is_ignored_with_a_note(cli):
    run = cli("--last", "1d", "--dry-run", env={"TZ": "Asia/" + NOT_UTF8})
    assert run.code == 0 and "note: TZ=" in run.stderr and "ignored" in run.stderr


def test_a_label_that_is_not_utf8_is_refused_in_a_real_process_not_a_false_write_error(cli_process, cloud):
    run = cli_process(*SEED_RANGE, "--api-keys", "k" + NOT_UTF8)
    assert run.code == 2 and "--api-keys: k\\xff\\xfe is not UTF-8 text" in run.stderr
    assert "cannot write" not in run.stderr and cloud.log == []


def test_paths_that_are_not_utf8_are_opened_as_given(cli_process, cloud, tmp_path):
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/dir\xff")
    os.mkdir(folder)
    keys, store, result = folder + "/keys\xfe", folder + "/usage\xfe.db", folder + "/out\xfe.json"
    with open(keys, "w") as handle:
        handle.write(f"{fakecloud.DEMO_AK}\n{fakecloud.DEMO_SK}\n")
    os.chmod(keys, 0o600)
    from test_store import D, SHANGHAI as STORE_ZONE

    day = ("--from", D(18), "--to", D(19), *STORE_ZONE, "--store", store, "--credentials-file", keys)
    assert cli_process(*day, "--record").code == 0
    dry = cli_process(*day, "--dry-run")
    assert dry.code == 0 and dry.stdout == ""  # the store holds the day: nothing to plan
    run = cli_process(*day, "--format", "json", "--output", result)
    assert run.code == 0 and run.stdout == "", run.stderr
    with open(result, encoding="utf-8") as handle:
        document = json.load(handle)
    assert document["store"]["path"] == store and document["store"]["days_read"] == 1


# ----------------------------------------------------------------------------------------------
# A clock that cannot be right is named as the cause
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("now", [datetime(1970, 1, 1, 0, 0, 5, tzinfo=timezone.utc),
                                 datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone.utc)])
@pytest.mark.parametrize("args", [["--last", "7d"], ["--from", "2026-05-08", "--to", "2026-05-21"], ["--dry-run"]])
def test_a_clock_before_the_release_is_named_as_the_cause_not_the_range(cli, cloud, now, args):
    run = cli(*args, "--timezone", "UTC", now=now)
    assert run.code == 2 and run.stdout == "" and cloud.log == []
    assert f"error: the system clock says {now:%Y-%m-%d %H:%M:%S} UTC, before this script was released" in run.stderr
    assert "1970-01-01 00:00:00 UTC" not in run.stderr.replace(f"{now:%Y-%m-%d %H:%M:%S} UTC", "")


def test_a_clock_from_the_release_on_is_accepted(cli):
    run = cli("--last", "7d", "--timezone", "UTC", "--dry-run", now=m.RELEASE_DATE)
    assert run.code == 0, run.stderr
