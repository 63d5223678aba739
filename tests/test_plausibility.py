"""Numbers are never altered and answers are checked, not trusted.

Redaction masks a key where outside text carries it (server messages, raw bodies, labels), never by
substitution over the finished result, so a total whose digits happen to be a piece of the key still
prints exactly. Answers that cannot be right are malformed (a duplicate key, a body nested too deep)
or flagged (errors above requests, a part above its total); values read back from the history store
are validated like answers.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fakecloud
import maas_rest_usage_stats as m

AK, SK, TOKEN = fakecloud.DEMO_AK, fakecloud.DEMO_SK, fakecloud.TEMP_TOKEN
PROPERTY = settings(deadline=None, max_examples=300)


# ----------------------------------------------------------------------------------------------
# The redactor: every piece of 8 characters, as is or escaped, and nothing else
# ----------------------------------------------------------------------------------------------

FORMS = (str, lambda t: "".join(f"\\u{ord(c):04x}" for c in t), lambda t: "".join(f"\\u{ord(c):04X}" for c in t),
         lambda t: "".join(f"%{ord(c):02X}" for c in t), lambda t: "".join(f"%{ord(c):02x}" for c in t))


def oracle_redact(text: str, secrets: tuple[str, ...]) -> str:
    """The definition, by brute force: mask every window of the text that is an 8-character piece of a
    secret as is or escaped (hex digits in any case), then write each run of masked characters as ``***``."""
    plain = {s[i:i + 8] for s in secrets for i in range(len(s) - 7)}
    escaped = {form(piece).lower() for piece in plain for form in FORMS[1:]}
    hidden = [False] * len(text)
    for pieces, where in ((plain, text), (escaped, text.lower())):
        for piece in pieces:
            at = where.find(piece)
            while at >= 0:
                hidden[at:at + len(piece)] = [True] * len(piece)
                at = where.find(piece, at + 1)
    out, previous = [], False
    for char, masked in zip(text, hidden):
        if not masked:
            out.append(char)
        elif not previous:
            out.append("***")
        previous = masked
    return "".join(out)


def _fragment(draw) -> str:
    secret = draw(st.sampled_from((AK, SK, TOKEN)))
    start = draw(st.integers(0, len(secret)))
    end = draw(st.integers(start, len(secret)))
    return draw(st.sampled_from(FORMS))(secret[start:end])


TEXTS = st.lists(st.one_of(st.text(alphabet="SKfakeDemo0123456789LEAKCHECKx -{}\":,%\\u", max_size=30),
                           st.composite(_fragment)()), max_size=8).map("".join)


@PROPERTY
@given(text=TEXTS)
def test_the_redactor_masks_exactly_the_pieces_of_a_secret_in_any_form(text):
    assert m.redact(text, (AK, SK, TOKEN)) == oracle_redact(text, (AK, SK, TOKEN))


def test_a_piece_at_any_offset_of_a_long_text_is_found():
    filler = "0123456789" * 20_000
    for offset in range(0, 40):
        text = filler[:100_000 + offset] + SK[5:13] + filler
        assert m.redact(text, (SK,)) == filler[:100_000 + offset] + "***" + filler


def test_a_secret_shorter_than_a_piece_is_masked_whole():
    assert m.redact("id=abc12, again %61%62%63%31%32", ("abc12",)) == "id=***, again ***"


# ----------------------------------------------------------------------------------------------
# Redaction at the source: outside text masked, the result's numbers never
# ----------------------------------------------------------------------------------------------

# Keys whose pieces are digits of the seed answer: 2482084980 total tokens (2482084.98 in the answer),
# 2456504362 prompt tokens, 67188 requests and 8002 errors.
DIGIT_AK = "AK2456504362DIGITS"
DIGIT_SK = "Sk2482084980x24820849867188x8002"


@pytest.fixture
def digit_keys(cloud):
    cloud.credentials[DIGIT_AK] = (DIGIT_SK, None)
    return {"HW_ACCESS_KEY": DIGIT_AK, "HW_SECRET_KEY": DIGIT_SK}


def test_a_total_holding_a_piece_of_the_key_prints_exactly_in_json_csv_and_prometheus(cli, digit_keys):
    document = cli(*SEED_RANGE, "--format", "json", "--raw", env=digit_keys).json()
    assert document["totals"]["total_tokens"] == 2482084980 and document["totals"]["prompt_tokens"] == 2456504362
    assert document["windows"][0]["response"]["total_token"] == 2482084.98
    csv_run = cli(*SEED_RANGE, "--format", "csv", env=digit_keys)
    assert csv_run.code == 0 and ",2482084980,2456504362,24872928,67188,8002,11.91," in csv_run.stdout
    prometheus = cli(*SEED_RANGE, "--format", "prometheus", env=digit_keys)
    assert prometheus.code == 0 and '",kind="total"} 2482084980\n' in prometheus.stdout
    assert "***" not in csv_run.stdout + prometheus.stdout


def test_a_raw_body_echoing_the_key_stays_valid_json_with_only_its_strings_masked(cli, cloud, digit_keys):
    cloud.add_fault("json", body=body_text(f'"caller": "{DIGIT_AK}/{DIGIT_SK}"', f'"{DIGIT_SK}": 248208498'),
                    times=2)
    run = cli(*SEED_RANGE, "--format", "json", "--raw", env=digit_keys)
    assert run.code == 0, run.stderr
    response = run.json()["windows"][0]["response"]
    assert response["caller"] == "***/***" and response["***"] == 248208498
    assert DIGIT_SK[2:10] not in run.stdout.replace("248208498", "")
    table = cli(*SEED_RANGE, "--raw", env=digit_keys)
    assert table.code == 0 and '"caller": "***/***"' in table.stdout


def test_a_key_label_holding_a_piece_of_the_key_is_masked_where_it_is_printed(cli, cloud, digit_keys):
    label = f"label-{DIGIT_SK}"
    run = cli(*SEED_RANGE, "--api-keys", label, "--group-by", "api-key", "--format", "json", env=digit_keys)
    assert run.code == 0, run.stderr
    assert run.json()["api_keys"] == ["label-***"] and run.json()["rows"][0]["api_key"] == "label-***"
    (sent,) = cloud.maas_requests()
    assert sent["api_keys"] == [label]  # the filter went out as given


def test_an_error_message_echoing_the_key_is_masked_before_it_is_cut(cli, cloud, digit_keys):
    cloud.add_fault("status", status=400, error_msg="." * 190 + DIGIT_SK + "," * 200)
    run = cli(*SEED_RANGE, env=digit_keys)
    assert run.code == 1 and "HTTP 400" in run.stderr
    assert DIGIT_SK[:8] not in run.stderr and ".***," in run.stderr


# ----------------------------------------------------------------------------------------------
# Answers that cannot be read one way: a key twice, nesting past 64 levels
# ----------------------------------------------------------------------------------------------

PROJECT = fakecloud.DEMO_PROJECT_ID
SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--project-id", PROJECT]
SEED_LABEL = "2026-05-08 00:00:00 ~ 2026-05-21 00:00:00 (Preset Service)"
SEED_FIELDS = {"total_request_count": "67188", "total_error_count": "8002", "total_token": "2482084.98",
               "total_prompt_token": "2456504.362", "total_completion_token": "24872.928",
               "total_completion_tasks": "0", "total_infer_count": "0"}


def body_text(*extra: str, **changes: str) -> str:
    """The seed answer as JSON text with fields replaced (raw JSON text) and extra members appended."""
    fields = [f'"{name}": {value}' for name, value in {**SEED_FIELDS, **changes}.items()]
    return "{" + ", ".join([*fields, *extra]) + "}"


def nested(levels: int) -> str:
    """A JSON value ``levels`` deep (the answer object around it adds one)."""
    return '{"a": ' * (levels - 1) + "[1]" + "}" * (levels - 1)


@pytest.mark.parametrize("body", [
    pytest.param(body_text('"total_token": 1'), id="a-counted-field"),
    pytest.param(body_text('"extra": {"x": 1, "x": 2}'), id="inside-an-extra-field"),
])
def test_a_key_twice_in_one_object_is_malformed_naming_the_window(cli, cloud, body):
    cloud.add_fault("json", body=body)
    run = cli(*SEED_RANGE, "--format", "json")
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and SEED_LABEL in run.stderr and "appears twice" in run.stderr


@pytest.mark.parametrize("levels", [65, 900, 50_000])
def test_an_answer_nested_deeper_than_64_levels_is_malformed_without_a_traceback(cli, cloud, levels):
    cloud.add_fault("json", body=body_text(f'"extra": {nested(levels - 1)}'))
    run = cli(*SEED_RANGE, "--raw", "--format", "json")
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and SEED_LABEL in run.stderr
    assert "nested deeper than 64 levels" in run.stderr or levels == 50_000


@pytest.mark.parametrize("output", ["table", "json"])
def test_an_answer_64_levels_deep_is_read_and_shown_raw(cli, cloud, output):
    cloud.add_fault("json", body=body_text(f'"extra": {nested(63)}', '"note": "a \\"[[[[\\" \\\\"'))
    run = cli(*SEED_RANGE, "--raw", "--format", output)
    assert run.code == 0, run.stderr
    if output == "json":
        response = run.json()["windows"][0]["response"]
        assert response["note"] == 'a "[[[[" \\' and response["total_request_count"] == 67188
    else:
        assert '"extra": {"a": {"a": ' in run.stdout


@pytest.mark.parametrize("text, deep", [
    ("[" * 64 + "]" * 64, False), ("[" * 65 + "]" * 65, True), ('["' + "[" * 100 + '"]', False),
    ('["\\"' + "[" * 100 + '"]', False), ('["\\\\"' + "[" * 65 + "]" * 65 + "]", True),
    ("[[]" * 70 + "]" * 70, True), ("[]" * 100, False), ("[" * 100, False), ("{" * 40 + "[" * 40 + "]" * 40 + "}" * 40, True),
])
def test_nesting_depth_is_counted_outside_strings(text, deep):
    assert m.json_too_deep(text) is deep


# ----------------------------------------------------------------------------------------------
# Impossible ratios: summed as sent, flagged on stderr and in coverage.anomalies
# ----------------------------------------------------------------------------------------------

SEED_PERIOD = {"start": "2026-05-08T00:00:00+08:00", "end": "2026-05-21T00:00:00+08:00"}


@pytest.mark.parametrize("changes, broken", [
    ({"total_error_count": "100000"}, "total_errors 100000 > total_requests 67188"),
    ({"total_prompt_token": "2482084.981"}, "prompt_tokens 2482084981 > total_tokens 2482084980"),
    ({"total_completion_token": "2482085"}, "completion_tokens 2482085000 > total_tokens 2482084980"),
])
def test_an_impossible_ratio_is_summed_as_sent_and_flagged_naming_the_window(cli, cloud, changes, broken):
    cloud.add_fault("json", body=body_text(**changes))
    run = cli(*SEED_RANGE, "--format", "json")
    assert run.code == 0, run.stderr
    document = run.json()
    assert document["coverage"]["anomalies"] == [{**SEED_PERIOD, "what": f"{broken} (Preset Service)"}]
    assert f"note: the answer for {SEED_LABEL} cannot be right ({broken})" in run.stderr


def test_errors_above_requests_still_sum_exactly(cli, cloud):
    cloud.add_fault("json", body=body_text(total_error_count="100000"))
    totals = cli(*SEED_RANGE, "--format", "json").json()["totals"]
    assert totals["total_errors"] == 100000 and totals["error_rate"] == 148.84


def test_each_flagged_window_names_its_service_and_key(cli, cloud):
    cloud.add_fault("json", body=body_text(total_error_count="70000"), times=4)
    run = cli(*SEED_RANGE, "--service-type", "1", "2", "--api-keys", "k1", "k2", "--group-by", "api-key",
              "--format", "json", "-q")
    assert run.code == 0 and run.stderr == ""  # -q silences the note, not the JSON
    whats = sorted(anomaly["what"] for anomaly in run.json()["coverage"]["anomalies"])
    assert whats == [f"total_errors 70000 > total_requests 67188 ({service}, key {key!r})"
                     for service in ("My Service", "Preset Service") for key in ("k1", "k2")]


def test_a_sound_answer_has_no_anomalies(cli):
    run = cli(*SEED_RANGE, "--format", "json")
    assert run.code == 0 and "anomalies" not in run.json()["coverage"] and "cannot be right" not in run.stderr


def test_the_bounds_are_checked_on_the_exact_sums():
    usage = m.Usage(tokens_k=m.Decimal("1.0001"), prompt_k=m.Decimal("1.0004"), requests=3, errors=3)
    assert usage.anomalies() == ["prompt_tokens 1000 > total_tokens 1000"]  # both round to 1000 tokens


# ----------------------------------------------------------------------------------------------
# The history store: rows read back are validated like answers
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def recorded_day(cli, cloud, tmp_path):
    """A store holding one recorded day (two days ago, Asia/Shanghai); returns (store, day, its range)."""
    from test_store import D, SHANGHAI as STORE_ZONE

    store = tmp_path / "usage.db"
    day_range = ("--from", D(18), "--to", D(19), *STORE_ZONE, "--store", str(store))
    assert cli(*day_range, "--record").code == 0
    cloud.clear_log()
    return store, D(18), day_range


@pytest.mark.parametrize("damage, what", [
    ("total_tokens = -1", "total_tokens is -1"),
    ("total_errors = 2.5", "total_errors is 2.5"),
    ("total_requests = 'many'", "total_requests is 'many'"),
    ("prompt_tokens = x'00ff'", "prompt_tokens is b'"),
    ("completion_tokens = 1e30", "completion_tokens is 1e+30"),
    ("end_ms = start_ms", "is not a time before its end"),
    ("start_ms = 'then'", "is not a time before its end"),
])
@pytest.mark.parametrize("mode", ["query", "record", "dry-run"])
def test_a_damaged_stored_row_is_an_error_naming_the_store_and_the_day(cli, cloud, recorded_day, damage, what, mode):
    store, day, day_range = recorded_day
    with sqlite3.connect(store) as db:
        db.execute(f"UPDATE days SET {damage}")
    run = cli(*day_range, "--format", "json", *{"query": (), "record": ("--record",), "dry-run": ("--dry-run",)}[mode])
    assert run.code == 1 and run.stdout == ""
    assert f"the store {store} holds a damaged row for {day}" in run.stderr and what in run.stderr
    assert cloud.log == []


def test_a_stored_day_with_an_impossible_ratio_is_flagged_like_an_answer(cli, recorded_day):
    store, day, day_range = recorded_day
    with sqlite3.connect(store) as db:
        db.execute("UPDATE days SET total_errors = total_requests + 1")
    run = cli(*day_range, "--format", "json")
    assert run.code == 0, run.stderr
    (anomaly,) = run.json()["coverage"]["anomalies"]
    assert anomaly["start"].startswith(day) and anomaly["what"].startswith("total_errors ")
    assert f"the answer for {day} (Preset Service) in the store cannot be right" in run.stderr
