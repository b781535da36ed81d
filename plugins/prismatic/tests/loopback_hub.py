"""A tiny, bounded stand-in for the Hugging Face Hub on 127.0.0.1, speaking the calls huggingface_hub 2.4 makes for
``create_repo``, ``create_branch``, ``create_commit`` (regular, non-LFS uploads), ``repo_info``, ``list_repo_tree``
and ``hf_hub_download`` (HEAD/GET ``/{repo}/resolve/{revision}/{path}``).

Repositories live in memory: ``{repo_id: Repo}``. A private repository answers 401 to requests without the owner's
token, as the Hub does. Every request is logged (method, path, Authorization header) so tests can check what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_BODY = 64 * 1024 * 1024  # bounded: tiny test models only


@dataclass
class Repo:
    private: bool = False
    token: str | None = None
    branches: dict[str, str] = field(default_factory=dict)  # branch → commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha → {path: content}
    messages: dict[str, str] = field(default_factory=dict)


class LoopbackHub:
    """``with LoopbackHub() as hub: hub.url`` — serves until the block ends."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LoopbackHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(revision, revision)]

    # -- operations ---------------------------------------------------------------------------------------------------
    def commit(self, repo_id: str, revision: str, lines: list[dict[str, Any]]) -> str:
        repo = self.repos[repo_id]
        parent = repo.branches.get(revision)
        files = dict(repo.commits[parent]) if parent else {}
        message = ""
        for line in lines:
            if line["key"] == "header":
                message = line["value"]["summary"]
            elif line["key"] == "file":
                assert line["value"]["encoding"] == "base64"
                files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            else:
                raise ValueError(f"unsupported commit operation {line['key']!r}")
        sha = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items())).encode()
                           + (parent or "").encode() + message.encode()).hexdigest()
        repo.commits[sha], repo.messages[sha], repo.branches[revision] = files, message, sha
        return sha


def _handler_for(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        # -- plumbing -------------------------------------------------------------------------------------------------
        def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
                   head: bool = False) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
            self.send_response(status)
            content_type = "application/octet-stream" if isinstance(body, bytes) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                raise ValueError("request body too large for the loopback hub")
            return self.rfile.read(length)

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization") or ""
            return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and self._token() != repo.token):
                # the Hub hides private repos: 401 + this error code → RepositoryNotFoundError
                self._reply(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                return None
            return repo

        def _dispatch(self, method: str) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.log.append((method, path, self.headers.get("Authorization")))
            body = self._body() if method == "POST" else b""
            parts = path.strip("/").split("/")
            if method == "POST" and path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
                    else payload["name"]
                if repo_id in hub.repos:
                    return self._reply(409, {"error": "You already created this model repo", "url": repo_id})
                private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
                hub.repos[repo_id] = Repo(private=private, token=self._token())
                hub.commit(repo_id, "main", [{"key": "header", "value": {"summary": "initial commit"}}])
                return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
            if method == "POST" and path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []})
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo_id, action, rev = "/".join(parts[2:4]), parts[4], "/".join(parts[5:])
                repo = self._repo(repo_id)
                if repo is None:
                    return None
                return self._api(method, repo_id, repo, action, rev, body)
            if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                repo = self._repo(repo_id)
                if repo is None:
                    return None
                sha = repo.branches.get(rev, rev)
                if sha not in repo.commits:
                    return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                content = repo.commits[sha].get(filename)
                if content is None:
                    return self._reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                etag = f'"{hashlib.sha1(content).hexdigest()}"'
                return self._reply(200, content, {"X-Repo-Commit": sha, "ETag": etag}, head=method == "HEAD")
            return self._reply(404, {"error": f"loopback hub: no route for {method} {path}"})

        def _api(self, method: str, repo_id: str, repo: Repo, action: str, rev: str, body: bytes) -> None:
            if method == "POST" and action == "branch":
                if rev in repo.branches:
                    return self._reply(409, {"error": "Reference already exists"})
                repo.branches[rev] = repo.branches["main"]
                return self._reply(200, {})
            if method == "POST" and action == "preupload":
                files = json.loads(body)["files"]
                return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                    "shouldIgnore": False} for f in files]})
            if method == "POST" and action == "commit":
                if rev not in repo.branches:
                    return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
                sha = hub.commit(repo_id, rev, [json.loads(line) for line in body.splitlines() if line.strip()])
                return self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha})
            sha = repo.branches.get(rev, rev)
            if sha not in repo.commits:
                return self._reply(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            files = repo.commits[sha]
            if method == "GET" and action == "revision":
                return self._reply(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                                         "siblings": [{"rfilename": p} for p in sorted(files)]})
            if method == "GET" and action == "tree":
                return self._reply(200, [{"type": "file", "path": p, "size": len(c),
                                          "oid": hashlib.sha1(c).hexdigest()} for p, c in sorted(files.items())])
            return self._reply(404, {"error": f"loopback hub: no route for {method} {action}"})

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

    return Handler
