#!/usr/bin/env python3
"""Wall-clock benchmark of maas_rest_usage_stats.py against the fake cloud.

    python3 tests/bench.py [--latency 0.3] [--runs 5] [--markdown]
    python3 tests/bench.py --hostile [--markdown]   # peak memory against each hostile server
    sudo python3 tests/bench.py --rtt [--markdown]  # round trips across a real delay line (rtt-lab)
    python3 tests/bench.py --ces-memory [--grid 50x20] [--days 150] [--markdown]  # Cloud Eye peak memory

Not part of the pytest suite (no ``test_`` names).  It starts ``FakeCloud``
in-process (HTTPS on 127.0.0.1, ``--latency`` seconds of injected delay per
request, synthetic hourly usage for the last 370 days) and runs the REAL
script as a subprocess -- ``sys.executable maas_rest_usage_stats.py
--timezone UTC --format json -q ...`` with a minimal environment (PATH, a
temporary HOME, LANG and the fake cloud's client env) -- for:

* ``--last 1d|7d|30d|90d|365d`` and ``--last 30d --group-by day``, each with
  the default concurrency and with ``--concurrency 1``; the project id is
  resolved through IAM (one extra request), as a user without
  ``--project-id`` would see it;
* ``--last 365d --project-id <DEMO_PROJECT_ID>``: no IAM lookup, so the
  contract's "first request alone" rule applies (one window is sent, then the
  rest fan out once it succeeded).

Per configuration: 1 warm-up, then ``--runs`` timed runs (``perf_counter``
around ``subprocess.run``); the median is reported.  Sequential
configurations that need 10 or more round trips (365 d, day-grouped 30 d)
are capped at 3 timed runs (``HEAVY_RUNS``) so that a default run stays
under ~3 minutes; the table marks them.  The fake's request log (cleared
before each run) gives the number of ShowStatistics and IAM requests, the
TLS connections opened and the peak of requests in flight; the arrival
times of the requests split each run into start-up (process start -> first
request), network phase and tail (last request -> process exit).

Also measured: the fixed start-up cost (``--version``, ``--help``,
``--dry-run --last 365d``, and ``python -c pass`` as the interpreter floor)
and ``python -X importtime maas_rest_usage_stats.py --version``: whether
``requests``, ``huaweicloudsdkcore`` or ``tabulate`` are imported (they must
not be) and the script's own import cost (modules not imported by a bare
``python -c pass``).

Every run must exit 0 with a JSON document on stdout; otherwise its stderr
is printed and the benchmark exits 1 (after stopping the server).  It also
exits 1 when ``--version`` imports one of the heavy packages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "maas_rest_usage_stats.py"
sys.path.insert(0, str(HERE))

import fakecloud  # (needs the sys.path entry above)

HEAVY_ROUND_TRIPS = 10  # sequential configs with at least this many requests ...
HEAVY_RUNS = 3  # ... run at most this many times
RUN_TIMEOUT_S = 180.0  # one subprocess; far above the worst case, only a safety net
DATASET_DAYS = 370
HEAVY_MODULES = ("requests", "huaweicloudsdkcore", "tabulate")
RATIO_ALERT = 1.4  # 365 d (concurrent) vs 7 d above this is reported as an anomaly

SCENARIOS: list[tuple[str, list[str]]] = [
    ("1d", ["--last", "1d"]),
    ("7d", ["--last", "7d"]),
    ("30d", ["--last", "30d"]),
    ("90d", ["--last", "90d"]),
    ("365d", ["--last", "365d"]),
    ("30d, group-by day", ["--last", "30d", "--group-by", "day"]),
    ("365d, project id given", ["--last", "365d", "--project-id", fakecloud.DEMO_PROJECT_ID]),
]
COMMON = ["--timezone", "UTC", "--format", "json", "-q"]


class RunFailed(Exception):
    pass


# ---------------------------------------------------------------------------
# Running the script
# ---------------------------------------------------------------------------


@dataclass
class Runner:
    env: dict[str, str]
    cwd: str

    def run(self, argv: list[str], *, python_args: tuple[str, ...] = (), script: bool = True
            ) -> tuple[float, float, subprocess.CompletedProcess[str]]:
        """(perf_counter seconds, monotonic start, completed process); raises RunFailed."""
        cmd = [sys.executable, *python_args, *([str(SCRIPT)] if script else []), *argv]
        started_mono = time.monotonic()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=self.env, cwd=self.cwd, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise RunFailed(f"{' '.join(cmd)}\n  timed out after {RUN_TIMEOUT_S:g} s\n{stderr}") from None
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RunFailed(f"{' '.join(cmd)}\n  exit code {proc.returncode}; stderr:\n{proc.stderr}")
        return elapsed, started_mono, proc


def parse_json_stdout(proc: subprocess.CompletedProcess[str], argv: list[str]) -> dict:
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise RunFailed(f"{' '.join(argv)}: stdout is not JSON: {proc.stdout[:200]!r}\nstderr:\n{proc.stderr}") \
            from None
    if not isinstance(doc, dict) or doc.get("schema_version") != 1:
        raise RunFailed(f"{' '.join(argv)}: unexpected JSON document: {proc.stdout[:200]!r}")
    return doc


@dataclass
class Measurement:
    label: str
    argv: list[str]
    runs: int
    times: list[float] = field(default_factory=list)
    maas: list[int] = field(default_factory=list)
    iam: list[int] = field(default_factory=list)
    other: list[int] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    max_in_flight: list[int] = field(default_factory=list)
    first_request: list[float] = field(default_factory=list)  # s after process start
    last_request: list[float] = field(default_factory=list)  # arrival of the last request
    maas_spread: list[float] = field(default_factory=list)  # first -> last MaaS arrival
    planned: int | None = None  # ShowStatistics calls planned by --dry-run

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @staticmethod
    def _one(values: list[int]) -> str:
        distinct = sorted(set(values))
        return str(distinct[0]) if len(distinct) == 1 else "/".join(map(str, distinct))

    @property
    def requests(self) -> str:
        return f"{self._one(self.maas)}+{self._one(self.iam)}"

    @property
    def round_trips(self) -> int:
        return max(self.maas, default=0) + max(self.iam, default=0)


def measure(cloud: fakecloud.FakeCloud, runner: Runner, label: str, argv: list[str], runs: int,
            planned: int | None) -> Measurement:
    m = Measurement(label, argv, runs, planned=planned)
    runner.run(argv)  # warm-up (file cache, .pyc of the dependencies, the fake's TLS session)
    for _ in range(runs):
        cloud.clear_log()
        cloud.reset_max_in_flight()
        connections_before = cloud.connection_count
        elapsed, started, proc = runner.run(argv)
        parse_json_stdout(proc, argv)
        log = cloud.log
        m.times.append(elapsed)
        m.maas.append(sum(e.kind == "maas" for e in log))
        m.iam.append(sum(e.kind == "iam" for e in log))
        m.other.append(sum(e.kind == "other" for e in log))
        bad = [e for e in log if e.status != 200]
        if bad:
            raise RunFailed(f"{' '.join(argv)}: the fake answered {[(e.kind, e.status) for e in bad]}")
        m.connections.append(cloud.connection_count - connections_before)
        m.max_in_flight.append(cloud.max_in_flight)
        if log:
            arrivals = [e.at - started for e in log]
            m.first_request.append(min(arrivals))
            m.last_request.append(max(arrivals))
            maas_at = [e.at for e in log if e.kind == "maas"]
            m.maas_spread.append(max(maas_at) - min(maas_at) if maas_at else 0.0)
    return m


def planned_calls(runner: Runner, argv: list[str]) -> int:
    _, _, proc = runner.run([*argv, "--dry-run"])
    doc = parse_json_stdout(proc, argv)
    return len(doc.get("requests", []))


# ---------------------------------------------------------------------------
# -X importtime
# ---------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)\s*$")


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """[(module, self us, cumulative us, depth)] in the order printed."""
    rows = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            depth = (len(match.group(3)) - 1) // 2 if match.group(3) else 0
            rows.append((match.group(4), int(match.group(1)), int(match.group(2)), depth))
    return rows


@dataclass
class ImportReport:
    argv: list[str]
    heavy_found: dict[str, list[str]]
    own_total_us: float  # median over runs of the summed self time of the script's own imports
    own_count: int
    top: list[tuple[str, float, float]]  # (module, median self us, median cumulative us)


def import_report(runner: Runner, argv: list[str], runs: int) -> ImportReport:
    _, _, base = runner.run(["-c", "pass"], python_args=("-X", "importtime"), script=False)
    baseline = {name for name, *_ in parse_importtime(base.stderr)}
    runner.run(argv, python_args=("-X", "importtime"))  # warm-up
    per_module_self: dict[str, list[int]] = {}
    per_module_cum: dict[str, list[int]] = {}
    totals: list[int] = []
    heavy_found: dict[str, list[str]] = {}
    own_modules: set[str] = set()
    for _ in range(runs):
        _, _, proc = runner.run(argv, python_args=("-X", "importtime"))
        rows = parse_importtime(proc.stderr)
        if not rows:
            raise RunFailed("python -X importtime printed nothing parsable")
        own = [r for r in rows if r[0] not in baseline]
        totals.append(sum(r[1] for r in own))
        for name, self_us, cum_us, _ in own:
            own_modules.add(name)
            per_module_self.setdefault(name, []).append(self_us)
            per_module_cum.setdefault(name, []).append(cum_us)
        for name, *_ in rows:
            top_level = name.split(".", 1)[0]
            if top_level in HEAVY_MODULES:
                heavy_found.setdefault(top_level, [])
                if name not in heavy_found[top_level]:
                    heavy_found[top_level].append(name)
    top = sorted(((n, statistics.median(per_module_self[n]), statistics.median(per_module_cum[n]))
                  for n in own_modules), key=lambda t: -t[1])[:10]
    return ImportReport(argv, heavy_found, statistics.median(totals), len(own_modules), top)


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def render_table(headers: list[str], rows: list[list[str]], markdown: bool, align: str) -> str:
    """align: one 'l' or 'r' per column."""
    if markdown:
        sep = ["---:" if a == "r" else "---" for a in align]
        lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def heading(text: str, markdown: bool) -> str:
    return f"\n### {text}\n" if markdown else f"\n{text}\n{'=' * len(text)}"


def f3(x: float) -> str:
    return f"{x:.3f}"


HOSTILE_FAULTS: list[tuple[str, dict]] = [
    ("none (a healthy answer)", {}),
    ("trickle_headers", {"interval": 0.5}),
    ("trickle_body", {"interval": 0.5}),
    ("endless_chunked", {}),
    ("oversized", {"size": 64 * 1024 * 1024}),
    ("gzip_bomb", {"inflated": 2_500_000_000}),
    ("echo_secret", {"encoding": "cut"}),
    # Valid answers of 1 MiB (MAX_BODY_BYTES) in each shape: parsing them must stay within the bound too.
    ("1 MiB answers: one long string", {"kind": "json", "body": None, "shape": "string"}),
    ("1 MiB answers: numbers", {"kind": "json", "body": None, "shape": "numbers"}),
    ("1 MiB answers: tiny objects", {"kind": "json", "body": None, "shape": "objects"}),
    # The same with --raw, which keeps each answer (as its JSON text) to print it: its memory follows
    # the output's size, which holds every answer, indented.
    ("1 MiB answers: one long string, --raw", {"kind": "json", "body": None, "shape": "string", "raw": True}),
    ("1 MiB answers: tiny objects, --raw", {"kind": "json", "body": None, "shape": "objects", "raw": True}),
]


def mib_answer(shape: str) -> str:
    """A valid ShowStatistics answer of about 1 MiB whose extra field is one string, numbers or
    empty objects (the costliest shape to parse)."""
    head = ('{"total_request_count": 10, "total_error_count": 1, "total_token": 12.5, "total_prompt_token": 10.0,'
            ' "total_completion_token": 2.5, "total_completion_tasks": 0, "total_infer_count": 0, "extra": ')
    room = 1024 * 1024 - len(head) - 2
    filler = {"string": '"' + "x" * (room - 2) + '"', "numbers": "[" + ",".join(["0"] * (room // 2)) + "]",
              "objects": "[" + ",".join(["{}"] * (room // 3)) + "]"}[shape]
    return head + filler + "}"
HOSTILE_ARGV = ["--last", "365d", "--timezone", "UTC", "--format", "json", "--timeout", "3", "--retries", "1"]


def high_water_kb(pid: int) -> int:
    """VmHWM, the peak resident set of the process since its exec (getrusage's ru_maxrss of a
    child would also count the parent's pages it started from)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def run_measured(cmd: list[str], env: dict[str, str], cwd: str, address_space: int | None = None
                 ) -> tuple[int, float, float, str]:
    """(exit code, wall seconds, peak RSS in MB sampled every 10 ms, stderr) of one run of ``cmd``;
    ``address_space``: its RLIMIT_AS in bytes (a run that would take the machine's memory fails instead)."""
    def limit() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True,
                                preexec_fn=limit if address_space else None)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, high_water_kb(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - started
        err.seek(0)
        return proc.returncode, wall, peak_kb / 1024, err.read()


def hostile(markdown: bool) -> int:
    """Peak RSS (VmHWM, sampled every 10 ms; Linux) and wall time of a 365-day run against each hostile server:
    every window of the run meets the fault (the memory bound must hold per request and in sum)."""
    rows = []
    fakecloud.gzip_bomb_body(2_500_000_000)  # built once, before the clock starts
    with tempfile.TemporaryDirectory(prefix="maas-bench-home-") as home, fakecloud.FakeCloud(tls=True) as cloud:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8",
               **cloud.client_env()}
        for label, params in HOSTILE_FAULTS:
            cloud.reset()
            params = dict(params)
            kind = params.pop("kind", label)
            raw = ["--raw"] if params.pop("raw", False) else []
            if "shape" in params:
                params["body"] = mib_answer(params.pop("shape"))
            if params or label != HOSTILE_FAULTS[0][0]:
                cloud.add_fault(kind, times=1000, **params)
            code, wall, peak_mb, stderr = run_measured([sys.executable, str(SCRIPT), *HOSTILE_ARGV, *raw], env, home)
            last = (stderr.strip().splitlines() or [""])[-1]
            rows.append((label, code, wall, peak_mb, last[:70]))
    header = ("server", "exit", "wall s", "peak RSS MB", "last stderr line")
    line = (lambda cells: "| " + " | ".join(cells) + " |") if markdown else (lambda cells: "  ".join(cells))
    print(line(header))
    if markdown:
        print(line(["---"] * len(header)))
    for label, code, wall, peak, last in rows:
        print(line([label, str(code), f"{wall:.1f}", f"{peak:.1f}", last]))
    return 0 if all(peak < 100 or label.endswith("--raw") for label, _, _, peak, _ in rows) else 1


# ---------------------------------------------------------------------------
# --ces-memory: peak memory of a Cloud Eye run per model and key (issue 20)
# ---------------------------------------------------------------------------

CES_MEMORY_GRID = (50, 20)  # model services, API keys per model service
CES_MEMORY_DAYS = 150
CES_MEMORY_CAP_GB = 12.0  # the run's RLIMIT_AS: above it the run fails rather than take the machine's memory
# The script run through main() with a clock whose waits return at once and move its monotonic time
# on by their length: pacing (200 requests a minute) costs no wall time. Nothing else changes: the
# requests, their order within each wave of 16, the answers and what the run keeps of them.
NO_WAIT_MAIN = """
import sys, threading, time
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
import maas_rest_usage_stats as script

class NoWaitClock:
    def __init__(self):
        self.skipped, self.lock = 0.0, threading.Lock()
    def now(self):
        return datetime.now(timezone.utc)
    def monotonic(self):
        with self.lock:
            return time.monotonic() + self.skipped
    def sleep(self, seconds):
        with self.lock:
            self.skipped += max(0.0, seconds)

sys.exit(script.main(sys.argv[2:], clock=NoWaitClock()))
"""


def ces_memory(markdown: bool, python: str, grid: tuple[int, int], days: int, paced: bool, cap_gb: float) -> int:
    """Peak RSS (VmHWM) of ``--last DAYSd --group-by model api-key`` against the in-process fake with
    the grid dataset: every model service called with every key in every hour, so that Cloud Eye has a
    datapoint in every hour of every series (the most such a run can receive)."""
    def progress(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    models, keys = grid
    argv = ["--last", f"{days}d", "--group-by", "model", "api-key", "--timezone", "UTC", "--format", "json", "-q",
            "--max-requests", "100000"]
    now_ms = int(time.time() * 1000)
    end_ms = (now_ms // fakecloud.HOUR_MS + 2) * fakecloud.HOUR_MS
    progress(f"building {days + 2} days of the grid dataset ({models} models x {keys} keys, every hour) ...")
    events = tuple(fakecloud.grid_events(end_ms - (days + 2) * fakecloud.DAY_MS, end_ms, models, keys))
    with tempfile.TemporaryDirectory(prefix="maas-bench-home-") as home, \
            fakecloud.FakeCloud(tls=True, events=events) as cloud:
        progress(f"{len(events):,} events; indexing them as Cloud Eye holds them ...")
        series = len(cloud.index.cloud_eye.series)  # built now, not in the first request's handler
        del events
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8",
               **cloud.client_env()}
        cmd = [python, str(SCRIPT), *argv] if paced else [python, "-c", NO_WAIT_MAIN, str(SCRIPT.parent), *argv]
        progress(f"{series:,} series; running {' '.join(argv)} ({'paced' if paced else 'waits skipped'}, "
                 f"RLIMIT_AS {cap_gb:g} GB)")
        cloud.clear_log()
        code, wall, peak_mb, stderr = run_measured(cmd, env, home, int(cap_gb * 1024 ** 3))
        log = cloud.log
    counts: dict[str, int] = {}
    for entry in log:
        counts[entry.kind] = counts.get(entry.kind, 0) + 1
    if code != 0:
        print(f"bench: the run failed (exit {code}):\n{stderr[-3000:]}", file=sys.stderr)
    requests_text = ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items()))
    print(f"Machine: {platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()}. "
          f"In-process fake on loopback (no lab), grid dataset {models} x {keys}, "
          + ("paced as usual." if paced else "pacing waits skipped (NoWaitClock)."))
    if markdown:
        print()
    print(render_table(["memory (no lab)", "peak RSS (VmHWM)", "wall", "requests", "exit"],
                       [["`" + " ".join(argv[:5]) + "`" + f" ({models} models x {keys} keys, every hour)",
                         f"{peak_mb:.1f} MB", f"{wall:.1f} s", f"{sum(counts.values()):,} ({requests_text})",
                         str(code)]], markdown, "lrrrr"))
    return 0 if code == 0 else 1


# ---------------------------------------------------------------------------
# --rtt: real round trips through ../shared/tools/rtt-lab (root, Linux)
# ---------------------------------------------------------------------------

RTT_LAB_DEFAULT = HERE.parent.parent / "shared" / "tools" / "rtt-lab" / "rtt-lab"
RTT_MS = (100, 300)
RTT_RUNS = 5
# (label, script arguments, physical floor in round trips from the rtt-lab README's model, goal for k)
RTT_SCENARIOS: list[tuple[str, list[str], int, float]] = [
    ("7 days (IAM lookup)", ["--from", "2026-11-24", "--to", "2026-12-01"], 4, 4.3),
    ("365 days (IAM lookup)", ["--from", "2025-12-01", "--to", "2026-12-01"], 4, 4.3),
    ("365 days, `--project-id`", ["--from", "2025-12-01", "--to", "2026-12-01",
                                  "--project-id", fakecloud.DEMO_PROJECT_ID], 4, 4.3),
    ("30 days `--group-by day` (IAM lookup)", ["--from", "2026-11-01", "--to", "2026-12-01",
                                               "--group-by", "day"], 5, 5.3),
    # Cloud Eye (issue 20): IAM 3R while the Cloud Eye (and monitor, MaaS) connections open, ListMetrics
    # (one call a metric) and the names call together 1R, then 1R per wave of 16 data calls (with the
    # reconciliation's ShowStatistics windows in the same wave). 4 models: 24 series. Asia/Shanghai
    # (the runs' zone unless one names its own): 30 days of daily sums with 4-hour and hourly edges;
    # its days start at 16:00 UTC, so day rows take 4-hour sums; UTC days take daily sums.
    ("Cloud Eye `--last 30d --group-by model` (4 models: 6 ListMetrics, then 11 data calls)",
     ["--last", "30d", "--group-by", "model"], 5, 5.3),
    ("Cloud Eye `--last 29d --group-by model` (the same, reconciled: + ShowStatistics in the data wave)",
     ["--last", "29d", "--group-by", "model"], 5, 5.3),
    ("Cloud Eye `--last 150d --group-by day model` (4-hour sums, 1.3 MB: 16 data calls)",
     ["--last", "150d", "--group-by", "day", "model"], 6, 6.3),
    ("Cloud Eye `--last 150d --group-by day model --timezone UTC` (daily sums: 15 data calls)",
     ["--last", "150d", "--group-by", "day", "model", "--timezone", "UTC"], 6, 6.3),
]
# The lab's fakes, one per production host (the script keeps one connection pool per host): the port
# and the variable that points the script at it. All serve the same grid dataset: 4 model services
# with 3 keys each, called every hour for 160 days, so Cloud Eye and ShowStatistics reconcile.
LAB_HOSTS: dict[str, tuple[int, str]] = {
    "maas": (8443, "HW_MAAS_ENDPOINT"),
    "iam": (8444, "HW_IAM_ENDPOINT"),
    "ces": (8445, "HW_CES_ENDPOINT"),
    "monitor": (8446, "HW_MAAS_MONITOR_ENDPOINT"),
}
LAB_DATASET = ["--dataset", "grid", "--grid", "4x3", "--hourly-days", "160"]
# What each request is, from the path in a fake's --verbose line.
LAB_CALLS = (("/v3/projects", "IAM projects"), ("show-statistics", "ShowStatistics"), ("/metrics", "ListMetrics"),
             ("batch-query-metric-data", "batch data"), ("monitor/instances", "names"))
RTT_TZ = ["--timezone", "Asia/Shanghai"]
PACED_ARGV = ["--from", "2026-01-01", "--to", "2026-08-05", "--group-by", "day", *RTT_TZ, "-q"]
PACED_RTT_MS = 300
PACED_LIMIT = 200
PACING_SLACK = 0.05  # the paced run may take at most 5 % above 60 s + 4 RTT
RSS_ARGV = ["--last", "365d", "--group-by", "day", "--timezone", "UTC", "--format", "json", "-q"]
RSS_GOAL_MB = 60.0
_TIME_LINE = re.compile(r"^RTT\s+([\d.]+) ms: median ([\d.]+) s")
_FIT_LINE = re.compile(r"^fit: (-?[\d.]+) round trips per run \+ (-?[\d.]+) s")
_ARRIVALS_LINE = re.compile(r"most in any rolling [\d.]+ s: (\d+)(?: and (\d+))?")


class LabError(Exception):
    pass


def _lab(lab: list[str], *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*lab, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"rtt-lab {' '.join(args)}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def _wait_for(path: Path, text: str, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.2)
    raise LabError(f"{path}: no {text!r} after {timeout:g} s; it says:\n{content[-2000:]}")


def peak_rss_run(python: str, markdown: bool) -> tuple[float, float, int]:
    """(peak VmHWM MB, wall s, exit code) of one RSS_ARGV run against the in-process fake (no lab),
    VmHWM sampled every 10 ms while it lasts."""
    now_ms = int(time.time() * 1000)
    end_ms = (now_ms // fakecloud.HOUR_MS + 2) * fakecloud.HOUR_MS
    events = tuple(fakecloud.hourly_events(end_ms - DATASET_DAYS * 24 * fakecloud.HOUR_MS, end_ms))
    with tempfile.TemporaryDirectory(prefix="maas-bench-home-") as home, \
            fakecloud.FakeCloud(tls=True, events=events) as cloud:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8",
               **cloud.client_env()}
        code, wall, peak_mb, stderr = run_measured([python, str(SCRIPT), *RSS_ARGV], env, home)
        if code != 0:
            print(f"bench: the RSS run failed (exit {code}):\n{stderr[-2000:]}", file=sys.stderr)
    return peak_mb, wall, code


def _times(values: list[float]) -> str:
    """Times in round trips, equal ones (to 0.1 R) counted: ``0.0, 2.5 (x8)``."""
    counts: dict[str, int] = {}
    for value in sorted(values):
        counts[f"{value:.1f}"] = counts.get(f"{value:.1f}", 0) + 1
    return ", ".join(t + (f" (x{n})" if n > 1 else "") for t, n in counts.items()) or "-"


def timeline(logs: Path, packets: Path, rtt_s: float) -> list[list[str]]:
    """Per host: the connections the run opened (client SYNs in the delay line's packet log) and the
    arrival of each kind of request at its fake (the --stamp time of its --verbose line, written as
    the answer goes out), in round trips from the run's first SYN. The packet log's times are
    CLOCK_MONOTONIC, as time.monotonic(); the stamps are epoch seconds."""
    epoch_minus_monotonic = time.time() - time.monotonic()
    ports = {port: name for name, (port, _) in LAB_HOSTS.items()}
    syns: dict[str, list[float]] = {name: [] for name in LAB_HOSTS}
    for line in packets.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[1] == "0" and fields[4] == "02":
            name = ports.get(int(fields[3].rsplit(":", 1)[1]))
            if name is not None:
                syns[name].append(float(fields[0]))
    if not any(syns.values()):
        raise LabError(f"no SYN in the packet log {packets}")
    t0 = min(t for found in syns.values() for t in found)
    rows = []
    for name in LAB_HOSTS:
        arrivals: dict[str, list[float]] = {}
        for line in (logs / f"{name}.log").read_text(errors="replace").splitlines():
            stamp, _, rest = line.partition(" ")
            call = next((what for part, what in LAB_CALLS if part in rest and '"' in rest), None)
            if call is None:
                continue
            try:
                arrivals.setdefault(call, []).append((float(stamp) - epoch_minus_monotonic - t0) / rtt_s)
            except ValueError:
                continue
        if syns[name] or arrivals:
            rows.append([f"{name} (:{LAB_HOSTS[name][0]})", str(len(syns[name])),
                         _times([(t - t0) / rtt_s for t in syns[name]]),
                         "; ".join(f"{call}: {_times(found)}" for call, found in arrivals.items()) or "-"])
    return rows


def rtt(markdown: bool, lab_path: str, python: str, skip_rss: bool) -> int:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        print("bench: --rtt needs Linux and root (rtt-lab creates network namespaces)", file=sys.stderr)
        return 2
    if not os.access(lab_path, os.X_OK):
        print(f"bench: rtt-lab not found at {lab_path} (use --rtt-lab PATH)", file=sys.stderr)
        return 2
    lab = [sys.executable, lab_path] if lab_path.endswith(".py") else [lab_path]

    def progress(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    bench_started = time.perf_counter()
    results: list[tuple[str, int, float, dict[int, float], float]] = []
    paced: dict[str, float | int | str] = {}
    with tempfile.TemporaryDirectory(prefix="maas-bench-rtt-") as tmp:
        logs = Path(tmp)
        os.chmod(tmp, 0o755)
        home = logs / "home"
        home.mkdir()
        maas_log, envfile, packets = logs / "maas.log", logs / "env", logs / "packets"
        timelines: list[tuple[str, list[list[str]]]] = []
        try:
            progress(f"rtt-lab up --rtt-ms {PACED_RTT_MS}")
            _lab(lab, "down", check=False)
            _lab(lab, "up", "--rtt-ms", str(PACED_RTT_MS), "--lifetime", "1800")
            fake = [python, str(HERE / "fakecloud.py"), "--host", "0.0.0.0", *LAB_DATASET]
            for name, (port, _) in LAB_HOSTS.items():
                _lab(lab, "server", "--bg", str(logs / f"{name}.log"), "--stamp", "--", *fake, "--port", str(port),
                     "--verbose")
            texts = [_wait_for(logs / f"{name}.log", "Press Ctrl-C", 120) for name in LAB_HOSTS]
            env_lines = [f"{m.group(1)}={m.group(2)}"
                         for m in re.finditer(r"export (HW_[A-Za-z0-9_]+)=(\S+)", texts[0])
                         if not m.group(1).endswith("_ENDPOINT")]
            cas = re.findall(r"export REQUESTS_CA_BUNDLE=(\S+)", "".join(texts))
            if len(cas) != len(LAB_HOSTS) or not env_lines:
                raise LabError(f"cannot read the fakes' environment from their logs in {logs}")
            (logs / "ca.pem").write_text("".join(Path(c).read_text() for c in cas))
            env_lines += [f"{var}=https://localhost:{port}" for port, var in LAB_HOSTS.values()]
            env_lines += [f"REQUESTS_CA_BUNDLE={logs / 'ca.pem'}", f"HOME={home}", "LANG=C.UTF-8"]
            envfile.write_text("\n".join(env_lines) + "\n")

            for label, argv, floor, goal in RTT_SCENARIOS:
                progress(f"rtt-lab time --rtt-ms {','.join(map(str, RTT_MS))} -n {RTT_RUNS}: {label}")
                proc = _lab(lab, "time", "--rtt-ms", ",".join(map(str, RTT_MS)), "-n", str(RTT_RUNS),
                            "--env", str(envfile), "--", python, str(SCRIPT), *RTT_TZ, *argv)
                medians = {int(float(m.group(1))): float(m.group(2))
                           for m in map(_TIME_LINE.match, proc.stdout.splitlines()) if m}
                fit = next((m for m in map(_FIT_LINE.match, proc.stdout.splitlines()) if m), None)
                if fit is None or len(medians) != len(RTT_MS):
                    raise LabError(f"cannot read rtt-lab time's output:\n{proc.stdout}")
                progress(proc.stdout.strip().replace("\n", "\n       "))
                results.append((label, floor, goal, medians, float(fit.group(1))))

            progress(f"paced run at RTT {PACED_RTT_MS} ms: {' '.join(PACED_ARGV)}")
            _lab(lab, "up", "--rtt-ms", str(PACED_RTT_MS))
            time.sleep(0.5)
            maas_log.write_text("")  # the fake keeps appending
            t0 = time.perf_counter()
            proc = _lab(lab, "client", "--env", str(envfile), "--", python, str(SCRIPT), *PACED_ARGV,
                        timeout=300, check=False)
            paced["wall"] = time.perf_counter() - t0
            if proc.returncode != 0:
                raise LabError(f"the paced run failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            time.sleep(0.5)
            proc = _lab(lab, "arrivals", str(maas_log), "--match", "show-statistics", "--limit",
                        str(PACED_LIMIT), check=False)
            progress(proc.stdout.strip())
            m = _ARRIVALS_LINE.search(proc.stdout)
            total = re.match(r"(\d+) requests over", proc.stdout)
            if not m or not total:
                raise LabError(f"cannot read rtt-lab arrivals' output:\n{proc.stdout}{proc.stderr}")
            paced["requests"] = int(total.group(1))
            paced["most"] = int(m.group(2) or m.group(1))
            paced["arrivals_ok"] = int(proc.returncode == 0)

            # One run of each Cloud Eye scenario with the delay line's packet log: when each host's
            # connections open (SYNs) and when each request reaches its fake.
            _lab(lab, "up", "--rtt-ms", str(PACED_RTT_MS), "--packet-log", str(packets))
            time.sleep(0.5)
            for label, argv, _, _ in RTT_SCENARIOS:
                if "model" not in argv:
                    continue
                progress(f"timeline at RTT {PACED_RTT_MS} ms with the packet log: {label}")
                for name in LAB_HOSTS:
                    (logs / f"{name}.log").write_text("")
                packets.write_text("")
                proc = _lab(lab, "client", "--env", str(envfile), "--", python, str(SCRIPT), *RTT_TZ, *argv,
                            timeout=120, check=False)
                if proc.returncode != 0:
                    raise LabError(f"{label}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
                time.sleep(0.5)
                timelines.append((label, timeline(logs, packets, PACED_RTT_MS / 1000)))
        except (LabError, subprocess.TimeoutExpired) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        finally:
            down = _lab(lab, "down", check=False)
            progress("rtt-lab down: " + " / ".join(down.stdout.strip().splitlines()[-2:]))

    rss: tuple[float, float, int] | None = None
    if not skip_rss:
        progress(f"peak RSS (no lab): {' '.join(RSS_ARGV)}")
        rss = peak_rss_run(python, markdown)

    # -- report --------------------------------------------------------------
    ok = True
    out = [f"Machine: {platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()}. "
           f"rtt-lab delay line, one fake per host (MaaS :8443, IAM :8444, Cloud Eye :8445, MaaS monitor :8446), "
           f"each with `{' '.join(LAB_DATASET)}`; "
           f"median of {RTT_RUNS} runs after 1 warm-up per RTT; k fitted from the two medians."]
    if markdown:
        out.append("")
    rows = []
    for label, floor, goal, medians, k in results:
        met = k <= goal
        ok &= met
        rows.append([label, *(f"{medians[r]:.3f} s" for r in RTT_MS), f"{k:.2f}", str(floor),
                     f"<= {goal:g} " + ("met" if met else "MISSED")])
    out.append(render_table(["run", *(f"median at {r} ms" for r in RTT_MS), "round trips k", "floor",
                             "goal"], rows, markdown, "lrrrrl"))
    out.append("")
    floor_s = 60 + 4 * PACED_RTT_MS / 1000
    wall = float(paced["wall"])
    within = wall <= floor_s * (1 + PACING_SLACK)
    most_ok = int(paced["most"]) <= PACED_LIMIT and bool(paced["arrivals_ok"])
    ok &= within and most_ok
    rows = [[f"{paced['requests']} day buckets at {PACED_RTT_MS} ms (`" + " ".join(PACED_ARGV) + "`)",
             f"{wall:.1f} s", f"{floor_s:.1f} s ({'within' if within else 'NOT within'} "
             f"{PACING_SLACK:.0%}: {(wall / floor_s - 1) * 100:+.1f} %)",
             f"{paced['most']} ({'met' if most_ok else 'MISSED'}, limit {PACED_LIMIT})"]]
    out.append(render_table(["paced run", "wall", "pacing floor 60 s + 4 RTT", "most arrivals in 60 s"],
                            rows, markdown, "lrrr"))
    for label, rows in timelines:
        out.append("")
        out.append(f"Timeline at {PACED_RTT_MS} ms, one run: {label} (times in round trips from the first SYN; "
                   "arrival = when the fake answered, 0.5 R before the client has the answer)")
        if markdown:
            out.append("")
        out.append(render_table(["host", "connections", "SYNs at", "requests arrived at"], rows, markdown, "lrll"))
    if rss is not None:
        out.append("")
        peak_mb, rss_wall, code = rss
        met = code == 0 and peak_mb < RSS_GOAL_MB
        ok &= met
        out.append(render_table(["memory (no lab)", "peak RSS (VmHWM)", "wall", "goal"],
                                [["`" + " ".join(RSS_ARGV) + "`", f"{peak_mb:.1f} MB", f"{rss_wall:.1f} s",
                                  f"< {RSS_GOAL_MB:g} MB " + ("met" if met else "MISSED")
                                  + ("" if code == 0 else f" (exit {code})")]], markdown, "lrrl"))
    out.append(f"\nBenchmark wall time: {time.perf_counter() - bench_started:.0f} s. "
               + ("All goals met." if ok else "A goal was MISSED."))
    print("\n".join(out))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.3,
                        help="seconds the fake cloud waits before each answer (default 0.3)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per configuration (default 5)")
    parser.add_argument("--markdown", action="store_true", help="GitHub-markdown tables instead of plain text")
    parser.add_argument("--hostile", action="store_true",
                        help="instead: peak memory and time of a 365-day run against each hostile server")
    parser.add_argument("--rtt", action="store_true",
                        help="instead: wall time and fitted round trips across a real delay line (rtt-lab; "
                             "root, Linux), arrivals of a paced run, the Cloud Eye runs' timelines from the packet log, "
                             "peak RSS of a 365-day day-grouped run")
    parser.add_argument("--rtt-lab", default=str(RTT_LAB_DEFAULT), help=f"with --rtt: the tool (default {RTT_LAB_DEFAULT})")
    parser.add_argument("--python", default=sys.executable,
                        help="with --rtt: the interpreter for the script and the fakes (default: this one)")
    parser.add_argument("--no-rss", action="store_true", help="with --rtt: skip the peak-RSS run")
    parser.add_argument("--ces-memory", action="store_true",
                        help="instead: peak memory of --last DAYSd --group-by model api-key against the grid "
                             "dataset (every model with every key in every hour; in-process fake, no lab)")
    parser.add_argument("--grid", default="x".join(map(str, CES_MEMORY_GRID)), metavar="MODELSxKEYS",
                        help="with --ces-memory: model services and keys per model service (default "
                             f"{'x'.join(map(str, CES_MEMORY_GRID))})")
    parser.add_argument("--days", type=int, default=CES_MEMORY_DAYS,
                        help=f"with --ces-memory: the run's --last in days (default {CES_MEMORY_DAYS})")
    parser.add_argument("--paced", action="store_true",
                        help="with --ces-memory: run the script as is, paced at 200 requests a minute "
                             "(default: its waits skipped, which changes no request and no answer)")
    parser.add_argument("--memory-cap-gb", type=float, default=CES_MEMORY_CAP_GB,
                        help=f"with --ces-memory: the run's address-space limit (default {CES_MEMORY_CAP_GB:g} GB)")
    args = parser.parse_args(argv)
    if args.ces_memory:
        found = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", args.grid)
        if found is None or not 1 <= args.days <= 155:
            parser.error("--grid must be MODELSxKEYS and --days from 1 to 155")
        return ces_memory(args.markdown, args.python, (int(found.group(1)), int(found.group(2))), args.days,
                          args.paced, args.memory_cap_gb)
    if args.hostile:
        return hostile(args.markdown)
    if args.rtt:
        return rtt(args.markdown, args.rtt_lab, args.python, args.no_rss)
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be between 1 and 50")
    if not 0 < args.latency <= 5:
        parser.error("--latency must be in (0, 5] seconds")
    if not SCRIPT.is_file():
        parser.error(f"{SCRIPT} not found")
    heavy_runs = min(args.runs, HEAVY_RUNS)
    md = args.markdown

    def progress(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    bench_started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    end_ms = (now_ms // fakecloud.HOUR_MS + 2) * fakecloud.HOUR_MS
    progress(f"building {DATASET_DAYS} days of hourly fake usage ...")
    events = tuple(fakecloud.hourly_events(end_ms - DATASET_DAYS * 24 * fakecloud.HOUR_MS, end_ms))

    with tempfile.TemporaryDirectory(prefix="maas-bench-home-") as home, \
            fakecloud.FakeCloud(tls=True, latency=args.latency, events=events) as cloud:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "LANG": os.environ.get("LANG", "C.UTF-8"), **cloud.client_env()}
        runner = Runner(env, home)
        try:
            # -- scenarios ---------------------------------------------------
            results: dict[tuple[str, str], Measurement] = {}
            for label, scenario_argv in SCENARIOS:
                base_argv = [*scenario_argv, *COMMON]
                planned = planned_calls(runner, base_argv)
                for mode, extra in (("concurrent", []), ("sequential", ["--concurrency", "1"])):
                    full = [*base_argv, *extra]
                    iam = 0 if "--project-id" in full else 1
                    heavy = mode == "sequential" and planned + iam >= HEAVY_ROUND_TRIPS
                    runs = heavy_runs if heavy else args.runs
                    progress(f"{label:24} {mode:10} {planned + iam:3} requests x {runs} runs (+1 warm-up)")
                    results[(label, mode)] = measure(cloud, runner, label, full, runs, planned)

            # -- fixed start-up cost -------------------------------------------
            startup: list[tuple[str, float]] = []
            for label, s_argv, is_script in (
                ("python -c pass (interpreter floor)", ["-c", "pass"], False),
                ("--version", ["--version"], True),
                ("--help", ["--help"], True),
                ("--dry-run --last 365d (json)", ["--dry-run", "--last", "365d", *COMMON], True),
            ):
                progress(f"start-up: {label}")
                runner.run(s_argv, script=is_script)
                cloud.clear_log()
                times = [runner.run(s_argv, script=is_script)[0] for _ in range(args.runs)]
                if cloud.log:
                    raise RunFailed(f"{label} sent {len(cloud.log)} request(s); it must not touch the network")
                startup.append((label, statistics.median(times)))

            # -- import time ---------------------------------------------------
            progress("python -X importtime ... --version")
            imports = import_report(runner, ["--version"], args.runs)
            progress("python -X importtime ... --dry-run --last 365d")
            imports_dry = import_report(runner, ["--dry-run", "--last", "365d", *COMMON], args.runs)
        except RunFailed as exc:
            print(f"bench: a run failed:\n{exc}", file=sys.stderr)
            return 1
    total_s = time.perf_counter() - bench_started

    # -- report --------------------------------------------------------------
    out: list[str] = []
    lat = args.latency
    out.append(f"Machine: {platform.platform()}; {os.cpu_count()} CPUs; Python {platform.python_version()} "
               f"({platform.python_implementation()}). Fake cloud over HTTPS on 127.0.0.1 with "
               f"{lat:g} s injected latency per request (one round trip = RTT = {lat:g} s). "
               f"Median of {args.runs} runs after 1 warm-up"
               + (f" ({heavy_runs} for sequential configs of {HEAVY_ROUND_TRIPS}+ requests, marked *)."
                  if heavy_runs < args.runs else "."))
    if md:
        out.append("")
    seven = results[("7d", "concurrent")].median
    rows = []
    for label, _ in SCENARIOS:
        conc, seq = results[(label, "concurrent")], results[(label, "sequential")]
        req = conc.requests if conc.requests == seq.requests else f"{conc.requests} / {seq.requests}"
        star = "*" if seq.runs < args.runs else ""
        rows.append([label, req, f3(conc.median), f3(seq.median) + star, f"{seq.median / conc.median:.2f}x",
                     f"{conc.median / seven:.2f}", f"{conc.median / lat:.2f}", f"{seq.median / lat:.2f}"])
    out.append(render_table(
        ["scenario", "requests (MaaS+IAM)", "median s (concurrent)", "median s (sequential, concurrency 1)",
         "speed-up", "ratio to 7d (concurrent)", "RTTs (concurrent)", "RTTs (sequential)"],
        rows, md, "lrrrrrrr"))
    notes = ["RTTs = median / latency.  Requests counted from the fake's log: ShowStatistics + IAM project lookup."]
    if heavy_runs < args.runs:
        notes.append(f"* {heavy_runs} timed runs only (sequential, {HEAVY_ROUND_TRIPS}+ requests), "
                     "to keep a default run under ~3 minutes.")
    out += ["", *notes]

    out.append(heading("Where the time goes (median over runs, seconds from process start)", md))
    diag_rows = []
    for label, _ in SCENARIOS:
        for mode in ("concurrent", "sequential"):
            m = results[(label, mode)]
            tail = [t - last for t, last in zip(m.times, m.last_request)]
            diag_rows.append([
                label, mode, str(m.planned), m.requests, Measurement._one(m.connections),
                Measurement._one(m.max_in_flight), f3(statistics.median(m.first_request)),
                f3(statistics.median(m.maas_spread)), f3(statistics.median(m.last_request)),
                f3(statistics.median(tail) - lat), f3(m.median),
            ])
    out.append(render_table(
        ["scenario", "mode", "planned calls", "requests", "TLS conns", "max in flight", "1st request at",
         "MaaS arrival spread", "last request at", "tail after last answer", "wall"],
        diag_rows, md, "llrrrrrrrrr"))
    out += ["", ("1st request at: process start -> first request received by the fake (start-up, argument "
                 "parsing, imports, signing, TCP+TLS handshake). MaaS arrival spread: first -> last "
                 "ShowStatistics arrival. Tail: from the last request's arrival minus one latency (its "
                 "answer) to process exit.")]

    out.append(heading("Fixed start-up cost (no network)", md))
    floor = startup[0][1]
    out.append(render_table(["command", "median s", "minus interpreter floor"],
                            [[label, f3(t), "-" if i == 0 else f3(t - floor)] for i, (label, t) in enumerate(startup)],
                            md, "lrr"))

    out.append(heading("python -X importtime maas_rest_usage_stats.py --version", md))
    for rep in (imports, imports_dry):
        what = " ".join(rep.argv)
        found = ", ".join(f"{k} ({len(v)} modules)" for k, v in rep.heavy_found.items()) or "none"
        verdict = "OK" if not rep.heavy_found else ("FAIL" if rep.argv == ["--version"] else "note")
        out.append(f"- `{what}`: heavy packages imported ({', '.join(HEAVY_MODULES)}): {found} -> {verdict}; "
                   f"the script's own imports: {rep.own_count} modules, {rep.own_total_us / 1000:.1f} ms "
                   f"(median summed self time, modules not loaded by `python -c pass`).")
    out.append("")
    out.append("Top 10 slowest imports for `--version` (median self time):")
    if md:
        out.append("")
    out.append(render_table(["module", "self ms", "cumulative ms"],
                            [[n, f"{s / 1000:.2f}", f"{c / 1000:.2f}"] for n, s, c in imports.top], md, "lrr"))

    out.append(heading("Checks", md))
    checks = []
    r365, r365p = results[("365d", "concurrent")], results[("365d, project id given", "concurrent")]
    for key, m in results.items():
        if m.planned is not None and max(m.maas) != m.planned or len(set(m.maas)) > 1:
            checks.append(f"- {key}: ShowStatistics requests {sorted(set(m.maas))} != planned {m.planned}")
    for label, r in (("365d", r365), ("365d, project id given", r365p)):
        ratio = r.median / seven
        checks.append(f"- {label} concurrent / 7d concurrent = {ratio:.2f} "
                      + ("(ANOMALY: above " if ratio > RATIO_ALERT else "(within ") + f"{RATIO_ALERT}x)")
    if imports.heavy_found:
        checks.append(f"- FAIL: --version imports {', '.join(imports.heavy_found)}")
    out.append("\n".join(checks))
    out.append(f"\nBenchmark wall time: {total_s:.0f} s.")
    print("\n".join(out))
    return 1 if imports.heavy_found else 0


if __name__ == "__main__":
    sys.exit(main())
