"""The `pixelis` command end to end, in subprocesses, with its JSON contracts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixelis_ros.bench_tools import moving_square
from pixelis_ros.demo import demo_script, make_sign_scene


def pixelis(*args: str, ok: bool = True) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pixelis_ros.cli", *args], capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("cli")
    img, box, text = make_sign_scene(seed=2)
    cv2.imwrite(str(d / "scene.png"), img[:, :, ::-1])
    clip = d / "clip"
    clip.mkdir()
    for i, frame in enumerate(moving_square(12)):
        cv2.imwrite(str(clip / f"{i}.png"), frame[:, :, ::-1])
    video = cv2.VideoWriter(str(d / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(20):
        frame = np.full((240, 320, 3), 240, np.uint8)
        cv2.putText(frame, str(i), (100, 140), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (0, 0, 0), 5)
        video.write(frame)
    video.release()
    (d / "trace.txt").write_text(demo_script(box))
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"dir": d, "box": box, "text": text}


def test_tools_json_contracts(files):
    d, (x1, y1, x2, y2) = files["dir"], files["box"]
    bbox = f"{x1 - 20},{y1 - 20},{x2 + 20},{y2 + 20}"
    zoom = pixelis("tools", "zoom", "--image", str(d / "scene.png"), "--bbox", bbox, "--out", str(d / "zoom.png"), "--json")
    assert zoom["bbox_2d"] == [x1 - 20, y1 - 20, x2 + 20, y2 + 20] and (d / "zoom.png").is_file()
    ocr = pixelis("tools", "ocr", "--image", str(d / "zoom.png"), "--json")
    assert ocr["lines"] and set(ocr["lines"][0]) == {"text", "bbox_2d", "score"}
    assert ocr["text"].replace(" ", "") == files["text"].replace(" ", "")
    seg = pixelis("tools", "segment", "--image", str(d / "scene.png"), "--bbox", f"{x1 - 4},{y1 - 4},{x2 + 4},{y2 + 4}", "--json")
    assert len(seg["bbox_2d"]) == 4 and seg["area"] > 0 and len(seg["centroid"]) == 2
    track = pixelis("tools", "track", "--frames", str(d / "clip"), "--bbox", "50,100,110,160", "--json")
    assert len(track["boxes"]) == 12 and all(b is None or len(b) == 4 for b in track["boxes"])
    kcf = pixelis("tools", "track", "--frames", str(d / "clip"), "--bbox", "50,100,110,160", "--backend", "kcf", "--end", "5", "--json")
    assert len(kcf["boxes"]) == 6
    temporal = pixelis("tools", "temporal", "--video", str(d / "clip.mp4"), "--predicate", "text", "--value", "17", "--json")
    assert temporal["spans"] == [[1.7, 1.8]]
    frame17 = pixelis("tools", "ocr", "--video", str(d / "clip.mp4"), "--frame", "1.75s", "--json")
    assert frame17["text"] == "17"


def test_run_writes_trace_and_annotated_image(files):
    out = files["dir"] / "run"
    result = pixelis("run", "--image", str(files["dir"] / "scene.png"), "--query", "What does the sign say?",
                     "--trace", str(files["dir"] / "trace.txt"), "--out", str(out), "--json")
    assert result["answer"].replace(" ", "") == files["text"].replace(" ", "") and len(result["steps"]) == 3
    assert result["problems"] == []
    trace = json.loads((out / "trace.json").read_text())
    assert trace["steps"][0]["call"]["name"] == "zoom" and cv2.imread(str(out / "annotated.png")) is not None


def test_run_with_malformed_trace_reports_what_was_wrong(files):
    bad = files["dir"] / "bad_trace.txt"
    bad.write_text('<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [1, 2]}}\n</tool_call>\n<answer>oops')
    result = pixelis("run", "--image", str(files["dir"] / "scene.png"), "--query", "q", "--trace", str(bad),
                     "--out", str(files["dir"] / "bad_run"), "--json")
    assert result["answer"] == "oops" and result["stop_reason"] == "answer"  # the unclosed last <answer> still counts
    assert any("argument 'bbox_2d' must be a list of 4 numbers" in p for p in result["problems"])


def test_bad_inputs_exit_2_with_a_message(files):
    d = files["dir"]
    assert "bad.jpg" in pixelis("tools", "ocr", "--image", str(d / "bad.jpg"), "--json", ok=False)["error"]
    assert "missing.png: no such file" in pixelis("tools", "ocr", "--image", str(d / "missing.png"), "--json", ok=False)["error"]
    err = pixelis("tools", "zoom", "--image", str(d / "scene.png"), "--bbox", "1,2,3", "--json", ok=False)["error"]
    assert err == "--bbox must be 4 comma-separated numbers, got 3"
    err = pixelis("tools", "track", "--frames", str(d / "clip"), "--bbox", "50,100,110,160", "--end", "9.5s", "--json", ok=False)["error"]
    assert "time 9.5 s is outside the buffer" in err
    assert "cannot read trace" in pixelis("run", "--image", str(d / "scene.png"), "--query", "q", "--trace", str(d / "nope.txt"), "--json", ok=False)["error"]


def test_demo_and_bench_commands_run(tmp_path):
    demo = pixelis("demo", "--out", str(tmp_path / "demo"), "--json")
    assert demo["correct"] and Path(demo["out"], "annotated.png").is_file() and Path(demo["out"], "trace.json").is_file()
    bench = pixelis("bench", "tools", "--repeats", "1", "--json")
    assert set(bench["goal_ms"]) <= set(bench["median_ms"]) and all(v > 0 for v in bench["median_ms"].values())


def test_tool_flags_follow_the_tools_args_dataclasses(capsys):
    import dataclasses

    from pixelis_ros.cli import build_parser
    from pixelis_ros.cli.tools import TOOL_HELP, tool_call
    from pixelis_ros.tools import TOOLS

    parser = build_parser()
    for name in TOOL_HELP:
        with pytest.raises(SystemExit):
            parser.parse_args(["tools", name, "--help"])
        shown = "".join(capsys.readouterr().out.split())  # argparse wraps lines: compare without whitespace
        for f in dataclasses.fields(TOOLS[name].Args):
            assert "".join(f.metadata["doc"].split()) in shown, (name, f.name)
    # A Literal field's values are the flag's choices; a tuple field is comma-separated numbers.
    with pytest.raises(SystemExit):
        parser.parse_args(["tools", "temporal", "--predicate", "sparkle"])
    args = parser.parse_args(["tools", "segment", "--image", "x.png", "--point", "3,4", "--frame", "2s"])
    assert tool_call(args) == ("segment", {"image": "frame:2s", "point_2d": [3.0, 4.0]})


def test_bench_fuzz_command_reports_the_fuzz_summary():
    summary = pixelis("bench", "fuzz", "--cases", "40", "--targets", "agent,image", "--json")
    assert {"cases", "ok", "errors", "internal_errors", "hangs", "unbounded_messages", "over_memory", "peak_rss_mb",
            "targets", "failure_classes", "first_failures"} <= set(summary)
    assert summary["cases"] == 40 and set(summary["targets"]) == {"agent", "image"}
    assert summary["internal_errors"] == summary["hangs"] == summary["unbounded_messages"] == summary["over_memory"] == 0
    proc = subprocess.run([sys.executable, "-m", "pixelis_ros.cli", "bench", "fuzz", "--targets", "agent,nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "agent,nope" in proc.stderr
