"""The README's cron lines, run as cron runs them: by /bin/sh, under ``env -i`` (no PATH, HOME, TZ
or keys from a shell), with the virtualenv's interpreter by absolute path and keys from a file. Only
the fake cloud's endpoints and its CA are added, as the real cloud needs neither."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import fakecloud
from conftest import ROOT, hourly_index

CHECKOUT = "/opt/maas-usage"
TEXTFILE = "/var/lib/node_exporter/textfile"


def cron_lines(block: int = 0) -> list[str]:
    """The crontab lines of the README's cron block number ``block`` (the recipes', then the budget's)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```cron\n(.*?)```", readme, re.S)
    assert len(blocks) == 2, "the README has the recipes' cron block and the budget's"
    return [line for line in blocks[block].splitlines() if line.strip() and not line.startswith("#")]


def as_cron_runs_it(line: str, checkout: Path, textfile: Path) -> str:
    """The command of a crontab line, with the checkout and the collector's folder moved to the
    test's own folders; cron turns an unescaped ``%`` into a newline and ``\\%`` into ``%``."""
    fields = line.split(None, 5)
    assert len(fields) == 6, line
    command = fields[5]
    assert "%" not in command.replace("\\%", ""), "an unescaped % in a crontab ends the command"
    command = command.replace("\\%", "%")
    assert command.startswith(f"{CHECKOUT}/.venv/bin/python "), "cron has no PATH: the venv's python by path"
    command = command.replace(f"{CHECKOUT}/.venv/bin/python", sys.executable, 1)
    command = command.replace(f"{CHECKOUT}/maas_rest_usage_stats.py", str(ROOT / "maas_rest_usage_stats.py"))
    return command.replace(CHECKOUT, str(checkout)).replace(TEXTFILE, str(textfile))


@pytest.fixture
def cron_setup(tmp_path: Path, cloud):
    now = datetime.now(timezone.utc)
    cloud.events = hourly_index(int((now - timedelta(days=35)).timestamp()) // 3600 * 3600 * 1000,
                                int(now.timestamp()) // 3600 * 3600 * 1000)
    checkout = tmp_path / "opt"
    (checkout / "daily").mkdir(parents=True)  # the README: "mkdir /opt/maas-usage/daily first"
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    keys = checkout / "credentials"
    keys.write_text(f"HW_ACCESS_KEY={fakecloud.DEMO_AK}\nHW_SECRET_KEY={fakecloud.DEMO_SK}\n")
    os.chmod(keys, 0o600)
    env = {"HW_MAAS_ENDPOINT": cloud.url, "HW_IAM_ENDPOINT": cloud.url, "REQUESTS_CA_BUNDLE": str(cloud.ca_pem_path)}
    return checkout, textfile, env


def test_the_readme_has_the_three_cron_lines():
    assert len(cron_lines()) == 3


@pytest.mark.parametrize("index", range(3))
def test_each_readme_cron_line_works_under_env_i(cron_setup, index):
    checkout, textfile, env = cron_setup
    command = as_cron_runs_it(cron_lines()[index], checkout, textfile)
    done = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", command],
                          capture_output=True, text=True, timeout=120, cwd=str(checkout))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # -q and --output: nothing for cron to mail
    written = [path for path in [*checkout.rglob("*"), *textfile.iterdir()]
               if path.is_file() and path.suffix in (".csv", ".json", ".prom")]
    assert len(written) == 1, written
    text = written[0].read_text(encoding="utf-8")
    if written[0].suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert {row["service_type"] for row in rows} == {"1", "2", "4"}
        yesterday = subprocess.run(["date", "-d", "yesterday", "+%F"], env={"TZ": "Asia/Shanghai"},
                                   capture_output=True, text=True).stdout.strip()
        assert written[0].name == f"usage-{yesterday}.csv"
    elif written[0].suffix == ".json":
        document = json.loads(text)
        assert document["store"]["days_saved"] >= 28 and (checkout / "usage.db").is_file()
    else:
        assert 'maas_usage_tokens{region="cn-southwest-2"' in text and "maas_usage_complete{" in text


def test_the_budget_cron_line_mails_on_exit_4_and_only_then(cron_setup, tmp_path):
    """The README's budget line under env -i: over the budget's pace the run exits 4 and the line
    mails the month's table (a stub ``mail`` writes what it would send); within it, no mail."""
    checkout, textfile, env = cron_setup
    (line,) = cron_lines(1)
    assert "--fail-over 90" in line and "|| mail -s" in line
    sent = tmp_path / "sent.txt"
    stub = tmp_path / "mail"
    stub.write_text(f"#!/bin/sh\ncat > {sent}\n")
    stub.chmod(0o755)
    for budget, mailed in (("130M", True), ("100B", False)):
        command = as_cron_runs_it(line.replace("--budget 130M", f"--budget {budget}"), checkout, textfile)
        command = command.replace("|| mail -s", f"|| {stub} -s")
        done = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "/bin/sh", "-c", command],
                              capture_output=True, text=True, timeout=120, cwd=str(checkout))
        assert done.returncode == 0, done.stderr
        assert sent.exists() == mailed, budget
        if mailed:
            text = sent.read_text(encoding="utf-8")
            assert "Budget: 130.00 M tokens" in text and "At this pace" in text
            assert "--fail-over 90 %: exit 4" in done.stderr  # -q keeps the warning: cron mails it too
            sent.unlink()
