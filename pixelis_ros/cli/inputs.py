"""What several ``pixelis`` commands share: the ``--image/--frames/--video`` inputs and
``UsageError``, the error a command raises for bad input (exit status 2, ``{"error": ...}``)."""

from __future__ import annotations

import argparse

from pixelis_ros.media import load_frames


class UsageError(ValueError):
    """Bad command-line input that argparse cannot see (a malformed --bbox, a tool's error)."""


def add_inputs(p: argparse.ArgumentParser, image: bool = True) -> None:
    if image:
        p.add_argument("--image", help="an image file")
    p.add_argument("--frames", help="a folder of frames (sorted by name)")
    p.add_argument("--video", help="a video file")


def load(args) -> object:
    return load_frames(image=getattr(args, "image", None), frames_dir=getattr(args, "frames", None), video=getattr(args, "video", None))
