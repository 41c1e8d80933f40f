"""A loopback Hugging Face Hub-compatible HTTP server for tests (no internet needed).

It implements the wire protocol that ``huggingface_hub`` (HfApi, hf_hub_download) and timm's
``hf-hub:`` loader actually use, as read from the installed ``huggingface_hub`` sources:

* ``POST /api/repos/create``; ``POST /api/validate-yaml``; ``GET /api/whoami-v2``
* ``GET /api/models/{repo}[/revision/{rev}]`` (model info with siblings)
* ``POST /api/models/{repo}/branch/{branch}``
* ``POST /api/models/{repo}/preupload/{rev}`` (upload mode per file: regular or lfs)
* ``POST /{repo}.git/info/lfs/objects/batch`` + ``PUT``/``POST`` of the basic LFS transfer
* ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: header, file, lfsFile, deletedFile)
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ETag, X-Repo-Commit, X-Linked-Etag and
  X-Linked-Size for LFS files
* errors as the Hub sends them: 404/401 with ``X-Error-Code`` RepoNotFound, RevisionNotFound or
  EntryNotFound, so huggingface_hub raises its typed errors.

A commit is applied atomically (all files or none). Fault injection: ``fail_next(endpoint,
times, status)`` answers the next requests to an endpoint with an error, ``serve_truncated``
sends a file shorter than its advertised size. Every request is logged in ``requests``.
"""
import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Set, Tuple, Union
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".png", ".jpg", ".npz", ".onnx")
ENDPOINTS = (
    "create_repo", "validate_yaml", "whoami", "model_info", "branch", "preupload",
    "lfs_batch", "lfs_upload", "lfs_verify", "commit", "resolve",
)


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob (what the Hub reports as oid/ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class LfsPointer:
    sha256: str
    size: int


FileEntry = Union[bytes, LfsPointer]


@dataclass
class Commit:
    oid: str
    parent: Optional[str]
    message: str
    files: Dict[str, FileEntry]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: Dict[str, Commit] = field(default_factory=dict)
    branches: Dict[str, str] = field(default_factory=dict)
    lfs_objects: Dict[str, bytes] = field(default_factory=dict)  # sha256 -> content, per repo like the Hub

    def resolve(self, revision: str) -> Optional[Commit]:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)


class HubError(Exception):
    """An error response: status, X-Error-Code and message."""

    def __init__(self, status: int, message: str, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class LoopbackHub(ThreadingHTTPServer):
    """The server and its state. Bind on construction (port 0 picks a free port), serve with ``start``."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tokens: Tuple[str, ...] = ("hf_loopback_write",)):
        super().__init__((host, port), _Handler)
        self.endpoint = f"http://{host}:{self.server_address[1]}"
        self.tokens: Set[str] = set(tokens)
        self.lock = threading.RLock()
        self.repos: Dict[str, Repo] = {}
        self.requests: List[Tuple[str, str]] = []
        self._faults: Dict[str, List[int]] = {}
        self._truncated: Set[Tuple[str, str]] = set()
        self._commit_counter = 0
        self._thread: Optional[threading.Thread] = None

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> "LoopbackHub":
        self._thread = threading.Thread(target=self.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    # ---- test controls -------------------------------------------------------------------
    def fail_next(self, endpoint: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (one of ENDPOINTS) with ``status``."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        with self.lock:
            self._faults.setdefault(endpoint, []).extend([status] * times)

    def serve_truncated(self, repo_id: str, path: str) -> None:
        """GET of this file sends only its first half, while HEAD advertises the full size."""
        with self.lock:
            self._truncated.add((repo_id, path))

    def reset_faults(self) -> None:
        with self.lock:
            self._faults.clear()
            self._truncated.clear()

    def files(self, repo_id: str, revision: str = "main") -> Dict[str, bytes]:
        """The content of every file of ``repo_id`` at ``revision`` (LFS files resolved)."""
        with self.lock:
            commit = self.repos[repo_id].resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return {path: self._content(self.repos[repo_id], entry) for path, entry in commit.files.items()}

    def commits(self, repo_id: str, branch: str = "main") -> List[Commit]:
        """The commits reachable from ``branch``, newest first."""
        with self.lock:
            repo = self.repos[repo_id]
            out, oid = [], repo.branches.get(branch)
            while oid is not None:
                out.append(repo.commits[oid])
                oid = repo.commits[oid].parent
            return out

    def requests_to(self, endpoint: str) -> int:
        with self.lock:
            return sum(1 for name, _ in self.requests if name == endpoint)

    # ---- state helpers (called under lock) -----------------------------------------------
    @staticmethod
    def _content(repo: Repo, entry: FileEntry) -> bytes:
        return repo.lfs_objects[entry.sha256] if isinstance(entry, LfsPointer) else entry

    def _new_commit(self, repo: Repo, parent: Optional[str], message: str, files: Dict[str, FileEntry]) -> Commit:
        self._commit_counter += 1
        oid = hashlib.sha1(f"{repo.repo_id}:{self._commit_counter}:{message}".encode()).hexdigest()
        commit = Commit(oid=oid, parent=parent, message=message, files=files)
        repo.commits[oid] = commit
        return commit

    def _take_fault(self, endpoint: str) -> Optional[int]:
        with self.lock:
            queue = self._faults.get(endpoint)
            return queue.pop(0) if queue else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackHub

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # ---- plumbing ------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: Optional[dict] = None,
              content_type: str = "application/json", length: Optional[int] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: Optional[dict] = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _token(self) -> Optional[str]:
        auth = self.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _check_token(self, required: bool) -> bool:
        """Raises 401 for an invalid token (or a missing one where required); True if authenticated."""
        token = self._token()
        if token is None:
            if required:
                raise HubError(401, "Invalid credentials in Authorization header")
            return False
        if token not in self.server.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.split("/")[1:]]
        body = self._read_body() if method in ("POST", "PUT") else b""
        try:
            route = self._route(method, parts)
            if route is None:
                raise HubError(404, f"no route for {method} {split.path}")
            name, handler, args = route
            with self.server.lock:
                self.server.requests.append((name, f"{method} {split.path}"))
            status = self.server._take_fault(name)
            if status is not None:
                raise HubError(status, f"injected failure of {name}")
            handler(body, *args)
        except HubError as err:
            headers = dict(err.headers)
            headers["X-Error-Message"] = err.message
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json(err.status, {"error": err.message}, headers)

    def _route(self, method: str, p: List[str]):
        if p[:1] == ["api"]:
            rest = p[1:]
            if method == "POST" and rest == ["repos", "create"]:
                return "create_repo", self._create_repo, ()
            if method == "POST" and rest == ["validate-yaml"]:
                return "validate_yaml", self._validate_yaml, ()
            if method == "GET" and rest == ["whoami-v2"]:
                return "whoami", self._whoami, ()
            if len(rest) >= 3 and rest[0] == "models":
                repo_id, tail = f"{rest[1]}/{rest[2]}", rest[3:]
                if method == "GET" and not tail:
                    return "model_info", self._model_info, (repo_id, "main")
                if method == "GET" and len(tail) == 2 and tail[0] == "revision":
                    return "model_info", self._model_info, (repo_id, tail[1])
                if method == "POST" and len(tail) == 2 and tail[0] == "preupload":
                    return "preupload", self._preupload, (repo_id, tail[1])
                if method == "POST" and len(tail) == 2 and tail[0] == "commit":
                    return "commit", self._commit, (repo_id, tail[1])
                if method == "POST" and len(tail) == 2 and tail[0] == "branch":
                    return "branch", self._branch, (repo_id, tail[1])
            return None
        if p[:1] == ["lfs-upload"] and method == "PUT" and len(p) == 4:
            return "lfs_upload", self._lfs_upload, (f"{p[1]}/{p[2]}", p[3])
        if p[:1] == ["lfs-verify"] and method == "POST" and len(p) == 4:
            return "lfs_verify", self._lfs_verify, (f"{p[1]}/{p[2]}", p[3])
        if method == "POST" and len(p) == 6 and p[1].endswith(".git") and p[2:] == ["info", "lfs", "objects", "batch"]:
            return "lfs_batch", self._lfs_batch, (f"{p[0]}/{p[1][:-len('.git')]}",)
        if method in ("GET", "HEAD") and len(p) >= 5 and p[2] == "resolve":
            return "resolve", self._resolve, (f"{p[0]}/{p[1]}", p[3], "/".join(p[4:]))
        return None

    # ---- repo lookup -----------------------------------------------------------------------
    def _repo(self, repo_id: str, write: bool) -> Repo:
        authenticated = self._check_token(required=write)
        repo = self.server.repos.get(repo_id)
        if repo is None or (repo.private and not authenticated):
            raise HubError(401 if not authenticated else 404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ---- endpoints -------------------------------------------------------------------------
    def _create_repo(self, body: bytes) -> None:
        self._check_token(required=True)
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        if repo_type != "model":
            raise HubError(400, f"only model repos are served here, got {repo_type!r}")
        if not payload.get("organization"):
            raise HubError(400, "repo id must be namespace/name")
        repo_id = f"{payload['organization']}/{payload['name']}"
        with self.server.lock:
            if repo_id in self.server.repos:
                raise HubError(409, "You already created this model repo")
            repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private")
            gitattributes = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
            commit = self.server._new_commit(repo, None, "initial commit", {".gitattributes": gitattributes})
            repo.branches["main"] = commit.oid
            self.server.repos[repo_id] = repo
        self._json(200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, body: bytes) -> None:
        content = json.loads(body)["content"]
        errors = []
        if content.startswith("---"):
            try:
                header = content.split("---", 2)[1]
                meta = yaml.safe_load(header)
                if meta is not None and not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a YAML mapping"})
            except (IndexError, yaml.YAMLError) as err:
                errors.append({"message": f"invalid YAML: {err}"})
        if errors:
            self._json(400, {"errors": errors, "warnings": []})
        else:
            self._json(200, {"errors": [], "warnings": []})

    def _whoami(self, body: bytes) -> None:
        self._check_token(required=True)
        self._json(200, {"type": "user", "name": "loopback-user", "auth": {"type": "access_token"}})

    def _model_info(self, body: bytes, repo_id: str, revision: str) -> None:
        with self.server.lock:
            repo = self._repo(repo_id, write=False)
            commit = self._commit_at(repo, revision)
            siblings = []
            for path, entry in sorted(commit.files.items()):
                sibling = {"rfilename": path}
                if isinstance(entry, LfsPointer):
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": 134}
                siblings.append(sibling)
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit.oid, "private": repo.private,
                         "siblings": siblings, "tags": [], "library_name": "timm"})

    def _branch(self, body: bytes, repo_id: str, branch: str) -> None:
        with self.server.lock:
            repo = self._repo(repo_id, write=True)
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = (json.loads(body or b"{}") or {}).get("startingPoint") or "main"
            repo.branches[branch] = self._commit_at(repo, start).oid
        self._json(200, {})

    def _preupload(self, body: bytes, repo_id: str, revision: str) -> None:
        with self.server.lock:
            repo = self._repo(repo_id, write=True)
            commit = self._commit_at(repo, revision)
            files = []
            for item in json.loads(body)["files"]:
                sample = base64.b64decode(item["sample"])
                lfs = item["path"].endswith(LFS_SUFFIXES) or item["size"] > 10 * 2 ** 20 or b"\0" in sample
                remote = commit.files.get(item["path"])
                if remote is None:
                    oid = None
                elif isinstance(remote, LfsPointer):
                    oid = remote.sha256
                else:
                    oid = git_blob_oid(remote)
                files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                              "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, body: bytes, repo_id: str) -> None:
        payload = json.loads(body)
        with self.server.lock:
            repo = self._repo(repo_id, write=True)
            if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
                raise HubError(400, "only the basic upload transfer is supported")
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in repo.lfs_objects:
                    base = f"{self.server.endpoint}/{{}}/{repo_id}/{obj['oid']}"
                    entry["actions"] = {
                        "upload": {"href": base.format("lfs-upload"), "header": {}},
                        "verify": {"href": base.format("lfs-verify"), "header": {}},
                    }
                objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, body: bytes, repo_id: str, oid: str) -> None:
        # like a presigned storage URL: no Authorization header needed
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match oid {oid}")
        with self.server.lock:
            if repo_id not in self.server.repos:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            self.server.repos[repo_id].lfs_objects[oid] = body
        self._send(200, b"", content_type="text/plain")

    def _lfs_verify(self, body: bytes, repo_id: str, oid: str) -> None:
        payload = json.loads(body)
        with self.server.lock:
            stored = self._repo(repo_id, write=True).lfs_objects.get(oid)
        if stored is None or len(stored) != payload.get("size"):
            raise HubError(404, f"LFS object {oid} not found")
        self._json(200, {"success": True})

    def _commit(self, body: bytes, repo_id: str, revision: str) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.server.lock:
            repo = self._repo(repo_id, write=True)
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.branches[revision]
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[head].files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, "regular files must be base64 encoded")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    stored = repo.lfs_objects.get(value["oid"])
                    if stored is None or ("size" in value and len(stored) != value["size"]):
                        raise HubError(422, f"LFS file {value['path']} was not uploaded (oid {value['oid']})")
                    files[value["path"]] = LfsPointer(value["oid"], len(stored))
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {k: v for k, v in files.items() if not k.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            commit = self.server._new_commit(repo, head, header.get("summary", ""), files)
            repo.branches[revision] = commit.oid
        self._json(200, {"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                         "commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{commit.oid}"})

    def _resolve(self, body: bytes, repo_id: str, revision: str, path: str) -> None:
        with self.server.lock:
            repo = self._repo(repo_id, write=False)
            commit = self._commit_at(repo, revision)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
            content = self.server._content(repo, entry)
            truncated = (repo_id, path) in self.server._truncated
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if isinstance(entry, LfsPointer):
            headers.update({"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"',
                            "X-Linked-Size": entry.size})
        else:
            headers["ETag"] = f'"{git_blob_oid(content)}"'
        if self.command == "GET" and truncated:
            content = content[: len(content) // 2]
        self._send(200, content, headers, content_type="application/octet-stream")
