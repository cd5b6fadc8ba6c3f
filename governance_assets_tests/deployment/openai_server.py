"""A small deterministic OpenAI-compatible server on loopback (`/v1/chat/completions`): it answers
each prompt with the last word of its last line, checks the bearer key, and plays a script of
faults first (429 with Retry-After, 500) or stalls past the client's timeout."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from governance_assets_tests.http_server import Answer, Received, ScriptedServer

API_KEY = "sk-loopback-test-0123456789"
"""The key the server expects; tests assert that it appears in no log, metadata or record."""


def rate_limited(retry_after_seconds: int) -> Answer:
    body = json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}).encode()
    return 429, {"Content-Type": "application/json", "Retry-After": str(retry_after_seconds)}, body


def server_error() -> Answer:
    body = json.dumps({"error": {"message": "upstream model crashed", "type": "server_error"}}).encode()
    return 500, {"Content-Type": "application/json"}, body


def completion_for(request: dict[str, Any]) -> str:
    """The deterministic answer: the last word of the prompt's last non-empty line."""
    content = request["messages"][-1]["content"]
    text = content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].split()[-1] if lines else ""


@dataclass
class OpenAICompatibleServer(ScriptedServer):
    """Scripted faults first (in order), then deterministic completions; `stall_models` never
    answer in time (each request waits `stall_seconds`)."""

    stall_models: set[str] = field(default_factory=set)
    stall_seconds: float = 5.0
    arrivals: list[float] = field(default_factory=list)
    """Monotonic arrival time of each request, in order."""
    answered: list[int] = field(default_factory=list)
    """Status code of each answer, in order."""

    def answer(self, request: Received) -> tuple[Answer, float]:
        with self.lock:
            self.requests.append(request)
            self.arrivals.append(time.monotonic())
            answer, delay = self._decide(request)
            self.answered.append(answer[0])
            return answer, delay

    def _decide(self, request: Received) -> tuple[Answer, float]:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return (401, {"Content-Type": "application/json"}, b'{"error": {"message": "bad key"}}'), 0.0
        body = json.loads(request.body)
        if body.get("model") in self.stall_models:
            return server_error(), self.stall_seconds
        if self.script:
            return self.script.pop(0), 0.0
        reply = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion_for(body)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return (200, {"Content-Type": "application/json"}, json.dumps(reply).encode()), 0.0
