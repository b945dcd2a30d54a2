"""A fake internet for real coding agents: the model APIs they call, and a test host.

One TLS server in a test network namespace of our own, on port 443 (an agent dials the
port of its usual URL; `--resolve` maps only the address), with a certificate from a test
CA for every name below. It speaks:

- api.openai.com: the Responses API as Codex uses it, over a WebSocket (`GET /v1/responses`
  with an upgrade, `response.create` messages in, events out) and over HTTP with an SSE
  stream (`POST /v1/responses`);
- api.anthropic.com: the Messages API as Claude Code uses it (`POST /v1/messages`, SSE);
- ok.test: `GET /allowed`, a line of text with a token the test can look for.

The model is a `Script`: it makes the agent run each of its commands with the agent's own
shell tool, one per turn, then answers with a report of what every command printed. The
server decides from the conversation the agent sends (the tool outputs in it), so retries
and side requests need no state. Every request is recorded in `FakeApi.received`.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import wsframes
from tests.nethost import TestHost
from tests.upstream import TestHandler, TlsServer, make_test_pki, server_context

OPENAI_HOSTS = ("api.openai.com", "chatgpt.com", "auth.openai.com", "ab.chatgpt.com")
ANTHROPIC_HOSTS = ("api.anthropic.com", "console.anthropic.com", "platform.claude.com")
TEST_HOSTS = ("ok.test", "evil.test")
NAMES = (*OPENAI_HOSTS, *ANTHROPIC_HOSTS, *TEST_HOSTS)
ALLOWED_BODY = "the allowed host answered: token-7f3a91"
# Claude Code's TUI asks a small model for the session's title, as JSON.
SIDE_ANSWER = '{"title": "Network check"}'


@dataclass
class Received:
    host: str
    method: str
    path: str  # with its query
    headers: dict[str, str]  # names lower-cased
    body: bytes
    transport: str  # "http", or "websocket" for a message on an upgraded connection
    peer: str  # the address the connection came from


@dataclass
class Script:
    """What the fake model does: run `commands` in turn, then report their outputs."""

    commands: list[str]

    def next_command(self, outputs: list[str]) -> str | None:
        return self.commands[len(outputs)] if len(outputs) < len(self.commands) else None

    def report(self, outputs: list[str]) -> str:
        lines = ["REPORT"]
        for number, output in enumerate(outputs, 1):
            lines.append(f"step {number}: " + " ".join(output.split())[:600])
        return "\n".join(lines)


def _text(content: Any) -> str:
    """A tool result's text, whether a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part.get("text", part.get("content", ""))) for part in content
                         if isinstance(part, dict))
    return ""


# --- OpenAI Responses API (Codex) ------------------------------------------------------


def _openai_outputs(items: Iterable[dict[str, Any]]) -> list[str]:
    kinds = ("function_call_output", "custom_tool_call_output", "local_shell_call_output")
    return [_text(item.get("output")) for item in items if item.get("type") in kinds]


def _openai_tool_call(request: dict[str, Any], command: str, number: int) -> dict[str, Any]:
    """A call to whichever shell tool the agent offered, in that tool's own arguments."""
    names = {tool.get("name") for tool in request.get("tools", [])}
    if "exec_command" in names:
        name, arguments = "exec_command", {"cmd": command}
    elif "shell_command" in names:
        name, arguments = "shell_command", {"command": command}
    else:
        name, arguments = "shell", {"command": ["bash", "-lc", command]}
    return {"type": "function_call", "id": f"fc_{number}", "call_id": f"call_{number}", "name": name,
            "arguments": json.dumps(arguments), "status": "completed"}


def openai_events(request: dict[str, Any], outputs: list[str], script: Script, number: int
                  ) -> list[dict[str, Any]]:
    """The events of one response: a tool call, or the final report as a message."""
    response = {"id": f"resp_{number}", "object": "response", "model": request.get("model", "gpt-test"),
                "status": "in_progress", "output": []}
    command = script.next_command(outputs)
    if request.get("generate") is False:  # a prewarm: nothing is generated
        items: list[dict[str, Any]] = []
    elif command is not None:
        items = [_openai_tool_call(request, command, number)]
    else:
        text = script.report(outputs)
        items = [{"type": "message", "id": f"msg_{number}", "role": "assistant", "status": "completed",
                  "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    events: list[dict[str, Any]] = [{"type": "response.created", "response": response}]
    for index, item in enumerate(items):
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress"}})
        if item["type"] == "message":
            events.append({"type": "response.output_text.delta", "item_id": item["id"],
                           "output_index": index, "content_index": 0,
                           "delta": item["content"][0]["text"]})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 10,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 20}
    events.append({"type": "response.completed",
                   "response": {**response, "status": "completed", "output": items, "usage": usage}})
    for sequence, event in enumerate(events):
        event["sequence_number"] = sequence
    return events


# --- Anthropic Messages API (Claude Code) ----------------------------------------------


def _anthropic_outputs(messages: Iterable[dict[str, Any]]) -> list[str]:
    outputs = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, list):
            outputs += [_text(block.get("content")) for block in content
                        if isinstance(block, dict) and block.get("type") == "tool_result"]
    return outputs


def anthropic_events(request: dict[str, Any], script: Script, number: int) -> list[dict[str, Any]]:
    """The events of one message: a Bash tool call, or the final report.

    Requests without the Bash tool are the agent's side requests (the TUI's session title):
    they get SIDE_ANSWER.
    """
    has_bash = any(tool.get("name") == "Bash" for tool in request.get("tools", []))
    outputs = _anthropic_outputs(request.get("messages", []))
    command = script.next_command(outputs) if has_bash else None
    if command is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{number:04d}", "name": "Bash", "input": {}}
        delta = {"type": "input_json_delta",
                 "partial_json": json.dumps({"command": command, "description": f"step {len(outputs) + 1}"})}
        stop = "tool_use"
    else:
        text = script.report(outputs) if has_bash else SIDE_ANSWER
        block, delta, stop = {"type": "text", "text": ""}, {"type": "text_delta", "text": text}, "end_turn"
    message = {"id": f"msg_{number:04d}", "type": "message", "role": "assistant",
               "model": request.get("model", "claude-test"), "content": [], "stop_reason": None,
               "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}
    return [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
         "usage": {"output_tokens": 10}},
        {"type": "message_stop"},
    ]


def anthropic_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The same answer, not streamed."""
    message = dict(events[0]["message"])
    block = dict(events[1]["content_block"])
    delta = events[2]["delta"]
    if block["type"] == "text":
        block["text"] = delta["text"]
    else:
        block["input"] = json.loads(delta["partial_json"])
    message.update(content=[block], stop_reason=events[4]["delta"]["stop_reason"])
    return message


# --- the server ------------------------------------------------------------------------


@dataclass
class FakeApi:
    host: TestHost
    ca: Path
    script: Script
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0
    _server: http.server.ThreadingHTTPServer | None = None

    def resolve_args(self) -> list[str]:
        return [arg for name in NAMES for arg in ("--resolve", f"{name}:443:{self.host.address}")]

    def record(self, entry: Received) -> None:
        with self._lock:
            self.received.append(entry)

    def next_number(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def reset(self, script: Script) -> None:
        with self._lock:
            self.script, self.received = script, []

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(TestHandler):
    api: FakeApi  # set on the subclass per server

    def _host(self) -> str:
        return (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _not_found(self) -> None:
        self._send(404, json.dumps({"error": {"type": "not_found_error",
                                              "message": f"the fake has no {self.path}"}}).encode())

    def _sse(self, events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _dispatch(self) -> None:
        host, path = self._host(), self.path.split("?")[0]
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self.api.record(Received(host, self.command, self.path, self._headers(), b"", "http",
                                     self.client_address[0]))
            if host == "api.openai.com" and path == "/v1/responses":
                return self._openai_websocket()
            return self._not_found()
        body = self._read_body()
        self.api.record(Received(host, self.command, self.path, self._headers(), body, "http",
                                 self.client_address[0]))
        route: dict[tuple[str, str, str], Callable[[bytes], None]] = {
            ("api.openai.com", "POST", "/v1/responses"): self._openai_post,
            ("api.anthropic.com", "POST", "/v1/messages"): self._anthropic_post,
            ("ok.test", "GET", "/allowed"): lambda _: self._send(200, ALLOWED_BODY.encode() + b"\n",
                                                                  "text/plain"),
        }
        handler = route.get((host, self.command, path))
        return handler(body) if handler else self._not_found()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch

    def _openai_post(self, body: bytes) -> None:
        request = json.loads(body)
        outputs = _openai_outputs(request.get("input", []))
        self._sse(openai_events(request, outputs, self.api.script, self.api.next_number()))

    def _anthropic_post(self, body: bytes) -> None:
        request = json.loads(body)
        events = anthropic_events(request, self.api.script, self.api.next_number())
        if request.get("stream"):
            self._sse(events)
        else:
            self._send(200, json.dumps(anthropic_message(events)).encode())

    def _openai_websocket(self) -> None:
        """Responses over a WebSocket: each `response.create` message gets its events back
        as text messages. A message naming `previous_response_id` carries only what is new,
        so the connection keeps the tool outputs it has seen."""
        wsframes.accept(self)
        outputs: list[str] = []
        while frame := wsframes.read_frame(self.rfile):
            opcode, data = frame
            if opcode == wsframes.CLOSE:
                self.wfile.write(wsframes.encode_frame(wsframes.CLOSE, data[:2]))
                break
            if opcode == wsframes.PING:
                self.wfile.write(wsframes.encode_frame(wsframes.PONG, data))
                continue
            if opcode != wsframes.TEXT:
                continue
            self.api.record(Received("api.openai.com", "WS", self.path, self._headers(), data, "websocket",
                                     self.client_address[0]))
            request = json.loads(data)
            new = _openai_outputs(request.get("input", []))
            outputs = outputs + new if request.get("previous_response_id") else new
            for event in openai_events(request, outputs, self.api.script, self.api.next_number()):
                self.wfile.write(wsframes.encode_frame(wsframes.TEXT, json.dumps(event).encode()))
            self.wfile.flush()
        self.close_connection = True


def start_fake_api(host: TestHost, directory: Path, script: Script) -> FakeApi:
    """The fake on port 443 of `host`, serving in threads of this process."""
    ca, cert, key = make_test_pki(directory, NAMES, stem="fakeapi")
    api = FakeApi(host, ca, script)
    handler = type("Handler", (_Handler,), {"api": api})
    server = TlsServer((host.address, 443), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = host.listen(443)
    server.context = server_context(cert, key)
    threading.Thread(target=server.serve_forever, daemon=True, name="fake-api").start()
    api._server = server
    return api
