"""``pixelis train ...``: the training commands, registered on the main parser by
``add_train_commands`` (``pixelis_ros/cli/__init__.py`` calls it; ``bench sft|rft|agent`` are in
``cli/bench.py``). Nothing heavy is imported at the top.

- ``train sft --config R.yaml [--set field=value ...] [--resume] [--check]``
- ``train rft --config R.yaml [--set field=value ...] [--check]``
- ``train table [--episodes N] [--json]``: the SFT results table on held-out test episodes.
- ``train bundle --run RUN --out DIR [--table T.md]``: a finished run as a model folder with its card.
"""

from __future__ import annotations

from pixelis_ros.progress import add_quiet_flag
from pixelis_ros.training.config import ConfigError, DatasetError

USAGE_ERRORS: tuple[type[Exception], ...] = (ConfigError, DatasetError)


def _recipe_arguments(p, recipes: str, checked: str) -> None:
    """The options every training command shares."""
    p.add_argument("--config", required=True, help=f"recipe YAML ({recipes})")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a recipe field (repeatable)")
    p.add_argument("--check", action="store_true", help=f"validate the recipe ({checked}) without loading weights or "
                                                        "training")
    add_quiet_flag(p, "--no-progress")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def cmd_sft(args) -> dict:
    from pixelis_ros.policy.model_folder import ModelFolderError
    from pixelis_ros.training.config import load_config

    config = load_config(args.config, args.set)
    if args.check:
        from pixelis_ros.training.check import check_recipe

        return check_recipe(config)
    from pixelis_ros.training.sft import train

    try:
        return train(config, resume=args.resume)
    except (ModelFolderError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None


def add_sft(train_sub) -> None:
    p = train_sub.add_parser("sft", help="supervised fine-tuning on simulator CoTA traces",
                             description="Train a model folder on a `pixelis sim export` folder: masked, weighted "
                                         "next-token loss on the assistant turns plus the auxiliary grounding heads. "
                                         "Multi-process: accelerate launch -m pixelis_ros train sft ...")
    _recipe_arguments(p, "training/configs/sft_*.yaml", "fields, model config, data, accelerate configs")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.set_defaults(func=cmd_sft)


def cmd_rft(args) -> dict:
    from pixelis_ros.policy.model_folder import ModelFolderError
    from pixelis_ros.training.config import load_config
    from pixelis_ros.training.rft_config import RFTConfig

    config = load_config(args.config, args.set, cls=RFTConfig)
    if args.check:
        from pixelis_ros.training.check import check_rft_recipe

        return check_rft_recipe(config)
    from pixelis_ros.training.rft import train_rft

    try:
        return train_rft(config)
    except (ModelFolderError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None


def add_rft(train_sub) -> None:
    p = train_sub.add_parser("rft", help="CC-RFT: GRPO over whole tool chains with curiosity, coherence and a KL anchor",
                             description="Improve an SFT model folder by reinforcement on simulator episodes: groups of "
                                         "complete trajectories per scene, the pointer's grounding choice sampled and "
                                         "in the loss. Multi-process: accelerate launch -m pixelis_ros train rft ...")
    _recipe_arguments(p, "training/configs/rft_*.yaml", "fields, model config, LoRA targets, suite, accelerate configs")
    p.set_defaults(func=cmd_rft)


def cmd_table(args) -> dict:
    from pixelis_ros.training.table import sft_table

    return sft_table(args.config, episodes=args.episodes, backend=args.backend, out=args.out)


def add_table(train_sub) -> None:
    p = train_sub.add_parser("table", help="the SFT table: baselines, oracle, SFT and the ablation on the same test episodes")
    p.add_argument("--config", default="training/table.yaml", help="rows of the table (model folders per row)")
    p.add_argument("--episodes", type=int, default=120, help="test-suite episodes (the same for every row)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="backend serving the model rows")
    p.add_argument("--out", help="also write the table (JSON + markdown) into this folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_table)


def cmd_bundle(args) -> dict:
    from pixelis_ros.training.bundle import bundle

    return bundle(args.run, args.out, args.table)


def add_bundle(train_sub) -> None:
    p = train_sub.add_parser("bundle", help="copy a finished SFT run's model into a folder with its model card")
    p.add_argument("--run", required=True, help="the SFT run's output_dir (holds final/ and summary.json)")
    p.add_argument("--out", required=True, help="the model folder to write (e.g. models/pixelis-small)")
    p.add_argument("--table", help="a table.md from `pixelis train table --out` to put in the card")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bundle)


def add_train_commands(sub) -> None:
    train = sub.add_parser("train", help="training: SFT, its results table, the bundled model").add_subparsers(
        dest="train", required=True)
    for add in (add_sft, add_rft, add_table, add_bundle):
        add(train)
