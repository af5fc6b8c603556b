"""rosbag2 replay and recording (``pixelis_ros/bag.py``, ``pixelis bag``): the real stub bags of
../shared/data/real/rosbag (bad payloads: one error per message, the replay goes on), real bags
written from the OTB frames and replayed with a track trace (sqlite3 + Image, MCAP +
CompressedImage, outputs recorded and read back), a truncated CDR message, and the CLI (node
parameters with ``-p``, annotated images with ``--out``, each step's error in the JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from pixelis_ros import messages as M
from pixelis_ros.bag import BagError, open_writer, record_frames, run_bag
from pixelis_ros.bench_tools import moving_square
from pixelis_ros.cli import main
from pixelis_ros.frames import Frame, Frames
from pixelis_ros.media import load_frame_dir

STUBS = ["rosbags_rs_sqlite3", "rosbags_rs_mcap"]
OTB_FIRST_BOX = [205, 151, 222, 201]  # groundtruth_rect.txt line 1 (x y w h = 205 151 17 50) as x1,y1,x2,y2
OTB_FRAMES = 30


def track_script(box, end="frame:-1") -> str:
    call = {"name": "track", "arguments": {"bbox_2d": list(box), "start": "frame:0", "end": end}}
    return ("<think>Follow the person from the first frame.</think>\n"
            f"<tool_call>\n{json.dumps(call)}\n</tool_call>\n<answer>done</answer>")


def call_text(name: str, box, image: str) -> str:
    call = {"name": name, "arguments": {"bbox_2d": list(box), "image": image}}
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>\n"


def zoom_script() -> str:
    call = {"name": "zoom", "arguments": {"bbox_2d": [0, 0, 32, 32], "image": "frame:-1"}}
    return f"<tool_call>\n{json.dumps(call)}\n</tool_call>\n<answer>zoomed</answer>"


def read_bag(path: Path) -> dict[str, list]:
    """topic -> [(log time ns, message)] of every message, read back with AnyReader."""
    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=M.typestore()) as reader:
        for conn, ts, raw in reader.messages():
            out.setdefault(conn.topic, []).append((ts, reader.deserialize(raw, conn.msgtype)))
    return out


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture
def zoom_trace(tmp_path) -> Path:
    path = tmp_path / "zoom.txt"
    path.write_text(zoom_script())
    return path


# --- the stub bags: every image message is bad ---------------------------------------------------------
@pytest.mark.parametrize("bag", STUBS)
@pytest.mark.parametrize("topic, problem", [
    ("/test/sensor_msgs/image", "data holds 30 bytes but height 480 x step 1920 needs 921600 bytes"),
    ("/test/sensor_msgs/compressed_image", "cannot decode 10 bytes of 'jpeg' compressed image data")])
def test_stub_bags_give_one_error_per_bad_message(real_data, zoom_trace, bag, topic, problem):
    result = run_bag(real_data / "rosbag" / bag, topic, "What is in view?", trace=zoom_trace)
    assert result["storage"] == bag.rsplit("_", 1)[1]
    assert result["messages"] == 2 and result["frames"] == 0
    assert [e["index"] for e in result["errors"]] == [0, 1]
    for entry in result["errors"]:
        assert problem in entry["error"], entry
        assert entry["time_s"] > 0 and entry["timestamp_ns"] > 1_700_000_000 * 10**9
    [episode] = result["episodes"]
    assert episode["answer"] is None and episode["action"] is None
    assert "no camera frame" in episode["error"] and "none of the 2 messages" in episode["error"]


def test_stub_bag_query_at_runs_after_the_first_message_at_that_time(real_data, zoom_trace):
    bag = real_data / "rosbag" / "rosbags_rs_mcap"
    result = run_bag(bag, "/test/sensor_msgs/compressed_image", "What is in view?", trace=zoom_trace, query_at=5.0)
    [episode] = result["episodes"]
    assert episode["at_s"] == pytest.approx(13.1)  # the messages are logged 3.7 s and 13.1 s after the bag start
    assert len(result["errors"]) == 2  # the replay went on to the end
    with pytest.raises(BagError, match="outside the bag"):
        run_bag(bag, "/test/sensor_msgs/compressed_image", "q", trace=zoom_trace, query_at=60.0)


def test_unknown_and_non_image_topics(real_data, zoom_trace, capsys):
    bag = real_data / "rosbag" / "rosbags_rs_sqlite3"
    rc = main(["bag", "run", "--bag", str(bag), "--image-topic", "/camera/image_raw", "--query", "q",
               "--trace", str(zoom_trace), "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert rc == 2
    assert "no topic '/camera/image_raw'" in error
    assert "/test/sensor_msgs/image (sensor_msgs/msg/Image)" in error
    assert "/test/sensor_msgs/compressed_image (sensor_msgs/msg/CompressedImage)" in error
    with pytest.raises(BagError, match="carries geometry_msgs/msg/Accel, not sensor_msgs/msg/Image"):
        run_bag(bag, "/test/geometry_msgs/accel", "q", trace=zoom_trace)
    with pytest.raises(BagError, match="no such bag"):
        run_bag(bag.parent / "missing", "/x", "q", trace=zoom_trace)


# --- real bags from the OTB frames ---------------------------------------------------------------------
@pytest.mark.parametrize("storage, compressed", [("sqlite3", False), ("mcap", True)])
def test_otb_bag_replay_with_track_trace_and_recorded_outputs(real_data, tmp_path, storage, compressed):
    folder = real_data / "tracking" / "otb_crossing"
    frames = Frames(list(load_frame_dir(folder))[:OTB_FRAMES])
    truth = [float(v) for v in (folder / "groundtruth_rect.txt").read_text().splitlines()[OTB_FRAMES - 1].split()]
    camera = tmp_path / f"camera.{'mcap' if storage == 'mcap' else 'db3'}"
    written = record_frames(camera, frames, compressed=compressed, start_time=1_700_000_000.0)
    assert written["storage"] == storage and written["messages"] == OTB_FRAMES
    trace = tmp_path / "track.txt"
    trace.write_text(track_script(OTB_FIRST_BOX))
    out = tmp_path / f"outputs{'.mcap' if storage == 'mcap' else ''}"

    result = run_bag(camera, "/camera/image_raw", "Where does the person go?", trace=trace, out_bag=out)

    assert result["storage"] == storage
    assert result["type"] == ("sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image")
    assert result["messages"] == result["frames"] == OTB_FRAMES and result["errors"] == []
    [episode] = result["episodes"]
    assert episode["error"] is None and episode["answer"] == "done" and episode["stop_reason"] == "answer"
    assert episode["action"]["image"] == f"frame:{OTB_FRAMES - 1}"
    x, y, w, h = truth
    assert iou(episode["action"]["bbox_2d"], [x, y, x + w, y + h]) > 0.5
    assert episode["frame_stamp"] == pytest.approx(1_700_000_000.0 + (OTB_FRAMES - 1) / 30)

    assert result["record"]["storage"] == storage
    recorded = read_bag(out)
    assert {t: len(v) for t, v in recorded.items()} == {f"/pixelis/{n}": 1 for n in
                                                          ("answer", "detections", "target", "annotated", "diagnostics")}
    [(ts, answer)] = recorded["/pixelis/answer"]
    assert ts == 1_700_000_000 * 10**9 + round((OTB_FRAMES - 1) / 30 * 1e9)  # stamped with the frame it answers about
    record = json.loads(answer.data)
    [call] = [s["call"] for s in record["trace"]["steps"] if s.get("call")]
    assert call["name"] == "track" and call["arguments"]["bbox_2d"] == OTB_FIRST_BOX
    [(_, target)] = recorded["/pixelis/target"]
    assert [target.point.x, target.point.y] == episode["action"]["point_2d"]
    [(_, detections)] = recorded["/pixelis/detections"]
    assert detections.detections[0].results[0].hypothesis.class_id == "track"
    [(_, annotated)] = recorded["/pixelis/annotated"]
    assert M.image_from_msg(annotated).shape[2] == 3


# --- a truncated CDR message and query_at on a synthetic bag --------------------------------------------
def test_truncated_cdr_message_is_one_error_and_query_at_uses_frames_so_far(tmp_path, zoom_trace):
    bag = tmp_path / "cam"
    writer, _ = open_writer(bag)
    conn = writer.add_connection("/cam", "sensor_msgs/msg/Image", typestore=M.typestore())
    for i in range(4):
        raw = M.serialize(M.image_msg(np.full((48, 64, 3), 40 * i, np.uint8), 100.0 + i))
        writer.write(conn, (100 + i) * 10**9, raw[:-100] if i == 1 else raw)
    writer.close()

    result = run_bag(bag, "/cam", "q", trace=zoom_trace, query_at=2.0)

    assert result["messages"] == 4 and result["frames"] == 3
    [error] = result["errors"]
    assert error["index"] == 1 and error["time_s"] == 1.0
    assert error["error"].startswith(f"cannot deserialize {len(raw) - 100} bytes as sensor_msgs/msg/Image")
    [episode] = result["episodes"]
    assert episode["at_s"] == 2.0 and episode["frame_stamp"] == 102.0 and episode["buffered_frames"] == 2
    assert episode["answer"] == "zoomed"
    first_two = run_bag(bag, "/cam", "q", trace=zoom_trace, max_messages=2)
    assert (first_two["messages"], first_two["messages_in_bag"], first_two["frames"]) == (2, 4, 1)
    assert first_two["episodes"][0]["frame_stamp"] == 100.0
    with pytest.raises(BagError, match="already exists"):
        record_frames(bag, Frames([Frame(np.zeros((4, 4, 3), np.uint8), 0.0)]))


# --- the CLI end to end: a bag from a generated video --------------------------------------------------
def pixelis(*args: str, ok: bool = True) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pixelis_ros.cli", *args], capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_record_from_video_then_run(tmp_path):
    video = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for frame in moving_square(15, size=(320, 240), side=40):
        video.write(frame[:, :, ::-1])
    video.release()
    (tmp_path / "track.txt").write_text(track_script([50, 100, 90, 140]))
    bag = tmp_path / "clip_bag"

    written = pixelis("bag", "record", "--bag", str(bag), "--video", str(tmp_path / "clip.mp4"), "--compressed", "--json")
    assert written["messages"] == 15 and written["type"] == "sensor_msgs/msg/CompressedImage"
    assert written["duration_s"] == pytest.approx(1.4)
    result = pixelis("bag", "run", "--bag", str(bag), "--image-topic", "/camera/image_raw",
                     "--query", "Where is the square?", "--trace", str(tmp_path / "track.txt"),
                     "--record", str(tmp_path / "out"), "--json")

    assert {"bag", "storage", "topic", "messages", "frames", "errors", "episodes"} <= set(result)
    assert result["messages"] == result["frames"] == 15 and result["errors"] == []
    [episode] = result["episodes"]
    assert {"query", "answer", "action", "stop_reason", "error", "frame_stamp"} <= set(episode)
    assert episode["action"]["image"] == "frame:14"
    assert result["record"]["topics"]["/pixelis/answer"] == 1
    again = pixelis("bag", "record", "--bag", str(bag), "--video", str(tmp_path / "clip.mp4"), "--json", ok=False)
    assert "already exists" in again["error"]


# --- corrupted bags: our error or an error entry, never a traceback (issue #13) ----------------------
def small_bag(tmp_path: Path, storage: str, n: int = 20) -> tuple[Path, Path]:
    """A real camera bag of ``n`` random 48x64 frames, and its storage file."""
    rng = np.random.default_rng(0)
    bag = tmp_path / storage
    record_frames(bag, Frames([Frame(rng.integers(0, 255, (48, 64, 3), np.uint8), i / 10) for i in range(n)]),
                  storage=storage)
    return bag, next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("nanoseconds_since_epoch: 0", "nanoseconds_since_epoch: 'soon'", 1),
     r"starting_time.nanoseconds_since_epoch must be an integer in 0..2\^63-1, got 'soon'"),
    (lambda t: t + "extra: " + "[" * 100_000 + "]" * 100_000 + "\n", r"nested too deeply to parse"),
    (lambda t: t.encode("utf-16"), r"not UTF-8 text \(byte 0xff at offset 0\)"),
    (lambda t: t.replace("  - sqlite3.db3", "  - ../../../../etc/passwd", 1),
     r"relative_file_paths\[0\] '../../../../etc/passwd' points outside the bag folder"),
    (lambda t: t.replace("storage_identifier: sqlite3", "storage_identifier: " + "a" * 5000, 1),
     r"storage_identifier must be one of sqlite3, mcap, got 'aaaa[a]*\.\.\.$"),
    (lambda t: t.replace("message_count: 2", "message_count: " + "9" * 5000, 1), r"holds a value YAML cannot convert"),
    (lambda t: "- rosbag2_bagfile_information\n- 1\n", r"holds no 'rosbag2_bagfile_information' mapping"),
])
def test_broken_metadata_is_a_bag_error_naming_the_field(tmp_path, zoom_trace, edit, message):
    bag, _ = small_bag(tmp_path, "sqlite3", 2)
    meta = bag / "metadata.yaml"
    text = edit(meta.read_text())
    meta.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(BagError, match=message) as info:
        run_bag(bag, "/camera/image_raw", "q", trace=zoom_trace)
    assert len(str(info.value)) < 500


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_truncated_storage_is_a_bag_error(tmp_path, zoom_trace, storage):
    bag, db = small_bag(tmp_path, storage)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    with pytest.raises(BagError, match=r"cannot open it as a rosbag: AnyReaderError: (Cannot open database|File end magic)"):
        run_bag(bag, "/camera/image_raw", "q", trace=zoom_trace)


def test_sqlite_corrupt_mid_read_replays_what_it_can_and_says_where(tmp_path, zoom_trace):
    # One b-tree page in the middle overwritten (page 27 of 54 holds frame 8's row in this bag):
    # apsw.CorruptError escaped the replay before.
    bag, db = small_bag(tmp_path, "sqlite3")
    data = bytearray(db.read_bytes())
    data[26 * 4096:27 * 4096] = b"\xff" * 4096
    db.write_bytes(bytes(data))
    result = run_bag(bag, "/camera/image_raw", "q", trace=zoom_trace)
    read = result["messages"]
    assert 0 < read < 20 and result["frames"] == read and result["messages_in_bag"] == 20
    assert result["errors"][-1]["error"] == (f"the bag's storage is corrupt after {read} message(s) on this topic; replay "
                                             "stopped there (CorruptError: database disk image is malformed)")
    assert result["episodes"][0]["answer"] == "zoomed"  # the query still ran on the frames read


def test_mcap_record_with_a_forged_length_says_why_no_frame_was_read(tmp_path, zoom_trace):
    import struct

    bag, mcap = small_bag(tmp_path, "mcap")
    data = bytearray(mcap.read_bytes())
    # Message records (opcode 5) of one 48x64 rgb8 frame are 9290 bytes long; forge the sixth one's length.
    records = [i for i in range(len(data) - 9) if data[i] == 5 and struct.unpack_from("<Q", data, i + 1)[0] == 9290]
    at = records[5]
    struct.pack_into("<Q", data, at + 1, 2**62)
    mcap.write_bytes(bytes(data))
    result = run_bag(bag, "/camera/image_raw", "q", trace=zoom_trace)
    assert result["messages"] == 0 and result["frames"] == 0
    [error] = result["errors"]
    assert error["error"].startswith("the bag's storage is corrupt after 0 message(s) on this topic; replay stopped "
                                     "there (ReaderError: Truncated record")
    assert result["episodes"][0]["error"].startswith("no camera frame has been received yet (no message on "
                                                     "/camera/image_raw could be read: the bag's storage is corrupt")


# --- bag run as the node: -p parameters, annotated images, the steps and their errors ------------------
def test_cli_bag_run_takes_node_parameters_writes_annotated_images_and_lists_step_errors(tmp_path, capsys):
    bag, _ = small_bag(tmp_path, "mcap", 5)
    script = tmp_path / "script.txt"
    script.write_text(f'{call_text("zoom", [0, 0, 16, 16], "frame:99")}'
                      "<think>the sign</think> says STOP</answer>\n"  # an unparseable turn
                      f'{call_text("zoom", [0, 0, 32, 32], "frame:-1")}<answer>zoomed</answer>')
    base = ["bag", "run", "--bag", str(bag), "--image-topic", "/camera/image_raw", "--query", "What does it say?",
            "-p", f"trace:={script}"]

    assert main([*base, "-p", "max_steps:=6", "--out", str(tmp_path / "out"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    [episode] = result["episodes"]
    assert episode["answer"] == "zoomed" and episode["tool_errors"] == 1  # the contract's keys stay
    assert episode["step_errors"] == [
        {"step": 0, "error": "frame index 99 is outside the buffer (it holds 5 frames: 0..4 or -5..-1)"},
        {"step": 1, "error": "no <tool_call> or <answer> in the output (unexpected text outside tags: 'says STOP</answer>')"}]
    steps = episode["steps"]
    assert [s.get("call", {}).get("name") for s in steps] == ["zoom", None, "zoom", None]
    assert steps[0]["response"]["error"].startswith("frame index 99") and "error" in steps[1]
    assert steps[1]["raw_text"] == "<think>the sign</think> says STOP</answer>"  # the failed turn's own text
    annotated = tmp_path / "out" / "annotated-0.png"
    assert episode["annotated"] == str(annotated)
    image = cv2.imread(str(annotated))
    assert image is not None and image.ndim == 3 and min(image.shape[:2]) >= 48

    # -p reaches the node: one step allowed, so the same script is cut off before its answer
    assert main([*base, "-p", "max_steps:=1", "--json"]) == 0
    [cut] = json.loads(capsys.readouterr().out)["episodes"]
    assert cut["stop_reason"] == "max_steps" and "annotated" not in cut and len(cut["steps"]) == 1
    assert main([*base, "-p", "max_step:=1", "--json"]) == 2
    assert "unknown pixelis_agent parameter(s) ['max_step']" in json.loads(capsys.readouterr().out)["error"]


def test_cli_bag_run_refuses_a_model_folder_before_replaying(tmp_path, capsys):
    bag, _ = small_bag(tmp_path, "sqlite3", 2)
    missing = tmp_path / "no-model"
    assert main(["bag", "run", "--bag", str(bag), "--image-topic", "/camera/image_raw", "--query", "q",
                 "--model", str(missing), "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error.startswith(f"parameter 'model' ({missing}, backend auto): model folder {missing} does not exist")
