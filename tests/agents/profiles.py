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
    reasons: tuple[tuple[str, str], ...] = ()  # (refused request, its audit reason) to check

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
    denied=frozenset({
        "GET https://chatgpt.com/backend-api/codex/models",  # with the key's placeholder
        "GET https://github.com/openai/plugins.git/info/refs",
        "GET https://api.github.com/repos/openai/plugins",
        "GET https://chatgpt.com/backend-api/plugins/export/curated",
        "POST https://ab.chatgpt.com/otlp/v1/metrics",
    }),
    tui_denied=frozenset({
        "GET https://raw.githubusercontent.com/openai/codex/main/announcement_tip.toml",
        "GET https://api.github.com/repos/openai/codex/releases/latest",
    }),
    reasons=(("GET https://chatgpt.com/backend-api/codex/models", "secret-to-wrong-host"),),
)

CLAUDE_AGENT = Agent(
    name="claude-code",
    package=CLAUDE_CODE,
    rule_file="rules/claude-code.js",
    key_var="ANTHROPIC_API_KEY",
    api_host="api.anthropic.com",
    args=("--allowedTools", "Bash", "-p"),
    key_header="x-api-key",
    denied=frozenset({
        "POST https://api.anthropic.com/api/eval/",
        "GET https://api.anthropic.com/api/claude_code_penguin_mode",
        "GET https://api.anthropic.com/api/directory/server-urls",
        "GET https://api.anthropic.com/api/claude_code/organizations/metrics_enabled",
        "POST https://api.anthropic.com/api/event_logging/v2/batch",
    }),
    tui_denied=frozenset({
        "GET https://downloads.claude.ai/model-catalog/v1/",
        "GET https://downloads.claude.ai/claude-code-releases/plugins/claude-plugins-official/latest",
        "GET https://raw.githubusercontent.com/anthropics/claude-code/refs/heads/main/CHANGELOG.md",
        "GET https://github.com/anthropics/claude-plugins-official.git/info/refs",
        "TCP github.com:22",  # the same marketplace over SSH: not HTTP, closed
    }),
)

AGENTS = (CODEX_AGENT, CLAUDE_AGENT)
