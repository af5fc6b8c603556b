"""fine detail (V* Bench, HR-Bench): the colour of a small, usually far object.

The expert zooms on the object and segments it in the zoomed view; the answer quotes the colour
the segment tool reports for the mask.
"""

from __future__ import annotations

from pixelis_ros.sim.expert import answer, turn
from pixelis_ros.sim.families.base import Family, TaskSpec, padded, register_family, visible


@register_family
class FineDetail(Family):
    name = "fine_detail"

    def pose(self, scene, renders, rng):
        r = renders[0]
        h, w = r.rgb.shape[:2]
        seen = set(visible(r, [o.name for o in scene.objects]))
        # The smallest object of each shape, when it is visible, is a well-defined target.
        candidates = []
        for shape in sorted({o.shape for o in scene.objects}):
            smallest = min((o for o in scene.objects if o.shape == shape), key=lambda o: o.size)
            if smallest.name in seen:
                candidates.append(smallest)
        if not candidates:
            return None
        target = min(candidates, key=lambda o: r.visible_px[o.name])
        box = r.boxes[target.name]
        zoom_box = padded(box, 0.6, w, h)

        def plan():
            z = yield turn(f"The smallest {target.shape} is only a few pixels wide; zoom in on it.", "zoom", bbox_2d=zoom_box)
            (zx, zy), s = z["bbox_2d"][:2], z["scale"]
            inner = [round((box[0] - zx) * s, 1), round((box[1] - zy) * s, 1), round((box[2] - zx) * s, 1), round((box[3] - zy) * s, 1)]
            seg = yield turn("Segment it in the zoomed view to read its colour.", "segment", image=z["images"][0], bbox_2d=inner)
            yield answer("{colour}" if seg.get("colour") else "unknown")

        return TaskSpec(f"What colour is the smallest {target.shape} on the table?", target.colour, "colour",
                        [target.name], plan)
