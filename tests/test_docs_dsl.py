"""Every ``python`` code block of docs/dsl.md runs as written (each asserts its own result)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "dsl.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    text = DOC.read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        heading = re.findall(r"^#+ (.+)$", text[: match.start()], re.M)
        found.append((f"line {line}: {heading[-1] if heading else 'top'}", match.group(1)))
    return found


def test_the_guide_has_examples():
    assert len(blocks()) >= 20


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_example_runs(where, code):
    namespace = {"__name__": f"docs_dsl_example_{where.split(':')[0].replace(' ', '_')}"}
    exec(compile(code, f"{DOC}:{where}", "exec"), namespace)
