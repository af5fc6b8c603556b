"""text (TextVQA, InfoVQA): what a sign says. Ground it, zoom, then OCR the zoomed view."""

from __future__ import annotations

from pixelis_ros.sim.expert import answer, turn
from pixelis_ros.sim.families.base import Family, TaskSpec, padded, register_family, visible

POSITIONS = {1: [""], 2: ["left ", "right "], 3: ["left ", "middle ", "right "]}


@register_family
class Text(Family):
    name = "text"

    def pose(self, scene, renders, rng):
        r = renders[0]
        h, w = r.rgb.shape[:2]
        signs = sorted(visible(r, [s.name for s in scene.signs]), key=lambda n: r.boxes[n][0])
        if not signs:
            return None
        k = rng.randrange(len(signs))
        sign = next(s for s in scene.signs if s.name == signs[k])
        where = POSITIONS[len(signs)][k]
        box = r.boxes[sign.name]

        def plan():
            z = yield turn(f"The {where}sign is small; zoom in on it.", "zoom", bbox_2d=padded(box, 0.15, w, h))
            read = yield turn("Read the zoomed sign.", "ocr", image=z["images"][0])
            # The board's edges and its post can read as stray characters: the sign is the longest line.
            lines = read.get("lines", [])
            if not lines:
                yield answer("", think="Nothing was read.")
                return
            k = max(range(len(lines)), key=lambda i: (len(lines[i]["text"]), i))
            yield answer(f"{{lines.{k}.text}}", think="The longest line read is the sign's text.")

        return TaskSpec(f"What does the {where}sign say?", sign.text, "text", [sign.name], plan)
