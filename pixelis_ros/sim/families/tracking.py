"""tracking (video QA, MVBench-like): which way a moving object goes over a clip."""

from __future__ import annotations

from pixelis_ros.sim.expert import answer, turn
from pixelis_ros.sim.families.base import Family, TaskSpec, padded, register_family, visible


def _centre_x(box) -> float:
    return (box[0] + box[2]) / 2


@register_family
class Tracking(Family):
    name = "tracking"
    video = True

    def pose(self, scene, renders, rng):
        first, last = renders[0], renders[-1]
        h, w = first.rgb.shape[:2]
        movers = [o for o in scene.objects if o.motion is not None]
        movers = [o for o in movers if visible(first, [o.name]) and visible(last, [o.name])
                  and abs(_centre_x(last.boxes[o.name]) - _centre_x(first.boxes[o.name])) > 15]
        if not movers:
            return None
        target = rng.choice(movers)
        truth = "left" if _centre_x(last.boxes[target.name]) < _centre_x(first.boxes[target.name]) else "right"
        same = sum(o.label == target.label for o in scene.objects) > 1
        name = f"moving {target.label}" if same else target.label
        box = padded(first.boxes[target.name], 0.05, w, h, 8)

        def plan():
            t = yield turn(f"Track the {name} from the first frame to the last.", "track", bbox_2d=box, start="frame:0", end="frame:-1")
            side = t.get("horizontal")
            if side is None:
                yield answer("unknown", think="The tracker lost it at once.")
                return
            yield answer("{horizontal}", think="The tracker says which way its box moved.")

        return TaskSpec(f"Which way does the {name} move, left or right?", truth, "direction", [target.name], plan)
