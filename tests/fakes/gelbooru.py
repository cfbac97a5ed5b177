"""A loopback Gelbooru: the dapi JSON post index and image files, with fault injection.

``GET /index.php?page=dapi&s=post&q=index&json=1&tags=..&pid=..&limit=..&api_key=..&user_id=..``
answers ``{"@attributes": {...}, "post": [...]}`` (no ``post`` key past the last page)
and 401 without the right credentials; ``GET /images/<name>`` answers the bytes.
``faults`` is a list of (path prefix, status, headers) consumed one per matching request.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

from fakes.loopback import ThreadedServer


class FakeGelbooru(ThreadedServer):
    def __init__(self, posts: list[dict], images: dict[str, bytes], api_key: str = "k3y", user_id: str = "42"):
        self.posts = posts
        self.images = images
        self.api_key, self.user_id = api_key, user_id
        self.faults: list[tuple[str, int, dict]] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:
        return self.url

    def image_requests(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/images/")]

    def _page(self, query: dict) -> tuple[int, dict]:
        if query.get("api_key") != [self.api_key] or query.get("user_id") != [self.user_id]:
            return 401, {"success": False, "message": "Missing authentication."}
        wanted = set((query.get("tags") or [""])[0].split())
        matching = [p for p in self.posts if wanted <= set(p["tags"].split())]
        limit = min(int((query.get("limit") or ["100"])[0]), 100)
        pid = int((query.get("pid") or ["0"])[0])
        page = matching[pid * limit:(pid + 1) * limit]
        body = {"@attributes": {"limit": limit, "offset": pid * limit, "count": len(matching)}}
        if page:
            body["post"] = page
        return 200, body

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # http.server's name
                parsed = urllib.parse.urlparse(self.path)
                with fake.lock:
                    fake.requests.append(self.path)
                    fault = next((f for f in fake.faults if parsed.path.startswith(f[0])), None)
                    if fault:
                        fake.faults.remove(fault)
                if fault:
                    _, status, headers = fault
                    return self._send(status, json.dumps({"error": status}).encode(), "application/json", headers)
                if parsed.path == "/index.php":
                    status, body = fake._page(urllib.parse.parse_qs(parsed.query))
                    return self._send(status, json.dumps(body).encode(), "application/json")
                if parsed.path.startswith("/images/"):
                    data = fake.images.get(parsed.path.rsplit("/", 1)[-1])
                    if data is None:
                        return self._send(404, b"not found", "text/plain")
                    return self._send(200, data, "application/octet-stream")
                return self._send(404, b"not found", "text/plain")

        return Handler


def make_posts(base_url: str, images: dict[str, bytes], tags_of: dict[str, str]) -> list[dict]:
    """Gelbooru-shaped post objects (newest first) for the given image files."""
    posts = []
    for number, name in enumerate(sorted(images), 1):
        post_id = 9_000_000 + number
        posts.append({
            "id": post_id, "created_at": "Sat Mar 04 10:15:00 -0600 2023", "score": number, "width": 64,
            "height": 64, "md5": f"{post_id:032x}", "directory": "ab/cd", "image": name, "rating": "general",
            "source": "", "change": 1677946500, "owner": "uploader", "creator_id": 1, "parent_id": 0,
            "sample": 0, "preview_height": 64, "preview_width": 64, "tags": tags_of[name], "title": "",
            "has_notes": "false", "has_comments": "false", "file_url": f"{base_url}/images/{name}",
            "preview_url": "", "sample_url": "", "sample_height": 0, "sample_width": 0, "status": "active",
            "post_locked": 0, "has_children": "false",
        })
    return posts[::-1]
