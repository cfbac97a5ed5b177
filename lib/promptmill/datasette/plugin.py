"""Datasette plugin: images from the blob store as thumbnails in tables and queries.

Routes ``/-/promptmill/image/<sha256>`` (the stored file) and
``/-/promptmill/thumb/<sha256>`` (a small JPEG, made once and cached in
``thumbs/`` beside the database), and the review pages under ``/-/review``
(``promptmill.datasette.web``). Only files of the blob store
beside an attached database are served: the name must be a sha256 listed in
that database's ``images`` table, and the resolved path must lie inside the
store, so no other file can be reached. Cells show thumbnails for image
hashes (``images.sha256``, ``image_state.sha256``, any column named
``thumbnail``) and for ``image_id`` columns of the tables that point at images.

Every database with the promptmill schema, whatever its file name, gets the
package's metadata (descriptions, facets, canned queries) through the
``get_metadata`` hook. The plugin is registered through the ``datasette``
entry point, so a plain ``datasette serve any.db`` loads it once promptmill is
installed.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import re
import sqlite3
import tempfile
from pathlib import Path

import yaml
from datasette import hookimpl
from datasette.utils.asgi import Response
from markupsafe import Markup, escape

from promptmill.core.errors import PromptmillError
from promptmill.core.resources import SCHEMA_DIR
from promptmill.core.store import BlobStore, connect_readonly

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")
THUMB_PX = 160
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif",
                 "bmp": "image/bmp", "tif": "image/tiff", "avif": "image/avif", "ico": "image/x-icon"}
SHA_TABLES = {"images", "image_state"}
IMAGE_ID_TABLES = {"captions", "current_captions", "caption_heads", "labels", "scores", "generations",
                   "image_origins"}
CACHE_HEADER = {"cache-control": "public, max-age=31536000, immutable", "x-content-type-options": "nosniff"}


@functools.cache
def metadata_template() -> dict:
    """The package's Datasette metadata; its one database entry applies to every promptmill database."""
    return yaml.safe_load((SCHEMA_DIR / "datasette.yml").read_text(encoding="utf-8"))


@functools.cache
def has_promptmill_schema(path: str) -> bool:
    """Whether the file is a promptmill database (read-only peek at its tables)."""
    try:
        conn = connect_readonly(Path(path))
        try:
            names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except (sqlite3.Error, PromptmillError):
        return False
    return {"schema_migrations", "runs", "images", "prompts"} <= names


def promptmill_databases(datasette) -> list[str]:
    return [name for name, database in datasette.databases.items()
            if database.path and has_promptmill_schema(database.path)]


@hookimpl
def get_metadata(datasette, key, database, table):
    names = promptmill_databases(datasette)
    if not names:
        return {}
    template = metadata_template()
    database_metadata = template["databases"]["promptmill"]
    first = datasette.urls.database(names[0])
    return {
        "title": template["title"],
        "description_html": template["description_html"].replace("/promptmill/", f"{first}/"),
        "license": template["license"],
        "databases": {name: database_metadata for name in names},
    }


async def blob_path(datasette, sha256: str) -> Path | None:
    """The stored file of an image hash, if an attached promptmill database knows it."""
    if not SHA256.match(sha256):
        return None
    for database in datasette.databases.values():
        if not database.path:
            continue
        try:
            row = (await database.execute("SELECT ext FROM images WHERE sha256 = ?", [sha256])).first()
        except Exception:  # noqa: BLE001 - a database without an images table is not ours
            continue
        if row is None or not SAFE_EXT.match(row["ext"] or ""):
            continue
        root = (Path(database.path).parent / "blobs").resolve()
        path = BlobStore(root).path_for(sha256, row["ext"]).resolve()
        if path.is_relative_to(root) and path.is_file():
            return path
    return None


def thumbnail_bytes(path: Path, size: int = THUMB_PX) -> bytes:
    """A small JPEG; the pixel count is checked from the header, against the project's limit, before
    anything is decoded."""
    from promptmill.core.images import open_image, to_rgb8

    with open_image(path) as image:
        image.draft("RGB", (size, size))  # JPEGs decode at a fraction of their size
        image = to_rgb8(image)
        image.thumbnail((size, size))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()


async def image_view(request, datasette):
    path = await blob_path(datasette, request.url_vars["sha256"])
    if path is None:
        return Response.text("no such image", status=404)
    ext = path.suffix.lstrip(".")
    return Response(path.read_bytes(), content_type=CONTENT_TYPES.get(ext, "application/octet-stream"),
                    headers=CACHE_HEADER)


def cached_thumbnail(path: Path) -> bytes:
    """The thumbnail of a blob from ``thumbs/`` beside the blob store, made and stored on first use."""
    blobs = path.parents[2]
    cached = blobs.parent / "thumbs" / f"{THUMB_PX}" / path.name[:2] / f"{path.stem}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    data = thumbnail_bytes(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, cached)
    except OSError:  # a read-only database folder: serve it uncached
        pass
    return data


async def thumb_view(request, datasette):
    path = await blob_path(datasette, request.url_vars["sha256"])
    if path is None:
        return Response.text("no such image", status=404)
    try:
        data = await asyncio.to_thread(cached_thumbnail, path)
    except Exception as exc:  # noqa: BLE001 - an unreadable image is reported, not fatal
        return Response.text(f"cannot read image: {type(exc).__name__}", status=415)
    return Response(data, content_type="image/jpeg", headers=CACHE_HEADER)


@hookimpl
def register_routes(datasette):
    from promptmill.datasette import web

    return [
        (r"^/-/promptmill/image/(?P<sha256>[^/]+)$", image_view),
        (r"^/-/promptmill/thumb/(?P<sha256>[^/]+)$", thumb_view),
        *web.ROUTES,
    ]


@hookimpl
def skip_csrf(datasette, scope):
    """Review actions carry a stronger check of their own (promptmill.datasette.web.write_refusal)."""
    return scope["type"] == "http" and scope["path"] == "/-/review/action"


def thumbnail_html(datasette, sha256: str, caption: str = "") -> Markup:
    image_url = datasette.urls.path(f"/-/promptmill/image/{sha256}")
    thumb_url = datasette.urls.path(f"/-/promptmill/thumb/{sha256}")
    return Markup(
        f'<a href="{escape(image_url)}" class="promptmill-thumb">'
        f'<img src="{escape(thumb_url)}" alt="image {sha256[:12]}" loading="lazy" '
        f'style="max-width:{THUMB_PX}px;max-height:{THUMB_PX}px;display:block"></a>'
        f'<code title="{sha256}">{escape(caption or sha256[:12])}</code>'
    )


@hookimpl
def render_cell(value, column, table, database, datasette):
    if isinstance(value, str) and SHA256.match(value) and (
            column == "thumbnail" or (column == "sha256" and table in SHA_TABLES)):
        return thumbnail_html(datasette, value)
    if isinstance(value, dict):  # a foreign key Datasette expanded to {"value": ..., "label": ...}
        value = value.get("value")
    if column == "image_id" and table in IMAGE_ID_TABLES and isinstance(value, int):
        async def by_id():
            row = (await datasette.get_database(database).execute(
                "SELECT sha256 FROM images WHERE id = ?", [value])).first()
            return thumbnail_html(datasette, row["sha256"], str(value)) if row else None

        return by_id
    return None
