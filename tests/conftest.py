"""Shared fixtures: the fake cloud, and two runners for the real script.

``cli`` runs ``main(argv, env=..., stdout=..., stderr=...)`` in this process: the same code as the
command line, without a Python start-up per run. ``cli_process`` runs the script as a subprocess,
for what needs a real process (signals, streams, the encoding of stdout, start-up imports).
``FakeClock`` (the ``fake_clock`` fixture, which the fake cloud follows too) is a clock for
``main(clock=...)`` whose waits return at once: a test of a wait reads it off the clock instead of
sitting it out.
Every run through either is checked for the promises that hold on every path: no secret (AK, SK,
security token) in stdout or stderr, no Python traceback, an exit code of the contract.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import threading
import traceback
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "maas_rest_usage_stats.py"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fakecloud  # noqa: E402
import maas_rest_usage_stats  # noqa: E402

# CI machines are slow and noisy: properties are checked for correctness, never for speed.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")

SECRETS = (fakecloud.DEMO_AK, fakecloud.DEMO_SK, fakecloud.TEMP_AK, fakecloud.TEMP_SK, fakecloud.TEMP_TOKEN)
# Every 8 consecutive characters of a secret, as is, JSON-escaped and URL-encoded: no output may
# hold a recognisable part of a key in any form a server might echo it in.
SECRET_PIECES = frozenset(
    form(secret[start:start + 8]) for secret in SECRETS for start in range(len(secret) - 7)
    for form in (str, lambda t: "".join(f"\\u{ord(c):04x}" for c in t),
                 lambda t: "".join(f"%{ord(c):02X}" for c in t)))


# The suite tests what the script does on Ctrl-C, SIGTERM and SIGHUP. A suite started in the
# background of a non-interactive shell (SIGINT ignored) or under nohup (SIGHUP ignored) would hand
# the ignored signals on to every run it starts, which rightly keeps them ignored (a run under nohup
# must survive the hang-up): each test process gives them back their defaults.
for _signum, _default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                          (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(_signum, _default)


class FakeClock:
    """A clock for ``main(clock=...)`` whose time moves only when it is told to: ``sleep`` returns at
    once, moves ``now()`` and ``monotonic()`` on by the seconds asked and records them in ``sleeps``;
    ``advance`` moves time on without a sleep (work, or a gap between arrivals). Thread-safe."""

    def __init__(self, start: datetime | None = None, monotonic: float = 0.0) -> None:
        self.start = datetime.now(timezone.utc) if start is None else start
        self._origin = self._monotonic = monotonic
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self.start + timedelta(seconds=self._monotonic - self._origin)

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"a sleep of {seconds} s"
        with self._lock:
            self.sleeps.append(seconds)
            self._monotonic += seconds

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._monotonic += seconds

    @property
    def slept(self) -> float:
        """Seconds slept in all."""
        with self._lock:
            return sum(self.sleeps)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def assert_clean(run: Run) -> None:
    """The promises that hold for every run, whatever it did."""
    for piece in SECRET_PIECES:
        assert piece not in run.stdout, "a piece of a secret leaked to stdout"
        assert piece not in run.stderr, "a piece of a secret leaked to stderr"
    assert "Traceback" not in run.stderr, run.stderr
    assert run.code in (0, 1, 2, 3, 4), run.code
    if run.code == 4:  # --fail-over: the result was printed (or written by --output); stderr says why
        assert "--fail-over" in run.stderr, run.stderr
    elif run.code != 0:
        assert run.stdout == "", "a failed run printed a result"
        assert run.stderr.startswith(("error:", "note:", "warning:")) or "\nerror:" in run.stderr, run.stderr


def base_env(home: Path) -> dict[str, str]:
    """A minimal environment: no credentials, no proxies, a private HOME."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return env


def run_script(args: list[str], env: dict[str, str], timeout: float = 120) -> Run:
    completed = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                               text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    run = Run(completed.returncode, completed.stdout, completed.stderr)
    assert_clean(run)
    return run


def oracle_metrics(raw: dict) -> dict:
    """The contract's METRICS for a ShowStatistics answer's fields, rounded with rational arithmetic
    (an oracle independent of the script's Decimal code): half up is floor(x + 1/2)."""
    def half_up(value: Fraction) -> int:
        return math.floor(value + Fraction(1, 2))

    def tokens(thousands) -> int:
        return half_up(Fraction(str(thousands)) * 1000)

    requests, errors = int(raw["total_request_count"]), int(raw["total_error_count"])
    rate = None if not requests else half_up(Fraction(errors * 100 * 100, requests)) / 100
    return {"total_tokens": tokens(raw["total_token"]), "prompt_tokens": tokens(raw["total_prompt_token"]),
            "completion_tokens": tokens(raw["total_completion_token"]), "total_requests": requests,
            "total_errors": errors, "error_rate": rate,
            "total_completion_tasks": int(raw.get("total_completion_tasks", 0)),
            "total_infer_count": int(raw.get("total_infer_count", 0))}


@lru_cache(maxsize=8)
def hourly_index(start_ms: int, end_ms: int) -> fakecloud.UsageIndex:
    """Hourly usage events between two instants, indexed once per test session (building them is
    the slow part of a fixture that covers a year)."""
    return fakecloud.build_index(tuple(fakecloud.hourly_events(start_ms, end_ms)))


def run_main(args: list[str], env: dict[str, str], now=None, clock=None) -> Run:
    """The script's ``main`` in this process, with its own environment, clock and streams."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        code = maas_rest_usage_stats.main(list(args), env=env, now=now, clock=clock, stdout=stdout, stderr=stderr)
    except BaseException:  # what would be a traceback on the command line
        stderr.write(traceback.format_exc())
        code = -1
    run = Run(code, stdout.getvalue(), stderr.getvalue())
    assert_clean(run)
    return run


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cloud() -> Iterator[fakecloud.FakeCloud]:
    with fakecloud.FakeCloud(tls=True) as server:
        yield server


@pytest.fixture
def fake_clock(cloud: fakecloud.FakeCloud) -> FakeClock:
    """A FakeClock that the fake cloud follows too (its signature checks and the ``at`` of its log):
    pass it to ``cli(..., clock=fake_clock)``."""
    clock = FakeClock()
    cloud.clock = clock
    return clock


@pytest.fixture
def cloud_env(cloud: fakecloud.FakeCloud, home: Path) -> dict[str, str]:
    """Demo keys and endpoints pointing at the fake cloud, its CA trusted."""
    env = base_env(home)
    env.update({"HW_ACCESS_KEY": fakecloud.DEMO_AK, "HW_SECRET_KEY": fakecloud.DEMO_SK,
                "HW_MAAS_ENDPOINT": cloud.url, "HW_IAM_ENDPOINT": cloud.url,
                "HW_CES_ENDPOINT": cloud.url, "HW_MAAS_MONITOR_ENDPOINT": cloud.url,
                "REQUESTS_CA_BUNDLE": str(cloud.ca_pem_path)})
    return env


def _merged(base: dict[str, str], changes: dict[str, str | None] | None) -> dict[str, str]:
    merged = dict(base)
    for key, value in (changes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def cli(cloud_env: dict[str, str]):
    """Run the script in-process against the fake cloud; keyword ``env`` adds or (with None) removes
    vars, ``now`` sets the run's (real) clock to start at that instant, ``clock`` gives it another
    clock (``fake_clock``)."""
    def run(*args: str, env: dict[str, str | None] | None = None, now=None, clock=None) -> Run:
        return run_main(list(args), _merged(cloud_env, env), now, clock)
    return run


@pytest.fixture
def cli_process(cloud_env: dict[str, str]):
    """Run the script as a subprocess against the fake cloud (same keywords as ``cli``)."""
    def run(*args: str, env: dict[str, str | None] | None = None, timeout: float = 120) -> Run:
        return run_script(list(args), _merged(cloud_env, env), timeout)
    return run


def serve_at(cloud: fakecloud.FakeCloud, now: datetime) -> datetime:
    """Set the fake cloud's clock to read ``now`` as a run started at ``now`` does (its signature
    check allows 15 minutes of skew), and return ``now``."""
    cloud.server_time_offset = (now - datetime.now(timezone.utc)).total_seconds()
    return now


def local_ms(text: str, zone: str) -> int:
    """Epoch ms of a local wall time (ISO text) in an IANA zone, computed independently of the script."""
    from zoneinfo import ZoneInfo

    local = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))
    return int(local.astimezone(timezone.utc).timestamp()) * 1000
