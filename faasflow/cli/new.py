"""``faasflow new``: scaffold a flow (or python3-http function) handler and its stack.yml entry."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

__all__ = ["register"]

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

FLOW_HANDLER = '''"""{name}: a faasflow flow.

`faasflow run {name} -d "some data"` runs it here; `faasflow up` serves it with the rest of the
stack. To deploy it to OpenFaaS, fetch the faasflow template once with
`faas-cli template pull <faasflow repository URL>` (it holds template/faasflow), then
`faas-cli up`.
"""


def define(flow, context):
    dag = flow.dag()
    dag.node("prepare").modify(lambda data: data.strip())
    dag.node("finish").modify(lambda data: data.decode().upper())
    dag.edge("prepare", "finish")
'''

HTTP_HANDLER = '''"""{name}: a python3-http function."""


def handle(event, context):
    return {{"statusCode": 200, "body": event.body.decode()}}
'''

STACK_HEAD = """# faasflow up serves these functions here. For OpenFaaS, first
# `faas-cli template pull <faasflow repository URL>` (the faasflow template), then `faas-cli up`.
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080

functions:
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "new",
        help="scaffold a flow handler and add it to stack.yml",
        description=(
            "Create <name>/handler.py (a flow's define(flow, context), or with --lang "
            "python3-http a handle(event, context)) next to the stack file, and add the "
            "function to the stack file (created when missing). Exit codes: 0 created, 2 bad "
            "name or the function exists already."
        ),
    )
    parser.add_argument("name", help="function name: lower-case letters, digits and '-'")
    parser.add_argument("--lang", choices=("faasflow", "python3-http"), default="faasflow",
                        help="faasflow (a flow, default) or python3-http (a plain function)")
    parser.add_argument("-f", "--file", default="stack.yml",
                        help="the stack file to add the function to (default stack.yml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from faasflow.cli import EXIT_USAGE
    from faasflow.runtime.client import fail

    name = args.name
    if not _NAME.match(name):
        return fail(f"invalid function name {name!r}: use lower-case letters, digits and '-', "
                    "starting and ending with a letter or digit (at most 63)", EXIT_USAGE)
    stack = Path(args.file)
    text = stack.read_text() if stack.exists() else ""
    if text:
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            return fail(f"{stack} is not valid YAML: {exc}", EXIT_USAGE)
        if not isinstance(doc, dict):
            return fail(f"{stack} is not a stack file (no mapping at its top)", EXIT_USAGE)
        functions = doc.get("functions") or {}
        if name in functions:
            return fail(f"{stack} already has a function {name!r}", EXIT_USAGE)
    directory = stack.parent / name
    if directory.exists():
        return fail(f"{directory} exists already; pick another name or remove it", EXIT_USAGE)
    directory.mkdir(parents=True)
    template = FLOW_HANDLER if args.lang == "faasflow" else HTTP_HANDLER
    (directory / "handler.py").write_text(template.format(name=name))
    (directory / "requirements.txt").write_text("")
    labels = '    labels:\n      faas-flow: "1"\n' if args.lang == "faasflow" else ""
    entry = f"  {name}:\n    lang: {args.lang}\n    handler: ./{name}\n    image: {name}:latest\n" \
        + labels
    updated = _add_entry(text, entry)
    if updated is None:  # an unusual layout: rewrite the file, losing its comments
        doc = yaml.safe_load(text) if text.strip() else {}
        doc = doc if isinstance(doc, dict) else {}
        functions = doc.get("functions")
        functions = functions if isinstance(functions, dict) else {}
        functions[name] = yaml.safe_load(entry)[name]
        doc["functions"] = functions
        updated = yaml.safe_dump(doc, sort_keys=False)
    stack.write_text(updated)
    print(f"created {directory / 'handler.py'}")
    print(f"added {name} ({args.lang}) to {stack}")
    ignored = _ignore_data_dir(stack.parent / ".gitignore")
    if ignored:
        print(ignored)
    if args.lang == "faasflow":
        print(f"try: faasflow run {name} -f {stack} -d 'hello'")
    print("for OpenFaaS: faas-cli template pull <faasflow repository URL>, then faas-cli up")
    return 0


def _ignore_data_dir(gitignore: Path) -> str:
    """Keep ``.faasflow/`` (the local gateway's queue, state and signing key) out of git."""
    text = gitignore.read_text() if gitignore.exists() else ""
    entries = {line.strip().rstrip("/").lstrip("/") for line in text.splitlines()}
    if ".faasflow" in entries:
        return ""
    separator = "\n" if text and not text.endswith("\n") else ""
    gitignore.write_text(f"{text}{separator}# faasflow up: queue, request state, signing key\n"
                         ".faasflow/\n")
    return f"{'added .faasflow/ to' if text else 'created'} {gitignore}"


def _add_entry(text: str, entry: str) -> str | None:
    """Add a function entry, keeping the file's comments and layout; None when the layout is
    one this cannot edit in place."""
    if not text.strip():
        return STACK_HEAD + entry
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^functions:\s*(#.*)?$", line)),
                 None)
    if start is None:
        if re.search(r"^functions:", text, re.MULTILINE):
            return None  # e.g. `functions: {}`
        return text.rstrip("\n") + "\n\nfunctions:\n" + entry
    end = len(lines)
    for i in range(start + 1, len(lines)):
        if lines[i].strip() and not lines[i][0].isspace() and not lines[i].startswith("#"):
            end = i  # the next top-level key
            break
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    before = "".join(lines[:end])
    if not before.endswith("\n"):
        before += "\n"
    after = "".join(lines[end:])
    return before + "\n" + entry + ("\n" + after.lstrip("\n") if after.strip() else "")
