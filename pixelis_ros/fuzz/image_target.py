"""Fuzz target ``image``: camera message payloads through the image codec.

Two halves, as messages carry them:

- ``raw``: ``sensor_msgs/Image`` fields over the ranges the wire admits (uint32 sizes and step,
  any encoding string, short, long or empty data) into ``image_from_fields`` then ``to_rgb8``;
- ``compressed``: ``sensor_msgs/CompressedImage`` format strings and bytes into
  ``compressed_from_fields`` then ``to_rgb8`` — real small jpeg/png/bmp/tiff/webp/pnm files
  byte-mutated (flipped, zeroed, truncated, spliced), and files forged to claim huge sizes:
  PNG IHDR and JPEG SOF dimensions of 30000x30000 and more (truncated after the header, as the
  629-byte bomb of issue #13), PNG zlib bombs, BMP/PNM/GIF/HDR/WebP headers with huge sizes,
  compressedDepth payloads with forged headers.

``ImageDecodeError`` is the only error allowed out; the run's RSS check catches bombs that decode.
"""

from __future__ import annotations

import random
import struct
import zlib

import cv2
import numpy as np

from pixelis_ros.fuzz import mutate
from pixelis_ros.fuzz.target import Case, Target, short
from pixelis_ros.image_codec import SUPPORTED_ENCODINGS, ImageDecodeError, compressed_from_fields, image_from_fields, to_rgb8

HUGE_SIDES = (30000, 65500, 65535, 100_000, 2**31 - 1, 2**32 - 1)
FORMATS = ("jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "mono8; jpeg compressed mono8",
           "16UC1; compressedDepth", "32FC1; compressedDepth png", "16UC1; compressedDepth rvl", "", "tiff", "webp",
           "rgb8; jpeg compressed bgr8" * 50, "\x00", "jpeg\u200b")
_ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "mono16": 2, "16UC1": 2, "32FC1": 4,
                      "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2}


def _png_chunk(kind: bytes, body: bytes, good_crc: bool = True) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc if good_crc else crc ^ 1)


def forged_png(rng: random.Random) -> tuple[str, bytes]:
    """A PNG whose IHDR claims a huge size, with a small or bomb-sized zlib stream behind it."""
    w, h = rng.choice(HUGE_SIDES[:3] + (20000, 1, 16)), rng.choice(HUGE_SIDES[:3] + (20000, 1, 16))
    depth, colour = rng.choice([(8, 2), (8, 0), (16, 0), (16, 2), (8, 6), (1, 0), (8, 3)])
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    zeros = rng.choice((1000, 100_000, 20_000_000))  # 20 MB of zeros packs into ~20 KB: a small zip bomb
    idat = zlib.compress(bytes(zeros), 9)
    chunks = [_png_chunk(b"IHDR", ihdr, rng.random() < 0.8)]
    if colour == 3:
        chunks.append(_png_chunk(b"PLTE", bytes(range(12))))
    kind = "png_forged_dims"
    if rng.random() < 0.3:  # a chunk length that lies (the 9 KB PNG of issue #13)
        kind = "png_forged_length"
        chunks.append(struct.pack(">I", rng.choice((2**31 - 1, 2**32 - 1, len(idat) * 100))) + b"IDAT" + idat)
    else:
        chunks.append(_png_chunk(b"IDAT", idat))
    if rng.random() < 0.7:
        chunks.append(_png_chunk(b"IEND", b""))
    return kind, b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def forged_jpeg(rng: random.Random, jpeg: bytes) -> tuple[str, bytes]:
    """A real JPEG whose SOF marker claims a huge size, often cut right after the header."""
    data = bytearray(jpeg)
    at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    if at < 0:
        return "jpeg_forged_dims", bytes(data)
    h, w = rng.choice((30000, 65500, 65535, 1)), rng.choice((30000, 65500, 65535, 1))
    struct.pack_into(">HH", data, at + 5, h, w)
    if rng.random() < 0.6:
        data = data[: rng.choice((629, at + 40, len(data) // 2))]
    return "jpeg_forged_dims", bytes(data)


def forged_header(rng: random.Random) -> tuple[str, bytes]:
    """Other formats OpenCV decodes, with headers claiming huge sizes over a few bytes of pixels."""
    w, h = rng.choice(HUGE_SIDES[:3]), rng.choice(HUGE_SIDES[:3])
    tail = rng.randbytes(rng.choice((0, 16, 4096)))
    kind = rng.choice(("bmp", "pnm", "pgm16", "gif", "hdr", "webp", "tiff"))
    if kind == "bmp":
        dib = struct.pack("<IiiHHIIiiII", 40, w, rng.choice((h, -h)), 1, 24, 0, 0, 2835, 2835, 0, 0)
        head = b"BM" + struct.pack("<IHHI", 54 + len(tail), 0, 0, 54) + dib
    elif kind == "pnm":
        head = f"P6\n{w} {h}\n255\n".encode()
    elif kind == "pgm16":
        head = f"P5 {w} {h} 65535\n".encode()
    elif kind == "gif":
        head = b"GIF89a" + struct.pack("<HHBBB", min(w, 65535), min(h, 65535), 0xF7, 0, 0) + bytes(768) \
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, min(w, 65535), min(h, 65535), 0) + b"\x08"
    elif kind == "hdr":
        head = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode()
    elif kind == "webp":  # VP8X canvas (24-bit sizes) then a tiny VP8L frame
        vp8x = struct.pack("<I", 0) + (min(w, 2**24) - 1).to_bytes(3, "little") + (min(h, 2**24) - 1).to_bytes(3, "little")
        body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x + b"VP8L" + struct.pack("<I", len(tail) + 5) \
            + b"\x2f" + struct.pack("<I", ((16383) | (16383 << 14))) + tail
        return "webp_forged_dims", b"RIFF" + struct.pack("<I", len(body)) + body
    else:  # tiff: one strip, uncompressed, claiming w x h RGB
        entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, 8),
                   (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(tail))]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
        head = b"II*\x00" + struct.pack("<I", 8 + len(tail)) + tail
        return "tiff_forged_dims", head + ifd
    return f"{kind}_forged_dims", head + tail


def _raw_case(rng: random.Random) -> Case:
    encoding = rng.choice(SUPPORTED_ENCODINGS + ("", "rgb16", "bayer_rggb8", "RGB8", "rgb8\x00", "16SC1", "8UC4",
                                                 "rgb8" * 100, "\u200b"))
    channels = _ENCODING_CHANNELS.get(encoding, 1)
    side = lambda: rng.choice((0, 1, 2, 3, 31, 160, 4096, 30000)) if rng.random() < 0.8 else rng.choice(HUGE_SIDES)
    width, height = side(), side()
    row = width * channels
    step = rng.choice((row, row, row + rng.randint(1, 64), max(0, row - 1), 0, 2**32 - 1, rng.randrange(2**32)))
    need = step * height
    # Consistent payloads up to 64 MB (zeros: the pages are only mapped when read); others off by a bit or a lot.
    size = rng.choice((need, need, need + 7, max(0, need - 1), 0, 30, rng.randrange(1 << 16)))
    if size > 64 << 20:
        size = rng.randrange(1 << 16)
    data = np.zeros(size, np.uint8) if rng.random() < 0.5 else bytes(size)
    if size and size < 1 << 16:
        data = rng.randbytes(size)
    fields = {"height": height, "width": width, "encoding": encoding, "is_bigendian": rng.choice((0, 0, 1, 255)),
              "step": step}
    summary = f"Image {short(fields)} + {size} bytes"
    return Case("raw:" + ("consistent" if size == need and need else "inconsistent"), summary, ("raw", fields, data))


class ImageTarget(Target):
    name = "image"
    domain_errors = (ImageDecodeError,)

    def setup(self, workdir) -> None:
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 255, (48, 64, 3), np.uint8)
        cv2.rectangle(rgb, (5, 5), (40, 30), (250, 20, 20), -1)
        mono = rgb[:, :, 0].copy()
        depth = (rng.integers(0, 4000, (48, 64))).astype(np.uint16)
        enc = lambda ext, img, *p: cv2.imencode(ext, img, list(p))[1].tobytes()
        self.files = {"jpeg": enc(".jpg", rgb[:, :, ::-1], cv2.IMWRITE_JPEG_QUALITY, 80),
                      "jpeg_progressive": enc(".jpg", rgb, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "jpeg_mono": enc(".jpg", mono),
                      "png": enc(".png", rgb), "png_mono": enc(".png", mono), "png16": enc(".png", depth),
                      "bmp": enc(".bmp", rgb), "tiff": enc(".tiff", rgb), "webp": enc(".webp", rgb), "pnm": enc(".ppm", rgb)}
        # compressed_depth_image_transport: int32 format, float32 depthQuantA, depthQuantB, then the png.
        self.files["depth"] = struct.pack("<iff", 0, 100.0, 0.5) + self.files["png16"]

    def make(self, rng: random.Random) -> Case:
        if rng.random() < 0.35:
            return _raw_case(rng)
        pick = rng.random()
        fmt = rng.choice(FORMATS)
        if pick < 0.15:
            kind, data = forged_png(rng)
        elif pick < 0.3:
            kind, data = forged_jpeg(rng, self.files[rng.choice(("jpeg", "jpeg_progressive", "jpeg_mono"))])
        elif pick < 0.45:
            kind, data = forged_header(rng)
        elif pick < 0.55:
            kind, png = forged_png(rng)
            kind, data, fmt = "depth_" + kind, struct.pack("<iff", 0, *rng.choice([(1.0, 0.0), (0.0, 0.0), (1e38, -1e38)])) + png, \
                rng.choice(("16UC1; compressedDepth", "32FC1; compressedDepth png"))
        elif pick < 0.93:
            name = rng.choice(sorted(self.files))
            how, data = mutate.mutate_bytes(rng, self.files[name])
            kind = f"{name}_{how.split('+')[0]}"
            if name == "depth":
                fmt = rng.choice(("16UC1; compressedDepth", "32FC1; compressedDepth png", fmt))
        elif pick < 0.97:
            kind, data = "random_bytes", mutate.random_bytes(rng)
        else:
            name = rng.choice(sorted(self.files))
            kind, data = f"{name}_valid", self.files[name]
        return Case("compressed:" + kind, f"CompressedImage format={short(fmt, 40)} data={short(data, 80)}", ("compressed", fmt, data))

    def run(self, case: Case) -> list[str]:
        if case.data[0] == "raw":
            _, fields, data = case.data
            img = image_from_fields(data=data, **fields)
        else:
            _, fmt, data = case.data
            img = compressed_from_fields(fmt, data)
        to_rgb8(img)  # what every tool and model does next
        return []
