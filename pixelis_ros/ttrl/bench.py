"""``pixelis bench ttrl``: what test-time RL costs on this machine, with the bundled model.

- **update**: one test-time update from N=4 sampled trajectories of one shifted-suite query — the
  vote, the LoRA steps with the KL to the EMA, the corridor's probe KL, the EMA step and the drift
  check — timed over the same trajectories ``runs`` times (the adapter restored between runs);
  sampling the trajectories is reported beside it (``rollout_s``), it is the agent's own cost.
- **swap**: an adapter into the ONNX Runtime policy: the worker's side (``offer_ms``: write the
  ONNX Runtime adapter file, load it) and the serving thread's (``swap_ms``: activate it between
  two episodes).
- **serving**: greedy episodes on ONNX Runtime (1 thread) without and with the worker processing
  queries back to back on a background thread (1 torch thread, lowered priority, no budget: the
  worst case); p50/p99 episode latency and their ratio, in one process, the same episodes in both.
"""

from __future__ import annotations

import statistics
import threading
import time

from pixelis_ros.progress import progress as progress_bar


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def bench_ttrl(runs: int = 5, episodes: int = 12) -> dict:
    import torch

    from pixelis_ros.agent import Agent, AgentLimits
    from pixelis_ros.policy.bundled import bundled_model, cached_onnx
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.policy.onnx import load_onnx_policy
    from pixelis_ros.sim.suites import iter_tasks, load_suite
    from pixelis_ros.tools import Toolbox
    from pixelis_ros.training.rft_rollout import rollout_group
    from pixelis_ros.ttrl.config import TTRLConfig
    from pixelis_ros.ttrl.learner import ANCHOR, TRAINED
    from pixelis_ros.ttrl.online import TestTimeRL
    from pixelis_ros.ttrl.serving import SwappablePolicy

    config = TTRLConfig(num_trajectories=4, threads=2)
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    model = bundled_model()
    toolbox = Toolbox()
    ttrl = TestTimeRL(load_hf_policy(model, heads="auto", max_new_tokens=config.max_new_tokens), config, toolbox)
    tasks = list(iter_tasks(load_suite("shifted"), 24))

    # --- one update from N = 4 trajectories (of the first query whose vote passes) ----------------
    from pixelis_ros.ttrl.memory import embed
    from pixelis_ros.ttrl.vote import vote

    found = None
    for task in tasks:
        t0 = time.perf_counter()
        found = rollout_group(ttrl.sampler, task, toolbox, config.num_trajectories, config.max_steps_per_episode)
        rollout_s = time.perf_counter() - t0
        if vote([t.episode for t in found], config.consensus_share, config.consensus_min, config.region_iou).passed:
            break
    else:
        raise RuntimeError("no query of the first 24 shifted episodes reached consensus; cannot time an update")
    vector = embed(task.question, task.frames[-1].image)
    item = ttrl.memory.add(task.question, vector)
    start = (ttrl.learner.state(TRAINED), ttrl.learner.state(ANCHOR))
    update_s = []
    for _ in progress_bar(range(runs), desc="bench ttrl: updates", unit="update"):
        ttrl.learner.load_state(start[0], TRAINED)
        ttrl.learner.load_state(start[1], ANCHOR)
        t0 = time.perf_counter()
        outcome = ttrl.learn(found, item, vector, {})
        update_s.append(time.perf_counter() - t0)

    # --- the adapter swap into ONNX Runtime ----------------------------------------------------
    onnx_dir = cached_onnx(model, config.lora_r, config.lora_alpha)
    serving = SwappablePolicy(load_onnx_policy(onnx_dir, intra_op_threads=1), config.lora_r, config.lora_alpha)
    offer_ms, swap_ms = [], []
    for version in range(1, runs + 1):
        offer_ms.append(serving.offer(version, ttrl.learner.state(TRAINED)) * 1000)
        serving.reset()
        swap_ms.append(serving.last_swap_ms)

    # --- serving latency without and with the worker -------------------------------------------
    agent = Agent(serving, toolbox, AgentLimits(max_steps=config.max_steps_per_episode))
    served = tasks[:episodes]

    def serve() -> list[float]:
        out = []
        for task in served:
            t0 = time.perf_counter()
            agent.run(task.question, task.frames)
            out.append((time.perf_counter() - t0) * 1000)
        return out

    serve()  # warm-up: ONNX Runtime's first runs allocate
    alone = serve()
    stop, worked = threading.Event(), [0]
    torch.set_num_threads(1)

    def work() -> None:
        from pixelis_ros.ttrl.worker import lower_priority

        lower_priority()  # as the node's worker does
        while not stop.is_set():
            task = tasks[(worked[0] + episodes) % len(tasks)]
            ttrl.process(task.question, task.frames)
            worked[0] += 1

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    with_worker = serve()
    stop.set()
    thread.join()
    return {
        "update": {"trajectories": config.num_trajectories, "median_s": round(statistics.median(update_s), 3),
                   "runs_s": [round(v, 3) for v in update_s], "sequences": outcome.get("sequences"),
                   "decision": outcome["decision"], "rollout_s": round(rollout_s, 3), "threads": config.threads},
        "swap": {"offer_ms": round(statistics.median(offer_ms), 2), "swap_ms": round(statistics.median(swap_ms), 3),
                 "onnx_folder": str(onnx_dir)},
        "serving": {"episodes": len(served), "p50_ms": {"alone": round(statistics.median(alone), 1),
                                                        "with_worker": round(statistics.median(with_worker), 1)},
                    "p99_ms": {"alone": round(_p99(alone), 1), "with_worker": round(_p99(with_worker), 1)},
                    "p99_ratio": round(_p99(with_worker) / _p99(alone), 3),
                    "p50_ratio": round(statistics.median(with_worker) / statistics.median(alone), 3),
                    "worker_queries_during_run": worked[0]},
    }
