"""SIGTERM and SIGHUP end a run like Ctrl-C (exit 143, 129; stdout empty; no temporary file; store
transactions rolled back), and threads cannot hang a run: under an address-space limit of 256 MiB a
run succeeds or prints an `error:` line, and a thread that cannot start is an error, never a wait."""

from __future__ import annotations

import io
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import SCRIPT, SECRETS, Run, assert_clean

PROJECT = fakecloud.DEMO_PROJECT_ID
SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
THIRTY_WINDOWS = ["--from", "2026-05-01", "--to", "2026-05-31", "--group-by", "day", "--timezone", "UTC", "--format",
                  "json", "-q"]
ADDRESS_SPACE = 256 * 1024 * 1024


def started(args: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, **kwargs)


def wait_for_requests(cloud: fakecloud.FakeCloud, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(cloud.maas_requests()) < count:
        assert time.monotonic() < deadline, "the run never sent its requests"
        time.sleep(0.05)


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- SIGTERM and SIGHUP: like Ctrl-C, with 128 + the signal -------------------------------------------

@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_while_an_answer_is_awaited_ends_the_run_with_128_plus_its_number(cloud_env, cloud, tmp_path,
                                                                                    signum, code):
    target = tmp_path / "maas.prom"
    target.write_text("old\n")
    cloud.add_fault("hang", times=20)
    process = started(["--last", "100d", "--timezone", "UTC", "--timeout", "30", "--format", "prometheus",
                       "--output", str(target)], cloud_env)
    wait_for_requests(cloud, 1)
    begun = time.monotonic()
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert time.monotonic() - begun < 5  # at once, not after the hung request's --timeout
    assert process.returncode == code, err
    assert out == "" and "error: interrupted" in err and "Traceback" not in err
    if signum != signal.SIGINT:
        assert f"error: interrupted by {signal.Signals(signum).name}" in err
    assert target.read_text() == "old\n" and temporary_files(tmp_path) == []
    assert not any(secret in out + err for secret in SECRETS)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_while_requests_run_concurrently_ends_the_run_at_once(cloud_env, cloud, signum, code):
    cloud.latency = 0.4
    process = started(["--last", "100d", "--timezone", "UTC", "--group-by", "day"], cloud_env)
    wait_for_requests(cloud, 3)  # the first window, then the fan-out
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
    assert process.returncode == code and out == "" and "Traceback" not in err, err


def test_a_signal_during_record_rolls_back_and_leaves_a_sound_store(cloud_env, cloud, tmp_path):
    store = tmp_path / "usage.db"
    cloud.latency = 0.3
    record = ["--last", "20d", "--timezone", "UTC", "--project-id", PROJECT, "--store", str(store), "--record",
              "--concurrency", "2"]
    process = started(record, cloud_env)
    wait_for_requests(cloud, 4)  # some days saved, others still on their way
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143 and out == "", err
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        saved = db.execute("SELECT COUNT(*) FROM days").fetchone()[0]
    assert saved < 20
    cloud.latency = 0
    again = subprocess.run([sys.executable, str(SCRIPT), *record], env=cloud_env, capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr


def test_a_signal_while_the_output_file_is_written_leaves_the_old_file_and_no_temporary_file(cloud_env, tmp_path,
                                                                                             monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    target = tmp_path / "maas.prom"
    target.write_text("old\n")

    def terminated(fd: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs at the next instruction of the main thread

    monkeypatch.setattr(m.os, "fsync", terminated)
    stderr = io.StringIO()
    code = m.main([*SEED_RANGE, "--output", str(target)], env=cloud_env, stdout=io.StringIO(), stderr=stderr)
    assert code == 143 and "error: interrupted by SIGTERM" in stderr.getvalue()
    assert target.read_text() == "old\n" and temporary_files(tmp_path) == []


def test_a_held_signal_strikes_when_the_block_ends():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    signals = m.Signals()
    signals.install()
    try:
        with pytest.raises(m.Terminated) as ended:
            with signals.held():
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(0.2)  # the handler has run by now: it only noted the signal
                reached = True
        assert reached and ended.value.exit_code == 129
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


def test_main_puts_the_callers_handlers_back(cli):
    before = {signum: signal.getsignal(signum) for signum in m.ENDING_SIGNALS}
    assert cli(*SEED_RANGE, "--dry-run").code == 0
    assert {signum: signal.getsignal(signum) for signum in m.ENDING_SIGNALS} == before


def test_an_ignored_sighup_stays_ignored(cloud_env, cloud):
    """nohup: the run outlives the terminal that started it."""
    cloud.latency = 0.3
    process = started([*SEED_RANGE, "--project-id", PROJECT, "--group-by", "day"], cloud_env,
                      preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    wait_for_requests(cloud, 1)
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Total Tokens" in out


def test_help_names_the_signal_exit_codes(cli):
    run = cli("--help")
    assert run.code == 0
    assert "143 SIGTERM" in run.stdout and "129 SIGHUP" in run.stdout and "130 Ctrl-C" in run.stdout


# -- threads: never a hang --------------------------------------------------------------------------

def limited_run(args: list[str], env: dict[str, str], timeout: float = 120) -> Run:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    try:
        done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run under a {ADDRESS_SPACE >> 20} MiB address-space limit hung")
    run = Run(done.returncode, done.stdout, done.stderr)
    assert_clean(run)
    return run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS as glibc's arenas meet it")
def test_a_run_under_a_256_mib_address_space_limit_succeeds_or_says_why_every_time(cloud_env, cloud):
    for _ in range(5):
        run = limited_run(THIRTY_WINDOWS, cloud_env)
        assert run.code == 0 or run.stderr.startswith("error:") or "\nerror:" in run.stderr, run.stderr
        if run.code == 0:
            assert len(run.json()["rows"]) == 30
    assert len(cloud.maas_requests()) >= 30  # at least one run got through: 256 MiB is plenty


def test_one_timer_thread_serves_every_attempt_and_workers_stay_within_the_concurrency(cli, cloud, monkeypatch):
    names = []
    real_start = m.start_thread

    def counted(run, what):
        names.append(what)
        return real_start(run, what)

    monkeypatch.setattr(m, "start_thread", counted)
    run = cli(*THIRTY_WINDOWS, "--concurrency", "8")
    assert run.code == 0, run.stderr
    assert names.count("the timer thread") == 1
    assert names.count("a worker thread") <= 8
    assert len(names) == names.count("the timer thread") + names.count("a worker thread")


@pytest.mark.parametrize("failure", [RuntimeError("can't start new thread"), MemoryError()])
def test_a_thread_that_cannot_start_is_an_error_not_a_hang(cli, cloud, monkeypatch, failure):
    import _thread

    def refuse(*args, **kwargs):
        raise failure

    monkeypatch.setattr(_thread, "start_new_thread", refuse)
    run = cli(*THIRTY_WINDOWS, "--project-id", PROJECT)
    assert run.code == 1
    assert run.stderr.startswith("error: cannot start the timer thread: the machine is out of memory or threads")
    assert "ulimit -v" in run.stderr


def test_a_thread_that_dies_before_it_is_under_way_is_an_error_after_a_bounded_wait(cli, cloud, monkeypatch):
    import _thread

    monkeypatch.setattr(m, "THREAD_START_WAIT", 0.5)
    monkeypatch.setattr(_thread, "start_new_thread", lambda function, args: 1)  # starts, then dies at once
    begun = time.monotonic()
    run = cli(*THIRTY_WINDOWS, "--project-id", PROJECT)
    assert run.code == 1 and "did not start within 0.5 s" in run.stderr
    assert time.monotonic() - begun < 30


def test_workers_that_end_without_their_results_are_an_error_not_a_hang(cli, cloud, monkeypatch):
    monkeypatch.setattr(m.Workers, "_serve", lambda self, ready: ready())  # under way, then gone
    run = cli(*THIRTY_WINDOWS, "--project-id", PROJECT)
    assert run.code == 1
    assert "error: a worker thread ended without its result" in run.stderr


def test_out_of_memory_in_a_request_is_an_error_line(cli, cloud, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(m, "read_body", exhausted)
    run = cli(*THIRTY_WINDOWS, "--project-id", PROJECT)
    assert run.code == 1 and run.stderr.startswith("error: out of memory")
