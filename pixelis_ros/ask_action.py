"""The ``Ask`` action's types without ROS: registered from ``pixelis_interfaces/action/Ask.action``.

The interface package ``pixelis_interfaces`` (ament_cmake, rosidl) is what ROS 2 builds into
``pixelis_interfaces.action.Ask`` for the rclpy node and its peers. The DDS-wire node and the
``pixelis ask`` client cannot build it, so this module reads the same ``.action`` file and
registers, in the project's one rosbags typestore (``messages.typestore``), every type that
rosidl derives from it: ``Ask_Goal``/``Ask_Result``/``Ask_Feedback``, the ``Ask_SendGoal`` and
``Ask_GetResult`` services' requests and responses, ``Ask_FeedbackMessage``, and
``action_msgs/srv/CancelGoal`` (rosbags carries action_msgs' messages, not its service). The
layouts follow rosidl's action mapping, so the CDR is what an rclpy peer sends and expects.

This module also turns the agent's steps and episodes into the action's feedback and result
messages, once for both nodes (the rclpy node copies them field by field into its own types).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pixelis_ros import messages
from pixelis_ros.cota import clip
from pixelis_ros.paths import data_dir

ACTION = "pixelis_interfaces/action/Ask"
CANCEL = "action_msgs/srv/CancelGoal"
STATUS = "action_msgs/msg/GoalStatusArray"

# action_msgs/msg/GoalStatus
STATUS_UNKNOWN, STATUS_ACCEPTED, STATUS_EXECUTING, STATUS_CANCELING = 0, 1, 2, 3
STATUS_SUCCEEDED, STATUS_CANCELED, STATUS_ABORTED = 4, 5, 6
TERMINAL = (STATUS_SUCCEEDED, STATUS_CANCELED, STATUS_ABORTED)
# action_msgs/srv/CancelGoal response codes
CANCEL_NONE, CANCEL_REJECTED, CANCEL_UNKNOWN_GOAL, CANCEL_TERMINATED = 0, 1, 2, 3

OBSERVATION_CHARS = 300

_CANCEL_SRV = {
    f"{CANCEL}_Request": "action_msgs/msg/GoalInfo goal_info\n",
    f"{CANCEL}_Response": "int8 ERROR_NONE=0\nint8 ERROR_REJECTED=1\nint8 ERROR_UNKNOWN_GOAL_ID=2\n"
                          "int8 ERROR_GOAL_TERMINATED=3\nint8 return_code\naction_msgs/msg/GoalInfo[] goals_canceling\n",
}


class ActionDefinitionError(RuntimeError):
    """The ``.action`` file is missing or not three sections (goal, result, feedback)."""


def action_file() -> Path:
    """``pixelis_interfaces/action/Ask.action`` in the checkout or the installed share folder."""
    try:
        return data_dir("pixelis_interfaces") / "action" / "Ask.action"
    except FileNotFoundError as e:
        raise ActionDefinitionError(f"the Ask action's definition is not installed: {e}") from None


def derived_definitions(text: str, action: str = ACTION) -> dict[str, str]:
    """rosidl's types of one action, as ``.msg`` texts by full type name."""
    sections = [[]]
    for line in text.splitlines():
        if line.strip() == "---":
            sections.append([])
        else:
            sections[-1].append(line)
    if len(sections) != 3:
        raise ActionDefinitionError(f"{action}: an action has three sections (goal, result, feedback) "
                                    f"separated by '---', this one has {len(sections)}")
    goal, result, feedback = ("\n".join(lines) + "\n" for lines in sections)
    uuid = "unique_identifier_msgs/msg/UUID goal_id\n"
    return {
        f"{action}_Goal": goal, f"{action}_Result": result, f"{action}_Feedback": feedback,
        f"{action}_SendGoal_Request": uuid + f"{action}_Goal goal\n",
        f"{action}_SendGoal_Response": "bool accepted\nbuiltin_interfaces/msg/Time stamp\n",
        f"{action}_GetResult_Request": uuid,
        f"{action}_GetResult_Response": f"int8 status\n{action}_Result result\n",
        f"{action}_FeedbackMessage": uuid + f"{action}_Feedback feedback\n",
    }


@functools.lru_cache(maxsize=1)
def register_types() -> None:
    """Register the action's types (and CancelGoal's) in ``messages.typestore()``, once."""
    from rosbags.typesys import get_types_from_msg

    try:
        text = action_file().read_text(encoding="utf-8")
    except OSError as e:
        raise ActionDefinitionError(f"cannot read the Ask action's definition: {e}") from None
    types = {}
    for name, msg in {**derived_definitions(text), **_CANCEL_SRV}.items():
        # rosbags files a name under .../srv/ as .../srv/msg/...: keep the name rosidl gives it.
        types.update({name: definition for definition in get_types_from_msg(msg, name).values()})
    messages.typestore().register(types)


def msg(suffix: str, **fields):
    """A message of the action, e.g. ``msg("Feedback", step=1, ...)`` (every field given)."""
    register_types()
    return messages.msg_type(f"{ACTION}_{suffix}")(**fields)


def uuid_msg(goal_id: bytes):
    import numpy as np

    register_types()
    return messages.msg_type("unique_identifier_msgs/msg/UUID")(uuid=np.frombuffer(bytes(goal_id), np.uint8).copy())


def time_msg(seconds: float):
    ns = int(round(seconds * messages.NS))
    return messages.msg_type("builtin_interfaces/msg/Time")(sec=ns // messages.NS, nanosec=ns % messages.NS)


def seconds(time) -> float:
    return float(time.sec) + float(time.nanosec) * 1e-9


# ---------------------------------------------------------------------------------------------
# The agent's steps and episodes as feedback and results


def step_feedback(number: int, step: dict, elapsed_ms: float):
    """``Ask_Feedback`` for one step of an episode (``StepRecord.to_json()``)."""
    call = step.get("call")
    if call is not None:
        operation, arguments = call.get("name", ""), call.get("arguments", {})
    else:
        operation, arguments = ("answer" if "answer" in step else "invalid"), {}
    response = step.get("response")
    error = step.get("error") or (response.get("error") if isinstance(response, dict) else None) or ""
    if "answer" in step:
        observation = step.get("quoted", step["answer"])
    elif isinstance(response, dict):
        observation = json.dumps(response, ensure_ascii=False)
    else:
        observation = ""
    return msg("Feedback", step=int(number), operation=messages.text_field(operation),
               arguments_json=messages.text_field(json.dumps(arguments, ensure_ascii=False)),
               observation=messages.text_field(clip(str(observation), OBSERVATION_CHARS)),
               error=messages.text_field(clip(str(error), OBSERVATION_CHARS)), elapsed_ms=float(elapsed_ms))


def result_msg(record: dict, target: tuple[float, float, float] | None, stamp: float, frame_id: str):
    """``Ask_Result`` from the record the node publishes on ``answer`` (``AgentNodeCore``)."""
    trace = record.get("trace") or {}
    point = messages.point_msg(*(target or (0.0, 0.0, 0.0)), stamp, frame_id)
    return msg("Result", success=record.get("answer") is not None and not record.get("error"),
               answer=messages.text_field(record.get("answer") or ""),
               stop_reason=messages.text_field(record.get("stop_reason") or ""),
               error=messages.text_field(record.get("error") or ""), has_target=target is not None, target=point,
               trace_json=messages.text_field(json.dumps(record, ensure_ascii=False, default=str)),
               steps=len(trace.get("steps", [])), queue_ms=float(record.get("queue_ms", 0.0)),
               latency_ms=float(record.get("latency_ms", 0.0)))
