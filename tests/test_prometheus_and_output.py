"""--format prometheus (text exposition format 0.0.4 for node_exporter's textfile collector) and
--output PATH (the result written atomically to a file instead of stdout)."""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fakecloud
import maas_rest_usage_stats
from conftest import oracle_metrics

SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
SEED_START_MS, SEED_END_MS = 1778169600000, 1779292800000
INSIDE_RETENTION = datetime(2026, 5, 25, tzinfo=timezone.utc)  # the seed range is then 4 to 17 days old
ODD_KEY = 'team "a"\\b\nline two'
SERVICES = {1: "My Service", 2: "Preset Service", 4: "Custom Endpoint"}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition text, by name and labels; each family must be a gauge."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def labels(service_type: int = 2, infer_type: str = "real_time", **extra: str) -> dict[str, str]:
    return {"region": "cn-southwest-2", "project_id": fakecloud.DEMO_PROJECT_ID,
            "service_type": str(service_type), "service": SERVICES[service_type], "infer_type": infer_type, **extra}


def expected_samples(metrics: dict, complete: int, batch: bool = False, start_ms: int = SEED_START_MS,
                     end_ms: int = SEED_END_MS, **row_labels: str) -> dict[tuple[str, frozenset], float]:
    """The samples the contract gives one row."""
    values = {("maas_usage_tokens", kind): metrics[f"{kind}_tokens"] for kind in ("total", "prompt", "completion")}
    values[("maas_usage_requests", None)] = metrics["total_requests"]
    values[("maas_usage_errors", None)] = metrics["total_errors"]
    if batch:
        values[("maas_usage_completed_tasks", None)] = metrics["total_completion_tasks"]
        values[("maas_usage_inference_count", None)] = metrics["total_infer_count"]
    values[("maas_usage_period_start_timestamp_seconds", None)] = start_ms / 1000
    values[("maas_usage_period_end_timestamp_seconds", None)] = end_ms / 1000
    values[("maas_usage_complete", None)] = complete
    return {(name, frozenset({**row_labels, **({"kind": kind} if kind else {})}.items())): value
            for (name, kind), value in values.items()}


def seed_metrics(service_type: int = 2, infer_type: str = "real_time", api_keys=None) -> dict:
    return oracle_metrics(fakecloud.expected_usage(fakecloud.SEED_EVENTS, SEED_START_MS, SEED_END_MS,
                                                   service_type, infer_type, api_keys))


@pytest.fixture
def at_seed_time(cloud):
    """Runs at INSIDE_RETENTION (the fake cloud's clock too, so signatures match)."""
    cloud.server_time_offset = (INSIDE_RETENTION - datetime.now(timezone.utc)).total_seconds()
    return INSIDE_RETENTION


# -- --format prometheus ------------------------------------------------------------------------

def test_prometheus_has_one_gauge_sample_per_row_and_metric_with_exact_values(cli, at_seed_time):
    run = cli(*SEED_RANGE, "--format", "prometheus", "--service-type", "all", now=at_seed_time)
    assert run.code == 0, run.stderr
    expected = {}
    for service_type in (1, 2, 4):
        expected.update(expected_samples(seed_metrics(service_type), 1, **labels(service_type)))
    assert samples(run.stdout) == expected
    assert seed_metrics(2)["total_tokens"] == 2482084980  # the contract's example, in actual tokens
    assert 'kind="total"} 2482084980\n' in run.stdout


def test_prometheus_writes_help_and_type_once_per_family(cli, at_seed_time):
    run = cli(*SEED_RANGE, "--format", "prometheus", "--service-type", "all", now=at_seed_time)
    lines = run.stdout.splitlines()
    families = ["maas_usage_tokens", "maas_usage_requests", "maas_usage_errors",
                "maas_usage_period_start_timestamp_seconds", "maas_usage_period_end_timestamp_seconds",
                "maas_usage_complete"]
    assert [line.split()[2] for line in lines if line.startswith("# TYPE")] == families
    assert [line for line in lines if line.startswith("# TYPE")] == [f"# TYPE {f} gauge" for f in families]
    assert len([line for line in lines if line.startswith("# HELP")]) == len(families)
    assert run.stdout.endswith("\n") and "\n\n" not in run.stdout


def test_prometheus_batch_adds_completed_tasks_and_inference_count(cli, at_seed_time):
    run = cli(*SEED_RANGE, "--format", "prometheus", "--infer-type", "batch", now=at_seed_time)
    assert run.code == 0, run.stderr
    metrics = seed_metrics(2, "batch")
    assert metrics["total_completion_tasks"] and metrics["total_infer_count"]
    assert samples(run.stdout) == expected_samples(metrics, 1, batch=True, **labels(2, "batch"))


def test_prometheus_complete_is_0_when_the_range_lies_before_the_retention(cli, cloud):
    run = cli(*SEED_RANGE, "--format", "prometheus")  # today, May 2026 is long past the 30 days
    assert run.code == 0, run.stderr
    assert samples(run.stdout)[("maas_usage_complete", frozenset(labels().items()))] == 0


def test_prometheus_key_labels_are_escaped(cli, cloud, at_seed_time):
    odd = fakecloud.Event(SEED_START_MS + 3_600_000, 2, "real_time", ODD_KEY, "192.0.2.10",
                          10, 1, Decimal("1.234"), Decimal("1.000"), Decimal("0.234"))
    cloud.events = [*fakecloud.SEED_EVENTS, odd]
    run = cli(*SEED_RANGE, "--format", "prometheus", "--api-keys", ODD_KEY, "key-alpha",
              "--group-by", "api-key", now=at_seed_time)
    assert run.code == 0, run.stderr
    assert 'api_key="team \\"a\\"\\\\b\\nline two"' in run.stdout
    assert all(line.startswith(("#", "maas_usage_")) for line in run.stdout.splitlines())
    expected = {}
    for key in (ODD_KEY, "key-alpha"):
        metrics = oracle_metrics(cloud.expected_usage(SEED_START_MS, SEED_END_MS, 2, "real_time", [key]))
        expected.update(expected_samples(metrics, 1, **labels(api_key=key)))
    assert samples(run.stdout) == expected
    assert expected[("maas_usage_tokens", frozenset(labels(api_key=ODD_KEY, kind="total").items()))] == 1234


def test_prometheus_period_keeps_milliseconds(cli, at_seed_time):
    run = cli("--from", "2026-05-08T00:00:00.250+08:00", "--to", "2026-05-21", "--timezone", "Asia/Shanghai",
              "--format", "prometheus", now=at_seed_time)
    assert run.code == 0, run.stderr
    assert "maas_usage_period_start_timestamp_seconds{" in run.stdout
    assert "} 1778169600.25\n" in run.stdout
    assert "} 1779292800\n" in run.stdout
    assert samples(run.stdout)[("maas_usage_period_start_timestamp_seconds", frozenset(labels().items()))] \
        == 1778169600.25


@pytest.mark.parametrize("bucket", ["day", "week", "month"])
def test_prometheus_with_a_time_bucket_is_a_usage_error(cli, cloud, bucket):
    run = cli(*SEED_RANGE, "--format", "prometheus", "--group-by", bucket)
    assert run.code == 2
    assert "prometheus" in run.stderr and "timestamps" in run.stderr
    assert cloud.maas_requests() == []


def test_prometheus_with_record_is_a_usage_error(cli, cloud, tmp_path):
    run = cli("--format", "prometheus", "--record", "--store", str(tmp_path / "usage.db"))
    assert run.code == 2
    assert "--record" in run.stderr
    assert cloud.maas_requests() == [] and not (tmp_path / "usage.db").exists()


@pytest.mark.parametrize("option", [["--raw"], ["--table-format", "grid"], ["--no-header"]])
def test_table_csv_and_raw_options_do_not_apply_to_prometheus(cli, cloud, option):
    run = cli(*SEED_RANGE, "--format", "prometheus", *option)
    assert run.code == 2
    assert f"{option[0]} applies to --format" in run.stderr and "not prometheus" in run.stderr


def test_prometheus_rows_split_by_service_type_only_carry_no_key_label(cli, at_seed_time):
    run = cli(*SEED_RANGE, "--format", "prometheus", "--group-by", "service-type", "--api-keys", "key-alpha",
              now=at_seed_time)
    assert run.code == 0, run.stderr
    assert "api_key=" not in run.stdout
    assert {dict(key)["service_type"] for _, key in samples(run.stdout)} == {"1", "2", "4"}


# -- --output PATH --------------------------------------------------------------------------------

@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A folder of its own for the output file (out also holds the run's HOME)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name)


@pytest.mark.parametrize("options", [[], ["--format", "json"], ["--format", "csv"], ["--format", "prometheus"],
                                     ["--group-by", "day", "--format", "csv"], ["--dry-run"],
                                     ["--dry-run", "--format", "json"]])
def test_output_file_holds_what_stdout_would_get(cli, out, options):
    target = out / "maas.prom"
    now = datetime.now(timezone.utc)  # one clock for both runs: coverage names now - 30 days
    printed = cli(*SEED_RANGE, *options, now=now)
    assert printed.code == 0, printed.stderr
    written = cli(*SEED_RANGE, *options, "--output", str(target), now=now)
    assert written.code == 0, written.stderr
    assert written.stdout == ""
    assert target.read_bytes() == printed.stdout.encode("utf-8")
    assert leftovers(target.parent, target.name) == []


def test_output_replaces_the_old_file(cli, out):
    target = out / "maas.prom"
    target.write_text("old\n" * 1000)
    run = cli(*SEED_RANGE, "--format", "prometheus", "--output", str(target))
    assert run.code == 0, run.stderr
    assert target.read_text().startswith("# HELP maas_usage_tokens ")


def test_failed_run_leaves_the_old_file_and_no_temporary_file(cli, cloud, out):
    target = out / "maas.prom"
    target.write_text("old\n")
    cloud.fail_all = True
    run = cli(*SEED_RANGE, "--format", "prometheus", "--retries", "0", "--output", str(target))
    assert run.code == 1
    assert target.read_text() == "old\n"
    assert leftovers(out, target.name) == []


def test_usage_error_leaves_the_old_file(cli, out):
    target = out / "maas.prom"
    target.write_text("old\n")
    run = cli(*SEED_RANGE, "--format", "prometheus", "--group-by", "day", "--output", str(target))
    assert run.code == 2
    assert target.read_text() == "old\n" and leftovers(out, target.name) == []


@pytest.mark.parametrize("failure, code", [(OSError(errno.ENOSPC, "No space left on device"), 1),
                                           (KeyboardInterrupt(), 130)])
def test_write_failure_or_ctrl_c_leaves_the_old_file_and_no_temporary_file(cloud_env, out, monkeypatch,
                                                                           failure, code):
    target = out / "maas.prom"
    target.write_text("old\n")

    def fail(fd: int) -> None:
        raise failure

    monkeypatch.setattr(maas_rest_usage_stats.os, "fsync", fail)
    stdout, stderr = io.StringIO(), io.StringIO()
    result = maas_rest_usage_stats.main([*SEED_RANGE, "--output", str(target)], env=cloud_env,
                                        stdout=stdout, stderr=stderr)
    assert result == code
    assert stdout.getvalue() == ""
    if code == 1:
        assert f"error: cannot write {target}: No space left on device" in stderr.getvalue()
    else:
        assert "error: interrupted" in stderr.getvalue()
    assert target.read_text() == "old\n"
    assert leftovers(out, target.name) == []


def test_output_keeps_the_mode_of_the_file_it_replaces(cli, out):
    target = out / "maas.prom"
    target.write_text("old\n")
    target.chmod(0o640)
    run = cli(*SEED_RANGE, "--output", str(target))
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_output_file_gets_the_mode_of_a_shell_redirect(cli, out, umask, mode):
    target = out / "maas.prom"
    old = os.umask(umask)
    try:
        run = cli(*SEED_RANGE, "--output", str(target))
    finally:
        os.umask(old)
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_output_through_a_symlink_is_a_usage_error_that_touches_nothing(cli, cloud, out):
    real = out / "real.prom"
    real.write_text("old\n")
    link = out / "maas.prom"
    link.symlink_to(real)
    run = cli(*SEED_RANGE, "--format", "prometheus", "--output", str(link))
    assert run.code == 2 and "is a symbolic link, not a regular file" in run.stderr
    assert link.is_symlink() and real.read_text() == "old\n" and cloud.log == []


def test_output_into_a_missing_folder_is_refused_naming_the_folder(cli, out):
    target = out / "missing" / "maas.prom"
    run = cli(*SEED_RANGE, "--output", str(target))
    assert run.code == 2  # before any request (test_output_safety)
    assert f"error: --output {target}: the folder {out / 'missing'} does not exist" in run.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into any folder")
def test_output_into_an_unwritable_folder_is_exit_1(cli, out):
    folder = out / "locked"
    folder.mkdir()
    (folder / "maas.prom").write_text("old\n")
    folder.chmod(0o555)
    try:
        run = cli(*SEED_RANGE, "--output", str(folder / "maas.prom"))
    finally:
        folder.chmod(0o755)
    assert run.code == 1
    assert "error: cannot write " in run.stderr and "Permission denied" in run.stderr
    assert (folder / "maas.prom").read_text() == "old\n"


def test_output_onto_a_folder_is_a_usage_error_before_any_request(cli, cloud, out):
    folder = out / "maas.prom"
    folder.mkdir()
    run = cli(*SEED_RANGE, "--output", str(folder))
    assert run.code == 2
    assert f"--output {folder} is a directory, not a regular file" in run.stderr
    assert leftovers(out, folder.name) == [] and cloud.log == []


def test_output_with_no_header_is_a_usage_error(cli, cloud, out):
    run = cli(*SEED_RANGE, "--format", "csv", "--no-header", "--output", str(out / "usage.csv"))
    assert run.code == 2
    assert "--no-header" in run.stderr and ">>" in run.stderr
    assert cloud.maas_requests() == [] and list(out.iterdir()) == []


def test_output_expands_the_home_folder(cli, home):
    run = cli(*SEED_RANGE, "--format", "json", "--output", "~/maas.json")
    assert run.code == 0, run.stderr
    assert (home / "maas.json").read_text().startswith("{")


def test_a_new_format_is_one_record_of_formats(tmp_path, cloud_env, cloud, monkeypatch):
    """The shape issue's traced change: ``--format markdown`` is one OutputFormat row in FORMATS.
    The script with only that line added takes the flag, checks its options and renders."""
    import importlib.util
    import io

    from conftest import SCRIPT, hourly_index

    text = SCRIPT.read_text(encoding="utf-8")
    anchor = '    OutputFormat("prometheus", lambda report, out: render_prometheus(report), ()),\n'
    assert text.count(anchor) == 1
    row = ('    OutputFormat("markdown", lambda report, out: render_table(report, "github", out.raw, out.chart),'
           ' ("--raw", "--chart")),\n')
    copy = tmp_path / "with_markdown.py"
    copy.write_text(text.replace(anchor, anchor + row), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("with_markdown", copy)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "with_markdown", module)  # dataclasses look their module up
    spec.loader.exec_module(module)

    cloud.events = hourly_index(1779926400000, 1780531200000)  # 2026-05-28 .. 2026-06-04 UTC
    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        code = module.main(["--from", "2026-05-28", "--to", "2026-06-04", "--timezone", "UTC", *args],
                           env=cloud_env, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = run("--format", "markdown", "--group-by", "day", "--chart", "-q")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.startswith("| Day ") for line in lines) and "+===" not in out  # markdown, not grid
    assert sum(bool(re.fullmatch(r"\|[-:|]+\|", line)) for line in lines) == 2  # the two tables' rules
    assert "Total Tokens" in out
    code, out, err = run("--format", "markdown", "--no-header")
    assert code == 2 and "--no-header" in err and out == ""
