"""``pixelis ask "question"``: ask a running agent node, as a ROS 2 peer would.

It sends a goal of the node's ``ask`` action (``pixelis_interfaces/action/Ask``) over the ROS 2
wire (Cyclone DDS, no ROS install needed), prints each step's feedback as it comes and then the
answer; ``--json`` prints the result instead. Ctrl-C cancels the goal (the node stops between
steps) and still prints what came back. A node that does not serve the action (an rclpy node
without ``pixelis_interfaces`` built) is asked on its ``query`` topic, and the answer read from
``answer``; ``via`` in the result says which.

``--image-topic T`` pins the question to the newest frame on ``T`` when it is asked (the goal's
``frame_stamp``): the node answers about that frame even if newer ones arrive while it works.
``--image FILE`` first publishes FILE, JPEG-compressed, on the image topic's ``/compressed``
(a camera for a quick test).
"""

from __future__ import annotations

import json
import signal
import threading
import time

from pixelis_ros.node.config import ConfigError

# The writer sees the node's reader before that reader knows the writer; a best-effort reader
# drops samples from a writer it does not know yet, so the one frame waits for discovery to settle.
DISCOVERY_SETTLE_S = 0.5
STATUS_NAMES = {4: "succeeded", 5: "canceled", 6: "aborted", 0: "unknown"}


def _feedback_entry(f) -> dict:
    return {"step": int(f.step), "operation": f.operation, "arguments": _json(f.arguments_json),
            "observation": f.observation, "error": f.error, "elapsed_ms": round(float(f.elapsed_ms), 1)}


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _print_feedback(entry: dict) -> None:
    args = json.dumps(entry["arguments"], ensure_ascii=False) if entry["arguments"] else ""
    said = f"error: {entry['error']}" if entry["error"] else entry["observation"]
    print(f"[{entry['elapsed_ms']:7.0f} ms] step {entry['step']}: {entry['operation']} {args} -> {said}", flush=True)


def _result_entry(status: str, result, steps: list[dict], via: str) -> dict:
    trace = _json(result.trace_json) if result.trace_json else None
    target = None
    if result.has_target:
        p, h = result.target.point, result.target.header
        target = {"x": p.x, "y": p.y, "z": p.z, "frame_id": h.frame_id, "stamp": h.stamp.sec + h.stamp.nanosec * 1e-9}
    return {"answer": result.answer or None, "success": bool(result.success), "status": status,
            "stop_reason": result.stop_reason, "error": result.error or None, "target": target, "steps": steps,
            "latency_ms": round(float(result.latency_ms), 2), "queue_ms": round(float(result.queue_ms), 2),
            "trace": trace, "via": via}


def _newest_stamp(t, topic: str, timeout: float) -> float:
    from pixelis_ros import messages as M
    from pixelis_ros.ros import dds

    got = threading.Event()
    stamp = []

    def on_image(msg):
        stamp[:] = [M.stamp_seconds(msg.header)]
        got.set()

    sub = t.subscribe(topic, "sensor_msgs/msg/Image", on_image, dds.SENSOR_DATA)
    try:
        if not got.wait(timeout):
            raise ConfigError(f"--image-topic {topic}: no image within {timeout:g} s")
        return stamp[0]
    finally:
        sub.close()


def _publish_image(t, topic: str, path: str, timeout: float) -> float:
    """Publish an image file as a camera frame stamped now; its stamp."""
    from pixelis_ros import messages as M
    from pixelis_ros.media import load_frames
    from pixelis_ros.ros import dds

    frame = load_frames(image=path)[-1]
    # JPEG on <topic>/compressed, as image_transport names it: a few datagrams instead of the
    # hundreds of fragments of a raw frame, any one of which a best-effort reader may lose.
    topic = topic.rstrip("/") + "/compressed"
    pub = t.publisher(topic, "sensor_msgs/msg/CompressedImage", dds.DEFAULT.replace(depth=1))
    if not pub.wait_for_subscribers(1, timeout):
        raise ConfigError(f"--image: nobody subscribes to {topic} within {timeout:g} s; is the agent node running?")
    time.sleep(DISCOVERY_SETTLE_S)
    stamp = time.time()
    pub.publish(M.compressed_image_msg(frame.image, stamp, "pixelis_ask", quality=95))
    pub.wait_for_acknowledgments(timeout)
    return stamp


def _ask_topic(t, names, question: str, timeout: float) -> dict:
    """The query/answer topics: the fallback when no action server answers."""
    from pixelis_ros import messages as M

    answers, got = [], threading.Event()

    def on_answer(msg):
        record = _json(msg.data)
        if isinstance(record, dict) and record.get("query") == question:
            answers.append(record)
            got.set()

    sub = t.subscribe(names("answer"), "std_msgs/msg/String", on_answer)
    pub = t.publisher(names("query"), "std_msgs/msg/String")
    try:
        if not (pub.wait_for_subscribers(1, timeout) and sub.wait_for_publishers(1, timeout)):
            raise ConfigError(f"no agent node serves {names('ask')} or reads {names('query')} within {timeout:g} s "
                              "(is it running, on this ROS_DOMAIN_ID, in this namespace?)")
        pub.publish(M.string_msg(question))
        if not got.wait(timeout + 300):
            raise ConfigError(f"no answer on {names('answer')}")
    finally:
        sub.close()
        pub.close()
    record = answers[0]
    trace = record.get("trace") or {}
    action = record.get("action")
    return {"answer": record.get("answer"), "success": record.get("answer") is not None and not record.get("error"),
            "status": "succeeded" if record.get("answer") is not None else "aborted",
            "stop_reason": record.get("stop_reason", ""), "error": record.get("error"),
            "target": {"x": action["point_2d"][0], "y": action["point_2d"][1], "z": 0.0,
                       "frame_id": (record.get("frame") or {}).get("frame_id", ""),
                       "stamp": (record.get("frame") or {}).get("stamp", 0.0)} if action else None,
            "steps": [], "latency_ms": record.get("latency_ms", 0.0), "queue_ms": record.get("queue_ms", 0.0),
            "trace": trace, "via": "topic"}


def cmd_ask(args) -> dict:
    from pixelis_ros.cli.node import transport
    from pixelis_ros.ros.dds_action import DdsAskClient
    from pixelis_ros.ros.dds_nodes import Names

    names = Names(args.namespace, {"ask": args.action} if args.action else {})
    tools = [n.strip() for n in args.tools.split(",") if n.strip()] if args.tools else []
    show = (lambda entry: None) if args.json else _print_feedback
    with transport(args) as t:
        stamp = 0.0
        if args.image:
            stamp = _publish_image(t, args.image_topic or names("image"), args.image, args.wait)
        elif args.image_topic:
            stamp = _newest_stamp(t, args.image_topic, args.wait)
        client = DdsAskClient(t, names("ask"))
        try:
            if not client.wait_for_server(args.wait):
                return _ask_topic(t, names, args.question, args.wait)
            steps: list[dict] = []

            def on_feedback(f):
                steps.append(_feedback_entry(f))
                show(steps[-1])

            goal_id, accepted = client.send_goal(args.question, frame_stamp=stamp, tools=tools, max_steps=args.max_steps,
                                                 on_feedback=on_feedback, timeout=args.wait)
            if not accepted:
                raise ConfigError("the node refused the goal (its id was in use: send it again)")
            previous = signal.signal(signal.SIGINT, lambda *_: client.cancel(goal_id))  # Ctrl-C: stop between steps
            try:
                status, result = client.get_result(goal_id, timeout=args.timeout)
            finally:
                signal.signal(signal.SIGINT, previous)
            return _result_entry(STATUS_NAMES.get(status, str(status)), result, steps, "action")
        except TimeoutError as e:
            raise ConfigError(str(e)) from None
        finally:
            client.close()


def add_ask_command(sub) -> None:
    p = sub.add_parser("ask", help="ask a running agent node a question (its ask action, else its query topic)")
    p.add_argument("question")
    p.add_argument("--transport", choices=["dds"], default="dds", help="the ROS 2 wire over Cyclone DDS")
    p.add_argument("--namespace", default="", help="the agent's namespace (default: /)")
    p.add_argument("--action", help="the action's name if remapped (default: <namespace>/ask)")
    p.add_argument("--image-topic", help="answer about the newest frame on this topic when asked (goal frame_stamp)")
    p.add_argument("--image", help="publish this image file on the image topic first (a quick test without a camera)")
    p.add_argument("--tools", help="comma-separated tools the policy may use (default: all)")
    p.add_argument("--max-steps", type=int, default=0, help="step cap for this question (0: the node's)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the node (then the query topic is tried)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    p.add_argument("--domain", type=int, help="DDS domain (default: $ROS_DOMAIN_ID or 0)")
    p.add_argument("--localhost", action="store_true", help="keep DDS traffic on 127.0.0.1")
    p.add_argument("--json", action="store_true", help="print the result as JSON (no feedback lines)")
    p.set_defaults(func=cmd_ask)
