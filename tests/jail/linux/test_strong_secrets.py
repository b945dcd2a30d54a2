"""--secret in the strong jail: the key is put in for a program that ignores the proxy
variables (transparent interception), and a jailed root looking through /proc for the
real key finds it nowhere: not in httpjail's environment (httpjail is undumpable, and the
jail drops CAP_SYS_PTRACE), not in the rule processes' (they start with the placeholder).
"""

from __future__ import annotations

import json
import secrets
import shlex
import sys
from pathlib import Path

import pytest

from tests.conftest import Jail
from tests.jail.linux.conftest import strong_capability
from tests.jail.linux.sink import Sink

FILTER = Path(__file__).parents[2] / "engines" / "scripts" / "filter.py"

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.skipif(strong_capability() is not None, reason=str(strong_capability())),
]

# Reads every /proc/*/environ and /proc/*/cmdline it can; prints where the marker (a part
# of the real key, given in a file) was found, and what happened at httpjail's own.
SEARCH = r"""
import json, os, sys
marker = open(sys.argv[1], "rb").read().strip()
found, httpjail, rule = [], {}, "not seen"
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    for what in ("environ", "cmdline"):
        try:
            data = open(f"/proc/{pid}/{what}", "rb").read()
        except OSError as e:
            if b"httpjail_py\0" in cmdline:
                httpjail[what] = e.strerror
            continue
        if marker in data:
            found.append(f"{pid} {what} {cmdline[:80]!r}")
        if b"httpjail_py\0" in cmdline and what == "environ":
            httpjail[what] = "read"
        if b"filter.py" in cmdline and what == "environ":
            rule = "read"
print(json.dumps({"found": found, "httpjail": httpjail, "rule process": rule}))
"""


def test_a_jailed_root_cannot_find_the_key_and_the_api_gets_it(
    jail: Jail, quiet_sink: Sink, tmp_path: Path
) -> None:
    marker = secrets.token_hex(12)
    key = f"sk-test-{marker}-{secrets.token_hex(8)}"
    (tmp_path / "marker").write_text(marker)
    tag = secrets.token_hex(4)
    api = jail.upstream.url("api.test", f"/echo/{tag}")
    script = (
        f"{sys.executable} -c '{SEARCH}' {tmp_path / 'marker'}; "
        f"curl -sS -m 10 --noproxy '*' -H \"Authorization: Bearer $TEST_API_KEY\" {api}"
    )
    # A --proc rule process runs all along: its environment is searched too.
    rule = shlex.join([sys.executable, "-u", str(FILTER), "--answer", "true"])
    result = jail.run(
        ["-v", "--proc", rule, "--secret", "TEST_API_KEY@api.test"],
        ["sh", "-c", script],
        weak=False, env={"TEST_API_KEY": key},
    )
    assert result.returncode == 0, result.stderr
    search_line, echo = result.stdout.split("\n", 1)
    search = json.loads(search_line)
    assert search["found"] == [], "the real key is readable in the jail"
    assert search["httpjail"] == {"environ": "Permission denied"}, search
    assert search["rule process"] == "read", search
    [got] = [s for s in jail.upstream.seen if s.path == f"/echo/{tag}"]
    assert got.headers["authorization"] == f"Bearer {key}"
    assert key not in echo and "Bearer httpjail-secret-" in echo
