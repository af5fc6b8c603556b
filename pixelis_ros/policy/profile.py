"""The prompt profile: how a model folder was trained to be prompted, so inference asks it the
same way (``pixelis_prompt.json`` next to the weights).

A released Qwen checkpoint knows tools only from the schema system prompt (1,258 tokens of a
~1,730-token episode); a model trained from scratch on our traces never needs it, and serving it
3.6x shorter prompts is the cheaper choice (SFT probe, DESIGN §6). Clip questions ("which way does
it move") need the clip's first frame beside the newest one: a track call's box is given in
frame 0. The profile is written by training and read by every backend and by the agent; a folder
without one gets the released checkpoints' default (system prompt on, newest frame only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

PROFILE_FILE = "pixelis_prompt.json"


@dataclass(frozen=True)
class PromptProfile:
    """How the agent's messages are shown to one model."""

    system_prompt: bool = True
    """Show the tool-schema system prompt (a released checkpoint needs it; a model trained
    without it should not see it)."""
    first_frame: bool = False
    """When the episode's frames span more than one frame, show ``frame:0`` with the query
    before ``frame:-1`` (clip questions ground their first call in the first frame)."""

    heads: str = "off"
    """Auxiliary heads' mode the model serves with when the backend is not told (``heads="auto"``):
    ``refine`` for a model whose grounding was trained through the heads."""

    def query_images(self, frame_count: int) -> list[str]:
        """The image references shown with the query."""
        return ["frame:0", "frame:-1"] if self.first_frame and frame_count > 1 else ["frame:-1"]

    def messages(self, messages: list[dict]) -> list[dict]:
        """The agent's messages as this model sees them (the system prompt dropped when off)."""
        return messages if self.system_prompt else [m for m in messages if m.get("role") != "system"]

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROFILE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path


def load_profile(folder: str | Path) -> PromptProfile:
    """The folder's profile; the default when it has none. A malformed file is an error that names it."""
    path = Path(folder) / PROFILE_FILE
    if not path.is_file():
        return PromptProfile()
    from pixelis_ros.policy.model_folder import ModelFolderError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ModelFolderError(f"{path} is not valid JSON ({e}); delete it or re-save it from training") from None
    known = {f.name: f for f in fields(PromptProfile)}
    from pixelis_ros.policy.heads_numpy import MODES

    if not isinstance(data, dict) or set(data) - set(known) \
            or not all(isinstance(v, str) if k == "heads" else isinstance(v, bool) for k, v in data.items()) \
            or data.get("heads", "off") not in MODES:
        raise ModelFolderError(f"{path} must be a JSON object with fields among {sorted(known)} (booleans; heads one of "
                               f"{', '.join(MODES)}), got {str(data)[:200]}")
    return PromptProfile(**data)
