"""spatial (VSI-Bench): which of two objects is closer to the camera (depth) or on which side
one is of the other. The expert segments both; segment reports each mask's depth and centroid."""

from __future__ import annotations

import math

from pixelis_ros.sim.expert import answer, turn
from pixelis_ros.sim.families.base import Family, TaskSpec, padded, register_family, visible


@register_family
class Spatial(Family):
    name = "spatial"
    needs_depth = True

    def pose(self, scene, renders, rng):
        r = renders[0]
        h, w = r.rgb.shape[:2]
        labels = [o.label for o in scene.objects]
        unique = [o for o in scene.objects if labels.count(o.label) == 1 and visible(r, [o.name])]
        if len(unique) < 2:
            return None
        a, b = rng.sample(unique, 2)
        ba, bb = padded(r.boxes[a.name], 0.1, w, h, 8), padded(r.boxes[b.name], 0.1, w, h, 8)
        cam = scene.camera.pos
        da, db = math.dist(a.pos, cam), math.dist(b.pos, cam)
        xa, xb = (r.boxes[a.name][0] + r.boxes[a.name][2]) / 2, (r.boxes[b.name][0] + r.boxes[b.name][2]) / 2
        if rng.random() < 0.5 and abs(da - db) > 0.15:
            closer, farther = (a, b) if da < db else (b, a)
            # Ground truth orders the calls so the last grounded object, where the action points,
            # is the true answer; the answer itself still comes from the measured depths.
            boxes = {a.name: ba, b.name: bb}

            def plan():
                sf = yield turn(f"Segment the {farther.label} to measure its distance.", "segment", bbox_2d=boxes[farther.name])
                sc = yield turn(f"Now the {closer.label}.", "segment", bbox_2d=boxes[closer.name])
                near = closer if sc.get("depth_m", math.inf) < sf.get("depth_m", math.inf) else farther
                yield answer(near.label, think="The one with the smaller depth_m is closer.")

            return TaskSpec(f"Which is closer to the camera, the {a.label} or the {b.label}?", closer.label, "closer",
                            [closer.name], plan)
        if abs(xa - xb) < 20:
            return None

        def plan():
            sb = yield turn(f"Locate the {b.label} first.", "segment", bbox_2d=bb)
            sa = yield turn(f"Then the {a.label}.", "segment", bbox_2d=ba)
            side = "left" if sa.get("centroid", [0])[0] < sb.get("centroid", [0])[0] else "right"
            yield answer(side)

        return TaskSpec(f"Is the {a.label} to the left or to the right of the {b.label}?", "left" if xa < xb else "right",
                        "side", [a.name], plan)
