"""An encoded image's size read from its header alone (PNG, JPEG, BMP, WebP), to refuse huge images before decoding."""

from __future__ import annotations

from typing import NamedTuple


class ImageSize(NamedTuple):
    height: int
    width: int
    channels: int  # as OpenCV's IMREAD_UNCHANGED gives them, or an upper bound
    sample_bytes: int  # 1, or 2 for 16-bit images

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * self.sample_bytes


_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}  # by color type; palettes may carry alpha (tRNS), gray+alpha → BGRA
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = frozenset((0x01, *range(0xD0, 0xD9)))  # TEM, RST0-7, SOI: markers without a segment


def read(data: bytes) -> ImageSize | None:
    """The size from the header, or None for another format or a header this cannot read (OpenCV then decides)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def _png(data: bytes) -> ImageSize | None:
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, color = data[24], data[25]
    return ImageSize(height, width, _PNG_CHANNELS.get(color, 4), 2 if depth == 16 else 1)


def _jpeg(data: bytes) -> ImageSize | None:
    """Walks the segments up to the first start-of-frame; none before the scan data: None."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        if marker in _SOF:
            if i + 10 > len(data):
                return None
            precision, height = data[i + 4], int.from_bytes(data[i + 5 : i + 7], "big")
            width, components = int.from_bytes(data[i + 7 : i + 9], "big"), data[i + 9]
            return ImageSize(height, width, components, 2 if precision > 8 else 1) if height else None
        if marker == 0xDA:  # start of scan
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _bmp(data: bytes) -> ImageSize | None:
    if len(data) < 30:
        return None
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: stored top-down
    bits = int.from_bytes(data[28:30], "little")
    return ImageSize(abs(height), abs(width), 4 if bits == 32 else 3, 1)


def _webp(data: bytes) -> ImageSize | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        return ImageSize(int.from_bytes(data[27:30], "little") + 1, width, 4, 1)
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
        return ImageSize(height, width, 3, 1)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageSize(((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1, 4, 1)
    return None
