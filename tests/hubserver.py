"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests: it serves repositories that a test writes, in the
Hub's URL layout (``/{repo}/resolve/{revision}/{file}``) and with the Hub's headers (``X-Repo-Commit``, ``ETag``,
``X-Error-Code``), so that huggingface_hub and transformers download through their own clients, over real HTTP,
into their own cache. Point ``HF_ENDPOINT`` at :attr:`Hub.url`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class Hub:
    """Repositories by id: each commit a folder of files; branches and tags name commits."""

    def __init__(self) -> None:
        self.commits: dict[str, dict[str, Path]] = {}  # repo id -> commit -> folder
        self.refs: dict[str, dict[str, str]] = {}  # repo id -> branch or tag -> commit
        self.gated: set[str] = set()
        self.cut: set[str] = set()  # "repo/file": half of it is sent, then the network fails until removed
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, repo: str, folder: Path, ref: str = "main") -> str:
        """Publish ``folder`` as a new commit of ``repo``, on branch or tag ``ref``; returns the commit hash."""
        digest = hashlib.sha1(repo.encode())
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
        commit = digest.hexdigest()
        self.commits.setdefault(repo, {})[commit] = folder
        self.refs.setdefault(repo, {})[ref] = commit
        return commit

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _range_start(header: str | None) -> int:
    """Where ``Range: bytes=N-`` asks a file to start (0 without one)."""
    return int(header.removeprefix("bytes=").split("-")[0]) if header and header.startswith("bytes=") else 0


def _oid(path: Path) -> str:
    """A file's git blob id, as the hub lists it."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, *args: object) -> None:  # quiet: the test reads hub.requests
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlparse(self.path).path).strip("/")
        self.hub.requests.append(f"{self.command} /{path}")
        parts = path.split("/")
        api = parts[0] == "api" and parts[1:2] in (["models"], ["datasets"])
        if api:  # /api/{models|datasets}/{repo}[/revision/{revision}] or .../tree/{revision}/{folder}
            parts = parts[2:] if parts[1] == "models" else ["datasets", *parts[2:]]
            verb = next((i for i, part in enumerate(parts) if part in ("revision", "tree", "paths-info")), len(parts))
        else:  # /[datasets/]{repo}/resolve/{revision}/{file}
            verb = parts.index("resolve") if "resolve" in parts[1:4] else len(parts)
        repo, revision, name = (
            "/".join(parts[:verb]),
            "/".join(parts[verb + 1 : verb + 2]) or "main",
            "/".join(parts[verb + 2 :]),
        )
        if repo not in self.hub.commits:
            return self._error(401, "RepoNotFound", body)
        if repo in self.hub.gated:
            return self._error(403, "GatedRepo", body)
        commit = self.hub.refs[repo].get(revision, revision)
        if commit not in self.hub.commits[repo]:
            return self._error(404, "RevisionNotFound", body)
        folder = self.hub.commits[repo][commit]
        if api:
            return self._listing(repo, commit, folder, name if parts[verb : verb + 1] == ["tree"] else None, body)
        file = folder / name
        if not file.is_file():
            return self._error(404, "EntryNotFound", body, commit)
        if f"{repo}/{name}" in self.hub.cut:
            return self._cut_off(file.read_bytes(), commit, body)
        self._send(file.read_bytes(), commit, "application/octet-stream", body)

    def _listing(self, repo: str, commit: str, folder: Path, tree: str | None, body: bool) -> None:
        """The repository's description (``/api/models/{repo}``), or the files under ``tree``."""
        if tree is None:
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            siblings = [{"rfilename": str(p.relative_to(folder))} for p in files]
            info = {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings, "tags": []}
            return self._send(json.dumps(info).encode(), commit, "application/json", body)
        base = folder / tree
        recursive = "recursive=true" in self.path.lower()
        inside = sorted(base.rglob("*") if recursive else base.glob("*"))
        entries = [
            {"type": "file", "path": str(p.relative_to(folder)), "size": p.stat().st_size, "oid": _oid(p)}
            if p.is_file()
            else {"type": "directory", "path": str(p.relative_to(folder)), "oid": commit}
            for p in inside
        ]
        self._send(json.dumps(entries).encode(), commit, "application/json", body)

    def _send(self, data: bytes, commit: str, kind: str, body: bool) -> None:
        start = _range_start(self.headers.get("Range"))  # a resumed download asks for the rest only
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", kind)
        self.end_headers()
        if body:
            self.wfile.write(data[start:])

    def _cut_off(self, data: bytes, commit: str, body: bool) -> None:
        """The network failing midway: the first GET gets half of ``data`` before the connection drops, every later
        one is dropped before an answer (a HEAD still gets the file's size and commit)."""
        if not body:
            return self._send(data, commit, "application/octet-stream", body)
        if self.hub.requests.count(self.hub.requests[-1]) == 1:
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _error(self, status: int, code: str, body: bool, commit: str | None = None) -> None:
        message = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        if body:
            self.wfile.write(message)
