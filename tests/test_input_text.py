"""Text from outside is shown, never obeyed: key labels, server messages, paths and arguments.

Control characters (C0, C1, DEL) and bidirectional overrides reach no terminal raw, a CR in a label
never splits a CSV row, wide (CJK) characters keep tables aligned, repeated list flags add up, bytes
that are not UTF-8 end in a usage error or work, and a clock that cannot be right is named as such.
"""

from __future__ import annotations

import csv
import io
import json
import re

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
