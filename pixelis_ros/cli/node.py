"""``pixelis node agent|sim --transport dds``: the nodes on the ROS 2 wire without a ROS install.

Parameters come as a ROS node gets them: defaults from the config dataclass, then a
``--params`` YAML file (``<node>: ros__parameters:``), then ``-p name:=value`` overrides (the
value read as YAML, as ``ros2 run ... --ros-args -p`` does). Everything after ``--ros-args`` is
read as ``ros2 run`` reads it: ``-p name:=value``, ``-r from:=to`` topic remapping (``-r
__ns:=/robot`` sets the namespace), ``--params-file F``; ``--`` ends it. ``--localhost`` keeps DDS traffic
on 127.0.0.1 (``dds.localhost_config``); without it Cyclone reads ``CYCLONEDDS_URI`` as ROS 2
does. The agent runs until SIGINT/SIGTERM (or ``--duration``); the sim node plays its episodes,
then prints the loop's summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading

import yaml

from pixelis_ros.node.config import ConfigError, NodeParameters

USAGE_ERRORS: tuple[type[Exception], ...] = (ConfigError,)


def _override(text: str) -> tuple[str, object]:
    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name:=value, got {text!r}")
    try:
        return name, yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        return name, value


def node_config(cls: type[NodeParameters], params_file: str | None, overrides: list[tuple[str, object]]) -> NodeParameters:
    config = cls.from_yaml(params_file) if params_file else cls()
    return cls.from_parameters({**dataclasses.asdict(config), **dict(overrides)})


def read_ros_args(args) -> None:
    """Fold ``--ros-args ...`` into ``args.p``, ``args.params``, ``args.namespace`` and
    ``args.remap`` (``{from: to}``); a token ROS would not accept is a ConfigError naming it."""
    tokens, args.remap = list(args.ros_args or []), {}
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        if flag == "--":
            break
        if flag in ("-p", "--param", "-r", "--remap", "--params-file", "--log-level") and i + 1 < len(tokens):
            value = tokens[i + 1]
            i += 2
            if flag == "--params-file":
                args.params = value
                continue
            if flag == "--log-level":
                args.log_level = value.rpartition(":=")[2].lower()  # ros2 also takes name:=level
                continue
            try:
                name, parsed = _override(value)
            except argparse.ArgumentTypeError as e:
                raise ConfigError(f"--ros-args {flag}: {e}") from None
            if flag in ("-p", "--param"):
                args.p.append((name, parsed))
            elif name == "__ns":
                args.namespace = str(parsed)
            elif name == "__node":
                continue  # the node's name: these nodes are always pixelis_agent / pixelis_sim
            else:
                args.remap[name] = value.partition(":=")[2]
            continue
        raise ConfigError(f"--ros-args: cannot read {flag!r}; use -p name:=value, -r from:=to, --params-file FILE "
                          "or --log-level LEVEL")


def start_logging(level: str) -> None:
    """Node logs on stderr in ROS's console format (stdout stays for the --json result)."""
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
              "error": logging.ERROR, "fatal": logging.CRITICAL}
    if level not in levels:
        raise ConfigError(f"--log-level {level!r}: use one of {', '.join(levels)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(levelname)s] [%(created).3f] [%(name)s]: %(message)s"))
    for name in ("pixelis_agent", "pixelis_sim", "pixelis_ros"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(levels[level])
        logger.propagate = False


def default_domain() -> int:
    try:
        return int(os.environ.get("ROS_DOMAIN_ID", "0"))
    except ValueError:
        raise ConfigError(f"ROS_DOMAIN_ID must be an integer, got {os.environ['ROS_DOMAIN_ID']!r}") from None


def transport(args):
    from pixelis_ros.ros.dds import DdsTransport, localhost_config

    return DdsTransport(args.domain if args.domain is not None else default_domain(),
                        config=localhost_config() if args.localhost else None)


def _stop_event(duration: float | None) -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if duration:
        threading.Timer(duration, stop.set).start()
    return stop


def cmd_node_agent(args) -> dict:
    from pixelis_ros.node.config import AgentNodeConfig
    from pixelis_ros.ros.dds_nodes import DdsAgentNode

    read_ros_args(args)
    start_logging(args.log_level)
    config = node_config(AgentNodeConfig, args.params, args.p)
    stop = _stop_event(args.duration)
    with transport(args) as t:
        node = DdsAgentNode(t, config, args.namespace, args.remap)
        node.start()
        try:
            stop.wait()
        finally:
            node.stop()
    return {"node": "pixelis_agent", "counters": vars(node.core.counters)}


def cmd_node_sim(args) -> dict:
    from pixelis_ros.node.config import SimNodeConfig
    from pixelis_ros.ros.dds_nodes import DdsSimNode

    read_ros_args(args)
    config = node_config(SimNodeConfig, args.params, args.p)
    with transport(args) as t:
        node = DdsSimNode(t, config, args.namespace, args.remap)
        if args.wait_for_agent and not node.wait_for_agent(args.wait_for_agent):
            raise ConfigError(f"no agent node subscribed to {args.namespace or ''}/image and /query within {args.wait_for_agent:g} s")
        return node.core.run()


def add_node_commands(sub) -> None:
    node = sub.add_parser("node", help="run the agent or sim node over the ROS 2 wire (DDS), no ROS install needed")
    nodes = node.add_subparsers(dest="node", required=True)
    for name, func, help_text in (("agent", cmd_node_agent, "the agent node (until SIGINT/SIGTERM)"),
                                  ("sim", cmd_node_sim, "the simulator node (plays its episodes, prints the summary)")):
        p = nodes.add_parser(name, help=help_text)
        p.add_argument("--transport", choices=["dds"], default="dds", help="the ROS 2 wire over Cyclone DDS (rclpy: ros2 run)")
        p.add_argument("--params", help="ROS parameter YAML (config/agent.yaml, config/sim.yaml layout)")
        p.add_argument("-p", action="append", type=_override, default=[], metavar="NAME:=VALUE", help="override a parameter")
        p.add_argument("--namespace", default="", help="ROS namespace of the topics (default: /)")
        p.add_argument("--domain", type=int, help="DDS domain (default: $ROS_DOMAIN_ID or 0)")
        p.add_argument("--localhost", action="store_true", help="keep DDS traffic on 127.0.0.1")
        p.add_argument("--json", action="store_true")
        p.add_argument("--ros-args", nargs=argparse.REMAINDER, metavar="...",
                       help="ROS arguments as ros2 run takes them: -p name:=value, -r from:=to, --params-file F, "
                            "--log-level L")
        p.add_argument("--log-level", default="info", help="node log level on stderr: debug, info, warn, error")
        if name == "agent":
            p.add_argument("--duration", type=float, help="stop after this many seconds")
        else:
            p.add_argument("--wait-for-agent", type=float, default=60.0, metavar="S",
                           help="seconds to wait for an agent to subscribe (0: don't wait)")
        p.set_defaults(func=func)
