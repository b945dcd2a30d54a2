"""Where decisions go: the request log, the audit log, `-v` lines and the exit summary."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from httpjail_py.audit import AuditRecord
from httpjail_py.engines.base import Decision
from httpjail_py.logfiles import LineWriter, request_log_line

__all__ = ["Recorder"]

log = logging.getLogger("httpjail.decisions")


class Recorder:
    def __init__(
        self,
        *,
        request_log: Path | None = None,
        audit_log: Path | None = None,
        redact: Callable[[str], str] = str,
    ) -> None:
        # Applied to every line written: a secret's value must never reach a log.
        self._redact = redact
        self._request_log = LineWriter(request_log, "--request-log") if request_log else None
        try:
            self._audit_log = LineWriter(audit_log, "--audit-log") if audit_log else None
        except BaseException:
            if self._request_log:
                self._request_log.close()
            raise
        self.total = 0
        self.denied_hosts: Counter[str] = Counter()

    def decided(self, method: str, target: str, host: str, decision: Decision) -> None:
        """A request was evaluated: one request-log line, one `-v` line."""
        self.total += 1
        if not decision.allowed:
            self.denied_hosts[host] += 1
        if self._request_log:
            self._request_log.write(self._redact(request_log_line(decision.allowed, method, target)))
        if decision.allowed:
            log.info("+ %s %s", method, target)
        else:
            log.info("- %s %s (%s: %s)", method, target, decision.reason, decision.message or "denied")

    def finished(self, record: AuditRecord) -> None:
        if self._audit_log:
            self._audit_log.write(self._redact(record.to_json()))

    def summary(self) -> str | None:
        """The exit line, or None when nothing was denied."""
        denied = sum(self.denied_hosts.values())
        if not denied:
            return None
        hosts = ", ".join(h for h, _ in self.denied_hosts.most_common(5))
        if len(self.denied_hosts) > 5:
            hosts += ", ..."
        where = f"; log: {self._request_log.path}" if self._request_log else ""
        return f"{self.total} requests, {denied} denied ({hosts}){where}"

    def close(self) -> None:
        for writer in (self._request_log, self._audit_log):
            if writer:
                writer.close()
