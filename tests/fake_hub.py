"""A local stand-in for the Hugging Face Hub's HTTP API: the only fake in the Hub tests.

`FakeHub` is a threaded `http.server` on 127.0.0.1 that implements the endpoints huggingface_hub 2.x,
transformers and peft call to create a repo, commit files (regular base64 files and git-LFS "basic"
uploads), list and describe a repo at a revision, create branches and download files
(`resolve/{revision}/{path}` with the ETag / X-Repo-Commit headers the client checks). Everything above
this HTTP boundary in the tests is the real library code.

It records every request (method, path, headers, body) so tests can check where a token travelled, and
it refuses writes without a valid token, like the Hub. `FakeHub.activate(monkeypatch, tmp_path)` points
huggingface_hub at the server: the endpoint, offline flag, cache and token file are read by
huggingface_hub at import time, so their module-level values are set (configuration, not mocks).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

#: Files the fake stores through git-LFS, as the Hub's default `.gitattributes` does.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.h5", "*.msgpack", "*.onnx")
_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
_SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 0
    time: float = 0.0


@dataclass
class StoredFile:
    content: bytes
    lfs_sha256: str | None = None  # set for LFS files

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.git_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    owner: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        revision = unquote(revision)
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _SHA1.match(revision) and revision in self.commits:
            return self.commits[revision]
        return None


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class FakeHub:
    """The fake Hub's state and server. Use as a context manager or call `start()` / `stop()`."""

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "FakeHub is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def activate(self, monkeypatch: Any, cache_dir: Path) -> None:
        """Point huggingface_hub (and transformers' shared HfApi) at this server, online, with a fresh
        cache and no token file. These values are read at import time by huggingface_hub, hence setattr."""
        import huggingface_hub
        import transformers.utils.hub as tf_hub
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("DISABLE_SAFETENSORS_CONVERSION", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir / "hub"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache_dir / "no-token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(cache_dir / "no-stored-tokens"))
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain git-LFS uploads, no Xet CAS
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", self.url)
        monkeypatch.setattr(tf_hub, "_hf_api", None)

    # -- inspection helpers for tests -----------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self._lock:
            commit = self.repos[repo_id].resolve(revision)
            assert commit is not None, f"{repo_id}@{revision} not found"
            return {path: f.content for path, f in commit.files.items()}

    def commit_sha(self, repo_id: str, revision: str = "main") -> str:
        with self._lock:
            commit = self.repos[repo_id].resolve(revision)
            assert commit is not None, f"{repo_id}@{revision} not found"
            return commit.oid

    def add_files(self, repo_id: str, files: dict[str, bytes], *, owner: str = "fake-user",
                  message: str = "seed") -> str:
        """Create (if needed) and commit to a repo directly, bypassing HTTP: to seed fixtures."""
        with self._lock:
            repo = self.repos.get(repo_id) or self._create_repo(repo_id, owner, private=False)
            ops = [{"key": "file", "value": {"path": p, "content": base64.b64encode(c).decode(), "encoding": "base64"}}
                   for p, c in files.items()]
            return self._commit(repo, "main", message, ops).oid

    # -- state changes -----------------------------------------------------------------------------
    def _create_repo(self, repo_id: str, owner: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, owner=owner, private=private)
        self.repos[repo_id] = repo
        initial = Commit(oid=_commit_oid(None, "initial commit", {}), parent=None, message="initial commit",
                         files={".gitattributes": StoredFile(_GITATTRIBUTES)})
        repo.commits[initial.oid] = initial
        repo.branches["main"] = initial.oid
        return repo

    def _commit(self, repo: Repo, branch: str, message: str, ops: list[dict]) -> Commit:
        head = repo.resolve(branch)
        if head is None or branch not in repo.branches:
            raise _HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        files = dict(head.files)
        for op in ops:
            key, value = op["key"], op["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in self.lfs_objects:
                    raise _HubError(400, f"LFS object {oid} of {value['path']} was never uploaded")
                files[value["path"]] = StoredFile(self.lfs_objects[oid], lfs_sha256=oid)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            else:
                raise _HubError(400, f"unsupported commit operation {key!r}")
        commit = Commit(oid=_commit_oid(head.oid, message, files), parent=head.oid, message=message, files=files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit


def _commit_oid(parent: str | None, message: str, files: dict[str, StoredFile]) -> str:
    h = hashlib.sha1(f"{parent}\n{message}\n".encode())
    for path in sorted(files):
        h.update(f"{path}:{files[path].git_oid}\n".encode())
    return h.hexdigest()


def _validate_card(content: str) -> list[dict[str, str]]:
    """Errors the Hub's /api/validate-yaml would report for a README's YAML block (a subset)."""
    match = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(\r?\n|$)", content)
    if not match:
        return []
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [{"message": f"YAML: {err}"}]
    if data is None:
        return []
    if not isinstance(data, dict):
        return [{"message": "metadata must be a mapping"}]
    errors = []
    for key in ("tags", "datasets"):
        if key in data and not isinstance(data[key], (list, str)):
            errors.append({"message": f'"{key}" must be a list of strings'})
    if "model-index" in data:
        mi = data["model-index"]
        if not isinstance(mi, list) or not all(isinstance(m, dict) and "name" in m for m in mi):
            errors.append({"message": '"model-index" must be a list of {name, results}'})
        else:
            for m in mi:
                for r in m.get("results", []):
                    if not {"task", "dataset", "metrics"} <= set(r):
                        errors.append({"message": '"model-index[].results[]" needs task, dataset and metrics'})
                    elif not all("type" in x and "value" in x for x in r["metrics"]):
                        errors.append({"message": '"model-index[].results[].metrics[]" needs type and value'})
    return errors


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              head: bool = False) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)
        self._record.status = status

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token not in self.fake.tokens:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return self.fake.tokens[token]

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user()
        repo = self.fake.repos.get(repo_id)
        if repo is None or (repo.private and user != repo.owner):
            raise _HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write and user != repo.owner:
            raise _HubError(403 if user else 401, "You don't have the rights to write to this repository")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")
        return commit

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        body = self._read_body() if method in ("POST", "PUT") else b""
        self._record = RecordedRequest(method, unquote(parts.path), parse_qs(parts.query),
                                       {k.lower(): v for k, v in self.headers.items()}, body, time=time.monotonic())
        with self.fake._lock:
            self.fake.requests.append(self._record)
            try:
                if not self._route(method, parts.path, body):
                    self.fake.unhandled.append(self._record)
                    self._json(404, {"error": f"fake hub: no route for {method} {parts.path}"})
            except _HubError as err:
                headers = {"X-Error-Message": err.message, **err.headers}
                if err.code:
                    headers["X-Error-Code"] = err.code
                if method == "HEAD":
                    self._send(err.status, b"", headers, head=True)
                else:
                    self._json(err.status, {"error": err.message}, headers)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- routes ----------------------------------------------------------------------------------
    def _route(self, method: str, raw_path: str, body: bytes) -> bool:
        path = raw_path
        fake = self.fake
        if method == "POST" and path == "/api/repos/create":
            user = self._user()
            if user is None:
                raise _HubError(401, "You must be authenticated to create a repo")
            payload = json.loads(body)
            if payload.get("type", "model") != "model":
                raise _HubError(400, "the fake hub only hosts model repos")
            owner = payload.get("organization") or user
            if owner != user:
                raise _HubError(403, f"You don't have the rights to create a repo under {owner!r}")
            repo_id = f"{owner}/{payload['name']}"
            if repo_id in fake.repos:  # the Hub's 409 body still carries the url (huggingface_hub reads it)
                self._json(409, {"error": "You already created this model repo", "url": f"{fake.url}/{repo_id}"},
                           {"X-Error-Message": "You already created this model repo"})
                return True
            fake._create_repo(repo_id, owner, payload.get("visibility") == "private")
            self._json(200, {"url": f"{fake.url}/{repo_id}", "name": repo_id})
            return True
        if method == "POST" and path == "/api/validate-yaml":
            self._user()
            errors = _validate_card(json.loads(body).get("content", ""))
            self._json(400 if errors else 200, {"errors": errors, "warnings": []})
            return True
        if method == "GET" and path == "/api/whoami-v2":
            user = self._user()
            if user is None:
                raise _HubError(401, "Invalid credentials in Authorization header")
            self._json(200, {"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
            return True
        if path == "/api/agent-harnesses":
            self._json(404, {"error": "not served by the fake hub"})
            return True

        m = re.match(r"^/api/models/([^/]+/[^/]+)(/.*)?$", path)
        if m:
            return self._route_api(method, unquote(m.group(1)), m.group(2) or "", body)
        m = re.match(r"^/([^/]+/[^/]+)\.git/info/lfs/objects/batch$", path)
        if m and method == "POST":
            self._repo(unquote(m.group(1)), write=True)
            payload = json.loads(body)
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in fake.lfs_objects:
                    entry["actions"] = {"upload": {"href": f"{fake.url}/fake-lfs/{obj['oid']}"}}
                objects.append(entry)
            self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                       {"Content-Type": "application/vnd.git-lfs+json"})
            return True
        m = re.match(r"^/fake-lfs/([0-9a-f]{64})$", path)
        if m and method == "PUT":
            if hashlib.sha256(body).hexdigest() != m.group(1):
                raise _HubError(400, "LFS object content does not match its sha256")
            fake.lfs_objects[m.group(1)] = body
            self._send(200)
            return True
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and method in ("GET", "HEAD"):
            repo = self._repo(unquote(m.group(1)))
            commit = self._commit_at(repo, m.group(2))
            filename = unquote(m.group(3))
            stored = commit.files.get(filename)
            if stored is None:
                raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
            content = stored.content
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{stored.etag}"',
                       "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if stored.lfs_sha256:
                headers["X-Linked-Etag"] = f'"{stored.lfs_sha256}"'
                headers["X-Linked-Size"] = str(len(content))
            status = 200
            rng = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
            if rng and method == "GET":
                start = int(rng.group(1))
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
                content, status = content[start:], 206
            headers["Content-Length"] = str(len(content))
            self._send(status, content, headers, head=method == "HEAD")
            return True
        return False

    def _route_api(self, method: str, repo_id: str, rest: str, body: bytes) -> bool:
        fake = self.fake
        if method == "GET" and (rest == "" or rest.startswith("/revision/")):
            repo = self._repo(repo_id)
            commit = self._commit_at(repo, rest[len("/revision/"):] if rest else "main")
            blobs = parse_qs(urlsplit(self.path).query).get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for p, f in sorted(commit.files.items()):
                sib: dict[str, Any] = {"rfilename": p}
                if blobs:
                    sib.update(size=len(f.content), blobId=f.git_oid)
                    if f.lfs_sha256:
                        sib["lfs"] = {"size": len(f.content), "sha256": f.lfs_sha256, "pointerSize": 134}
                siblings.append(sib)
            readme = commit.files.get("README.md")
            card_data = None
            if readme is not None:
                mm = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---", readme.content.decode("utf-8", "replace"))
                card_data = yaml.safe_load(mm.group(1)) if mm else None
            self._json(200, {"id": repo_id, "modelId": repo_id, "author": repo.owner, "sha": commit.oid,
                             "private": repo.private, "disabled": False, "gated": False, "tags": [],
                             "siblings": siblings, "cardData": card_data})
            return True
        m = re.match(r"^/tree/([^/]+)(/.*)?$", rest)
        if m and method == "GET":
            repo = self._repo(repo_id)
            commit = self._commit_at(repo, m.group(1))
            prefix = unquote(m.group(2) or "").strip("/")
            recursive = parse_qs(urlsplit(self.path).query).get("recursive", ["false"])[0].lower() == "true"
            entries: dict[str, dict] = {}
            for p, f in sorted(commit.files.items()):
                if prefix and not p.startswith(prefix + "/"):
                    continue
                rel = p[len(prefix) + 1:] if prefix else p
                if "/" in rel and not recursive:
                    folder = (prefix + "/" if prefix else "") + rel.split("/")[0]
                    entries[folder] = {"type": "directory", "path": folder, "oid": "0" * 40}
                    continue
                entry = {"type": "file", "path": p, "size": len(f.content), "oid": f.git_oid}
                if f.lfs_sha256:
                    entry["lfs"] = {"oid": f.lfs_sha256, "size": len(f.content), "pointerSize": 134}
                entries[p] = entry
            self._json(200, list(entries.values()))
            return True
        m = re.match(r"^/preupload/([^/]+)$", rest)
        if m and method == "POST":
            repo = self._repo(repo_id, write=True)
            commit = self._commit_at(repo, m.group(1))
            out = []
            for f in json.loads(body)["files"]:
                lfs = any(fnmatch.fnmatch(f["path"].rsplit("/", 1)[-1], pat) for pat in LFS_PATTERNS)
                existing = commit.files.get(f["path"])
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs and f["size"] > 0 else "regular",
                            "shouldIgnore": False, "oid": existing.git_oid if existing else None})
            self._json(200, {"files": out})
            return True
        m = re.match(r"^/commit/([^/]+)$", rest)
        if m and method == "POST":
            repo = self._repo(repo_id, write=True)
            if parse_qs(urlsplit(self.path).query).get("create_pr"):
                raise _HubError(400, "the fake hub does not implement pull requests")
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = lines[0]
            if header.get("key") != "header":
                raise _HubError(400, "commit payload must start with a header line")
            branch = unquote(m.group(1))
            parent = header["value"].get("parentCommit")
            if parent is not None and repo.branches.get(branch) != parent:
                raise _HubError(412, "parentCommit is not the head of the branch")
            commit = fake._commit(repo, branch, header["value"]["summary"], lines[1:])
            self._json(200, {"commitUrl": f"{fake.url}/{repo_id}/commit/{commit.oid}", "commitOid": commit.oid,
                             "pullRequestUrl": None, "success": True})
            return True
        m = re.match(r"^/branch/([^/]+)$", rest)
        if m and method == "POST":
            repo = self._repo(repo_id, write=True)
            branch = unquote(m.group(1))
            if branch in repo.branches:
                raise _HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            repo.branches[branch] = self._commit_at(repo, start).oid
            self._json(200, {})
            return True
        if rest == "/refs" and method == "GET":
            repo = self._repo(repo_id)
            self._json(200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                                          for b, c in repo.branches.items()], "tags": [], "converts": []})
            return True
        return False
