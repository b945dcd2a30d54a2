"""scripts/demo agent [codex|claude]: a real coding agent in the strong jail, for a person
to watch: the real Codex CLI (or Claude Code) from the npm registry, its ready rule file,
its API key held by httpjail, and a fake model API of ours in a network namespace of its
own, mapped to the agent's usual hostname with --resolve. The fake model has the agent
fetch an allowed page, try to upload a file to a denied host, and print its API key.

Root only: the strong jail and the fake API's namespace need it. The agent is installed
once into the tests' cache (tests/agents/install.py), from the npm registry. The agent
sends nothing beyond this machine: the rule refuses anything but the hosts mapped to the
fake (tests/agents/scenario.py, `rule_for`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.demo import heading  # noqa: E402
from tests.agents.fakeapi import start_fake_api  # noqa: E402
from tests.agents.install import install  # noqa: E402
from tests.agents.profiles import CLAUDE_AGENT, CODEX_AGENT  # noqa: E402
from tests.agents.scenario import PROMPT, Setup, agent_command, prepare, read_logs, request_key, script_for  # noqa: E402
from tests.nethost import TestHost  # noqa: E402

AGENTS = {"codex": CODEX_AGENT, "claude": CLAUDE_AGENT}


def refusals(setup: Setup) -> list[str]:
    _, audit = read_logs(setup.request_log, setup.audit_log)
    return [f"{request_key(r['method'], r['url'])}: {r['message']}" for r in audit if r["decision"] == "deny"]


def main(argv: list[str]) -> int:
    from httpjail_py.jail.base import strong_jail_problem

    name = argv[0] if argv else "codex"
    if name not in AGENTS:
        print(f"usage: scripts/demo agent [{'|'.join(AGENTS)}]", file=sys.stderr)
        return 2
    if problem := strong_jail_problem():
        print(f"the agent demo runs in the strong jail, which is not available here: {problem}",
              file=sys.stderr)
        return 1
    agent = AGENTS[name]
    heading(f"installing {agent.package.name}@{agent.package.version} (once; cached)")
    print(f"  {install(agent.package)}")
    with tempfile.TemporaryDirectory(prefix="httpjail-demo-agent-") as tmp:
        tmpdir = Path(tmp)
        host = TestHost.create("dem", 204)
        try:
            api = start_fake_api(host, tmpdir, script_for(agent))
            setup = prepare(agent, api, tmpdir)
            command = [str(agent_command(agent)), *agent.args, PROMPT]
            cmd = [sys.executable, "-m", "httpjail_py", *setup.args, "--", *command]
            env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
            env.update(setup.env, XDG_CONFIG_HOME=str(tmpdir / "config"))
            heading("the command")
            print(f"  httpjail --js-file RULE --secret {agent.key_var}@{agent.api_host} "
                  "--request-log requests.log -- " + shlex.join([agent.package.command, *command[1:]]))
            print(f"  RULE: {agent.rule_file} as shipped, plus GET https://ok.test/allowed, and only hosts"
                  " mapped to the fake")
            print(f"  {agent.key_var} in httpjail's environment: {setup.key}")
            heading("the agent's output (strong jail)")
            result = subprocess.run(cmd, env=env, cwd=setup.work)
            heading(f"httpjail exited with {result.returncode} (the agent's own status)")
            heading("the request log")
            print(setup.request_log.read_text(), end="")
            heading("why each refusal (from the audit log)")
            for reason in dict.fromkeys(refusals(setup)):
                print(f"  {reason}")
            heading(f"what the fake {agent.api_host} received as the key")
            sent = {agent.key_sent(r) for r in api.received if r.host == agent.api_host} - {None}
            for value in sorted(v for v in sent if v is not None):
                real = "the real key, put in by httpjail" if value == setup.key else "NOT the real key"
                print(f"  {value}  ({real})")
            api.close()
            return result.returncode
        finally:
            host.destroy()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
