"""Images as cameras and editors save them: EXIF-rotated JPEGs, 16-bit and transparent PNGs."""

import io

import numpy as np
from PIL import Image
from png16 import png16

from promptmill.core.images import probe_image, to_rgb8


def camera_jpeg(orientation: int) -> bytes:
    """640x480 sensor pixels, left half red and right half blue, with the orientation tag a phone
    held upright writes (6: turn 90 degrees clockwise to display)."""
    pixels = np.zeros((480, 640, 3), np.uint8)
    pixels[:, :320] = (220, 20, 20)
    pixels[:, 320:] = (20, 20, 220)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera Maker"
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def close(pixel, expected, tolerance=12):
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, expected))


def test_exif_rotated_photo_is_recorded_and_converted_as_displayed(tmp_path, invoke, store):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "portrait.jpg").write_bytes(camera_jpeg(6))
    (folder / "portrait.txt").write_text("a portrait photo", encoding="utf-8")
    (folder / "mirrored.jpg").write_bytes(camera_jpeg(2))
    (folder / "upright.jpg").write_bytes(camera_jpeg(1))
    invoke("01_collect", "imagefolder", folder)
    rows = {r["locator"]: r for r in store.query(
        "SELECT o.locator, i.width, i.height, i.orientation FROM image_origins o JOIN images i ON i.id = o.image_id")}
    assert (rows["portrait.jpg"]["width"], rows["portrait.jpg"]["height"], rows["portrait.jpg"]["orientation"]) == \
        (480, 640, 6)
    assert (rows["mirrored.jpg"]["width"], rows["mirrored.jpg"]["orientation"]) == (640, 2)
    assert (rows["upright.jpg"]["width"], rows["upright.jpg"]["orientation"]) == (640, None)

    with Image.open(io.BytesIO(camera_jpeg(6))) as image:
        shown = np.asarray(to_rgb8(image))
    assert shown.shape == (640, 480, 3)
    assert close(shown[10, 240], (220, 20, 20)) and close(shown[630, 240], (20, 20, 220))  # red on top
    with Image.open(io.BytesIO(camera_jpeg(2))) as image:
        mirrored = np.asarray(to_rgb8(image))
    assert close(mirrored[240, 10], (20, 20, 220))  # mirrored: blue on the left


def test_sixteen_bit_pngs_scale_to_eight_bits():
    grey = np.full((8, 12), 20000, np.uint16)
    grey[0, 0] = 65535
    expected = 20000 * 255 // 65535  # 77
    for color_type, array in ((0, grey), (2, np.stack([grey] * 3, -1)), (4, np.stack([grey, grey * 0 + 65535], -1)),
                              (6, np.stack([grey, grey, grey, grey * 0 + 65535], -1))):
        data = png16(array, color_type)
        probe = probe_image(data, "x.png")
        assert (probe.format, probe.width, probe.height) == ("PNG", 12, 8)
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(to_rgb8(image))
        assert rgb.dtype == np.uint8 and rgb.shape == (8, 12, 3)
        assert abs(int(rgb[4, 4, 0]) - expected) <= 1 and tuple(rgb[0, 0]) == (255, 255, 255), color_type
    with Image.open(io.BytesIO(png16(grey, 0))) as image:
        assert (np.asarray(image.convert("RGB")) == 255).mean() > 0.99  # what the plain conversion did


def test_transparency_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[0, 1] = (255, 0, 0, 128)
    image = Image.fromarray(rgba, "RGBA")
    rgb = np.asarray(to_rgb8(image))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[1, 1]) == (255, 255, 255)
    assert close(rgb[0, 1], (255, 127, 127), 2)
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = palette.getpixel((3, 3))
    assert tuple(np.asarray(to_rgb8(palette))[3, 3]) == (255, 255, 255)
    grey_alpha = Image.fromarray(np.dstack([np.full((2, 2), 10, np.uint8), np.zeros((2, 2), np.uint8)]), "LA")
    assert tuple(np.asarray(to_rgb8(grey_alpha))[0, 0]) == (255, 255, 255)
