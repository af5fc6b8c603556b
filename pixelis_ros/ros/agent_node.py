"""agent_node: the rclpy lifecycle node, a thin adapter over ``AgentNodeCore``.

It configures and activates itself by default (``autostart``), so a plain ``ros2 launch`` needs
no lifecycle manager; the policy is loaded on activate and freed on deactivate. Images arrive
with sensor-data QoS (keep-last 1, reliability a parameter); callbacks only hand messages to the
core, which decodes into the FrameBuffer and runs episodes on its own worker thread. Outputs
carry the header of the frame the episode looked at.

This is the only module (with other ``*_node`` modules) that imports rclpy. rclpy cannot be
installed on our CI machines: the same core runs over the DDS wire (``dds``) in the tests.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosidl_runtime_py.utilities import get_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from vision_msgs.msg import Detection2DArray

from pixelis_ros.node.agent_core import AgentNodeCore
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
        self.core = AgentNodeCore(config, self._publish, clock=lambda: self.get_clock().now().nanoseconds / 1e9)
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
        return TransitionCallbackReturn.SUCCESS

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
