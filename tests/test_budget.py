"""--budget and --fail-over: the share of a token budget used and, for --today, --this-week and
--this-month, the linear projection to the period's end (DST days, month ends, midnight), checked
against an oracle of rational arithmetic and zone arithmetic of its own; exit 4 with every format."""

from __future__ import annotations

import io
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st
from prometheus_client.parser import text_string_to_metric_families

import maas_rest_usage_stats as m
from conftest import FakeClock, hourly_index

UTC = timezone.utc


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def rounded(value: Fraction, places: int) -> Decimal:
    return Decimal(half_up(value * 10 ** places)).scaleb(-places)


def m_tokens(tokens: int) -> str:
    """``97.31 M tokens``, with fractions (the oracle of format_tokens above 1 M)."""
    return f"{rounded(Fraction(tokens, 10 ** 6), 2):,} M tokens"


@pytest.fixture
def at(cloud, cli):
    """Run the CLI at a fixed instant, the fake cloud serving hourly data around it and following its clock."""
    def run(instant: datetime, *args: str, env=None):
        cloud.events = hourly_index(ms(instant - timedelta(days=40)), ms(instant + timedelta(days=1)))
        clock = FakeClock(start=instant.astimezone(UTC))
        cloud.clock = clock
        return cli(*args, clock=clock, env=env)
    return run


def expected_budget(used: int, budget: int, start: datetime, now: datetime, end: datetime | None) -> dict:
    """The contract's JSON ``budget`` from its definition: used / elapsed x the whole period, exact."""
    document = {"tokens": budget, "used": used, "used_percent": rounded(Fraction(used * 100, budget), 2),
                "projected": None, "projected_percent": None, "runs_out": None, "projected_to": None}
    if end is None:
        return document
    elapsed, whole = ms(now) - ms(start), ms(end) - ms(start)
    document["projected"] = half_up(Fraction(used * whole, elapsed))
    document["projected_percent"] = rounded(Fraction(used * whole * 100, elapsed * budget), 2)
    document["projected_to"] = end.isoformat()
    if used and used * whole >= budget * elapsed:
        out_ms = ms(start) + math.floor(Fraction(budget * elapsed, used))
        document["runs_out"] = datetime.fromtimestamp((out_ms - out_ms % 1000) / 1000, UTC).astimezone(end.tzinfo)
    return document


def comparable(budget: dict) -> dict:
    """JSON's budget with numbers as Decimal and instants as datetimes, to compare with the oracle."""
    document = dict(budget)
    for name in ("used_percent", "projected_percent"):
        if document[name] is not None:
            document[name] = Decimal(str(document[name]))
    if document["runs_out"] is not None:
        document["runs_out"] = datetime.fromisoformat(document["runs_out"])
    return document


# (zone, preset, now (local wall time), period start and end (local), hours in the whole period)
PROJECTIONS = {
    "berlin-october-fall-back": ("Europe/Berlin", "--this-month", datetime(2026, 10, 26, 12, 0),
                                 datetime(2026, 10, 1), datetime(2026, 11, 1), 745),
    "new-york-march-spring-forward": ("America/New_York", "--this-month", datetime(2026, 3, 20, 9, 30),
                                      datetime(2026, 3, 1), datetime(2026, 4, 1), 743),
    "new-york-march-before-the-change": ("America/New_York", "--this-month", datetime(2026, 3, 2, 6, 0),
                                         datetime(2026, 3, 1), datetime(2026, 4, 1), 743),
    "berlin-week-with-the-25-hour-sunday": ("Europe/Berlin", "--this-week", datetime(2026, 10, 25, 18, 0),
                                            datetime(2026, 10, 19), datetime(2026, 10, 26), 169),
    "new-york-23-hour-day-near-midnight": ("America/New_York", "--today", datetime(2026, 3, 8, 23, 30),
                                           datetime(2026, 3, 8), datetime(2026, 3, 9), 23),
    "new-york-25-hour-day-first-hour": ("America/New_York", "--today", datetime(2026, 11, 1, 0, 30),
                                        datetime(2026, 11, 1), datetime(2026, 11, 2), 25),
    "february-28-days": ("UTC", "--this-month", datetime(2026, 2, 28, 23, 59),
                         datetime(2026, 2, 1), datetime(2026, 3, 1), 28 * 24),
    "february-29-days": ("UTC", "--this-month", datetime(2028, 2, 28, 12, 0),
                         datetime(2028, 2, 1), datetime(2028, 3, 1), 29 * 24),
    "31-day-month-last-minute": ("Asia/Shanghai", "--this-month", datetime(2026, 12, 31, 23, 59, 30),
                                 datetime(2026, 12, 1), datetime(2027, 1, 1), 31 * 24),
    "30-day-month": ("Asia/Shanghai", "--this-month", datetime(2026, 11, 10, 8, 0),
                     datetime(2026, 11, 1), datetime(2026, 12, 1), 30 * 24),
    "today-one-second-before-midnight": ("Asia/Shanghai", "--today", datetime(2026, 12, 20, 23, 59, 59),
                                         datetime(2026, 12, 20), datetime(2026, 12, 21), 24),
    "today-one-second-after-midnight": ("Asia/Shanghai", "--today", datetime(2026, 12, 21, 0, 0, 1),
                                        datetime(2026, 12, 21), datetime(2026, 12, 22), 24),
}


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_projection_is_used_over_elapsed_times_the_whole_period(at, name):
    zone_name, preset, wall, start_wall, end_wall, hours = PROJECTIONS[name]
    zone = ZoneInfo(zone_name)
    now, start, end = (t.replace(tzinfo=zone) for t in (wall, start_wall, end_wall))
    assert (ms(end) - ms(start)) == hours * 3600 * 1000  # the oracle's own DST arithmetic
    run = at(now, preset, "--timezone", zone_name, "--budget", "40M", "--format", "json")
    assert run.code == 0, run.stderr
    document = run.json()
    used = document["totals"]["total_tokens"]
    assert document["period"]["start"] == start.isoformat()
    assert comparable(document["budget"]) == expected_budget(used, 40 * 10 ** 6, start, now, end)


@pytest.mark.parametrize("args", [("--last", "7d"), ("--yesterday",), ("--last-month",), ("--last-week",),
                                  ("--from", "2026-12-01", "--to", "2026-12-10")])
def test_other_ranges_have_no_projection(at, args):
    now = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
    run = at(now, *args, "--timezone", "UTC", "--budget", "130M", "--format", "json")
    assert run.code == 0, run.stderr
    budget = run.json()["budget"]
    used = run.json()["totals"]["total_tokens"]
    start = datetime.fromisoformat(run.json()["period"]["start"])
    assert comparable(budget) == expected_budget(used, 130 * 10 ** 6, start, now, None)


def test_the_table_says_budget_used_and_at_this_pace(at):
    zone = ZoneInfo("Europe/Berlin")
    now, start, end = (datetime(2026, 10, 20, 6, 0, tzinfo=zone), datetime(2026, 10, 1, tzinfo=zone),
                       datetime(2026, 11, 1, tzinfo=zone))
    plain = at(now, "--this-month", "--timezone", "Europe/Berlin", "--format", "json")
    used = plain.json()["totals"]["total_tokens"]
    budget = used + used // 10  # used up before the month ends at this pace
    run = at(now, "--this-month", "--timezone", "Europe/Berlin", "--budget", str(budget))
    assert run.code == 0, run.stderr
    oracle = expected_budget(used, budget, start, now, end)
    lines = run.stdout.splitlines()
    index = lines.index(f"Budget: {m_tokens(budget)}; used {m_tokens(used)} "
                        f"({rounded(Fraction(used * 100, budget), 1)} %)")
    elapsed, whole = ms(now) - ms(start), ms(end) - ms(start)
    assert lines[index + 1] == (
        f"At this pace: {m_tokens(oracle['projected'])} by 2026-10-31 24:00 "
        f"({rounded(Fraction(used * whole * 100, elapsed * budget), 1)} %); the budget runs out about "
        f"{oracle['runs_out']:%Y-%m-%d %H:%M}")
    assert lines[index + 2].startswith("Period: ")


def test_contract_example_line_shapes():
    """The contract's two lines, from a Budget of known figures (December 2026 in UTC, 744 hours)."""
    start = datetime(2026, 12, 1, tzinfo=UTC)
    budget = m.Budget(130 * 10 ** 6, 97_310_000, m.Period(start, datetime(2026, 12, 24, tzinfo=UTC)),
                      datetime(2027, 1, 1, tzinfo=UTC))
    assert m.budget_lines(budget, UTC) == [
        "Budget: 130.00 M tokens; used 97.31 M tokens (74.9 %)",
        # 97.31 M in 23 days of 31: 131,156,956.5 tokens; 130 M are reached after 23 x 130 / 97.31 days
        # = 30 days 17.437 hours
        "At this pace: 131.16 M tokens by 2026-12-31 24:00 (100.9 %); the budget runs out about 2026-12-31 17:26"]


def test_a_budget_already_spent_ran_out(at):
    now = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
    run = at(now, "--this-month", "--timezone", "UTC", "--budget", "1M")
    assert run.code == 0 and "; the budget ran out about 2026-12-01 " in run.stdout, run.stdout


def test_compare_shows_the_previous_periods_use(at):
    now = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
    run = at(now, "--this-month", "--timezone", "UTC", "--budget", "2B", "--compare", "--format", "json")
    assert run.code == 0, run.stderr
    document = run.json()
    previous = document["previous"]
    used = previous["totals"]["total_tokens"]
    assert previous["budget"]["used"] == used
    assert Decimal(str(previous["budget"]["used_percent"])) == rounded(Fraction(used * 100, 2 * 10 ** 9), 2)
    assert previous["budget"]["projected"] is None and document["budget"]["projected"] is not None
    table = at(now, "--this-month", "--timezone", "UTC", "--budget", "2B", "--compare")
    assert f"; previous period {m_tokens(used)} (" in table.stdout


def prometheus_values(text: str) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("maas_usage_budget")}


def test_prometheus_gauges_the_budget_and_its_ratios(at):
    zone = ZoneInfo("America/New_York")
    now, start, end = (datetime(2026, 3, 20, 9, 30, tzinfo=zone), datetime(2026, 3, 1, tzinfo=zone),
                       datetime(2026, 4, 1, tzinfo=zone))
    run = at(now, "--this-month", "--timezone", "America/New_York", "--budget", "1.5B", "--format", "prometheus",
             "--service-type", "all")
    assert run.code == 0, run.stderr
    used = sum(int(line.rsplit(" ", 1)[1]) for line in run.stdout.splitlines()
               if line.startswith("maas_usage_tokens{") and 'kind="total"' in line)
    elapsed, whole = ms(now) - ms(start), ms(end) - ms(start)
    assert prometheus_values(run.stdout) == {
        "maas_usage_budget_tokens": 1.5e9,
        "maas_usage_budget_used_ratio": float(rounded(Fraction(used, 1500 * 10 ** 6), 6)),
        "maas_usage_budget_projected_ratio": float(rounded(Fraction(used * whole, elapsed * 1500 * 10 ** 6), 6))}
    for line in run.stdout.splitlines():
        if line.startswith("maas_usage_budget"):
            assert line.split("{")[1].split("}")[0] == (
                f'region="cn-southwest-2",project_id="{run.stdout.split("project_id=")[1][1:33]}"')


def test_prometheus_has_no_projected_ratio_without_a_projection(at):
    run = at(datetime(2026, 12, 20, 12, 0, tzinfo=UTC), "--last", "24h", "--timezone", "UTC", "--budget", "130M",
             "--format", "prometheus")
    assert run.code == 0, run.stderr
    assert set(prometheus_values(run.stdout)) == {"maas_usage_budget_tokens", "maas_usage_budget_used_ratio"}


# ================================================================================================
# --fail-over: exit 4 with the whole result, in every format
# ================================================================================================

NOW = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("output_format", ["table", "json", "csv", "prometheus"])
def test_fail_over_exits_4_with_the_whole_result_in_every_format(at, output_format):
    args = ("--this-month", "--timezone", "UTC", "--budget", "1B", "--format", output_format)
    quiet = at(NOW, *args)
    assert quiet.code == 0 and "--fail-over" not in quiet.stderr
    run = at(NOW, *args, "--fail-over", "90")
    assert run.code == 4
    assert run.stdout == quiet.stdout  # the whole result, as without --fail-over
    assert "the projected share (" in run.stderr and "reaches --fail-over 90 %" in run.stderr


def test_fail_over_below_the_share_exits_0(at):
    run = at(NOW, "--this-month", "--timezone", "UTC", "--budget", "100B", "--fail-over", "90")
    assert run.code == 0 and "--fail-over" not in run.stderr, run.stderr


def test_without_a_projection_the_used_share_decides(at):
    document = at(NOW, "--last", "7d", "--timezone", "UTC", "--budget", "1B", "--format", "json").json()
    share = Decimal(str(document["budget"]["used_percent"]))
    under = at(NOW, "--last", "7d", "--timezone", "UTC", "--budget", "1B", "--fail-over", str(share + 1))
    over = at(NOW, "--last", "7d", "--timezone", "UTC", "--budget", "1B", "--fail-over", str(share - 1))
    assert under.code == 0 and over.code == 4
    assert "the used share (" in over.stderr


def test_fail_over_with_output_writes_the_file_and_exits_4(at, tmp_path):
    target = tmp_path / "budget.json"
    run = at(NOW, "--this-month", "--timezone", "UTC", "--budget", "1B", "--fail-over", "50", "--format", "json",
             "--output", str(target))
    assert run.code == 4 and run.stdout == ""
    assert '"budget"' in target.read_text()


def test_fail_over_even_when_quiet_says_why(at):
    run = at(NOW, "--this-month", "--timezone", "UTC", "--budget", "1B", "--fail-over", "50", "-q")
    assert run.code == 4 and run.stderr.startswith("warning: the projected share")


def test_fail_over_from_the_command_line_process(cli_process, cloud):
    run = cli_process("--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai", "--budget", "1B",
                      "--fail-over", "100", env={"HW_PROJECT_ID": None})
    assert run.code == 4 and "Budget: 1,000.00 M tokens; used 2,482.08 M tokens (248.2 %)" in run.stdout


def test_a_dry_run_never_fails_over(cli, cloud):
    run = cli("--last", "7d", "--budget", "1", "--fail-over", "1", "--dry-run")
    assert run.code == 0 and cloud.log == []


@pytest.mark.parametrize("used, tokens, percent, crossed", [
    (65, 130, "50", True), (65, 130, "50.0001", False), (64, 130, "49.2307", True), (64, 130, "49.2308", False),
    (130, 130, "100", True), (0, 130, "0.0001", False)])
def test_reaching_is_exact(used, tokens, percent, crossed):
    budget = m.Budget(tokens, used, m.Period(NOW - timedelta(days=1), NOW), None)
    assert (budget.crossed(Decimal(percent)) is not None) is crossed


# ================================================================================================
# Flags
# ================================================================================================

@pytest.mark.parametrize("text, tokens", [("130M", 130 * 10 ** 6), ("130m", 130 * 10 ** 6), ("50K", 50_000),
                                          ("1.5B", 1_500_000_000), ("880M", 880 * 10 ** 6), ("12345", 12345),
                                          ("0.5K", 500)])
def test_budget_values(text, tokens):
    assert m.parse_budget(text) == tokens


BAD_BUDGETS = ["abc", "0", "0M", "-5M", "1.5", "1.0001K", "130MB", "1e6", "M", "130 M tokens", "2000000T",
               "9999999999999999", "١٣٠M"]


@pytest.mark.parametrize("text", BAD_BUDGETS)
def test_bad_budgets_are_usage_errors(text):
    stdout, stderr = io.StringIO(), io.StringIO()
    assert m.main(["--budget", text, "--dry-run", "--timezone", "UTC"], env={}, stdout=stdout, stderr=stderr) == 2
    first = stderr.getvalue().splitlines()[0]
    assert first.startswith("error:") and "--budget" in first and stdout.getvalue() == ""
    assert "Traceback" not in stderr.getvalue()


@pytest.mark.parametrize("text", ["0", "-1", "abc", "10001", "50 %", "1e2", ""])
def test_bad_fail_over_values_are_usage_errors(text):
    stderr = io.StringIO()
    code = m.main(["--budget", "1M", "--fail-over", text, "--dry-run", "--timezone", "UTC"], env={},
                  stdout=io.StringIO(), stderr=stderr)
    first = stderr.getvalue().splitlines()[0]
    assert code == 2 and first.startswith("error:") and "--fail-over" in first, stderr.getvalue()


def test_fail_over_needs_a_budget():
    stderr = io.StringIO()
    assert m.main(["--fail-over", "90", "--dry-run"], env={}, stdout=io.StringIO(), stderr=stderr) == 2
    assert stderr.getvalue().startswith("error: --fail-over needs --budget")


@pytest.mark.parametrize("text, percent", [("90", "90"), ("87.5%", "87.5"), ("150", "150")])
def test_fail_over_values(text, percent):
    assert m.parse_fail_over(text) == Decimal(percent)


def test_help_lists_exit_code_4():
    stdout = io.StringIO()
    assert m.main(["--help"], env={}, stdout=stdout, stderr=io.StringIO()) == 0
    text = " ".join(stdout.getvalue().split())
    assert "4 --fail-over: the budget share was reached" in text and "reaches PCT percent" in text
    assert "--budget N" in text and "--fail-over PCT" in text and "--prices FILE" in text


# ================================================================================================
# Properties: for any figures
# ================================================================================================

@given(used=st.integers(0, 10 ** 15), tokens=st.integers(1, 10 ** 15),
       elapsed=st.integers(1, 32 * 24 * 3600 * 1000), rest=st.integers(0, 32 * 24 * 3600 * 1000))
def test_projection_is_at_least_used_and_runs_out_inside_the_period(used, tokens, elapsed, rest):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    now, end = start + timedelta(milliseconds=elapsed), start + timedelta(milliseconds=elapsed + rest)
    budget = m.Budget(tokens, used, m.Period(start, now), end)
    projected = budget.projected()
    assert projected >= used
    assert projected == half_up(Fraction(used * (elapsed + rest), elapsed))
    runs_out = budget.runs_out()
    assert (runs_out is not None) == (used > 0 and used * (elapsed + rest) >= tokens * elapsed)
    if runs_out is not None:
        assert start <= runs_out <= end
        assert (runs_out <= now) == (used >= tokens) or runs_out == now.replace(microsecond=0)
    assert budget.share(2, projected=True) >= budget.share(2)


@given(used=st.integers(0, 10 ** 15), tokens=st.integers(1, 10 ** 15),
       percent=st.decimals(min_value=Decimal("0.0001"), max_value=10000, places=4))
def test_fail_over_reaches_exactly_when_the_share_is_at_least_pct(used, tokens, percent):
    budget = m.Budget(tokens, used, m.Period(NOW - timedelta(hours=1), NOW), None)
    assert (budget.crossed(percent) is not None) == (Fraction(used * 100, tokens) >= Fraction(percent))


def test_without_total_tokens_the_budget_says_it_cannot_be_checked(cli, cloud):
    from conftest import hourly_index as index
    cloud.events = index(ms(datetime(2026, 4, 1, tzinfo=UTC)), ms(datetime(2026, 6, 1, tzinfo=UTC)))
    cloud.ces.missing_metrics = {"total_tokens"}
    args = ("--from", "2026-05-08", "--to", "2026-05-09", "--timezone", "UTC", "--group-by", "model", "--budget", "1M")
    run = cli(*args)
    assert run.code == 0, run.stderr
    assert "Budget: 1.00 M tokens; used unknown (no total tokens)" in run.stdout
    assert "warning: --budget: the rows carry no total tokens" in run.stderr
    # a cron alarm must not pass because it could not look: --fail-over unchecked is an error
    alarm = cli(*args, "--fail-over", "1")
    assert alarm.code == 1 and alarm.stdout == ""
    assert "\nerror: --fail-over cannot be checked: the rows carry no total tokens" in alarm.stderr


def test_a_cloud_eye_today_paces_over_the_time_lived_not_the_widened_hour(cli, cloud):
    """At 00:30, whole hours widen Cloud Eye's period to 01:00: the pace is still the tokens over
    the 30 minutes lived, so the day projects to 48 times them, not 24."""
    from conftest import serve_at

    now = serve_at(cloud, datetime(2026, 5, 20, 0, 30, tzinfo=timezone.utc))
    cloud.events = hourly_index(int(datetime(2026, 5, 19, tzinfo=timezone.utc).timestamp()) * 1000,
                                int(datetime(2026, 5, 21, tzinfo=timezone.utc).timestamp()) * 1000)
    run = cli("--today", "--timezone", "UTC", "--group-by", "model", "--budget", "1B", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    budget = run.json()["budget"]
    assert run.json()["period"]["end"] == "2026-05-20T01:00:00+00:00" and budget["used"] > 0
    assert budget["projected"] == budget["used"] * 48
    assert budget["projected_to"].startswith("2026-05-21T00:00")
