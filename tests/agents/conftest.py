"""The agent tests' fake internet (one fake API host per test worker, for all its tests)
and the image their Docker jails run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.agents.fakeapi import FakeApi, Script, start_fake_api
from tests.agents.install import CLAUDE_CODE, installed
from tests.agents.profiles import AGENTS
from tests.jail.docker.image import build_test_image
from tests.jail.linux.conftest import strong_capability
from tests.nethost import TestHost

# The agents are mounted from the install cache; the image holds what they run on: node
# for Codex's launcher, bash for both agents' shell tools, ps for Codex's TUI (its daemon
# looks itself up), and Claude Code's libraries.
AGENT_IMAGE_EXTRAS = ("/usr/bin/node", "/usr/bin/bash", "/usr/bin/printenv", "/usr/bin/ps")


@pytest.fixture(scope="session", autouse=True)
def agents_installed() -> None:
    """Both agents, installed by scripts/test before pytest (tests never reach a registry)."""
    missing = [a.package.name for a in AGENTS if installed(a.package) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: scripts/test installs them "
                    "(python -m tests.agents.install, which needs npm)")


@pytest.fixture(scope="session")
def fake_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApi]:
    if reason := strong_capability():
        pytest.skip(reason)
    host = TestHost.create("api", 203)
    try:
        api = start_fake_api(host, tmp_path_factory.mktemp("fakeapi"), Script([]))
        yield api
        api.close()
    finally:
        host.destroy()


@pytest.fixture(scope="session")
def agent_image(docker_client: Any) -> str:
    tree = installed(CLAUDE_CODE)
    assert tree is not None  # agents_installed skipped otherwise
    claude = tree / "node_modules" / "@anthropic-ai" / "claude-code" / "bin" / "claude.exe"
    return build_test_image(docker_client, extra=AGENT_IMAGE_EXTRAS, libraries_for=(str(claude),))
