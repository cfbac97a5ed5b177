"""A loopback Hugging Face Hub speaking the endpoints huggingface_hub's upload_folder uses.

- ``POST /api/repos/create``                                create a repository (409 if it exists)
- ``GET  /api/{type}s/{repo}[/revision/{rev}]``             repository info (head commit, files)
- ``POST /api/validate-yaml``                               README.md front matter check
- ``POST /api/{type}s/{repo}/preupload/{rev}``              upload mode per file: ``regular`` or ``lfs``
  (binary sample or an LFS extension, like the Hub's default .gitattributes), and the remote oid so
  unchanged files are skipped
- ``POST /{prefix}{repo}.git/info/lfs/objects/batch``      git-lfs batch API, ``basic`` transfer
- ``PUT  /lfs/upload/{oid}``, ``POST /lfs/verify``          object upload (sha256 checked) and verify
- ``POST /api/{type}s/{repo}/commit/{rev}``                 NDJSON commit: header, file (base64), lfsFile,
  deletedFile

Writes need ``Authorization: Bearer <token>``. ``faults`` maps an endpoint name to a list of HTTP
statuses to answer before serving it normally (e.g. ``{"preupload": [503]}``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import yaml

from fakes.loopback import ThreadedServer

LFS_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".parquet", ".arrow", ".zip", ".bin")
REGULAR_MAX_BYTES = 10 * 1000 * 1000


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[dict] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class FakeHub(ThreadedServer):
    def __init__(self, token: str = "hf_faketoken1234567890"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        super().__init__(_handler(self))

    @property
    def endpoint(self) -> str:
        return self.url

    def endpoints_called(self) -> list[str]:
        return [name for name, _ in self.requests]


ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(r"^/api/(?P<type>\w+)s/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(r"^/api/(?P<type>\w+)s/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(r"^/api/(?P<type>\w+)s/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("POST", re.compile(r"^/(?:(?P<type>\w+)s/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs/upload/(?P<oid>[0-9a-f]{64})$"), "lfs_upload"),
    ("POST", re.compile(r"^/lfs/verify$"), "lfs_verify"),
]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, status: int, body=None, headers: dict | None = None):
            data = json.dumps(body if body is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _route(self, method: str):
            path = self.path.split("?", 1)[0]
            for route_method, pattern, name in ROUTES:
                match = pattern.match(path)
                if route_method == method and match:
                    body = self._body()
                    with hub.lock:
                        hub.requests.append((name, path))
                        queued = hub.faults.get(name)
                        if queued:
                            status = queued.pop(0)
                            self._reply(status, {"error": f"injected {status}"}, {"Retry-After": "0"})
                            return
                    if name not in ("info", "lfs_upload") and self.headers.get("Authorization") != f"Bearer {hub.token}":
                        self._reply(401, {"error": "Invalid credentials in Authorization header"})
                        return
                    with hub.lock:
                        getattr(self, f"do_{name}")(body, **{k: v for k, v in match.groupdict().items()})
                    return
            self._reply(404, {"error": f"no route {method} {path}"})

        def do_GET(self):  # http.server's naming
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PUT(self):
            self._route("PUT")

        def _repo(self, repo: str):
            found = hub.repos.get(repo)
            if found is None:
                self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            return found

        def do_create(self, body):
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            repo_type = payload.get("type") or "model"
            url = f"{hub.endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            if repo_id in hub.repos:  # the Hub names the existing repository in its 409
                self._reply(409, {"error": f"You already created this {repo_type} repo", "url": url})
                return
            hub.repos[repo_id] = Repo(repo_type, payload.get("visibility") == "private" or bool(payload.get("private")))
            self._reply(200, {"url": url, "name": repo_id})

        def do_validate_yaml(self, body):
            content = json.loads(body)["content"]
            match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
            try:
                meta = yaml.safe_load(match.group(1)) if match else {}
            except yaml.YAMLError as exc:
                self._reply(400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
                return
            if not isinstance(meta, dict):
                self._reply(400, {"errors": [{"message": "metadata is not a mapping"}]})
                return
            self._reply(200, {"warnings": []})

        def do_info(self, body, type, repo, rev=None):  # noqa: A002 - the route's name
            found = self._repo(repo)
            if found:
                self._reply(200, {"id": repo, "sha": found.head, "private": found.private,
                                  "siblings": [{"rfilename": name} for name in sorted(found.files)]})

        def do_preupload(self, body, type, repo, rev):  # noqa: A002
            found = self._repo(repo)
            if not found:
                return
            files = []
            for entry in json.loads(body)["files"]:
                sample = base64.b64decode(entry["sample"])
                lfs = entry["path"].lower().endswith(LFS_EXTENSIONS) or b"\0" in sample or entry["size"] > REGULAR_MAX_BYTES
                existing = found.files.get(entry["path"])
                oid = None
                if existing is not None:
                    oid = hashlib.sha256(existing).hexdigest() if entry["path"] in found.lfs_paths \
                        else git_blob_sha1(existing)
                files.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular",
                              "shouldIgnore": False, "oid": oid})
            self._reply(200, {"files": files, "commitOid": found.head})

        def do_lfs_batch(self, body, repo, type=None):  # noqa: A002
            if not self._repo(repo):
                return
            payload = json.loads(body)
            objects = []
            for obj in payload["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_objects:
                    entry["actions"] = {
                        "upload": {"href": f"{hub.endpoint}/lfs/upload/{obj['oid']}"},
                        "verify": {"href": f"{hub.endpoint}/lfs/verify"},
                    }
                objects.append(entry)
            self._reply(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

        def do_lfs_upload(self, body, oid):
            if hashlib.sha256(body).hexdigest() != oid:
                self._reply(400, {"error": "sha256 mismatch"})
                return
            hub.lfs_objects[oid] = body
            self._reply(200, {})

        def do_lfs_verify(self, body):
            payload = json.loads(body)
            stored = hub.lfs_objects.get(payload["oid"])
            if stored is None or len(stored) != payload["size"]:
                self._reply(404, {"error": "object not found"})
                return
            self._reply(200, {"oid": payload["oid"], "size": payload["size"]})

        def do_commit(self, body, type, repo, rev):  # noqa: A002
            found = self._repo(repo)
            if not found:
                return
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            if not lines or lines[0]["key"] != "header":
                self._reply(400, {"error": "the first NDJSON line must be the header"})
                return
            changes, lfs_changes, deleted = {}, set(), set()
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    changes[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    if value["oid"] not in hub.lfs_objects:
                        self._reply(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                        return
                    changes[value["path"]] = hub.lfs_objects[value["oid"]]
                    lfs_changes.add(value["path"])
                elif line["key"] in ("deletedFile", "deletedFolder"):
                    deleted.add(value["path"])
                else:
                    self._reply(400, {"error": f"unknown key {line['key']}"})
                    return
            for path in deleted:
                found.files.pop(path, None)
            found.files.update(changes)
            found.lfs_paths = (found.lfs_paths - set(changes)) | lfs_changes
            oid = hashlib.sha1(f"{found.head}{sorted(changes)}{len(found.commits)}".encode()).hexdigest()
            found.commits.append({"oid": oid, "summary": lines[0]["value"]["summary"],
                                  "description": lines[0]["value"].get("description", ""),
                                  "files": sorted(changes), "lfs": sorted(lfs_changes)})
            prefix = "" if found.repo_type == "model" else f"{found.repo_type}s/"
            self._reply(200, {"commitUrl": f"{hub.endpoint}/{prefix}{repo}/commit/{oid}", "commitOid": oid,
                              "success": True})

    return Handler
