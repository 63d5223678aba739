"""Where a failure happened: an endpoint knows its host, its port and where its URL came from, and an
HTTP 404 from ShowStatistics hints that the project id may not belong to the region."""

from __future__ import annotations

import pytest

import maas_rest_usage_stats as m
from test_faults import SEED_RANGE

DEFAULT_MAAS = "modelarts.cn-southwest-2.myhuaweicloud.com"


def error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("error:"))


@pytest.mark.parametrize("url, address", [
    ("https://modelarts.cn-southwest-2.myhuaweicloud.com", f"{DEFAULT_MAAS}:443"),
    ("https://example.com:8443/base/", "example.com:8443"),
    ("http://localhost", "localhost:80"),
    ("http://[::1]:9000/x", "[::1]:9000"),
])
def test_an_endpoint_names_its_host_and_port(url, address):
    endpoint = m.parse_endpoint(url, "--endpoint")
    assert endpoint.address == address and endpoint.described == f"{address}, from --endpoint"


# -- HTTP 404 from ShowStatistics: the project id may not be the region's ------------------------------

def test_a_404_from_show_statistics_hints_that_the_project_id_may_not_belong_to_the_region(cli, cloud):
    run = cli(*SEED_RANGE, "--project-id", "0" * 32)
    assert run.code == 1
    assert "HTTP 404" in error_line(run.stderr) and "ModelArts.4104" in error_line(run.stderr)
    hint = next(line for line in run.stderr.splitlines() if line.startswith("hint:"))
    assert "project id may not belong to the region" in hint and "--project-id" in hint
    assert len(cloud.maas_requests()) == 1
