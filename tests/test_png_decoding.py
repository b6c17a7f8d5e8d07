"""PNG decoding on the hot paths: libspng (pyspng) where it decodes exactly as OpenCV, OpenCV otherwise."""

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from segdata import files
from segdata.files import decode_png, read_png, spng_can_decode


def opencv(data: bytes) -> np.ndarray:
    """What the project decoded before: OpenCV, BGR(A) turned into RGB(A)."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return array


def pillow(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def interlaced(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (neither OpenCV nor Pillow writes one)."""
    height, width, _ = rgb.shape
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def photo_like(height=64, width=96, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.normal(120, 40, (height, width, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(smooth + rng.normal(0, 2, smooth.shape), 0, 255).astype(np.uint8)


def kinds() -> dict[str, tuple[bytes, bool]]:
    """PNG bytes of each kind, and whether libspng should decode it."""
    rng = np.random.default_rng(1)
    rgb, grey = photo_like(), rng.integers(0, 34, (64, 96), dtype=np.uint8)
    palette = Image.fromarray(grey % 21).convert("P")
    palette.putpalette(rng.integers(0, 255, 768, dtype=np.uint8).tolist())
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    return {
        "RGB 8-bit (photograph)": (cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes(), True),
        "RGB 8-bit, Pillow": (pillow(Image.fromarray(rgb)), True),
        "grey 8-bit (trainId mask)": (cv2.imencode(".png", grey)[1].tobytes(), True),
        "grey 1-bit": (pillow(Image.fromarray(grey > 16)), True),
        "RGBA 8-bit (colour mask)": (pillow(Image.fromarray(rng.integers(0, 255, (64, 96, 4), dtype=np.uint8))), True),
        "palette (VOC-style mask)": (pillow(palette), True),
        "palette with transparency": (pillow(transparent), False),
        "grey 16-bit (instanceIds)": (cv2.imencode(".png", rng.integers(0, 65535, (64, 96), dtype=np.uint16))[1]
                                      .tobytes(), False),
        "RGB 16-bit": (cv2.imencode(".png", rng.integers(0, 65535, (64, 96, 3), dtype=np.uint16))[1].tobytes(), False),
        "grey + alpha": (pillow(Image.fromarray(grey).convert("LA")), False),
        "RGB interlaced": (interlaced(rgb), False),
    }


@pytest.mark.parametrize("kind", list(kinds()))
def test_every_png_kind_decodes_to_the_pixels_opencv_decodes(kind):
    data, fast = kinds()[kind]
    assert spng_can_decode(data) == (fast and files.pyspng is not None)
    decoded, reference = decode_png(data), opencv(data)
    assert decoded.dtype == reference.dtype and decoded.shape == reference.shape
    assert np.array_equal(decoded, reference)


def test_photographs_decode_as_pillow_decodes_them_too():
    data, _ = kinds()["RGB 8-bit (photograph)"]
    assert np.array_equal(decode_png(data), np.asarray(Image.open(io.BytesIO(data))))
    data, _ = kinds()["RGB interlaced"]
    assert np.array_equal(decode_png(data), np.asarray(Image.open(io.BytesIO(data))))


def test_without_pyspng_opencv_decodes_everything(monkeypatch):
    monkeypatch.setattr(files, "pyspng", None)
    for kind, (data, _) in kinds().items():
        assert not spng_can_decode(data)
        assert np.array_equal(decode_png(data), opencv(data)), kind


def test_damaged_and_missing_files_are_named(tmp_path):
    data, _ = kinds()["RGB 8-bit (photograph)"]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.png: cannot be decoded"):
        read_png(truncated)
    with pytest.raises(FileNotFoundError, match="missing.png: no such file"):
        read_png(tmp_path / "missing.png")
