# mypy: ignore-errors
# (This script runs in the Phoenix virtualenv built by hack/servers-assets.sh, never in the project's: mypy of
# the project cannot see the phoenix and grpc packages, so it is not type-checked.)
"""Start the Phoenix server with its gRPC OTLP receiver bound to 127.0.0.1 only.

Phoenix 20.x binds the gRPC receiver to ``[::]:$PHOENIX_GRPC_PORT`` (all interfaces, IPv4 and IPv6) and has
no setting for its address; only read-only mode turns it off, and that also refuses writes. This wrapper
rewrites the address of every port the gRPC aio server adds to ``127.0.0.1`` before the server starts, then
runs ``phoenix.server.main serve`` exactly as ``python -m phoenix.server.main serve`` would (the HTTP server
follows ``PHOENIX_HOST``). It refuses to start if the method it patches is missing (a new Phoenix or grpc),
so a version bump cannot silently put the receiver back on every interface.

Usage: python phoenix_loopback.py [serve arguments...]
"""

from __future__ import annotations

import runpy
import sys

import grpc.aio._server as aio_server

LOOPBACK = "127.0.0.1"


def _loopback(address: str) -> str:
    port = address.rsplit(":", 1)[1]
    return f"{LOOPBACK}:{port}"


def _patch(cls, method_name):
    original = getattr(cls, method_name, None)
    if original is None:
        raise SystemExit(f"phoenix_loopback: grpc.aio Server.{method_name} is missing; cannot keep gRPC on loopback")

    def on_loopback(self, address, *args, **kwargs):
        return original(self, _loopback(address), *args, **kwargs)

    setattr(cls, method_name, on_loopback)


def main() -> None:
    for name in ("add_insecure_port", "add_secure_port"):
        _patch(aio_server.Server, name)
    sys.argv = ["phoenix", "serve", *sys.argv[1:]]
    runpy.run_module("phoenix.server.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
