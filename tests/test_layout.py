"""Project rules that keep the code navigable (STYLE.md): small modules, and mitmproxy
confined to the proxy package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "httpjail_py"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(module: Path) -> None:
    lines = len(module.read_text().splitlines())
    assert lines <= MAX_LINES, f"{module.name} has {lines} lines; split it (limit {MAX_LINES})"


def _imports(module: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "module",
    [m for m in MODULES if "proxy" not in m.relative_to(PACKAGE).parts],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_only_the_proxy_package_imports_mitmproxy(module: Path) -> None:
    leaked = sorted(n for n in _imports(module) if n.split(".")[0] == "mitmproxy")
    assert not leaked, f"{module.name} imports {leaked}; mitmproxy belongs in httpjail_py/proxy"


def test_ruff_is_clean() -> None:
    # The banned-API rules (no blocking calls in proxy/ and engines/) live in ruff's config.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "httpjail_py", "tests", "scripts"],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "mypy", "httpjail_py"], capture_output=True, text=True, cwd=PACKAGE.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
