"""The agent and sim nodes on the ROS 2 wire without rclpy: their cores wired to a DdsTransport.

Topic names and QoS are those of the rclpy nodes (``agent_node.py``, ``sim_node.py``): relative
names resolved in ``namespace``, camera images with keep-last-1 sensor-data QoS (reliability a
parameter), everything else reliable keep-last-10. To a ROS 2 graph running rmw_cyclonedds on
the same domain these are ordinary nodes' topics (``ros2 topic echo /answer`` works). Used by
``pixelis node agent|sim --transport dds`` and ``pixelis sim loop``.
"""

from __future__ import annotations

from pixelis_ros.node.agent_core import TOPICS as AGENT_OUTPUTS, AgentNodeCore
from pixelis_ros.node.config import AgentNodeConfig, SimNodeConfig
from pixelis_ros.node.sim_core import INPUTS as SIM_INPUTS, TOPICS as SIM_OUTPUTS, SimNodeCore
from pixelis_ros.ros import dds

CAMERA_TOPICS = ("image", "depth", "camera_info", "clock")


def resolve(namespace: str, name: str) -> str:
    """``resolve("/robot", "image")`` -> ``/robot/image``; ``""`` or ``"/"`` -> ``/image``."""
    return "/" + "/".join(part for part in (namespace.strip("/"), name) if part)


class _Outputs:
    """``publish(topic, msg)`` onto one DDS publisher per output topic."""

    def __init__(self, transport: dds.DdsTransport, namespace: str, types: dict[str, str], qos: dict[str, dds.QosProfile]):
        self.publishers = {name: transport.publisher(resolve(namespace, name), type_name, qos.get(name, dds.DEFAULT))
                           for name, type_name in types.items()}

    def __call__(self, topic: str, msg) -> None:
        self.publishers[topic].publish(msg)


class DdsAgentNode:
    """AgentNodeCore on a DdsTransport. ``start()`` activates the core (loads the policy) and
    only then subscribes, so a peer that sees the subscriptions knows the node can answer."""

    def __init__(self, transport: dds.DdsTransport, config: AgentNodeConfig, namespace: str = ""):
        self.transport, self.namespace = transport, namespace
        self.outputs = _Outputs(transport, namespace, AGENT_OUTPUTS, {})
        self.core = AgentNodeCore(config, self.outputs)
        self.subscriptions: list[dds.DdsSubscription] = []

    def start(self) -> None:
        self.core.activate()
        t, core, ns = self.transport, self.core, self.namespace
        image_qos = dds.SENSOR_DATA.replace(depth=1, reliability=core.config.image_reliability)
        self.subscriptions = [
            t.subscribe(resolve(ns, "image"), "sensor_msgs/msg/Image", core.on_image, image_qos),
            t.subscribe(resolve(ns, "image/compressed"), "sensor_msgs/msg/CompressedImage", core.on_image, image_qos),
            t.subscribe(resolve(ns, "depth"), "sensor_msgs/msg/Image", core.on_depth, image_qos),
            t.subscribe(resolve(ns, "camera_info"), "sensor_msgs/msg/CameraInfo", core.on_camera_info, dds.SENSOR_DATA),
            t.subscribe(resolve(ns, "query"), "std_msgs/msg/String", lambda msg: core.on_query(msg.data), dds.DEFAULT,
                        on_error=lambda exc, raw: core.on_bad_query(f"unreadable query message: {exc}")),
        ]
        if core.config.use_sim_time:  # /clock is global in ROS: not namespaced
            self.subscriptions.append(t.subscribe("/clock", "rosgraph_msgs/msg/Clock", core.on_clock, dds.DEFAULT.replace(depth=1)))

    def stop(self) -> None:
        for sub in self.subscriptions:
            sub.close()
        self.subscriptions = []
        self.core.deactivate()


class DdsSimNode:
    """SimNodeCore on a DdsTransport: streams the camera, asks, listens for answers and gaze."""

    def __init__(self, transport: dds.DdsTransport, config: SimNodeConfig, namespace: str = ""):
        camera_qos = dds.DEFAULT.replace(depth=1)  # reliable: a subscriber asking for best effort matches too
        self.outputs = _Outputs(transport, namespace, SIM_OUTPUTS, {name: camera_qos for name in CAMERA_TOPICS})
        self.core = SimNodeCore(config, self.outputs, settle=self._settle)
        self.subscriptions = [
            transport.subscribe(resolve(namespace, "answer"), SIM_INPUTS["answer"], lambda msg: self.core.on_answer(msg.data)),
            transport.subscribe(resolve(namespace, "gaze"), SIM_INPUTS["gaze"], self.core.on_gaze),
        ]

    def _settle(self) -> None:
        for name in CAMERA_TOPICS:
            self.outputs.publishers[name].wait_for_acknowledgments(5.0)

    def wait_for_agent(self, timeout: float) -> bool:
        """Whether an agent subscribes to the camera and the queries and publishes answers."""
        return (self.outputs.publishers["image"].wait_for_subscribers(1, timeout)
                and self.outputs.publishers["query"].wait_for_subscribers(1, timeout)
                and self.subscriptions[0].wait_for_publishers(1, timeout))
