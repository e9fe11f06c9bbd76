"""Decorators and shortcuts on a DAG, each the same graph as the faas-flow-style calls.

``@dag.modifier("greet", after="fetch")`` is ``dag.node("greet").modify(fn)`` then
``dag.edge("fetch", "greet")``; the others are spelled out in their docstrings. They only call
the long form, so exports, DOT and the definition hash are the same for both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from faasflow.codecs import Codec
from faasflow.errors import DefinitionError

if TYPE_CHECKING:
    from .dags import Dag
    from .nodes import Node

__all__ = ["Aggregator", "Condition", "ForEach", "Forwarder", "Shortcuts"]

#: ``aggregator(inputs) -> data``: inputs keyed by predecessor id or branch key, each decoded
#: by the node's codec (``bytes`` by default); may be ``async def``.
Aggregator = Callable[[dict[str, Any]], Any]
#: ``forwarder(data) -> data``: transforms what one edge carries; may be ``async def``.
Forwarder = Callable[[Any], Any]
#: ``foreach(data) -> {key: data}``: one run of the branch per key; may be ``async def``.
ForEach = Callable[[Any], Any]
#: ``condition(data) -> [key, ...]``: the branches to run; may be ``async def``.
Condition = Callable[[Any], Any]

M = TypeVar("M", bound=Callable[..., Any])


def _sources(after: object, what: str) -> list[str]:
    if after is None:
        return []
    if isinstance(after, str):
        return [after]
    if isinstance(after, bytes) or not isinstance(after, Iterable):
        raise DefinitionError(f"{what}: after= takes a node id or a list of node ids")
    sources: list[Any] = list(after)  # edge() checks each id
    return sources


class Shortcuts:
    """The decorator and shortcut methods of :class:`~faasflow.dsl.Dag`."""

    if TYPE_CHECKING:

        def node(
            self, node_id: str, *, aggregator: Aggregator | None = None,
            codec: Codec | None = None,
        ) -> Node: ...

        def edge(
            self, source: str, target: str, *, forwarder: Forwarder | None = None,
            execution_only: bool = False, codec: Codec | None = None,
        ) -> None: ...

        def foreach_branch(
            self, node_id: str, foreach: ForEach, *, aggregator: Aggregator | None = None,
            execution_only: bool = False,
        ) -> Dag: ...

        def conditional_branch(
            self, node_id: str, conditions: Iterable[str], condition: Condition, *,
            aggregator: Aggregator | None = None, execution_only: bool = False,
        ) -> dict[str, Dag]: ...

    def chain(self, *node_ids: str) -> None:
        """``dag.chain("a", "b", "c")`` is ``dag.edge("a", "b")`` then ``dag.edge("b", "c")``."""
        if len(node_ids) < 2:
            raise DefinitionError(
                f"chain() links two or more node ids in order, got {list(node_ids)!r}"
            )
        for source, target in itertools.pairwise(node_ids):
            self.edge(source, target)

    def modifier(
        self, node_id: str, *, after: str | Iterable[str] | None = None,
        codec: Codec | None = None,
    ) -> Callable[[M], M]:
        """Decorator: ``dag.node(node_id, codec=codec).modify(fn)``, then
        ``dag.edge(a, node_id)`` for each ``a`` in ``after``. Returns ``fn`` unchanged."""

        def register(fn: M) -> M:
            self.node(node_id, codec=codec).modify(fn)
            self._link(after, node_id, f"@modifier({node_id!r})")
            return fn

        return register

    def aggregator(
        self, node_id: str, *, after: str | Iterable[str] | None = None,
        codec: Codec | None = None,
    ) -> Callable[[M], M]:
        """Decorator: ``dag.node(node_id, aggregator=fn, codec=codec)``, then
        ``dag.edge(a, node_id)`` for each ``a`` in ``after`` (the inputs come in that order)."""

        def register(fn: M) -> M:
            self.node(node_id, aggregator=fn, codec=codec)
            self._link(after, node_id, f"@aggregator({node_id!r})")
            return fn

        return register

    def forwarder(
        self, source: str, target: str, *, codec: Codec | None = None
    ) -> Callable[[M], M]:
        """Decorator: ``dag.edge(source, target, forwarder=fn, codec=codec)``."""

        def register(fn: M) -> M:
            self.edge(source, target, forwarder=fn, codec=codec)
            return fn

        return register

    @overload
    def foreach(
        self, node_id: str, split: ForEach, *, after: str | Iterable[str] | None = None,
        aggregator: Aggregator | None = None, execution_only: bool = False,
        codec: Codec | None = None,
    ) -> Dag: ...

    @overload
    def foreach(
        self, node_id: str, split: None = None, *, after: str | Iterable[str] | None = None,
        aggregator: Aggregator | None = None, execution_only: bool = False,
        codec: Codec | None = None,
    ) -> Callable[[ForEach], Dag]: ...

    def foreach(
        self, node_id: str, split: ForEach | None = None, *,
        after: str | Iterable[str] | None = None, aggregator: Aggregator | None = None,
        execution_only: bool = False, codec: Codec | None = None,
    ) -> Dag | Callable[[ForEach], Dag]:
        """``dag.foreach_branch(node_id, split, aggregator=..., execution_only=...)`` (after
        ``dag.node(node_id, codec=codec)`` when a codec is given), then
        ``dag.edge(a, node_id)`` for each ``a`` in ``after``; returns the branch DAG, so
        ``with dag.foreach("each", split) as branch:`` reads as a block. Without ``split`` it
        is a decorator whose result (the name of the decorated function) is the branch DAG."""

        def register(fn: ForEach) -> Dag:
            if codec is not None:
                self.node(node_id, codec=codec)
            branch = self.foreach_branch(
                node_id, fn, aggregator=aggregator, execution_only=execution_only
            )
            self._link(after, node_id, f"foreach({node_id!r})")
            return branch

        return register if split is None else register(split)

    @overload
    def condition(
        self, node_id: str, keys: Iterable[str], choose: Condition, *,
        after: str | Iterable[str] | None = None, aggregator: Aggregator | None = None,
        execution_only: bool = False, codec: Codec | None = None,
    ) -> dict[str, Dag]: ...

    @overload
    def condition(
        self, node_id: str, keys: Iterable[str], choose: None = None, *,
        after: str | Iterable[str] | None = None, aggregator: Aggregator | None = None,
        execution_only: bool = False, codec: Codec | None = None,
    ) -> Callable[[Condition], dict[str, Dag]]: ...

    def condition(
        self, node_id: str, keys: Iterable[str], choose: Condition | None = None, *,
        after: str | Iterable[str] | None = None, aggregator: Aggregator | None = None,
        execution_only: bool = False, codec: Codec | None = None,
    ) -> dict[str, Dag] | Callable[[Condition], dict[str, Dag]]:
        """``dag.conditional_branch(node_id, keys, choose, ...)`` (after
        ``dag.node(node_id, codec=codec)`` when a codec is given), then the edges from
        ``after``; returns the branch DAGs by key. Without ``choose`` it is a decorator whose
        result is that dict."""

        def register(fn: Condition) -> dict[str, Dag]:
            if codec is not None:
                self.node(node_id, codec=codec)
            branches = self.conditional_branch(
                node_id, keys, fn, aggregator=aggregator, execution_only=execution_only
            )
            self._link(after, node_id, f"condition({node_id!r})")
            return branches

        return register if choose is None else register(choose)

    def _link(self, after: str | Iterable[str] | None, node_id: str, what: str) -> None:
        for source in _sources(after, what):
            self.edge(source, node_id)
