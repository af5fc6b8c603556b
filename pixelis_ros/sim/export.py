"""Export a suite's episodes as a training/evaluation data set on disk.

Layout of ``DIR``::

    episodes.jsonl            one JSON record per episode, in episode order
    images/<task_id>/<k>.jpg  frame k of the episode (JPEG quality 90): the single frame of an
                              image family, every frame of a video family's clip
    images/<task_id>/<k>.depth.png
                              frame k's depth, 16-bit PNG in millimetres (families that render
                              depth, i.e. spatial: re-running ``segment`` needs it for depth_m)
    images/<task_id>/obs<k>.png
                              the image the expert's tools returned as ``obs:<k>`` (zoomed crops,
                              mask overlays, track keyframes), lossless, as the expert saw it
    manifest.json             the suite's fields, counts, oracle accuracy and tool failures
                              per family (deterministic)
    timing.json               elapsed seconds, workers, per-family seconds (differs per run)

Each record holds: ``id, index, family, seed, question, answer, question_type, tolerance,
target_boxes, frame_stamps, images, image_files, depth_files, obs_files, trace, messages,
expert_answer, expert_correct, tool_failures``. ``messages`` is ``cota.to_messages`` of the expert episode with
the toolbox's schemas, the query shown with ``frame:-1`` and each tool response followed by the
``obs:<k>`` images that tool returned; ``image_files`` maps every ``frame:<k>`` reference (and
``frame:-1``) to its file, ``obs_files`` every ``obs:<k>`` to its file (training shows them with
the responses exactly as the agent did, without re-running the tools).

Everything but timing.json is a function of the suite and the episode count: exporting twice, with
any number of workers, gives byte-identical files. Workers are ``spawn`` ed processes (MuJoCo's
GL context does not survive a fork), each with its own World and Toolbox, one thread each;
episodes are handed out in small chunks and written in episode order whichever finishes first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from pixelis_ros.cota import to_messages
from pixelis_ros.progress import progress as progress_bar
from pixelis_ros.sim.suites import Suite, family_schedule, make_episode
from pixelis_ros.tools import Toolbox, ToolboxConfig

JPEG_QUALITY = 90
EXPORT_TOOLBOX = ToolboxConfig(ocr_options={"threads": 1})
"""Tools as the export runs them: one OCR thread (workers share the cores; the same setting in
every process keeps runs identical whatever the worker count)."""
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def episode_record(task, index: int, out: Path, schemas: list[dict]) -> dict:
    """Write the episode's frames under ``out/images/<task.id>/`` and return its JSONL record."""
    rel_dir = f"images/{task.id}"
    images, depth_files = [], {}
    for k, frame in enumerate(task.frames):
        ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(frame.image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV without a JPEG codec
            raise RuntimeError("cv2.imencode could not write a JPEG")
        _write(out / rel_dir / f"{k}.jpg", jpg.tobytes())
        images.append(f"{rel_dir}/{k}.jpg")
        if frame.depth is not None:
            mm = np.clip(np.nan_to_num(frame.depth, nan=0.0, posinf=0.0) * 1000.0 + 0.5, 0, 65535).astype(np.uint16)
            ok, png = cv2.imencode(".png", mm)
            _write(out / rel_dir / f"{k}.depth.png", png.tobytes())
            depth_files[f"frame:{k}"] = f"{rel_dir}/{k}.depth.png"
    obs = [img for r in task.expert.records for img in (r.result.images if r.image_refs else [])]
    obs_files = {}
    for k, img in enumerate(obs):
        ok, png = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
        _write(out / rel_dir / f"obs{k}.png", png.tobytes())
        obs_files[f"obs:{k}"] = f"{rel_dir}/obs{k}.png"
    image_files = {f"frame:{k}": path for k, path in enumerate(images)}
    image_files["frame:-1"] = images[-1]
    if depth_files:
        depth_files["frame:-1"] = depth_files[f"frame:{len(images) - 1}"]
    expert = task.expert
    messages = to_messages(task.question, expert.steps, schemas, images=["frame:-1"],
                           step_images=[list(r.image_refs) for r in expert.records])
    return {
        "id": task.id,
        "index": index,
        "family": task.family,
        "seed": task.seed,
        "question": task.question,
        "answer": task.answer,
        "question_type": task.question_type,
        "tolerance": task.tolerance,
        "target_boxes": [[round(float(v), 2) for v in box] for box in task.target_boxes],
        "frame_stamps": [round(float(f.stamp), 6) for f in task.frames],
        "images": images,
        "image_files": image_files,
        "depth_files": depth_files,
        "obs_files": obs_files,
        "trace": task.trace,
        "messages": messages,
        "expert_answer": expert.answer,
        "expert_correct": task.is_correct(expert.answer),
        "tool_failures": list(task.tool_failures),
    }


class _Exporter:
    """Turns episode indices into records; one per process (its own World and Toolbox)."""

    def __init__(self, suite: Suite, out: Path):
        from pixelis_ros.sim.world import World

        self.suite, self.out = suite, out
        self.world = World(suite.width, suite.height)
        self.toolbox = Toolbox(EXPORT_TOOLBOX)
        self.schemas = self.toolbox.schemas()

    def __call__(self, job: tuple[int, str]) -> dict:
        index, family = job
        t0 = time.perf_counter()
        task = make_episode(self.suite, index, family, self.world, self.toolbox)
        record = episode_record(task, index, self.out, self.schemas)
        return {"line": json.dumps(record, ensure_ascii=False), "family": family, "correct": record["expert_correct"],
                "failures": len(task.tool_failures), "seconds": time.perf_counter() - t0}

    def close(self) -> None:
        self.world.close()


_WORKER: _Exporter | None = None


def _init_worker(suite: Suite, out: str) -> None:
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = _Exporter(suite, Path(out))


def _run_job(job: tuple[int, str]) -> dict:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER(job)


@contextmanager
def _single_threaded_env():
    """Children inherit the environment at spawn: one BLAS/OpenMP thread each."""
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    os.environ.update({k: "1" for k in THREAD_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _clear(out: Path) -> None:
    """Remove a previous export's files (only ours) so file lists stay exact."""
    shutil.rmtree(out / "images", ignore_errors=True)
    for name in ("episodes.jsonl", "manifest.json", "timing.json"):
        (out / name).unlink(missing_ok=True)


def export_suite(suite: Suite, out: str | os.PathLike, episodes: int | None = None, workers: int | None = None,
                 progress: bool = True) -> dict:
    """Export episodes 0..episodes-1 (default ``suite.episodes``) of ``suite`` to ``out``.

    ``workers`` processes (default ``min(2, cpu_count)``; 1 runs in this process) share the
    episodes; ``progress`` allows a bar over them (shown by ``pixelis_ros.progress``'s rule).
    Returns the summary ``{"out", "episodes", "families", "oracle_accuracy", "seconds", "workers"}``.
    """
    n = suite.episodes if episodes is None else episodes
    if n < 1:
        raise ValueError(f"episodes must be >= 1, got {n}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    jobs = list(enumerate(family_schedule(suite, n)))
    t0 = time.perf_counter()
    counts: Counter = Counter()
    correct: Counter = Counter()
    failed_episodes: Counter = Counter()
    failures: Counter = Counter()
    seconds: dict[str, float] = defaultdict(float)
    bar = progress_bar(total=n, desc=f"export {suite.name}", unit="episode", enabled=None if progress else False)
    with open(out / "episodes.jsonl", "w", encoding="utf-8", newline="\n") as f:
        def take(result: dict) -> None:
            fam = result["family"]
            f.write(result["line"] + "\n")
            counts[fam] += 1
            correct[fam] += bool(result["correct"])
            failed_episodes[fam] += result["failures"] > 0
            failures[fam] += result["failures"]
            seconds[fam] += result["seconds"]
            bar.update(1)

        if workers == 1:
            exporter = _Exporter(suite, out)
            try:
                for job in jobs:
                    take(exporter(job))
            finally:
                exporter.close()
        else:
            # A pool executor (not multiprocessing.Pool): a worker that dies raises BrokenProcessPool
            # here instead of hanging the export.
            chunk = max(1, min(4, n // (workers * 8)))
            # The executor spawns workers as jobs arrive: keep the environment set meanwhile.
            with _single_threaded_env(), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                             initializer=_init_worker, initargs=(suite, str(out))) as pool:
                for result in pool.map(_run_job, jobs, chunksize=chunk):
                    take(result)
    bar.close()
    elapsed = time.perf_counter() - t0
    order = [fam for fam in suite.families if counts[fam]]
    accuracy = {fam: round(correct[fam] / counts[fam], 4) for fam in order}
    overall = round(sum(correct.values()) / n, 4)
    manifest = {
        "suite": suite.name,
        "fields": suite.to_json(),
        "episodes": n,
        "families": {fam: counts[fam] for fam in order},
        "oracle_accuracy": overall,
        "oracle_accuracy_by_family": accuracy,
        "tool_failures": {"episodes": sum(failed_episodes.values()), "messages": sum(failures.values()),
                          "episodes_by_family": {fam: failed_episodes[fam] for fam in order}},
        "files": {"episodes": "episodes.jsonl", "images": "images/<id>/<k>.jpg", "depth": "images/<id>/<k>.depth.png",
                  "timing": "timing.json"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    timing = {"seconds": round(elapsed, 2), "workers": workers, "episodes_per_second": round(n / elapsed, 3),
              "seconds_per_episode_by_family": {fam: round(seconds[fam] / counts[fam], 3) for fam in order}}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    return {"out": str(out), "episodes": n, "families": manifest["families"], "oracle_accuracy": overall,
            "oracle_accuracy_by_family": accuracy, "seconds": round(elapsed, 2), "workers": workers}
