"""image_codec: ROS Image / CompressedImage fields <-> arrays, layouts, zero-copy and errors."""

from __future__ import annotations

import struct
import sys

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelis_ros.image_codec import (
    SUPPORTED_ENCODINGS, ImageDecodeError, compress, compressed_from_fields, decode_image_bytes,
    image_from_fields, image_to_fields, to_rgb8,
)

RNG = np.random.default_rng(0)
LITTLE_HOST = sys.byteorder == "little"


def rgb(h: int = 5, w: int = 7) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def padded(rows: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Rows (H x row_bytes uint8) with ``pad`` junk bytes after each, and the resulting step."""
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.hstack([rows, junk]).tobytes(), rows.shape[1] + pad


# --- raw encodings -----------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, dtype, shape", [
    ("rgb8", np.uint8, (5, 7, 3)), ("bgr8", np.uint8, (5, 7, 3)), ("mono8", np.uint8, (5, 7)),
    ("mono16", np.uint16, (5, 7)), ("16UC1", np.uint16, (5, 7)), ("32FC1", np.float32, (5, 7)),
])
def test_round_trip(encoding, dtype, shape):
    img = (RNG.random(shape) * 1000).astype(dtype) if dtype == np.float32 else \
        RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    fields = image_to_fields(img, encoding)
    assert fields["is_bigendian"] == 0 and fields["step"] * fields["height"] == len(fields["data"])
    out = image_from_fields(**fields)  # the dict is the keyword set
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("make", [bytes, bytearray, lambda b: np.frombuffer(b, np.uint8).copy()])
@pytest.mark.parametrize("encoding, shape", [("rgb8", (5, 7, 3)), ("mono8", (4, 9)), ("8UC1", (4, 9))])
@pytest.mark.parametrize("pad", [0, 1, 11])
def test_8_bit_decodes_as_a_view_skipping_row_padding(make, encoding, shape, pad):
    img = RNG.integers(0, 256, shape, dtype=np.uint8)
    data, step = padded(img.reshape(shape[0], -1), pad)
    src = make(data + b"trailing bytes past step*height are ignored")
    out = image_from_fields(shape[0], shape[1], encoding, 0, step, src)
    np.testing.assert_array_equal(out, img)
    assert np.shares_memory(out, src if isinstance(src, np.ndarray) else np.frombuffer(src, np.uint8))


@pytest.mark.parametrize("encoding, order, alpha", [
    ("bgr8", [2, 1, 0], False), ("8UC3", [2, 1, 0], False), ("rgba8", [0, 1, 2], True), ("bgra8", [2, 1, 0], True)])
def test_colour_comes_out_rgb_as_a_view(encoding, order, alpha):
    img = rgb()
    stored = np.dstack([img[..., order]] + ([np.full((5, 7), 77, np.uint8)] if alpha else []))
    data = stored.tobytes()
    out = image_from_fields(5, 7, encoding, 0, stored.shape[1] * stored.shape[2], data)
    assert out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, img)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))
    assert image_to_fields(img, "bgr8")["data"][:3] == bytes(img[0, 0, ::-1])  # blue first in memory


@pytest.mark.parametrize("encoding, dtype", [("mono16", ">u2"), ("16UC1", ">u2"), ("32FC1", ">f4")])
def test_big_endian_is_byteswapped(encoding, dtype):
    img = (RNG.random((3, 5)) * 60000).astype(np.dtype(dtype).newbyteorder("="))
    rows = np.frombuffer(img.astype(dtype).tobytes(), np.uint8).reshape(3, -1)
    data, step = padded(rows, 2)
    out = image_from_fields(3, 5, encoding, True, step, data)
    assert out.dtype.isnative and out.dtype == img.dtype
    np.testing.assert_array_equal(out, img)


@pytest.mark.skipif(not LITTLE_HOST, reason="zero-copy applies when the byte order matches the host")
@pytest.mark.parametrize("encoding, dtype", [("mono16", np.uint16), ("32FC1", np.float32)])
def test_native_order_wide_mono_is_a_view(encoding, dtype):
    img = np.arange(12, dtype=dtype).reshape(3, 4)
    out = image_from_fields(3, 4, encoding, 0, img.strides[0], img)
    np.testing.assert_array_equal(out, img)
    assert np.shares_memory(out, img)


def bt601_yuv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """Studio-range BT.601, the matrix OpenCV's packed-YUV conversions use."""
    r_, g_, b_ = r / 255, g / 255, b / 255
    y = 16 + 65.481 * r_ + 128.553 * g_ + 24.966 * b_
    u = 128 - 37.797 * r_ - 74.203 * g_ + 112.0 * b_
    v = 128 + 112.0 * r_ - 93.786 * g_ - 18.214 * b_
    return round(y), round(u), round(v)


@pytest.mark.parametrize("encoding, pattern", [
    ("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuyv", "yuyv"), ("yuv422_yuy2", "yuyv")])
def test_yuv_constant_colour(encoding, pattern):
    colour = (200, 60, 30)
    y, u, v = bt601_yuv(*colour)
    pair = bytes([u, y, v, y] if pattern == "uyvy" else [y, u, y, v])
    h, w, pad = 4, 6, 4
    row = pair * (w // 2) + b"\0" * pad
    out = image_from_fields(h, w, encoding, 0, len(row), row * h)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - colour).max() <= 3


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((2, 2, "rgb16", 0, 12, bytes(24)), r"unsupported image encoding 'rgb16'; supported: rgb8, bgr8"),
    ((0, 2, "rgb8", 0, 6, bytes(12)), r"height and width must be positive, got height=0, width=2"),
    ((2, -1, "mono8", 0, 6, bytes(12)), r"got height=2, width=-1"),
    ((2, 3, "rgb8", 0, 8, bytes(24)), r"step 8 is smaller than one row of 3 rgb8 pixels \(9 bytes\)"),
    ((2, 3, "mono16", 0, 5, bytes(24)), r"step 5 is smaller than one row of 3 mono16 pixels \(6 bytes\)"),
    ((2, 3, "rgb8", 0, 10, bytes(19)), r"data holds 19 bytes but height 2 x step 10 needs 20 bytes"),
    ((2, 3, "yuv422", 0, 6, bytes(12)), r"yuv422 packs pixel pairs, so width must be even, got width=3"),
    ((2, 3, "yuyv", 0, 6, bytes(12)), r"width must be even"),
    ((1, 1, "mono8", 0, 1, "x"), r"must be bytes-like, got str"),
])
def test_bad_fields_raise(args, message):
    with pytest.raises(ImageDecodeError, match=message):
        image_from_fields(*args)


BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1,
                   "mono16": 2, "16UC1": 2, "32FC1": 4, "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2}
MONO_DTYPES = {"mono8": np.uint8, "8UC1": np.uint8, "mono16": np.uint16, "16UC1": np.uint16, "32FC1": np.float32}


@st.composite
def image_fields(draw) -> tuple:
    """Fields that are often consistent (so decoding is exercised) and often not."""
    encoding = draw(st.sampled_from(SUPPORTED_ENCODINGS + ("", "RGB8", "jpeg", "32FC3")))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if draw(st.integers(0, 5)) == 0:  # now and then a non-positive side
        height, width = draw(st.sampled_from([(0, width), (height, 0), (-1, width), (height, -2)]))
    row = max(width, 0) * BYTES_PER_PIXEL.get(encoding, 3)
    step = draw(st.integers(row, row + 5) | st.integers(-4, 40))
    needed = max(step, 0) * max(height, 0)
    size = draw(st.integers(needed, needed + 8) | st.integers(0, 200))
    payload = draw(st.binary(min_size=size, max_size=size))
    container = draw(st.sampled_from([bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)]))
    return height, width, encoding, draw(st.booleans()), step, container(payload)


@given(image_fields())
@settings(max_examples=400, deadline=None)
def test_any_fields_decode_or_raise_image_decode_error(fields):
    height, width, encoding = fields[:3]
    try:
        out = image_from_fields(*fields)
    except ImageDecodeError:
        return
    if encoding in MONO_DTYPES:
        assert out.shape == (height, width) and out.dtype == MONO_DTYPES[encoding]
    else:
        assert out.shape == (height, width, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("call, message", [
    (lambda: image_to_fields(np.zeros((2, 2), np.uint8), "rgb8"), r"rgb8 needs a HxWx3 array, got shape \(2, 2\)"),
    (lambda: image_to_fields(np.zeros((2, 2, 3), np.uint8), "mono8"), r"mono8 needs a HxW array"),
    (lambda: image_to_fields(np.zeros((2, 2), np.uint8), "mono16"), r"mono16 needs dtype uint16, got uint8"),
    (lambda: image_to_fields(np.zeros((2, 2), np.uint8), "yuv422"), r"cannot encode to 'yuv422'"),
    (lambda: compress(rgb(), "webp"), r"cannot compress to 'webp'"),
    (lambda: compress(rgb(), "jpeg", 101), r"quality must be in 0..100, got 101"),
    (lambda: compress(np.zeros((4, 4), np.uint16), "jpeg"), r"jpeg cannot hold dtype uint16"),
    (lambda: compress(np.zeros((4, 4, 2), np.uint8), "png"), r"needs an HxW or HxWx3 array"),
])
def test_encoders_reject_mismatched_arrays(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- compressed ----------------------------------------------------------------------------------

def smooth_rgb(h: int = 48, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)


@pytest.mark.parametrize("format", ["jpeg", "rgb8; jpeg compressed bgr8"])
def test_jpeg_round_trip(format):
    img = smooth_rgb()
    out = compressed_from_fields(format, compress(img, "jpeg", quality=95))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 3  # close, and in RGB order (BGR would be far off)


@pytest.mark.parametrize("img", [rgb(), RNG.integers(0, 256, (5, 7), dtype=np.uint8),
                                 RNG.integers(0, 65536, (5, 7), dtype=np.uint16)])
def test_png_round_trip_is_exact(img):
    out = compressed_from_fields("bgr8; png compressed bgr8", compress(img, "png"))
    assert out.dtype == img.dtype
    np.testing.assert_array_equal(out, img)


def depth_message(png: bytes, a: float = 0.0, b: float = 0.0) -> bytes:
    return struct.pack("<iff", 0, a, b) + png


def test_compressed_depth_16uc1():
    depth = RNG.integers(0, 65536, (6, 8), dtype=np.uint16)
    out = compressed_from_fields("16UC1; compressedDepth png", depth_message(compress(depth, "png")))
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, depth)


def test_compressed_depth_32fc1_inverse_quantization():
    # compressed_depth_image_transport's defaults: depth_quantization 100, depth_max 10 m.
    a, b = 100.0 * 101.0, 1.0 - 100.0 / 10.0
    metres = np.array([[0.5, 2.0], [7.5, 0.0]], np.float32)
    with np.errstate(divide="ignore"):
        quantized = np.where(metres > 0, a / metres + b, 0).round().astype(np.uint16)
    out = compressed_from_fields("32FC1; compressedDepth png", depth_message(compress(quantized, "png"), a, b))
    assert out.dtype == np.float32 and np.isnan(out[1, 1])
    np.testing.assert_allclose(out[metres > 0], metres[metres > 0], rtol=1e-3)


def test_compressed_depth_without_png_raises():
    with pytest.raises(ImageDecodeError, match=r"holds no png after its 12-byte header"):
        compressed_from_fields("16UC1; compressedDepth rvl", bytes(40))


def test_broken_jpeg_raises_with_format_and_size():
    stub = compress(smooth_rgb())[:300]
    with pytest.raises(ImageDecodeError, match=r"cannot decode 300 bytes of 'jpeg' compressed image"):
        compressed_from_fields("jpeg", stub)


def test_empty_compressed_raises():
    with pytest.raises(ImageDecodeError, match=r"compressed image \('png'\) has no data \(0 bytes\)"):
        compressed_from_fields("png", b"")


def test_decode_image_bytes():
    rgba = np.dstack([rgb(), np.full((5, 7), 9, np.uint8)])
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    np.testing.assert_array_equal(decode_image_bytes(png.tobytes(), "x.png"), rgba[..., :3])
    gray = RNG.integers(0, 256, (3, 4), dtype=np.uint8)
    assert decode_image_bytes(compress(gray, "png"), "g.png").shape == (3, 4)
    with pytest.raises(ImageDecodeError, match=r"notes.txt: cannot decode 5 bytes as an image"):
        decode_image_bytes(b"hello", "notes.txt")
    with pytest.raises(ImageDecodeError, match=r"empty.png: no image data \(0 bytes\)"):
        decode_image_bytes(b"", "empty.png")


def test_to_rgb8_scales_float_depth_ignoring_nan_and_inf():
    depth = np.array([[1.0, 3.0], [np.nan, np.inf]], np.float32)
    out = to_rgb8(depth)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[1, 0, 0] == 0 and out[1, 1, 0] == 255
    np.testing.assert_array_equal(to_rgb8(np.full((2, 2), 0x1234, np.uint16))[..., 0], 0x12)


# --- decompression bombs and forged headers (issue #13) ------------------------------------------

from pixelis_ros.image_codec import MAX_PIXELS  # noqa: E402
from pixelis_ros.image_header import encoded_size  # noqa: E402

_EXTS = [".jpg", ".png", ".bmp", ".tiff", ".webp", ".ppm", ".pgm", ".pam", ".pfm", ".hdr", ".ras"]


@pytest.mark.parametrize("ext", _EXTS)
def test_header_size_of_every_accepted_format_matches_the_decoded_size(ext):
    img = rgb(13, 21)
    if ext == ".pgm":
        img = img[:, :, 0].copy()
    elif ext in (".pfm", ".hdr"):
        img = img.astype(np.float32) / 255
    ok, buf = cv2.imencode(ext, img)
    assert ok
    data = buf.tobytes()
    fmt, width, height = encoded_size(data)
    assert (width, height) == (21, 13), fmt
    assert decode_image_bytes(data, "x").shape[:2] == (13, 21)


def test_truncated_jpeg_claiming_30000_squared_is_refused_before_decoding():
    # The 629-byte bomb of issue #13: OpenCV fills the missing scans with grey, 2.7 GB of it.
    data = bytearray(compress(smooth_rgb()))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, 30000, 30000)
    with pytest.raises(ImageDecodeError, match=r"claims 30000x30000 = 900000000 pixels, more than the 67108864 pixel cap"):
        compressed_from_fields("jpeg", bytes(data[:629]))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    import zlib
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_chunk_with_a_forged_length_is_refused():
    # A 1x16 png whose IDAT claims 2 GB: OpenCV allocated the claimed length (2.1 GB peak RSS).
    import zlib
    idat = zlib.compress(bytes(1000))
    data = PNG_SIG + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 16, 16, 0, 0, 0, 0)) \
        + struct.pack(">I", 2**31 - 1) + b"IDAT" + idat
    with pytest.raises(ImageDecodeError, match=r"chunk b'IDAT' at byte 33 claims 2147483647 bytes"):
        compressed_from_fields("png", data)
    with pytest.raises(ImageDecodeError, match=r"forged length"):
        compressed_from_fields("16UC1; compressedDepth", struct.pack("<iff", 0, 1.0, 0.0) + data)


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def test_opencv_size_assertion_becomes_our_error():
    # 2**20 + 1 pixels wide is under our pixel cap but over OpenCV's width limit: cv2.error before.
    width = 2**20 + 1
    data = f"P5\n{width} 1\n255\n".encode() + bytes(width)
    with pytest.raises(ImageDecodeError, match=r"OpenCV refuses the \d+-byte pnm \(1048577x1 in its header\).*WIDTH"):
        compressed_from_fields("pgm", data)


@pytest.mark.parametrize("head, message", [
    (f"P6\n40000 40000\n255\n".encode() + bytes(16), r"\(pnm\): claims 40000x40000"),
    (b"GIF89a" + struct.pack("<HHBBB", 65535, 65535, 0, 0, 0) + bytes(16), r"\(gif\): claims 65535x65535"),
    (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + bytes(16), r"\(hdr\): claims 30000x30000"),
    (b"BM" + bytes(16) + struct.pack("<ii", 30000, -30000) + bytes(30), r"\(bmp\): claims 30000x30000"),
    (b"\xff\x4f\xff\x51" + bytes(60), r"not in an accepted format"),  # JPEG 2000: no parser, refused
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", r"broken header \(jpeg ends before its start-of-frame marker\)"),
])
def test_forged_or_unaccepted_headers_are_refused(head, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image_bytes(head, "cam")


@pytest.mark.parametrize("fields, message", [
    (dict(height=2**31, width=2**31, encoding="rgb8", step=3 * 2**31), r"pixel cap"),
    (dict(height=1, width=1, encoding=["rgb8"], step=3), r"unsupported image encoding \['rgb8'\]"),
    (dict(height=1, width=1, encoding="rgb8" * 100, step=3), r"'rgb8rgb8.*\.\.\.; supported"),
    (dict(height="tall", width=1, encoding="rgb8", step=3), r"must be integers, got height='tall'"),
    (dict(height=2, width=2, encoding="rgb8", step=2**40), r"needs 2199023255552 bytes"),
])
def test_raw_fields_that_lie_are_refused(fields, message):
    with pytest.raises(ImageDecodeError, match=message):
        image_from_fields(is_bigendian=0, data=bytes(64), **fields)


def test_pixel_cap_admits_a_large_real_frame():
    assert MAX_PIXELS >= 7680 * 4320  # 8K cameras still decode
    data = compress(np.zeros((4320, 7680), np.uint8), "png")
    assert decode_image_bytes(data, "8k").shape == (4320, 7680)
