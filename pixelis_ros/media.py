"""Image files, frame folders and video files as ``Frames``, for runs without a camera.

The agent reasons over a ``Frames`` snapshot whether the pixels came from a ROS topic or from
disk; the CLI, the benchmarks and the tests feed it files through these loaders. Everything
comes out RGB uint8 with stamps in seconds from the first frame, the form the camera path
produces, so tools cannot tell the difference. Errors are ``MediaError`` with the path and the
reason, because a user typed that path.
"""

from __future__ import annotations

import math
import os
import re
import struct
from pathlib import Path

import cv2
import numpy as np

from .frames import Frame, Frames
from .image_codec import PNG_SIGNATURE, ImageDecodeError, decode_image_bytes, to_rgb8

PathLike = str | os.PathLike
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_MAX_PIXELS = 8192 * 8192

# JPEG start-of-frame markers (C4, C8, CC are DHT, JPG and DAC, not frames).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class MediaError(ValueError):
    """A media file or folder that cannot be loaded, with the path and the reason."""


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
        else:
            i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    return None


def image_size_from_header(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a png, jpeg or bmp header; None for other or broken headers.
    Lets a loader refuse a decompression bomb before decoding it."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack_from(">II", data, 16)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    if data.startswith(b"BM") and len(data) >= 26:
        width, height = struct.unpack_from("<ii", data, 18)
        return abs(width), abs(height)  # negative height marks a top-down bitmap
    return None


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(f"{path}: image is {width}x{height} = {width * height} pixels, "
                         f"more than max_pixels={max_pixels}")


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not an image file (give it as frames_dir)")
    try:
        return path.read_bytes()
    except OSError as e:
        raise MediaError(f"{path}: cannot read it ({e.strerror or e})") from e


def load_image(path: PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as HxWx3 RGB uint8 (mono and 16-bit files are converted)."""
    path = Path(path)
    data = _read_file(path)
    size = image_size_from_header(data)
    if size is not None:
        _check_pixels(path, size[0], size[1], max_pixels)
    try:
        img = decode_image_bytes(data, str(path))
    except ImageDecodeError as e:
        raise MediaError(str(e)) from e
    _check_pixels(path, img.shape[1], img.shape[0], max_pixels)  # formats without a parsed header
    return to_rgb8(img)


def frames_from_image(path: PathLike) -> Frames:
    """One image file as a single frame stamped 0.0."""
    return Frames([Frame(image=load_image(path), stamp=0.0)])


def _natural_key(path: Path) -> tuple[list, str]:
    # Split into text and number runs so that 2.jpg sorts before 10.jpg; odd positions are numbers.
    parts = re.split(r"(\d+)", path.name, flags=re.ASCII)
    return [int(t) if i % 2 else t.lower() for i, t in enumerate(parts)], path.name


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def load_frame_dir(path: PathLike, fps: float = 30.0) -> Frames:
    """A folder of image files, in natural name order, as frames stamped ``i / fps``. A folder
    without images but with an ``img/`` subfolder (the OTB benchmark layout) uses that."""
    folder = Path(path)
    if not folder.is_dir():
        raise MediaError(f"{folder}: no such folder" if not folder.exists() else f"{folder}: is a file, not a folder")
    if not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"fps must be a positive number, got {fps}")
    files = _image_files(folder)
    if not files and (folder / "img").is_dir():
        files = _image_files(folder / "img")
    if not files:
        raise MediaError(f"{folder}: holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return Frames([Frame(image=load_image(p), stamp=i / fps) for i, p in enumerate(files)])


def _read_frames(cap: cv2.VideoCapture, max_frames: int | None, stride: int) -> list[Frame]:
    fps = cap.get(cv2.CAP_PROP_FPS)
    # Some containers report 0 (or nonsense) fps; their per-frame timestamps are the fallback.
    use_fps = math.isfinite(fps) and fps > 0
    frames: list[Frame] = []
    index = 0
    while max_frames is None or len(frames) < max_frames:
        if index % stride:
            if not cap.grab():  # skipped frames are demuxed but never converted
                break
        else:
            ok, bgr = cap.read()
            if not ok:
                break
            stamp = index / fps if use_fps else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            frames.append(Frame(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp=float(stamp)))
        index += 1
    return frames


def load_video(path: PathLike, max_frames: int | None = None, stride: int = 1) -> Frames:
    """A video file as frames (every ``stride``-th, at most ``max_frames``), stamped by their
    index in the file over the container's fps."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file" if not path.exists() else f"{path}: is a folder, not a video file")
    if stride < 1:
        raise MediaError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise MediaError(f"max_frames must be >= 1 (or None for all), got {max_frames}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError(f"{path}: OpenCV cannot open it as a video")
        frames = _read_frames(cap, max_frames, stride)
    finally:
        cap.release()
    if not frames:
        raise MediaError(f"{path}: the video yielded no frame (empty, or a codec OpenCV lacks)")
    return Frames(frames)


def load_frames(image: PathLike | None = None, frames_dir: PathLike | None = None,
                video: PathLike | None = None) -> Frames:
    """Frames from exactly one source: an image file, a folder of frames or a video file."""
    given = {name: value for name, value in (("image", image), ("frames_dir", frames_dir), ("video", video))
             if value is not None}
    if len(given) != 1:
        what = ", ".join(given) if given else "none"
        raise MediaError(f"give exactly one of image, frames_dir or video (got {what})")
    if image is not None:
        return frames_from_image(image)
    if frames_dir is not None:
        return load_frame_dir(frames_dir)
    return load_video(video)  # type: ignore[arg-type]
