"""The agent and sim nodes on the ROS 2 wire without rclpy: their cores wired to a DdsTransport.

Topic names and QoS are those of the rclpy nodes (``agent_node.py``, ``sim_node.py``): relative
names resolved in ``namespace`` and then remapped as ``--ros-args -r from:=to`` does (``Names``),
camera images with keep-last-1 sensor-data QoS (reliability a parameter), everything else
reliable keep-last-10. The agent also serves the ``ask`` action (``dds_action``). To a ROS 2
graph running rmw_cyclonedds on the same domain these are ordinary nodes' topics and actions
(``ros2 topic echo /answer``, ``ros2 action send_goal /ask ...`` work). Used by ``pixelis node
agent|sim --transport dds`` and ``pixelis sim loop``.
"""

from __future__ import annotations

from pixelis_ros.node.agent_core import TOPICS as AGENT_OUTPUTS, AgentNodeCore
from pixelis_ros.node.config import AgentNodeConfig, ConfigError, SimNodeConfig
from pixelis_ros.node.sim_core import INPUTS as SIM_INPUTS, TOPICS as SIM_OUTPUTS, SimNodeCore
from pixelis_ros.ros import dds
from pixelis_ros.ros.dds_action import DdsAskServer

CAMERA_TOPICS = ("image", "depth", "camera_info", "clock")


def resolve(namespace: str, name: str) -> str:
    """``resolve("/robot", "image")`` -> ``/robot/image``; ``""`` or ``"/"`` -> ``/image``;
    an absolute ``name`` stays as it is."""
    if name.startswith("/"):
        return name
    return "/" + "/".join(part for part in (namespace.strip("/"), name) if part)


class Names:
    """A node's topic names: relative names resolved in the namespace, then remapped.

    ``remap`` holds ``from:=to`` rules as ROS 2 reads them: ``from`` and ``to`` are resolved in the
    namespace too, and a rule applies to the topic whose resolved name equals its ``from``
    (``image:=/camera/image_raw`` and ``/ns/image:=/camera/image_raw`` both move ``image``)."""

    def __init__(self, namespace: str = "", remap: dict[str, str] | None = None):
        self.namespace = namespace
        self.rules = {resolve(namespace, a): resolve(namespace, b) for a, b in (remap or {}).items()}

    def __call__(self, name: str) -> str:
        full = resolve(self.namespace, name)
        return self.rules.get(full, full)

    def unused(self, names) -> list[str]:
        """Rules whose ``from`` is none of ``names`` (a typo would otherwise pass silently)."""
        known = {resolve(self.namespace, n) for n in names}
        return sorted(a for a in self.rules if a not in known)


class _Outputs:
    """``publish(topic, msg)`` onto one DDS publisher per output topic."""

    def __init__(self, transport: dds.DdsTransport, names: Names, types: dict[str, str], qos: dict[str, dds.QosProfile]):
        self.publishers = {name: transport.publisher(names(name), type_name, qos.get(name, dds.DEFAULT))
                           for name, type_name in types.items()}

    def __call__(self, topic: str, msg) -> None:
        self.publishers[topic].publish(msg)


AGENT_INPUTS = ("image", "image/compressed", "depth", "camera_info", "query")
ACTION = "ask"


class DdsAgentNode:
    """AgentNodeCore on a DdsTransport. ``start()`` activates the core (loads the policy) and
    only then subscribes and serves the action, so a peer that sees them knows the node can
    answer. ``remap``: ``{from: to}`` topic rules (``Names``)."""

    def __init__(self, transport: dds.DdsTransport, config: AgentNodeConfig, namespace: str = "",
                 remap: dict[str, str] | None = None, log=None):
        self.transport = transport
        remap = dict(remap or {})
        if "image" in remap and "image/compressed" not in remap:  # image_transport's pairing, as in agent.launch.py
            remap["image/compressed"] = remap["image"].rstrip("/") + "/compressed"
        self.names = Names(namespace, remap)
        unused = self.names.unused((*AGENT_INPUTS, *AGENT_OUTPUTS, ACTION, "/clock"))
        if unused:
            raise ConfigError(f"remapping of {', '.join(unused)}: the agent has no such topic; it has "
                              f"{', '.join((*AGENT_INPUTS, *AGENT_OUTPUTS))} and the action {ACTION}")
        self.outputs = _Outputs(transport, self.names, AGENT_OUTPUTS, {})
        self.core = AgentNodeCore(config, self.outputs, **({"log": log} if log else {}))
        self.subscriptions: list[dds.DdsSubscription] = []
        self.action: DdsAskServer | None = None

    def start(self) -> None:
        self.core.activate()
        t, core, names = self.transport, self.core, self.names
        image_qos = dds.SENSOR_DATA.replace(depth=1, reliability=core.config.image_reliability)
        self.subscriptions = [
            t.subscribe(names("image"), "sensor_msgs/msg/Image", core.on_image, image_qos),
            t.subscribe(names("image/compressed"), "sensor_msgs/msg/CompressedImage", core.on_image, image_qos),
            t.subscribe(names("depth"), "sensor_msgs/msg/Image", core.on_depth, image_qos),
            t.subscribe(names("camera_info"), "sensor_msgs/msg/CameraInfo", core.on_camera_info, dds.SENSOR_DATA),
            t.subscribe(names("query"), "std_msgs/msg/String", lambda msg: core.on_query(msg.data), dds.DEFAULT,
                        on_error=lambda exc, raw: core.on_bad_query(f"unreadable query message: {exc}")),
        ]
        if core.config.use_sim_time:  # /clock is global in ROS: not namespaced
            self.subscriptions.append(t.subscribe(names("/clock"), "rosgraph_msgs/msg/Clock", core.on_clock,
                                                  dds.DEFAULT.replace(depth=1)))
        self.action = DdsAskServer(t, core, names(ACTION))
        core.log("info", "topics: in " + ", ".join(names(n) for n in AGENT_INPUTS)
                 + "; out " + ", ".join(names(n) for n in AGENT_OUTPUTS) + f"; action {names(ACTION)}")

    def stop(self) -> None:
        if self.action is not None:
            self.action.close()
            self.action = None
        for sub in self.subscriptions:
            sub.close()
        self.subscriptions = []
        self.core.deactivate()


class DdsSimNode:
    """SimNodeCore on a DdsTransport: streams the camera, asks, listens for answers and gaze."""

    def __init__(self, transport: dds.DdsTransport, config: SimNodeConfig, namespace: str = "",
                 remap: dict[str, str] | None = None):
        names = Names(namespace, remap)
        unused = names.unused((*SIM_INPUTS, *SIM_OUTPUTS))
        if unused:
            raise ConfigError(f"remapping of {', '.join(unused)}: the sim node has no such topic; it has "
                              f"{', '.join((*SIM_INPUTS, *SIM_OUTPUTS))}")
        camera_qos = dds.DEFAULT.replace(depth=1)  # reliable: a subscriber asking for best effort matches too
        self.outputs = _Outputs(transport, names, SIM_OUTPUTS, {name: camera_qos for name in CAMERA_TOPICS})
        self.core = SimNodeCore(config, self.outputs, settle=self._settle)
        self.subscriptions = [
            transport.subscribe(names("answer"), SIM_INPUTS["answer"], lambda msg: self.core.on_answer(msg.data)),
            transport.subscribe(names("gaze"), SIM_INPUTS["gaze"], self.core.on_gaze),
        ]

    def _settle(self) -> None:
        for name in CAMERA_TOPICS:
            self.outputs.publishers[name].wait_for_acknowledgments(5.0)

    def wait_for_agent(self, timeout: float) -> bool:
        """Whether an agent subscribes to the camera and the queries and publishes answers."""
        return (self.outputs.publishers["image"].wait_for_subscribers(1, timeout)
                and self.outputs.publishers["query"].wait_for_subscribers(1, timeout)
                and self.subscriptions[0].wait_for_publishers(1, timeout))
