"""Conversions between ROS image message fields and numpy arrays, without importing ROS.

Only ``pixelis_ros/ros`` may import rclpy, yet the agent, the tests, the DDS transport and the
rosbag reader all meet camera images as the plain fields of ``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage``. This module turns those fields into arrays (and back) with the
semantics of cv_bridge: colour comes out RGB, mono stays single channel, 16-bit and float
depth keep their type. Raw images are decoded as views of the message buffer where the layout
allows, because a 30 fps camera should not cost a copy per frame; such views are read-only when
the buffer is (``bytes``) and keep it alive.

Every size comes from outside (a camera, a bag, a fuzzer), so nothing is allocated before the
claimed size is checked against ``MAX_PIXELS``: raw fields directly, encoded bytes through the
header parsers of ``image_header`` (a forged header is a decompression bomb otherwise).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from .image_header import HEADER_FORMATS, PNG_SIGNATURE, HeaderError, encoded_size


class ImageDecodeError(ValueError):
    """Image message fields or encoded bytes that cannot be turned into an array."""


MAX_PIXELS = 8192 * 8192
"""Most pixels an image may claim, raw or encoded: above any camera we serve (8K is 33 Mpx) and
small enough that one decoded 8-bit RGB frame and its RGB copy stay under 400 MB."""


def _quote(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_pixels(what: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"{what}: claims {width}x{height} = {width * height} pixels, more than the "
                               f"{MAX_PIXELS} pixel cap (a forged header or a wrong size)")


# encoding -> (channels stored per pixel, channel type, memory layout). 8UC3 is bgr8 and 8UC1
# is mono8, as cv_bridge reads them; ROS's "yuv422" is UYVY byte order.
_ENCODINGS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"), "bgr8": (3, "u1", "bgr"), "8UC3": (3, "u1", "bgr"),
    "rgba8": (4, "u1", "rgba"), "bgra8": (4, "u1", "bgra"),
    "mono8": (1, "u1", "mono"), "8UC1": (1, "u1", "mono"),
    "mono16": (1, "u2", "mono"), "16UC1": (1, "u2", "mono"), "32FC1": (1, "f4", "mono"),
    "yuv422": (2, "u1", "uyvy"), "uyvy": (2, "u1", "uyvy"),
    "yuyv": (2, "u1", "yuyv"), "yuv422_yuy2": (2, "u1", "yuyv"),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)

# Channel selections giving RGB; reversed slices keep the result a view.
_TO_RGB = {"rgb": slice(None), "bgr": slice(None, None, -1), "rgba": slice(0, 3), "bgra": slice(2, None, -1)}
_YUV_TO_RGB = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuyv": cv2.COLOR_YUV2RGB_YUYV}
_DEPTH_HEADER_BYTES = 12  # compressed_depth_image_transport's ConfigHeader: int32 format, float32[2]


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded image (RGB, mono, 16-bit, float) as HxWx3 uint8 RGB, for tools and models."""
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        else:
            f = img.astype(np.float32)
            finite = f[np.isfinite(f)]
            # Depth images carry NaN/inf for "no return": scale by the finite values only.
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            f = np.nan_to_num(np.clip(f, lo, hi), nan=lo)
            img = ((f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        return img[:, :, :3]
    return img


def _byte_buffer(data: bytes | bytearray | memoryview | np.ndarray) -> memoryview:
    """The payload as a flat byte memoryview, sharing memory with ``data`` whenever possible."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return memoryview(data).cast("B")
    except TypeError as e:
        raise ImageDecodeError(f"image data must be bytes-like, got {type(data).__name__}") from e


def _check_fields(height: int, width: int, encoding: str, step: int, nbytes: int) -> tuple[int, str, str]:
    if not isinstance(encoding, str) or encoding not in _ENCODINGS:
        raise ImageDecodeError(f"unsupported image encoding {_quote(encoding)}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, dtype, layout = _ENCODINGS[encoding]
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image height and width must be positive, got height={height}, width={width}")
    _check_pixels(f"{encoding} image", width, height)
    if layout in _YUV_TO_RGB and width % 2:
        raise ImageDecodeError(f"{encoding} packs pixel pairs, so width must be even, got width={width}")
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageDecodeError(f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)")
    if nbytes < step * height:
        raise ImageDecodeError(
            f"data holds {nbytes} bytes but height {height} x step {step} needs {step * height} bytes")
    return channels, dtype, layout


def image_from_fields(height: int, width: int, encoding: str, is_bigendian: int | bool, step: int,
                      data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """``sensor_msgs/Image`` fields as an array: HxWx3 uint8 RGB for colour encodings, HxW
    uint8 / uint16 / float32 for mono8 / mono16 and 16UC1 / 32FC1. Bytes past
    ``step * height`` are ignored. Raises ImageDecodeError for anything inconsistent."""
    try:
        height, width, step = int(height), int(width), int(step)
    except (TypeError, ValueError, OverflowError) as e:
        raise ImageDecodeError(f"image height, width and step must be integers, got height={_quote(height)}, "
                               f"width={_quote(width)}, step={_quote(step)}") from e
    buf = _byte_buffer(data)
    channels, dtype, layout = _check_fields(height, width, encoding, step, buf.nbytes)
    stored = np.dtype(dtype).newbyteorder(">" if is_bigendian else "<")
    itemsize = stored.itemsize
    # A strided view over the buffer: rows are `step` bytes apart, padding is skipped, not copied.
    pixels = np.ndarray(shape=(height, width, channels), dtype=stored, buffer=buf,
                        strides=(step, channels * itemsize, itemsize))
    if layout in _YUV_TO_RGB:
        try:
            return cv2.cvtColor(np.ascontiguousarray(pixels), _YUV_TO_RGB[layout])
        except cv2.error as e:
            raise ImageDecodeError(f"OpenCV cannot convert a {width}x{height} {encoding} image to RGB") from e
    if layout != "mono":
        return pixels[:, :, _TO_RGB[layout]]
    if not stored.isnative:
        pixels = pixels.astype(stored.newbyteorder("="))  # the one layout that needs a copy
    return pixels[:, :, 0]


_TO_FIELDS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "u1"), "bgr8": (3, "u1"), "mono8": (1, "u1"),
    "mono16": (1, "u2"), "16UC1": (1, "u2"), "32FC1": (1, "f4"),
}


def image_to_fields(img: np.ndarray, encoding: str = "rgb8") -> dict:
    """Array -> ``sensor_msgs/Image`` fields (little-endian, unpadded rows). Colour input is RGB."""
    if encoding not in _TO_FIELDS:
        raise ValueError(f"cannot encode to {encoding!r}; supported: {', '.join(_TO_FIELDS)}")
    channels, dtype = _TO_FIELDS[encoding]
    want_shape = "HxWx3" if channels == 3 else "HxW"
    if img.ndim != (3 if channels == 3 else 2) or (channels == 3 and img.shape[2] != 3):
        raise ValueError(f"{encoding} needs a {want_shape} array, got shape {img.shape}")
    if img.dtype != np.dtype(dtype):
        raise ValueError(f"{encoding} needs dtype {np.dtype(dtype).name}, got {img.dtype.name}")
    if encoding == "bgr8":
        img = img[:, :, ::-1]
    payload = np.ascontiguousarray(img, dtype=np.dtype(dtype).newbyteorder("<"))
    height, width = img.shape[:2]
    return {"height": int(height), "width": int(width), "encoding": encoding, "is_bigendian": 0,
            "step": int(width * channels * payload.itemsize), "data": payload.tobytes()}


def _bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def _checked_decode(data: bytes, what: str, flags: int) -> np.ndarray | None:
    """``cv2.imdecode`` once the header's size is within the cap; None where OpenCV fails."""
    try:
        found = encoded_size(data)
    except HeaderError as e:
        raise ImageDecodeError(f"{what}: {len(data)} bytes with a broken header ({e})") from e
    if found is None:
        raise ImageDecodeError(f"{what}: cannot decode {len(data)} bytes as an image: not in an accepted format "
                               f"({', '.join(HEADER_FORMATS)}); starts {_quote(data[:16])}")
    fmt, width, height = found
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"{what}: {fmt} header claims an empty {width}x{height} image")
    _check_pixels(f"{what} ({fmt})", width, height)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # OpenCV's own size and consistency assertions
        raise ImageDecodeError(f"{what}: OpenCV refuses the {len(data)}-byte {fmt} ({width}x{height} in its header): "
                               f"{_quote(str(e).strip().splitlines()[-1] if str(e).strip() else e, 160)}") from e
    # Guard against a decoder that sizes its output from something other than the parsed header.
    if img is not None and img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise ImageDecodeError(f"{what}: {fmt} decoded to {img.shape[1]}x{img.shape[0]}, above the pixel cap")
    return img


def decode_image_bytes(data: bytes, what: str) -> np.ndarray:
    """An encoded image file (jpeg, png, bmp, ...) as RGB (HxWx3) or mono (HxW) of its own
    depth. ``what`` names the source in errors (a path, a topic). Raises ImageDecodeError for
    anything unreadable, of an unaccepted format, or claiming more than ``MAX_PIXELS``."""
    if not data:
        raise ImageDecodeError(f"{what}: no image data (0 bytes)")
    # ANYCOLOR|ANYDEPTH keeps mono and 16-bit as they are and still applies EXIF orientation.
    img = _checked_decode(bytes(data), what, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageDecodeError(f"{what}: cannot decode {len(data)} bytes as an image (truncated or corrupt)")
    try:
        return _bgr_to_rgb(img)
    except cv2.error as e:
        raise ImageDecodeError(f"{what}: OpenCV cannot convert the decoded {img.shape} {img.dtype.name} image to RGB") from e


def _decode_compressed_depth(format: str, data: bytes) -> np.ndarray:
    shown = _quote(format, 60)
    payload = data[_DEPTH_HEADER_BYTES:]
    if not payload.startswith(PNG_SIGNATURE):
        if not data.startswith(PNG_SIGNATURE):  # very old publishers sent the png without header
            raise ImageDecodeError(
                f"compressed depth image ({shown}, {len(data)} bytes) holds no png after its "
                f"{_DEPTH_HEADER_BYTES}-byte header (only png compressedDepth is supported, not rvl)")
        payload = data
    depth = _checked_decode(payload, f"compressed depth image ({shown})", cv2.IMREAD_UNCHANGED)
    if depth is None or depth.dtype != np.uint16 or depth.ndim != 2:
        raise ImageDecodeError(f"compressed depth image ({shown}, {len(data)} bytes) is not a readable 16-bit mono png")
    if format.split(";")[0].strip() != "32FC1":
        return depth
    # 32FC1 is sent as quantized inverse depth: depth = a / (q - b), with q == 0 meaning no return.
    a, b = struct.unpack_from("<ff", data, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        metres = np.float32(a) / (depth.astype(np.float32) - np.float32(b))
    return np.where(depth == 0, np.float32(np.nan), metres).astype(np.float32)


def compressed_from_fields(format: str, data: bytes | bytearray | memoryview) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` fields as an array: RGB or mono for jpeg/png ("jpeg",
    "rgb8; jpeg compressed bgr8", ...), uint16 or float32 metres for "...; compressedDepth"."""
    if not isinstance(format, str):
        raise ImageDecodeError(f"compressed image format must be a string, got {type(format).__name__}")
    data = bytes(_byte_buffer(data))
    shown = _quote(format, 60)
    if not data:
        raise ImageDecodeError(f"compressed image ({shown}) has no data (0 bytes)")
    if "compresseddepth" in format.lower():
        return _decode_compressed_depth(format, data)
    try:
        return decode_image_bytes(data, "image")
    except ImageDecodeError as e:
        reason = str(e).removeprefix("image: ")
        raise ImageDecodeError(f"cannot decode {len(data)} bytes of {shown} compressed image data: {reason}") from e


_COMPRESSED_EXT = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def compress(img: np.ndarray, format: str = "jpeg", quality: int = 90) -> bytes:
    """RGB (HxWx3) or mono (HxW) array -> jpeg or png bytes, for a CompressedImage's data.
    ``quality`` (0..100) applies to jpeg; png is lossless and also takes uint16."""
    ext = _COMPRESSED_EXT.get(format.lower())
    if ext is None:
        raise ValueError(f"cannot compress to {format!r}; supported: jpeg, png")
    if not 0 <= quality <= 100:
        raise ValueError(f"jpeg quality must be in 0..100, got {quality}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"compress needs an HxW or HxWx3 array, got shape {img.shape}")
    allowed = (np.uint8,) if ext == ".jpg" else (np.uint8, np.uint16)
    if img.dtype not in allowed:
        raise ValueError(f"{format} cannot hold dtype {img.dtype.name}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} {img.dtype.name} image as {format}")
    return buf.tobytes()
