"""Image sizes read from encoded headers, so a decoder never allocates what a header forges.

``cv2.imdecode`` allocates the size a header claims before it reads a pixel: a 629-byte JPEG
whose SOF marker says 30000x30000 decodes (grey past the cut) to a 2.7 GB array. Camera topics
and bags are input we do not control, so the codec asks this module first and refuses above the
pixel cap. The parsers are deliberately small: they read only the fields that fix the decoded
size (the first frame's, as ``imdecode`` decodes only that), in the formats OpenCV would detect
by signature. A format without a parser here is refused, not decoded: an unchecked decoder is
the hole this module exists to close.
"""

from __future__ import annotations

import re
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# JPEG start-of-frame markers (C4, C8, CC are DHT, JPG and DAC, not frames).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n]*\n)*(\d{1,12})")
_HDR_SIZE = re.compile(rb"^([-+][XY]) (\d{1,12}) ([-+][XY]) (\d{1,12})$", re.MULTILINE)
HEADER_FORMATS = ("jpeg", "png", "bmp", "tiff", "webp", "pnm", "pfm", "gif", "hdr", "sunraster")
"""The encoded formats accepted: every other signature OpenCV knows (JPEG 2000, OpenEXR, AVIF)
is refused, as is anything unrecognised."""


class HeaderError(ValueError):
    """A header of a known format that is cut short or inconsistent before it names a size."""


def _jpeg(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise HeaderError(f"jpeg marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    raise HeaderError("jpeg ends before its start-of-frame marker")


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise HeaderError("png does not start with its IHDR chunk")
    # OpenCV's png reader allocates each chunk at the length it claims: a 173-byte file whose IDAT
    # claims 2 GB takes 2 GB. Walking the lengths costs nothing and refuses such a lie.
    at = 8
    while at + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        kind = data[at + 4:at + 8]
        if at + 12 + length > len(data):
            raise HeaderError(f"png chunk {kind!r} at byte {at} claims {length} bytes, "
                              f"more than the {len(data) - at - 12} left (truncated, or a forged length)")
        if kind == b"IEND":
            break
        at += 12 + length
    return struct.unpack_from(">II", data, 16)


def _bmp(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise HeaderError("bmp header cut short")
    (dib,) = struct.unpack_from("<I", data, 14)
    if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # negative height marks a top-down bitmap


def _tiff(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    if struct.unpack_from(order + "H", data, 2)[0] != 42:
        raise HeaderError("only classic tiff is accepted, not BigTIFF")
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd + 2 > len(data):
        raise HeaderError("tiff directory offset points past the data")
    (count,) = struct.unpack_from(order + "H", data, ifd)
    size: dict[int, int] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        if at + 12 > len(data):
            break
        tag, kind = struct.unpack_from(order + "HH", data, at)
        if tag in (256, 257) and kind in (3, 4):
            size[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, at + 8)[0]
    if len(size) != 2:
        raise HeaderError("tiff directory names no ImageWidth and ImageLength")
    return size[256], size[257]


def _webp(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    raise HeaderError("webp holds no VP8, VP8L or VP8X header")


def _pnm(data: bytes) -> tuple[int, int]:
    head = data[:4096]
    if head[:2] == b"P7":  # PAM: WIDTH and HEIGHT lines
        found = {k: re.search(rb"^%s\s+(\d{1,12})" % k, head, re.MULTILINE) for k in (b"WIDTH", b"HEIGHT")}
        if not all(found.values()):
            raise HeaderError("pam header names no WIDTH and HEIGHT")
        return int(found[b"WIDTH"].group(1)), int(found[b"HEIGHT"].group(1))
    width = _PNM_TOKEN.match(head, 2)
    height = _PNM_TOKEN.match(head, width.end()) if width else None
    if not height:
        raise HeaderError("pnm header names no width and height")
    return int(width.group(1)), int(height.group(1))


def _hdr(data: bytes) -> tuple[int, int]:
    found = _HDR_SIZE.search(data[:8192])
    if not found:
        raise HeaderError("radiance header names no resolution line")
    first, a, _, b = found.groups()
    return (int(b), int(a)) if first.endswith(b"Y") else (int(a), int(b))


def _gif(data: bytes) -> tuple[int, int]:
    if len(data) < 10:
        raise HeaderError("gif header cut short")
    return struct.unpack_from("<HH", data, 6)


def _sunraster(data: bytes) -> tuple[int, int]:
    if len(data) < 12:
        raise HeaderError("sun raster header cut short")
    return struct.unpack_from(">II", data, 4)


def _format(data: bytes) -> str | None:
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "pnm"
    if data[:2] in (b"PF", b"Pf") and data[2:3].isspace():
        return "pfm"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data.startswith((b"#?RADIANCE", b"#?RGBE")):
        return "hdr"
    if data.startswith(b"\x59\xa6\x6a\x95"):
        return "sunraster"
    return None


_PARSERS = {"jpeg": _jpeg, "png": _png, "bmp": _bmp, "tiff": _tiff, "webp": _webp, "pnm": _pnm, "pfm": _pnm,
            "gif": _gif, "hdr": _hdr, "sunraster": _sunraster}


def encoded_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from an encoded image's header; None for a format not accepted.
    Raises ``HeaderError`` when a known format's header is cut short or broken."""
    fmt = _format(data)
    if fmt is None:
        return None
    try:
        width, height = _PARSERS[fmt](data)
    except struct.error as e:
        raise HeaderError(f"{fmt} header cut short") from e
    return fmt, width, height
