"""A deterministic OpenAI-compatible chat-completions judge on 127.0.0.1, for evaluation tests.

- Grading requests (the course template) get ``grade_reply`` (default ``"Reasoning... Answer: C"``).
- Pairwise requests (``[Answer 1]`` / ``[Answer 2]`` blocks) get ``Better: 1`` or ``Better: 2`` for the
  preferred answer (one of ``preferred``, or containing ``marker``), ``Better: tie`` when both or neither are.
- ``fail_first=N`` answers the first N requests with 500; ``fail_when="text"`` answers 500 to every request
  whose messages contain ``text``, forever; ``api_key`` makes it demand ``Authorization: Bearer <key>``.

It runs in a thread (``with FakeJudge() as judge: judge.url``) so a runner in a subprocess can reach it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass
class JudgeRequest:
    """One request the judge received."""

    path: str
    model: str
    content: str
    authorization: str | None
    status: int


def pairwise_answers(content: str) -> tuple[str, str]:
    """The two answers of a pairwise request, in the order shown."""
    first = content.split("[Answer 1]\n", 1)[1].split("\n[Answer 2]\n", 1)[0]
    second = content.split("\n[Answer 2]\n", 1)[1].split("\n[End of answers]", 1)[0]
    return first, second


def pairwise_choice(content: str, prefers: Callable[[str], bool]) -> str:
    """``1``, ``2`` or ``tie``: the preferred answer block."""
    first, second = pairwise_answers(content)
    one, two = prefers(first), prefers(second)
    if one == two:
        return "tie"
    return "1" if one else "2"


@dataclass
class FakeJudge:
    """The fake judge's behaviour and what it saw."""

    marker: str = "CHALLENGER"
    preferred: frozenset[str] = frozenset()
    grade_reply: str = "The generated answer has the same details.\nAnswer: C"
    fail_first: int = 0
    fail_when: str | None = None
    api_key: str | None = None
    latency: float = 0.0
    """Seconds each answer takes (a real judge takes seconds)."""
    requests: list[JudgeRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the judge first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def prefers(self, answer: str) -> bool:
        return answer in self.preferred or self.marker in answer

    def reply_for(self, content: str) -> str:
        if "[Answer 1]" in content:
            return f"Comparing both.\nBetter: {pairwise_choice(content, self.prefers)}"
        return self.grade_reply

    def answer(self, path: str, body: dict[str, Any], authorization: str | None) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages") or []
        content = "\n".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        with self._lock:
            seen = len(self.requests)
            status = 200
            if not path.endswith("/chat/completions"):
                status = 404
            elif self.api_key is not None and authorization != f"Bearer {self.api_key}":
                status = 401
            elif seen < self.fail_first or (self.fail_when is not None and self.fail_when in content):
                status = 500
            self.requests.append(JudgeRequest(path, str(body.get("model")), content, authorization, status))
        if status != 200:
            return status, {"error": {"message": f"fake judge answered {status}"}}
        choice = {"index": 0, "message": {"role": "assistant", "content": self.reply_for(content)}}
        return 200, {"id": f"chatcmpl-{seen}", "object": "chat.completion", "choices": [choice]}

    def __enter__(self) -> Self:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if judge.latency:
                    time.sleep(judge.latency)
                status, answer = judge.answer(self.path, body, self.headers.get("Authorization"))
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-judge", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def statuses(self) -> list[int]:
        with self._lock:
            return [request.status for request in self.requests]
