"""Fuzz target ``bag``: corrupted rosbag2 bags replayed with ``run_bag``, as ``pixelis bag run`` does.

The bases are small real bags: two written here by ``record_frames`` (sqlite3 with raw Images,
MCAP with jpeg CompressedImages) and, when the shared real-data folder is there, the rosbags-rs
stub bags (both storages). Each case copies one and corrupts its storage file (truncated, zeroed
ranges, flipped or spliced bytes, deleted) or its ``metadata.yaml`` (a string ``starting_time``,
deep nesting, a list, not UTF-8, missing keys, huge counts, paths leaving the folder), or is the
bare storage file corrupted the same way. ``BagError`` is the only error allowed out; each
per-message error and the episode's error are length-checked.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np

from pixelis_ros.bag import BagError, record_frames, run_bag
from pixelis_ros.frames import Frame, Frames
from pixelis_ros.fuzz import mutate
from pixelis_ros.fuzz.target import Case, Target, short

TRACE = ('<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 32, 32], "image": "frame:-1"}}\n</tool_call>\n'
         "<answer>zoomed</answer>")
REAL_BAGS = {"rosbags_rs_sqlite3": ("/test/sensor_msgs/image", "/test/sensor_msgs/compressed_image"),
             "rosbags_rs_mcap": ("/test/sensor_msgs/image", "/test/sensor_msgs/compressed_image")}


def real_data_dir() -> Path:
    """The shared real-data folder (``PIXELIS_REAL_DATA``, else ``<repo>/../shared/data/real``)."""
    return Path(os.environ.get("PIXELIS_REAL_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data" / "real")


def _metadata_mutation(rng: random.Random, text: str) -> tuple[str, bytes]:
    kind = rng.choice(("string_time", "deep", "list", "not_utf8", "empty", "missing_key", "huge_count", "escape_path",
                       "bad_storage", "bytes", "anchors", "negative"))
    if kind == "string_time":
        import re

        return kind, re.sub(r"nanoseconds_since_epoch: \d+", "nanoseconds_since_epoch: 'soon'", text, count=rng.randint(1, 2)).encode()
    if kind == "deep":
        d = rng.choice((200, 5000, 100_000))
        return kind, (text + "\nextra: " + "[" * d + "]" * d + "\n").encode() if rng.random() < 0.5 else ("a: " + "[" * d).encode()
    if kind == "list":
        return kind, b"- rosbag2_bagfile_information\n- 1\n"
    if kind == "not_utf8":
        return kind, text.encode("utf-16")
    if kind == "empty":
        return kind, rng.choice((b"", b"~\n", b"rosbag2_bagfile_information: 7\n", b"rosbag2_bagfile_information: {}\n"))
    if kind == "missing_key":
        key = rng.choice(("storage_identifier", "starting_time", "duration", "relative_file_paths", "topics_with_message_count", "files"))
        lines = text.splitlines(keepends=True)
        return kind, "".join(ln for ln in lines if not ln.lstrip().startswith(key + ":")).encode()
    if kind == "huge_count":
        return kind, text.replace("message_count: ", "message_count: 9" + "9" * rng.choice((20, 5000)), 1).encode()
    if kind == "escape_path":
        target = rng.choice(("../../../../etc/passwd", "/etc/hostname", "../outside.db3", "x" * 5000))
        import re

        return kind, re.sub(r"(  - )(\S+\.(db3|mcap))", lambda m: m.group(1) + target, text, count=1).encode()
    if kind == "bad_storage":
        return kind, text.replace("storage_identifier: ", "storage_identifier: " + rng.choice(("ros1x", "", "'\\x00'", "a" * 5000)), 1).encode()
    if kind == "anchors":  # a YAML alias bomb: a few lines that expand to billions of nodes
        bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                                                            for p, c in zip("abcdefgh", "bcdefghi"))
        return kind, (text + bomb).encode()
    if kind == "negative":
        return kind, text.replace("nanoseconds: ", "nanoseconds: -", 1).replace("version: ", "version: -", 1).encode()
    how, data = mutate.mutate_bytes(rng, text.encode())
    return kind + ":" + how, data


class BagTarget(Target):
    name = "bag"
    domain_errors = (BagError,)

    def setup(self, workdir: Path) -> None:
        self.workdir = workdir
        base = workdir / "bases"
        shutil.rmtree(base, ignore_errors=True)  # left by a worker before a hang or crash
        base.mkdir()
        rng = np.random.default_rng(0)
        frames = Frames([Frame(rng.integers(0, 255, (48, 64, 3), np.uint8), i / 10) for i in range(5)])
        record_frames(base / "sqlite_image", frames, storage="sqlite3", start_time=1_700_000_000.0)
        record_frames(base / "mcap_compressed", frames, compressed=True, storage="mcap", start_time=1_700_000_000.0)
        self.bases = {"sqlite_image": ["/camera/image_raw"], "mcap_compressed": ["/camera/image_raw"]}
        real = real_data_dir() / "rosbag"
        for name, topics in REAL_BAGS.items():
            if (real / name).is_dir():
                shutil.copytree(real / name, base / name)
                for p in (base / name).iterdir():
                    p.chmod(0o644)  # the shared copy is read-only
                self.bases[name] = list(topics)
        self.trace = workdir / "zoom.txt"
        self.trace.write_text(TRACE)
        self.files = {}
        for name in self.bases:
            folder = base / name
            storage = next(p for p in folder.iterdir() if p.suffix in (".db3", ".mcap"))
            self.files[name] = (storage.name, storage.read_bytes(), (folder / "metadata.yaml").read_text())

    def make(self, rng: random.Random) -> Case:
        name = rng.choice(sorted(self.bases))
        topic = rng.choice(self.bases[name])
        storage_name, storage, metadata = self.files[name]
        where = rng.choices(("storage", "metadata", "both", "bare", "deleted"), (0.45, 0.3, 0.1, 0.1, 0.05))[0]
        kinds = []
        if where in ("storage", "both", "bare"):
            how, storage = mutate.mutate_bytes(rng, storage)
            kinds.append("storage:" + how)
        if where in ("metadata", "both"):
            how, meta = _metadata_mutation(rng, metadata)
            kinds.append("metadata:" + how)
        else:
            meta = metadata.encode()
        if where == "deleted":
            storage = None
            kinds.append("storage:deleted")
        data = {"name": name, "topic": topic, "storage_name": storage_name, "storage": storage, "metadata": meta,
                "bare": where == "bare", "query_at": rng.choice((None, None, None, "end", 0.5, 1e9))}
        summary = f"{name} {topic} " + " ".join(kinds) + f" metadata={short(meta[:200], 60)}"
        return Case(f"{name.split('_')[-1]}:" + "+".join(k.split("+")[0] for k in kinds), summary, data)

    def run(self, case: Case) -> list[str]:
        d = case.data
        folder = self.workdir / "case"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        if d["storage"] is not None:
            (folder / d["storage_name"]).write_bytes(d["storage"])
        (folder / "metadata.yaml").write_bytes(d["metadata"])
        path = folder / d["storage_name"] if d["bare"] else folder
        result = run_bag(path, d["topic"], "What is in view?", trace=self.trace, query_at=d["query_at"])
        return [e.get("error") or "" for e in result["errors"]] + [e.get("error") or "" for e in result["episodes"]]
