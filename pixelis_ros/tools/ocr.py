"""ocr: read text lines, optionally inside a region, with boxes in the referenced image's pixels.

Backends register in ``OCR_BACKENDS`` as callables ``(rgb) -> list[(text, box, score)]`` in the
pixels of the array they are given. RapidOCR (PP-OCR models as ONNX inside the wheel, fully
offline) is the default; its detector side is limited for speed (DESIGN §6: ~70–200 ms per
image on this CPU). PaddleOCR is used when the user points at local model folders — it cannot
fetch models here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelis_ros.boxes import int_box, round_box
from pixelis_ros.tools.arguments import Box, arg
from pixelis_ros.tools.base import Detection, Tool, ToolContext, ToolError, ToolResult, build_backend, make_registry, register_tool

OCR_BACKENDS, register_ocr_backend = make_registry("ocr")

Line = tuple[str, tuple[float, float, float, float], float]


def _poly_box(poly) -> tuple[float, float, float, float]:
    p = np.asarray(poly, dtype=np.float32).reshape(-1, 2)
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


@register_ocr_backend("rapidocr")
class RapidOCRReader:
    """RapidOCR (PP-OCRv6 small, ONNX Runtime on the CPU).

    The detector first reads the image at its own size with its long side capped at
    ``det_limit_side`` (960 read the ICDAR samples best among 736/960/1280). When that finds no
    text in a small image, it reads again upscaled (``detector_resize``): the short side brought
    to ``det_upscale_side`` as RapidOCR's own default does (736), the long side still within
    ``det_limit_side``. A ~250x230 crop of a sign is missed at its own size and read once
    upscaled; upscaling every small image instead changed readings that were right ("DEPOT 94"
    on a zoomed sign became "DEPOT94"), so it is only the fallback. ``det_upscale_side=0`` turns
    it off. An image no taller than
    ``word_crop_max_height`` is first read as one text line by the recogniser alone and kept
    when it scores at least ``confident_score``; otherwise detection runs as usual.
    """

    def __init__(self, det_limit_side: int = 960, threads: int = 2, use_cls: bool = False, min_score: float = 0.5,
                 word_crop_max_height: int = 96, confident_score: float = 0.8, det_upscale_side: int = 736):
        try:
            from rapidocr import RapidOCR
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ToolError("the rapidocr backend needs the OCR extra: pip install 'pixelis_ros[ocr]'") from e
        self.use_cls = use_cls  # text in robot scenes is mostly upright; cls costs ~30%
        self.min_score = min_score
        self.word_crop_max_height = word_crop_max_height
        self.confident_score = confident_score
        if det_limit_side < 32 or det_upscale_side < 0:
            raise ToolError(f"rapidocr needs det_limit_side >= 32 and det_upscale_side >= 0, got {det_limit_side} and {det_upscale_side}")
        self.det_limit_side = det_limit_side
        self.det_upscale_side = det_upscale_side
        self.engine = RapidOCR(params={
            "Global.log_level": "error",  # "no text found" is a normal answer, not a warning
            "Global.use_cls": use_cls,
            "Global.text_score": min_score,
            "Det.limit_side_len": det_limit_side,
            "Det.limit_type": "max",
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        })
        # RapidOCR 3.x builds the detector's resize from these two attributes on every call, so
        # setting them per image is enough (one engine, no second model in memory).
        self._detector = self.engine._load_det_model()
        if not (hasattr(self._detector, "limit_side_len") and hasattr(self._detector, "limit_type")):
            raise ToolError("this rapidocr version has no per-image detector size (limit_side_len/limit_type); use rapidocr 3.x")
        self._lock = threading.Lock()  # the engine keeps per-call settings as state

    def detector_resize(self, height: int, width: int) -> tuple[int, str]:
        """RapidOCR's ``(limit_side_len, limit_type)`` for an image of this size (see the class doc)."""
        short, long = min(height, width), max(height, width)
        scale = min(self.det_upscale_side / max(short, 1), self.det_limit_side / max(long, 1))
        if scale > 1.0:
            # "min" scales the short side up to the given length: that length is short * scale.
            return max(short + 1, int(short * scale)), "min"
        return self.det_limit_side, "max"  # caps the long side; leaves smaller images as they are

    def __call__(self, rgb: np.ndarray) -> list[Line]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        # A single text line (a word crop, or a tight zoom) is read by the recogniser alone: ~4x
        # faster than detection, and the detector misses text that fills the whole image.
        line = rgb.shape[0] <= self.word_crop_max_height and rgb.shape[1] >= rgb.shape[0] // 2
        with self._lock:
            return self._read(bgr, line)

    def _read(self, bgr: np.ndarray, line: bool) -> list[Line]:
        whole = self._recognise(bgr) if line else None
        if whole is not None and whole[2] >= self.confident_score:
            return [whole]
        # First at the image's own size (capped), as every reading the simulator's results rest on
        # was made; only when that finds nothing, again with the small image upscaled.
        for resize in dict.fromkeys([(self.det_limit_side, "max"), self.detector_resize(*bgr.shape[:2])]):
            self._detector.limit_side_len, self._detector.limit_type = resize
            # RapidOCR keeps per-call flags as state, so every call states all of them.
            out = self.engine(bgr, use_det=True, use_cls=self.use_cls, use_rec=True)
            if out.txts:
                return [(t, _poly_box(b), float(s)) for t, b, s in zip(out.txts, out.boxes, out.scores)]
        return [whole] if whole is not None and whole[2] >= self.min_score else []

    def _recognise(self, bgr: np.ndarray) -> Line | None:
        rec = self.engine(bgr, use_det=False, use_cls=False, use_rec=True)
        text = "".join(rec.txts or ()).strip()
        if not text:
            return None
        return text, (0.0, 0.0, float(bgr.shape[1]), float(bgr.shape[0])), float(rec.scores[0])


@register_ocr_backend("paddleocr")
class PaddleOCRReader:
    """PaddleOCR from local model folders only (``det_model_dir`` and ``rec_model_dir``)."""

    def __init__(self, det_model_dir: str, rec_model_dir: str, lang: str = "en"):
        try:
            from paddleocr import PaddleOCR
        except ImportError as e:
            raise ToolError("the paddleocr backend needs `pip install paddleocr paddlepaddle` and local model folders") from e
        for d in (det_model_dir, rec_model_dir):
            if not Path(d).is_dir():
                raise ToolError(f"PaddleOCR model folder {d} does not exist; models load from local folders only")
        self.engine = PaddleOCR(text_detection_model_dir=det_model_dir, text_recognition_model_dir=rec_model_dir,
                                use_doc_orientation_classify=False, use_doc_unwarping=False, use_textline_orientation=False, lang=lang)

    def __call__(self, rgb: np.ndarray) -> list[Line]:
        lines: list[Line] = []
        for page in self.engine.predict(np.ascontiguousarray(rgb[:, :, ::-1])):
            for text, poly, score in zip(page["rec_texts"], page["rec_polys"], page["rec_scores"]):
                lines.append((text, _poly_box(poly), float(score)))
        return lines


@dataclass(frozen=True)
class OCRArgs:
    image: str = arg("frame:-1", "image to read: frame:<index>, frame:<seconds>s or obs:<k>")
    bbox_2d: Box | None = arg(None, "optional region [x1, y1, x2, y2] to read, in pixels of the image")


@register_tool
class OCRTool(Tool):
    name = "ocr"
    description = "Read the text in an image or a region of it; returns lines with their boxes and scores."
    Args = OCRArgs

    @classmethod
    def from_config(cls, config, tool):
        return cls(backend=config.ocr_backend, **config.ocr_options)

    def __init__(self, backend: str = "rapidocr", **backend_options):
        self.backend_name = backend
        self.reader = build_backend(OCR_BACKENDS, backend, backend_options)

    def read(self, rgb: np.ndarray, region=None) -> list[Line]:
        """Lines in ``rgb``'s pixels, reading only ``region`` when given."""
        if region is None:
            return self.reader(rgb)
        x1, y1, x2, y2 = int_box(region)
        x1, y1 = max(0, x1), max(0, y1)
        lines = self.reader(rgb[y1:y2, x1:x2])
        return [(t, (b[0] + x1, b[1] + y1, b[2] + x1, b[3] + y1), s) for t, b, s in lines]

    def run(self, args: OCRArgs, ctx: ToolContext) -> ToolResult:
        region = ctx.check_box(args.bbox_2d, args.image) if args.bbox_2d is not None else None
        lines = self.read(ctx.image(args.image), region)
        # Reading order: top to bottom, then left to right within a line band.
        lines.sort(key=lambda ln: (round(ln[1][1] / 16), ln[1][0]))
        dets = [Detection(b, args.image, label=t, score=s) for t, b, s in lines]
        text = " ".join(t for t, _, _ in lines)
        data = {"lines": [{"text": t, "bbox_2d": round_box(b), "score": round(s, 4)} for t, b, s in lines], "text": text}
        return ToolResult(data=data,
                          text=text or "(no text found)", detections=dets)
