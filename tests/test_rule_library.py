"""The ready rule files in rules/: what each must allow and deny, checked three ways.

1. Every row of every table in-process (JsEngine.from_file + testmode.request_from_url),
   which is what `--test` evaluates, without a process per row.
2. A few rows per file through the real CLI (`python -m httpjail_py --js-file F --test M U`),
   run in parallel: exit code, the `ALLOW|DENY METHOD URL` line, the deny message.
3. Mutations: each file's key barrier (exact host match, https only, port 443, methods,
   paths) is weakened in a copy, and the table must then fail: a table no weakened rule
   can fail would prove nothing.

`--test` never sends a packet, and nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from httpjail_py.engines.js import JsEngine
from httpjail_py.testmode import request_from_url

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"


class Row(NamedTuple):
    method: str
    url: str
    allow: bool
    cli: bool = False  # also run this row through the real CLI


def A(method: str, url: str, *, cli: bool = False) -> Row:
    return Row(method, url, True, cli)


def D(method: str, url: str, *, cli: bool = False) -> Row:
    return Row(method, url, False, cli)


# Look-alikes of every host the library knows; no rule file may let any of them pass.
LOOKALIKES = [
    D("GET", "https://evil-github.com/o/r/info/refs?service=git-upload-pack"),
    D("GET", "https://github.com.evil.test/o/r/releases/download/v1/x.tar.gz"),
    D("POST", "https://api.openai.com.evil.test/v1/responses"),
    D("POST", "https://xapi.anthropic.com/v1/messages?beta=true"),
    D("GET", "https://pypi.org.attacker.test/simple/requests/"),
    D("GET", "https://github.com@evil.test/o/r/info/refs?service=git-upload-pack"),
    D("GET", "https://evil.test/github.com/api.openai.com"),
    D("GET", "https://127.0.0.1/"),
]

TABLES: dict[str, list[Row]] = {
    "codex.js": [
        A("POST", "https://api.openai.com/v1/responses", cli=True),
        A("GET", "https://api.openai.com/v1/responses"),  # the WebSocket upgrade
        A("POST", "https://api.openai.com/v1/responses/compact"),
        A("GET", "https://api.openai.com/v1/models?client_version=0.169.0"),
        A("POST", "https://chatgpt.com/backend-api/codex/responses"),
        A("GET", "https://chatgpt.com/backend-api/codex/responses"),
        A("POST", "https://chatgpt.com/backend-api/codex/responses/compact"),
        A("GET", "https://chatgpt.com/backend-api/codex/models?client_version=0.169.0"),
        A("POST", "https://auth.openai.com/oauth/token"),
        A("POST", "https://auth.openai.com/oauth/revoke"),
        A("POST", "https://auth.openai.com/api/accounts/deviceauth/usercode"),
        A("POST", "https://auth.openai.com/api/accounts/deviceauth/token"),
        # The CLI (and the proxy) lower-case hosts: the same host, so allowed.
        A("POST", "https://API.OPENAI.COM/v1/responses", cli=True),
        A("POST", "https://api.openai.com./v1/responses"),
        A("POST", "https://api.openai.com:443/v1/responses"),
        # Fetched by Codex at start; it works without them.
        D("GET", "https://api.github.com/repos/openai/plugins", cli=True),
        D("GET", "https://chatgpt.com/backend-api/plugins/export/curated"),
        D("GET", "https://chatgpt.com/"),
        D("GET", "https://chatgpt.com/backend-api/wham/usage"),
        D("POST", "https://chatgpt.com/backend-api/codex/responsesX"),
        D("POST", "https://api.openai.com/v1/files"),
        D("POST", "https://api.openai.com/v1/chat/completions"),
        D("POST", "https://api.openai.com/v1/responses/"),
        D("POST", "https://api.openai.com/v1/responses/../../v1/files"),
        D("POST", "https://api.openai.com/v1/models"),
        D("DELETE", "https://api.openai.com/v1/responses"),
        D("GET", "https://auth.openai.com/oauth/token"),
        D("GET", "https://auth.openai.com/oauth/authorize"),
        D("GET", "https://platform.openai.com/"),
        D("GET", "https://openai.com/"),
        D("POST", "http://api.openai.com/v1/responses"),
        D("POST", "https://api.openai.com:8443/v1/responses"),
        D("POST", "http://api.openai.com:443/v1/responses"),
        D("POST", "https://xapi.openai.com/v1/responses"),
        D("POST", "https://api.openai.com.evil.test/v1/responses", cli=True),
        D("POST", "https://evil-chatgpt.com/backend-api/codex/responses"),
        D("POST", "https://ab.chatgpt.com/otlp/v1/metrics"),
        D("GET", "https://raw.githubusercontent.com/openai/codex/main/announcement_tip.toml"),
        D("GET", "https://api.github.com/repos/openai/codex/releases/latest"),
        D("GET", "https://github.com/openai/plugins.git/info/refs?service=git-upload-pack"),
        D("POST", "https://chatgpt.com.evil.test/backend-api/codex/responses"),
        D("POST", "https://auth.openai.com.evil.test/oauth/token"),
    ],
    "claude-code.js": [
        A("POST", "https://api.anthropic.com/v1/messages?beta=true", cli=True),
        A("POST", "https://api.anthropic.com/v1/messages"),
        A("POST", "https://api.anthropic.com/v1/messages/count_tokens?beta=true"),
        A("GET", "https://api.anthropic.com/api/claude_cli/bootstrap"),
        A("GET", "https://api.anthropic.com/api/claude_code/policy_limits"),
        A("GET", "https://api.anthropic.com/api/claude_code/settings"),
        A("POST", "https://api.anthropic.com/v1/oauth/token"),
        A("POST", "https://console.anthropic.com/v1/oauth/token"),
        A("POST", "https://platform.claude.com/v1/oauth/token"),
        A("POST", "https://API.ANTHROPIC.COM/v1/messages?beta=true"),
        # Left out on purpose.
        D("POST", "https://api.anthropic.com/api/event_logging/v2/batch", cli=True),
        D("GET", "https://api.anthropic.com/mcp-registry/v0/servers"),
        D("GET", "https://api.anthropic.com/api/claude_code/organizations/metrics_enabled"),
        D("GET", "https://api.anthropic.com/api/claude_code_penguin_mode"),
        D("GET", "https://api.anthropic.com/api/directory/server-urls"),
        D("GET", "https://downloads.claude.ai/model-catalog/v1/catalog.json"),
        D("POST", "https://api.anthropic.com/api/eval/sdk-abc"),
        D("POST", "https://statsig.anthropic.com/v1/initialize"),
        D("POST", "https://o1158394.ingest.us.sentry.io/api/1/envelope/"),
        D("GET", "https://storage.googleapis.com/claude-code-dist/stable"),
        D("GET", "https://downloads.claude.ai/claude-code-releases/latest"),
        D("GET", "https://registry.npmjs.org/@anthropic-ai%2fclaude-code"),
        D("GET", "https://claude.ai/oauth/authorize"),
        D("GET", "https://console.anthropic.com/"),
        D("POST", "https://api.anthropic.com/v1/files"),
        D("POST", "https://api.anthropic.com/v1/messages/batches"),
        D("POST", "https://api.anthropic.com/v1/messages/../files"),
        D("GET", "https://api.anthropic.com/v1/messages"),
        D("POST", "https://api.anthropic.com/api/claude_cli/bootstrap"),
        D("GET", "https://console.anthropic.com/v1/oauth/token"),
        D("POST", "http://api.anthropic.com/v1/messages?beta=true"),
        D("POST", "https://api.anthropic.com:8443/v1/messages?beta=true"),
        D("POST", "https://xapi.anthropic.com/v1/messages?beta=true", cli=True),
        D("POST", "http://api.anthropic.com:443/v1/messages?beta=true"),
        D("POST", "https://api.anthropic.com.evil.test/v1/messages"),
        D("POST", "https://anthropic.com/v1/messages"),
        D("POST", "https://evil-anthropic.com/v1/messages"),
        D("POST", "https://platform.claude.com.evil.test/v1/oauth/token"),
    ],
    "package-registries.js": [
        A("GET", "https://pypi.org/simple/requests/"),
        A("GET", "https://pypi.org/pypi/requests/json"),
        A("GET", "https://files.pythonhosted.org/packages/f9/9b/requests-2.32.3-py3-none-any.whl"),
        A("HEAD", "https://files.pythonhosted.org/packages/aa/bb/pkg-1.0.tar.gz"),
        A("GET", "https://registry.npmjs.org/react"),
        A("GET", "https://registry.npmjs.org/@types%2fnode"),
        A("GET", "https://registry.npmjs.org/react/-/react-18.3.1.tgz"),
        A("GET", "https://crates.io/api/v1/crates/serde/1.0.210/download"),
        A("GET", "https://static.crates.io/crates/serde/serde-1.0.210.crate"),
        A("GET", "https://index.crates.io/config.json"),
        A("GET", "https://index.crates.io/se/rd/serde"),
        A("GET", "https://proxy.golang.org/golang.org/x/net/@v/list"),
        A("GET", "https://sum.golang.org/lookup/golang.org/x/net@v0.30.0"),
        A("GET", "https://github.com/cli/cli/releases/download/v2.60.0/gh_linux_amd64.tar.gz", cli=True),
        A("HEAD", "https://github.com/o/r/releases/latest/download/tool.tar.gz"),
        A("GET", "https://github.com/o/r.js/releases/download/release/1.0/tool.zip"),
        A("GET", "https://objects.githubusercontent.com/github-production-release-asset-2e65be/1/2?X-Amz-Algorithm=x"),
        A("GET", "https://release-assets.githubusercontent.com/github-production-release-asset/1/2?sp=r"),
        A("GET", "https://PYPI.ORG/simple/requests/"),
        D("PUT", "https://registry.npmjs.org/my-package", cli=True),
        D("POST", "https://registry.npmjs.org/-/npm/v1/security/advisories/bulk"),
        D("DELETE", "https://registry.npmjs.org/my-package/-rev/1"),
        D("POST", "https://pypi.org/legacy/"),
        D("POST", "https://upload.pypi.org/legacy/"),
        D("PUT", "https://crates.io/api/v1/crates/new"),
        D("GET", "https://github.com/o/r"),
        D("GET", "https://github.com/o/r/info/refs?service=git-upload-pack"),
        D("POST", "https://github.com/o/r/releases/download/v1/x.tar.gz"),
        D("GET", "https://github.com/o/r/releases/download/v1/../../../../../x/y"),
        D("GET", "https://github.com/o/r/releases/download/v1/%2e%2e/x"),
        D("GET", "https://github.com/o/r/releases/download/v1%2f..%2f..%2fx/y"),
        D("GET", "https://github.com/../r/releases/download/v1/x"),
        D("GET", "https://github.com/o/r/releases/download/x.tar.gz"),
        D("GET", "https://api.github.com/repos/o/r/releases/latest"),
        D("GET", "https://raw.githubusercontent.com/o/r/main/setup.py"),
        D("GET", "https://githubusercontent.com/x"),
        D("GET", "https://registry.yarnpkg.com/react"),
        D("GET", "https://registry.npmjs.com/react"),
        D("GET", "http://pypi.org/simple/requests/"),
        D("GET", "https://pypi.org:8443/simple/requests/"),
        D("GET", "http://proxy.golang.org/golang.org/x/net/@v/list"),
        D("GET", "http://pypi.org:443/simple/requests/"),
        D("GET", "https://pypi.org.attacker.test/simple/requests/", cli=True),
        D("GET", "https://evil-pypi.org/simple/requests/"),
        D("GET", "https://files.pythonhosted.org.evil.test/packages/x.whl"),
        D("GET", "https://registry.npmjs.org.evil.test/react"),
        D("GET", "https://xcrates.io/api/v1/crates/serde"),
        D("GET", "https://evil-github.com/o/r/releases/download/v1/x.tar.gz"),
        D("GET", "https://objects.githubusercontent.com.evil.test/x"),
    ],
    "github-readonly.js": [
        A("GET", "https://github.com/octocat/Hello-World.git/info/refs?service=git-upload-pack", cli=True),
        A("GET", "https://github.com/octocat/Hello-World/info/refs?service=git-upload-pack"),
        A("POST", "https://github.com/octocat/Hello-World.git/git-upload-pack"),
        A("POST", "https://github.com/octocat/Hello-World/git-upload-pack"),
        A("GET", "https://github.com/o/r/archive/refs/heads/main.tar.gz"),
        A("GET", "https://codeload.github.com/o/r/tar.gz/refs/heads/main"),
        A("GET", "https://api.github.com/repos/o/r"),
        A("HEAD", "https://api.github.com/rate_limit"),
        A("GET", "https://raw.githubusercontent.com/o/r/main/README.md"),
        A("GET", "https://GITHUB.COM/o/r.git/info/refs?service=git-upload-pack"),
        # Push, in every spelling.
        D("GET", "https://github.com/o/r.git/info/refs?service=git-receive-pack", cli=True),
        D("POST", "https://github.com/o/r.git/git-receive-pack"),
        D("POST", "https://github.com/o/r/git-receive-pack"),
        D("POST", "https://github.com/o/r.git/git-Receive-Pack"),
        D("GET", "https://github.com/o/r/info/refs?service=git-receive%2Dpack"),
        D("GET", "https://github.com/o/r/info/refs?service=git-upload-pack&service=git-receive-pack"),
        D("POST", "https://github.com/o/r/git-upload-pack/../git-receive-pack"),
        # Fetch endpoints used the wrong way, and everything else on github.com.
        D("GET", "https://github.com/o/r.git/info/refs"),
        D("POST", "https://github.com/o/r.git/info/refs?service=git-upload-pack"),
        D("GET", "https://github.com/o/r.git/git-upload-pack"),
        D("POST", "https://github.com/o/r/x/git-upload-pack"),
        D("POST", "https://github.com/../r/git-upload-pack"),
        D("POST", "https://github.com/o/r%2fx/git-upload-pack"),
        D("POST", "https://github.com/o/r.git/info/lfs/objects/batch"),
        D("POST", "https://github.com/o/r/archive/refs/heads/main.tar.gz"),
        D("GET", "https://github.com/o/r"),
        D("GET", "https://github.com/login"),
        D("POST", "https://github.com/session"),
        D("POST", "https://api.github.com/repos/o/r/issues"),
        D("PATCH", "https://api.github.com/repos/o/r"),
        D("PUT", "https://api.github.com/repos/o/r/contents/x"),
        D("DELETE", "https://api.github.com/repos/o/r"),
        D("POST", "https://api.github.com/graphql"),
        D("POST", "https://raw.githubusercontent.com/o/r/main/x"),
        D("POST", "https://codeload.github.com/o/r/tar.gz/main"),
        D("GET", "https://gist.github.com/"),
        D("POST", "https://uploads.github.com/repos/o/r/releases/1/assets"),
        D("GET", "https://objects.githubusercontent.com/x"),
        D("GET", "http://github.com/o/r.git/info/refs?service=git-upload-pack"),
        D("GET", "https://github.com:8443/o/r.git/info/refs?service=git-upload-pack", cli=True),
        D("GET", "https://api.github.com:8443/repos/o/r"),
        D("GET", "http://api.github.com:443/repos/o/r"),
        D("GET", "https://evil-github.com/o/r.git/info/refs?service=git-upload-pack"),
        D("GET", "https://github.com.evil.test/o/r.git/info/refs?service=git-upload-pack", cli=True),
        D("GET", "https://xgithub.com/o/r.git/info/refs?service=git-upload-pack"),
        D("GET", "https://api.github.com.evil.test/repos/o/r"),
        D("GET", "https://raw.githubusercontent.com.evil.test/o/r/main/x"),
    ],
    "allowlist.js": [
        A("GET", "https://github.com/o/r"),
        A("GET", "https://raw.githubusercontent.com/o/r/main/x", cli=True),
        A("GET", "https://objects.githubusercontent.com/x"),
        A("GET", "https://a.b.githubusercontent.com/x"),
        A("HEAD", "https://pypi.org/simple/"),
        A("GET", "https://files.pythonhosted.org/packages/x.whl"),
        A("GET", "https://registry.npmjs.org/react"),
        A("GET", "https://GITHUB.COM/o/r"),
        A("GET", "https://Raw.GitHubUserContent.com/o/r/main/x"),
        A("GET", "https://github.com./o/r"),
        D("GET", "https://evil-github.com/", cli=True),
        D("GET", "https://github.com.evil.test/"),
        D("GET", "https://xgithub.com/"),
        D("GET", "https://api.github.com/"),  # exact entry: no subdomains
        D("GET", "https://githubusercontent.com/"),  # '*.' entry: subdomains only
        D("GET", "https://xgithubusercontent.com/"),
        D("GET", "https://evilgithubusercontent.com/"),
        D("GET", "https://raw.githubusercontent.com.evil.test/"),
        D("GET", "https://githubusercontent.com.evil.test/"),
        D("GET", "https://pypi.org.attacker.test/simple/"),
        D("GET", "https://registry.npmjs.org.evil.test/react"),
        D("POST", "https://github.com/o/r.git/git-receive-pack"),
        D("PUT", "https://registry.npmjs.org/my-package"),
        D("GET", "http://github.com/", cli=True),
        D("GET", "https://github.com:8443/"),
        D("GET", "http://raw.githubusercontent.com/x"),
        D("GET", "http://github.com:443/o/r"),
    ],
}


def rows(name: str) -> list[Row]:
    return TABLES[name] + LOOKALIKES


async def _evaluate_all(path: Path, table: list[Row]) -> list[tuple[Row, bool, str | None]]:
    engine = JsEngine.from_file(path)
    try:
        out = []
        for row in table:
            decision = await engine.evaluate(request_from_url(row.method, row.url))
            out.append((row, decision.allowed, decision.message))
        return out
    finally:
        await engine.aclose()


def evaluate_all(path: Path, table: list[Row]) -> list[tuple[Row, bool, str | None]]:
    return asyncio.run(_evaluate_all(path, table))


def wrong(results: list[tuple[Row, bool, str | None]]) -> list[str]:
    return [
        f"{'ALLOW' if allowed else 'DENY'} {row.method} {row.url} (expected "
        f"{'ALLOW' if row.allow else 'DENY'}; {message})"
        for row, allowed, message in results
        if allowed != row.allow
    ]


def test_every_rule_file_has_a_table() -> None:
    assert sorted(p.name for p in RULES.glob("*.js")) == sorted(TABLES)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_rule_file_starts_with_a_comment_naming_itself(name: str) -> None:
    first = (RULES / name).read_text().splitlines()[0]
    assert first.startswith(f"// rules/{name}: "), first


@pytest.mark.parametrize("name", sorted(TABLES))
def test_table_in_process(name: str) -> None:
    results = evaluate_all(RULES / name, rows(name))
    assert not wrong(results), "\n".join(wrong(results))
    for row, allowed, message in results:
        if not allowed:  # a refusal says which file refused, and why
            assert message and message.startswith(f"rules/{name}: "), (row, message)


def _env(config_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["XDG_CONFIG_HOME"] = str(config_home)
    return env


def test_tables_through_the_cli(tmp_path: Path) -> None:
    env = _env(tmp_path / "config")
    cases = [(name, row) for name in sorted(TABLES) for row in rows(name) if row.cli]

    def run(case: tuple[str, Row]) -> subprocess.CompletedProcess[str]:
        name, row = case
        return subprocess.run(
            [sys.executable, "-m", "httpjail_py", "--js-file", f"rules/{name}",
             "--test", row.method, row.url],
            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
        )

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cases))
    failures = []
    for (name, row), result in zip(cases, results, strict=True):
        lines = result.stdout.splitlines()
        verdict = "ALLOW" if row.allow else "DENY"
        ok = (
            result.returncode == (0 if row.allow else 1)
            and lines[:1] == [f"{verdict} {row.method} {row.url}"]
            and (row.allow or (len(lines) == 2 and lines[1].startswith(f"rules/{name}: ")))
        )
        if not ok:
            failures.append(f"{name} {row}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    assert not failures, "\n".join(failures)
    for name in TABLES:  # each file: at least an allow and a deny through the real CLI
        assert {row.allow for n, row in cases if n == name} == {True, False}, name


# --- the tables have teeth: weaken a barrier, and some row must fail -------------------

HOST_NORMAL = "const host = String(r.host).toLowerCase().replace(/\\.$/, '');"
NO_HTTPS = [("r.scheme !== 'https'", "false")]
NO_PORT = [("r.port !== 443", "false")]

MUTATIONS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "codex.js": {
        "host-substring": [(HOST_NORMAL, "const host = Object.keys(ENDPOINTS).find("
                            "(d) => String(r.host).includes(d)) || String(r.host);")],
        "any-scheme": NO_HTTPS,
        "any-port": NO_PORT,
        "any-method": [("!paths[r.path].includes(r.method)", "false")],
    },
    "claude-code.js": {
        "host-substring": [(HOST_NORMAL, "const host = Object.keys(ENDPOINTS).find("
                            "(d) => String(r.host).includes(d)) || String(r.host);")],
        "any-scheme": NO_HTTPS,
        "any-port": NO_PORT,
        "any-method": [("!paths[r.path].includes(r.method)", "false")],
    },
    "package-registries.js": {
        "host-substring": [
            ("REGISTRY_HOSTS.includes(host)", "REGISTRY_HOSTS.some((d) => host.includes(d))"),
            ("host !== 'github.com'", "!host.includes('github.com')"),
        ],
        "any-scheme": NO_HTTPS,
        "any-port": NO_PORT,
        "any-method": [("!METHODS.includes(r.method)", "false")],
        "any-github-path": [("!RELEASE_DOWNLOAD.test(r.path)", "false")],
        "dot-segments": [("if (tricky || ", "if (")],
    },
    "github-readonly.js": {
        "host-substring": [("!HOSTS.includes(host)", "!HOSTS.some((d) => host.includes(d))")],
        "any-scheme": NO_HTTPS,
        "any-port": NO_PORT,
        "api-any-method": [("if (READ.includes(r.method)) return true;", "return true;")],
        # Push is refused twice: by name, and by the fetch-only patterns. Remove both.
        "receive-pack": [
            ("if (target.toLowerCase().includes('receive-pack')) {", "if (false) {"),
            ("r.query === 'service=git-upload-pack'", "r.query.startsWith('service=')"),
            ("'/git-upload-pack$'", "'/git-(upload|receive)-pack$'"),
        ],
    },
    "allowlist.js": {
        "host-substring": [("return host === pattern;", "return host.includes(pattern);")],
        "suffix-substring": [("host.endsWith(suffix)", "host.includes(suffix.slice(1))")],
        "any-scheme": NO_HTTPS,
        "any-port": NO_PORT,
        "any-method": [("!METHODS.includes(r.method)", "false")],
    },
}


@pytest.mark.parametrize(
    ("name", "mutation"),
    [(name, m) for name in sorted(MUTATIONS) for m in sorted(MUTATIONS[name])],
)
def test_weakened_rule_fails_its_table(tmp_path: Path, name: str, mutation: str) -> None:
    code = (RULES / name).read_text()
    for old, new in MUTATIONS[name][mutation]:
        assert code.count(old) == 1, f"{name}: {old!r} should occur once; update the mutation"
        code = code.replace(old, new)
    weakened = tmp_path / name
    weakened.write_text(code)
    failures = wrong(evaluate_all(weakened, rows(name)))
    # Only rows the weakened rule now lets through: the barrier was what denied them.
    assert failures and all(f.startswith("ALLOW ") for f in failures), failures


def test_every_rule_file_has_mutations() -> None:
    assert sorted(MUTATIONS) == sorted(TABLES)
    for name, mutations in MUTATIONS.items():
        assert {"host-substring", "any-scheme", "any-port"} <= set(mutations), name
