"""YAML files we did not write (parameter files, bag metadata), read without a traceback.

``yaml.safe_load`` can fail in more ways than ``yaml.YAMLError``: bytes that are not UTF-8 raise
``UnicodeDecodeError``, a few thousand nested brackets raise ``RecursionError`` from its
recursive composer, and a huge file is read whole. Node parameters and bag metadata both come
from users and other tools, so both read through ``read_yaml``, which turns each of these into
one ``YamlInputError`` whose message names the file and says what is wrong in our words; the
callers re-raise it as their own domain error (``ConfigError``, ``BagError``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

MAX_YAML_BYTES = 16 * 1024 * 1024
"""Largest YAML file read: far above any parameter file or a bag's metadata.yaml (a bag of
10,000 files lists them in well under 2 MB)."""


class YamlInputError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file."""


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def read_yaml(path: str | Path):
    """The parsed content of the YAML file at ``path`` (any YAML value, ``None`` when empty)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise YamlInputError(f"{path}: {size} bytes, more than the {MAX_YAML_BYTES}-byte limit for a YAML file")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlInputError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except OSError as e:
        raise YamlInputError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise YamlInputError(f"{path}: nested too deeply to parse (a YAML file is a few levels deep)") from None
    except yaml.YAMLError as e:
        raise YamlInputError(f"{path}: not valid YAML ({_short(str(e))})") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise YamlInputError(f"{path}: holds a value YAML cannot convert ({_short(str(e))})") from None
