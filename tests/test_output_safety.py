"""Output safety: --output replaces only a regular file (or creates one), never one of the run's own
files, keeps the old file's mode, owner and group; the result reaches stdout whole, also when stdout
is a non-blocking pipe."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fakecloud
import maas_rest_usage_stats as m
from conftest import SCRIPT, assert_clean, Run

SEED_RANGE = ["--from", "2026-05-08", "--to", "2026-05-21", "--timezone", "Asia/Shanghai"]
PROJECT = fakecloud.DEMO_PROJECT_ID
# More than a pipe's 64 KiB: a week of hourly rows with each window's raw answer (about 140 KB).
LONG_RESULT = ["--from", "2026-05-08", "--to", "2026-05-15", "--group-by", "hour", "--timezone", "UTC",
               "--format", "json", "--raw", "-q"]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def others(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != name)


def refused_before_any_request(run: Run, cloud: fakecloud.FakeCloud, what: str) -> None:
    assert run.code == 2, run.stderr
    assert what in run.stderr
    assert cloud.log == []


# -- PATH must be a regular file or absent: anything else is exit 2 before any request ------------

def test_a_symlink_is_refused_and_its_target_untouched(cli, cloud, out):
    victim = out / "victim"
    victim.write_text("keep\n")
    link = out / "maas.prom"
    link.symlink_to(victim)
    run = cli(*SEED_RANGE, "--output", str(link))
    refused_before_any_request(run, cloud, "is a symbolic link, not a regular file")
    assert link.is_symlink() and victim.read_text() == "keep\n"


def test_a_dangling_symlink_is_refused_and_nothing_is_created(cli, cloud, out):
    link = out / "maas.prom"
    link.symlink_to(out / "elsewhere")
    run = cli(*SEED_RANGE, "--output", str(link))
    refused_before_any_request(run, cloud, "is a symbolic link")
    assert others(out, link.name) == []


def test_a_symlink_to_stdout_is_refused_and_an_appended_log_keeps_its_lines(cloud_env, cloud, out):
    """`--output /dev/stdout` from a shell that appends (`>> usage.csv`) must not replace the log."""
    log = out / "usage.csv"
    log.write_text("line 1\nline 2\n")
    link = out / "stdout"
    link.symlink_to("/proc/self/fd/1")  # what /dev/stdout is, in a folder a failing test may spoil
    with open(log, "a") as appended:
        done = subprocess.run([sys.executable, str(SCRIPT), *SEED_RANGE, "--format", "csv", "--output", str(link)],
                              env=cloud_env, stdout=appended, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 2 and "is a symbolic link" in done.stderr
    assert log.read_text() == "line 1\nline 2\n" and cloud.log == []


def test_a_directory_is_refused(cli, cloud, out):
    run = cli(*SEED_RANGE, "--output", str(out))
    refused_before_any_request(run, cloud, "is a directory, not a regular file")


def test_a_folder_that_does_not_exist_is_refused_before_any_request(cli, cloud, tmp_path):
    """A cron line with a folder not made yet spends no request on a result it cannot write."""
    run = cli(*SEED_RANGE, "--output", str(tmp_path / "missing" / "usage.csv"))
    refused_before_any_request(run, cloud, f"the folder {tmp_path / 'missing'} does not exist")
    assert f"hint: create it first (mkdir -p {tmp_path / 'missing'})" in run.stderr
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("path, says", [
    ("a-file/usage.csv", "a-file is not a folder"),
    ("a-file/deeper/usage.csv", "a-file/deeper is not a folder"),
    ("new-folder/", "new-folder/ names a folder, not a file"),
])
def test_a_path_whose_folder_is_not_one_is_refused_before_any_request(cli, cloud, tmp_path, path, says):
    (tmp_path / "a-file").write_text("")
    run = cli(*SEED_RANGE, "--output", f"{tmp_path}/{path}")  # as typed: pathlib would drop the last /
    refused_before_any_request(run, cloud, says)
    assert "mkdir" not in run.stderr


def test_a_named_pipe_is_refused_without_waiting_for_a_reader(cli, cloud, out):
    fifo = out / "maas.prom"
    os.mkfifo(fifo)
    run = cli(*SEED_RANGE, "--output", str(fifo))
    refused_before_any_request(run, cloud, "is a named pipe, not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_socket_is_refused(cli, cloud, tmp_path):
    path = tmp_path / "s.sock"  # short: a socket's path is limited to about 100 bytes
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        run = cli(*SEED_RANGE, "--output", str(path))
    finally:
        server.close()
    refused_before_any_request(run, cloud, "is a socket, not a regular file")


def test_a_device_is_refused_and_stays_a_device(cli, cloud, out):
    if os.geteuid() == 0:  # root could replace a system device: use a node of our own
        device = out / "null"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    else:
        device = Path("/dev/null")
    run = cli(*SEED_RANGE, "--output", str(device))
    refused_before_any_request(run, cloud, "is a device, not a regular file")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


# -- never the store, its -wal/-shm, the credentials file or the script -----------------------------

@pytest.fixture
def recorded(cli, tmp_path: Path) -> Path:
    """A store with a day in it, as a nightly --record leaves it."""
    store = tmp_path / "usage.db"
    now = m.datetime.now(m.timezone.utc)
    yesterday = (now - m.timedelta(days=2)).date().isoformat()
    run = cli("--from", yesterday, "--timezone", "UTC", "--project-id", PROJECT, "--store", str(store), "--record")
    assert run.code == 0, run.stderr
    return store


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_the_store_and_its_wal_and_shm_are_refused(cli, cloud, recorded, suffix):
    target = Path(str(recorded) + suffix)
    target.touch()  # SQLite removes -wal and -shm when the last connection closes
    before = target.read_bytes()
    cloud.clear_log()
    run = cli(*SEED_RANGE, "--store", str(recorded), "--output", str(target))
    refused_before_any_request(run, cloud, "the result would destroy it")
    assert ("the store" + (f"'s {suffix} file" if suffix else "")) in run.stderr
    assert target.read_bytes() == before


def test_the_store_from_the_environment_is_refused(cli, cloud, recorded):
    cloud.clear_log()
    run = cli(*SEED_RANGE, "--output", str(recorded), env={"MAAS_USAGE_STORE": str(recorded)})
    refused_before_any_request(run, cloud, "is the store")


def test_a_hard_link_to_the_store_is_the_same_file(cli, cloud, recorded, tmp_path):
    link = tmp_path / "usage-link.db"
    os.link(recorded, link)
    cloud.clear_log()
    run = cli(*SEED_RANGE, "--store", str(recorded), "--output", str(link))
    refused_before_any_request(run, cloud, "is the store")


def test_a_store_that_does_not_exist_yet_is_refused_by_its_path(cli, cloud, tmp_path):
    store = tmp_path / "new.db"
    run = cli(*SEED_RANGE, "--store", str(store), "--output", str(tmp_path / "." / "new.db"))
    refused_before_any_request(run, cloud, "is the store")
    assert not store.exists()


def test_the_credentials_file_given_by_flag_is_refused(cli, cloud, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{fakecloud.DEMO_AK}\n{fakecloud.DEMO_SK}\n")
    run = cli(*SEED_RANGE, "--credentials-file", str(keys), "--output", str(keys))
    refused_before_any_request(run, cloud, "is the credentials file")
    assert keys.read_text().startswith(fakecloud.DEMO_AK)


@pytest.mark.parametrize("where", ["HUAWEICLOUD_SDK_CREDENTIALS_FILE", "default profile"])
def test_the_sdk_profile_is_refused_even_when_the_keys_come_from_the_environment(cli, cloud, home, tmp_path, where):
    profile = tmp_path / "profile" if where != "default profile" else home / ".huaweicloud" / "credentials"
    profile.parent.mkdir(exist_ok=True)
    profile.write_text(f"[basic]\nak = {fakecloud.DEMO_AK}\nsk = {fakecloud.DEMO_SK}\n")
    env = {where: str(profile)} if where != "default profile" else {}
    run = cli(*SEED_RANGE, "--output", str(profile), env=env)
    refused_before_any_request(run, cloud, "is the credentials file")
    assert "[basic]" in profile.read_text()


def test_the_script_itself_is_refused(cloud_env, cloud, tmp_path):
    copy = tmp_path / "maas_rest_usage_stats.py"  # a copy: a failure must not spoil the checkout
    shutil.copy(SCRIPT, copy)
    before = copy.read_bytes()
    done = subprocess.run([sys.executable, str(copy), *SEED_RANGE, "--output", str(copy)], env=cloud_env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "is this script" in done.stderr, done.stderr
    assert copy.read_bytes() == before and cloud.log == []


# -- the write: a rename in the same folder, mode, owner and group kept --------------------------------

def test_the_temporary_file_is_renamed_within_the_folder(cli, out, monkeypatch):
    target = out / "maas.prom"
    renames = []
    real_replace = os.replace

    def spy(src, dst, **kwargs):
        renames.append((os.path.dirname(src), os.path.dirname(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(m.os, "replace", spy)
    run = cli(*SEED_RANGE, "--output", str(target))
    assert run.code == 0, run.stderr
    assert renames == [(str(out), str(out))]
    assert others(out, target.name) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="only root may give a file away")
def test_as_root_the_old_files_owner_group_and_mode_are_kept(cli, out):
    """A root cron job replacing a collector's file must not take its read access away."""
    target = out / "maas.prom"
    target.write_text("old\n")
    os.chown(target, 4321, 8765)
    target.chmod(0o640)
    run = cli(*SEED_RANGE, "--format", "prometheus", "--output", str(target))
    assert run.code == 0, run.stderr
    kept = target.stat()
    assert (kept.st_uid, kept.st_gid, stat.S_IMODE(kept.st_mode)) == (4321, 8765, 0o640)
    assert target.read_text().startswith("# HELP")


def test_owner_and_group_that_cannot_be_given_keep_the_mode_and_the_write(cli, out, monkeypatch):
    target = out / "maas.prom"
    target.write_text("old\n")
    target.chmod(0o604)

    def refused(fd, uid, gid):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(m.os, "fchown", refused)
    run = cli(*SEED_RANGE, "--output", str(target))
    assert run.code == 0, run.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o604 and target.read_text() != "old\n"


def test_a_symlink_planted_during_the_run_is_refused_at_the_write(cli, out, monkeypatch):
    target = out / "maas.prom"
    target.write_text("old\n")
    victim = out / "victim"
    victim.write_text("keep\n")
    real_run = m.run

    def planting(*args, **kwargs):
        result = real_run(*args, **kwargs)
        target.unlink()
        target.symlink_to(victim)
        return result

    monkeypatch.setattr(m, "run", planting)
    run = cli(*SEED_RANGE, "--output", str(target))
    assert run.code == 1 and "is a symbolic link" in run.stderr
    assert target.is_symlink() and victim.read_text() == "keep\n"
    assert others(out, target.name) == ["victim"]


# -- stdout: the whole result or exit 1, a non-blocking one included -------------------------------

def _nonblocking_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    return read_end, write_end


def test_a_non_blocking_stdout_gets_the_whole_result_from_a_slow_reader(cloud_env, cloud):
    """As left by Node's child_process, make -j or an agent runtime: the pipe fills at 64 KiB, and the
    rest must wait for the reader, not be dropped."""
    read_end, write_end = _nonblocking_pipe()
    process = subprocess.Popen([sys.executable, str(SCRIPT), *LONG_RESULT], env=cloud_env, stdout=write_end,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(write_end)
    received = bytearray()
    time.sleep(1.0)  # let the writer fill the pipe first
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        while True:
            piece = reader.read(8192)
            if not piece:
                break
            received += piece
            time.sleep(0.01)
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, err
    assert len(received) > 64 * 1024
    document = json.loads(received)
    assert len(document["rows"]) == 7 * 24 and len(document["windows"]) == len(document["rows"])


def test_a_stdout_whose_reader_is_stuck_is_exit_1_not_a_silent_cut(cloud_env, monkeypatch):
    monkeypatch.setattr(m, "STDOUT_STALL", 0.5)
    read_end, write_end = _nonblocking_pipe()
    stdout = os.fdopen(write_end, "w")
    stderr = io.StringIO()
    try:
        code = m.main([*LONG_RESULT], env=cloud_env, stdout=stdout, stderr=stderr)
    finally:
        stdout.close()
        os.close(read_end)
    run = Run(code, "", stderr.getvalue())
    assert_clean(run)
    assert code == 1
    assert "error: cannot write the result to stdout: its reader took nothing for 0.5 s" in run.stderr


def test_a_blocking_stdout_is_written_as_before(cloud_env):
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        with os.fdopen(read_end, "rb") as reader:
            received.extend(reader.read())

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_end, "w") as stdout:
        code = m.main([*LONG_RESULT], env=cloud_env, stdout=stdout, stderr=io.StringIO())
    reader.join(timeout=60)
    assert code == 0 and len(json.loads(received)["rows"]) == 7 * 24
