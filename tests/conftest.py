"""Shared fixtures: the fake cloud, and a runner for the real script as a subprocess.

Every run of the script through ``run_cli`` is checked for the two promises that hold on every
path: no secret (AK, SK, security token) in stdout or stderr, and no Python traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "maas_rest_usage_stats.py"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fakecloud  # noqa: E402

# CI machines are slow and noisy: properties are checked for correctness, never for speed.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")

SECRETS = (fakecloud.DEMO_AK, fakecloud.DEMO_SK, fakecloud.TEMP_AK, fakecloud.TEMP_SK, fakecloud.TEMP_TOKEN)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def assert_clean(run: Run) -> None:
    """The promises that hold for every run, whatever it did."""
    for secret in SECRETS:
        assert secret not in run.stdout, "a secret leaked to stdout"
        assert secret not in run.stderr, "a secret leaked to stderr"
    assert "Traceback" not in run.stderr, run.stderr
    assert run.code in (0, 1, 2, 3), run.code
    if run.code != 0:
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
def cloud_env(cloud: fakecloud.FakeCloud, home: Path) -> dict[str, str]:
    """Demo keys and endpoints pointing at the fake cloud, its CA trusted."""
    env = base_env(home)
    env.update({"HW_ACCESS_KEY": fakecloud.DEMO_AK, "HW_SECRET_KEY": fakecloud.DEMO_SK,
                "HW_MAAS_ENDPOINT": cloud.url, "HW_IAM_ENDPOINT": cloud.url,
                "REQUESTS_CA_BUNDLE": str(cloud.ca_pem_path)})
    return env


@pytest.fixture
def cli(cloud_env: dict[str, str]):
    """Run the script against the fake cloud; keyword ``env`` adds or (with None) removes vars."""
    def run(*args: str, env: dict[str, str | None] | None = None, timeout: float = 120) -> Run:
        merged = dict(cloud_env)
        for key, value in (env or {}).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return run_script(list(args), merged, timeout)
    return run
