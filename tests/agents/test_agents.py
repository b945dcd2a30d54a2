"""The real Codex CLI and Claude Code, from the npm registry, unmodified, in the strong
jail and in a Docker jail, with their ready rule files and their keys held by httpjail.
Their APIs are the fake of fakeapi.py, in a namespace of the test's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.fakeapi import FakeApi
from tests.agents.profiles import AGENTS, Agent
from tests.agents.scenario import assert_scenario, run_agent
from tests.conftest import ROOT, Jail, base_env
from tests.jail.linux.conftest import strong_capability

pytestmark = [
    pytest.mark.agents,
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]


# Not in weak mode: there the agent shares the host's network, and a test must not let a
# real program reach it.
@pytest.mark.parametrize("agent", AGENTS, ids=[a.name for a in AGENTS])
def test_the_agent_works_in_the_strong_jail_and_cannot_leak(
    agent: Agent, jail: Jail, fake_api: FakeApi, tmp_path: Path
) -> None:
    run = run_agent(jail, agent, fake_api, tmp_path)
    assert_scenario(run, fake_api)


@pytest.mark.docker
@pytest.mark.parametrize("agent", AGENTS, ids=[a.name for a in AGENTS])
def test_the_agent_works_in_a_docker_jail_and_cannot_leak(
    agent: Agent, jail: Jail, fake_api: FakeApi, agent_image: str, tmp_path: Path
) -> None:
    run = run_agent(jail, agent, fake_api, tmp_path, image=agent_image)
    assert_scenario(run, fake_api)


def test_the_agent_demo_runs(config_home: Path) -> None:
    """`scripts/demo agent`: what a person watching sees, and its exit status."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_agent.py"), "codex"],
                            capture_output=True, text=True, timeout=240, env=base_env(config_home))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "+ GET https://ok.test/allowed" in result.stdout
    assert "POST https://evil.test/upload: rules/codex.js: evil.test is not needed by Codex" in result.stdout
    assert "(the real key, put in by httpjail)" in result.stdout
    assert "NOT the real key" not in result.stdout
