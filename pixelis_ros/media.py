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
from pathlib import Path

import cv2
import numpy as np

from .frames import Frame, Frames
from .image_codec import ImageDecodeError, decode_image_bytes, to_rgb8
from .image_header import HeaderError, encoded_size

PathLike = str | os.PathLike
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_MAX_PIXELS = 8192 * 8192

class MediaError(ValueError):
    """A media file or folder that cannot be loaded, with the path and the reason."""


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
    try:
        found = encoded_size(data)  # refuse a decompression bomb before decoding it
    except HeaderError as e:
        raise MediaError(f"{path}: {e}") from None
    if found is not None:
        _check_pixels(path, found[1], found[2], max_pixels)
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
