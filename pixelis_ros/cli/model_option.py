"""``--model DIR`` and ``--backend``: how every command that serves a model names it.

``pixelis run``, ``pixelis bag run``, ``pixelis sim bench`` and ``pixelis sim loop`` take the same
two options (the node takes the same as parameters ``model`` and ``backend``), so a folder works
the same everywhere and the backend is read from it (``policy.folder_kind``) unless given.
"""

from __future__ import annotations

import argparse

from pixelis_ros.policy.folder_kind import BACKEND_CHOICES


def add_model_arguments(p: argparse.ArgumentParser, backend_default: str | None = "auto") -> None:
    """``backend_default`` None: the option is left unset when not given (a params file's value stays)."""
    p.add_argument("--model", metavar="DIR",
                   help="a model folder: a torch checkpoint (config.json + model.safetensors) or an ONNX export "
                        "(manifest.json); default: the bundled models/pixelis-small")
    p.add_argument("--backend", default=backend_default, choices=BACKEND_CHOICES,
                   help="backend serving the model (default: auto, from the folder's files)")
