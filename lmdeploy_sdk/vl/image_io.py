"""load_image: a path, an http(s) URL, a data: URL, raw bytes or a PIL image -> an RGB PIL image."""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

# Bigger downloads are refused (a URL is user input).
MAX_IMAGE_BYTES = 32 * 1024 * 1024
_FETCH_TIMEOUT_S = 30.0


def _describe(src: Any) -> str:
    text = src if isinstance(src, str) else f"<{type(src).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _decode(data: bytes, what: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # a truncated file fails here, not later in the processor
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {what}: {e}") from None
    return image


def _fetch(url: str) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=_FETCH_TIMEOUT_S, follow_redirects=True) as r:
            if r.status_code != 200:
                raise ValueError(f"cannot fetch image {_describe(url)}: HTTP {r.status_code}")
            chunks, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > MAX_IMAGE_BYTES:
                    raise ValueError(f"image {_describe(url)} is over {MAX_IMAGE_BYTES} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as e:
        raise ValueError(f"cannot fetch image {_describe(url)}: {e}") from None
    return b"".join(chunks)


def _data_url(url: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or ";base64" not in head:
        raise ValueError(f"image {_describe(url)}: a data URL must be 'data:image/...;base64,<data>'")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {_describe(url)}: its base64 data is not valid") from None


def load_image(src: str | Path | bytes | Image.Image) -> Image.Image:
    """An RGB image from any of the forms users pass; ValueError naming the source otherwise."""
    if isinstance(src, Image.Image):
        image = src
    elif isinstance(src, (bytes, bytearray)):
        image = _decode(bytes(src), f"of {len(src)} bytes")
    elif isinstance(src, (str, Path)):
        text = str(src)
        if text.startswith(("http://", "https://")):
            image = _decode(_fetch(text), _describe(text))
        elif text.startswith("data:"):
            image = _decode(_data_url(text), _describe(text))
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise ValueError(f"image {_describe(text)}: no such file")
            image = _decode(path.read_bytes(), _describe(text))
    else:
        raise ValueError(f"an image must be a path, URL, data URL, bytes or PIL image, got {type(src).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def image_key(image: Image.Image) -> int:
    """A 63-bit digest of the pixels (prefix-cache hashes include it: same text, other image, no hit)."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=repr((image.size, image.mode)).encode()[:64])
    return int.from_bytes(digest.digest(), "little") >> 1
