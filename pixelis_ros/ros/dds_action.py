"""The ``Ask`` action over the ROS 2 action protocol on Cyclone DDS, without rclpy.

A ROS 2 action ``<ns>/ask`` is three services and two topics under ``<ns>/ask/_action/``
(rcl_action's names and types): ``send_goal`` (``Ask_SendGoal``), ``get_result``
(``Ask_GetResult``), ``cancel_goal`` (``action_msgs/srv/CancelGoal``), ``feedback``
(``Ask_FeedbackMessage``) and ``status`` (``action_msgs/msg/GoalStatusArray``, transient local,
keep last 1, as rcl_action publishes it). ``DdsAskServer`` serves them over an
``AgentNodeCore`` so that a ROS 2 peer (``ros2 action send_goal /ask
pixelis_interfaces/action/Ask ...`` with rmw_cyclonedds) cannot tell it from rclpy's
ActionServer; ``DdsAskClient`` is the other side (``pixelis ask`` and the tests).

Goal life: accepted -> executing (the worker starts its episode) -> succeeded (an answer),
aborted (no answer, or a goal the node cannot run: the result's ``error`` says why) or canceled
(a cancel request, honoured between steps). A result waits for
its get_result request or the other way round; finished goals are kept for
``RESULT_KEEP_S`` (rcl_action's default result timeout is 15 minutes) and at most
``MAX_GOALS`` of them.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from pixelis_ros import ask_action as A, messages as M
from pixelis_ros.node.agent_core import AgentNodeCore, AskGoal
from pixelis_ros.ros import dds
from pixelis_ros.ros.dds_service import DdsServiceClient, DdsServiceServer, Pending

RESULT_KEEP_S = 900.0
MAX_GOALS = 256
STATUS_QOS = dds.LATCHED
FEEDBACK_GRACE_S = 1.0


def action_names(action: str) -> dict[str, str]:
    """The five entities of a ROS 2 action named ``action`` (a resolved name, e.g. ``/ask``)."""
    base = f"{action}/_action/"
    return {name: base + name for name in ("send_goal", "get_result", "cancel_goal", "feedback", "status")}


@dataclass
class _Goal:
    goal_id: bytes
    accepted: float  # ROS time, seconds
    status: int = A.STATUS_ACCEPTED
    cancel_requested: bool = False
    result: object | None = None  # Ask_Result, once terminal
    finished: float = 0.0  # time.monotonic() at the end
    waiting: list[Pending] = field(default_factory=list)  # get_result requests before the end


class DdsAskServer:
    """Serves the Ask action of ``core`` on ``transport`` under the resolved name ``action``."""

    def __init__(self, transport: dds.DdsTransport, core: AgentNodeCore, action: str = "/ask"):
        A.register_types()
        self.core = core
        names = action_names(action)
        self._lock = threading.RLock()
        self._goals: dict[bytes, _Goal] = {}
        self._feedback = transport.publisher(names["feedback"], f"{A.ACTION}_FeedbackMessage")
        self._status = transport.publisher(names["status"], A.STATUS, STATUS_QOS)
        self._services = [
            DdsServiceServer(transport, names["send_goal"], f"{A.ACTION}_SendGoal", self._on_send_goal),
            DdsServiceServer(transport, names["get_result"], f"{A.ACTION}_GetResult", self._on_get_result),
            DdsServiceServer(transport, names["cancel_goal"], A.CANCEL, self._on_cancel),
        ]
        self._publish_status()

    # -- services ----------------------------------------------------------------------------
    def _on_send_goal(self, request, pending: Pending):
        """Every goal with a new id is accepted; one the core cannot run (no frame yet, unknown
        tools, an empty question) ends at once, aborted, its result saying why: a client learns
        the reason, which a bare rejection would not tell it (the rclpy node does the same)."""
        goal_id = bytes(request.goal_id.uuid)
        now = self.core.now()
        with self._lock:
            self._forget_old()
            if goal_id in self._goals:
                return A.msg("SendGoal_Response", accepted=False, stamp=A.time_msg(now))
            self._goals[goal_id] = _Goal(goal_id, now)
        self._publish_status()
        g = request.goal
        self.core.submit_goal(AskGoal(  # one that cannot run ends at once, through on_done
            question=g.question, frame_stamp=A.seconds(g.frame_stamp), tools=list(g.tools), max_steps=int(g.max_steps),
            on_step=lambda n, step, ms: self._on_step(goal_id, n, step, ms),
            cancelled=lambda: self._goals[goal_id].cancel_requested,
            on_started=lambda: self._set_status(goal_id, A.STATUS_EXECUTING),
            on_done=lambda record, target, stamp, frame_id: self._on_done(goal_id, record, target, stamp, frame_id)))
        return A.msg("SendGoal_Response", accepted=True, stamp=A.time_msg(now))

    def _on_get_result(self, request, pending: Pending):
        goal_id = bytes(request.goal_id.uuid)
        with self._lock:
            entry = self._goals.get(goal_id)
            if entry is None:
                return A.msg("GetResult_Response", status=A.STATUS_UNKNOWN, result=self._empty_result())
            if entry.result is None:
                entry.waiting.append(pending)
                return None
            return A.msg("GetResult_Response", status=entry.status, result=entry.result)

    def _on_cancel(self, request, pending: Pending):
        """action_msgs/srv/CancelGoal: a zero id means every goal; a non-zero stamp adds every
        goal accepted at or before it (rcl_action's rules)."""
        goal_id = bytes(request.goal_info.goal_id.uuid)
        before = A.seconds(request.goal_info.stamp)
        everyone = not any(goal_id)
        canceling, terminated = [], False
        with self._lock:
            if not everyone and goal_id not in self._goals and not before:
                return self._cancel_response(A.CANCEL_UNKNOWN_GOAL, [])
            for entry in self._goals.values():
                chosen = everyone and not before or entry.goal_id == goal_id or (before and entry.accepted <= before)
                if not chosen:
                    continue
                if entry.status in A.TERMINAL:
                    terminated = terminated or entry.goal_id == goal_id
                    continue
                entry.cancel_requested = True
                entry.status = A.STATUS_CANCELING
                canceling.append(entry)
        if canceling:
            self._publish_status()
        code = A.CANCEL_NONE if canceling else (A.CANCEL_TERMINATED if terminated else A.CANCEL_REJECTED)
        return self._cancel_response(code, canceling)

    def _cancel_response(self, code: int, entries: list[_Goal]):
        info = M.msg_type("action_msgs/msg/GoalInfo")
        return M.msg_type(f"{A.CANCEL}_Response")(
            return_code=code, goals_canceling=[info(goal_id=A.uuid_msg(e.goal_id), stamp=A.time_msg(e.accepted))
                                               for e in entries])

    # -- the episode's callbacks (worker thread) ----------------------------------------------
    def _on_step(self, goal_id: bytes, number: int, step: dict, elapsed_ms: float) -> None:
        message = A.msg("FeedbackMessage", goal_id=A.uuid_msg(goal_id), feedback=A.step_feedback(number, step, elapsed_ms))
        try:
            self._feedback.publish(message)
        except dds.DdsError as e:  # a slow feedback reader must not end the episode
            self.core.log("warn", f"feedback not sent: {e}")

    def _on_done(self, goal_id: bytes, record: dict, target, stamp: float, frame_id: str) -> None:
        result = A.result_msg(record, target, stamp, frame_id)
        status = (A.STATUS_CANCELED if record.get("stop_reason") == "cancelled"
                  else A.STATUS_SUCCEEDED if result.success else A.STATUS_ABORTED)
        with self._lock:
            entry = self._goals[goal_id]
            entry.result, entry.status, entry.finished = result, status, time.monotonic()
            waiting, entry.waiting = entry.waiting, []
        self._publish_status()
        for pending in waiting:
            pending.reply(A.msg("GetResult_Response", status=status, result=result))

    def _set_status(self, goal_id: bytes, status: int) -> None:
        with self._lock:
            entry = self._goals[goal_id]
            if entry.status == A.STATUS_ACCEPTED:
                entry.status = status
        self._publish_status()

    # -- helpers ------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        status, info = M.msg_type("action_msgs/msg/GoalStatus"), M.msg_type("action_msgs/msg/GoalInfo")
        with self._lock:
            entries = [status(goal_info=info(goal_id=A.uuid_msg(e.goal_id), stamp=A.time_msg(e.accepted)), status=e.status)
                       for e in self._goals.values()]
        try:
            self._status.publish(M.msg_type(A.STATUS)(status_list=entries))
        except dds.DdsError as e:
            self.core.log("warn", f"goal status not sent: {e}")

    def _forget_old(self) -> None:
        now = time.monotonic()
        done = [e for e in self._goals.values() if e.result is not None]
        for e in done:
            if now - e.finished > RESULT_KEEP_S or len(self._goals) > MAX_GOALS:
                del self._goals[e.goal_id]

    @staticmethod
    def _empty_result():
        return A.result_msg({}, None, 0.0, "")

    def close(self) -> None:
        for service in self._services:
            service.close()
        self._feedback.close()
        self._status.close()


class DdsAskClient:
    """Sends Ask goals: ``ask(question, ...)`` returns (status, result) and calls
    ``on_feedback(feedback)`` for each step as it arrives. ``cancel(goal_id)`` asks to stop one."""

    def __init__(self, transport: dds.DdsTransport, action: str = "/ask"):
        A.register_types()
        names = action_names(action)
        self._send = DdsServiceClient(transport, names["send_goal"], f"{A.ACTION}_SendGoal")
        self._result = DdsServiceClient(transport, names["get_result"], f"{A.ACTION}_GetResult")
        self._cancel = DdsServiceClient(transport, names["cancel_goal"], A.CANCEL)
        self._handlers: dict[bytes, list] = {}  # goal id -> [on_feedback, feedback count]
        self._arrived = threading.Condition()
        self._feedback = transport.subscribe(names["feedback"], f"{A.ACTION}_FeedbackMessage", self._on_feedback)

    def wait_for_server(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(c.wait_for_service(max(0.0, deadline - time.monotonic())) for c in (self._send, self._result, self._cancel)) \
            and self._feedback.wait_for_publishers(1, max(0.0, deadline - time.monotonic()))

    def _on_feedback(self, message) -> None:
        with self._arrived:
            handler = self._handlers.get(bytes(message.goal_id.uuid))
        if handler is None:
            return
        handler[0](message.feedback)
        with self._arrived:
            handler[1] += 1
            self._arrived.notify_all()

    def send_goal(self, question: str, frame_stamp: float = 0.0, tools: list[str] | None = None, max_steps: int = 0,
                  on_feedback=None, timeout: float = 10.0) -> tuple[bytes, bool]:
        """(goal id, accepted). Feedback for it goes to ``on_feedback`` from now on."""
        goal_id = uuid.uuid4().bytes
        self._handlers[goal_id] = [on_feedback or (lambda feedback: None), 0]
        goal = A.msg("Goal", question=M.text_field(question), frame_stamp=A.time_msg(frame_stamp), tools=list(tools or []),
                     max_steps=int(max_steps))
        response = self._send.call(A.msg("SendGoal_Request", goal_id=A.uuid_msg(goal_id), goal=goal), timeout)
        if not response.accepted:
            self._handlers.pop(goal_id, None)
        return goal_id, bool(response.accepted)

    def get_result(self, goal_id: bytes, timeout: float = 300.0):
        """(status, Ask_Result): blocks until the goal ends (or ``timeout``). Feedback and result
        travel on different topics, so a step's feedback may arrive just after the result: it
        waits up to ``FEEDBACK_GRACE_S`` for the result's step count before forgetting the goal."""
        try:
            response = self._result.call(A.msg("GetResult_Request", goal_id=A.uuid_msg(goal_id)), timeout)
            with self._arrived:
                handler = self._handlers.get(goal_id)
                if handler is not None:
                    self._arrived.wait_for(lambda: handler[1] >= response.result.steps, FEEDBACK_GRACE_S)
        finally:
            with self._arrived:
                self._handlers.pop(goal_id, None)
        return int(response.status), response.result

    def cancel(self, goal_id: bytes, timeout: float = 10.0) -> int:
        """The CancelGoal return code (``ask_action.CANCEL_*``)."""
        info = M.msg_type("action_msgs/msg/GoalInfo")(goal_id=A.uuid_msg(goal_id), stamp=A.time_msg(0.0))
        response = self._cancel.call(M.msg_type(f"{A.CANCEL}_Request")(goal_info=info), timeout)
        return int(response.return_code)

    def close(self) -> None:
        self._feedback.close()
        for client in (self._send, self._result, self._cancel):
            client.close()
