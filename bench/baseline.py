"""The in-process workloads on the code issue 17 measured, beside today's, in one run:
`python bench/baseline.py [--rev f031332] [--rounds 3] [--repeat 5]`.

Issue 17 set its in-process goals in milliseconds, from figures measured on a faster machine
than the one a run may find. The floors (`bench/workloads.py --floors`) scale a goal by how
much slower this machine's HTTP calls and SQLite writes are; this benchmark scales it by the
engine itself: the code of the revision the issue measured (``--rev``, taken with
``git archive``) and the working tree's run the same W1-W3 workloads alternately, in the same
harness (`bench/workloads.py`), ``--rounds`` times each. The speed-up between them says what
the optimisations bought on any machine, and each goal becomes a speed-up to reach: the issue's
figure divided by the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from workloads import GOALS, units

ROOT = Path(__file__).resolve().parent.parent
#: The revision whose peer run (docs/benchmarks.md, 2026-12-01 22:46 UTC) issue 17's table
#: repeats on an idle machine: every optimisation for the issue came after it.
ISSUE_REVISION = "f031332"
#: Issue 17's table, the faasflow in-process rows (ms per step / branch / leaf).
ISSUE_FIGURES = {
    "memory": {"W1 10": 0.055, "W1 100": 0.044, "W2 100": 0.062, "W2 1000": 0.058,
               "W3 10x10": 0.071},
    "sqlite": {"W1 10": 0.125, "W1 100": 0.097, "W2 100": 0.95, "W2 1000": 0.76,
               "W3 10x10": 0.94},
}


def unpack(rev: str, into: Path) -> Path:
    """The ``faasflow`` package of ``rev`` under ``into`` (importable from there)."""
    archive = into / "faasflow.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "-C", str(ROOT), "archive", rev, "faasflow"], stdout=out,
                       check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def imported_from(env: dict[str, str]) -> str:
    # -P: not the working directory first on the path (the checkout holds a faasflow too)
    code = "import faasflow; print(faasflow.__file__)"
    found = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True,
                           text=True, check=True, cwd=ROOT)
    return found.stdout.strip()


def measure(env: dict[str, str], repeat: int) -> dict[str, dict[str, list[float]]]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "workloads.py"), "--json", "--repeat",
         str(repeat), "--only", "memory", "--only", "sqlite"],
        env=env, capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if done.returncode:
        raise SystemExit(f"bench/workloads.py failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.splitlines()[-1])["faasflow"]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default=ISSUE_REVISION,
                        help=f"the revision to compare with (default {ISSUE_REVISION})")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FAASFLOW_")}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {"then": {}, "now": {}}
    with tempfile.TemporaryDirectory(prefix="faasflow-baseline-") as tmp:
        then_dir = unpack(args.rev, Path(tmp))
        then_env = dict(base_env, PYTHONPATH=str(then_dir))
        now_env = dict(base_env, PYTHONPATH=str(ROOT))
        for label, env, where in (("then", then_env, then_dir), ("now", now_env, ROOT)):
            found = imported_from(env)
            if not found.startswith(str(where)):
                raise SystemExit(f"the {label} run would import faasflow from {found}")
        for _ in range(args.rounds):  # alternately: the machine's drift falls on both
            for label, env in (("then", then_env), ("now", now_env)):
                for deployment, results in measure(env, args.repeat).items():
                    for workload, times in results.items():
                        samples[label].setdefault(deployment, {}).setdefault(
                            workload, []).extend(times)
    per = units()

    def ms(label: str, deployment: str, workload: str) -> float:
        return statistics.median(samples[label][deployment][workload]) / per[workload] * 1e3

    print(f"ms per unit, median of {args.rounds} x {args.repeat} requests each, alternating; "
          f"then = {args.rev}, now = the working tree")
    for deployment, results in samples["now"].items():
        cells = [f"{w} {ms('then', deployment, w):.3f} -> {ms('now', deployment, w):.3f} "
                 f"({ms('then', deployment, w) / ms('now', deployment, w):.1f}x)"
                 for w in results]
        print(f"{deployment:<8} " + "  ".join(cells))
    for deployment, workload, goal in GOALS:
        figure = ISSUE_FIGURES[deployment][workload]
        bought = ms("then", deployment, workload) / ms("now", deployment, workload)
        needed = figure / goal
        verdict = "met" if bought >= needed else "not met"
        print(f"goal     {deployment} {workload}: issue 17's {figure:g} ms to <= {goal:g} needs "
              f"{needed:.2f}x; bought {bought:.2f}x here (on issue 17's machine "
              f"{figure / bought:.3f} ms): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
