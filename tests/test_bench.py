"""
The benchmarks in bench/ are run by hand, not by the suite; this keeps
them loadable, so a change to what they import breaks here, not on the
day someone measures.
"""

import glob
import os
import runpy

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.parametrize("script", sorted(glob.glob(os.path.join(BENCH, "*.py"))))
def test_a_bench_script_loads(script):
    """Each script imports what it uses (it is not run: run_name is not __main__)."""
    namespace = runpy.run_path(script, run_name="bench")
    assert callable(namespace["main"])
