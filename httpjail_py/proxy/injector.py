"""Puts the real secrets into allowed requests, and keeps them out of everything the jail
gets back (see `httpjail_py/credentials.py` for what the user configures).

A placeholder is looked for in every request header (inside `Basic` credentials too, as
git sends a token) and in the path and query. Found on the way to one of its hosts over
HTTPS, it is replaced by the real value. Found anywhere else, the request is refused as an
attempted credential leak (`secret-to-wrong-host`). A placeholder in a body is never
replaced. Responses from a secret's hosts have any echo of a real value replaced before
they reach the jail: in the headers, and in the body as it streams.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable

from mitmproxy import http

from httpjail_py.credentials import Credentials, Secret
from httpjail_py.engines.base import Decision, Reason, RequestInfo

__all__ = ["CredentialInjector"]

log = logging.getLogger("httpjail.proxy")

_GUARDED = "httpjail-guarded"  # the response may echo a value we put in
_BASIC = b"basic "


def _decode_basic(value: bytes) -> str | None:
    if value[: len(_BASIC)].lower() != _BASIC:
        return None
    try:
        return base64.b64decode(value[len(_BASIC):].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class CredentialInjector:
    """Called by JailAddon for each allowed request (`inject`); a sub-addon of it for the
    responses (its hooks run after JailAddon's)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def inject(self, flow: http.HTTPFlow, info: RequestInfo) -> Decision | None:
        """Swap placeholders for real values and set the --header headers. Returns a
        refusal when a placeholder is on its way where its value must not go."""
        if not self.credentials:
            return None
        request = flow.request
        fields = request.headers.fields
        basic = {i: decoded for i, (_, value) in enumerate(fields)
                 if (decoded := _decode_basic(value)) is not None}
        texts = [_text(value) for _, value in fields] + list(basic.values()) + [request.path]
        found = {s.name: s for text in texts for s in self.credentials.placeholders_in(text)}
        if (refusal := self._refuse(found.values(), info)) is not None:
            return refusal
        if found:
            request.headers.fields = tuple(
                (name, self._swap(value, basic.get(i))) for i, (name, value) in enumerate(fields)
            )
            request.path = self._swap_in(request.path)
            # An echo of a value can be found in a body only if the body is not compressed.
            request.headers["accept-encoding"] = "identity"
            log.info("%s %s: put in %s", info.method, info.url, ", ".join(sorted(found)))
        for rule in self.credentials.headers_for(info.host):
            request.headers[rule.name] = rule.value
        if self.credentials.guards(info.host):
            flow.metadata[_GUARDED] = True
        return None

    def _refuse(self, found: Iterable[Secret], info: RequestInfo) -> Decision | None:
        for secret in found:
            if not secret.belongs_to(info.host):
                return Decision.deny(
                    f"the placeholder of {secret.name} was sent to {info.host}, which is not one "
                    f"of its hosts ({', '.join(secret.hosts)}): refused as an attempted credential leak",
                    Reason.SECRET_TO_WRONG_HOST,
                )
            if info.scheme != "https":
                return Decision.deny(
                    f"the placeholder of {secret.name} was sent to {info.host} over plain HTTP; "
                    "its value is only put in over HTTPS",
                    Reason.SECRET_TO_WRONG_HOST,
                )
        return None

    def _swap_in(self, text: str) -> str:
        for secret in self.credentials.placeholders_in(text):
            text = text.replace(secret.placeholder, secret.value)
        return text

    def _swap(self, value: bytes, basic: str | None) -> bytes:
        if basic is not None and self.credentials.placeholders_in(basic):
            return b"Basic " + base64.b64encode(self._swap_in(basic).encode())
        text = _text(value)
        if not self.credentials.placeholders_in(text):
            return value
        return self._swap_in(text).encode("utf-8", "surrogateescape")

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not flow.metadata.get(_GUARDED):
            return
        redact = self.credentials.redact_bytes
        response.headers.fields = tuple((name, redact(value)) for name, value in response.headers.fields)
        response.stream = _redacting(response.stream, self.credentials.response_redactor())


def _redacting(
    inner: bool | Callable[[bytes], bytes | Iterable[bytes]], redact: Callable[[bytes], bytes]
) -> Callable[[bytes], list[bytes]]:
    def stream(chunk: bytes) -> list[bytes]:
        if callable(inner):
            out = inner(chunk)
            chunks = [out] if isinstance(out, bytes) else list(out)
            data = b"".join(chunks)
            if chunk and not data:  # the inner filter dropped this chunk
                return []
        else:
            data = chunk
        redacted = redact(data)
        # Never b"" for a chunk: mitmproxy would send it as the end of a chunked body.
        return [redacted] if redacted else []

    return stream
