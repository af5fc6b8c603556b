"""The episode loop with the real tools: answers, errors as observations, caps, trace, render."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pixelis_ros.agent import Agent, AgentLimits
from pixelis_ros.boxes import iou
from pixelis_ros.cota import parse
from pixelis_ros.demo import demo_script, make_sign_scene
from pixelis_ros.frames import FrameBuffer
from pixelis_ros.policy import ScriptedPolicy
from pixelis_ros.render import render_episode
from pixelis_ros.tools import Toolbox, ToolboxConfig


@pytest.fixture(scope="module")
def toolbox():
    return Toolbox()


@pytest.fixture(scope="module")
def scene():
    img, box, text = make_sign_scene(seed=5)
    buf = FrameBuffer()
    buf.add(img, 0.0)
    return buf, box, text


def call(name, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>\n"


def test_zoom_ocr_answer_episode(scene, toolbox):
    buf, box, text = scene
    episode = Agent(ScriptedPolicy(demo_script(box)), toolbox).run("What does the sign say?", buf)
    assert episode.stop_reason == "answer" and episode.answer.replace(" ", "") == text.replace(" ", "")
    record = episode.to_json()
    assert [s.get("call", {}).get("name") for s in record["steps"]] == ["zoom", "ocr", None]
    assert record["steps"][0]["response"]["images"] == ["obs:0"] and record["steps"][1]["response"]["lines"]
    assert record["chain_length"] == 2 and record["tool_errors"] == 0 and record["timings_ms"]["tools"] > 0
    ax1, ay1, ax2, ay2 = record["action"]["bbox_2d"]  # the zoomed region, which holds the sign
    assert ax1 <= box[0] and ay1 <= box[1] and ax2 >= box[2] and ay2 >= box[3] and record["action"]["image"] == "frame:-1"
    # The OCR line was read in the zoomed image; mapped back it lies on the sign in the frame.
    ref, ocr_box = episode.to_frame(episode.records[1].result.detections[0])
    assert ref == "frame:-1" and iou(ocr_box, box) > 0.3
    assert parse(record["trace"]).errors == []
    annotated = render_episode(episode, buf.snapshot())
    assert annotated.shape == buf.snapshot()[-1].image.shape and not np.array_equal(annotated, buf.snapshot()[-1].image)


def test_bad_turns_and_failing_calls_are_observations(scene, toolbox):
    buf, _, _ = scene
    script = ("<think>try</think>\n" + call("crop", bbox_2d=[0, 0, 50, 50])
              + "<tool_call>\n{not json}\n</tool_call>\n"
              + call("zoom", bbox_2d=[5000, 5000, 5100, 5100])
              + call("zoom", bbox_2d=[0, 0, 100, 100], image="obs:3")
              + "<answer>unknown</answer>")
    episode = Agent(ScriptedPolicy(script), toolbox).run("q", buf)
    record = episode.to_json()
    assert episode.stop_reason == "answer" and len(record["steps"]) == 5
    errors = [s["response"]["error"] for s in record["steps"][:4]]
    assert "unknown tool 'crop'" in errors[0]
    assert errors[1].startswith("could not use your last turn: tool call is not valid JSON")
    assert "lies outside the 1920x1080 image" in errors[2]
    assert "unknown image reference 'obs:3'" in errors[3]
    assert record["tool_errors"] == 3 and record["invalid_turns"] == 1 and record["action"] is None


def test_every_step_keeps_the_policy_text_even_when_it_could_not_be_used(scene, toolbox):
    from pixelis_ros.cota import MAX_TURN_CHARS
    from pixelis_ros.policy.scripted import split_turns

    buf, _, _ = scene
    script = (call("zoom", bbox_2d=[0, 0, 50, 50]) + "<tool_call>\n{not json}\n</tool_call>\n"
              + "I would say STOP</answer>\n" + "<think>\ud800" + "x" * MAX_TURN_CHARS + "</think><answer>a</answer>\n"
              + "<answer>STOP</answer>")
    episode = Agent(ScriptedPolicy(script), toolbox).run("q", buf)
    steps = episode.to_json()["steps"]
    turns = split_turns(script)
    assert episode.answer == "STOP" and len(steps) == len(turns) == 5
    assert [s["raw_text"] for s in steps[:3]] == turns[:3] and steps[4]["raw_text"] == "<answer>STOP</answer>"
    assert "error" in steps[1] and "error" in steps[2]  # unparseable, yet what was written is there
    long = steps[3]["raw_text"]  # over the turn limit: kept cut, and UTF-8-safe
    assert long.startswith("<think>\ufffdxxx") and long.endswith(f"({len(turns[3])} characters)")
    assert len(long) < MAX_TURN_CHARS + 100 and "over the limit" in steps[3]["error"]
    json.dumps(steps, ensure_ascii=False).encode()


def test_caps_and_stop_reasons(scene, toolbox):
    buf, _, _ = scene
    zooms = call("zoom", bbox_2d=[0, 0, 400, 400]) * 6
    episode = Agent(ScriptedPolicy(zooms), toolbox, AgentLimits(max_steps=3)).run("q", buf)
    assert episode.stop_reason == "max_steps" and len(episode.records) == 3 and episode.answer is None
    episode = Agent(ScriptedPolicy(zooms), toolbox, AgentLimits(max_episode_pixels=448 * 448 * 2)).run("q", buf)
    assert "exceed" in episode.to_json()["steps"][2]["response"]["error"]
    exhausted = Agent(ScriptedPolicy(call("zoom", bbox_2d=[0, 0, 400, 400])), toolbox).run("q", buf)
    assert exhausted.stop_reason == "policy_error" and "has no turn 2" in exhausted.error
    assert Agent(ScriptedPolicy(zooms), toolbox).run("q", FrameBuffer()).stop_reason == "no_frames"
    assert Agent(ScriptedPolicy(zooms), toolbox).run("  ", buf).error == "the query is empty"
    assert "over the limit of 2000" in Agent(ScriptedPolicy(zooms), toolbox).run("x" * 5000, buf).error
    assert Agent(ScriptedPolicy(zooms), toolbox).run(None, buf).stop_reason == "bad_query"


def test_time_budget_stops_long_tools():
    frames = FrameBuffer()
    for i in range(20):
        frames.add(np.full((120, 160, 3), 200, np.uint8), i / 10)
    toolbox = Toolbox(ToolboxConfig(tool_time_budget_s=0.0))
    script = call("temporal", predicate="text", value="17") + call("track", bbox_2d=[10, 10, 60, 60]) + "<answer>-</answer>"
    record = Agent(ScriptedPolicy(script), toolbox).run("when?", frames).to_json()
    assert "temporal text scan ran out of its time budget" in record["steps"][0]["response"]["error"]
    track = record["steps"][1]
    assert "stopped_early" in track["response"] and "over_budget" in track["response"]
    # The model sees the net motion; the trace keeps the per-frame boxes.
    assert "boxes" not in track["response"] and track["data"]["boxes"][-1] is None


def test_answer_quotes_resolve_and_a_bad_quote_is_an_observation(toolbox, scene):
    buf, box, text = scene
    script = demo_script(box)  # zoom -> ocr -> <answer>{text}</answer>
    episode = Agent(ScriptedPolicy(script), toolbox).run("What does the sign say?", buf)
    record = episode.to_json()
    assert episode.answer == text and record["steps"][-1] == {**record["steps"][-1], "answer": "{text}", "quoted": text}
    bad = script.replace("<answer>{text}</answer>", "<answer>{txet}</answer>\n<answer>{lines.0.text}</answer>")
    episode = Agent(ScriptedPolicy(bad), toolbox).run("What does the sign say?", buf)
    steps = episode.to_json()["steps"]
    assert "the answer quotes {txet}, but the last tool response has no 'txet'" in steps[2]["response"]["error"]
    assert episode.stop_reason == "answer" and episode.answer == text  # the policy corrected itself next turn


# --- hardening (issue 13) ---------------------------------------------------------------------

def test_hostile_turns_are_observations_not_internal_errors(scene, toolbox):
    buf, _, _ = scene
    script = ('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [' + "9" * 5000 + ', 0, 50, 50]}}</tool_call>\n'
              + call("zoom", bbox_2d=[0, 0, 50, 50], image="frame:" + "9" * 5000)
              + call("zoom", bbox_2d=[0, 0, 50, 50], image="x" * 60_000)
              + "<answer></answer>\n<answer>\u200b</answer>\n<answer>done</answer>")
    episode = Agent(ScriptedPolicy(script), toolbox).run("q", buf)
    steps = episode.to_json()["steps"]
    assert episode.stop_reason == "answer" and episode.answer == "done" and len(steps) == 6
    errors = [s["response"]["error"] for s in steps[:5]]
    assert "an integer of 5000 digits" in errors[0]
    assert "a reference has at most 32 characters" in errors[1] and len(errors[1]) < 400
    assert "(60000 characters)" in errors[2] and len(errors[2]) < 400
    assert errors[3] == "could not use your last turn: the answer is empty: write it inside <answer></answer>"
    assert "no visible characters" in errors[4]


def test_lone_surrogates_still_give_an_answer_message(scene, toolbox):
    from pixelis_ros import messages as M

    buf, _, _ = scene
    script = '<think>\ud800</think><tool_call>{"name": "zoom", "arguments": {"image": "\\udfff"}}</tool_call><answer>ok\udc80</answer>'
    episode = Agent(ScriptedPolicy(script), toolbox).run("what\ud800?", buf)
    assert episode.stop_reason == "answer" and episode.answer == "ok\ufffd"
    assert "lone surrogate" in episode.to_json()["steps"][0]["response"]["error"]
    record = {"query": episode.query, "answer": episode.answer, "trace": episode.to_json()}
    data = M.serialize(M.answer_msg(record))  # UTF-8 inside the CDR: raised UnicodeEncodeError before
    assert json.loads(M.deserialize(data, "std_msgs/msg/String").data)["query"] == "what\ufffd?"
    M.serialize(M.detections_msg([("sign \ud800", (0, 0, 10, 10), 1.0)], 0.0, "cam\udc00"))
    M.serialize(M.diagnostics_msg("pixelis", 1, "error \ud800", {"last_error": "\udfff"}, 0.0))


def test_blank_queries_and_bad_scripts_end_cleanly(scene, toolbox):
    buf, _, _ = scene
    answer = ScriptedPolicy("<answer>x</answer>")
    assert Agent(answer, toolbox).run("\u200b\u2060 ", buf).error == \
        "the query has no visible characters (only spaces, zero-width or control characters)"
    assert Agent(answer, toolbox).run("", buf).error == "the query is empty"
    from pixelis_ros.policy.scripted import MAX_SCRIPT_CHARS

    big = Agent(ScriptedPolicy("<think>" * (MAX_SCRIPT_CHARS // 7 + 1)), toolbox).run("q", buf)
    assert big.stop_reason == "policy_error" and "over the limit of" in big.error
    wrong = Agent(ScriptedPolicy({"not": "text"}), toolbox).run("q", buf)
    assert wrong.stop_reason == "policy_error" and "must be text" in wrong.error
    long = Agent(answer, toolbox).run("y" * 100_000, buf)
    assert long.stop_reason == "bad_query" and len(long.query) < 2100  # the echo is bounded too
