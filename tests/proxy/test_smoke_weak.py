"""A first end-to-end check: curl through a weak jail, allowed and denied."""

from __future__ import annotations


def test_curl_allowed_and_denied(jail, upstream, tmp_path):
    log = tmp_path / "req.log"
    allowed = upstream.url("ok.test", "/echo?x=1")
    denied = upstream.url("other.test", "/echo")
    script = f"curl -sS {allowed}; echo; curl -sS -w '%{{http_code}}' {denied}"
    result = jail.run(["--js", "r.host === 'ok.test'", "--request-log", str(log)], ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    assert '"path": "/echo?x=1"' in result.stdout
    assert "Request blocked by httpjail" in result.stdout and result.stdout.endswith("403")
    lines = log.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [f"+ GET {allowed}", f"- GET {denied}"]
