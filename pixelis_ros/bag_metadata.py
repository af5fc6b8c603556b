"""A rosbag2 folder's ``metadata.yaml`` checked by us before ``rosbags`` reads it.

``rosbags`` trusts the metadata: a string ``starting_time`` ends in a ``TypeError`` deep in its
reader, a few thousand nested brackets in ``RecursionError``, bytes that are not UTF-8 in
``UnicodeDecodeError``, and a ``relative_file_paths`` entry such as ``../../etc/passwd`` is
opened wherever it points. Bags come from other machines, so ``check_metadata`` reads the file
through ``yaml_input`` and checks the fields the reader relies on (types, ranges, file paths that
stay inside the folder), raising ``BagMetadataError`` with the field and the fix.
"""

from __future__ import annotations

from pathlib import Path

from pixelis_ros.yaml_input import YamlInputError, read_yaml

STORAGE_IDS = ("sqlite3", "mcap")
_INT64_MAX = 2**63 - 1


class BagMetadataError(ValueError):
    """A metadata.yaml that rosbags would misread; ``bag.py`` re-raises it as ``BagError``."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _count(value, where: str) -> int:
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        raise BagMetadataError(f"{where} must be an integer in 0..2^63-1, got {_short(value)}")
    return value


def _nested(info: dict, key: str, inner: str) -> None:
    section = info.get(key)
    if section is None:
        return
    if not isinstance(section, dict):
        raise BagMetadataError(f"{key} must be a mapping with {inner}, got {_short(section)}")
    _count(section.get(inner), f"{key}.{inner}")


def _inside(folder: Path, name, where: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 1024 or "\0" in name:
        raise BagMetadataError(f"{where} must name a file in the bag folder, got {_short(name)}")
    resolved = (folder / name).resolve()
    if Path(name).is_absolute() or folder.resolve() not in resolved.parents:
        raise BagMetadataError(f"{where} {_short(name)} points outside the bag folder; a bag's files live in its folder")


def check_metadata(folder: Path) -> dict:
    """The ``rosbag2_bagfile_information`` mapping of ``folder/metadata.yaml``, checked."""
    try:
        data = read_yaml(folder / "metadata.yaml")
    except YamlInputError as e:
        raise BagMetadataError(f"cannot read its metadata.yaml: {e}") from None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise BagMetadataError("metadata.yaml holds no 'rosbag2_bagfile_information' mapping")
    storage = info.get("storage_identifier")
    if storage not in STORAGE_IDS:
        raise BagMetadataError(f"storage_identifier must be one of {', '.join(STORAGE_IDS)}, got {_short(storage)}")
    _nested(info, "starting_time", "nanoseconds_since_epoch")
    _nested(info, "duration", "nanoseconds")
    if "message_count" in info:
        _count(info["message_count"], "message_count")
    paths = info.get("relative_file_paths")
    if not isinstance(paths, list) or not paths:
        raise BagMetadataError(f"relative_file_paths must list the bag's storage files, got {_short(paths)}")
    for i, name in enumerate(paths):
        _inside(folder, name, f"relative_file_paths[{i}]")
    files = info.get("files", [])
    if not isinstance(files, list):
        raise BagMetadataError(f"files must be a list, got {_short(files)}")
    for i, entry in enumerate(files):
        if not isinstance(entry, dict):
            raise BagMetadataError(f"files[{i}] must be a mapping, got {_short(entry)}")
        _inside(folder, entry.get("path"), f"files[{i}].path")
        _nested(entry, "starting_time", "nanoseconds_since_epoch")
        _nested(entry, "duration", "nanoseconds")
        if "message_count" in entry:
            _count(entry["message_count"], f"files[{i}].message_count")
    topics = info.get("topics_with_message_count", [])
    if not isinstance(topics, list):
        raise BagMetadataError(f"topics_with_message_count must be a list, got {_short(topics)}")
    for i, entry in enumerate(topics):
        if not isinstance(entry, dict) or not isinstance(entry.get("topic_metadata"), dict):
            raise BagMetadataError(f"topics_with_message_count[{i}] must be a mapping with topic_metadata, got {_short(entry)}")
        _count(entry.get("message_count", 0), f"topics_with_message_count[{i}].message_count")
    return info
