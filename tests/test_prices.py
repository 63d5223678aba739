"""--prices: estimated cost per model row (Cloud Eye) and in total, checked against an oracle of
rational arithmetic; price files malformed in every way are usage errors found before any request."""

from __future__ import annotations

import csv
import io
import math
import os
import re
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

import fakecloud as fc
import maas_rest_usage_stats as m
from conftest import hourly_index

HEADER = "model,input,output,per,currency\n"
SEED = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
MODEL_RANGE = ["--from", "2026-05-08", "--to", "2026-05-11", "--timezone", "Asia/Shanghai"]
MODELS = dict((name, model_id) for models in fc.CES_MODELS.values() for model_id, name in models)


def utc_ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * 1000


@pytest.fixture
def hourly(cloud):
    cloud.events = hourly_index(utc_ms("2026-04-01T00:00"), utc_ms("2026-06-01T00:00"))
    return cloud


@pytest.fixture
def prices_file(tmp_path):
    def write(text, name: str = "prices.csv") -> str:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return str(path)
    return write


def cents(value: Fraction) -> Decimal:
    """Half up to 2 decimals: floor(x * 100 + 1/2) / 100."""
    return Decimal(math.floor(value * 100 + Fraction(1, 2))).scaleb(-2)


def oracle_cost(prompt: int, completion: int, price: tuple[str, str, int]) -> Fraction:
    input_price, output_price, per = price
    return (prompt * Fraction(input_price) + completion * Fraction(output_price)) / per


def json_cents(value) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


# ================================================================================================
# The arithmetic, against the oracle
# ================================================================================================

def test_plain_totals_take_the_star_price(cli, cloud, prices_file):
    """The README's worked example: the ShowStatistics documentation's answer at 0.002 and 0.008 CNY
    per 1,000 prompt and completion tokens."""
    path = prices_file(HEADER + "*,0.002,0.008,1000,CNY\n")
    run = cli(*SEED, "--prices", path, "--format", "json")
    assert run.code == 0, run.stderr
    totals = run.json()["totals"]
    exact = oracle_cost(totals["prompt_tokens"], totals["completion_tokens"], ("0.002", "0.008", 1000))
    assert run.json()["cost"] == {"currency": "CNY", "total": float(cents(exact)), "estimated": True,
                                  "complete": True}
    assert run.json()["rows"][0]["cost"] == float(cents(exact))
    table = cli(*SEED, "--prices", path)
    assert f"Estimated cost: {cents(exact):,} CNY (from --prices; the bill is the authority)" in table.stdout
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == (2456504362, 24872928)
    assert cents(exact) == Decimal("5111.99")  # 4,913.008724 + 198.983424: the README's sum


def test_each_model_row_is_priced_by_name_id_or_star(cli, hourly, prices_file):
    prices = {"DeepSeek-V3": ("2", "8", 1000000), MODELS["DeepSeek-R1"]: ("0.004", "0.016", 1000),
              "*": ("0.0005", "0.002", 1000)}
    path = prices_file(HEADER + "".join(f"{name},{i},{o},{per},CNY\n" for name, (i, o, per) in prices.items()))
    run = cli(*MODEL_RANGE, "--group-by", "day", "model", "--prices", path, "--format", "json")
    assert run.code == 0, run.stderr
    document = run.json()
    exact_total = Fraction(0)
    for row in document["rows"]:
        price = prices.get(row["model"]) or prices.get(row["model_id"]) or prices["*"]
        exact = oracle_cost(row["prompt_tokens"], row["completion_tokens"], price)
        assert json_cents(row["cost"]) == cents(exact), row
        exact_total += exact
    assert {row["model"] for row in document["rows"]} >= {"DeepSeek-V3", "DeepSeek-R1", "Qwen3-32B"}
    assert json_cents(document["cost"]["total"]) == cents(exact_total)
    assert document["cost"]["currency"] == "CNY" and document["cost"]["estimated"] is True


def test_model_names_match_in_any_case_and_an_id_row_wins_over_a_name_row(cli, hourly, prices_file):
    path = prices_file(HEADER + f"deepseek-v3,1,1,1000,USD\n{MODELS['DeepSeek-V3']},3,3,1000,USD\n*,0,0,1000,USD\n")
    run = cli(*MODEL_RANGE, "--group-by", "model", "--prices", path, "--format", "json")
    assert run.code == 0, run.stderr
    (row,) = [row for row in run.json()["rows"] if row["model"] == "DeepSeek-V3"]
    assert json_cents(row["cost"]) == cents(oracle_cost(row["prompt_tokens"], row["completion_tokens"],
                                                        ("3", "3", 1000)))


def test_a_model_without_a_price_and_no_star_row_is_a_usage_error_naming_it(cli, hourly, prices_file):
    path = prices_file(HEADER + "DeepSeek-V3,2,8,1000000,CNY\nDeepSeek-R1,4,16,1000000,CNY\n")
    run = cli(*MODEL_RANGE, "--group-by", "model", "--prices", path)
    assert run.code == 2 and run.stdout == ""
    assert "no price for the models Qwen3-32B, my-glm-4-9b, 客服助手-qwen2.5-7b and no * row" in run.stderr


def test_key_rows_from_cloud_eye_have_no_model_so_need_the_star_row(cli, hourly, prices_file):
    path = prices_file(HEADER + "DeepSeek-V3,2,8,1000000,CNY\n")
    run = cli(*MODEL_RANGE, "--group-by", "api-key", "--prices", path)
    assert run.code == 2 and "has no * row" in run.stderr
    assert hourly.log == []


def test_compare_estimates_the_previous_period_too(cli, cloud, prices_file):
    path = prices_file(HEADER + "*,0.002,0.008,1000,CNY\n")
    run = cli("--from", "2026-05-15", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--compare",
              "--prices", path, "--format", "json")
    assert run.code == 0, run.stderr
    previous = run.json()["previous"]
    exact = oracle_cost(previous["totals"]["prompt_tokens"], previous["totals"]["completion_tokens"],
                        ("0.002", "0.008", 1000))
    assert json_cents(previous["cost"]["total"]) == cents(exact)
    table = cli("--from", "2026-05-15", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--compare",
                "--prices", path)
    assert f"; previous period {cents(exact):,} CNY (" in table.stdout


def test_cloud_eye_rows_compared_estimate_the_previous_period_too(cli, hourly, prices_file):
    run = cli(*MODEL_RANGE, "--group-by", "model", "--compare", "--format", "json",
              "--prices", prices_file(HEADER + "*,1,1,1000,CNY\n"))
    assert run.code == 0, run.stderr
    previous = run.json()["previous"]
    assert previous["rows"] and all(row["source"] == "cloud_eye" and row["cost"] is not None for row in previous["rows"])
    exact = oracle_cost(previous["totals"]["prompt_tokens"], previous["totals"]["completion_tokens"], ("1", "1", 1000))
    assert json_cents(previous["cost"]["total"]) == cents(exact)


def test_the_chart_keeps_its_token_bars(cli, cloud, prices_file):
    args = ["--from", "2026-05-08", "--to", "2026-05-12", "--timezone", "Asia/Shanghai", "--group-by", "day", "--chart"]
    plain, priced = cli(*args), cli(*args, "--prices", prices_file(HEADER + "*,1,1,1000,CNY\n"))
    assert priced.code == 0, priced.stderr

    def chart(text: str) -> list[str]:
        lines = text.splitlines()
        start = lines.index("Total Tokens")
        return lines[start:lines.index("", start)]
    assert chart(plain.stdout) == chart(priced.stdout)
    assert re.search(r" Est\. ?CNY \|", priced.stdout)


def test_a_month_of_days_by_service_type_with_costs_fits_80_columns(cli, hourly, prices_file):
    run = cli("--from", "2026-05-01", "--to", "2026-06-01", "--timezone", "Asia/Shanghai", "--group-by", "day",
              "service-type", "--prices", prices_file(HEADER + "*,0.002,0.008,1000,CNY\n"))
    assert run.code == 0, run.stderr
    table = run.stdout.split("\n\n", 1)[0].splitlines()[1:]
    assert len(table) > 93 and max(map(len, table)) <= 80 and "Est.CNY" in table[1]


def test_every_format_labels_the_cost_estimated(cli, cloud, prices_file):
    path = prices_file(HEADER + "*,0.002,0.008,1000,CNY\n")
    table = cli(*SEED, "--service-type", "all", "--prices", path)
    assert re.search(r"Est\. ?CNY", table.stdout) and "Estimated cost: " in table.stdout
    assert cli(*SEED, "--prices", path, "--format", "json").json()["cost"]["estimated"] is True
    lines = list(csv.DictReader(io.StringIO(cli(*SEED, "--service-type", "all", "--prices", path,
                                                "--format", "csv").stdout)))
    assert len(lines) == 3 and all(line["currency"] == "CNY" and line["estimated_cost"] for line in lines)
    prometheus = cli(*SEED, "--service-type", "all", "--prices", path, "--format", "prometheus").stdout
    assert "# HELP maas_usage_estimated_cost Estimated cost" in prometheus
    assert prometheus.count('maas_usage_estimated_cost{') == 3 and 'currency="CNY"' in prometheus


def test_no_row_with_a_cost_is_no_total_cost_never_0(cli, hourly, prices_file):
    """Cloud Eye without prompt_tokens: no row can be costed, so the total is unknown (-, null), not 0.00."""
    hourly.ces.missing_metrics = {"prompt_tokens"}
    path = prices_file(HEADER + "*,0.002,0.008,1000,CNY\n")
    document = cli(*MODEL_RANGE, "--group-by", "model", "--prices", path, "--format", "json").json()
    assert document["rows"] and all(row["cost"] is None for row in document["rows"])
    assert document["cost"]["total"] is None and document["cost"]["complete"] is False
    table = cli(*MODEL_RANGE, "--group-by", "model", "--prices", path)
    assert table.code == 0 and "Estimated cost: - (from --prices" in table.stdout, table.stdout
    assert "0.00" not in table.stdout


def test_csv_row_costs_add_up_to_the_json_total(cli, cloud, prices_file):
    path = prices_file(HEADER + "*,0.002,0.008,1000,CNY\n")
    lines = list(csv.DictReader(io.StringIO(cli(*SEED, "--service-type", "all", "--prices", path,
                                                "--format", "csv").stdout)))
    exact = sum(oracle_cost(int(line["prompt_tokens"]), int(line["completion_tokens"]), ("0.002", "0.008", 1000))
                for line in lines)
    total = cli(*SEED, "--service-type", "all", "--prices", path, "--format", "json").json()["cost"]["total"]
    assert json_cents(total) == cents(exact)
    assert [Decimal(line["estimated_cost"]) for line in lines] == [
        cents(oracle_cost(int(line["prompt_tokens"]), int(line["completion_tokens"]), ("0.002", "0.008", 1000)))
        for line in lines]


# ================================================================================================
# Malformed price files: exit 2, an error naming the file and line, no request, no traceback
# ================================================================================================

MALFORMED = {
    "missing-column": (HEADER + "*,1,2,1000\n", "line 2: 4 columns, expected 5"),
    "extra-column": (HEADER + "*,1,2,1000,CNY,x\n", "line 2: 6 columns, expected 5"),
    "bad-header": ("model,prompt,completion,per,currency\n*,1,2,1000,CNY\n", "line 1: the header must be"),
    "no-header": ("*,1,2,1000,CNY\n", "line 1: the header must be"),
    "header-in-another-order": ("model,output,input,per,currency\n*,1,2,1000,CNY\n", "line 1: the header must be"),
    "non-number": (HEADER + "*,abc,2,1000,CNY\n", 'line 2: the input price "abc" is not a number'),
    "nan": (HEADER + "*,1,NaN,1000,CNY\n", 'line 2: the output price "NaN" is not a number'),
    "exponent": (HEADER + "*,1e-3,2,1000,CNY\n", 'line 2: the input price "1e-3" is not a number'),
    "empty-price": (HEADER + "*,,2,1000,CNY\n", 'line 2: the input price "" is not a number'),
    "thousands-separator": (HEADER + '*,"1,5",2,1000,CNY\n', 'line 2: the input price "1,5" is not a number'),
    "negative": (HEADER + "*,1,-2,1000,CNY\n", 'line 2: the output price "-2" is negative'),
    "per-100": (HEADER + "*,1,2,100,CNY\n", 'line 2: per is "100": prices are per 1000 or per 1000000 tokens'),
    "per-1k": (HEADER + "*,1,2,1K,CNY\n", 'line 2: per is "1K"'),
    "per-empty": (HEADER + "*,1,2,,CNY\n", 'line 2: per is ""'),
    "duplicate-model": (HEADER + "*,1,2,1000,CNY\nDeepSeek-V3,1,2,1000,CNY\ndeepseek-v3,1,2,1000,CNY\n",
                        'line 4: the model "deepseek-v3" is priced twice (also on line 3)'),
    "duplicate-star": (HEADER + "*,1,2,1000,CNY\n*,1,2,1000,CNY\n", 'line 3: the model "*" is priced twice'),
    "empty-model": (HEADER + ",1,2,1000,CNY\n", "line 2: the model is empty"),
    "empty-file": ("", ": is empty"),
    "only-comments": ("# prices\n\n", ": is empty"),
    "header-only": (HEADER, ": has a header but no prices"),
    "not-utf8": (HEADER.encode() + b"*,1,2,1000,CNY\nQwen\xff,1,2,1000,CNY\n", "line 3: is not UTF-8 text"),
    "utf16": ((HEADER + "*,1,2,1000,CNY\n").encode("utf-16"), "line 1: is not UTF-8 text"),
    "several-currencies": (HEADER + "*,1,2,1000,CNY\nDeepSeek-V3,1,2,1000,USD\n",
                           "line 3: several currencies (CNY on line 2, USD): costs in one currency only"),
    "bad-currency": (HEADER + "*,1,2,1000,yuan\n", 'line 2: the currency "yuan" is not a 3-letter code'),
    "symbol-currency": (HEADER + "*,1,2,1000,¥\n", 'line 2: the currency "¥" is not a 3-letter code'),
    "huge": (HEADER + "*,1,2,1000,CNY\n" + "# padding\n" * 30000, ": is larger than 256 KiB: not a price list"),
    "no-star-for-totals": (HEADER + "DeepSeek-V3,1,2,1000,CNY\n",
                           ": has no * row: without --group-by model the rows have no model"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_price_file_is_a_usage_error_before_any_request(cli, cloud, prices_file, name):
    text, fragment = MALFORMED[name]
    path = prices_file(text)
    run = cli(*SEED, "--prices", path)
    assert run.code == 2 and run.stdout == ""
    first = run.stderr.splitlines()[0]
    assert first.startswith(f"error: --prices {path}") and fragment in first, run.stderr
    assert "hint: the file is CSV with the header model,input,output,per,currency" in run.stderr
    assert cloud.log == []


def test_a_missing_file_is_a_usage_error(cli, cloud, tmp_path):
    run = cli(*SEED, "--prices", str(tmp_path / "nope.csv"))
    assert run.code == 2 and "cannot be read (No such file or directory)" in run.stderr
    assert cloud.log == []


def test_a_directory_or_a_pipe_is_refused_without_blocking(cli, cloud, tmp_path):
    run = cli(*SEED, "--prices", str(tmp_path))
    assert run.code == 2 and "is a directory, not a regular file" in run.stderr
    fifo = tmp_path / "prices.fifo"
    os.mkfifo(fifo)
    run = cli(*SEED, "--prices", str(fifo))  # a pipe without a writer would block a plain open()
    assert run.code == 2 and "is a named pipe, not a regular file" in run.stderr
    assert cloud.log == []


def test_an_unreadable_file_is_a_usage_error(cli, cloud, prices_file, monkeypatch):
    path = prices_file(HEADER + "*,1,2,1000,CNY\n")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(m, "open", refused, raising=False)  # the script's own open(): root could read a 000 file
    run = cli(*SEED, "--prices", path)
    assert run.code == 2 and f"error: --prices {path}: cannot be read (Permission denied)" in run.stderr
    assert cloud.log == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_file_without_read_permission_is_a_usage_error(cli, cloud, prices_file):
    path = prices_file(HEADER + "*,1,2,1000,CNY\n")
    os.chmod(path, 0)
    run = cli(*SEED, "--prices", path)
    assert run.code == 2 and "cannot be read" in run.stderr


def test_a_dry_run_checks_the_prices_too(cli, cloud, prices_file):
    run = cli(*SEED, "--dry-run", "--prices", prices_file(HEADER + "*,1,-2,1000,CNY\n"))
    assert run.code == 2 and "is negative" in run.stderr


def test_bom_crlf_comments_blank_lines_quotes_and_spaces_are_tolerated(prices_file):
    text = ("\ufeff# our prices, 2026-12\r\nModel, Input, Output, Per, Currency\r\n\r\n"
            '"DeepSeek-V3", 2 , 8, 1000000 ,cny\r\n*,0.5,2.0,1000000,CNY\r\n')
    prices = m.parse_prices("p.csv", m.read_prices_text(prices_file(text.encode("utf-8"))))
    assert prices.currency == "CNY"
    assert prices.prices["deepseek-v3"] == m.Price("DeepSeek-V3", Decimal(2), Decimal(8), 1000000, 4)
    assert prices.prices["*"].input == Decimal("0.5")


# ================================================================================================
# Properties: for any rows and prices
# ================================================================================================

amounts = st.decimals(min_value=0, max_value=Decimal("999999"), places=6)
tokens = st.integers(0, 10 ** 13)


def row_of(model_id, name, prompt: int, completion: int) -> m.Row:
    start = datetime(2026, 5, 1, tzinfo=timezone.utc)
    row = m.Row(m.Period(start, start.replace(day=2)), None, None, model_id=model_id, model=name)
    row.cloud_eye = m.Usage.from_units({"total_tokens": prompt + completion, "prompt_tokens": prompt,
                                        "completion_tokens": completion, "total_requests": 1, "total_errors": 0,
                                        "total_completion_tasks": 0, "total_infer_count": 0})
    return row


@given(prices=st.lists(st.tuples(amounts, amounts, st.sampled_from([1000, 1000000])), min_size=1, max_size=4),
       usages=st.lists(st.tuples(st.integers(0, 4), tokens, tokens), min_size=1, max_size=12))
def test_the_cost_total_is_the_sum_of_exact_row_costs(prices, usages):
    """Rows of models 0 … 4; models 0 … len(prices)-2 have a price, the last price is ``*``."""
    listed = {f"model-{i}": price for i, price in enumerate(prices[:-1])}
    text = HEADER + "".join(f"{name},{i},{o},{per},USD\n" for name, (i, o, per) in listed.items())
    text += "*,{},{},{},USD\n".format(*prices[-1])
    price_list = m.parse_prices("p.csv", text)
    rows = [row_of(f"id-{n}", f"model-{n}", prompt, completion) for n, prompt, completion in usages]
    estimate = m.estimate_costs(price_list, rows)
    exact = []
    for (n, prompt, completion), cost in zip(usages, estimate.rows):
        price = listed.get(f"model-{n}", prices[-1])
        expected = oracle_cost(prompt, completion, (str(price[0]), str(price[1]), price[2]))
        assert Fraction(cost) == expected
        exact.append(expected)
    assert Fraction(estimate.total) == sum(exact)
    assert m.format_cost(estimate.total) == f"{cents(sum(exact, Fraction(0))):,}"


@given(model=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1,
                     max_size=20).filter(lambda t: t.strip() and t.strip() == t and not t.startswith("#")),
       price=st.tuples(amounts, amounts, st.sampled_from([1000, 1000000])))
def test_any_model_name_written_as_csv_reads_back(model, price):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "input", "output", "per", "currency"])
    writer.writerow([model, *price, "EUR"])
    parsed = m.parse_prices("p.csv", out.getvalue()).prices[model.casefold()]
    assert (parsed.model, parsed.input, parsed.output, parsed.per) == (model, *price)


LATE_MAY = datetime(2026, 5, 25, tzinfo=timezone.utc)  # May 8 to 15 then lies inside MaaS's 30 days


def test_the_row_cloud_eye_does_not_list_takes_the_star_price_or_stays_out_of_the_total(cli, hourly, prices_file):
    hourly.server_time_offset = (LATE_MAY - datetime.now(timezone.utc)).total_seconds()  # signatures match
    hourly.ces.unlisted = {MODELS["DeepSeek-R1"]}
    week = ["--from", "2026-05-08", "--to", "2026-05-15", "--timezone", "Asia/Shanghai", "--group-by", "model",
            "--format", "json"]
    named = {name: ("1", "2", 1000) for name in MODELS if name != "DeepSeek-R1"}
    path = prices_file(HEADER + "".join(f"{name},1,2,1000,CNY\n" for name in named))
    run = cli(*week, "--prices", path, now=LATE_MAY)
    assert run.code == 0, run.stderr
    document = run.json()
    (extra,) = [row for row in document["rows"] if row["model_id"] is None]
    assert extra["cost"] is None and document["cost"]["complete"] is False
    assert "their cost is not in the estimated total" in run.stderr
    priced = [row for row in document["rows"] if row["model_id"] is not None]
    assert json_cents(document["cost"]["total"]) == cents(sum(
        oracle_cost(row["prompt_tokens"], row["completion_tokens"], ("1", "2", 1000)) for row in priced))
    starred = cli(*week, "--prices", prices_file(HEADER + "*,0.5,0.5,1000,CNY\n", "star.csv"), now=LATE_MAY).json()
    (extra,) = [row for row in starred["rows"] if row["model_id"] is None]
    assert json_cents(extra["cost"]) == cents(oracle_cost(extra["prompt_tokens"], extra["completion_tokens"],
                                                          ("0.5", "0.5", 1000)))
    assert starred["cost"]["complete"] is True
