"""Label images: DAVIS palette PNGs read and written with numpy, zlib and OpenCV (no Pillow).

DAVIS stores a frame's objects as an 8-bit palette PNG whose pixel values are the object ids (0
background, 1..N objects) and whose palette only colours them. OpenCV decodes palette PNGs to
colours, so :func:`read_labels` gives the file a grey palette (entry i = (i, i, i)) before
decoding: each pixel then decodes to its own index, whatever the original colours (duplicates
included) and bit depth (1, 2, 4 or 8). Writing is a plain PNG encoder: IHDR, PLTE (the DAVIS
palette), one zlib stream of unfiltered rows, IEND.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PALETTE_COLOR_TYPE = 3
GREY_PALETTE = bytes(np.repeat(np.arange(256, dtype=np.uint8), 3))
MAX_OBJECTS = 255          # ids 1..255: what an 8-bit palette PNG holds
BINARY_THRESHOLD = 128     # a plain image's object: pixels at least this bright
ZLIB_LEVEL = 1             # mask rows compress 10-50x at level 1 already; higher costs time


def davis_palette() -> np.ndarray:
    """(256, 3) uint8 RGB: the PASCAL VOC colour map that DAVIS annotations use (0 black,
    1 (128, 0, 0), 2 (0, 128, 0), ...): each id's bits spread over the channels' high bits."""
    ids = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            palette[:, channel] |= bit << (7 - shift)
    return palette.astype(np.uint8)


DAVIS_PALETTE = davis_palette()


class LabelImageError(ValueError):
    """A label image that cannot be read (not an image, damaged)."""


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG file's bytes."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def is_palette_png(data: bytes) -> bool:
    return (data.startswith(PNG_SIGNATURE) and len(data) > 26
            and data[12:16] == b"IHDR" and data[25] == PALETTE_COLOR_TYPE)


def _is_grey16_png(data: bytes) -> bool:
    return (data.startswith(PNG_SIGNATURE) and len(data) > 26 and data[12:16] == b"IHDR"
            and data[24] == 16 and data[25] == 0)


def read_labels(path: str | Path) -> tuple[np.ndarray, bool]:
    """A label image -> ((H, W) uint8 ids, whether it was a palette PNG).

    A palette PNG gives its indices (DAVIS: 0 background, 1..255 objects); a 16-bit grey PNG
    its values (an instance map: uint16 ids, which may exceed 255), unless it holds only 0 and
    one other value (a 0/65535 mask: one object); any other image OpenCV reads is one object,
    1 where its grey level is at least 128 (a 0/255 mask), 0 elsewhere.
    :class:`LabelImageError` when the file cannot be decoded.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LabelImageError(f"cannot read it ({e.strerror or e})") from None
    if is_palette_png(data):
        return _palette_indices(data), True
    if _is_grey16_png(data):
        ids = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if ids is not None and ids.ndim == 2:
            values = np.unique(ids)
            return ((ids > 0).astype(np.uint8) if len(values[values > 0]) <= 1 else ids), False
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise LabelImageError("not an image OpenCV can decode")
    return (image >= BINARY_THRESHOLD).astype(np.uint8), False


def _palette_indices(data: bytes) -> np.ndarray:
    parts = [PNG_SIGNATURE]
    for kind, payload in _chunks(data):
        if kind == b"PLTE":
            payload = GREY_PALETTE[:len(payload)]   # entry i becomes (i, i, i)
        elif kind == b"tRNS":
            continue                                # transparency would not change an index
        parts.append(_chunk(kind, payload))
    image = cv2.imdecode(np.frombuffer(b"".join(parts), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise LabelImageError("a damaged palette PNG")
    return np.ascontiguousarray(image[:, :, 0])


def encode_palette_png(labels: np.ndarray, palette: np.ndarray = DAVIS_PALETTE) -> bytes:
    """(H, W) uint8 ids -> the bytes of an 8-bit palette PNG coloured by ``palette`` (256, 3)."""
    labels = np.ascontiguousarray(labels, np.uint8)
    h, w = labels.shape
    rows = np.zeros((h, w + 1), np.uint8)    # each row: filter type 0 (none), then its pixels
    rows[:, 1:] = labels
    header = struct.pack(">IIBBBBB", w, h, 8, PALETTE_COLOR_TYPE, 0, 0, 0)
    return b"".join((PNG_SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"PLTE", np.asarray(palette, np.uint8).tobytes()),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), ZLIB_LEVEL)),
                     _chunk(b"IEND", b"")))


def write_palette_png(path: str | Path, labels: np.ndarray,
                      palette: np.ndarray = DAVIS_PALETTE) -> None:
    """Write ``labels`` (H, W) uint8 as a palette PNG at ``path`` (as is: callers stage it)."""
    Path(path).write_bytes(encode_palette_png(labels, palette))
