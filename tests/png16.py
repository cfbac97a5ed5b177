"""PNG files with 16 bits per sample, written chunk by chunk as the PNG spec lays them out
(Pillow writes 16-bit grey only; scanners and editors such as GIMP write all four colour types)."""

import struct
import zlib


def png16(array, color_type):
    """PNG bytes with 16 bits per sample: color_type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA."""
    h, w = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
