"""At the network's floor: connections opened while the first request is in flight, and pacing that
holds where the API counts requests (at arrival).

Wall times under a real round trip are the benchmark's business (tests/bench.py, rtt-lab); here
the rules are checked: connections opened early are used (not opened again), no request leaves
before the lockout rule allows it, a wrong key still costs one request, and the limiter keeps 200
arrivals in any 60 s for round trips up to 1 s.
"""

from __future__ import annotations

import threading

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import FakeClock, oracle_metrics

PROJECT = fakecloud.DEMO_PROJECT_ID
YEAR = ["--from", "2025-11-01", "--to", "2026-11-01", "--timezone", "UTC", "--format", "json"]  # 13 windows


def statistics_log(cloud):
    return [entry for entry in cloud.log if entry.path.endswith("show-statistics")]


def test_connections_opened_during_the_first_window_are_used_not_opened_again(cli, cloud):
    cloud.latency = 0.3  # answers wait; handshakes do not: the early connections are ready in time
    run = cli(*YEAR, "--project-id", PROJECT)
    assert run.code == 0, run.stderr
    assert len(statistics_log(cloud)) == 13
    # 13 windows need at most 13 connections: TLS 1.3 session tickets on an idle early connection
    # must not make the pool take it for a closed one and open another.
    assert cloud.connection_count <= 13


def test_connections_for_the_windows_open_while_iam_answers(cli, cloud):
    cloud.latency = 0.3
    run = cli(*YEAR)
    assert run.code == 0, run.stderr
    assert len(cloud.log) == 14 and cloud.connection_count <= 14


def test_no_window_is_sent_before_the_first_one_succeeded(cli, cloud):
    cloud.latency = 0.3
    run = cli(*YEAR, "--project-id", PROJECT)
    assert run.code == 0, run.stderr
    first, *rest = sorted(statistics_log(cloud), key=lambda entry: entry.at)
    assert all(entry.at >= first.at + 0.25 for entry in rest)  # after the first answer, not with it


def test_a_wrong_key_still_costs_exactly_one_request(cli, cloud):
    cloud.latency = 0.2
    run = cli(*YEAR, "--project-id", PROJECT, env={"HW_SECRET_KEY": "SKwrongwrongwrongwrongwrong0000000000"})
    assert run.code == 3
    assert len(statistics_log(cloud)) == 1


def test_without_the_pools_private_hooks_nothing_opens_early_and_the_run_still_works(cli, cloud, monkeypatch):
    monkeypatch.setattr(m, "pool_slots", lambda pool: None)  # as with a urllib3 that lacks them
    run = cli(*YEAR, "--project-id", PROJECT)
    assert run.code == 0, run.stderr
    expected = oracle_metrics(cloud.expected_usage(1761955200000, 1793491200000, 2))
    assert run.json()["totals"] == expected


def test_pool_slots_are_found_on_urllib3_pools_and_absent_elsewhere():
    from urllib3.connectionpool import HTTPSConnectionPool

    assert m.pool_slots(HTTPSConnectionPool("localhost", 443)) is not None
    assert m.pool_slots(object()) is None


# -- pacing where the API counts: arrivals -------------------------------------------------------------

def most_in_any_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    best, low = 0, 0
    for high, moment in enumerate(times):
        while times[low] <= moment - window:
            low += 1
        best = max(best, high - low + 1)
    return best


def arrivals(period: float, rtt: float, requests: int = 365, concurrency: int = 16) -> list[float]:
    """When the API sees each request of a run paced over ``period``: the first wave waits for its
    connections (2.5 round trips), later requests on warm connections 0.5 round trips."""
    clock = FakeClock()
    limiter = m.RateLimiter(m.RATE_LIMIT, period, m.Clock(clock))
    never = threading.Event()
    seen = []
    for index in range(requests):
        assert limiter.acquire(never)
        seen.append(clock.monotonic() + (2.5 if index < concurrency else 0.5) * rtt)
        clock.advance(0.5 * rtt / concurrency)  # the next start, once a worker is free
    return seen


@pytest.mark.parametrize("rtt", [0.1, 0.3, 1.0])
def test_the_clients_pacing_keeps_200_arrivals_in_any_60_seconds(rtt):
    assert most_in_any_window(arrivals(m.RATE_PERIOD + m.ARRIVAL_MARGIN, rtt)) <= 200


def test_pacing_by_starts_alone_would_let_more_than_200_arrive():
    assert most_in_any_window(arrivals(m.RATE_PERIOD, 1.0)) > 200  # why the margin exists


def test_a_run_of_216_requests_keeps_200_arrivals_in_any_60_seconds_on_its_clock(cli, cloud, fake_clock):
    """Nine days by the hour: 200 go out at once, the other 16 wait for the API's minute, on the run's
    clock (the fake one: the suite sleeps for none of it)."""
    run = cli("--from", "2026-05-01", "--to", "2026-05-10", "--timezone", "UTC", "--group-by", "hour",
              "--project-id", PROJECT, "--format", "json", clock=fake_clock)
    assert run.code == 0, run.stderr
    arrivals = [entry.at for entry in statistics_log(cloud)]
    assert len(arrivals) == 216
    assert most_in_any_window(arrivals) <= 200
    assert max(arrivals) - min(arrivals) >= m.RATE_PERIOD  # the last ones did wait for the minute
    assert fake_clock.sleeps and min(fake_clock.sleeps) > 0


def test_the_client_keeps_a_pool_for_every_host_a_run_can_use():
    """A Cloud Eye run talks to IAM, Cloud Eye, the MaaS monitor and MaaS: with fewer pools kept,
    opening the monitor's for the names call drops another host's, and the connections opened
    early in it (rtt-lab: the Cloud Eye pool's, so ListMetrics and the data calls opened anew)."""
    adapter = m.watched_adapter()
    hosts = [f"https://host{i}.example" for i in range(m.HOST_POOLS)]
    pools = [adapter.poolmanager.connection_from_url(url) for url in hosts]
    assert [adapter.poolmanager.connection_from_url(url) for url in hosts] == pools  # none dropped
    calls = [value for value in vars(m).values() if isinstance(value, m.CallKind)]
    assert len({call.endpoint for call in calls}) <= m.HOST_POOLS  # maas, iam, ces, monitor
