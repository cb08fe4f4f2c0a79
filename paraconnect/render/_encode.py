"""Image encoders for raw RGBA frames read back from OpenGL (bottom row first).

JPEG goes through simplejpeg (libjpeg-turbo) when it is installed, Pillow otherwise; PNG through
Pillow.  Both release the GIL while they encode, so a small thread pool encodes frames in
parallel with rendering.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError

__all__ = ["JPEG_ENCODER", "encode", "encode_timed"]

try:
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    _simplejpeg = None

JPEG_ENCODER = "simplejpeg" if _simplejpeg is not None else "pillow"


def _pillow_image(pixels: npt.NDArray[np.uint8]) -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "PNG frames need Pillow; install it with: pip install 'paraconnect[render]'"
        ) from exc
    h, w = pixels.shape[:2]
    # A negative stride flips the bottom-up OpenGL rows without a copy.
    image = Image.frombuffer("RGBA", (w, h), np.ascontiguousarray(pixels), "raw", "RGBA", 0, -1)
    return image.convert("RGB")


def encode(
    pixels: npt.NDArray[np.uint8], fmt: str, quality: int = 85, *, optimize: bool = False
) -> bytes:
    """Encode an (h, w, 4) uint8 RGBA array stored bottom row first.

    ``optimize`` (JPEG): optimal Huffman tables through Pillow, about a third smaller and about
    twice the time of simplejpeg, which does not offer them.
    """
    if fmt == "jpeg":
        if _simplejpeg is not None and not optimize:
            top_down = np.ascontiguousarray(pixels[::-1])
            return bytes(
                _simplejpeg.encode_jpeg(
                    top_down,
                    quality=quality,
                    colorspace="RGBX",
                    colorsubsampling="420",
                    fastdct=True,
                )
            )
        out = io.BytesIO()
        _pillow_image(pixels).save(out, "JPEG", quality=quality, optimize=optimize)
        return out.getvalue()
    if fmt == "png":
        out = io.BytesIO()
        _pillow_image(pixels).save(out, "PNG", compress_level=1)
        return out.getvalue()
    raise ConfigError(f"unknown image format {fmt!r}; use 'jpeg' or 'png'")


def encode_timed(
    pixels: npt.NDArray[np.uint8], fmt: str, quality: int, optimize: bool = False
) -> tuple[bytes, float]:
    """encode(), and how long it took in milliseconds."""
    start = time.perf_counter()
    data = encode(pixels, fmt, quality, optimize=optimize)
    return data, (time.perf_counter() - start) * 1000.0
