"""agent_node: the rclpy lifecycle node, a thin adapter over ``AgentNodeCore``.

It configures and activates itself by default (``autostart``), so a plain ``ros2 launch`` needs
no lifecycle manager; the policy is loaded on activate and freed on deactivate. Images arrive
with sensor-data QoS (keep-last 1, reliability a parameter); callbacks only hand messages to the
core, which decodes into the FrameBuffer and runs episodes on its own worker thread. Outputs
carry the header of the frame the episode looked at.

Queries come on the ``query`` topic (answers on ``answer``) and as goals of the ``ask`` action
(``pixelis_interfaces/action/Ask``: a feedback per step, cancel between steps) when the
``pixelis_interfaces`` package is built in the workspace; without it the node says so once and
serves the topics. Every name is remappable the ROS way (``--ros-args -r image:=/camera/image_raw``,
or the launch files' arguments). The core logs through the node's logger.

rclpy is imported only by ``pixelis_ros/ros/*_node.py`` (and the launch files). rclpy cannot be
installed on our CI machines: the same core runs over the DDS wire (``dds_nodes``) in the tests,
where the action protocol is ``dds_action``'s.
"""

from __future__ import annotations

import dataclasses
import sys
import threading

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosidl_runtime_py.utilities import get_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray

from pixelis_ros import ask_action as A
from pixelis_ros.node.agent_core import AgentNodeCore, AskGoal
from pixelis_ros.node.config import AgentNodeConfig, ConfigError, parameter_docs

OUTPUTS = {"answer": String, "detections": Detection2DArray, "target": PointStamped, "annotated": Image,
           "diagnostics": DiagnosticArray}


def to_ros(value, ros_msg):
    """Copy a rosbags message dataclass into an rclpy message of the same type, field by field."""
    for name in value.__dataclass_fields__:
        if name == "__msgtype__":
            continue
        v = getattr(value, name)
        if dataclasses.is_dataclass(v):
            to_ros(v, getattr(ros_msg, name))
        elif isinstance(v, list) and v and dataclasses.is_dataclass(v[0]):
            setattr(ros_msg, name, [to_ros(item, get_message(item.__msgtype__)()) for item in v])
        elif isinstance(v, np.ndarray):
            setattr(ros_msg, name, v.tobytes() if v.dtype == np.uint8 else v.tolist())
        else:
            setattr(ros_msg, name, v)
    return ros_msg


class AgentNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("pixelis_agent", **kwargs)
        docs = parameter_docs()
        for field in dataclasses.fields(AgentNodeConfig):
            if field.name != "use_sim_time":  # every rclpy node declares it (and its clock follows /clock)
                self.declare_parameter(field.name, field.default, ParameterDescriptor(description=docs.get(field.name, "")))
        self.declare_parameter("autostart", True, ParameterDescriptor(description="configure and activate on start"))
        self.core: AgentNodeCore | None = None
        self._pubs: dict = {}
        self._subs: list = []
        self._action: ActionServer | None = None

    def _config(self) -> AgentNodeConfig:
        names = [f.name for f in dataclasses.fields(AgentNodeConfig) if f.name != "use_sim_time"]
        # use_sim_time stays false in the core: the clock it is given (this node's) follows /clock already.
        return AgentNodeConfig.from_parameters({n: self.get_parameter(n).value for n in names})

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            config = self._config()
        except ConfigError as e:
            self.get_logger().error(str(e))
            return TransitionCallbackReturn.FAILURE
        self.core = AgentNodeCore(config, self._publish, clock=lambda: self.get_clock().now().nanoseconds / 1e9,
                                  log=self._log)
        self._pubs = {name: self.create_lifecycle_publisher(cls, name, 10) for name, cls in OUTPUTS.items()}
        image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                               reliability=ReliabilityPolicy.RELIABLE if config.image_reliability == "reliable"
                               else ReliabilityPolicy.BEST_EFFORT)
        self._subs = [
            self.create_subscription(Image, "image", self.core.on_image, image_qos),
            self.create_subscription(CompressedImage, "image/compressed", self.core.on_image, image_qos),
            self.create_subscription(Image, "depth", self.core.on_depth, image_qos),
            self.create_subscription(CameraInfo, "camera_info", self.core.on_camera_info, qos_profile_sensor_data),
            self.create_subscription(String, "query", lambda msg: self.core.on_query(msg.data), 10),
        ]
        self._action = self._serve_action()
        names = [self.resolve_topic_name(n) for n in ("image", "image/compressed", "depth", "camera_info", "query")]
        self.get_logger().info(f"configured: in {', '.join(names)}; out "
                               f"{', '.join(self.resolve_topic_name(n) for n in OUTPUTS)}"
                               + (f"; action {self.resolve_topic_name('ask')}" if self._action else ""))
        return TransitionCallbackReturn.SUCCESS

    def _serve_action(self) -> ActionServer | None:
        """The ``ask`` action, when ``pixelis_interfaces`` is built (else topics only)."""
        try:
            from pixelis_interfaces.action import Ask
        except ImportError:
            self.get_logger().warning("pixelis_interfaces is not built in this workspace: the ask action is off "
                                      "(build it with colcon, see the README); the query topic still works")
            return None
        self._ask_type = Ask
        return ActionServer(self, Ask, "ask", execute_callback=self._execute, goal_callback=lambda goal: GoalResponse.ACCEPT,
                            cancel_callback=lambda handle: CancelResponse.ACCEPT, callback_group=ReentrantCallbackGroup())

    def _execute(self, handle):
        """One goal: queued to the core's worker like a query; this executor thread waits for it."""
        goal, done, out = handle.request, threading.Event(), {}
        feedback = self._ask_type.Feedback

        def on_done(record, target, stamp, frame_id):
            out["result"] = A.result_msg(record, target, stamp, frame_id)
            out["cancelled"] = record.get("stop_reason") == "cancelled"
            done.set()

        self.core.submit_goal(AskGoal(  # one that cannot run ends at once, through on_done
            question=goal.question, frame_stamp=goal.frame_stamp.sec + goal.frame_stamp.nanosec * 1e-9,
            tools=list(goal.tools), max_steps=int(goal.max_steps),
            on_step=lambda n, step, ms: handle.publish_feedback(to_ros(A.step_feedback(n, step, ms), feedback())),
            cancelled=lambda: handle.is_cancel_requested, on_done=on_done))
        done.wait()
        result = to_ros(out["result"], self._ask_type.Result())
        if out["cancelled"]:
            handle.canceled()
        elif result.success:
            handle.succeed()
        else:
            handle.abort()
        return result

    def _log(self, level: str, message: str) -> None:
        logger = self.get_logger()
        {"info": logger.info, "warn": logger.warning}.get(level, logger.error)(message)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self.core.activate()  # loads the policy
        except ConfigError as e:
            self.get_logger().error(str(e))
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.core.deactivate()  # frees the policy
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        if self._action is not None:
            self._action.destroy()
            self._action = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._subs, self._pubs, self.core = [], {}, None
        return TransitionCallbackReturn.SUCCESS

    def _publish(self, topic: str, msg) -> None:
        pub = self._pubs.get(topic)
        if pub is not None:
            pub.publish(to_ros(msg, OUTPUTS[topic]()))


def main(args=None) -> int:
    rclpy.init(args=args)
    node = AgentNode()
    if node.get_parameter("autostart").value:
        node.trigger_configure()
        node.trigger_activate()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
