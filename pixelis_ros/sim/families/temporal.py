"""temporal (temporal grounding): when the lamp changes colour. The expert watches the lamp's
region for the new colour; the answer is when that span starts, within one frame."""

from __future__ import annotations

import math

from pixelis_ros.sim.expert import answer, turn
from pixelis_ros.sim.families.base import Family, TaskSpec, padded, register_family, visible


@register_family
class Temporal(Family):
    name = "temporal"
    video = True

    def pose(self, scene, renders, rng):
        first, last = renders[0], renders[-1]
        h, w = first.rgb.shape[:2]
        if not (visible(first, ["lamp"]) and visible(last, ["lamp"])):
            return None
        times = [r.time for r in renders]
        period = times[1] - times[0]
        switch = next((t for t in times if t >= scene.lamp.switch_time - 1e-9), None)
        if switch is None or switch == times[0]:
            return None  # the switch must happen inside the clip, after its start
        colour = scene.lamp.after
        box = padded(first.boxes["lamp"], 0.3, w, h)

        def plan():
            r = yield turn(f"Watch the lamp for {colour}.", "temporal", predicate="colour", value=colour, bbox_2d=box)
            spans = r.get("spans") or []
            # Quote the first span's start as the tool wrote it.
            yield answer("{spans.0.0}" if spans else "never")

        return TaskSpec(f"When does the lamp turn {colour}? Answer in seconds.", f"{switch:.2f}", "when",
                        ["lamp"], plan, tolerance=period * 1.01 if math.isfinite(period) else 0.0)
