"""Unattended runs: nothing a server, a proxy, a path or a stream does may hang the run, exhaust
memory, leak a piece of a key or end in a traceback.

Each case ends as the contract says (exit code, `error:` line, empty stdout on failure); the
memory cases run the script as a process under a data-size limit, so a client that buffered a
hostile body would die visibly instead of passing slowly.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import SCRIPT, SECRETS, Run, assert_clean, hourly_index, run_script
from test_store import D, RANGE, SHANGHAI

PROJECT = fakecloud.DEMO_PROJECT_ID
DAY = ["--from", "2026-11-20", "--to", "2026-11-21", "--timezone", "UTC", "--project-id", PROJECT]
# RLIMIT_AS would also count glibc's per-thread malloc arenas (about 1 GiB reserved for 16
# workers), so the limit is on data: the script needs ~45 MB of it; inflating the bomb, 700 MB.
DATA_LIMIT = 512 * 1024 * 1024
BOMB_BYTES = 700 * 1000 * 1000


def limited(args: list[str], env: dict[str, str], timeout: float = 60) -> Run:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))

    done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=limit)
    run = Run(done.returncode, done.stdout, done.stderr)
    assert_clean(run)
    return run


# -- time: --timeout bounds the attempt, not each read -----------------------------------------------

@pytest.mark.parametrize("kind", ["trickle_headers", "trickle_body"])
def test_a_trickling_server_ends_the_attempt_after_the_timeout(cli, cloud, fake_clock, kind):
    cloud.add_fault(kind, interval=0.2, times=5)
    started = time.monotonic()  # the --timeout is real time: it bounds real socket reads
    run = cli(*DAY, "--timeout", "1", "--retries", "1", clock=fake_clock)
    assert run.code == 1 and run.stdout == ""
    assert "no answer within 1 s (--timeout)" in run.stderr and "after 2 attempts" in run.stderr
    assert len(cloud.maas_requests()) == 2
    assert time.monotonic() - started < 10  # two attempts of 1 s and a backoff, never the trickle's pace


def test_a_slow_but_steady_body_within_the_timeout_is_accepted(cli, cloud):
    cloud.add_fault("trickle_body", interval=0.005)
    run = cli(*DAY, "--timeout", "20", "--format", "json")
    assert run.code == 0, run.stderr
    assert run.json()["totals"]["total_requests"] == cloud.expected_usage(
        1795132800000, 1795219200000, 2)["total_request_count"]


# -- memory: one bounded reader for every body ---------------------------------------------------------

@pytest.mark.parametrize("kind, params", [("endless_chunked", {}), ("oversized", {}),
                                          ("gzip_bomb", {"inflated": BOMB_BYTES})])
def test_an_endless_oversized_or_compressed_bomb_body_is_malformed_within_bounded_memory(cloud, cloud_env, kind,
                                                                                      params):
    if kind == "gzip_bomb":
        fakecloud.gzip_bomb_body(BOMB_BYTES)  # built (and cached) before the run, not during it
    cloud.add_fault(kind, times=10, **params)
    run = limited(DAY + ["--retries", "0"], cloud_env)
    assert run.code == 1 and run.stdout == ""
    assert "malformed response" in run.stderr and "larger than 1 MiB" in run.stderr


def test_the_client_asks_for_an_uncompressed_answer(cli, cloud):
    assert cli(*DAY).code == 0
    (request,) = [entry for entry in cloud.log if entry.path.endswith("show-statistics")]
    assert request.headers.get("Accept-Encoding") == "identity"


# -- secrets: no 8-character piece in any form -------------------------------------------------------

@pytest.mark.parametrize("encoding", ["json_escaped", "url_encoded", "cut"])
def test_an_echoed_secret_leaves_no_piece_in_any_form(cli, cloud, encoding):
    cloud.add_fault("echo_secret", encoding=encoding)
    run = cli(*DAY, "-v")
    assert run.code == 1 and "ModelArts.4101" in run.stderr
    for secret in SECRETS:
        for start in range(len(secret) - 7):
            assert secret[start:start + 8] not in run.stderr


def test_redaction_covers_escaped_encoded_and_cut_forms():
    secret = fakecloud.DEMO_SK
    escaped = "".join(f"\\u{ord(c):04X}" for c in secret[:12])
    encoded = "".join(f"%{ord(c):02x}" for c in secret[3:15])
    text = m.redact(f"a {escaped} b {encoded} c {secret[:9]}… d {secret[:7]}", [secret])
    assert text == f"a *** b *** c ***… d {secret[:7]}"  # 7 characters are no recognisable piece


# -- streams: the result's own output ----------------------------------------------------------------

def _script(args: list[str], env: dict[str, str], **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **popen)


def test_a_closed_stdout_is_exit_1_with_an_error_line(cloud_env):
    done = _script(DAY, cloud_env, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    assert done.returncode == 1
    assert "error: cannot write the result to stdout" in done.stderr and "Traceback" not in done.stderr


def test_a_full_disk_is_exit_1_with_an_error_line(cloud_env):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "w") as full:
        done = _script(DAY, cloud_env, stdout=full, stderr=subprocess.PIPE)
    assert done.returncode == 1
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr


def test_a_reader_that_goes_away_is_exit_1_without_a_traceback(cloud_env):
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--last", "30d", "--dry-run", "--project-id", PROJECT,
                                "--service-type", "all", "--group-by", "day"], env=cloud_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # like `| head` exiting before the result is written
    err = process.stderr.read()
    assert process.wait(timeout=60) == 1 and "Traceback" not in err and "Exception ignored" not in err


@pytest.mark.parametrize("args, code", [(DAY, 0), (DAY + ["--bogus"], 2), (DAY + ["--service-type", "3"], 2),
                                         (DAY + ["--endpoint", "https://127.0.0.1:9", "--retries", "0"], 1)])
def test_a_closed_stderr_changes_neither_stdout_nor_the_exit_code(cloud_env, args, code):
    with_stderr = _script(args, cloud_env, capture_output=True)
    without = _script(args, cloud_env, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2))
    assert with_stderr.returncode == without.returncode == code
    assert without.stdout == with_stderr.stdout


def test_a_result_printed_after_a_note_survives_a_closed_stderr(cloud_env, cloud):
    args = ["--from", "2025-01-01", "--to", "2025-01-05", "--timezone", "UTC", "--project-id", PROJECT]
    noted = _script(args, cloud_env, capture_output=True)
    assert "note:" in noted.stderr and noted.returncode == 0
    silent = _script(args, cloud_env, stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2))
    assert silent.returncode == 0 and silent.stdout == noted.stdout


# -- clear text: loopback http never through a proxy -----------------------------------------------------

def test_loopback_http_never_goes_through_a_proxy(home):
    with socket.socket() as proxy, fakecloud.FakeCloud(tls=False) as plain:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(5)
        proxy.settimeout(0.2)
        address = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        env = {"HOME": str(home), "HW_ACCESS_KEY": fakecloud.DEMO_AK, "HW_SECRET_KEY": fakecloud.DEMO_SK,
               "HW_SECURITY_TOKEN": fakecloud.TEMP_TOKEN, "HW_MAAS_ENDPOINT": plain.url, "HW_IAM_ENDPOINT": plain.url,
               "HTTP_PROXY": address, "http_proxy": address, "ALL_PROXY": address, "HTTPS_PROXY": address}
        plain.credentials[fakecloud.DEMO_AK] = (fakecloud.DEMO_SK, fakecloud.TEMP_TOKEN)
        from conftest import run_main
        run = run_main(DAY, env)
        with pytest.raises(socket.timeout):
            proxy.accept()  # nothing ever connected to the proxy
    assert run.code == 0, run.stderr
    assert len(plain.maas_requests()) == 1


def test_https_still_goes_through_the_configured_proxy():
    endpoint = m.parse_endpoint("https://modelarts.cn-southwest-2.myhuaweicloud.com", "--endpoint")
    env = {"HTTPS_PROXY": "http://proxy.example:3128"}
    assert m.proxy_for(endpoint, env) == "http://proxy.example:3128"
    assert m.proxy_for(endpoint, {**env, "NO_PROXY": ".myhuaweicloud.com"}) is None
    assert m.proxy_for(m.parse_endpoint("http://127.0.0.1:8080", "--endpoint"), env) is None


# -- store paths -------------------------------------------------------------------------------------

@pytest.fixture
def recorded(cli, cloud, tmp_path):
    today_ms = int(time.time()) * 1000 // 86_400_000 * 86_400_000
    cloud.events = hourly_index(today_ms - 120 * 86_400_000, today_ms + 2 * 86_400_000)
    store = tmp_path / "usage.db"
    assert cli(*RANGE, *SHANGHAI, "--store", str(store), "--record").code == 0
    cloud.clear_log()
    return store


def _unix_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink to a store", "fifo", "fifo dry run", "device",
                                  "socket"])
def test_a_store_path_that_is_not_a_regular_file_is_refused_without_blocking(cloud_env, cloud, tmp_path, kind,
                                                                             recorded):
    path = tmp_path / "store-path"
    target = tmp_path / "elsewhere" / "created.db"
    sock = None
    if kind == "dangling symlink":
        target.parent.mkdir()
        path.symlink_to(target)
    elif kind == "symlink to a store":
        path.symlink_to(recorded)
    elif kind.startswith("fifo"):
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/null")
    else:
        sock = _unix_socket(path)
    extra = ["--dry-run"] if kind == "fifo dry run" else []
    try:
        run = run_script([*RANGE, *SHANGHAI, "--store", str(path), *extra], cloud_env, timeout=20)
    finally:
        if sock is not None:
            sock.close()
    assert run.code == 2 and "not a regular file" in run.stderr and str(path) in run.stderr
    assert cloud.log == [] and not target.exists()


def test_a_store_others_can_read_gets_a_note(cli, recorded):
    recorded.chmod(0o644)
    run = cli(*RANGE, *SHANGHAI, "--store", str(recorded))
    assert run.code == 0 and f"chmod 600 {recorded}" in run.stderr


def _read_only_view(store: Path, tmp_path: Path):
    """A read-only view of the store: a read-only bind mount of its folder as root, else a copy the
    user may only read. Returns (path, how, cleanup)."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(store, source / store.name)
    if os.geteuid() == 0:
        view = tmp_path / "view"
        view.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(view)],
                          capture_output=True).returncode == 0:
            return view / store.name, "a read-only bind mount", lambda: subprocess.run(
                ["umount", "--lazy", str(view)], check=True)
        pytest.skip("running as root without mount permission: a read-only store cannot be made")
    (source / store.name).chmod(0o400)
    source.chmod(0o500)
    return source / store.name, "a copy the user may only read", lambda: source.chmod(0o700)


def test_a_read_only_store_still_serves_queries_and_dry_runs(cli, cloud, recorded, tmp_path):
    with sqlite3.connect(recorded) as db:  # no -wal or -shm left beside it: a reader must not need them
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path, how, cleanup = _read_only_view(recorded, tmp_path)
    try:
        cloud.fail_all = True  # a fully stored range needs no API
        run = cli(*RANGE, *SHANGHAI, "--store", str(path), "--format", "json")
        assert run.code == 0, (how, run.stderr)
        assert {row["source"] for row in run.json()["rows"]} == {"store"}, how
        plan = cli(*RANGE, *SHANGHAI, "--store", str(path), "--dry-run")
        assert plan.code == 0 and plan.stdout == "", (how, plan.stderr)
        cloud.fail_all = False
        record = cli("--from", D(1), "--to", D(12), *SHANGHAI, "--store", str(path), "--record")
        assert record.code == 1 and record.stdout == "" and "store" in record.stderr, how
    finally:
        cleanup()


# -- credentials paths ---------------------------------------------------------------------------------

def test_a_credentials_pipe_without_a_writer_is_exit_3_within_the_bound(cli, tmp_path, monkeypatch, fake_clock):
    monkeypatch.setattr(m, "CREDENTIALS_PIPE_WAIT", 0.5)
    fifo = tmp_path / "keys"
    os.mkfifo(fifo)
    run = cli(*DAY, "--credentials-file", str(fifo), env={"HW_ACCESS_KEY": None, "HW_SECRET_KEY": None},
              clock=fake_clock)
    assert run.code == 3 and "pipe" in run.stderr and "0.5 s" in run.stderr
    assert fake_clock.monotonic() >= 0.5 and fake_clock.slept < 0.5 + m.POLL_INTERVAL  # the bound, on the run's clock


def test_process_substitution_passes_keys_without_a_file(cloud_env, cloud):
    env = {k: v for k, v in cloud_env.items() if k not in ("HW_ACCESS_KEY", "HW_SECRET_KEY")}
    command = (f'"{sys.executable}" "{SCRIPT}" ' + " ".join(DAY) +
               f' --credentials-file <(printf "%s\\n%s\\n" "$AK" "$SK")')
    done = subprocess.run(["bash", "-c", command], env={**env, "AK": fakecloud.DEMO_AK, "SK": fakecloud.DEMO_SK},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Total Tokens" in done.stdout and not any(s in done.stdout + done.stderr for s in SECRETS)


@pytest.mark.parametrize("kind", ["device", "socket"])
def test_a_credentials_device_or_socket_is_refused(cli, tmp_path, kind):
    sock = _unix_socket(tmp_path / "keys.sock") if kind == "socket" else None
    path = "/dev/zero" if kind == "device" else str(tmp_path / "keys.sock")
    try:
        run = cli(*DAY, "--credentials-file", path)
    finally:
        if sock is not None:
            sock.close()
    assert run.code == 3 and "a device or a socket" in run.stderr


# -- Ctrl-C: exit 130, stdout empty, at any moment -----------------------------------------------------

@pytest.mark.parametrize("requests_seen", [1, 2, 18])  # IAM asked; the first window; the second wave
def test_ctrl_c_at_any_moment_of_a_slow_run_is_exit_130_with_stdout_empty(cloud_env, cloud, requests_seen):
    """Ctrl-C at a moment told by the fake's log, not by a sleep: a loaded machine that is slow to
    start the interpreter moves the moment, never the test's outcome. (A Ctrl-C while Python itself
    is still compiling the script, before its first line runs, is Python's own: not tested.)"""
    cloud.latency = 0.4  # the IAM lookup, then 100 daily windows 16 at a time: about 3.5 s in all
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--last", "100d", "--timezone", "UTC",
                                "--group-by", "day"], env=cloud_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(cloud.log) < requests_seen and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(cloud.log) >= requests_seen and process.poll() is None
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert out == "" and "error: interrupted" in err and "Traceback" not in err
