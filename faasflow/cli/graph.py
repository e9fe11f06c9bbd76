"""``faasflow graph TARGET``: print a flow definition as JSON, Graphviz DOT or Mermaid.

``TARGET`` is written as for every command (see :mod:`faasflow.cli.targets`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from faasflow.cli import EXIT_USAGE
from faasflow.cli.targets import FORMS, TargetError, default_stack_file, resolve
from faasflow.errors import DefinitionError, FaasflowError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="print a flow definition as JSON, Graphviz DOT or Mermaid",
        description=(
            f"Compile the define(flow, context) of TARGET ({FORMS}) and print it. Exit code 2 "
            "when the definition is invalid (the JSON format then prints is-valid: false), 3 "
            "when TARGET names nothing."
        ),
    )
    parser.add_argument("target", help=FORMS)
    parser.add_argument("-f", "--file", default=None,
                        help="stack file whose function names are targets (default: stack.yml "
                             "when present)")
    parser.add_argument(
        "--format",
        choices=("json", "dot", "mermaid"),
        default="json",
        help="output format (default: json, faas-flow's export-dag format extended)",
    )
    parser.add_argument(
        "--name", help="flow name (default: the directory, file or module name)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from faasflow.export import invalid_export, to_dot, to_mermaid
    from faasflow.flow import Flow
    from faasflow.runtime.stack import Stack

    try:
        file = default_stack_file(args.file)
        # a stack file that does not parse only matters when the target may be one of its names
        stack = Stack.load(file) if file is not None and (args.file or _plain(args.target)) \
            else None
        target = resolve(args.target, stack)
    except TargetError as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except FaasflowError as exc:
        print(f"faasflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    define, name = target.define, args.name or target.name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            flow = Flow(define, name=name)
        except DefinitionError as exc:
            if args.format == "json":
                print(json.dumps(invalid_export(name, str(exc)), indent=4))
            print(f"faasflow: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    for warning in caught:
        print(f"faasflow: warning: {warning.message}", file=sys.stderr)
    if args.format == "dot":
        text = to_dot(flow.graph())
    elif args.format == "mermaid":
        text = to_mermaid(flow.graph())
    else:
        text = json.dumps(flow.export(), indent=4) + "\n"
    sys.stdout.write(text)  # a closed pipe (`| head`) is handled by the CLI's main
    return 0


def _plain(target: str) -> bool:
    """Could ``target`` be a function name of a stack file?"""
    return not any(char in target for char in "/\\:.")
