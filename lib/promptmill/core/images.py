"""Reading image headers safely: real format, size and mode, never trusting the file name."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

# Pillow refuses images over twice this many pixels and warns above it; 02_clean decides.
Image.MAX_IMAGE_PIXELS = 100_000_000

FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tif",
              "MPO": "jpg", "ICO": "ico", "PPM": "ppm", "AVIF": "avif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}
_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class Probe:
    ext: str
    format: str | None
    width: int | None
    height: int | None
    mode: str | None
    bytes: int
    error: str | None = None


def name_ext(name: str) -> str:
    ext = PurePosixPath(name).suffix.lower().lstrip(".")
    ext = "jpg" if ext == "jpeg" else ext
    return ext if _SAFE_EXT.match(ext) else "bin"


def probe_image(data: bytes, name: str = "") -> Probe:
    """Header-only look at an image. Unreadable bytes still get a Probe (format None) so
    the file is kept and 02_clean can record why it is dropped."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format
                return Probe(FORMAT_EXT.get(fmt, name_ext(name)), fmt, image.width, image.height,
                             image.mode, len(data))
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not readable here"
        return Probe(name_ext(name), None, None, None, None, len(data), f"{type(exc).__name__}: {exc}")


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
