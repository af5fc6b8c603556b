"""Running fuzz cases: one worker process per target and job, a time limit per case, peak RSS.

Cases run in worker processes because the failures we look for cannot be caught in-process: an
endless loop never returns (the worker is killed on its time limit and a fresh one takes the next
case), a decompression bomb can take gigabytes (each worker's data segment is capped with
``RLIMIT_DATA``, so a bomb fails inside the worker instead of starving the machine, and still
counts), and a crash in native code (a segfault in OpenCV) must not end the run. Each case is
named by ``(seed, target, index)`` and regenerated from that inside the worker, so nothing big
crosses the pipe and any case can be replayed alone.

The parent imports nothing heavy; workers are spawned (not forked) so they do not inherit the
caller's threads (pytest's, torch's) — so, as for any spawned multiprocessing, a script calling
``bench_fuzz`` must do so under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import resource
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MAX_MESSAGE_CHARS = 1000
"""Longest error message any input may produce (inputs are quoted, cut, with an ellipsis)."""
MAX_CASE_MB = 512
"""Most a single case may raise its worker's peak RSS: above what the codec's pixel cap admits
(an 8192x8192 image decoded and copied to RGB is 2 x 201 MB), far below what a decompression
bomb takes (2-5 GB in issue #13)."""
WORKER_DATA_LIMIT_MB = 2560
"""Each worker's data-segment cap (RLIMIT_DATA): a bomb fails there instead of swapping the host."""
SETUP_TIMEOUT_S = 300.0
FIRST_FAILURES = 10


@dataclass(frozen=True)
class TargetSpec:
    module: str
    """``module:Class`` of the Target (imported in the worker only)."""
    time_limit_s: float
    """A case running longer is a hang."""
    weight: float
    """Share of the cases when no split is asked for (slow targets get few)."""


TARGETS: dict[str, TargetSpec] = {
    # Limits far above the slowest real case seen (~3 s on 2 busy cores), so only real hangs hit them.
    "agent": TargetSpec("pixelis_ros.fuzz.agent_target:AgentTarget", 20.0, 0.485),
    "image": TargetSpec("pixelis_ros.fuzz.image_target:ImageTarget", 15.0, 0.485),
    "bag": TargetSpec("pixelis_ros.fuzz.bag_target:BagTarget", 30.0, 0.02),
    "model": TargetSpec("pixelis_ros.fuzz.model_target:ModelTarget", 90.0, 0.01),
}


class FuzzSetupError(RuntimeError):
    """A target's worker could not build its fixed inputs (the fuzzer itself is broken)."""


def split_cases(cases: int, targets: list[str] | None = None) -> dict[str, int]:
    """``cases`` shared over ``targets`` by their weights; every named target gets at least one."""
    names = list(targets) if targets else list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown fuzz target(s) {unknown}; known: {', '.join(TARGETS)}")
    if cases < len(names):
        raise ValueError(f"{cases} cases cannot cover {len(names)} targets; ask for at least {len(names)}")
    total = sum(TARGETS[n].weight for n in names)
    counts = {n: max(1, int(cases * TARGETS[n].weight / total)) for n in names}
    counts[max(names, key=lambda n: TARGETS[n].weight)] += cases - sum(counts.values())  # rounding
    return counts


# --- the worker ----------------------------------------------------------------------------------
def _maxrss_mb() -> float:
    """This worker's own peak RSS. Linux keeps ``ru_maxrss`` across exec, so a worker spawned from a
    big parent (a long pytest session) would report the parent's size; the address space's own
    high-water mark (VmHWM) starts fresh at exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _load_target(spec: str):
    import importlib

    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)()


def _type_name(e: BaseException) -> str:
    module = type(e).__module__
    return type(e).__name__ if module in ("builtins", "__main__") else f"{module.split('.')[0]}.{type(e).__name__}"


def _classify(target, case) -> dict:
    from pixelis_ros.fuzz.target import Escaped

    try:
        messages = target.run(case)
        # Problems reported in the output (an agent's error observations) are domain errors too.
        shown = [m for m in messages if isinstance(m, str) and m]
        status, error_type, text = ("error", "observation", max(shown, key=len)) if shown else ("ok", None, None)
    except target.domain_errors as e:
        messages, status, error_type, text = [str(e)], "error", type(e).__name__, str(e)
    except Escaped as e:
        messages, status, error_type, text = [], "internal", "Escaped", str(e)
    except Exception as e:  # anything else escaping (RecursionError and MemoryError too) is what we hunt
        tb = traceback.extract_tb(e.__traceback__)
        where = f" [at {Path(tb[-1].filename).name}:{tb[-1].lineno}]" if tb else ""
        messages, status, error_type, text = [], "internal", _type_name(e), f"{e}{where}"
    lengths = [len(m) for m in messages if isinstance(m, str)]
    if text is not None:  # messages may quote lone surrogates: keep the report printable
        text = text[:300].encode("utf-8", "backslashreplace").decode("utf-8")
    return {"status": status, "error_type": error_type, "message": text,
            "message_chars": max(lengths, default=0)}


def _worker_main(name: str, spec: str, seed: int, conn, workdir: str) -> None:
    # Before any heavy import: one thread per library (the fuzzer runs beside everything else).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["OPENCV_LOG_LEVEL"] = "OFF"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    # Native libraries (libpng, libjpeg, transformers' load reports) write straight to fds 1 and 2:
    # silence them; results and setup failures come back over the pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    limit = WORKER_DATA_LIMIT_MB * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        import cv2

        cv2.setNumThreads(1)
        target = _load_target(spec)
        target.setup(Path(workdir))
    except Exception:
        conn.send(("setup_failed", traceback.format_exc()[-4000:]))
        return
    conn.send(("ready", _maxrss_mb()))
    while True:
        index = conn.recv()
        if index is None:
            return
        try:
            case = target.make(random.Random(f"{seed}:{name}:{index}"))
        except Exception as e:  # a bug of the fuzzer itself: say so rather than blame the code under test
            conn.send(("start", "fuzzer_bug", f"case {index}"))
            conn.send(("done", {"status": "internal", "error_type": f"FuzzerBug:{type(e).__name__}",
                                "message": str(e)[:300], "message_chars": 0, "seconds": 0.0,
                                "rss_mb": round(_maxrss_mb(), 1), "case_mb": 0.0}))
            continue
        conn.send(("start", case.kind, case.summary))
        before, t0 = _maxrss_mb(), time.perf_counter()
        result = _classify(target, case)
        result.update(seconds=round(time.perf_counter() - t0, 3), rss_mb=round(_maxrss_mb(), 1),
                      case_mb=round(_maxrss_mb() - before, 1))
        conn.send(("done", result))


class _Worker:
    def __init__(self, name: str, spec: TargetSpec, seed: int, workdir: str):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(name, spec.module, seed, child, workdir), daemon=True,
                                name=f"pixelis-fuzz-{name}")
        self.proc.start()
        child.close()
        if not self.conn.poll(SETUP_TIMEOUT_S):
            self.stop()
            raise FuzzSetupError(f"fuzz target {name!r}: the worker did not finish its setup in {SETUP_TIMEOUT_S:g} s")
        try:
            msg = self.conn.recv()
        except EOFError:
            self.proc.join(timeout=10)
            raise FuzzSetupError(f"fuzz target {name!r}: the worker died during setup "
                                 f"(exit code {self.proc.exitcode})") from None
        if msg[0] != "ready":
            self.stop()
            raise FuzzSetupError(f"fuzz target {name!r}: setup failed:\n{msg[1]}")
        self.rss_mb = msg[1]

    def peak_rss_mb(self) -> float | None:
        """VmHWM of a live worker (its peak RSS so far), e.g. of one about to be killed."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=10)
        self.conn.close()


def _drive(name: str, spec: TargetSpec, seed: int, indices: list[int], workdir: str) -> tuple[list[dict], float]:
    """Run the cases ``indices`` of one target in a worker; (one record per case, peak RSS MB)."""
    limit = spec.time_limit_s
    records, peak, worker = [], 0.0, None
    for index in indices:
        if worker is None:
            worker = _Worker(name, spec, seed, workdir)
            peak = max(peak, worker.rss_mb)
        record = {"target": name, "index": index, "kind": "?", "input": "?"}
        worker.conn.send(index)
        t0 = time.perf_counter()
        try:
            if not worker.conn.poll(limit):
                raise TimeoutError
            _, record["kind"], record["input"] = worker.conn.recv()
            if not worker.conn.poll(max(0.0, limit - (time.perf_counter() - t0))):
                raise TimeoutError
            record.update(worker.conn.recv()[1])
            peak = max(peak, record["rss_mb"])
        except TimeoutError:
            rss = worker.peak_rss_mb()
            worker.stop(kill=True)
            worker = None
            record.update(status="hang", error_type=None, message=f"no result after {limit:g} s", message_chars=0,
                          seconds=round(time.perf_counter() - t0, 3), rss_mb=rss, case_mb=None)
            peak = max(peak, rss or 0.0)
        except (EOFError, OSError):  # the worker died: a crash in native code, or killed for memory
            worker.proc.join(timeout=10)
            code = worker.proc.exitcode
            worker.stop(kill=True)
            worker = None
            record.update(status="internal", error_type="WorkerDied", message=f"the worker process died (exit code {code})",
                          message_chars=0, seconds=round(time.perf_counter() - t0, 3), rss_mb=None, case_mb=None)
        records.append(record)
    if worker is not None:
        worker.stop()
    return records, peak


def _problems(record: dict) -> list[str]:
    out = []
    if record["status"] in ("internal", "hang"):
        out.append(record["status"])
    if record.get("message_chars", 0) > MAX_MESSAGE_CHARS:
        out.append("unbounded_message")
    if (record.get("case_mb") or 0) > MAX_CASE_MB:
        out.append("over_memory")
    return out


def summarize(records: list[dict], peaks: dict[str, float], wall_s: float, seed: int) -> dict:
    """The bench's JSON: counts per target and in total, peak RSS, the first failures."""
    per_target: dict[str, dict] = {}
    classes: dict[str, int] = {}
    failures = []
    for r in records:
        t = per_target.setdefault(r["target"], {"cases": 0, "ok": 0, "errors": 0, "internal_errors": 0, "hangs": 0,
                                                "unbounded_messages": 0, "over_memory": 0, "max_message_chars": 0,
                                                "peak_rss_mb": round(peaks.get(r["target"], 0.0), 1)})
        t["cases"] += 1
        t[{"ok": "ok", "error": "errors", "internal": "internal_errors", "hang": "hangs"}[r["status"]]] += 1
        t["max_message_chars"] = max(t["max_message_chars"], r.get("message_chars") or 0)
        problems = _problems(r)
        t["unbounded_messages"] += "unbounded_message" in problems
        t["over_memory"] += "over_memory" in problems
        for p in problems:
            key = f"{r['target']}/{r['kind']}: {p}" + (f" {r['error_type']}" if p == "internal" else "")
            classes[key] = classes.get(key, 0) + 1
        if problems and len(failures) < FIRST_FAILURES:
            failures.append({"target": r["target"], "index": r["index"], "kind": r["kind"], "problems": problems,
                             "input": r["input"], "error_type": r.get("error_type"), "message": r.get("message"),
                             "message_chars": r.get("message_chars")})
    total = {k: sum(t[k] for t in per_target.values())
             for k in ("cases", "ok", "errors", "internal_errors", "hangs", "unbounded_messages", "over_memory")}
    return {"seed": seed, **total, "peak_rss_mb": round(max(peaks.values(), default=0.0), 1),
            "wall_s": round(wall_s, 2), "targets": per_target,
            "failure_classes": dict(sorted(classes.items(), key=lambda kv: -kv[1])), "first_failures": failures}


def run_cases(counts: dict[str, int], seed: int = 0, jobs: int = 1, workdir: str | Path | None = None,
              first_index: int = 0, targets: dict[str, TargetSpec] | None = None) -> tuple[list[dict], dict[str, float], float]:
    """Run ``counts[target]`` cases of each target (indices from ``first_index``) with ``jobs``
    workers at a time; (records, peak RSS MB per target, wall seconds). ``targets`` maps names
    to specs (default ``TARGETS``)."""
    specs = targets or TARGETS
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pixelis-fuzz-", dir=workdir) as tmp:
        tasks = []
        for name, n in counts.items():
            indices = list(range(first_index, first_index + n))
            parts = max(1, min(jobs, n))
            for j in range(parts):
                part = indices[j::parts]
                folder = Path(tmp) / f"{name}-{j}"
                folder.mkdir()
                tasks.append((name, part, str(folder)))
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            done = list(pool.map(lambda t: (t[0], _drive(t[0], specs[t[0]], seed, t[1], t[2])), tasks))
    records, peaks = [], {}
    for name, (recs, peak) in done:
        records += recs
        peaks[name] = max(peaks.get(name, 0.0), peak)
    records.sort(key=lambda r: (list(counts).index(r["target"]), r["index"]))
    return records, peaks, time.perf_counter() - t0


def bench_fuzz(cases: int, seed: int = 0, targets: list[str] | None = None, jobs: int = 1) -> dict:
    """``cases`` fuzz cases over ``targets`` (default all, shared by ``split_cases``): counts of
    cases, domain errors, internal errors, hangs, unbounded messages and over-memory cases per
    target and in total, peak RSS (MB), wall time, the failure classes and the first failures."""
    counts = split_cases(cases, targets)
    records, peaks, wall = run_cases(counts, seed, jobs)
    return summarize(records, peaks, wall, seed)
