"""``pixelis bag run`` and ``pixelis bag record``: rosbag2 replay through the agent node's logic,
and camera bags written from frames on disk (``pixelis_ros/bag.py`` does the work). ``bag run``
takes the agent's parameters as the node does (``--params``, ``-p name:=value``, parsed by
``cli/node.py``), so a replay runs the node a robot would run.

Bad input (a missing bag, an unknown topic, a bag path that exists) raises one of
``USAGE_ERRORS``, which the ``pixelis`` command reports as ``{"error": ...}`` with exit status 2.
"""

from __future__ import annotations

import argparse

from pixelis_ros.bag import STORAGES, BagError
from pixelis_ros.progress import add_quiet_flag
from pixelis_ros.cli.model_option import add_model_arguments
from pixelis_ros.cli.node import _override as parameter_override, node_config
from pixelis_ros.node.config import ConfigError

USAGE_ERRORS: tuple[type[Exception], ...] = (BagError, ConfigError)


def _query_at(text: str):
    if text == "end":
        return "end"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'end' or seconds from the bag start, got {text!r}") from None


def cmd_bag_run(args) -> dict:
    from pixelis_ros.bag import run_bag
    from pixelis_ros.node.config import AgentNodeConfig

    # The node's own precedence: defaults, --params, -p; --model/--backend are -p model:=/backend:=.
    named = [(name, value) for name, value in (("model", args.model), ("backend", args.backend)) if value is not None]
    config = node_config(AgentNodeConfig, args.params, [*args.p, *named])
    return run_bag(args.bag, args.image_topic, args.query, trace=args.trace, query_at=args.query_at,
                   out_bag=args.record, max_messages=args.max_messages, config=config, out_storage=args.record_storage,
                   out_dir=args.out)


def cmd_bag_record(args) -> dict:
    from pixelis_ros.bag import frames_with_fps, record_frames
    from pixelis_ros.media import load_frames

    frames = frames_with_fps(load_frames(frames_dir=args.frames, video=args.video), args.fps, args.max_frames)
    return record_frames(args.bag, frames, topic=args.topic, compressed=args.compressed, storage=args.storage,
                         start_time=args.start_time, frame_id=args.frame_id, compression=args.format,
                         quality=args.quality)


def add_bag_commands(sub) -> None:
    bag = sub.add_parser("bag", help="rosbag2 (sqlite3, MCAP): replay a camera bag through the agent, or record one")
    cmds = bag.add_subparsers(dest="bag", required=True)

    p = cmds.add_parser("run", help="feed an image topic of a bag to the agent node logic and run a query")
    p.add_argument("--bag", required=True, help="a rosbag2 folder (or a bare .mcap / .db3 file)")
    p.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--query", required=True)
    p.add_argument("--trace", help="a CoTA script replayed by the ScriptedPolicy (overrides the params file's; "
                                   "default: the params file's model, else the bundled model)")
    p.add_argument("--params", help="agent parameters (config/agent.yaml layout); stale-camera check is off")
    p.add_argument("-p", action="append", type=parameter_override, default=[], metavar="NAME:=VALUE",
                   help="override an agent parameter, as for `pixelis node agent` (repeatable)")
    add_model_arguments(p, backend_default=None)
    p.add_argument("--out", metavar="DIR", help="write each episode's annotated image here (annotated-<k>.png)")
    p.add_argument("--query-at", type=_query_at, default="end",
                   help="'end' (default: after the last message) or seconds from the bag start")
    p.add_argument("--max-messages", type=int, help="stop after this many messages of the topic")
    p.add_argument("--record", help="write the agent's outputs (/pixelis/answer, ...) into this new bag")
    p.add_argument("--record-storage", choices=STORAGES,
                   help="storage of --record (default: mcap if it ends in .mcap, else sqlite3)")
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_bag_run)

    p = cmds.add_parser("record", help="write a camera bag from a folder of frames or a video")
    p.add_argument("--bag", required=True, help="the new bag folder (must not exist)")
    p.add_argument("--frames", help="a folder of frames (sorted by name)")
    p.add_argument("--video", help="a video file")
    p.add_argument("--topic", default="/camera/image_raw")
    p.add_argument("--compressed", action="store_true", help="sensor_msgs/CompressedImage instead of Image (rgb8)")
    p.add_argument("--format", choices=["jpeg", "png"], default="jpeg", help="compression of --compressed")
    p.add_argument("--quality", type=int, default=90, help="jpeg quality")
    p.add_argument("--fps", type=float, help="restamp frames i/fps (default: 30 for folders, the video's own)")
    p.add_argument("--max-frames", type=int, help="record only the first N frames")
    p.add_argument("--start-time", type=float, default=0.0, help="stamp of the first frame, seconds since the epoch")
    p.add_argument("--frame-id", default="camera")
    p.add_argument("--storage", choices=STORAGES, help="default: mcap if --bag ends in .mcap, else sqlite3")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bag_record)
