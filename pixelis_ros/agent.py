"""The episode loop: generate -> parse -> run the tool -> show the result -> ... -> answer.

Straight-line by design. Every failure is an observation, never an exception out of ``run``
(DESIGN §4.3): unparseable output, failing tools and answers quoting a field the last tool
response lacks come back to the policy as ``{"error": ...}`` and count as steps; a failing policy or an exhausted cap ends the episode
with a ``stop_reason``. Caps: steps, pixels of tool output images per episode, per-tool time
(in the ``Toolbox``). Error texts quote input bounded (``cota.clip``/``quote``), and a query
that shows nothing (empty, spaces, zero-width characters) is refused with a clear error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable

from pixelis_ros.cota import answer_quote, clip, format_response, format_turn, is_blank, parse_turn, quote, resolve_quote, to_messages
from pixelis_ros.episode import Episode, StepRecord, kept_text
from pixelis_ros.frames import FrameBuffer, Frames
from pixelis_ros.policy.base import Policy
from pixelis_ros.policy.profile import PromptProfile
from pixelis_ros.tools.base import ToolContext, ToolResult
from pixelis_ros.tools.toolbox import Toolbox


@dataclass(frozen=True)
class AgentLimits:
    """Caps on one episode."""

    max_steps: int = 8
    """Turns (tool calls, invalid turns and the answer) before the episode is cut off."""
    max_episode_pixels: int = 16 * 448 * 448
    """Total pixels of tool output images shown to the policy in one episode."""
    max_query_chars: int = 2000
    """Longest query accepted."""


class Agent:
    def __init__(self, policy: Policy, toolbox: Toolbox | None = None, limits: AgentLimits | None = None):
        self.policy = policy
        self.toolbox = toolbox or Toolbox()
        self.limits = limits or AgentLimits()

    def run(self, query: str, frames: Frames | FrameBuffer, on_step: Callable[[StepRecord], None] | None = None,
            cancelled: Callable[[], bool] | None = None) -> Episode:
        """One episode. ``on_step`` sees each step as soon as it is done (an action's feedback);
        ``cancelled`` is asked before each step, and ``True`` ends the episode there
        (``stop_reason`` "cancelled"): a step in progress is never interrupted."""
        t0 = time.monotonic()
        snapshot = frames.snapshot() if isinstance(frames, FrameBuffer) else frames
        # The episode echoes the query into the answer: bounded, like every echo of input.
        shown = clip(query, self.limits.max_query_chars) if isinstance(query, str) else quote(query)
        episode = Episode(query=shown, frame_count=len(snapshot))
        try:
            self._loop(episode, query, snapshot, on_step or (lambda record: None), cancelled or (lambda: False))
        except Exception as e:  # the last line of defence: the node must keep running
            episode.stop_reason, episode.error = "internal_error", f"{type(e).__name__}: {clip(str(e))}"
        episode.total_ms = (time.monotonic() - t0) * 1000
        return episode

    def _loop(self, episode: Episode, query: str, frames: Frames, on_step, cancelled) -> None:
        if not isinstance(query, str) or not query.strip():
            episode.stop_reason, episode.error = "bad_query", "the query is empty"
            return
        if is_blank(query[: self.limits.max_query_chars + 1]):
            episode.stop_reason = "bad_query"
            episode.error = "the query has no visible characters (only spaces, zero-width or control characters)"
            return
        if len(query) > self.limits.max_query_chars:
            episode.stop_reason = "bad_query"
            episode.error = f"the query has {len(query)} characters, over the limit of {self.limits.max_query_chars}"
            return
        if len(frames) == 0:
            episode.stop_reason, episode.error = "no_frames", "no frame has been received yet"
            return
        episode.frame_span = frames.span
        if hasattr(self.policy, "reset"):
            self.policy.reset()
        ctx = ToolContext(frames=frames)
        profile = getattr(self.policy, "profile", None) or PromptProfile()
        shown = profile.query_images(len(frames))
        messages = to_messages(query, [], self.toolbox.schemas(), images=shown)
        images = {ref: frames[0 if ref == "frame:0" else -1].image for ref in shown}
        pixels = 0
        last_response: dict = {}  # what the policy was last shown: answers may quote its fields
        for _ in range(self.limits.max_steps):
            if cancelled():
                episode.stop_reason, episode.error = "cancelled", "cancelled before an answer"
                return
            t = time.monotonic()
            try:
                gen = self.policy.generate(messages, images)
            except Exception as e:
                episode.stop_reason, episode.error = "policy_error", f"{type(e).__name__}: {clip(str(e))}"
                return
            record = StepRecord(turn=parse_turn(gen.text), generate_ms=(time.monotonic() - t) * 1000,
                                raw_text=kept_text(gen.text if gen.raw_text is None else gen.raw_text),
                                heads=gen.heads, finish_reason=gen.finish_reason)
            episode.records.append(record)
            step = record.turn
            if step.error is None and step.answer is not None:
                path = answer_quote(step.answer)
                if path is None:
                    episode.answer, episode.stop_reason = step.answer.strip(), "answer"
                    on_step(record)
                    return
                record.quoted, step.error = resolve_quote(path, last_response)
                if step.error is None:
                    episode.answer, episode.stop_reason = record.quoted, "answer"
                    on_step(record)
                    return
            if step.error is not None:
                response = {"error": f"could not use your last turn: {step.error}"}
            else:
                record.result = self.toolbox.run(step.call.name, step.call.arguments, ctx)
                pixels += sum(img.shape[0] * img.shape[1] for img in record.result.images)
                if pixels > self.limits.max_episode_pixels:
                    record.result = ToolResult(error=f"the episode's tool images exceed {self.limits.max_episode_pixels} pixels")
                record.image_refs = self._keep_images(episode, ctx, images, record.result)
                response = last_response = record.result.response_json(record.image_refs)
            step.response = json.dumps(response, ensure_ascii=False)
            messages.append({"role": "assistant", "content": [{"type": "text", "text": format_turn(step)}]})
            messages.append({"role": "user", "content": [{"type": "text", "text": format_response(step.response)}]
                             + [{"type": "image", "image": ref} for ref in record.image_refs]})
            on_step(record)
        episode.stop_reason = "max_steps"
        episode.error = f"no answer after {self.limits.max_steps} steps"

    @staticmethod
    def _keep_images(episode: Episode, ctx: ToolContext, images: dict, result: ToolResult) -> list[str]:
        if result.error is not None:
            return []
        refs = []
        for k, img in enumerate(result.images):
            ref = f"obs:{len(ctx.observations)}"
            ctx.observations.append(img)
            images[ref] = img
            if k < len(result.image_origins):
                src, box = result.image_origins[k]
                episode.origins[ref] = (src, box, (int(img.shape[1]), int(img.shape[0])))
            refs.append(ref)
        return refs

