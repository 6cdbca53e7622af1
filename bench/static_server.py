"""Serve pre-rendered backend answers from files, in its own process (so the client side is measured alone).

    python bench/static_server.py PORT DIR

``GET /feedback/ab`` answers ``DIR/ab.json``, ``GET /feedback`` answers ``DIR/feedback.json`` (both
``application/json``, with Content-Length, as the backend's JSONResponse). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROUTES = {"/feedback/ab": "ab.json", "/feedback": "feedback.json"}


def make_handler(directory: Path) -> type[BaseHTTPRequestHandler]:
    bodies = {path: (directory / name) for path, name in ROUTES.items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            source = bodies.get(self.path)
            if source is None or not source.is_file():
                self.send_error(404)
                return
            body = source.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(ConnectionError):  # a client past its body limit hangs up mid-body
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> int:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(directory))
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
