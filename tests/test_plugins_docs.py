"""The plugin docs stay true: snippets match the example plugin's files, every built-in backend
and hook is mentioned."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from faasflow.backends import Kind
from faasflow.plugins import Registry, make_plugin_manager
from faasflow.settings import Settings

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs" / "plugins"
BLOCK = re.compile(r"```(?:python|toml)\n# (docs/examples/\S+)\n(.*?)```", re.DOTALL)


def snippets():
    for page in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(page.read_text()):
            yield pytest.param(match.group(1), match.group(2), id=f"{page.name}:{match.group(1)}")


def test_the_walkthrough_has_snippets():
    assert len(list(snippets())) >= 5


@pytest.mark.parametrize(("path", "snippet"), list(snippets()))
def test_snippet_is_copied_from_the_example(path, snippet):
    source = (ROOT / path).read_text()
    assert snippet in source, f"a snippet of docs/plugins no longer matches {path}"


@pytest.mark.parametrize("kind", list(Kind))
def test_every_hook_is_named_in_the_walkthrough(kind):
    assert f"`{kind.hook}()`" in (DOCS / "writing-a-backend.md").read_text()


def test_every_builtin_backend_is_listed_on_the_index():
    index = (DOCS / "index.md").read_text()
    registry = Registry(make_plugin_manager(Settings(), load_entrypoints=False))
    for entry in registry.all():
        assert f"`{entry.name}`" in index, entry.name
