"""``pixelis ttrl ...``, registered on the main parser (``pixelis_ros/cli/__init__.py``); ``pixelis bench
ttrl`` is in ``cli/bench.py``.

- ``ttrl run --suite shifted --episodes N [--model DIR] [--stream suite|distractor|wrong-majority]
  [--config T.yaml] [--set field=value] [--out DIR] --json``: frozen vs adapting on a label-free
  stream; the JSON contract is ``stream.summary``'s first keys.
"""

from __future__ import annotations

from pixelis_ros.training.config import ConfigError
from pixelis_ros.ttrl.state import TTRLStateError

USAGE_ERRORS: tuple[type[Exception], ...] = (ConfigError, TTRLStateError)


def _config(args):
    from pixelis_ros.training.config import load_config
    from pixelis_ros.ttrl.config import TTRLConfig

    return load_config(args.config, args.set, cls=TTRLConfig)


def cmd_run(args) -> dict:
    from pixelis_ros.policy.model_folder import ModelFolderError
    from pixelis_ros.sim.suites import SuiteError
    from pixelis_ros.ttrl.stream import run_stream

    config = _config(args)
    if args.episodes < 2:
        raise ConfigError(f"--episodes must be >= 2, got {args.episodes}")
    try:
        return run_stream(config, args.model, args.suite, args.episodes, start=args.start, stream=args.stream,
                          out=args.out, progress=not (args.json or args.no_progress))
    except (ModelFolderError, SuiteError, ValueError) as e:
        raise ConfigError(str(e)) from None


def add_ttrl_commands(sub) -> None:
    from pixelis_ros.ttrl.stream import STREAMS

    ttrl = sub.add_parser("ttrl", help="test-time RL: label-free adaptation inside a KL-to-EMA corridor").add_subparsers(
        dest="ttrl", required=True)
    p = ttrl.add_parser("run", help="frozen vs adapting accuracy on a label-free simulator stream",
                        description="Each query is answered by the frozen policy and by the adapting one as it is "
                                    "when the query comes; then test-time RL sees the query, without its label.")
    p.add_argument("--suite", default="shifted", help="simulator suite the stream comes from")
    p.add_argument("--episodes", type=int, default=48)
    p.add_argument("--start", type=int, default=0, help="first episode of the suite")
    p.add_argument("--stream", choices=STREAMS, default="suite",
                   help="suite: the episodes in order; distractor / wrong-majority: adversarial streams")
    p.add_argument("--model", help="torch model folder (default: the bundled model)")
    p.add_argument("--config", help="YAML of TTRLConfig fields (default: the defaults)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a field (repeatable)")
    p.add_argument("--out", help="folder for stream.jsonl, summary.json and the plot ttrl.png")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

