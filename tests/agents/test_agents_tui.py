"""The agents' interactive TUIs in the strong jail, under a pty of their own: each draws,
takes a typed task, runs the fake model's commands, and exits cleanly on its quit
command, leaving nothing behind (Codex's TUI starts a daemon, which must end with the
jail)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.agents.fakeapi import ALLOWED_BODY, FakeApi
from tests.agents.profiles import CLAUDE_AGENT, CODEX_AGENT, Agent
from tests.agents.scenario import (
    IN_CONTAINER,
    PLACEHOLDER,
    UPLOAD,
    Setup,
    agent_command,
    check_reasons,
    prepare,
    read_logs,
    unexpected_refusals,
)
from tests.conftest import Jail, base_env
from tests.jail.linux.conftest import leftovers, strong_capability
from tests.nethost import run_checked
from tests.pids import alive
from tests.terminal import Screen

pytestmark = [
    pytest.mark.agents,
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]

DOWN, ENTER = b"\x1b[B", b"\r"


def type_line(screen: Screen, text: str) -> None:
    """Type `text`, and once the TUI shows it, Enter: on its own, since all at once it
    would look like a paste."""
    screen.send(text.encode())
    if not screen.shows(text, within=5):
        raise AssertionError(f"the TUI did not show what was typed ({text!r}):\n{screen.text()}")
    time.sleep(0.3)
    screen.send(ENTER)


def codex_composer(screen: Screen) -> None:
    """Wait for Codex's main screen, declining the offer of a newer model than -m names.
    (While it starts, a splash screen already shows an empty prompt box.) A key sent as
    the offer is drawn can be lost, and keys sent too early make Codex give up ("timed
    out discarding buffered terminal input"): each is sent once the screen is quiet, and
    again only if the screen did not show it took."""
    offer, keep, ready = "Use existing model", "› 2. Use existing model", "To get started"
    if screen.wait_for(offer, ready, timeout=90) == offer:
        for key, effect in ((DOWN, keep), (ENTER, ready)):
            for _ in range(3):
                screen.settle(quiet=1.0)
                screen.send(key)
                if screen.shows(effect, within=3):
                    break
    screen.wait_for(ready)
    if screen.shows(offer, within=1):
        raise AssertionError(f"Codex's offer of another model came back:\n{screen.text()}")


def start_tui(jail: Jail, agent: Agent, api: FakeApi, directory: Path, shell: str,
              image: str | None = None) -> tuple[Setup, Screen]:
    """httpjail running `sh -c shell` on a pty of its own: in the strong jail, or in a
    Docker jail when `image` is given (`Setup.docker_options`)."""
    setup = prepare(agent, api, directory)
    args, child = [*jail.upstream_args(), *setup.args], ["sh", "-c", shell]
    if image is not None:
        args.append("--docker-run")
        child = ["-it", *setup.docker_options(), image, *child]
    return setup, Screen(jail.command(args, child), {**base_env(jail.config_home), **setup.env},
                         cwd=str(setup.work))


@dataclass
class TuiRun:
    shown: str  # the screen once it showed the report, its whitespace collapsed
    status: int
    running: list[int]  # what ran in the jail before the TUI was told to quit


def check_tui_run(agent: Agent, setup: Setup, run: TuiRun, api: FakeApi) -> None:
    """What the screen showed of the scenario, the exit status, and what is left."""
    assert ALLOWED_BODY in run.shown, run.shown
    assert f"{agent.rule_file}: evil.test is not needed by" in run.shown, run.shown
    assert PLACEHOLDER.search(run.shown) and setup.key not in run.shown, run.shown
    assert run.status == 0
    assert leftovers(setup.netns()) == []
    assert run.running and not [pid for pid in run.running if alive(pid)], "a process outlived the jail"
    requests, audit = read_logs(setup.request_log, setup.audit_log)
    assert unexpected_refusals(requests, agent.denied | agent.tui_denied | {UPLOAD}) == []
    check_reasons(agent, audit)
    assert any(r.host == agent.api_host and agent.key_sent(r) == setup.key for r in api.received)


def converse(screen: Screen, setup: Setup, until_ready: Callable[[Screen], None], quit: str) -> TuiRun:
    """Type the task once the TUI is ready; read the screen once it shows the report; note
    what runs in the jail (a daemon of the TUI's too); type `quit` and wait for the end.
    (`quit`, not Ctrl-C: one that came as the TUI leaves would go to httpjail, which would
    then stop with 130 instead of the command's 0.)"""
    try:
        until_ready(screen)
        type_line(screen, "Check the network")
        screen.wait_for("step 3:", timeout=90)
        screen.settle()
        shown = screen.flat()
        running = [int(pid) for pid in run_checked("ip", "netns", "pids", setup.netns()).split()]
        type_line(screen, quit)
        return TuiRun(shown, screen.finish(), running)
    finally:
        screen.stop()


def codex_tui(codex: str, key_var: str) -> str:
    # The TUI wants a login: it stores the key it is given, which in the jail is the placeholder.
    login = f'printenv {key_var} | "{codex}" login --with-api-key >/dev/null'
    return f'{login} && exec "{codex}" -m gpt-5.5 --dangerously-bypass-approvals-and-sandbox'


def test_codex_tui(jail: Jail, fake_api: FakeApi, tmp_path: Path) -> None:
    agent = CODEX_AGENT
    shell = codex_tui(str(agent_command(agent)), agent.key_var)
    setup, screen = start_tui(jail, agent, fake_api, tmp_path, shell)
    check_tui_run(agent, setup, converse(screen, setup, codex_composer, "/quit"), fake_api)


@pytest.mark.docker
def test_codex_tui_in_a_docker_jail(jail: Jail, fake_api: FakeApi, agent_image: str, tmp_path: Path) -> None:
    agent = CODEX_AGENT
    shell = codex_tui(f"{IN_CONTAINER}/node_modules/.bin/codex", agent.key_var)
    setup, screen = start_tui(jail, agent, fake_api, tmp_path, shell, image=agent_image)
    check_tui_run(agent, setup, converse(screen, setup, codex_composer, "/quit"), fake_api)


def claude_prompt(screen: Screen) -> None:
    screen.wait_for("? for shortcuts", timeout=90)


# Claude Code's first-run dialogs, answered in advance: onboarding done, the API key (by
# its last 20 characters: the placeholder's, in the jail) approved, the folder trusted.
CLAUDE_SEED = """
k=$(printf %s "$ANTHROPIC_API_KEY" | tail -c 20)
printf '{"hasCompletedOnboarding":true,"hasSeenAutoDefaultNudge":true,'\
'"customApiKeyResponses":{"approved":["%s"],"rejected":[]},'\
'"projects":{"%s":{"hasTrustDialogAccepted":true}}}' "$k" "$PWD" > "$HOME/.claude.json"
"""


def test_claude_code_tui(jail: Jail, fake_api: FakeApi, tmp_path: Path) -> None:
    agent = CLAUDE_AGENT
    claude = agent_command(agent)
    tui = f'exec "{claude}" --permission-mode default --allowedTools Bash'
    setup, screen = start_tui(jail, agent, fake_api, tmp_path, f"{CLAUDE_SEED}\n{tui}")
    check_tui_run(agent, setup, converse(screen, setup, claude_prompt, "/exit"), fake_api)
