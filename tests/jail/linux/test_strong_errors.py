"""Why the strong jail cannot start, said plainly (unit tests: no root needed)."""

from __future__ import annotations

import shutil

import pytest

from httpjail_py.jail import base


def test_without_root_the_user_is_told_to_use_sudo_or_weak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base.os, "geteuid", lambda: 1000)
    problem = base.strong_jail_problem()
    assert problem is not None and "needs root" in problem and "sudo" in problem and "--weak" in problem


@pytest.mark.parametrize("tool, package", [("nft", "nftables"), ("ip", "iproute2")])
def test_a_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch, tool: str, package: str) -> None:
    real_which = shutil.which
    monkeypatch.setattr(base.os, "geteuid", lambda: 0)
    monkeypatch.setattr(base.shutil, "which", lambda name: None if name == tool else real_which(name))
    problem = base.strong_jail_problem()
    assert problem is not None and f"`{tool}`" in problem and f"apt-get install {package}" in problem


def test_not_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base.sys, "platform", "darwin")
    assert "needs Linux" in (base.strong_jail_problem() or "")


def test_the_cli_says_it_and_exits_2(jail, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # PATH without nft: the strong jail cannot be built, and the user is told why.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "true"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    result = jail.run([], ["true"], weak=False, env={"PATH": str(bin_dir)})
    assert result.returncode == 2
    assert result.stderr.startswith("httpjail: error:")
    assert "nftables" in result.stderr and "Traceback" not in result.stderr
