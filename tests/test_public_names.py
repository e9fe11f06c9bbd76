"""Each public class name means one thing across faasflow's public modules."""

from __future__ import annotations

import importlib

import faasflow

PUBLIC = [
    "faasflow", "faasflow.codecs", "faasflow.context", "faasflow.dsl", "faasflow.engine",
    "faasflow.engine.records", "faasflow.errors", "faasflow.export", "faasflow.flow",
    "faasflow.graph", "faasflow.interfaces", "faasflow.operations", "faasflow.results",
    "faasflow.runtime.client", "faasflow.runtime.python3http", "faasflow.runtime.upstream",
    "faasflow.runtime.web", "faasflow.webapps",
]

#: Documented deprecated aliases: the alias name and the class it names.
ALIASES = {"RunResult": "Result", "StartResult": "Result", "Workflow": "FlowBuilder"}


def public_classes() -> dict[str, set[type]]:
    found: dict[str, set[type]] = {}
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type):
                found.setdefault(name, set()).add(value)
    return found


def test_no_two_public_classes_share_a_name() -> None:
    shared = {name: sorted(f"{c.__module__}.{c.__qualname__}" for c in classes)
              for name, classes in public_classes().items() if len(classes) > 1}
    assert shared == {}


def test_a_public_class_is_exported_under_its_own_name_or_a_documented_alias() -> None:
    for name, classes in public_classes().items():
        for cls in classes:
            assert cls.__name__ == name or ALIASES.get(name) == cls.__name__, (name, cls)


def test_the_deprecated_aliases_name_the_same_class() -> None:
    from faasflow.dsl import FlowBuilder, Workflow
    from faasflow.engine import StartResult

    assert Workflow is FlowBuilder
    assert faasflow.RunResult is StartResult is faasflow.Result


def test_the_builder_and_the_compiled_flow_have_distinct_names() -> None:
    from faasflow.dsl import FlowBuilder

    assert FlowBuilder is not faasflow.Flow
    assert "FlowBuilder" in importlib.import_module("faasflow.dsl").__all__
