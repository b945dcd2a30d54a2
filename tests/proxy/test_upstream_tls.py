"""Upstream certificates are always verified: against the system store plus --upstream-ca,
and only HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION=1 turns that off, loudly."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT, base_env


def _run_without_upstream_ca(jail, upstream, env_extra=None):
    url = upstream.url("ok.test", "/echo?tls=1")
    cmd = jail.command(
        ["--weak", "--js", "r.host === 'ok.test'", *upstream.resolve_args()],
        ["curl", "-sS", "-w", "\n%{http_code}", url],
    )
    env = {**base_env(jail.config_home), **(env_extra or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def test_untrusted_upstream_certificate_is_refused(jail, upstream):
    before = len(upstream.seen)
    result = _run_without_upstream_ca(jail, upstream)
    assert result.stdout.endswith("\n502"), result.stdout + result.stderr
    assert "certificate" in result.stdout.lower()
    assert len(upstream.seen) == before  # the request never reached the server


def test_upstream_ca_adds_to_the_trust_store(jail, upstream):
    url = upstream.url("ok.test", "/echo?tls=2")
    result = jail.run(["--js", "r.host === 'ok.test'"], ["curl", "-sS", "-w", "\n%{http_code}", url])
    assert result.stdout.endswith("\n200"), result.stdout + result.stderr


def test_danger_variable_disables_verification_with_a_warning(jail, upstream):
    result = _run_without_upstream_ca(
        jail, upstream, {"HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION": "1"}
    )
    assert result.stdout.endswith("\n200"), result.stdout + result.stderr
    assert "NOT verified" in result.stderr
