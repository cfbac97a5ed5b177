"""Reading image headers safely: real format, size and mode, never trusting the file name."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

# The one pixel limit: nothing decodes an image whose header claims more (see open_image). It is a
# safety limit, set here rather than in Pillow's global Image.MAX_IMAGE_PIXELS so that importing
# promptmill changes nothing for other code; 02_clean's --max-pixels is the dataset's own policy.
MAX_PIXELS = 100_000_000

FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tif",
              "MPO": "jpg", "ICO": "ico", "PPM": "ppm", "AVIF": "avif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}
_SAFE_EXT = re.compile(r"^[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class Probe:
    ext: str
    format: str | None
    width: int | None  # as displayed: EXIF orientation applied
    height: int | None
    mode: str | None
    bytes: int
    error: str | None = None
    orientation: int | None = None  # EXIF orientation tag when it is not 1 (2-8: the pixels need turning)


# EXIF orientations that turn the image a quarter: width and height swap when displayed.
QUARTER_TURNS = {5, 6, 7, 8}
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


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
                orientation = exif_orientation(image)
                width, height = image.size
                if orientation in QUARTER_TURNS:
                    width, height = height, width
                return Probe(FORMAT_EXT.get(fmt, name_ext(name)), fmt, width, height, image.mode, len(data),
                             orientation=orientation if orientation not in (None, 1) else None)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not readable here"
        return Probe(name_ext(name), None, None, None, None, len(data), f"{type(exc).__name__}: {exc}")


class TooManyPixels(ValueError):
    """The header claims more pixels than MAX_PIXELS: decoding it could take gigabytes."""


def open_image(source) -> Image.Image:
    """Image.open, refusing before any pixel is decoded an image whose header claims more than
    MAX_PIXELS (a 600 KB PNG can declare 13000x13000 RGBA). Every decode goes through here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(source)
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        image.close()
        raise TooManyPixels(f"{image.width}x{image.height} = {pixels:,} pixels, over the limit of {MAX_PIXELS:,}")
    return image


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag (1-8), read from the header without decoding pixels."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - a damaged EXIF block means "no orientation", not a bad image
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def to_rgb8(image: Image.Image) -> Image.Image:
    """The image as people see it, as 8-bit RGB: the one conversion every consumer uses.

    EXIF orientation is applied (a portrait photo stays portrait), 16-bit grey is
    scaled to 8 bits (``convert("RGB")`` clips it, turning most pixels white) and
    transparency is composited on white, as the WD14 tagger's reference does."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in SIXTEEN_BIT_MODES:
        return image.convert("I").point(lambda value: value * (1 / 257) + 0.5).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")
