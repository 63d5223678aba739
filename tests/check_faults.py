"""A minimal Cloud Eye ListMetrics route for the fake cloud, for the --check tests.

``install_cloud_eye(cloud)`` teaches a started ``FakeCloud`` ``GET /V1.0/{project_id}/metrics`` (Cloud Eye's
ListMetrics) on its own port, signature checked like every other route (``fakecloud.verify_request``,
the server's clock and skew limit), denied with HTTP 403 when ``cloud.denied`` holds ``ces:metrics:list``,
answering ``cloud.ces_metrics`` in huaweicloudsdkces' ListMetricsResponse shape (or, with
``cloud.ces_status`` set, that HTTP status once the signature has passed). Requests are logged with
kind ``"ces"``; faults queued for path ``"any"`` apply to them. It stands in until tests/fakecloud.py
serves Cloud Eye itself.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import fakecloud

CES_ACTION = "ces:metrics:list"
_METRICS_PATH_RE = re.compile(r"/V1\.0/([^/]+)/metrics")
# The SYS.MaaS metrics of Huawei's Cloud Eye exporter, with their units.
MAAS_METRICS = (("total_tokens", "count"), ("prompt_tokens", "count"), ("completion_tokens", "count"),
                ("rpm", "count/min"), ("req_count_4xx", "count"), ("req_count_5xx", "count"))


def maas_metrics(models: tuple[str, ...] = ("mdl-deepseek-v3", "mdl-qwen3-32b"),
                 keys: tuple[str, ...] = ("key-0001",)) -> list[dict[str, Any]]:
    """What Cloud Eye lists for these model services (maas_api_id) and API keys (maas_key_id): every
    metric per model, and per model and key."""
    dimension_sets = [[{"name": "maas_api_id", "value": model}] for model in models] + [
        [{"name": "maas_api_id", "value": model}, {"name": "maas_key_id", "value": key}]
        for model in models for key in keys]
    return [{"namespace": "SYS.MaaS", "metric_name": name, "dimensions": dimensions, "unit": unit}
            for dimensions in dimension_sets for name, unit in MAAS_METRICS]


class _CloudEyeHandler(fakecloud._Handler):
    def _handle_request(self, cloud: fakecloud.FakeCloud) -> None:
        target = urlsplit(self.path)
        match = _METRICS_PATH_RE.fullmatch(target.path)
        if match is None:
            super()._handle_request(cloud)
            return
        body = self._read_body()
        headers = fakecloud.Headers()
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), fakecloud._received_value(value))
        entry = fakecloud.LoggedRequest(
            method=self.command, path=target.path, query=dict(parse_qsl(target.query, keep_blank_values=True)),
            headers=headers, body=body, json=None, kind="ces", at=cloud.monotonic(), request_id=self.request_id,
            raw_target=self.path)
        self.entry = entry
        cloud._record(entry)
        fault = cloud._take_fault("ces")
        if fault is not None:
            entry.fault = fault.kind
            if self._apply_fault(fault, cloud):
                return
        if self.command != "GET":
            self._error(404, fakecloud._APIGW_NO_API, "The API does not exist", request_id=True)
            return
        result = fakecloud.verify_request(self.command, target.path, target.query, headers, body, cloud.credentials,
                                          now=cloud.server_now(), skew_limit=cloud.clock_skew_limit)
        entry.auth_error, entry.canonical_request = result.error, result.canonical_request
        if not result.ok:
            self._error(401, fakecloud._APIGW_AUTH, f"Incorrect IAM authentication information: {result.error}",
                        request_id=True)
            return
        if cloud.ces_status is not None:  # an answer after the signature passed, such as a 401 of Cloud Eye's own
            self._error(cloud.ces_status, "ces.0015", "Injected fault.")
            return
        if CES_ACTION in cloud.denied:
            self._error(403, "ces.0050", f"Policy doesn't allow {CES_ACTION} to be performed.")
            return
        if unquote(match.group(1)) not in {p["id"] for p in cloud.projects}:
            self._error(404, "ces.0014", "The project does not exist.")
            return
        namespace, limit = entry.query.get("namespace"), entry.query.get("limit", "1000")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            self._error(400, "ces.0014", "Invalid parameter: limit must be 1 to 1000.")
            return
        listed = [m for m in cloud.ces_metrics if namespace is None or m["namespace"] == namespace]
        page = listed[: int(limit)]
        marker = "" if len(page) == len(listed) else f"{page[-1]['namespace']}.{page[-1]['metric_name']}"
        self._send_json(200, {"metrics": page, "meta_data": {"count": len(page), "marker": marker,
                                                             "total": len(listed)}})


def install_cloud_eye(cloud: fakecloud.FakeCloud, metrics: list[dict[str, Any]] | None = None) -> None:
    """Serve ListMetrics on ``cloud`` (started) from now on, answering ``metrics`` (default: two
    models and one key)."""
    cloud.ces_metrics = maas_metrics() if metrics is None else metrics
    cloud.ces_status = None
    cloud._server.RequestHandlerClass = _CloudEyeHandler
