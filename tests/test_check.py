"""--check: first contact with an account, one checklist line per step.

Every failure path of every step is driven through the fake cloud, Cloud Eye's ListMetrics included:
missing or exposed credentials, an unresolvable host, an untrusted certificate, a host that never
finishes the handshake, a skewed server clock, a rejected signature, IAM without the project, a 403 at
each permission, and ListMetrics answering nothing, an error or a broken answer.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import ROOT, SECRET_PIECES, Run, _merged, base_env
from test_fakecloud import standalone

STEPS = ("credentials", "MaaS endpoint", "IAM endpoint", "Cloud Eye endpoint", "clock", "signature and project",
         "permission", "Cloud Eye metrics")
SIGNED = ("signature and project", "permission", "Cloud Eye metrics")


@dataclass
class Checked:
    run: Run
    steps: dict[str, dict[str, Any]]  # step -> its JSON object
    ok: bool


def assert_clean_check(run: Run) -> None:
    """The promises of every run, with one difference: a failed check still prints its checklist."""
    for piece in SECRET_PIECES:
        assert piece not in run.stdout and piece not in run.stderr, "a piece of a secret leaked"
    assert "Traceback" not in run.stderr, run.stderr
    assert run.code in (0, 1, 2, 3), run.code
    if run.code in (1, 3):
        assert run.stdout and run.stderr.startswith(("error:", "note:", "warning:")) or "\nerror:" in run.stderr


@pytest.fixture
def check(cloud, cloud_env):
    """Run ``--check`` in-process against the fake cloud (its Cloud Eye at HW_CES_ENDPOINT), in JSON
    unless ``args`` name a format; keyword ``env`` adds or (with None) removes variables."""
    def run(*args: str, env: dict[str, str | None] | None = None) -> Checked:
        argv = ["--check", *args] + ([] if "--format" in args else ["--format", "json"])
        stdout, stderr = io.StringIO(), io.StringIO()
        code = m.main(argv, env=_merged(cloud_env, env), stdout=stdout, stderr=stderr)
        result = Run(code, stdout.getvalue(), stderr.getvalue())
        assert_clean_check(result)
        if code == 2 or "--format" in args:
            return Checked(result, {}, code == 0)
        document = result.json()
        return Checked(result, {step["step"]: step for step in document["check"]}, document["ok"])
    return run


def signed_requests(cloud: fakecloud.FakeCloud) -> list[fakecloud.LoggedRequest]:
    return [entry for entry in cloud.log if "authorization" in entry.headers]


def write_credentials(path, mode: int, ak: str = fakecloud.DEMO_AK, sk: str = fakecloud.DEMO_SK):
    path.write_text(f"{ak}\n{sk}\n", encoding="utf-8")
    os.chmod(path, mode)
    return path


NO_KEYS = {"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None}


@dataclass
class Case:
    """One way into --check: how the fake and the command line are set up, and what it says."""

    args: tuple[str, ...] = ()
    env: dict[str, str | None] = field(default_factory=dict)
    setup: Callable[[fakecloud.FakeCloud, Any], tuple[str, ...]] | None = None  # may add args
    statuses: dict[str, str] = field(default_factory=dict)  # the steps that are not "ok"
    code: int = 0
    says: dict[str, tuple[str, ...]] = field(default_factory=dict)  # step -> words in its detail or hint


def _denied(action: str):
    def setup(cloud, tmp_path):
        cloud.denied.add(action)
        return ()
    return setup


def _offset(seconds: float):
    def setup(cloud, tmp_path):
        cloud.server_time_offset = seconds
        return ()
    return setup


def _credentials_file(mode: int):
    def setup(cloud, tmp_path):
        return ("--credentials-file", str(write_credentials(tmp_path / "keys.txt", mode)))
    return setup


def _projects(cloud, tmp_path):
    cloud.projects = [p for p in cloud.projects if not p["name"].startswith("cn-southwest-2")]
    return ()


def list_nothing(cloud: fakecloud.FakeCloud) -> None:
    """Cloud Eye lists no series: every model service the fake's calls went to is unlisted."""
    cloud.ces.unlisted = {model for model, _ in cloud.cloud_eye_instances()}


def _no_metrics(cloud, tmp_path):
    list_nothing(cloud)
    return ()


def _silent_host(cloud, tmp_path):
    """A host that takes the TCP connection and never says a word of TLS."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    cloud.silent_listener = listener  # kept open for the run; closed with the test's garbage
    return ("--ces-endpoint", f"https://127.0.0.1:{listener.getsockname()[1]}", "--timeout", "1")


def _closed_port(cloud, tmp_path):
    """A port nothing listens on: the TCP connection is refused before any TLS."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ("--ces-endpoint", f"https://127.0.0.1:{port}")


def _echo_secret(cloud, tmp_path):
    cloud.add_fault("echo_secret", path="iam", encoding="cut")
    return ()


def _ces_fault(kind: str, **params):
    def setup(cloud, tmp_path):
        cloud.add_fault(kind, path="ces_metrics", **params)
        return ()
    return setup



def about(minutes: str, side: str) -> re.Pattern[str]:
    """A skew of whole minutes as the check words it, give or take the second that the Date header's
    whole seconds and a loaded machine's exchange leave open: "19 min 59 s behind" is 20 min."""
    whole = int(minutes.split()[0])
    return re.compile(rf"({whole - 1} min 59 s|{whole} min|{whole} min 1 s) {side}")

SKIPPED_UNSIGNED = {step: "skip" for step in SIGNED}
CASES = {
    "everything works": Case(),
    "no credentials": Case(env=NO_KEYS, statuses={"credentials": "FAIL", **SKIPPED_UNSIGNED}, code=3,
                           says={"credentials": ("no Huawei Cloud credentials found", "HW_ACCESS_KEY"),
                                 "permission": ("no credentials",)}),
    "a private credentials file": Case(env=NO_KEYS, setup=_credentials_file(0o600),
                                       says={"credentials": ("credentials file", "keys.txt", "mode 0600")}),
    "a group-readable credentials file": Case(env=NO_KEYS, setup=_credentials_file(0o640),
                                              statuses={"credentials": "warn"},
                                              says={"credentials": ("readable by other users", "chmod 600")}),
    "an unresolvable MaaS host": Case(args=("--endpoint", "https://modelarts.cn-southwest-2.example.invalid"),
                                      statuses={"MaaS endpoint": "FAIL", "permission": "skip"}, code=1,
                                      says={"MaaS endpoint": ("from --endpoint", "DNS", "cannot be resolved"),
                                            "permission": ("MaaS endpoint cannot be reached",)}),
    "an untrusted certificate": Case(env={"REQUESTS_CA_BUNDLE": None},
                                     statuses={"MaaS endpoint": "FAIL", "IAM endpoint": "FAIL",
                                               "Cloud Eye endpoint": "FAIL", "clock": "skip", **SKIPPED_UNSIGNED},
                                     code=1, says={"MaaS endpoint": ("TLS", "not trusted", "REQUESTS_CA_BUNDLE")}),
    "a CA bundle that does not exist": Case(env={"REQUESTS_CA_BUNDLE": "/nonexistent/ca.pem"},
                                            statuses={"MaaS endpoint": "FAIL", "IAM endpoint": "FAIL",
                                                      "Cloud Eye endpoint": "FAIL", "clock": "skip", **SKIPPED_UNSIGNED},
                                            code=1, says={step: ("cannot load the TLS certificates to trust",
                                                                 "No such file", "REQUESTS_CA_BUNDLE")
                                                          for step in ("MaaS endpoint",)}),
    "a host that never finishes the handshake": Case(setup=_silent_host,
                                                     statuses={"Cloud Eye endpoint": "FAIL",
                                                               "Cloud Eye metrics": "skip"}, code=1,
                                                     says={"Cloud Eye endpoint": ("TLS", "no answer within 1 s")}),
    "a port nothing listens on": Case(setup=_closed_port,
                                      statuses={"Cloud Eye endpoint": "FAIL", "Cloud Eye metrics": "skip"}, code=1,
                                      says={"Cloud Eye endpoint": ("from --ces-endpoint", ": TCP: connection refused",
                                                                   "check the port")}),
    "a clock 5 minutes behind": Case(setup=_offset(5 * 60), statuses={"clock": "warn"},
                                     says={"clock": (about("5 min", "behind"), "NTP")}),
    "a clock 20 minutes behind": Case(setup=_offset(20 * 60), statuses={"clock": "FAIL", **SKIPPED_UNSIGNED},
                                      code=3, says={"clock": (about("20 min", "behind"), "every signature is rejected"),
                                                    "permission": ("more than 15 minutes off",)}),
    "a clock 20 minutes ahead": Case(setup=_offset(-20 * 60), statuses={"clock": "FAIL", **SKIPPED_UNSIGNED},
                                     code=3, says={"clock": (about("20 min", "ahead of"),)}),
    "a 401 at IAM": Case(env={"HW_SECRET_KEY": fakecloud.TEMP_SK},
                         statuses={"signature and project": "FAIL", "permission": "skip",
                                   "Cloud Eye metrics": "skip"}, code=3,
                         says={"signature and project": ("HTTP 401", "AK and SK belong together", "clock"),
                               "permission": ("nothing more is signed",)}),
    "IAM without the project": Case(setup=_projects,
                                    statuses={"signature and project": "FAIL", "permission": "skip",
                                              "Cloud Eye metrics": "skip"}, code=1,
                                    says={"signature and project": ("no project named cn-southwest-2",
                                                                    "--project-id"),
                                          "Cloud Eye metrics": ("no project id",)}),
    "a 403 at IAM": Case(setup=_denied(fakecloud.IAM_ACTION),
                         statuses={"signature and project": "FAIL", "permission": "skip",
                                   "Cloud Eye metrics": "skip"}, code=3,
                         says={"signature and project": ("HTTP 403", "iam:projects:get", "--project-id")}),
    "a 403 at ShowStatistics": Case(setup=_denied(fakecloud.MAAS_ACTION), statuses={"permission": "FAIL"}, code=3,
                                    says={"permission": ("HTTP 403", "modelarts:monitoring:get")}),
    "a 403 at ListMetrics": Case(setup=_denied(fakecloud.CES_METRICS_ACTION), statuses={"Cloud Eye metrics": "FAIL"},
                                 code=3, says={"Cloud Eye metrics": ("HTTP 403", "ces:metrics:list")}),
    "a 401 at ListMetrics after a good signature": Case(setup=_ces_fault("status", status=401),
                                                        statuses={"Cloud Eye metrics": "FAIL"}, code=3,
                                                        says={"Cloud Eye metrics": ("HTTP 401", "ces:metrics:list")}),
    "an empty ListMetrics": Case(setup=_no_metrics, statuses={"Cloud Eye metrics": "warn"},
                                 says={"Cloud Eye metrics": ("no SYS.MaaS metrics yet", "call a model")}),
    "a 503 at ListMetrics": Case(setup=_ces_fault("status", status=503), statuses={"Cloud Eye metrics": "FAIL"},
                                 code=1, says={"Cloud Eye metrics": ("HTTP 503",)}),
    "a 500 from Cloud Eye itself": Case(setup=_ces_fault("status", status=500), statuses={"Cloud Eye metrics": "FAIL"},
                                        code=1, says={"Cloud Eye metrics": ("HTTP 500",)}),
    "a broken ListMetrics answer": Case(setup=_ces_fault("json", body={"metrics": [], "meta_data": {}}),
                                        statuses={"Cloud Eye metrics": "FAIL"}, code=1,
                                        says={"Cloud Eye metrics": ("malformed", "meta_data")}),
    "the given project id": Case(args=("--project-id", fakecloud.DEMO_PROJECT_ID), statuses={"IAM endpoint": "skip"},
                                 says={"signature and project": ("the given project id", "IAM is not asked")}),
    "a 401 at ShowStatistics with the project id given": Case(
        args=("--project-id", fakecloud.DEMO_PROJECT_ID), env={"HW_SECRET_KEY": fakecloud.TEMP_SK},
        statuses={"IAM endpoint": "skip", "permission": "FAIL", "Cloud Eye metrics": "skip"}, code=3,
        says={"permission": ("HTTP 401", "AK and SK"), "Cloud Eye metrics": ("nothing more is signed",)}),
    "a server that echoes the secret key": Case(setup=_echo_secret,
                                                statuses={"signature and project": "FAIL", "permission": "skip",
                                                          "Cloud Eye metrics": "skip"}, code=1),
}


@pytest.mark.parametrize("name", CASES)
def test_each_step_reports_ok_warn_fail_or_skip_with_what_to_do(check, cloud, tmp_path, name):
    case = CASES[name]
    args = case.args + (case.setup(cloud, tmp_path) if case.setup else ())
    checked = check(*args, env=case.env)
    if getattr(cloud, "silent_listener", None) is not None:
        cloud.silent_listener.close()
    assert checked.run.code == case.code, checked.run.stderr
    assert list(checked.steps) == list(STEPS)
    assert {step: line["status"] for step, line in checked.steps.items()} == \
        {step: case.statuses.get(step, "ok") for step in STEPS}
    assert checked.ok == (case.code == 0)
    for step, words in case.says.items():
        said = checked.steps[step]["detail"] + " " + (checked.steps[step]["hint"] or "")
        for word in words:
            assert (word.search(said) if isinstance(word, re.Pattern) else word in said), (step, said)
    for line in checked.steps.values():  # a failure always says what to do
        assert (line["hint"] is not None) >= (line["status"] == "FAIL"), line
    if case.code:
        first = next(step for step in STEPS if checked.steps[step]["status"] == "FAIL")
        assert f"the first: {first}" in checked.run.stderr


def test_at_most_one_request_a_step_and_the_ok_details(check, cloud):
    checked = check()
    assert checked.run.code == 0 and checked.ok
    # The clock's unsigned GET, then one signed request each: IAM, ShowStatistics, ListMetrics.
    assert [(entry.method, entry.kind) for entry in cloud.log] == [("GET", "other"), ("GET", "iam"),
                                                                    ("POST", "maas"), ("GET", "ces_metrics")]
    assert "authorization" not in cloud.log[0].headers
    assert cloud.log[3].query == {"namespace": "SYS.MaaS", "limit": "1000"}
    body = cloud.log[2].json
    assert body["end_time"] - body["start_time"] == 3_600_000 and body["service_type"] == 2
    steps = checked.steps
    assert steps["credentials"]["detail"] == "environment variables HW_ACCESS_KEY/HW_SECRET_KEY"
    assert f"{cloud.url} (from HW_MAAS_ENDPOINT)" in steps["MaaS endpoint"]["detail"]
    assert "certificate verified" in steps["MaaS endpoint"]["detail"]
    assert "same host as the MaaS endpoint" in steps["Cloud Eye endpoint"]["detail"]
    assert fakecloud.DEMO_PROJECT_ID in steps["signature and project"]["detail"]
    assert "63 metrics, 4 model service(s)" in steps["Cloud Eye metrics"]["detail"]


def test_a_first_page_short_of_the_total_counts_its_model_services_as_a_floor(check, cloud):
    """Still one request: a page short of meta_data.total names the models on it, at least."""
    cloud.ces.page_limit = 3
    first = fakecloud.ces_list_metrics(cloud.index.cloud_eye, fakecloud.ListMetricsQuery(limit=3), cloud.ces, 0)
    on_it = {d["value"] for e in first["metrics"] for d in e["dimensions"] if d["name"] == fakecloud.CES_MODEL_DIM}
    assert 0 < len(on_it) < len({model for model, _ in cloud.cloud_eye_instances()})
    step = check().steps["Cloud Eye metrics"]
    assert step["status"] == "ok"
    assert f"3 of 63 metrics, at least {len(on_it)} model service(s)" in step["detail"]
    assert len(cloud.requests_of("ces_metrics")) == 1


@pytest.mark.parametrize("name", ["a 401 at IAM", "a 401 at ShowStatistics with the project id given",
                                  "a clock 20 minutes behind", "no credentials"])
def test_a_wrong_key_costs_at_most_one_failed_signature(check, cloud, tmp_path, name):
    case = CASES[name]
    check(*case.args + (case.setup(cloud, tmp_path) if case.setup else ()), env=case.env)
    signed = signed_requests(cloud)
    assert len(signed) <= 1
    assert all(entry.status == 401 for entry in signed)


def test_an_unresolvable_host_fails_fast(check):
    started = time.monotonic()
    checked = check("--endpoint", "https://modelarts.example.invalid", "--iam-endpoint",
                    "https://iam.example.invalid", "--ces-endpoint", "https://ces.example.invalid", "--timeout", "20")
    assert time.monotonic() - started < 5
    assert [checked.steps[step]["status"] for step in STEPS[1:5]] == ["FAIL"] * 3 + ["skip"]


def test_the_table_is_aligned_lines_with_hints_under_the_detail(check, cloud):
    cloud.denied.add(fakecloud.MAAS_ACTION)
    run = check("--format", "table").run
    assert run.code == 3
    lines = run.stdout.splitlines()
    width = max(map(len, STEPS))
    steps = [line for line in lines if not line.startswith(" ")]
    assert [line[:4].rstrip() for line in steps] == ["ok"] * 6 + ["FAIL", "ok"]
    assert [line[6:6 + width].rstrip() for line in steps] == list(STEPS)
    assert all(line[4:6] == "  " and line[6 + width:8 + width] == "  " for line in steps)
    hint = lines[lines.index(steps[6]) + 1]
    assert hint == " " * (width + 8) + "hint: " + hint.split("hint: ", 1)[1]
    assert "modelarts:monitoring:get" in hint


def test_json_is_the_contract_schema(check, cloud):
    list_nothing(cloud)
    run = check().run
    document = json.loads(run.stdout)
    assert set(document) == {"schema_version", "check", "ok"} and document["schema_version"] == 1
    assert document["ok"] is True
    for line in document["check"]:
        assert set(line) == {"step", "status", "detail", "hint"}
        assert line["status"] in ("ok", "warn", "FAIL", "skip")
        assert isinstance(line["detail"], str) and (line["hint"] is None or isinstance(line["hint"], str))


def test_the_sdk_profile_is_named_as_the_source(check, tmp_path):
    profile = tmp_path / "profile"
    profile.write_text(f"[basic]\nak = {fakecloud.DEMO_AK}\nsk = {fakecloud.DEMO_SK}\n"
                       f"project_id = {fakecloud.DEMO_PROJECT_ID}\n", encoding="utf-8")
    profile.chmod(0o600)
    checked = check(env={**NO_KEYS, "HUAWEICLOUD_SDK_CREDENTIALS_FILE": str(profile)})
    assert checked.run.code == 0
    detail = checked.steps["credentials"]["detail"]
    assert "the SDK profile, from HUAWEICLOUD_SDK_CREDENTIALS_FILE" in detail and "with a project_id" in detail
    assert checked.steps["IAM endpoint"]["status"] == "skip"
    assert "the credentials file's project id" in checked.steps["signature and project"]["detail"]


@pytest.mark.parametrize("args", [("--last", "7d"), ("--format", "csv"), ("--dry-run",), ("--group-by", "day"),
                                  ("--output", "out.txt"), ("--service-type", "all"), ("--yesterday",)])
def test_check_refuses_the_flags_of_a_query(check, args):
    run = check(*args).run
    assert run.code == 2 and run.stdout == ""
    assert "--check cannot be combined with" in run.stderr


def test_the_cloud_eye_endpoint_follows_the_rules_of_the_others(check):
    checked = check(env={"HW_CES_ENDPOINT": None, "HUAWEICLOUD_SDK_REGION_CES_CN_SOUTHWEST_2":
                         "https://ces.cn-southwest-2.example.invalid,https://other.example.invalid"})
    assert "https://ces.cn-southwest-2.example.invalid (from HUAWEICLOUD_SDK_REGION_CES_CN_SOUTHWEST_2)" in \
        checked.steps["Cloud Eye endpoint"]["detail"]
    run = check("--ces-endpoint", "http://ces.example.com").run
    assert run.code == 2 and "plain http" in run.stderr


def settings_of(*argv: str, env: dict[str, str] | None = None) -> m.Settings:
    return m.settings_from(m.build_parser().parse_args(list(argv)), env or {},
                           m.datetime(2026, 5, 21, tzinfo=m.timezone.utc), m.Console(io.StringIO()))


@pytest.mark.parametrize("argv, env, url, source", [
    (("--region", "ap-southeast-1"), {}, "https://ces.ap-southeast-1.myhuaweicloud.com",
     "the default endpoint for ap-southeast-1"),
    ((), {"HUAWEICLOUD_SDK_REGION_CES_CN_SOUTHWEST_2": "https://ces.example.com,https://b.example.com"},
     "https://ces.example.com", "from HUAWEICLOUD_SDK_REGION_CES_CN_SOUTHWEST_2"),
    ((), {"HW_CES_ENDPOINT": "https://hw.example.com",
          "HUAWEICLOUD_SDK_REGION_CES_CN_SOUTHWEST_2": "https://x.example.com"},
     "https://hw.example.com", "from HW_CES_ENDPOINT"),
    (("--ces-endpoint", "http://127.0.0.1:8443/"), {"HW_CES_ENDPOINT": "https://hw.example.com"},
     "http://127.0.0.1:8443", "from --ces-endpoint"),
])
def test_the_cloud_eye_endpoint_takes_the_flag_the_variables_then_the_regions_default(argv, env, url, source):
    settings = settings_of("--timezone", "UTC", *argv, env=env)
    assert (settings.ces.url(""), settings.ces.source) == (url, source)
    assert settings.endpoints["ces"] is settings.ces


@pytest.mark.parametrize("argv, env", [(("--ces-endpoint", "http://ces.example.com"), {}),
                                       ((), {"HW_CES_ENDPOINT": "ftp://ces.example.com"}),
                                       (("--ces-endpoint", " "), {})])
def test_a_cloud_eye_endpoint_breaking_the_url_rules_is_a_usage_error(argv, env):
    with pytest.raises(m.UsageError):
        settings_of("--timezone", "UTC", *argv, env=env)


@pytest.mark.parametrize("data, why", [
    ({}, "no 'metrics' list"),
    ({"metrics": [], "meta_data": {"count": 0}}, "no 'meta_data'"),
    ({"metrics": [{"namespace": "SYS.MaaS", "metric_name": "rpm"}], "meta_data": {"count": 1, "total": 1}},
     "metric 1 lacks"),
    ({"metrics": [{"namespace": "SYS.MaaS", "metric_name": "rpm", "dimensions": [{"name": "maas_api_id"}],
                   "unit": "count"}], "meta_data": {"count": 1, "total": 1, "marker": ""}}, "metric 1 has a dimension"),
    ({"metrics": [], "meta_data": {"count": True, "total": 0, "marker": ""}}, "no 'meta_data'"),
])
def test_list_metrics_answers_are_checked(data, why):
    with pytest.raises(m.MalformedResponse, match=why):
        m.metric_list_of(data, "Cloud Eye ListMetrics for SYS.MaaS", {})


def test_list_metrics_counts_distinct_model_services():
    """The fake's answer: each metric per model service alone and per model service and API key;
    every maas_api_id counts once. A page short of the total counts the models on it."""
    cloud = fakecloud.FakeCloud()  # its answers need no server
    pairs = cloud.cloud_eye_instances()
    models = {model for model, _ in pairs}
    assert len(pairs) > len(models) > 1  # a model with more than one key

    def listed(limit: int) -> m.MetricList:
        query = fakecloud.ListMetricsQuery(namespace=fakecloud.CES_NAMESPACE, limit=limit)
        return m.metric_list_of(fakecloud.ces_list_metrics(cloud.index.cloud_eye, query, cloud.ces, 0),
                                "ListMetrics", {})

    found = listed(1000)
    listed_metrics = len(fakecloud.CES_METRIC_NAMES) * (len(models) + len(pairs))
    assert (found.metrics, found.models, found.total) == (listed_metrics, frozenset(models), listed_metrics)
    first = listed(3)
    assert (first.metrics, first.total) == (3, listed_metrics) and first.models < found.models


def test_readme_shows_the_checklist_as_the_standalone_fake_cloud_prints_it(home):
    """The README's example, as a newcomer gets it: the fake cloud started on its own as the README
    says, the variables it prints exported (HW_CES_ENDPOINT among them), then --check."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## `--check`"):]
    section = section[:section.index("\n## ")]
    assert "`python3 tests/fakecloud.py --port 8443 --no-retention`" in section
    with standalone("--no-retention") as (_, exports):
        assert "HW_CES_ENDPOINT" in exports
        stdout, stderr = io.StringIO(), io.StringIO()
        code = m.main(["--check"], env={**base_env(home), **exports}, stdout=stdout, stderr=stderr)
    run = Run(code, stdout.getvalue(), stderr.getvalue())
    assert_clean_check(run)
    assert run.code == 0, run.stdout + run.stderr
    port = exports["HW_CES_ENDPOINT"].rsplit(":", 1)[1]
    shown = run.stdout.replace(f"localhost:{port}", "localhost:8443")
    assert "$ python3 maas_rest_usage_stats.py --check\n" + shown + "```\n" in section


def test_the_checks_probes_ask_for_uncompressed_answers_like_every_request(check, cloud):
    """The contract's Accept-Encoding: identity holds for --check's unsigned clock probe too."""
    checked = check()
    assert checked.run.code == 0
    assert cloud.log and {entry.headers.get("Accept-Encoding") for entry in cloud.log} == {"identity"}
