"""``pixelis sim loop --transport dds``: simulator in the loop, sim and agent in two processes.

This process runs the sim node; a child process (``python -m pixelis_ros node agent``) runs the
agent node; they talk only over the ROS 2 wire on loopback (Cyclone DDS, ``localhost_config``),
exactly as two ROS 2 nodes would. The agent is started with the parameters a simulation needs:
reliable image QoS (a clip's frames all count), ROS time from the sim's ``/clock``
(``use_sim_time``: frame stamps are simulation time), no annotated images. ``policy="oracle"`` sends each question with its expert trace
(the agent replays it with the real tools: the loop's accuracy should then match ``pixelis sim
bench --policy oracle``); otherwise ``policy`` is a model folder served by ``backend``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

from pixelis_ros.node.config import ConfigError, SimNodeConfig
from pixelis_ros.ros import dds
from pixelis_ros.ros.dds_nodes import DdsSimNode

AGENT_PARAMS = ("image_reliability:=reliable", "use_sim_time:=true", "publish_annotated:=false", "buffer_frames:=64")


def agent_command(domain: int, policy: str, backend: str) -> list[str]:
    params = list(AGENT_PARAMS)
    params += ["accept_scripts:=true"] if policy == "oracle" else [f"model:={policy}", f"backend:={backend}"]
    return [sys.executable, "-m", "pixelis_ros", "node", "agent", "--transport", "dds", "--localhost",
            "--domain", str(domain)] + [arg for p in params for arg in ("-p", p)]


def sim_loop(suite: str, episodes: int, policy: str = "oracle", backend: str = "torch", domain: int | None = None,
             speed: float = 1.0, start: int = 0, agent_start_timeout_s: float = 120.0, answer_timeout_s: float = 120.0) -> dict:
    domain = domain if domain is not None else 100 + os.getpid() % 100
    config = SimNodeConfig(suite=suite, episodes=episodes, start=start, speed=speed, oracle=policy == "oracle",
                           answer_timeout_s=answer_timeout_s)
    config.check()
    with tempfile.TemporaryFile("w+") as agent_log:
        agent = subprocess.Popen(agent_command(domain, policy, backend), stdout=subprocess.DEVNULL, stderr=agent_log)
        try:
            with dds.DdsTransport(domain, config=dds.localhost_config()) as transport:
                sim = DdsSimNode(transport, config)
                deadline = time.monotonic() + agent_start_timeout_s
                while not sim.wait_for_agent(1.0):
                    if agent.poll() is not None or time.monotonic() > deadline:
                        agent_log.seek(0)
                        raise ConfigError(f"the agent node did not come up (exit status {agent.poll()}): "
                                          f"{agent_log.read()[-2000:].strip() or 'no output'}")
                t0 = time.monotonic()
                summary = sim.core.run(show_progress=True)
                wall = time.monotonic() - t0
        finally:
            agent.send_signal(signal.SIGINT)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
    return {**summary, "transport": "dds", "policy": policy, "suite": suite, "processes": 2,
            "wall_s": round(wall, 2), "sim_errors": sim.core.errors[:10]}
