"""rosbag2 replay and recording without ROS: camera bags in, the agent's outputs out.

``run_bag`` feeds every message of one image topic of a rosbag2 (sqlite3 or MCAP; Image or
CompressedImage) to an ``AgentNodeCore``, the class the live nodes drive, then runs the query
once, at the end or at a given bag time, synchronously. A message that cannot be used
(undeserializable CDR, an image whose payload does not match its fields, a broken jpeg) becomes
one ``{"index", "time_s", "timestamp_ns", "error"}`` entry (index within the topic, log time
from the bag start and absolute) and the replay goes on. With ``out_bag`` the node's
outputs are recorded into a new rosbag2 under ``/pixelis/<output>``, stamped with the frame
stamp they refer to; with ``out_dir`` each episode's annotated image is written there. Each
episode entry carries its trace steps and the errors among them (``step_errors``), so why a
tool failed is in the report, not only in the recorded answer. ``record_frames`` writes a camera bag from frames on disk (a folder or a
video) — how the tests make real bags. All (de)serialization goes through
``messages.typestore()`` (ROS 2 Humble + vision_msgs); bags are written as rosbag2 version 8
with the message definitions embedded, so readers need no typestore of their own.

Bags are untrusted input: their metadata is checked by ``bag_metadata`` before ``rosbags`` reads
it, and any failure inside ``rosbags`` (a parser of foreign bytes: truncated or zeroed sqlite
pages, MCAP records with forged lengths) becomes a ``BagError`` on open, or, mid-read, one
error entry after which the replay stops and the query runs on the frames read so far.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator

from pixelis_ros import messages as M
from pixelis_ros.bag_metadata import BagMetadataError, check_metadata
from pixelis_ros.frames import Frame, Frames
from pixelis_ros.progress import progress

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
OUTPUT_PREFIX = "/pixelis/"
STORAGES = ("sqlite3", "mcap")
_SUFFIX_STORAGE = {".mcap": "mcap", ".db3": "sqlite3", ".bag": "ros1"}
_NS = M.NS


class BagError(ValueError):
    """A bag that cannot be read or written, or a replay request that does not fit the bag."""


def _reason(e: BaseException, limit: int = 200) -> str:
    """A library exception in a bounded line: its type and the start of its message."""
    text = str(e).strip().replace("\n", " ")
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- reading -----------------------------------------------------------------------------------------
def storage_of(path: str | Path) -> str:
    """'sqlite3', 'mcap' (or 'ros1') for a rosbag2 folder or a bare storage file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    if path.is_dir():
        try:
            return check_metadata(path)["storage_identifier"]
        except BagMetadataError as e:
            raise BagError(f"{path}: not a usable rosbag2 folder: {e}") from None
    if path.suffix in _SUFFIX_STORAGE:
        return _SUFFIX_STORAGE[path.suffix]
    raise BagError(f"{path}: not a rosbag2 folder nor a .mcap/.db3 file")


@contextlib.contextmanager
def open_reader(path: str | Path) -> Iterator:
    """``with open_reader(path) as reader``: an open ``rosbags.highlevel.AnyReader`` (ROS 2 bags
    of either storage, or a bare .mcap/.db3 file); BagError with the path and the reason when
    the bag cannot be opened."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = Path(path)
    storage_of(path)  # checks a folder's metadata before rosbags trusts it
    try:
        reader = AnyReader([path], default_typestore=M.typestore())
        reader.open()
        reader.start_time, reader.duration  # noqa: B018 -- computed from the storage: fail here, not later
    except (AnyReaderError, FileNotFoundError) as e:
        raise BagError(f"{path}: cannot open it as a rosbag: {_reason(e)}") from None
    except Exception as e:  # rosbags parsing corrupt storage: sqlite, MCAP records, CDR definitions
        raise BagError(f"{path}: cannot open it as a rosbag, its storage is corrupt ({_reason(e)})") from None
    try:
        yield reader
    finally:
        reader.close()


def image_topics(reader) -> dict[str, str]:
    """topic -> message type of the Image / CompressedImage topics of an open reader."""
    return {c.topic: c.msgtype for c in sorted(reader.connections, key=lambda c: c.topic) if c.msgtype in IMAGE_TYPES}


def _topic_connections(reader, path: Path, topic: str) -> list:
    conns = [c for c in reader.connections if c.topic == topic]
    images = image_topics(reader)
    listing = ", ".join(f"{t} ({ty})" for t, ty in images.items()) or "none"
    if not conns:
        raise BagError(f"{path}: no topic {topic!r}; the image topics in this bag are: {listing}")
    bad = sorted({c.msgtype for c in conns} - set(IMAGE_TYPES))
    if bad:
        raise BagError(f"{path}: topic {topic!r} carries {', '.join(bad)}, not sensor_msgs/msg/Image or "
                       f"sensor_msgs/msg/CompressedImage; the image topics in this bag are: {listing}")
    return conns


# --- writing -----------------------------------------------------------------------------------------
def _storage_for(path: Path, storage: str | None) -> str:
    if storage is None:
        return "mcap" if path.suffix == ".mcap" else "sqlite3"
    if storage not in STORAGES:
        raise BagError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    return storage


def open_writer(path: str | Path, storage: str | None = None):
    """(opened ``rosbags.rosbag2.Writer``, storage name). The storage is sqlite3 unless given, or
    unless the path ends in ``.mcap``. The path must not exist yet. A path ending in ``.mcap`` or
    ``.db3`` is one bare storage file (``ros2 bag info cam.mcap`` and ``bag run`` read those);
    any other path is a bag folder with its metadata.yaml."""
    from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

    path = Path(path)
    storage = _storage_for(path, storage)
    if path.exists():
        raise BagError(f"{path}: already exists; a bag is written into a new folder (remove it or choose another path)")
    if not path.parent.is_dir():
        raise BagError(f"{path}: the folder {path.parent} does not exist")
    bare = path.suffix in (".mcap", ".db3")
    folder = path.with_name(path.name + ".partial") if bare else path
    if bare and folder.exists():
        raise BagError(f"{folder}: a recording into {path} was interrupted there; remove it first")
    try:
        writer = Writer(folder, version=8,
                        storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        writer.open()
    except (WriterError, OSError) as e:
        raise BagError(f"{path}: cannot write a bag there: {e}") from None
    return (_BareFileWriter(writer, folder, path, ".mcap" if storage == "mcap" else ".db3") if bare else writer), storage


class _BareFileWriter:
    """A rosbags Writer that records into ``folder`` and, on close, keeps only its storage file,
    moved to ``path`` (rosbags always writes a folder: ``cam.mcap/cam.mcap.mcap``)."""

    def __init__(self, writer, folder: Path, path: Path, suffix: str):
        self.writer, self.folder, self.path, self.suffix = writer, folder, path, suffix

    def __getattr__(self, name):
        return getattr(self.writer, name)

    def close(self) -> None:
        import shutil

        self.writer.close()
        files = sorted(self.folder.glob(f"*{self.suffix}"))
        if len(files) != 1:
            raise BagError(f"{self.folder}: expected one {self.suffix} file after recording, found {len(files)}")
        files[0].replace(self.path)
        shutil.rmtree(self.folder)


def _connect(writer, topic: str, msgtype: str):
    return writer.add_connection(topic, msgtype, typestore=M.typestore())


def _ns(seconds: float) -> int:
    return int(round(seconds * _NS))


def record_frames(out_bag: str | Path, frames: Frames, topic: str = "/camera/image_raw", compressed: bool = False,
                  storage: str | None = None, start_time: float = 0.0, frame_id: str = "camera",
                  compression: str = "jpeg", quality: int = 90) -> dict:
    """Write ``frames`` as a camera bag: sensor_msgs/Image (rgb8), or CompressedImage (jpeg or
    png, with image_transport's format string) when ``compressed``. Message ``i`` is stamped
    ``start_time + frames[i].stamp`` seconds, in the header and as the bag's log time."""

    if not len(frames):
        raise BagError("no frames to record")
    if compression not in ("jpeg", "png"):
        raise BagError(f"compression must be jpeg or png, got {compression!r}")
    if not 0 <= quality <= 100:
        raise BagError(f"jpeg quality must be in 0..100, got {quality}")
    msgtype = IMAGE_TYPES[1] if compressed else IMAGE_TYPES[0]
    writer, storage = open_writer(out_bag, storage)
    try:
        conn = _connect(writer, topic, msgtype)
        for frame in frames:
            stamp_ns = _ns(start_time) + _ns(frame.stamp)  # in integer ns: a float epoch stamp is only ~0.1 us exact
            img = frame.image
            if compressed:
                msg = M.compressed_image_msg(img, 0.0, frame_id, compression, quality)
            else:
                msg = M.image_msg(img, 0.0, frame_id, "rgb8" if img.ndim == 3 else "mono8")
            msg.header = M.header_ns(stamp_ns, frame_id)
            writer.write(conn, stamp_ns, M.serialize(msg))
    finally:
        writer.close()
    return {"bag": str(out_bag), "storage": storage, "topic": topic, "type": msgtype, "messages": len(frames),
            "duration_s": round(frames[-1].stamp - frames[0].stamp, 6), "size": [*frames[0].size]}


class _OutputRecorder:
    """The node's publish callback for a replay: records each output under /pixelis/<name> at the
    replay's current frame stamp and keeps the answers for the episode list."""

    def __init__(self):
        self.writer = None
        self.conns: dict = {}
        self.counts: dict[str, int] = {}
        self.now_ns = 0
        self.answers: list[dict] = []

    def attach(self, writer) -> None:
        from pixelis_ros.node.agent_core import TOPICS

        self.writer = writer
        self.conns = {name: _connect(writer, OUTPUT_PREFIX + name, msgtype) for name, msgtype in TOPICS.items()}
        self.counts = {OUTPUT_PREFIX + name: 0 for name in TOPICS}

    def __call__(self, name: str, msg) -> None:
        if name == "answer":
            self.answers.append(json.loads(msg.data))
        if self.writer is not None:
            self.writer.write(self.conns[name], self.now_ns, M.serialize(msg))
            self.counts[OUTPUT_PREFIX + name] += 1


# --- replay ------------------------------------------------------------------------------------------
def _query_time(query_at, reader, path: Path) -> int | None:
    """The bag log time (ns) at which the query runs; None = after the last message."""
    if query_at is None or query_at == "end":
        return None
    try:
        seconds = float(query_at)
    except (TypeError, ValueError):
        raise BagError(f"query_at must be 'end' or seconds from the bag start, got {query_at!r}") from None
    duration = reader.duration / _NS
    if not 0 <= seconds <= duration:
        raise BagError(f"query_at {seconds:g} s is outside the bag {path} (it lasts {duration:.3f} s)")
    return reader.start_time + _ns(seconds)


def _messages(reader, conns, errors: list, start_ns: int, read_so_far) -> Iterator:
    """``reader.messages`` that ends, with one error entry, where the storage breaks (rosbags
    raises whatever its sqlite or MCAP parser meets) instead of raising out of the replay."""
    it = iter(reader.messages(connections=conns))
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 -- only the library's iterator is inside this try
            n = read_so_far()
            errors.append({"index": n, "time_s": None, "timestamp_ns": None,
                           "error": f"the bag's storage is corrupt after {n} message(s) on this topic; replay stopped "
                                    f"there ({_reason(e)})"})
            return
        yield item


def _episode_entry(record: dict, at_ns: int, start_ns: int, frames: int, messages: int, topic: str,
                   errors: list[dict]) -> dict:
    from pixelis_ros.episode import step_errors

    trace = record.get("trace") or {}
    error = record.get("error")
    if frames == 0 and error:
        if messages:
            error += f" (none of the {messages} messages on {topic} gave a frame; see errors)"
        elif errors:  # the storage broke before the first message
            error += f" (no message on {topic} could be read: {errors[-1]['error']})"
        else:
            error += f" ({topic} had no message before the query)"
    return {"query": record.get("query"), "answer": record.get("answer"), "action": record.get("action"),
            "stop_reason": record.get("stop_reason"), "error": error,
            "frame_stamp": (record.get("frame") or {}).get("stamp"), "at_s": round((at_ns - start_ns) / _NS, 6),
            "buffered_frames": trace.get("frames", {}).get("count", 0) if trace else 0,
            "chain_length": trace.get("chain_length", 0), "tool_errors": trace.get("tool_errors", 0),
            "latency_ms": record.get("latency_ms"), "steps": trace.get("steps", []),
            "step_errors": step_errors(trace.get("steps", []))}


def run_bag(bag: str | Path, image_topic: str, query: str, trace: str | Path | None = None, query_at=None,
            out_bag: str | Path | None = None, max_messages: int | None = None, config=None,
            out_storage: str | None = None, out_dir: str | Path | None = None) -> dict:
    """Replay the image topic of ``bag`` into an AgentNodeCore and run ``query`` once.

    ``query_at``: None or "end" runs it after the last message; a number of seconds from the
    bag start runs it once the first message at or after that time has been handled (whether
    or not that message decoded). ``config``: an AgentNodeConfig (defaults otherwise);
    ``trace`` overrides its trace and the stale-camera check is off (bag time is not now).
    ``out_bag`` records the node's outputs (storage from ``out_storage`` or the suffix);
    ``out_dir`` gets each episode's annotated image (``annotated-<k>.png``, as ``pixelis run``
    draws it). Each episode entry lists its trace steps and the errors among them.
    A storage that breaks mid-read ends the replay with one error entry saying where."""
    from pixelis_ros.node.agent_core import AgentNodeCore
    from pixelis_ros.node.config import AgentNodeConfig, ConfigError
    from pixelis_ros.policy.base import PolicyError
    from pixelis_ros.policy.folder_kind import resolve_backend
    from pixelis_ros.render import render_episode, save_rgb

    path = Path(bag)
    if not isinstance(query, str) or not query.strip():
        raise BagError("the query is empty")
    if max_messages is not None and max_messages < 1:
        raise BagError(f"max_messages must be >= 1, got {max_messages}")
    storage = storage_of(path)
    config = (config or AgentNodeConfig()).replace(max_frame_age_s=0.0, **({"trace": str(trace)} if trace else {}))
    if config.model and not config.trace:
        try:  # the folder's kind now, not after the tools have loaded
            resolve_backend(config.backend, config.model)
        except PolicyError as e:
            raise ConfigError(f"parameter 'model' ({config.model}, backend {config.backend}): {e}") from None
    if out_dir is not None:
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BagError(f"{out_dir}: cannot write the annotated images there: {e}") from None
    started = time.perf_counter()
    errors: list[dict] = []
    episodes: list[dict] = []
    writer = None
    with open_reader(path) as reader:
        conns = _topic_connections(reader, path, image_topic)
        msgtype = conns[0].msgtype
        t_query = _query_time(query_at, reader, path)
        start_ns = reader.start_time
        in_bag = sum(c.msgcount for c in conns)
        recorder = _OutputRecorder()
        # The node's clock is the bag's: frame ages and diagnostics in bag time, not wall time.
        core = AgentNodeCore(config, recorder, clock=lambda: recorder.now_ns / _NS)
        messages, newest_frame_ns = 0, None

        def ask(at_ns: int) -> None:
            if newest_frame_ns is not None:
                recorder.now_ns = newest_frame_ns  # the outputs refer to the newest frame
            n_answers = len(recorder.answers)
            episode = core.run_query(query)
            for record in recorder.answers[n_answers:]:
                episodes.append(_episode_entry(record, at_ns, start_ns, core.counters.frames, messages, image_topic, errors))
            if out_dir is not None and episodes:
                annotated = None
                if episode is not None:  # None: no frame to draw on; the entry's error says why
                    annotated = out_dir / f"annotated-{len(episodes) - 1}.png"
                    save_rgb(annotated, render_episode(episode, core.frames.snapshot()))
                episodes[-1]["annotated"] = str(annotated) if annotated else None

        core.activate()  # loads the policy and tools (ConfigError for a bad trace) before any bag is written
        try:
            if out_bag is not None:
                writer, out_storage = open_writer(out_bag, out_storage)
                recorder.attach(writer)
            pending, last_ns = True, start_ns
            shown = in_bag if max_messages is None else min(in_bag, max_messages)
            for conn, ts, raw in progress(_messages(reader, conns, errors, start_ns, lambda: messages), total=shown,
                                          desc="bag run", unit="msg"):
                if max_messages is not None and messages >= max_messages:
                    break
                index, messages, last_ns = messages, messages + 1, ts
                where = {"index": index, "time_s": round((ts - start_ns) / _NS, 6), "timestamp_ns": ts}
                recorder.now_ns = ts
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as e:  # noqa: BLE001 -- rosbags' CDR parser on foreign bytes
                    errors.append(where | {"error": f"cannot deserialize {len(raw)} bytes as {conn.msgtype}: {_reason(e)}"})
                else:
                    stamp_ns = M.stamp_ns(msg.header)
                    recorder.now_ns = stamp_ns or ts
                    before = core.counters.frames
                    core.on_image(msg)  # decode problems land in the counters and last_error, not as exceptions
                    if core.counters.frames == before:
                        errors.append(where | {"error": core.counters.last_error})
                    else:
                        newest_frame_ns = recorder.now_ns
                if pending and t_query is not None and ts >= t_query:
                    ask(ts)
                    pending = False
            if pending:
                ask(last_ns)
        finally:
            core.deactivate()
            if writer is not None:
                writer.close()
    result = {"bag": str(path), "storage": storage, "topic": image_topic, "type": msgtype, "messages": messages,
              "messages_in_bag": in_bag, "frames": core.counters.frames, "errors": errors, "episodes": episodes,
              "wall_s": round(time.perf_counter() - started, 3)}
    if out_bag is not None:
        result["record"] = {"bag": str(out_bag), "storage": out_storage, "topics": recorder.counts}
    return result


def frames_with_fps(frames: Frames, fps: float | None, max_frames: int | None = None) -> Frames:
    """The first ``max_frames`` frames, restamped ``i / fps`` when ``fps`` is given."""
    if max_frames is not None and max_frames < 1:
        raise BagError(f"max_frames must be >= 1, got {max_frames}")
    chosen = list(frames)[:max_frames]
    if fps is None:
        return Frames(chosen)
    if not fps > 0:
        raise BagError(f"fps must be a positive number, got {fps}")
    return Frames([Frame(image=f.image, stamp=i / fps, frame_id=f.frame_id) for i, f in enumerate(chosen)])
