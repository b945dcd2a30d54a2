"""scripts/demo: run a real jailed command against local servers and show what happened.

The "internet" here is tests/upstream.py: HTTP and HTTPS servers on 127.0.0.1 with a CA of
their own, reached by the names ok.test and api.test through --resolve. httpjail's CA store
goes to a temporary XDG_CONFIG_HOME, removed at the end.
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

from tests.upstream import start_upstream  # noqa: E402

RULE = "r.host === 'ok.test' && r.method === 'GET'"


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    from httpjail_py.jail.base import strong_jail_problem

    problem = strong_jail_problem()
    strong = problem is None
    with tempfile.TemporaryDirectory(prefix="httpjail-demo-") as tmp:
        tmpdir = Path(tmp)
        upstream = start_upstream(tmpdir / "upstream")
        log = tmpdir / "requests.log"
        allowed = upstream.url("ok.test", "/echo")
        blocked_host = upstream.url("api.test", "/v1/secrets")
        plain = upstream.url("ok.test", "/echo", tls=False)
        child = "\n".join(
            [
                f'echo "curl GET {allowed}"',
                f"curl -sS -o /dev/null -w '  -> HTTP %{{http_code}}\\n' {allowed}",
                f'echo "curl GET {blocked_host}"',
                f"curl -sS -w '  -> HTTP %{{http_code}}\\n' {blocked_host} | sed 's/^/  /'",
                *(
                    [
                        f'echo "curl --noproxy \'*\' GET {blocked_host}"',
                        'echo "  (this curl ignores HTTP_PROXY; the jail catches it anyway)"',
                        f"curl -sS --noproxy '*' -w '  -> HTTP %{{http_code}}\\n' {blocked_host}"
                        " | sed 's/^/  /'",
                    ]
                    if strong
                    else []
                ),
                f'echo "python urllib POST {plain}"',
                f"{shlex.quote(sys.executable)} -c {shlex.quote(PY_POST)} {plain}",
            ]
        )
        cmd = [
            sys.executable, "-m", "httpjail_py",
            *([] if strong else ["--weak"]),
            "--js", RULE,
            "--request-log", str(log),
            "--upstream-ca", str(upstream.ca),
            *upstream.resolve_args(),
            "--", "sh", "-c", child,
        ]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["XDG_CONFIG_HOME"] = str(tmpdir / "config")
        heading("the rule")
        print(f"  --js \"{RULE}\"")
        if strong:
            heading("the jailed command's output (strong jail: a network namespace of its own)")
        else:
            heading("the jailed command's output (weak mode: HTTP_PROXY/HTTPS_PROXY + our CA)")
            print(f"  (not the strong jail: {problem})")
        result = subprocess.run(cmd, env=env, cwd=ROOT)
        heading(f"httpjail exited with {result.returncode} (the command's own status)")
        heading(f"the request log ({log.name})")
        print(log.read_text() if log.exists() else "(empty)", end="")
        upstream.close()
        heading("what the upstream server actually received")
        for seen in upstream.seen:
            print(f"  {seen.method} {seen.host} {seen.path}")
        return result.returncode


PY_POST = """
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b"x=1", method="POST"))
except urllib.error.HTTPError as e:
    print(f"  -> HTTP {e.code}: " + e.read().decode().replace(chr(10), " | "))
"""

if __name__ == "__main__":
    raise SystemExit(main())
