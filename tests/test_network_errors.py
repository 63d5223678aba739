"""Failures below HTTP, named and handled as what they are.

Name resolution is bounded by --timeout; TLS failures say which (an alert, an EOF or a reset in the
handshake, a server that does not speak TLS, a certificate that fails verification) and only the
transient ones are retried; interim answers (1xx) are skipped; a connection cut in the middle of
the headers is a network failure that is retried, not a malformed answer. Every network and TLS
error names the host and port and where the endpoint's URL came from. The misbehaving servers are in
``hostile_servers.py``; a slow resolver is a patched ``socket.getaddrinfo`` (in this process).
"""

from __future__ import annotations

import io
import signal
import socket
import threading
import time

import pytest

import hostile_servers as hostile
import maas_rest_usage_stats as m
from test_faults import PROJECT, SEED_RANGE, assert_seed_table, closed_port

ONE_TRY = [*SEED_RANGE, "--project-id", PROJECT, "--retries", "0"]
TWO_TRIES = [*SEED_RANGE, "--project-id", PROJECT, "--retries", "1", "-v"]
NO_ENDPOINTS = {"HW_MAAS_ENDPOINT": None, "HW_IAM_ENDPOINT": None}
SDK_MAAS = "HUAWEICLOUD_SDK_REGION_MODELARTS_CN_SOUTHWEST_2"
DEFAULT_MAAS = "modelarts.cn-southwest-2.myhuaweicloud.com"


def error_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("error:"))


@pytest.fixture
def resolver(monkeypatch):
    """``socket.getaddrinfo`` as the script's lookups see it: ``names`` maps a host to 127.0.0.1,
    ``slow`` hosts block until the test ends, other hosts outside loopback do not exist; ``calls``
    counts the lookups per host."""
    real = socket.getaddrinfo
    released = threading.Event()

    class Resolver:
        names: set[str] = set()
        slow: set[str] = set()
        calls: dict[str, int] = {}
        entered = threading.Event()

    def getaddrinfo(host, port, *args, **kwargs):
        Resolver.calls[host] = Resolver.calls.get(host, 0) + 1
        if host in Resolver.slow:
            Resolver.entered.set()
            released.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in Resolver.names:
            return real("127.0.0.1", port, *args, **kwargs)
        if host in ("localhost", "127.0.0.1", "::1"):
            return real(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield Resolver
    released.set()


# -- TLS: named as such, with the host; only the transient failures retried --------------------------

@pytest.mark.parametrize("behaviour, words, attempts", [
    (hostile.alert, 'the TLS handshake failed: the server sent the alert "handshake failure"', 1),
    (hostile.plain_http, "the server did not speak TLS", 1),
    (hostile.eof_in_handshake, "the server closed the connection during the TLS handshake", 2),
    (hostile.reset_in_handshake, "the connection was reset during the TLS handshake", 2),
], ids=["alert", "plain-http-on-the-tls-port", "eof-in-handshake", "reset-in-handshake"])
def test_tls_failures_are_named_with_the_host_and_only_transient_ones_are_retried(cli, fake_clock, behaviour, words,
                                                                                  attempts):
    with hostile.HostileServer(behaviour) as server:
        run = cli(*TWO_TRIES, "--endpoint", server.url, clock=fake_clock)
    assert run.code == 1 and run.stdout == ""
    line = error_line(run.stderr)
    assert f"failed: {words} (localhost:{server.port}, from --endpoint)" in line, line
    assert "certificate" not in line
    assert server.connections == attempts
    assert ("(after 2 attempts)" in line) == (attempts == 2)


def test_a_certificate_that_fails_verification_is_named_not_retried_and_hints_at_the_ca_bundle(cli, cloud):
    run = cli(*TWO_TRIES, env={"REQUESTS_CA_BUNDLE": None})
    assert run.code == 1
    line = error_line(run.stderr)
    assert (f"failed: TLS certificate verification failed: unable to get local issuer certificate "
            f"(localhost:{cloud.port}, from HW_MAAS_ENDPOINT)") in line, line
    assert line.count("(") == line.count(")")
    assert "hint:" in run.stderr and "REQUESTS_CA_BUNDLE" in run.stderr
    assert "retrying" not in run.stderr and cloud.log == []


def test_a_certificate_for_another_host_name_fails_verification(cli, cloud, resolver):
    resolver.names.add("maas.example")
    run = cli(*TWO_TRIES, "--endpoint", f"https://maas.example:{cloud.port}")
    assert run.code == 1
    line = error_line(run.stderr)
    assert "TLS certificate verification failed" in line and "maas.example" in line, line
    assert f"(maas.example:{cloud.port}, from --endpoint)" in line
    assert "retrying" not in run.stderr and cloud.log == []


# -- HTTP: interim answers skipped, a cut header block retried ---------------------------------------

@pytest.mark.parametrize("interim", [hostile.EARLY_HINTS, hostile.CONTINUE, hostile.EARLY_HINTS * 3 + hostile.CONTINUE],
                         ids=["103-early-hints", "100-continue", "several"])
def test_interim_answers_are_skipped_and_the_final_answer_is_read(cli, interim):
    with hostile.HostileServer(hostile.interim_then_answer(interim), tls=True) as server:
        run = cli(*TWO_TRIES, "--endpoint", server.url)
    assert_seed_table(run)
    assert server.connections == 1 and "HTTP 103" not in run.stderr and "HTTP 100" not in run.stderr


CUTS = pytest.mark.parametrize("cut", [hostile.CUT_IN_STATUS_LINE, hostile.CUT_AFTER_STATUS_LINE,
                                       hostile.CUT_IN_HEADERS],
                               ids=["in-the-status-line", "after-the-status-line", "in-the-headers"])


@CUTS
def test_a_connection_cut_in_the_headers_is_retried_and_the_next_attempt_succeeds(cli, fake_clock, cut):
    with hostile.HostileServer(hostile.cut_then_answer(cut), tls=True) as server:
        run = cli(*TWO_TRIES, "--endpoint", server.url, clock=fake_clock)
    assert_seed_table(run)
    assert server.connections == 2
    assert ("the connection closed in the middle of the answer's status line or headers "
            f"(localhost:{server.port}, from --endpoint)") in run.stderr
    assert "malformed" not in run.stderr


@CUTS
def test_a_connection_cut_in_the_headers_every_time_is_a_network_failure_not_a_malformed_answer(cli, fake_clock,
                                                                                                   cut):
    with hostile.HostileServer(hostile.cut_then_answer(cut, cuts=10), tls=True) as server:
        run = cli(*TWO_TRIES, "--endpoint", server.url, clock=fake_clock)
    assert run.code == 1 and "malformed" not in run.stderr
    assert "in the middle of the answer's status line or headers" in error_line(run.stderr)
    assert "(after 2 attempts)" in error_line(run.stderr) and server.connections == 2


# -- name resolution: within --timeout, once per host ------------------------------------------------

def test_a_name_that_resolves_slowly_ends_the_attempt_at_the_timeout(cli, resolver):
    resolver.slow.add("slow.example")
    started = time.monotonic()
    run = cli(*ONE_TRY, "--timeout", "1", "--endpoint", "https://slow.example:8443")
    elapsed = time.monotonic() - started
    assert run.code == 1
    assert ("failed: the host name was not resolved within 1 s (--timeout) (slow.example:8443, from --endpoint)"
            in error_line(run.stderr)), run.stderr
    assert elapsed < 15  # the lookup blocks for 60 s


def test_the_attempts_after_a_slow_lookup_wait_for_the_same_lookup(cli, resolver, fake_clock):
    resolver.slow.add("slow.example")
    started = time.monotonic()  # the lookup's --timeout is real time: it bounds a real lookup
    run = cli(*SEED_RANGE, "--project-id", PROJECT, "--retries", "2", "--timeout", "1",
              "--endpoint", "https://slow.example", clock=fake_clock)
    assert run.code == 1 and "(after 3 attempts)" in error_line(run.stderr)
    assert "(slow.example:443, from --endpoint)" in error_line(run.stderr)
    assert resolver.calls["slow.example"] == 1  # one helper thread for the run, not one per attempt
    assert time.monotonic() - started < 30


def test_each_host_is_looked_up_once_per_run(cli, cloud, resolver):
    run = cli("--from", "2026-01-01", "--to", "2026-04-11", "--timezone", "UTC", "--format", "json")
    assert run.code == 0, run.stderr
    assert len(cloud.maas_requests()) == 4 and len(cloud.requests_of("iam")) == 1
    # IAM and MaaS share the fake cloud's host and port; urllib3 then connects to the address it gave
    assert resolver.calls["localhost"] == 1 and set(resolver.calls) <= {"localhost", "127.0.0.1", "::1"}


def test_ctrl_c_during_a_slow_lookup_ends_the_run_at_once(cloud_env, resolver):
    resolver.slow.add("slow.example")
    main_thread = threading.get_ident()

    def interrupt() -> None:
        if resolver.entered.wait(30):
            signal.pthread_kill(main_thread, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = m.main([*ONE_TRY, "--timeout", "60", "--endpoint", "https://slow.example"],
                  env=cloud_env, stdout=stdout, stderr=stderr)
    assert code == 130 and stdout.getvalue() == "" and "error: interrupted" in stderr.getvalue()
    assert time.monotonic() - started < 20  # the lookup itself would block for 60 s


# -- every network error names the host, the port and where the URL came from -------------------------

@pytest.mark.parametrize("how, source", [
    (lambda url: (["--endpoint", url], {}), "from --endpoint"),
    (lambda url: ([], {"HW_MAAS_ENDPOINT": url}), "from HW_MAAS_ENDPOINT"),
    (lambda url: ([], {**NO_ENDPOINTS, SDK_MAAS: f"{url},https://unused.example"}), f"from {SDK_MAAS}"),
], ids=["flag", "hw-env", "sdk-env"])
def test_a_refused_connection_names_the_host_port_and_the_source_of_the_url(cli, how, source):
    port = closed_port()
    args, env = how(f"https://127.0.0.1:{port}")
    run = cli(*ONE_TRY, *args, env=env)
    assert run.code == 1
    assert f"failed: connection refused (127.0.0.1:{port}, {source})" in error_line(run.stderr), run.stderr


def test_the_default_endpoint_is_named_with_its_region(cli, resolver):
    run = cli(*ONE_TRY, env=NO_ENDPOINTS)
    assert run.code == 1
    assert (f"failed: the host name cannot be resolved ({DEFAULT_MAAS}:443, the default endpoint for cn-southwest-2)"
            in error_line(run.stderr)), run.stderr


def test_an_iam_failure_names_the_iam_endpoint(cli):
    port = closed_port()
    run = cli(*SEED_RANGE, "--retries", "0", env={"HW_IAM_ENDPOINT": f"https://127.0.0.1:{port}"})
    assert run.code == 1
    line = error_line(run.stderr)
    assert line.startswith("error: IAM project lookup") and f"(127.0.0.1:{port}, from HW_IAM_ENDPOINT)" in line


def test_a_proxy_that_fails_is_named_without_its_credentials(cli, cloud):
    port = closed_port()
    run = cli(*ONE_TRY, env={"HTTPS_PROXY": f"http://proxyuser:proxypass@127.0.0.1:{port}"})
    assert run.code == 1
    line = error_line(run.stderr)
    assert f"(localhost:{cloud.port}, from HW_MAAS_ENDPOINT, through the proxy 127.0.0.1:{port})" in line, line
    assert "proxyuser" not in run.stderr and "proxypass" not in run.stderr
    assert cloud.log == []


def test_a_timeout_names_the_host(cli, cloud):
    cloud.add_fault("hang", times=10)
    run = cli(*ONE_TRY, "--timeout", "1")
    assert run.code == 1
    assert (f"failed: no answer within 1 s (--timeout) (localhost:{cloud.port}, from HW_MAAS_ENDPOINT)"
            in error_line(run.stderr)), run.stderr


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


@pytest.mark.parametrize("failure", [RuntimeError("can't start new thread"), MemoryError()])
def test_a_lookup_without_a_thread_of_its_own_is_made_in_the_calling_thread(resolver, monkeypatch, failure):
    """The lookup thread is started without threading.Thread's unbounded wait for it; when none can
    start, the name is looked up in the caller's thread (unbounded, as before a --timeout existed)."""
    import _thread

    import maas_rest_usage_stats as m

    def refuse(*args, **kwargs):
        raise failure

    resolver.names.add("maas.example")
    monkeypatch.setattr(_thread, "start_new_thread", refuse)
    assert m.Resolver().addresses("maas.example", 443, 5.0) == ["127.0.0.1"]
    assert resolver.calls["maas.example"] == 1
