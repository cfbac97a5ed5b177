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


def to_rgb8(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB the way a viewer shows it: EXIF orientation applied, 16-bit and float
    samples scaled to 0..255 (a plain convert clips them to white), transparency composited on white."""
    import numpy as np
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
