"""sim_node: the rclpy node over ``SimNodeCore`` — the simulator's camera, questions and scoring.

It publishes ``image``, ``depth``, ``camera_info``, ``clock`` (simulation time), ``query`` and
``episode`` (each result as JSON), and listens to ``answer`` (the agent's) and ``gaze``. The
episodes run on a worker thread started once an agent subscribes to ``query`` (so a launch file
may start both nodes in any order); when they are done the summary is logged and, with
``shutdown_when_done``, the node exits. Like ``agent_node``, this module is only a thin adapter
and imports rclpy; the same core runs over the DDS wire in the tests (``dds_nodes.py``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading

import rclpy
from geometry_msgs.msg import Vector3
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from pixelis_ros.node.config import ConfigError, SimNodeConfig, parameter_docs
from pixelis_ros.node.sim_core import SimNodeCore
from pixelis_ros.ros.agent_node import to_ros

OUTPUTS = {"image": Image, "depth": Image, "camera_info": CameraInfo, "clock": Clock, "query": String, "episode": String}


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("pixelis_sim", **kwargs)
        docs = parameter_docs(SimNodeConfig)
        for field in dataclasses.fields(SimNodeConfig):
            self.declare_parameter(field.name, field.default, ParameterDescriptor(description=docs.get(field.name, "")))
        self.declare_parameter("shutdown_when_done", True, ParameterDescriptor(description="exit after the last episode"))
        config = SimNodeConfig.from_parameters({f.name: self.get_parameter(f.name).value for f in dataclasses.fields(SimNodeConfig)})
        camera_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {name: self.create_publisher(cls, name, camera_qos if name in ("image", "depth", "camera_info") else 10)
                      for name, cls in OUTPUTS.items()}
        self.core = SimNodeCore(config, self._publish)
        self.create_subscription(String, "answer", lambda msg: self.core.on_answer(msg.data), 10)
        self.create_subscription(Vector3, "gaze", self.core.on_gaze, 10)
        self.done = threading.Event()
        self._timer = self.create_timer(0.5, self._start_when_an_agent_listens)

    def _start_when_an_agent_listens(self) -> None:
        if self._pubs["query"].get_subscription_count() == 0:
            return
        self._timer.cancel()
        threading.Thread(target=self._run, name="pixelis-sim", daemon=True).start()

    def _run(self) -> None:
        summary = self.core.run(on_result=lambda r: self.get_logger().info(
            f"episode {r['index']} ({r['family']}): {r['answer']!r} vs {r['truth']!r}, hit={r['hit']}"))
        self.get_logger().info("summary: " + json.dumps(summary))
        self.done.set()

    def _publish(self, topic: str, msg) -> None:
        self._pubs[topic].publish(to_ros(msg, OUTPUTS[topic]()))


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = SimNode()
    except ConfigError as e:
        print(f"pixelis_sim: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok() and not (node.done.is_set() and node.get_parameter("shutdown_when_done").value):
            executor.spin_once(timeout_sec=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
