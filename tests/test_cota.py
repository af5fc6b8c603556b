"""The CoTA grammar: round trips, structured errors, schemas and chat messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from pixelis_ros import cota
from pixelis_ros.cota import Step, ToolCall, parse, parse_turn, to_messages
from pixelis_ros.tools.arguments import tool_schema
from pixelis_ros.tools import TOOLS, Toolbox

# Bodies may hold anything but the grammar's own tags (a canonical trace never nests them).
body = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).filter(
    lambda s: not any(f"<{t}>" in s or f"</{t}>" in s for t in cota.TAGS))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | body,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(body, inner, max_size=4), max_leaves=10)
call = st.builds(ToolCall, name=body, arguments=st.dictionaries(body, json_value, max_size=4))
call_step = st.builds(lambda t, c, r: Step(think=t, call=c, response=r), st.none() | body, call, st.none() | body)
answer_step = st.builds(lambda t, a: Step(think=t, answer=a), st.none() | body, body)
trace = st.tuples(st.lists(call_step, max_size=4), answer_step).map(lambda p: p[0] + [p[1]])


@settings(max_examples=1500, deadline=None)
@given(trace)
def test_format_parse_round_trip(steps):
    text = cota.format(steps)
    parsed = parse(text)
    assert parsed.errors == []
    assert cota.format(parsed.steps) == text
    assert [s.call for s in parsed.steps] == [s.call for s in steps]
    assert [s.answer for s in parsed.steps] == [s.answer for s in steps]


tag_soup = st.lists(st.sampled_from(["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
                                     "</tool_response>", "<answer>", "</answer>", "{", "}", '"name"', ":", '"arguments"',
                                     "[", "]", ",", "\n", "x", '"zoom"', "1e999", "null"]) | st.text(max_size=8), max_size=30).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=300) | tag_soup)
def test_parse_never_raises(text):
    result = parse(text)
    assert all(isinstance(e.offset, int) and e.message for e in result.errors)
    step = parse_turn(text)
    assert step.error is not None or step.call is not None or step.answer is not None


def test_parse_reports_structured_errors():
    result = parse('<think>a</think>\n<tool_call>\n{"name": "zoom", "arguments": [1]}\n</tool_call>\ntrailing')
    messages = [e.message for e in result.errors]
    assert any("'arguments' must be a JSON object" in m for m in messages)
    assert any("unexpected text outside tags" in m for m in messages)
    assert parse("<answer>half").errors[0].message == "unclosed <answer>"
    assert "directly follow" in parse("<tool_response>\nx\n</tool_response>").errors[0].message


def test_parse_turn_cases():
    step = parse_turn('<think>look</think>\n<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}')
    assert step.error is None and step.call == ToolCall("zoom", {"bbox_2d": [1, 2, 3, 4]})  # stop string stripped
    assert parse_turn("<answer> 42 </answer>").answer == " 42 "
    assert "no <tool_call> or <answer>" in parse_turn("I think the answer is 42").error
    assert "not valid JSON" in parse_turn("<tool_call>{name: zoom}</tool_call>").error
    assert "more than one" in parse_turn("<answer>a</answer><answer>b</answer>").error
    assert "unexpected key" in parse_turn('<tool_call>{"name": "ocr", "arguments": {}, "x": 1}</tool_call>').error


def test_schemas_come_from_typed_signatures():
    schemas = {s["function"]["name"]: s["function"] for s in Toolbox().schemas()}
    assert set(schemas) == {"zoom", "ocr", "segment", "track", "temporal"}
    zoom = schemas["zoom"]["parameters"]
    assert zoom["required"] == ["bbox_2d"] and zoom["additionalProperties"] is False
    assert zoom["properties"]["bbox_2d"] == {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                                             "description": zoom["properties"]["bbox_2d"]["description"]}
    assert zoom["properties"]["image"]["default"] == "frame:-1"
    temporal = schemas["temporal"]["parameters"]["properties"]["predicate"]
    assert temporal["enum"] == ["change", "appear", "disappear", "colour", "text", "motion_stop"]
    assert all(p["description"] for s in schemas.values() for p in s["parameters"]["properties"].values())
    assert tool_schema(TOOLS["ocr"])["type"] == "function"


def test_messages_with_image_placeholders():
    steps = parse('<think>t</think>\n<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [0, 0, 50, 50]}}\n</tool_call>\n'
                  '<tool_response>\n{"size": [448, 448]}\n</tool_response>\n<answer>red</answer>').steps
    msgs = to_messages("colour?", steps, Toolbox().schemas(), step_images=[["obs:0"], []])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert "<tools>" in msgs[0]["content"][0]["text"] and '"name": "zoom"' in msgs[0]["content"][0]["text"]
    assert msgs[1]["content"] == [{"type": "image", "image": "frame:-1"}, {"type": "text", "text": "colour?"}]
    assert msgs[3]["content"][0]["text"].startswith("<tool_response>\n") and msgs[3]["content"][1] == {"type": "image", "image": "obs:0"}
    assert json.loads(msgs[2]["content"][0]["text"].split("\n")[2]) == {"name": "zoom", "arguments": {"bbox_2d": [0, 0, 50, 50]}}
    assert msgs[4]["content"][0]["text"] == "<answer>red</answer>"


def test_answer_quotes_name_a_field_of_the_last_response():
    from pixelis_ros.cota import answer_quote, resolve_quote

    assert answer_quote("{lines.1.text}") == "lines.1.text" and answer_quote(" {colour} ") == "colour"
    assert answer_quote("red") is None and answer_quote("{a} and {b}") is None and answer_quote("{}") is None
    response = {"lines": [{"text": "E"}, {"text": "RAMP 45"}], "spans": [[0.7, 2.0]], "colour": "red", "ok": True}
    assert resolve_quote("lines.1.text", response) == ("RAMP 45", None)
    assert resolve_quote("spans.0.0", response) == ("0.7", None)  # numbers as the response wrote them
    assert resolve_quote("ok", response) == ("true", None)
    value, error = resolve_quote("lines.5.text", response)
    assert value is None and "has no '5' there (it has 2 items)" in error
    value, error = resolve_quote("colur", {"colour": "red"})
    assert value is None and error == "the answer quotes {colur}, but the last tool response has no 'colur' there (it has ['colour'])"
    value, error = resolve_quote("text", {"text": "x" * 5000})
    assert value is None and "5000 characters" in error


# --- hardening (issue 13): a leaf module, linear parsing, caps, bounded quotes, valid text ------


def run_python(code: str, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter; a hang fails the test at ``timeout`` instead of
    freezing it (a regex holding the GIL cannot be interrupted from a thread)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_cota_is_a_leaf_that_loads_no_tools_and_no_opencv():
    out = run_python("import sys, pixelis_ros.cota\n"
                     "print(sorted(m for m in sys.modules if m == 'cv2' or m.startswith(('pixelis_ros', 'numpy'))))")
    assert out.strip() == "['pixelis_ros', 'pixelis_ros.cota']"


ADVERSARIAL = ("<tool_call>", "<answer>", "<think>", "<tool_response>", "<tool_call><think>", "<answer>x</tool_call>",
               "<think>a</think>", "</answer><answer>")


def test_parsing_a_megabyte_of_adversarial_text_is_linear():
    # 1 MB of each: the old lazy-body regexes rescanned to the end from every unclosed opener
    # (100 KB took 2-6 s, and doubling quadrupled it: ~10 minutes per MB).
    code = f"""
from pixelis_ros import cota
from pixelis_ros.policy.scripted import split_turns
for unit in {ADVERSARIAL!r}:
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    trace = cota.parse(text)
    assert all(len(e.message) < 400 for e in trace.errors), unit
    cota.parse_turn(text[:cota.MAX_TURN_CHARS])
    split_turns(text)
    cota.last_tool_response([{{"content": [{{"type": "text", "text": text}}]}}])
print("ok")
"""
    assert run_python(code).strip() == "ok"


OLD_BLOCK = re.compile(r"<(think|tool_call|tool_response|answer)>(.*?)</\1>", re.DOTALL)  # the quadratic original


@settings(max_examples=1500, deadline=None)
@given(tag_soup | st.sampled_from(["<think>a<answer>b</answer>", "<answer><think>x</think></answer>",
                                   "<tool_call>{}</tool_call></tool_call><tool_call>", "x<answer>1</answer>y<answer>2</answer>"]))
def test_linear_scan_finds_the_same_blocks_as_the_regex(text):
    assert list(cota._blocks(text)) == [(m.start(), m.end(), m.group(1), m.group(2)) for m in OLD_BLOCK.finditer(text)]


def test_caps_on_turn_and_trace_sizes():
    turn = "<answer>" + "x" * cota.MAX_TURN_CHARS + "</answer>"
    assert parse_turn(turn).error == f"the turn has {len(turn)} characters, over the limit of {cota.MAX_TURN_CHARS}"
    trace = parse("x" * (cota.MAX_TRACE_CHARS + 1))
    assert trace.steps == [] and "over the limit of" in trace.errors[0].message


def test_huge_integers_in_a_call_are_errors_not_exceptions():
    step = parse_turn('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [' + "9" * 5000 + ', 0, 50, 50]}}</tool_call>')
    assert step.call is None and step.error == "tool call holds an integer of 5000 digits; numbers in a call have at most 100 digits"
    ok = parse_turn('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [' + "9" * 100 + ', 0, 50, 50]}}</tool_call>')
    assert ok.error is None and ok.call.arguments["bbox_2d"][0] == 10 ** 100 - 1


def test_lone_surrogates_never_reach_the_outputs():
    escaped = parse_turn('<tool_call>{"name": "ocr", "arguments": {"image": "\\ud800"}}</tool_call>')
    assert escaped.call is None and "lone surrogate" in escaped.error
    pair = parse_turn('<tool_call>{"name": "ocr", "arguments": {"image": "\\ud83d\\ude00"}}</tool_call>')
    assert pair.error is None and pair.call.arguments["image"] == "\U0001F600"  # a valid pair is text
    raw = parse_turn("<think>a\ud800</think><answer>b\udfff</answer>")
    assert raw.error is None and raw.think == "a\ufffd" and raw.answer == "b\ufffd"
    (raw.think + raw.answer).encode("utf-8")


def test_empty_and_invisible_answers_are_errors():
    assert parse_turn("<answer></answer>").error == "the answer is empty: write it inside <answer></answer>"
    assert parse_turn("<answer> \n </answer>").error == "the answer is empty: write it inside <answer></answer>"
    assert "no visible characters" in parse_turn("<answer>\u200b\u2060\ufeff</answer>").error
    assert parse_turn("<answer>0</answer>").error is None
    assert cota.is_blank(" \u200b\u00ad\u034f\u3164") and not cota.is_blank("\u200bA") and not cota.is_blank("٣")


def test_quote_and_clip_bound_every_echo():
    assert cota.quote("camera") == "'camera'" and cota.clip("short") == "short"
    long = cota.quote("x" * 1_000_000)
    assert long == repr("x" * 200) + "... (1000000 characters)"
    assert cota.clip("y" * 5000, 10) == "yyyyyyyyyy... (5000 characters)"
    assert cota.quote(10 ** 5000) == "<an integer of about 5001 digits>"  # repr() itself would raise
    assert len(cota.quote([["z" * 10_000] * 1000] * 1000)) < 260 and len(cota.quote({str(i): i for i in range(10 ** 4)})) < 260
    assert cota.quote("\ud800") == "'\\ud800'"  # escaped: a quote never carries a lone surrogate


def test_answer_quotes_with_odd_indices_are_errors():
    from pixelis_ros.cota import resolve_quote

    response = {"lines": [{"text": "A"}]}
    for path in ("lines." + "9" * 5000 + ".text", "lines.\u00b2.text"):
        value, error = resolve_quote(path, response)
        assert value is None and "has no" in error and len(error) < 400
