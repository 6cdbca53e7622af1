"""Real git over loopback for tests: bare repos served by ``git http-backend`` behind Basic auth, human
commits made with the git CLI, and a fake Gitea pull-request API that records its calls."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from canopy_devkit.controlplane.certs import CertificateAuthority

HUMAN = {"GIT_AUTHOR_NAME": "Ada Human", "GIT_AUTHOR_EMAIL": "ada@example.com"}


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": HUMAN["GIT_AUTHOR_NAME"],
        "GIT_AUTHOR_EMAIL": HUMAN["GIT_AUTHOR_EMAIL"],
        "GIT_COMMITTER_NAME": HUMAN["GIT_AUTHOR_NAME"],
        "GIT_COMMITTER_EMAIL": HUMAN["GIT_AUTHOR_EMAIL"],
    }
    return env | (extra or {})


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout


def make_repo(
    root: Path,
    name: str,
    files: dict[str, str | bytes],
    branch: str = "main",
    symlinks: dict[str, str] | None = None,
) -> Path:
    """A bare repository ``root/<name>.git`` whose ``branch`` holds ``files`` (and ``symlinks``: path to link
    target) in one human commit."""
    bare = root / f"{name}.git"
    git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare))
    git("config", "http.receivepack", "true", cwd=bare)
    git("config", "uploadpack.allowFilter", "true", cwd=bare)  # partial clones, as Gitea and GitHub serve them
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git("init", "--quiet", f"--initial-branch={branch}", cwd=work)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(text.encode() if isinstance(text, str) else text)
        for path, target in (symlinks or {}).items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).symlink_to(target)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", "Initial values", cwd=work)
        git("push", "--quiet", str(bare), f"HEAD:refs/heads/{branch}", cwd=work)
    return bare


def human_commit(bare: Path, path: str, edit: Callable[[str], str], message: str, branch: str = "main") -> str:
    """A human's commit on ``branch`` that rewrites ``path`` with ``edit``; returns its SHA."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        git("clone", "--quiet", f"--branch={branch}", bare.as_uri(), str(work))
        file = work / path
        file.write_bytes(edit(file.read_bytes().decode()).encode())
        git("commit", "--quiet", "-am", message, cwd=work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()


def merge(bare: Path, branch: str, message: str, into: str = "main") -> str:
    """A human merging ``branch`` into ``into`` with a merge commit (what a forge's merge button does)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        git("clone", "--quiet", f"--branch={into}", bare.as_uri(), str(work))
        git("fetch", "--quiet", "origin", f"refs/heads/{branch}", cwd=work)
        git("merge", "--quiet", "--no-ff", "-m", message, "FETCH_HEAD", cwd=work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{into}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()


def message(bare: Path, ref: str) -> str:
    """The full commit message of ``ref``."""
    return git("log", "-1", "--format=%B", ref, cwd=bare)


def show(bare: Path, ref: str, path: str) -> str:
    return git("show", f"{ref}:{path}", cwd=bare)


def history(bare: Path, ref: str = "main") -> list[tuple[str, str, str]]:
    """``(sha, author name, subject)`` newest first."""
    out = git("log", "--format=%H%x00%an%x00%s", ref, cwd=bare)
    return [tuple(line.split("\0")) for line in out.splitlines()]  # type: ignore[misc]


def merge_commits(bare: Path, ref: str = "main") -> list[str]:
    return git("rev-list", "--min-parents=2", ref, cwd=bare).split()


@dataclass
class GitHttpServer:
    """Smart-HTTP git on 127.0.0.1 (``git http-backend`` as CGI) that demands Basic auth."""

    root: Path
    username: str
    password: str
    on_push_advertisement: list[Callable[[], None]] = field(default_factory=list)
    """Run (and removed) one per push, just before the server tells the client where the refs are."""
    rejected_auth: int = 0
    received_auth: list[str] = field(default_factory=list)
    """Every ``Authorization`` header a request carried (what a hostile server would have collected)."""
    port: int = 0
    host: str = "127.0.0.1"
    scheme: str = "http"

    def url(self, name: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{name}.git"

    def _authorised(self, header: str | None) -> bool:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {token}"


def _cgi(server: GitHttpServer, method: str, path: str, query: str, headers: Any, body: bytes) -> bytes:
    env = git_env(
        {
            "GIT_PROJECT_ROOT": str(server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": server.username,
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_CONTENT_ENCODING": headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": headers.get("Git-Protocol", ""),
        }
    )
    done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
    return done.stdout


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _git_handler(server: GitHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            if self.headers.get("Authorization"):
                server.received_auth.append(self.headers["Authorization"])
            if not server._authorised(self.headers.get("Authorization")):
                server.rejected_auth += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            parts = urlsplit(self.path)
            body = _read_body(self) if self.command == "POST" else b""
            if parts.query == "service=git-receive-pack" and server.on_push_advertisement:
                server.on_push_advertisement.pop(0)()
            raw = _cgi(server, self.command, parts.path, parts.query, self.headers, body)
            head, _, payload = raw.partition(b"\r\n\r\n")
            status, fields = 200, []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    fields.append((name, value.strip()))
            self.send_response(status)
            for name, value in fields:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextmanager
def _serving(httpd: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextmanager
def git_http_server(
    root: Path, username: str, password: str, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[GitHttpServer]:
    """Serve ``root`` on ``host``; with ``tls`` (a server context holding its certificate) over HTTPS."""
    server = GitHttpServer(root=root, username=username, password=password, host=host)
    httpd = ThreadingHTTPServer((host, 0), _git_handler(server))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        server.scheme = "https"
    server.port = httpd.server_address[1]
    with _serving(httpd):
        yield server


def tls_server_context(hosts: list[str], directory: Path) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for ``hosts`` issued by a new private CA, and that CA's PEM (what ``ca.crt`` holds)."""
    ca = CertificateAuthority.create("canopy-test-git-ca")
    pair = ca.issue_serving(hosts)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "git.crt", directory / "git.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    key.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context, ca.cert_pem.decode()


@dataclass
class FakeGitea:
    """The pull-request part of Gitea's API under ``/api/v1``; records every call."""

    username: str
    password: str
    port: int = 0
    calls: list[tuple[str, str, dict[str, list[str]], Any]] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    received_auth: list[str] = field(default_factory=list)
    """Every ``Authorization`` header a request carried."""

    scheme: str = "http"

    @property
    def api_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/api/v1"

    def posts(self) -> list[Any]:
        return [body for method, _, _, body in self.calls if method == "POST"]

    def mark_merged(self, number: int) -> None:
        """What the forge shows once a human pressed "merge" (the merge itself is made with ``merge``)."""
        for pr in self.pulls:
            if pr["number"] == number:
                pr.update(state="closed", merged=True)

    def _authorised(self, header: str | None) -> bool:
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header in (f"Basic {basic}", f"token {self.password}")

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self.calls.append((method, path, query, body))
        parts = path.removeprefix("/api/v1/repos/").split("/")
        if len(parts) < 3 or parts[2] != "pulls":
            return 404, {"message": "not found"}
        owner, repo = parts[0], parts[1]
        if method == "POST":
            if any(p["head"]["ref"] == body["head"] and p["state"] == "open" for p in self.pulls):
                return 409, {"message": "pull request already exists for these targets"}
            number = len(self.pulls) + 1
            pr = {
                "number": number,
                "html_url": f"http://127.0.0.1:{self.port}/{owner}/{repo}/pulls/{number}",
                "state": "open",
                "merged": False,
                "title": body["title"],
                "body": body["body"],
                "head": {"ref": body["head"]},
                "base": {"ref": body["base"]},
            }
            self.pulls.append(pr)
            return 201, pr
        if len(parts) == 4:
            found = [p for p in self.pulls if str(p["number"]) == parts[3]]
            return (200, found[0]) if found else (404, {"message": "not found"})
        state = query.get("state", ["open"])[0]
        return 200, [p for p in self.pulls if state == "all" or p["state"] == state]


def _gitea_handler(fake: FakeGitea) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _serve(self) -> None:
            if self.headers.get("Authorization"):
                fake.received_auth.append(self.headers["Authorization"])
            if not fake._authorised(self.headers.get("Authorization")):
                status, data = 401, {"message": "unauthorized"}
            else:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, data = fake.handle(
                    self.command, parts.path, parse_qs(parts.query), json.loads(raw) if raw else None
                )
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextmanager
def fake_gitea(username: str, password: str, *, tls: ssl.SSLContext | None = None) -> Iterator[FakeGitea]:
    fake = FakeGitea(username=username, password=password)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _gitea_handler(fake))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        fake.scheme = "https"
    fake.port = httpd.server_address[1]
    with _serving(httpd):
        yield fake
