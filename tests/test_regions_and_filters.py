"""Regions and their endpoints, the bare --api-keys, --group-by service-type's default, the Filters line."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import ROOT
from test_cli import SEED_RANGE

NOW = datetime(2026, 11, 24, 5, 0, tzinfo=timezone.utc)
SEED_NOW = datetime(2026, 5, 21, 12, 0, tzinfo=timezone.utc)  # the seed range is within the retention
PROJECT = fakecloud.DEMO_PROJECT_ID
SDK_MAAS = "HUAWEICLOUD_SDK_REGION_MODELARTS_CN_SOUTHWEST_2"
SDK_IAM = "HUAWEICLOUD_SDK_REGION_IAM_CN_SOUTHWEST_2"
NO_ENDPOINTS = {"HW_MAAS_ENDPOINT": None, "HW_IAM_ENDPOINT": None}


def planned_base(run) -> str:
    """The MaaS base URL of a dry run's first planned request."""
    assert run.code == 0, run.stderr
    url = run.json()["requests"][0]["url"]
    return url[:url.index("/v1/")]


# -- regions and endpoints ----------------------------------------------------------------------

@pytest.mark.parametrize("region, maas, iam", [
    ("cn-southwest-2", "modelarts.cn-southwest-2.myhuaweicloud.com", "iam.cn-southwest-2.myhuaweicloud.com"),
    ("ap-southeast-1", "modelarts.ap-southeast-1.myhuaweicloud.cn", "iam.ap-southeast-1.myhuaweicloud.com"),
    ("cn-north-4", "modelarts.cn-north-4.myhuaweicloud.com", "iam.cn-north-4.myhuaweicloud.com"),
])
def test_default_endpoints_follow_the_sdk_region_tables(region, maas, iam):
    args = m.build_parser().parse_args(["--region", region, "--timezone", "UTC"])
    settings = m.settings_from(args, {}, NOW, m.Console(io.StringIO()))
    assert (settings.maas.scheme, settings.maas.netloc) == ("https", maas)
    assert (settings.iam.scheme, settings.iam.netloc) == ("https", iam)


@pytest.mark.parametrize("flags, env, base", [
    ([], {SDK_MAAS: "https://sdk.example"}, "https://sdk.example"),
    ([], {SDK_MAAS: " https://first.example , https://second.example"}, "https://first.example"),
    ([], {SDK_MAAS: "https://sdk.example", "HW_MAAS_ENDPOINT": "https://hw.example"}, "https://hw.example"),
    (["--endpoint", "https://flag.example"], {SDK_MAAS: "https://sdk.example"}, "https://flag.example"),
    ([], {"HUAWEICLOUD_SDK_REGION_MODELARTS_AP_SOUTHEAST_1": "https://sdk.example"},
     "https://modelarts.cn-southwest-2.myhuaweicloud.com"),  # another region's override does not apply
    (["--region", "ap-southeast-1"], {"HUAWEICLOUD_SDK_REGION_MODELARTS_AP_SOUTHEAST_1": "https://hk.example"},
     "https://hk.example"),
], ids=["sdk", "sdk-list-first", "hw-beats-sdk", "flag-beats-sdk", "other-region-ignored", "region-upper-snake"])
def test_sdk_endpoint_override_is_honoured_below_the_flag_and_hw_variable(cli, flags, env, base):
    run = cli(*SEED_RANGE, *flags, "--dry-run", "--format", "json", env={**NO_ENDPOINTS, **env})
    assert planned_base(run) == base


def test_sdk_overrides_reach_iam_and_maas_in_a_live_run(cli, cloud):
    cloud.projects.append({"id": "a" * 32, "name": "ap-southeast-1"})
    run = cli(*SEED_RANGE, "--region", "ap-southeast-1", "--format", "json", env={
        **NO_ENDPOINTS, "HUAWEICLOUD_SDK_REGION_IAM_AP_SOUTHEAST_1": cloud.url,
        "HUAWEICLOUD_SDK_REGION_MODELARTS_AP_SOUTHEAST_1": f"{cloud.url},https://unused.example"})
    assert run.code == 0, run.stderr
    assert run.json()["project_id"] == "a" * 32
    assert [e.kind for e in cloud.log] == ["iam", "maas"]


@pytest.mark.parametrize("env, source", [
    ({SDK_MAAS: "http://sdk.example"}, SDK_MAAS),
    ({SDK_MAAS: ",https://second.example"}, SDK_MAAS),
    ({SDK_IAM: "https://user@sdk.example"}, SDK_IAM),
    ({SDK_IAM: "https://sdk.example", "HW_IAM_ENDPOINT": "ftp://hw.example"}, "HW_IAM_ENDPOINT"),
], ids=["sdk-maas-http", "sdk-maas-empty-first", "sdk-iam-user", "hw-iam-in-use"])
def test_endpoint_errors_name_the_source_in_use(cli, cloud, env, source):
    run = cli(*SEED_RANGE, env={**NO_ENDPOINTS, **env})
    assert run.code == 2, run.stderr
    assert run.stderr.startswith(f"error: {source} ")
    assert cloud.log == []


@pytest.mark.parametrize("region", ["cn-southwest-2", "ap-southeast-1"])
def test_documented_regions_get_no_region_note(cli, region):
    run = cli(*SEED_RANGE, "--region", region, "--project-id", PROJECT, "--dry-run", now=SEED_NOW)
    assert run.code == 0 and run.stderr == "", run.stderr


def test_other_regions_are_allowed_with_a_note_unless_quiet(cli, cloud):
    run = cli("--last", "7d", "--region", "cn-north-4", "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["region"] == "cn-north-4" and run.json()["project_id"] == fakecloud.NORTH4_PROJECT_ID
    assert run.stderr == ("note: MaaS ShowStatistics is documented only in cn-southwest-2 (China site) and "
                          "ap-southeast-1 (international site, CN-Hong Kong); region cn-north-4 may not offer it\n")
    assert cli("--last", "7d", "--region", "cn-north-4", "-q").stderr == ""


# -- a bare --api-keys --------------------------------------------------------------------------

def test_bare_api_keys_means_all_keys_and_sends_no_filter(cli, cloud):
    bare = cli(*SEED_RANGE, "--api-keys", "--format", "json")
    assert bare.code == 0, bare.stderr
    assert bare.json()["api_keys"] is None
    unfiltered = cli(*SEED_RANGE, "--format", "json")
    assert bare.json()["totals"] == unfiltered.json()["totals"]
    assert [("api_keys" in body) for body in cloud.maas_requests()] == [False, False]
    plan = cli(*SEED_RANGE, "--dry-run", "--format", "json", "--api-keys", "--ips", "192.0.2.10")
    assert [request["body"].get("api_keys") for request in plan.json()["requests"]] == [None]


def test_bare_api_keys_with_group_by_api_key_is_a_usage_error(cli, cloud):
    run = cli(*SEED_RANGE, "--group-by", "api-key", "--api-keys")
    assert run.code == 2
    assert run.stderr.startswith("error: a bare --api-keys means all keys: --group-by api-key needs the keys")
    assert cloud.log == []


# -- --group-by service-type --------------------------------------------------------------------

@pytest.mark.parametrize("values, split_by_type, expected", [
    (None, False, (2,)), (None, True, (1, 2, 4)), (["2"], True, (2,)), (["custom", "my"], True, (1, 4)),
])
def test_service_types_default_to_all_only_when_split_by_type(values, split_by_type, expected):
    assert m.parse_service_types(values, split_by_type) == expected


def test_group_by_service_type_without_service_type_means_all_types(cli, cloud):
    run = cli(*SEED_RANGE, "--group-by", "service-type", "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["service_types"] == [1, 2, 4]
    assert [row["service_type"] for row in run.json()["rows"]] == [1, 2, 4]
    assert sorted(body["service_type"] for body in cloud.maas_requests()) == [1, 2, 4]
    table = cli(*SEED_RANGE, "--group-by", "service-type").stdout
    assert table.startswith("MaaS All Services Usage Statistics")
    assert all(f"| {name} " in table for name in ("My", "Preset", "Custom"))


@pytest.mark.parametrize("given, expected", [(["2", "4"], [2, 4]), (["preset"], [2]), (["all"], [1, 2, 4])])
def test_group_by_service_type_keeps_the_given_service_types(cli, given, expected):
    run = cli(*SEED_RANGE, "--group-by", "service-type", "--service-type", *given, "--format", "json")
    assert run.code == 0, run.stderr
    assert [row["service_type"] for row in run.json()["rows"]] == expected


# -- the Filters line ---------------------------------------------------------------------------

FILTER_LINES = {
    "none": ([], None),
    "real-time": (["--infer-type", "real_time"], None),
    "bare-api-keys": (["--api-keys"], None),
    "batch": (["--infer-type", "batch"], "Filters: infer type batch"),
    "keys": (["--api-keys", "key-alpha", ""], 'Filters: API keys "key-alpha", ""'),
    "ips": (["--ips", "192.0.2.10", "2001:DB8::1"], "Filters: IPs 192.0.2.10, 2001:db8::1"),
    "all-three": (["--ips", "192.0.2.10", "--api-keys", "key-alpha", "", "--infer-type", "batch"],
                  'Filters: infer type batch; API keys "key-alpha", ""; IPs 192.0.2.10'),
    "grouped-by-key": (["--api-keys", "key-alpha", "key-beta", "--group-by", "api-key"],
                       'Filters: API keys "key-alpha", "key-beta"'),
    "grouped-by-type": (["--ips", "198.51.100.7", "--group-by", "service-type"], "Filters: IPs 198.51.100.7"),
}


@pytest.mark.parametrize("name", sorted(FILTER_LINES))
def test_filters_line_follows_the_title_only_when_a_filter_is_in_effect(cli, name):
    args, expected = FILTER_LINES[name]
    run = cli(*SEED_RANGE, *args)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("MaaS ")
    if expected is None:
        assert lines[1].startswith("+") and "Filters:" not in run.stdout
    else:
        assert lines[1] == expected and lines[2].startswith("+")
        assert sum(line.startswith("Filters:") for line in lines) == 1


def test_filters_line_is_not_shortened_and_quotes_keys_printably(cli):
    long_key = "a-very-long-api-key-label-for-the-nightly-batch-jobs-of-the-data-platform-team-in-region-hk"
    run = cli(*SEED_RANGE, "--api-keys", long_key, "ops\tteam\x1b[31m", 'say "hi"')
    assert run.code == 0, run.stderr
    line = run.stdout.splitlines()[1]
    assert line == f'Filters: API keys "{long_key}", "ops\\tteam\\u001b[31m", "say \\"hi\\""'
    assert len(line) > 80 and "\x1b" not in run.stdout and "\t" not in run.stdout


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_filters_line_is_only_in_the_table_format(cli, output_format):
    run = cli(*SEED_RANGE, "--api-keys", "key-alpha", "--infer-type", "batch", "--format", output_format)
    assert run.code == 0, run.stderr
    assert "Filters" not in run.stdout


def test_readme_shows_the_filters_line_as_the_fake_cloud_prints_it(cli):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--infer-type batch --api-keys key-alpha \"\" --ips 192.0.2.10\n" in readme
    run = cli(*SEED_RANGE, "--infer-type", "batch", "--api-keys", "key-alpha", "", "--ips", "192.0.2.10")
    assert run.code == 0, run.stderr
    title_and_filters = "".join(run.stdout.splitlines(keepends=True)[:2])
    assert "\n" + title_and_filters + "…   (then the table, with Completed Tasks 12 and Inference Count 1,188" in readme
    assert "| Completed Tasks   | 12 " in run.stdout and "| Inference Count   | 1,188 " in run.stdout
