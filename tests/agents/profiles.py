"""What each real agent needs to be run unattended, and what it is known to try.

`args` are the agent's own options for a non-interactive run that executes the model's
shell commands without asking: inside httpjail, the jail is the sandbox. `denied` lists
every host the agent contacts on its own that its rule file refuses on purpose (the rule
file says what each is); the tests fail on any other refusal, so a new kind of traffic in
a new version is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.agents.fakeapi import Received
from tests.agents.install import CLAUDE_CODE, CODEX, Package


@dataclass(frozen=True)
class Agent:
    name: str
    package: Package
    rule_file: str
    key_var: str  # the API key's environment variable, held by httpjail (--secret)
    api_host: str
    args: tuple[str, ...]  # before the prompt
    key_header: str  # where the API expects the key
    denied: frozenset[str]
    tui_denied: frozenset[str]  # what the TUI tries besides
    env: tuple[tuple[str, str], ...] = ()

    def key_sent(self, request: Received) -> str | None:
        value = request.headers.get(self.key_header)
        return value.removeprefix("Bearer ") if value is not None else None


CODEX_AGENT = Agent(
    name="codex",
    package=CODEX,
    rule_file="rules/codex.js",
    key_var="CODEX_API_KEY",
    api_host="api.openai.com",
    # Without its model catalogue Codex picks a model that reaches the shell through a
    # JavaScript tool; -m picks one with the plain `exec_command` tool the fake calls.
    # Codex's own sandbox would refuse curl any network: the jail does that job here.
    args=("exec", "-m", "gpt-5.5", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"),
    key_header="authorization",
    denied=frozenset({"chatgpt.com", "ab.chatgpt.com", "github.com", "api.github.com"}),
    tui_denied=frozenset({"raw.githubusercontent.com"}),
)

CLAUDE_AGENT = Agent(
    name="claude-code",
    package=CLAUDE_CODE,
    rule_file="rules/claude-code.js",
    key_var="ANTHROPIC_API_KEY",
    api_host="api.anthropic.com",
    args=("--allowedTools", "Bash", "-p"),
    key_header="x-api-key",
    denied=frozenset({"api.anthropic.com"}),
    tui_denied=frozenset({"raw.githubusercontent.com", "downloads.claude.ai", "github.com"}),
)

AGENTS = (CODEX_AGENT, CLAUDE_AGENT)
