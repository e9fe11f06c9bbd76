"""How much slower or faster this machine is than the one issue 17 was measured on:
`python bench/calibrate.py`.

Issue 17 set its in-process goals in microseconds (30 us a chain step, 20 us a branch on memory
stores) beside figures of the code of that day (W1 100: 0.044 ms a step, W2 1000: 0.058 ms a
branch). This script checks that code out (commit ISSUE_COMMIT, into a temporary git worktree),
runs its own bench/workloads.py on memory stores, and measures this run's Python floor
(bench/workloads.py's PYTHON_FLOOR) between its runs. The issue's figures divided by the old
code's figures today say how fast the issue's machine was against this one; that ratio times the
floor is the floor the issue's machine would have measured (ISSUE_PYTHON_WORK in
bench/workloads.py, which scales the goals to the machine of each run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import workloads

ROOT = Path(__file__).resolve().parent.parent
#: The commit of the figures issue 17 quotes, and those figures (ms per unit, memory stores).
ISSUE_COMMIT = "4d3e760"
ISSUE_FIGURES = {"W1 100": 0.044, "W2 1000": 0.058}


def old_figures(worktree: Path, repeat: int) -> dict[str, float]:
    """ms per unit of the issue's code on memory stores, median of ``repeat``."""
    env = dict(os.environ, PYTHONPATH=str(worktree), FAASFLOW_DISABLE_PLUGINS="tower")
    found = subprocess.run(
        [sys.executable, "bench/workloads.py", "--only", "memory", "--json",
         "--repeat", str(repeat)],
        cwd=worktree, env=env, capture_output=True, text=True, check=True,
    )
    times = json.loads(found.stdout.splitlines()[-1])["faasflow"]["memory"]
    per = workloads.units()
    return {w: statistics.median(times[w]) / per[w] * 1e3 for w in ISSUE_FIGURES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    floors: list[float] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="faasflow-calibrate-") as tmp:
        worktree = Path(tmp) / "issue17"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree),
                        ISSUE_COMMIT], cwd=ROOT, check=True)
        try:
            for _ in range(args.rounds):
                floors.append(workloads.median_ms(workloads._python_work(), 300)
                              / workloads.PYTHON_ROUNDS)
                old = old_figures(worktree, args.repeat)
                ratios += [ISSUE_FIGURES[w] / old[w] for w in ISSUE_FIGURES]
                print("issue's code today: " + "  ".join(
                    f"{w} {ms:.3f} ms (issue {ISSUE_FIGURES[w]})" for w, ms in old.items()),
                    flush=True)
            floors.append(workloads.median_ms(workloads._python_work(), 300)
                          / workloads.PYTHON_ROUNDS)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT,
                           check=False)
    floor, speed = statistics.median(floors), statistics.median(ratios)
    print(f"python floor here: {floor * 1e3:.2f} us (median of {len(floors)})")
    print(f"the issue's machine took {speed:.2f}x this machine's time "
          f"(median of {len(ratios)} ratios, {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"its python floor: {floor * speed * 1e3:.2f} us "
          f"(bench/workloads.py ISSUE_PYTHON_WORK = {workloads.ISSUE_PYTHON_WORK * 1e3:.2f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
