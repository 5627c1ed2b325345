"""
The benchmarks in bench/ are run by hand, not by the suite; this keeps
them loadable, so a change to what they import breaks here, not on the
day someone measures. bench/perf.py, issue 10's one command, is also run
on a tiny workload: it must finish and print every row of its table.
"""

import glob
import os
import runpy
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")


@pytest.mark.parametrize("script", sorted(glob.glob(os.path.join(BENCH, "*.py"))))
def test_a_bench_script_loads(script):
    """Each script imports what it uses (it is not run: run_name is not __main__)."""
    namespace = runpy.run_path(script, run_name="bench")
    assert callable(namespace["main"])


#: The first words of every row bench/perf.py prints, in order.
PERF_ROWS = [
    "fan-out CPU/delivery, 1 sub ",
    "fan-out CPU/delivery, 10 subs ",
    "fan-out CPU/delivery, 100 subs ",
    "latency 5x50x5, whole run ",
    "latency 5x50x5, steady 2nd half ",
    "ingest, fsync ",
    "RSS/idle connection, 100 ",
    "RSS/idle connection, 200 ",
    "replay since=0, 20,000 events ",
    "replay RSS growth ",
    "prompt -> prompt.started ",
    "CLI result -> prompt.finished ",
]


@pytest.mark.integration
def test_perf_quick_prints_every_row():
    """
    C{python bench/perf.py --quick} runs claudews and the floor on tiny
    workloads and prints the machine, then one table with every row (one
    ingest row per fsync policy). Its figures are not checked: no timed
    assertions here.
    """
    from claudews.history import FSYNC_POLICIES

    done = subprocess.run(
        [sys.executable, os.path.join(BENCH, "perf.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("machine:"), out
    assert "claudews: git " in out, out
    table = [line for line in out.splitlines() if line[:1] not in ("", "-", " ")]
    starts = [row for row in PERF_ROWS if any(line.startswith(row) for line in table)]
    assert starts == PERF_ROWS, out
    for policy in FSYNC_POLICIES:
        assert any(line.startswith("ingest, fsync %s" % (policy,)) for line in table), out
    # Every row has a figure for claudews and says whether its target was met.
    rows = [line for line in table if line.startswith(tuple(PERF_ROWS))]
    assert len(rows) == len(PERF_ROWS) - 1 + len(FSYNC_POLICIES), out
    for line in rows:
        assert " met " in line or " MISSED " in line or "  -  " in line, line
