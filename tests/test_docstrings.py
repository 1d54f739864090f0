"""The examples in docstrings run as written: each module's ``>>>`` examples pass as doctests."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tests.conftest import ROOT as PROJECT_ROOT

PACKAGES = ("runtime", "export", "trainer", "benchmarks")


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                names.append(".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts))
    return names


def test_some_modules_have_examples() -> None:
    assert "runtime.cli_support" in _modules_with_examples()


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has '>>>' but no example doctest could find"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
