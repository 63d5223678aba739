"""The Cloud Eye endpoint and the ListMetrics call that first contact (--check) tests."""

from __future__ import annotations

import io

import pytest

import maas_rest_usage_stats as m


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
    from check_faults import maas_metrics

    metrics = maas_metrics(models=("a", "b", "c"), keys=("k1", "k2"))
    found = m.metric_list_of({"metrics": metrics, "meta_data": {"count": len(metrics), "marker": "",
                                                               "total": 500}}, "ListMetrics", {})
    assert (found.metrics, found.models, found.total) == (len(metrics), frozenset("abc"), 500)
