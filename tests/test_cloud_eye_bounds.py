"""Cloud Eye answers that would make a run go on for ever, grow without bound, or count a figure
twice: listings that page round or never end, more series than a run keeps, series listed twice or
answered unasked, hourly stamps off the hour, and a reconciliation that Cloud Eye exceeds."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

import fakecloud as fc
from conftest import hourly_index, local_ms
from test_cloud_eye import metrics_of, oracle

RANGE = ("--from", "2026-05-08", "--to", "2026-05-10", "--timezone", "UTC")


@pytest.fixture
def hourly(cloud):
    cloud.events = hourly_index(local_ms("2026-04-01T00:00", "UTC"), local_ms("2026-06-01T00:00", "UTC"))
    return cloud


def exact(cloud, document: dict) -> None:
    """Each row against the fake's own sums of its events (per model and, when split so, per key)."""
    assert document["rows"]
    for row in document["rows"]:
        start, end = (int(datetime.fromisoformat(row[edge]).timestamp() * 1000) for edge in ("start", "end"))
        assert metrics_of(row) == oracle(cloud.cloud_eye_usage(start, end, model_id=row["model_id"],
                                                               key_id=row["api_key_id"])), row


def listing(cloud, now_ms: int) -> dict:
    """The fake's whole SYS.MaaS listing (every metric), as one ListMetrics page."""
    return fc.ces_list_metrics(cloud.index.cloud_eye, fc.ListMetricsQuery(namespace=fc.CES_NAMESPACE), cloud.ces,
                               now_ms)


# -- listings that do not end ---------------------------------------------------------------------

def test_a_page_marker_that_comes_back_is_malformed_not_a_loop(cli, hourly):
    page = listing(hourly, local_ms("2026-05-10T00:00", "UTC"))
    page["meta_data"] = {"count": len(page["metrics"]), "marker": "the-same", "total": 10 ** 12}
    hourly.add_fault("json", path="ces_metrics", times=1000, body=page)
    run = cli(*RANGE, "--group-by", "model")
    assert run.code == 1 and run.stdout == ""
    assert "its pages go round (a page marker came back)" in run.stderr, run.stderr
    assert len(hourly.requests_of("ces_metrics")) <= 12  # two pages a metric, then the answer is refused
    assert hourly.requests_of("ces_data") == []


def test_pages_that_never_end_are_refused_by_max_requests(cli, hourly):
    """One series a page (a server ignoring limit) and a total that keeps the listing going: each page
    after a metric's first is a request, and --max-requests stops the listing, not the server."""
    hourly.ces.page_limit = 1
    run = cli(*RANGE, "--group-by", "model", "api-key", "--max-requests", "8")
    assert run.code == 2 and run.stdout == ""
    assert "Cloud Eye lists series that need at least" in run.stderr and "--max-requests 8" in run.stderr
    assert len(hourly.requests_of("ces_metrics")) <= 6 + 8 + 6  # each listing may have a page in flight
    assert hourly.requests_of("ces_data") == []


def test_more_series_than_a_run_keeps_are_refused(cli, hourly, monkeypatch):
    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "CES_MAX_LISTED", 20)  # the hourly fake lists 5 models x 6 metrics
    run = cli(*RANGE, "--group-by", "model")
    assert run.code == 2 and run.stdout == ""
    assert "Cloud Eye lists more than 20 SYS.MaaS series" in run.stderr
    assert "hint: group by model alone" in run.stderr
    assert hourly.requests_of("ces_data") == []


def test_a_dimension_value_longer_than_cloud_eye_allows_is_malformed(cli, hourly):
    page = listing(hourly, local_ms("2026-05-10T00:00", "UTC"))
    page["metrics"][0]["dimensions"][0]["value"] = "m" * 257
    hourly.add_fault("json", path="ces_metrics", times=6, body=page)
    run = cli(*RANGE, "--group-by", "model")
    assert run.code == 1 and "a value of 1 to 256 characters" in run.stderr, run.stderr


def test_names_that_never_end_stop_after_a_bounded_number_of_pages(cli, hourly, monkeypatch):
    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "MONITOR_MAX_PAGES", 3)
    hourly.add_fault("json", path="monitor", times=1000,
                     body={"instances": [{"maas_api_id": {"id": "x", "name": "x"}}], "total": 10 ** 12})
    run = cli(*RANGE, "--group-by", "model", "--format", "json")
    assert run.code == 0, run.stderr
    assert len(hourly.requests_of("monitor")) == 3
    assert "names are read for the first 3 instances" in run.stderr
    exact(hourly, run.json())


# -- a figure counted twice -------------------------------------------------------------------------

def test_a_series_listed_twice_in_either_dimension_order_is_read_once(cli, hourly):
    page = listing(hourly, local_ms("2026-05-10T00:00", "UTC"))
    page["metrics"] += [{**metric, "dimensions": metric["dimensions"][::-1]} for metric in page["metrics"]]
    page["meta_data"] = {"count": len(page["metrics"]), "marker": "", "total": len(page["metrics"])}
    hourly.add_fault("json", path="ces_metrics", times=6, body=page)
    run = cli(*RANGE, "--group-by", "model", "api-key", "--format", "json")
    assert run.code == 0, run.stderr
    exact(hourly, run.json())


def answered(points: list, dims: list, period: str = "3600", asked: list | None = None):
    import maas_rest_usage_stats as script

    body = {"from": 0, "to": 8 * fc.HOUR_MS, "filter": "sum", "period": period,
            "metrics": [{"namespace": fc.CES_NAMESPACE, "metric_name": "rpm", "dimensions": d}
                        for d in (asked or [[{"name": "maas_api_id", "value": "m"}]])]}
    return script.datapoints_of({"metrics": [{"metric_name": "rpm", "dimensions": dims,
                                              "datapoints": [{"timestamp": at, "sum": 1} for at in points]}]},
                                "Cloud Eye BatchListMetricData (a window)", body)


MODEL = [{"name": "maas_api_id", "value": "m"}]


@pytest.mark.parametrize("stamps", [[0, 1], [2, fc.HOUR_MS + 2], [fc.HOUR_MS // 2]])
def test_an_hourly_sum_stamped_off_its_hour_is_malformed(stamps):
    """Copies of an hour at t+1 ms would pass the repeated-timestamp check and count the hour twice."""
    import maas_rest_usage_stats as script

    with pytest.raises(script.MalformedResponse, match="stamped off the start of an hour"):
        answered(stamps, MODEL)


def test_a_coarser_sum_off_its_grid_is_read_for_the_check_to_reject():
    """A 4-hour or daily sum off its UTC grid is not malformed: BucketSums rejects the rollup and the
    run reads its hours (test_cloud_eye's rollup_offset tests)."""
    assert answered([fc.HOUR_MS], MODEL, period="14400")[0][1] == [(fc.HOUR_MS, 1)]


@pytest.mark.parametrize("dims", [
    MODEL + [{"name": "zz_extra", "value": "x"}],  # the asked series again under another dimension set
    [{"name": "maas_api_id", "value": "other"}],  # a series of another call
])
def test_a_series_not_asked_for_is_malformed(dims):
    import maas_rest_usage_stats as script

    with pytest.raises(script.MalformedResponse, match="a series it was not asked for"):
        answered([0], dims)


# -- the reconciliation: never negative, never less, and an excess said --------------------------------

def ms(text: str) -> int:
    return local_ms(text, "Asia/Shanghai")


WEEK = ("--from", "2026-05-08", "--to", "2026-05-15", "--timezone", "Asia/Shanghai", "--group-by", "model")


@pytest.fixture
def late_may(hourly):
    from conftest import serve_at

    return serve_at(hourly, datetime.fromisoformat("2026-05-25T00:00:00+00:00"))


def test_totals_are_show_statistics_also_for_a_metric_cloud_eye_lacks(cli, hourly, late_may):
    """Cloud Eye short (a model unlisted) and without req_count_5xx: the totals are ShowStatistics',
    errors too, while the rows, which cannot know their errors, show -."""
    from test_cloud_eye import statistics_of_types_1_and_2

    hourly.ces.unlisted = {fc.CES_MODELS[2][1][0]}
    hourly.ces.missing_metrics = {"req_count_5xx"}
    run = cli(*WEEK, "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    document = run.json()
    assert document["totals"] == statistics_of_types_1_and_2(hourly, ms("2026-05-08T00:00"), ms("2026-05-15T00:00"))
    assert all(row["total_errors"] is None for row in document["rows"])
    table = cli(*WEEK, now=late_may)
    total = next(line for line in table.stdout.splitlines() if line.startswith("| Total "))
    assert " - " not in total, total


def test_cloud_eye_over_show_statistics_leaves_no_negative_and_is_said(cli, hourly, late_may):
    """ShowStatistics with twice Cloud Eye's tokens but half its requests and no errors: the row
    (not listed by Cloud Eye) carries the tokens only (never a negative count), the totals are never
    less than either, and a note says that Cloud Eye counts more requests than ShowStatistics."""
    start, end = ms("2026-05-08T00:00"), ms("2026-05-15T00:00")
    ours = oracle(hourly.cloud_eye_usage(start, end))
    each = {"total_token": Decimal(ours["total_tokens"]) / 1000,  # per service type: the sum is twice
            "total_prompt_token": Decimal(ours["prompt_tokens"]) / 1000,
            "total_completion_token": Decimal(ours["completion_tokens"]) / 1000,
            "total_request_count": ours["total_requests"] // 4, "total_error_count": 0}
    hourly.add_fault("json", path="maas", times=2, body=each)
    run = cli(*WEEK, "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    document = run.json()
    (extra,) = [row for row in document["rows"] if row["model"] == "(not listed by Cloud Eye)"]
    assert extra["total_tokens"] == ours["total_tokens"]
    assert extra["total_requests"] == 0 and extra["total_errors"] == 0
    assert all(row[name] >= 0 for row in document["rows"] for name in ("total_requests", "total_errors"))
    totals = document["totals"]
    assert totals["total_tokens"] == 2 * ours["total_tokens"]
    assert totals["total_requests"] == ours["total_requests"] and totals["total_errors"] == ours["total_errors"]
    assert "Cloud Eye's rows exceed ShowStatistics by more than 1 % of requests" in run.stderr


def test_a_show_statistics_total_of_next_to_nothing_gives_no_share_not_a_traceback(cli, hourly, late_may):
    hourly.add_fault("json", path="maas", times=2,
                     body={"total_token": Decimal("1E-20"), "total_prompt_token": 0, "total_completion_token": 0,
                           "total_request_count": 0, "total_error_count": 0})
    run = cli(*WEEK, "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    assert run.json()["reconciliation"]["tokens_ratio"] is None
    assert "Traceback" not in run.stderr


# -- --compare: the previous period shares no hour with the current one ------------------------------

def test_compare_off_whole_hours_gives_a_previous_period_of_the_same_widened_length_just_before(cli, hourly):
    from conftest import serve_at

    now = serve_at(hourly, datetime.fromisoformat("2026-05-25T07:58:00+00:00"))
    run = cli("--last", "1d", "--timezone", "UTC", "--group-by", "model", "--compare", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    document = run.json()
    current, previous = document["period"], document["previous"]["period"]
    assert (current["start"], current["end"]) == ("2026-05-24T07:00:00+00:00", "2026-05-25T08:00:00+00:00")
    assert (previous["start"], previous["end"]) == ("2026-05-23T06:00:00+00:00", "2026-05-24T07:00:00+00:00")
    exact(hourly, document["previous"])


# -- a name no UTF-8 can hold --------------------------------------------------------------------------

@pytest.mark.parametrize("output_format", ["csv", "prometheus", "table", "json"])
def test_a_name_with_a_lone_surrogate_is_written_as_its_escape(cli_process, hourly, output_format):
    """"na\\ud83dme" is valid JSON but no UTF-8 string: names are best effort, so the run still succeeds,
    in every format, the name written with the escape."""
    model_id = fc.CES_MODELS[2][0][0]
    hourly.add_fault("json", path="monitor", times=10,
                     body='{"instances": [{"maas_api_id": {"id": "%s", "name": "na\\ud83dme"}}], "total": 1}'
                          % model_id)
    run = cli_process(*RANGE, "--group-by", "model", "--format", output_format)
    assert run.code == 0, run.stderr
    if output_format == "prometheus":  # the collector's own parser reads the escape's text back
        from prometheus_client.parser import text_string_to_metric_families

        models = {sample.labels["model"] for family in text_string_to_metric_families(run.stdout)
                  for sample in family.samples if "model" in sample.labels}
        assert "na\\ud83dme" in models, models
    elif output_format == "json":
        assert "na\ud83dme" in {row["model"] for row in json.loads(run.stdout)["rows"]}
    else:
        assert "na\\ud83dme" in run.stdout, run.stdout


def test_a_day_of_hours_per_model_fits_in_80_columns(cli, hourly):
    """Hour labels (16 columns) beside model names cut to 16 columns (CJK ones too)."""
    import maas_rest_usage_stats as script

    run = cli(*RANGE, "--group-by", "hour", "model")
    assert run.code == 0, run.stderr
    table = [line for line in run.stdout.splitlines() if line[:1] in "|+"]
    assert len(table) > 48 and max(map(script.display_width, table)) <= 80


# -- names that would hide one id behind another ---------------------------------------------------------

def test_names_that_collide_or_read_as_the_tables_own_rows_carry_their_ids(cli, hourly):
    """Two ids named glm-5, two names cut to the same 16 columns, a model named Total and one named
    (not listed by Cloud Eye): each label ends in # and its id's last 6 characters; JSON keeps the names."""
    ids = [model_id for models in fc.CES_MODELS.values() for model_id, _ in models]
    names = ["glm-5", "glm-5", "qwen3-235b-a22b-instruct-A", "qwen3-235b-a22b-instruct-B", "Total"]
    body = {"instances": [{"maas_api_id": {"id": i, "name": n}} for i, n in zip(ids, names)], "total": len(names)}
    hourly.add_fault("json", path="monitor", times=10, body=body)
    run = cli(*RANGE, "--group-by", "model", "--chart", "--group-by", "day")
    assert run.code == 0, run.stderr
    table = run.stdout.split("Total Tokens\n")[0]
    for model_id, name in zip(ids, names):
        assert f"#{model_id[-6:]} " in table, (name, table)
    assert table.count("| Total ") == 1  # the table's own, and the model's is told apart
    chart = run.stdout.split("Total Tokens\n")[1]
    assert all(f"#{model_id[-6:]}" in chart for model_id in ids)
    document = cli(*RANGE, "--group-by", "model", "--format", "json").json()
    assert sorted(row["model"] for row in document["rows"]) == sorted(names)


# -- names: the pages after the first together, best effort ----------------------------------------------

def test_the_names_pages_after_the_first_go_out_together(cli, hourly, monkeypatch):
    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "MONITOR_PAGE", 4)  # 15 model-key pairs: 4 pages
    hourly.add_fault("delay", path="monitor", seconds=0.0, times=1)
    hourly.add_fault("delay", path="monitor", seconds=2.0, times=3)  # each later page answers 2 s after it came
    run = cli(*RANGE, "--group-by", "model", "api-key", "--format", "json")
    assert run.code == 0, run.stderr
    pages = sorted(hourly.requests_of("monitor"), key=lambda entry: entry.json["start"])
    assert [entry.json["start"] for entry in pages] == [0, 4, 8, 12]
    later = [entry.at for entry in pages[1:]]
    assert max(later) - min(later) < 2.0  # all three in before the first of them was answered: together
    names = {pair: names for pair, names in hourly.cloud_eye_instances().items()}
    assert {(row["model_id"], row["api_key_id"]): (row["model"], row["api_key"])
            for row in run.json()["rows"]} == names


def test_a_names_page_that_fails_leaves_ids_and_the_run_whole(cli, hourly, monkeypatch):
    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "MONITOR_PAGE", 4)
    hourly.add_fault("delay", path="monitor", seconds=0.0, times=1)  # the first page answers,
    hourly.add_fault("status", path="monitor", status=400, times=1)  # one of the others does not
    first = cli(*RANGE, "--group-by", "model", "api-key", "--format", "json")
    assert first.code == 0, first.stderr
    assert "model and key names are not available" in first.stderr
    assert all(row["model"] is None for row in first.json()["rows"])
    exact(hourly, first.json())


def test_a_name_is_kept_to_256_characters_and_an_id_no_series_can_have_is_dropped():
    import maas_rest_usage_stats as script

    names = script.names_of({"instances": [{"maas_api_id": {"id": "m", "name": "n" * 10_000}},
                                           {"maas_api_id": {"id": "x" * 257, "name": "long id"}}], "total": 2},
                            "names", {})
    assert names.models == {"m": "n" * 256} and names.count == 2


def test_a_count_that_is_not_whole_is_malformed_naming_the_window():
    import maas_rest_usage_stats as script

    with pytest.raises(script.MalformedResponse, match=r"\(a window\): metric 1 \(rpm\) has a datapoint that is "
                                                        "not a whole number of calls"):
        script.datapoints_of({"metrics": [{"metric_name": "rpm", "dimensions": MODEL,
                                           "datapoints": [{"timestamp": 0, "sum": Decimal("2.5")}]}]},
                             "Cloud Eye BatchListMetricData (a window)",
                             {"from": 0, "to": fc.HOUR_MS, "filter": "sum", "period": "3600",
                              "metrics": [{"namespace": fc.CES_NAMESPACE, "metric_name": "rpm", "dimensions": MODEL}]})


# -- from a review of the above ----------------------------------------------------------------------------

def test_names_pages_with_one_worker_go_one_after_another_and_end(cli, hourly, monkeypatch):
    """With --concurrency 1 no other worker can take the later pages: they go from the names task itself
    (a fan-out from the only worker waited for ever)."""
    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "MONITOR_PAGE", 4)
    run = cli(*RANGE, "--group-by", "model", "api-key", "--concurrency", "1", "--format", "json")
    assert run.code == 0, run.stderr
    assert len(hourly.requests_of("monitor")) == 4 and all(row["model"] for row in run.json()["rows"])


def test_compare_of_whole_hour_periods_keeps_the_unit_before(cli, hourly):
    from conftest import serve_at

    now = serve_at(hourly, datetime.fromisoformat("2026-06-02T10:30:00+00:00"))
    run = cli("--last-month", "--timezone", "UTC", "--group-by", "model", "--compare", "--format", "json", now=now)
    assert run.code == 0, run.stderr
    previous = run.json()["previous"]["period"]
    assert (previous["start"], previous["end"]) == ("2026-04-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00")


@pytest.mark.parametrize("missing", [{"total_tokens"}, {"prompt_tokens"}, {"req_count_5xx"}])
def test_compare_with_a_metric_cloud_eye_lacks_shows_no_change_for_it(cli, hourly, missing):
    hourly.ces.missing_metrics = missing
    args = ("--from", "2026-05-10", "--to", "2026-05-12", "--timezone", "UTC", "--group-by", "model", "--compare")
    document = cli(*args, "--format", "json")
    assert document.code == 0, document.stderr
    name = {"req_count_5xx": "total_errors"}.get(next(iter(missing)), next(iter(missing)))
    assert document.json()["change"][name] is None and document.json()["totals"][name] is None
    table = cli(*args)
    assert table.code == 0 and "Traceback" not in table.stderr, table.stderr


def test_max_requests_counts_the_listing_pages_too(cli, hourly):
    """One series a page: 6 metrics x 5 models are 24 pages after each metric's first, and 2 data calls."""
    hourly.ces.page_limit = 1
    refused = cli(*RANGE, "--group-by", "model", "--max-requests", "25")
    assert refused.code == 2 and "--max-requests 25" in refused.stderr, refused.stderr
    assert hourly.requests_of("ces_data") == []


def test_a_budget_is_checked_with_show_statistics_tokens_when_cloud_eye_lists_none(cli, hourly, late_may):
    """Within MaaS's 30 days the totals take ShowStatistics' tokens for the total_tokens Cloud Eye lacks, so
    --fail-over is checked (it is refused as unchecked only past the 30 days)."""
    from test_cloud_eye import statistics_of_types_1_and_2

    hourly.ces.missing_metrics = {"total_tokens"}
    run = cli(*WEEK, "--budget", "100B", "--fail-over", "100", "--format", "json", now=late_may)
    assert run.code == 0, run.stderr
    statistics = statistics_of_types_1_and_2(hourly, ms("2026-05-08T00:00"), ms("2026-05-15T00:00"))
    assert run.json()["totals"]["total_tokens"] == statistics["total_tokens"] == run.json()["budget"]["used"]


def test_the_series_cap_counts_the_series_the_grouping_reads(cli, hourly, monkeypatch):
    import maas_rest_usage_stats as script

    monkeypatch.setattr(script, "CES_MAX_LISTED", 30)  # 5 models x 6 metrics; the pairs' series are not read
    assert cli(*RANGE, "--group-by", "model").code == 0


@pytest.mark.parametrize("now, args, start, end", [
    # the month before is shorter: the preset cut it at its end; whole hours must not stretch it back
    ("2026-03-30T10:30:00+00:00", ("--this-month", "--timezone", "UTC"),
     "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"),
    # a zone off whole hours: April widened to whole hours, ending where May's widened period starts
    ("2026-06-02T10:30:00+00:00", ("--last-month", "--timezone", "Asia/Kolkata"),
     "2026-03-31T23:30:00+05:30", "2026-04-30T23:30:00+05:30"),
])
def test_compare_takes_the_unit_before_widened_to_whole_hours(cli, hourly, now, args, start, end):
    from conftest import serve_at

    run = cli(*args, "--group-by", "model", "--compare", "--format", "json",
              now=serve_at(hourly, datetime.fromisoformat(now)))
    assert run.code == 0, run.stderr
    previous = run.json()["previous"]["period"]
    assert (previous["start"], previous["end"]) == (start, end)
    current = run.json()["period"]
    assert previous["end"] == current["start"]
