"""The OpenFaaS template as a deployment would run it: a copy of template/faasflow with a
handler, its real entry point (``python index.py``: gunicorn) behind the watchdog stand-in."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

from faasflow.testing.watchdog import Watchdog

TEMPLATE = Path(__file__).resolve().parent.parent / "template" / "faasflow"

#: A DAG with a fan-out (start -> squares, count), a foreach (squares) and an aggregator (join).
DAG = """
    def split(data):
        return {str(i): part for i, part in enumerate(data.split(b","))}


    def define(flow, context):
        dag = flow.dag()
        dag.node("start").modify(lambda data: data.strip())
        squares = dag.foreach_branch(
            "squares", split,
            aggregator=lambda results: b",".join(results[k] for k in sorted(results, key=int)),
        )
        squares.node("square").modify(lambda data: str(int(data) ** 2))
        dag.node("count").modify(lambda data: str(len(data.split(b","))))
        dag.node("join", aggregator=lambda inputs: inputs["squares"] + b"|" + inputs["count"])
        dag.node("done").modify(lambda data: b"result=" + data)
        dag.edge("start", "squares")
        dag.edge("start", "count")
        dag.edge("squares", "join")
        dag.edge("count", "join")
        dag.edge("join", "done")
"""


def function_dir(root: Path, handler: str) -> Path:
    """What ``faas-cli build`` puts in the image: the template with ``function/handler.py``."""
    app = root / "app"
    shutil.copytree(TEMPLATE, app)
    (app / "function" / "handler.py").write_text(textwrap.dedent(handler).lstrip())
    return app


def function_env(**variables: str) -> dict[str, str]:
    """A function's environment: the interpreter running the tests as ``python``, and only
    the variables given (nothing of this process's FAASFLOW_* leaks in)."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(variables)
    return env


def watchdog(app: Path, env: Mapping[str, str], *args: str) -> Watchdog:
    """The function's container: the watchdog stand-in starting ``python index.py``."""
    return Watchdog(["python", "index.py", *args], cwd=app, env=env, exec_timeout=120)
