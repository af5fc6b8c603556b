"""counting / region (TallyQA, CountBench): how many objects of a colour. The expert segments
each candidate and counts the masks whose colour matches."""

from __future__ import annotations

from pixelis_ros.sim.expert import answer, turn
from pixelis_ros.sim.families.base import Family, TaskSpec, padded, register_family, visible


@register_family
class Counting(Family):
    name = "counting"

    def pose(self, scene, renders, rng):
        r = renders[0]
        h, w = r.rgb.shape[:2]
        seen = set(visible(r, [o.name for o in scene.objects]))
        # Only colours whose every object is visible have an unambiguous count.
        colours = sorted({o.colour for o in scene.objects
                          if all(p.name in seen for p in scene.objects if p.colour == o.colour)})
        colours = [c for c in colours if sum(o.colour == c for o in scene.objects) <= 4]
        if not colours:
            return None
        colour = rng.choice(colours)
        members = sorted((o for o in scene.objects if o.colour == colour), key=lambda o: r.boxes[o.name][0])

        def plan():
            count = 0
            for i, o in enumerate(members):
                seg = yield turn(f"Check candidate {i + 1} of {len(members)}.", "segment", bbox_2d=padded(r.boxes[o.name], 0.15, w, h, 8))
                count += seg.get("colour") == colour
            yield answer(str(count), think=f"{count} of the segmented objects are {colour}.")

        return TaskSpec(f"How many {colour} objects are on the table?", str(len(members)), "count",
                        [o.name for o in members], plan)
