"""Shared fixtures: the fake upstream internet, and a way to run the real `httpjail` CLI.

Every test talks only to 127.0.0.1: upstream names (`ok.test`, ...) reach our own servers
through `--resolve`, and their TLS is trusted through `--upstream-ca`. httpjail's CA store
is a per-session directory (XDG_CONFIG_HOME), never the user's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.upstream import Upstream, start_upstream

ROOT = Path(__file__).resolve().parent.parent


def _capability_skip(item: pytest.Item) -> str | None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        return "needs root"
    if item.get_closest_marker("docker") and not shutil.which("docker"):
        return "needs Docker (docker CLI not installed)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if reason := _capability_skip(item):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """httpjail's XDG_CONFIG_HOME for the whole session (one CA, made once)."""
    return tmp_path_factory.mktemp("config-home")


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    server = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield server
    server.close()


def base_env(config_home: Path) -> dict[str, str]:
    """httpjail's environment in tests: ours, minus anything proxy-ish from the caller."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("HTTPJAIL_HTTP_BIND", None)
    env.pop("HTTPJAIL_HTTPS_BIND", None)
    return env


@dataclass
class Jail:
    """Runs `python -m httpjail_py` as a user would, against the test upstream."""

    upstream: Upstream
    config_home: Path

    def upstream_args(self) -> list[str]:
        return ["--upstream-ca", str(self.upstream.ca), *self.upstream.resolve_args()]

    def command(self, args: Sequence[str], child: Sequence[str] = ()) -> list[str]:
        cmd = [sys.executable, "-m", "httpjail_py", *args]
        if child:
            cmd += ["--", *child]
        return cmd

    def run(
        self,
        args: Sequence[str],
        child: Sequence[str] = (),
        *,
        weak: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        input: str | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess[str]:
        """Run httpjail to completion; child is the jailed command (after `--`)."""
        full = [*(["--weak"] if weak and child else []), *self.upstream_args(), *args]
        return subprocess.run(
            self.command(full, child),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**base_env(self.config_home), **(env or {})},
            cwd=cwd,
            input=input,
        )

    def popen(self, args: Sequence[str], child: Sequence[str] = (), *, weak: bool = True,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        full = [*(["--weak"] if weak and child else []), *self.upstream_args(), *args]
        return subprocess.Popen(
            self.command(full, child),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**base_env(self.config_home), **(env or {})},
            cwd=ROOT,
        )


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """The Docker SDK's client for the engine the Docker jail uses; skips without one."""
    from httpjail_py.errors import JailSetupError
    from httpjail_py.jail.docker.jail import connect

    try:
        client = connect()
    except JailSetupError as e:
        pytest.skip(f"needs a running Docker engine: {e}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def jail(upstream: Upstream, config_home: Path) -> Jail:
    return Jail(upstream, config_home)
