"""Puts the real secrets into allowed requests, and keeps them out of everything the jail
gets back (see `httpjail_py/credentials.py` for what the user configures).

A placeholder is looked for in every request header (inside `Basic` credentials too, as
git sends a token) and in the URL. In a header or the query string of a request to one of
its hosts over HTTPS, it is replaced by the real value; in the URL's path or a body it is
never replaced. Sent to another host, or over plain HTTP, the request is refused as an
attempted credential leak (`secret-to-wrong-host`).

Whatever a secret's host sends back reaches the jail with every real value replaced: the
headers, reason phrase and trailers, the body as it streams (uncompressed: requests ask
for that, and a compressed answer is decoded whole first), WebSocket messages, and the
error page mitmproxy makes of a reply that is not HTTP (patches.REDACT).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Iterable

from mitmproxy import http

from httpjail_py.credentials import Credentials, Secret
from httpjail_py.engines.base import Decision, Reason, RequestInfo
from httpjail_py.proxy import patches
from httpjail_py.proxy.refusal import blocked_response

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
            path, question, query = request.path.partition("?")
            request.path = path + question + self._swap_in(query)
            log.info("%s %s: put in %s", info.method, info.url, ", ".join(sorted(found)))
        if info.scheme == "https":
            for rule in self.credentials.headers_for(info.host):
                request.headers[rule.name] = rule.value
        if self.credentials.guards(info.host):
            flow.metadata[_GUARDED] = True
            flow.metadata[patches.REDACT] = self.credentials.redact
            # An echo of a value is found as it streams only in a body that is not compressed.
            request.headers["accept-encoding"] = "identity"
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
        response.reason = self.credentials.redact(response.reason)
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            # It ignored the request for an uncompressed answer: read it whole (`response`).
            response.stream = False
            return
        response.stream = _redacting(response.stream, self.credentials.response_redactor())

    def response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not flow.metadata.get(_GUARDED):
            return
        redact = self.credentials.redact_bytes
        if (trailers := response.trailers) is not None:
            trailers.fields = tuple((name, redact(value)) for name, value in trailers.fields)
        if response.raw_content is None or response.stream:
            return
        try:
            content = response.get_content(strict=True)
        except ValueError:  # an encoding that cannot be decoded cannot be checked: none of it passes
            encoding = response.headers.get("content-encoding", "")
            flow.response = blocked_response(Decision.deny(
                f"the response is compressed ({encoding}), which httpjail cannot decode to keep "
                "the secrets it sent out of it", Reason.UPSTREAM_ERROR))
            return
        if content is not None:
            response.content = redact(content)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None or not flow.metadata.get(_GUARDED):
            return
        message = flow.websocket.messages[-1]
        if not message.from_client:
            message.content = self.credentials.redact_bytes(message.content)


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
