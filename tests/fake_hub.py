"""A tiny in-memory Hugging Face Hub on 127.0.0.1, for tests of the real huggingface_hub code paths.

It serves what ``snapshot_download`` / ``hf_hub_download`` and ``create_repo`` / ``upload_folder``
need, with the headers and error codes of the real Hub:

- GET  /api/models/{repo}/revision/{rev}          repo info (sha, siblings)
- GET  /api/models/{repo}/tree/{rev}               file listing
- HEAD/GET /{repo}/resolve/{rev}/{filename}        file metadata (ETag, X-Repo-Commit, Content-Length) and bytes
- POST /api/repos/create, /api/validate-yaml, /api/models/{repo}/preupload/{rev}, /api/models/{repo}/commit/{rev}
- 404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound

Use in a test module (pytest puts tests/ on sys.path)::

    from fake_hub import fake_hub, hf_home  # noqa: F401  (fixtures)

    def test_download(fake_hub):
        commit = fake_hub.add_commit("owner/name", {"config.json": b"{}"})
        ...  # huggingface_hub now talks to fake_hub.url

``hf_home`` points huggingface_hub's cache and token files at a temporary folder; ``fake_hub``
(which uses it) also points huggingface_hub's endpoint at the server. huggingface_hub reads
HF_ENDPOINT and HF_HOME once at import, so the fixtures patch ``huggingface_hub.constants`` as well
as the environment (for subprocesses).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Model repositories held in memory, served over HTTP by a background thread."""

    def __init__(self) -> None:
        # repo_id -> {"refs": {name: commit}, "commits": {commit: {path: bytes}}}
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for assertions
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- repository content --------------------------------------------------------------

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Make ``files`` the whole content of ``branch`` in a new commit; return its sha."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
            digest = hashlib.sha1(repr((repo_id, branch, len(repo["commits"]))).encode())
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + files[path])
            commit = digest.hexdigest()
            repo["commits"][commit] = dict(files)
            repo["refs"][branch] = commit
            return commit

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        """Commit every file directly inside ``folder``."""
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        return self.add_commit(repo_id, files, branch)

    def add_tag(self, repo_id: str, tag: str, commit: str) -> None:
        with self._lock:
            self.repos[repo_id]["refs"][tag] = commit

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repository at a revision (for checking uploads)."""
        with self._lock:
            repo = self.repos[repo_id]
            return dict(repo["commits"][repo["refs"].get(revision, revision)])

    def resolve(self, repo_id: str, revision: str) -> tuple[str | None, str | None]:
        """(error code, commit): error code is None, "RepoNotFound" or "RevisionNotFound"."""
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                return "RepoNotFound", None
            if revision in repo["refs"]:
                return None, repo["refs"][revision]
            if revision in repo["commits"]:
                return None, revision
            return "RevisionNotFound", None

    # -- server lifetime -----------------------------------------------------------------

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        # -- helpers ---------------------------------------------------------------------

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(data).encode(), headers)

        def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _split(self) -> list[str]:
            hub.requests.append((self.command, self.path))
            return [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]

        def _resolve_or_fail(self, repo_id: str, revision: str) -> str | None:
            code, commit = hub.resolve(repo_id, revision)
            if code == "RepoNotFound":
                self._error(404, code, "Repository not found")
            elif code == "RevisionNotFound":
                self._error(404, code, f"Invalid rev id: {revision}")
            return commit

        # -- routes ----------------------------------------------------------------------

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            parts = self._split()
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
                repo_id, kind, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                commit = self._resolve_or_fail(repo_id, revision)
                if commit is None:
                    return
                files = hub.files(repo_id, commit)
                if kind == "revision":
                    self._json(200, {
                        "id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                        "siblings": [{"rfilename": name} for name in sorted(files)],
                    })
                else:
                    self._json(200, [
                        {"type": "file", "path": name, "size": len(data), "oid": _git_blob_sha(data)}
                        for name, data in sorted(files.items())
                    ])
                return
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
                commit = self._resolve_or_fail(repo_id, revision)
                if commit is None:
                    return
                data = hub.files(repo_id, commit).get(filename)
                if data is None:
                    self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
                    return
                headers = {"X-Repo-Commit": commit, "ETag": f'"{_git_blob_sha(data)}"', "Accept-Ranges": "bytes"}
                start = 0
                range_header = self.headers.get("Range")
                if range_header and range_header.startswith("bytes="):
                    start = int(range_header[len("bytes="):].split("-")[0] or 0)
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    self._send(206, data[start:], headers, "application/octet-stream")
                else:
                    self._send(200, data, headers, "application/octet-stream")
                return
            self._error(404, "NotFound", f"no route for GET {self.path}")

        def do_POST(self) -> None:
            parts = self._split()
            body = self._body()
            if parts == ["api", "repos", "create"]:
                payload = json.loads(body)
                repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
                url = f"{hub.url}/{repo_id}"
                if repo_id in hub.repos:
                    self._json(409, {"error": "You already created this model repo", "url": url})
                    return
                hub.add_commit(repo_id, {".gitattributes": b""})
                self._json(200, {"url": url, "name": repo_id, "id": repo_id})
                return
            if parts == ["api", "validate-yaml"]:
                self._json(200, {"errors": [], "warnings": []})
                return
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("preupload", "commit"):
                repo_id, kind, revision = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
                commit = self._resolve_or_fail(repo_id, revision)
                if commit is None:
                    return
                if kind == "preupload":
                    files = json.loads(body)["files"]
                    self._json(200, {"files": [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                        for f in files
                    ]})
                    return
                content = hub.files(repo_id, commit)
                message = ""
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        message = item["value"].get("summary", "")
                    elif item["key"] == "file":
                        content[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        content.pop(item["value"]["path"], None)
                    else:
                        self._error(400, "BadRequest", f"fake hub does not support {item['key']}")
                        return
                new_commit = hub.add_commit(repo_id, content, branch=revision)
                hub.repos[repo_id].setdefault("messages", {})[new_commit] = message
                self._json(200, {
                    "commitUrl": f"{hub.url}/{repo_id}/commit/{new_commit}",
                    "commitOid": new_commit, "pullRequestUrl": None,
                })
                return
            self._error(404, "NotFound", f"no route for POST {self.path}")

    return Handler


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Send huggingface_hub's requests to ``endpoint`` (in this process and in subprocesses)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def set_offline(monkeypatch: pytest.MonkeyPatch, offline: bool) -> None:
    """Switch huggingface_hub's offline mode (HF_HUB_OFFLINE) for this test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HF_HOME (cache, token) for this test; online mode unless a test says otherwise;
    no progress bars."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    home = tmp_path / "hf_home"
    home.mkdir()
    for name, value in {
        "HF_HOME": home,
        "HF_HUB_CACHE": home / "hub",
        "HF_ASSETS_CACHE": home / "assets",
        "HF_TOKEN_PATH": home / "token",
        "HF_STORED_TOKENS_PATH": home / "stored_tokens",
    }.items():
        monkeypatch.setenv(name, str(value))
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, str(value))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    set_offline(monkeypatch, False)
    bars_were_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield home
    finally:
        if not bars_were_disabled:
            enable_progress_bars()


@pytest.fixture
def fake_hub(hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running FakeHub that huggingface_hub talks to, with an empty cache."""
    hub = FakeHub().start()
    point_hub_at(monkeypatch, hub.url)
    try:
        yield hub
    finally:
        hub.stop()
