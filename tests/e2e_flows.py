"""The stack the end-to-end backend tests deploy on the local gateway: flows and functions.

Handlers are written to a stack directory with the journal file and the gate directory baked in:
flow code runs in the gateway's worker processes, which cannot share Python objects with the
test, so every node that matters appends one JSON line ``[event, request id, pid, *extra]`` to
the journal (``O_APPEND``: lines from several processes never interleave), and nodes that must
wait for the test (or for each other) poll files in the gate directory.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

#: Branches of the fan-in flow; they finish at the same instant (a barrier), so their
#: completions race on the join counter. At most the gateway's concurrency.
FAN_IN_WIDTH = 4
#: Parallel branches of the failing flow, all failing at the same instant.
FAILING_WIDTH = 2
#: Branches the held iteration hands on to (held while the request is paused).
HELD_BRANCHES = ("a", "b", "c")

PRELUDE = '''
import json
import os
import pathlib
import time

JOURNAL = {journal!r}
GATES = pathlib.Path({gates!r})


def note(event, request_id, *extra):
    """Append one journal line: which node ran, for which request, in which process."""
    line = json.dumps([event, request_id, os.getpid(), *extra]) + "\\n"
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def wait_until(check, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{{what}} did not happen within {{timeout:.0f}}s")
        time.sleep(0.005)


def gate(request_id):
    """Block until the test opens the gate of this request."""
    wait_until(lambda: (GATES / request_id).exists(), f"the test opening gate {{request_id}}")


def barrier(request_id, name, parties):
    """Block until ``parties`` branches of this request reached the barrier."""
    here = GATES / (request_id + ".barrier")
    here.mkdir(exist_ok=True)
    (here / name).touch()
    wait_until(lambda: len(os.listdir(here)) >= parties,
               f"{{parties}} branches of {{request_id}} at the barrier")
'''

FLOWS = {
    # five nodes, two of them calls of python3-http functions through the gateway
    "chain": '''
def define(flow, context):
    dag = flow.dag()
    dag.node("n1").apply("upper")
    dag.node("n2").modify(lambda d: d + b"-2")
    dag.node("n3").apply("reverse")
    dag.node("n4").modify(lambda d: d + b"-4")
    dag.node("n5").modify(lambda d: (note("chain-end", context.request_id), d + b"-5")[1])
    for a, b in (("n1", "n2"), ("n2", "n3"), ("n3", "n4"), ("n4", "n5")):
        dag.edge(a, b)
''',
    # branches that complete at the same instant into one aggregating join
    "fanin": f'''
WIDTH = {FAN_IN_WIDTH}


def define(flow, context):
    dag = flow.dag()
    dag.node("start").modify(lambda d: d + b"!")
    dag.node("join", aggregator=lambda found: aggregate(context, found)).modify(
        lambda d: (note("join", context.request_id, d.decode()), d)[1]
    )
    for i in range(WIDTH):
        dag.node(f"b{{i}}").modify(lambda d, i=i: branch(context, i, d))
        dag.edge("start", f"b{{i}}")
        dag.edge(f"b{{i}}", "join")
    flow.finally_(lambda state: note("finally", context.request_id, state))


def branch(context, i, data):
    barrier(context.request_id, f"b{{i}}", WIDTH)
    note("branch", context.request_id, f"b{{i}}")
    return data + str(i).encode()


def aggregate(context, found):
    note("aggregate", context.request_id, sorted(found))
    return b",".join(found[key] for key in sorted(found))
''',
    # a foreach inside a foreach, aggregated at both levels: "abc|12" -> "A1A2|B1B2|C1C2"
    "nested": '''
def define(flow, context):
    dag = flow.dag()
    dag.node("start").modify(lambda d: d)
    outer = dag.foreach_branch(
        "outer", split_letters, aggregator=lambda found: join(context, "outer", b"|", found)
    )
    inner = outer.foreach_branch(
        "inner", split_digits, aggregator=lambda found: join(context, "inner", b"", found)
    )
    inner.node("leaf").modify(lambda d: leaf(context, d))
    dag.edge("start", "outer")


def split_letters(data):
    letters, digits = data.decode().split("|")
    return {letter: f"{letter}|{digits}" for letter in letters}


def split_digits(data):
    letter, digits = data.decode().split("|")
    return {digit: letter + digit for digit in digits}


def leaf(context, data):
    note("leaf", context.request_id, data.decode())
    return data.upper()


def join(context, level, separator, found):
    note(level, context.request_id, list(found))
    return separator.join(found[key] for key in sorted(found))
''',
    # an iteration the test holds in a gate, then hands on to three branches and a join
    "held": f'''
BRANCHES = {HELD_BRANCHES!r}


def define(flow, context):
    dag = flow.dag()
    dag.node("n1").modify(lambda d: d)
    dag.node("hold").modify(lambda d: hold(context, d))
    dag.node("join", aggregator=lambda found: b"".join(found[k] for k in sorted(found)))
    dag.node("end").modify(lambda d: (note("end", context.request_id), d)[1])
    dag.edge("n1", "hold")
    for name in BRANCHES:
        dag.node(name).modify(lambda d, name=name: ran(context, name, d))
        dag.edge("hold", name)
        dag.edge(name, "join")
    dag.edge("join", "end")
    flow.on_failure(lambda error: note("on_failure", context.request_id, str(error)))
    flow.finally_(lambda state: note("finally", context.request_id, state))


def hold(context, data):
    note("hold-entered", context.request_id)
    gate(context.request_id)
    note("hold-left", context.request_id)
    return data


def ran(context, name, data):
    note("branch", context.request_id, name)
    return data + name.encode()
''',
    # parallel branches that fail at the same instant
    "failing": f'''
WIDTH = {FAILING_WIDTH}


def define(flow, context):
    dag = flow.dag()
    dag.node("n1").modify(lambda d: d)
    dag.node("join", aggregator=lambda found: b"".join(found.values()))
    for i in range(WIDTH):
        dag.node(f"f{{i}}").modify(lambda d, i=i: explode(context, i))
        dag.edge("n1", f"f{{i}}")
        dag.edge(f"f{{i}}", "join")
    flow.on_failure(lambda error: note("on_failure", context.request_id, str(error)))
    flow.finally_(lambda state: note("finally", context.request_id, state))


def explode(context, i):
    barrier(context.request_id, f"f{{i}}", WIDTH)
    note("exploding", context.request_id, f"f{{i}}")
    raise ValueError(f"branch f{{i}} failed on purpose")
''',
    # fan-out, fan-in, a function call and a context value: what concurrent requests share
    "mix": '''
def define(flow, context):
    dag = flow.dag()
    dag.node("start").modify(lambda d: remember(context, d)).apply("upper")
    dag.node("left").modify(lambda d: d + b"<")
    dag.node("right").apply("reverse")
    dag.node("join", aggregator=lambda found: found["left"] + b"|" + found["right"])
    dag.node("end").modify(lambda d: d + b"|" + context.get("input"))
    for a, b in (("start", "left"), ("start", "right"), ("left", "join"), ("right", "join"),
                 ("join", "end")):
        dag.edge(a, b)


def remember(context, data):
    context.set("input", data)
    return data
''',
}

FUNCTIONS = {
    "upper": """
def handle(event, context):
    return event.body.upper()
""",
    "reverse": """
def handle(event, context):
    return event.body[::-1]
""",
}


def flow_name(role: str, suffix: str) -> str:
    """The function (and so flow) name of ``role`` in one test session's stack: unique, so
    sessions sharing the etcd of .ci/services never meet in a namespace."""
    return f"e2e-{role}-{suffix}"


def write_stack(
    root: Path, journal: Path, gates: Path, suffix: str,
    flow_environment: Mapping[str, str] | None = None,
) -> Path:
    """Write the handlers and a stack.yml under ``root``; return the stack file.

    ``flow_environment`` becomes each flow's ``environment:`` in stack.yml (how one flow of a
    stack gets its own backends)."""
    prelude = PRELUDE.format(journal=str(journal), gates=str(gates))
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    for role, source in FLOWS.items():
        name = flow_name(role, suffix)
        (root / name).mkdir(parents=True)
        (root / name / "handler.py").write_text(prelude + textwrap.dedent(source))
        lines += [f"  {name}:", "    lang: faasflow", f"    handler: ./{name}"]
        if flow_environment:
            lines.append("    environment:")
            # JSON strings are YAML strings: no value is read as a number or a boolean
            lines += [f"      {key}: {json.dumps(value)}" for key, value in
                      flow_environment.items()]
    for name, source in FUNCTIONS.items():
        (root / name).mkdir(parents=True)
        (root / name / "handler.py").write_text(textwrap.dedent(source).lstrip())
        lines += [f"  {name}:", "    lang: python3-http", f"    handler: ./{name}"]
    stack = root / "stack.yml"
    stack.write_text("\n".join(lines) + "\n")
    return stack
