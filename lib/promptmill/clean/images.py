"""Keep or drop stored images: present, decodable to the last byte, of an allowed format and a sane size.

Checks run cheapest first and the first failure names the rule:
``missing-file``, ``empty-file``, ``too-many-bytes``, ``not-an-image``,
``decompression-bomb`` (header says more pixels than allowed: refused before
decoding), ``format-not-allowed``, ``too-small``, ``extreme-aspect``,
``truncated`` / ``corrupt`` (full decode), then ``extension-mismatch``: a file
found as ``cat.png`` that is really a JPEG. A renamed file usually means a
scraper or a user mislabelled it, and tools that trust the extension will
choke on it, so by default it is dropped; ``warn`` keeps it and says so in the
keep decision's reason. Every image gets one decision per scope, the scope
naming every parameter, so a re-run adds nothing and a killed run resumes.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from PIL import Image, ImageFile, UnidentifiedImageError

from promptmill.core.errors import BadInput
from promptmill.core.images import FORMAT_EXT, MAX_PIXELS
from promptmill.core.progress import bar
from promptmill.core.runs import Run
from promptmill.core.save import save_decisions
from promptmill.core.store import Store

BATCH_IMAGES = 200
# The formats a file-name extension promises.
EXTENSION_FORMATS = {
    "jpg": {"JPEG", "MPO"}, "jpeg": {"JPEG", "MPO"}, "jpe": {"JPEG", "MPO"}, "jfif": {"JPEG", "MPO"},
    "png": {"PNG"}, "webp": {"WEBP"}, "bmp": {"BMP"}, "gif": {"GIF"}, "tif": {"TIFF"}, "tiff": {"TIFF"},
    "avif": {"AVIF"},
}

# What people call each allowed format -> the stored extension the rules compare with.
FORMAT_ALIASES = {alias: ext for ext, aliases in {
    "jpg": ("jpg", "jpeg", "jpe", "jfif", "mpo"), "png": ("png",), "webp": ("webp",), "bmp": ("bmp", "dib"),
    "gif": ("gif",), "tif": ("tif", "tiff"), "avif": ("avif",), "ico": ("ico",), "ppm": ("ppm", "pnm"),
}.items() for alias in aliases}


def parse_formats(text: str) -> tuple[str, ...]:
    """`--formats jpeg,TIFF,png` as the extensions stored images carry; an unknown name is a bad command."""
    names = [name.strip().lower().lstrip(".") for name in text.split(",") if name.strip()]
    if not names:
        raise BadInput("--formats: name at least one format")
    unknown = [name for name in names if name not in FORMAT_ALIASES]
    if unknown:
        raise BadInput(f"--formats: unknown format {', '.join(unknown)} "
                       f"(known: {', '.join(sorted(FORMAT_ALIASES))})")
    return tuple(sorted({FORMAT_ALIASES[name] for name in names}))


@dataclass(frozen=True)
class ImageRules:
    min_side: int = 64
    max_bytes: int = 50_000_000
    max_pixels: int = 64_000_000
    min_aspect: float = 0.25
    max_aspect: float = 4.0
    formats: tuple[str, ...] = ("jpg", "png", "webp", "bmp", "gif")
    extension_mismatch: str = "drop"  # or "warn"

    @property
    def scope(self) -> str:
        return (f"images:min_side={self.min_side},max_bytes={self.max_bytes},max_pixels={self.max_pixels},"
                f"aspect={self.min_aspect:g}..{self.max_aspect:g},formats={'+'.join(self.formats)},"
                f"extension_mismatch={self.extension_mismatch}")


@dataclass(frozen=True)
class ImageVerdict:
    keep: bool
    rule: str | None = None
    reason: str | None = None


def locator_ext(locator: str | None) -> str | None:
    """The extension of the file name an origin gave, if it is one we know (URLs: their path)."""
    if not locator:
        return None
    name = urlparse(locator).path if "://" in locator else locator
    ext = PurePosixPath(name).suffix.lower().lstrip(".")
    return ext if ext in EXTENSION_FORMATS else None


def check_image(path: Path, rules: ImageRules, locators: list[str] = ()) -> ImageVerdict:
    """Judge one stored image file; never raises for a bad file."""
    if not path.is_file():
        return ImageVerdict(False, "missing-file", f"no blob at {path.name}")
    size = path.stat().st_size
    if size == 0:
        return ImageVerdict(False, "empty-file", "0 bytes")
    if size > rules.max_bytes:
        return ImageVerdict(False, "too-many-bytes", f"{size:,} bytes > {rules.max_bytes:,}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bomb warnings (we check ourselves), odd palettes, EXIF noise
        try:
            with Image.open(path) as image:
                fmt, width, height = image.format, image.width, image.height
        except Image.DecompressionBombError as exc:
            return ImageVerdict(False, "decompression-bomb", str(exc)[:200])
        except UnidentifiedImageError:
            return ImageVerdict(False, "not-an-image", "Pillow cannot identify it")
        except Exception as exc:  # noqa: BLE001 - any header failure is this file's problem
            return ImageVerdict(False, "corrupt", f"{type(exc).__name__}: {exc}"[:200])
        limit = min(rules.max_pixels, MAX_PIXELS)  # never decode past the project's safety limit
        if width * height > limit:
            return ImageVerdict(False, "decompression-bomb",
                                f"{width}x{height} = {width * height:,} pixels > {limit:,}")
        ext = FORMAT_EXT.get(fmt, (fmt or "").lower())
        if ext not in rules.formats:
            return ImageVerdict(False, "format-not-allowed", f"{fmt} not in {', '.join(rules.formats)}")
        if min(width, height) < rules.min_side:
            return ImageVerdict(False, "too-small", f"{width}x{height}, a side under {rules.min_side}")
        aspect = width / height
        if not rules.min_aspect <= aspect <= rules.max_aspect:
            return ImageVerdict(False, "extreme-aspect",
                                f"{width}x{height}, aspect {aspect:.3g} outside {rules.min_aspect:g}..{rules.max_aspect:g}")
        problem = decode_problem(path)
        if problem:
            return ImageVerdict(False, *problem)
    for locator in locators:
        named = locator_ext(locator)
        if named and fmt not in EXTENSION_FORMATS[named]:
            reason = f"named {PurePosixPath(locator).name!r} but is {fmt}"
            if rules.extension_mismatch == "drop":
                return ImageVerdict(False, "extension-mismatch", reason)
            return ImageVerdict(True, None, f"warning: extension-mismatch: {reason}")
    return ImageVerdict(True)


def decode_problem(path: Path) -> tuple[str, str] | None:
    """Verify the file's structure (checksums) and decode every pixel; ('truncated'|'corrupt', why) or None."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, ...
        message = f"{type(exc).__name__}: {exc}"[:200]
        return ("truncated" if "truncat" in message.lower() else "corrupt"), message
    return None


_PENDING = """
    SELECT i.id, i.sha256, i.ext,
           (SELECT json_group_array(o.locator) FROM image_origins o WHERE o.image_id = i.id) AS locators
    FROM images i
    WHERE i.id > ?
      AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item_type = 'image' AND d.item_id = i.id
                      AND d.stage = 'clean' AND d.scope = ?)
    ORDER BY i.id LIMIT ?
"""


def clean_images(store: Store, run: Run, rules: ImageRules, batch: int = BATCH_IMAGES) -> None:
    """Judge every image without a decision in this scope; one transaction per batch."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail to decode here
    scope = rules.scope
    total = store.count("images")
    done = store.scalar("SELECT count(*) FROM decisions WHERE item_type = 'image' AND stage = 'clean' "
                        "AND scope = ?", (scope,))
    if done:
        run.add("images already judged", done)
    last_id = 0
    with bar(total - done, "clean images", "image") as progress:
        while rows := store.execute(_PENDING, (last_id, scope, batch)).fetchall():
            decisions = []
            for image_id, sha256, ext, locators in rows:
                verdict = check_image(store.blobs.path_for(sha256, ext), rules,
                                      [loc for loc in json.loads(locators) if loc])
                decisions.append({"item_type": "image", "item_id": image_id, "stage": "clean",
                                  "verdict": "keep" if verdict.keep else "drop", "scope": scope,
                                  "rule": verdict.rule, "reason": verdict.reason})
                if verdict.keep:
                    run.add("images kept")
                    if verdict.reason:
                        run.add("images kept with a warning")
                else:
                    run.add("images dropped")
                    run.add(f"dropped by {verdict.rule}")
                progress.update()
            with store.transaction() as conn:
                save_decisions(conn, run, decisions)
            last_id = rows[-1][0]
    run.save_counts()
