"""Images and their tags from Gelbooru's JSON API (``index.php?page=dapi&s=post&q=index&json=1``).

The API answers 401 without ``api_key`` and ``user_id``; both come from the
environment only (``GELBOORU_API_KEY``, ``GELBOORU_USER_ID``) and never reach the
database: the source is keyed by the base URL and the tags. Pages are fetched
with ``pid`` and a polite delay; 429 (honouring Retry-After), 5xx and timeouts
are retried with tenacity. A post already stored for this query is not
downloaded again, so a re-run or a resumed run only fetches what is new.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from promptmill.collect.base import Collector, SourceInfo
from promptmill.collect.imagefolder import MAX_IMAGE_BYTES
from promptmill.core.progress import bar
from promptmill.core.text import sha256_hex

PAGE_LIMIT = 100
USER_AGENT = "promptmill (dataset builder; https://github.com/promptmill)"
TIMEOUT_S = 30
MAX_RETRY_AFTER_S = 120


class MissingCredentials(ValueError):
    """GELBOORU_API_KEY / GELBOORU_USER_ID are not set."""


class Unauthorized(ValueError):
    """The API refused the credentials (HTTP 401/403)."""


class Refused(ValueError):
    """A URL or a download this client won't take: not http(s) (a post's `file:///` URL must not read
    local files), or over MAX_IMAGE_BYTES."""


@dataclass(frozen=True)
class Credentials:
    api_key: str
    user_id: str

    def __repr__(self):  # never print the key
        return "Credentials(api_key=[redacted], user_id=[redacted])"


def credentials_from_env() -> Credentials:
    api_key, user_id = os.environ.get("GELBOORU_API_KEY"), os.environ.get("GELBOORU_USER_ID")
    if not api_key or not user_id:
        raise MissingCredentials("set GELBOORU_API_KEY and GELBOORU_USER_ID (the API answers 401 without them)")
    return Credentials(api_key, user_id)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    return isinstance(exc, (urllib.error.URLError, TimeoutError, ConnectionError))


def _wait(state: RetryCallState) -> float:
    """Retry-After when the server gives one, else exponential backoff."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, urllib.error.HTTPError) and exc.headers.get("Retry-After"):
        try:
            return min(float(exc.headers["Retry-After"]), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    return wait_exponential(multiplier=0.5, max=30)(state)


class Client:
    """A polite Gelbooru client: one request at a time, `delay` seconds apart, retried."""

    def __init__(self, base_url: str, credentials: Credentials, delay: float = 1.0, attempts: int = 5):
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise Refused(f"--base-url must be an http(s) URL, not {base_url[:200]!r}")
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.delay = delay
        self._last = 0.0
        self.get = retry(retry=retry_if_exception(_retryable), wait=_wait, stop=stop_after_attempt(attempts),
                         reraise=True)(self._get)

    def _get(self, url: str) -> bytes:
        pause = self._last + self.delay - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._last = time.monotonic()
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise Refused(f"not an http(s) URL: {url[:200]}")
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                data = response.read(MAX_IMAGE_BYTES + 1)
                if len(data) > MAX_IMAGE_BYTES:
                    raise Refused(f"{url[:200]}: over the limit of {MAX_IMAGE_BYTES:,} bytes")
                return data
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise Unauthorized(f"Gelbooru answered {exc.code}: check GELBOORU_API_KEY and "
                                   "GELBOORU_USER_ID") from None
            raise

    def page(self, tags: str, pid: int, limit: int) -> list[dict]:
        query = urllib.parse.urlencode({
            "page": "dapi", "s": "post", "q": "index", "json": 1, "tags": tags, "pid": pid, "limit": limit,
            "api_key": self.credentials.api_key, "user_id": self.credentials.user_id,
        })
        body = json.loads(self.get(f"{self.base_url}/index.php?{query}"))
        posts = body.get("post", []) if isinstance(body, dict) else body
        return [posts] if isinstance(posts, dict) else list(posts or [])


def source_info(base_url: str, tags: str) -> SourceInfo:
    tags = " ".join(tags.split())
    return SourceInfo(kind="gelbooru", uri=f"{base_url.rstrip('/')}/index.php?page=dapi&s=post&q=index&tags="
                      f"{urllib.parse.quote(tags)}", sha256=sha256_hex(f"{base_url.rstrip('/')}\n{tags}"),
                      options={"tags": tags})


def caption_of(tags: list[str]) -> str:
    """Tags as a caption: underscores read as spaces, except in kaomoji like ^_^."""
    return ", ".join(t.replace("_", " ") if any(c.isalpha() for c in t) else t for t in tags)


def known_posts(collector: Collector) -> set[int]:
    rows = collector.store.execute(
        "SELECT position FROM image_origins WHERE source_id = ? UNION "
        "SELECT position FROM item_errors WHERE source_id = ? AND reason != 'download failed'",
        (collector.source_id, collector.source_id))
    return {row[0] for row in rows}


def collect_posts(collector: Collector, client: Client, tags: str, limit: int) -> int:
    """Store up to `limit` posts matching tags; return how many posts were looked at."""
    run = collector.run
    done = known_posts(collector)
    seen = 0
    pid = 0
    with bar(limit, f"gelbooru {tags}", "post") as progress:
        while seen < limit:
            posts = client.page(tags, pid, min(PAGE_LIMIT, limit))
            if not posts:
                break
            for post in posts[: limit - seen]:
                seen += 1
                progress.update()
                add_post(collector, client, post, done)
            collector.flush()
            run.save_counts()
            pid += 1
    return seen


def add_post(collector: Collector, client: Client, post: dict, done: set[int]):
    try:
        post_id = int(post["id"])
    except (KeyError, TypeError, ValueError):
        collector.run.add("posts without id")
        return
    if post_id in done:
        collector.run.add("posts already there")
        return
    url = post.get("file_url")
    if not url:
        collector.add_error(post_id, "no file url", "the post has no file_url", str(post_id))
        return
    try:
        data = client.get(url)
    except Refused as exc:
        collector.add_error(post_id, "download refused", str(exc), str(post_id))
        return
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        collector.add_error(post_id, "download failed", f"{type(exc).__name__}: {exc}", str(post_id))
        return
    tags = str(post.get("tags") or "").split()
    meta = {key: post.get(key) for key in ("md5", "width", "height", "score", "source", "created_at")
            if post.get(key) not in (None, "")}
    meta["file_url"] = url
    meta["post_url"] = f"{client.base_url}/index.php?page=post&s=view&id={post_id}"
    collector.add_image(post_id, data, str(post_id), caption=caption_of(tags) if tags else None,
                        meta=meta, caption_meta={"rating": post.get("rating"), "from": "gelbooru tags"},
                        tags=tags)
    done.add(post_id)
