"""A request's log lines: the flow's own and those of the functions its nodes call.

The gateway tags every line with the function that wrote it and, when the call carried one,
the flow's request id (the engine sends ``X-Faas-Flow-Reqid`` on each function call). Lines
carry no node: a line of a function only one node calls is that node's; a line of a function
several nodes call names them all; the flow's own lines (modifiers, aggregators, the engine)
belong to no node, and the page says so rather than guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from faasflow_tower.client import GatewayClient
from faasflow_tower.pages import esc, q
from faasflow_tower.plan import Plan

__all__ = ["LogLine", "RequestLogs", "gather", "logs_section", "logs_table"]

#: Lines the request page shows (the newest); the logs page shows every kept line.
SHOWN = 50


@attrs.frozen
class LogLine:
    timestamp: str
    function: str
    text: str
    nodes: tuple[str, ...]
    """The labels of the nodes that call ``function``; empty for the flow's own lines."""


@attrs.frozen
class RequestLogs:
    lines: tuple[LogLine, ...]
    functions: tuple[str, ...]
    """Every function whose lines were read (the flow first)."""


def callers(plan: Plan) -> dict[str, tuple[str, ...]]:
    """Function name -> labels of the nodes calling it."""
    found: dict[str, list[str]] = {}
    for v in plan.vertices:
        for fn in v.functions:
            if v.label not in found.setdefault(fn, []):
                found[fn].append(v.label)
    return {fn: tuple(labels) for fn, labels in found.items()}


def gather(client: GatewayClient, plan: Plan, flow: str, rid: str,
           authorization: str | None) -> RequestLogs:
    by_fn = callers(plan)
    functions = (flow, *sorted(f for f in by_fn if f != flow))
    with ThreadPoolExecutor(max_workers=min(4, len(functions))) as pool:
        answers = list(pool.map(lambda fn: client.logs(fn, authorization), functions))
    lines: list[LogLine] = []
    for fn, docs in zip(functions, answers, strict=True):
        for doc in docs:
            if doc.get("request_id") != rid:
                continue
            lines.append(LogLine(str(doc.get("timestamp") or ""), str(doc.get("name") or fn),
                                 str(doc.get("text") or "").rstrip("\n"),
                                 () if fn == flow else by_fn.get(fn, ())))
    # RFC 3339 in UTC with a fixed width sorts as text
    lines.sort(key=lambda line: line.timestamp)
    return RequestLogs(tuple(lines), functions)


def logs_table(lines: Sequence[LogLine]) -> str:
    rows = "".join(
        f'<tr class="log-line" data-function="{esc(line.function)}" '
        f'data-nodes="{esc(" ".join(line.nodes))}"><td class="nowrap mono">'
        f"{esc(line.timestamp[11:23] or line.timestamp)}</td><td>{esc(line.function)}</td>"
        f"<td>{esc(', '.join(line.nodes)) or '<span class=muted>flow</span>'}</td>"
        f"<td><pre>{esc(line.text)}</pre></td></tr>" for line in lines)
    return ('<table id="logs"><thead><tr><th>time</th><th>function</th><th>node</th>'
            f"<th>line</th></tr></thead><tbody>{rows}</tbody></table>")


def logs_section(base: str, flow: str, rid: str, logs: RequestLogs) -> str:
    """The request page's Logs part: the newest lines and a link to all of them."""
    link = f'{base}/flows/{q(flow)}/requests/{q(rid)}/logs'
    note = ('<p class="muted">The node column is the node that calls the function; the flow\'s '
            "own lines (modifiers, aggregators, the engine) carry no node, so per-node "
            "attribution is not available for them.</p>")
    if not logs.lines:
        return (f'<h2>Logs</h2><p class="muted" id="logs-empty">no line tagged with this '
                f"request in the logs of {esc(', '.join(logs.functions))}</p>")
    shown = logs.lines[-SHOWN:]
    more = f"the last {len(shown)} of {len(logs.lines)} lines · " \
        if len(logs.lines) > len(shown) else ""
    return (f'<h2>Logs</h2><p class="muted">{more}<a id="logs-link" href="{link}">'
            f"all lines of this request</a></p>{note}{logs_table(shown)}")


def per_node(logs: RequestLogs) -> Mapping[str, int]:
    """Node label -> lines laid at its door (only lines of a function one node calls)."""
    counts: dict[str, int] = {}
    for line in logs.lines:
        if len(line.nodes) == 1:
            counts[line.nodes[0]] = counts.get(line.nodes[0], 0) + 1
    return counts
