"""PixelisSim-v0: Gymnasium's checker, seeded determinism, the acting reward, gaze and truncation.

Image families only (one render per task) keep these fast; one test covers a video family."""

from __future__ import annotations

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")
pytest.importorskip("pixelis_ros.sim.world")  # not "mujoco": world.py must pick MUJOCO_GL=egl first

import pixelis_ros.sim  # noqa: E402,F401  (registers PixelisSim-v0)
from pixelis_ros.sim.env import PixelisSimEnv  # noqa: E402

IMAGE_FAMILIES = ["fine_detail", "counting", "spatial"]  # text loads OCR: slower, covered by check_env


def gaze(pan=0.0, tilt=0.0, zoom=0.0) -> dict:
    return {"gaze": np.array([pan, tilt, zoom], np.float32), "point": np.zeros(2, np.float32), "commit": 0}


def commit(x: float, y: float) -> dict:
    return {"gaze": np.zeros(3, np.float32), "point": np.array([x, y], np.float32), "commit": 1}


@pytest.fixture(scope="module")
def env():
    env = gymnasium.make("PixelisSim-v0", families=IMAGE_FAMILIES)
    yield env
    env.close()


def test_registered_and_passes_check_env():
    from gymnasium.utils.env_checker import check_env

    assert "PixelisSim-v0" in gymnasium.registry
    env = gymnasium.make("PixelisSim-v0", families=IMAGE_FAMILIES + ["text"], render_mode="rgb_array")
    try:
        check_env(env.unwrapped)
        env.reset(seed=3)
        frame = env.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    finally:
        env.close()


def test_unknown_family_is_rejected():
    with pytest.raises(ValueError, match="known"):
        PixelisSimEnv(families=["fine_detail", "juggling"])


def test_same_seed_same_observation_and_question():
    a = gymnasium.make("PixelisSim-v0", families=IMAGE_FAMILIES)
    b = gymnasium.make("PixelisSim-v0", families=IMAGE_FAMILIES)
    try:
        obs_a, info_a = a.reset(seed=11)
        obs_b, info_b = b.reset(seed=11)
        assert info_a["question"] == info_b["question"] and info_a["task_id"] == info_b["task_id"]
        assert np.array_equal(obs_a["rgb"], obs_b["rgb"]) and np.array_equal(obs_a["depth"], obs_b["depth"])
        obs_c, info_c = a.reset(seed=12)
        assert info_c["task_id"] != info_a["task_id"]
    finally:
        a.close()
        b.close()


def test_two_live_envs_do_not_share_textures():
    """Regression: World uploaded sign/floor textures into whichever GL context was current, so
    with two envs alive one env's signs showed the other's (or a previous scene's) text."""
    a = gymnasium.make("PixelisSim-v0", families=["text"])
    b = gymnasium.make("PixelisSim-v0", families=["text"])
    try:
        a.reset(seed=12)  # a's context now holds seed 12's signs
        obs_b, info_b = b.reset(seed=11)  # b's context is created and made current
        obs_a, info_a = a.reset(seed=11)
        assert info_a["task_id"] == info_b["task_id"]
        assert np.array_equal(obs_a["rgb"], obs_b["rgb"])
    finally:
        a.close()
        b.close()


def test_observation_is_finite_and_in_space(env):
    obs, info = env.reset(seed=5)
    assert env.observation_space.contains(obs)
    assert np.isfinite(obs["depth"]).all() and obs["depth"].min() > 0
    assert set(info) >= {"question", "family", "answer", "task_id", "camera"}
    assert info["camera"] == {"pan": 0.0, "tilt": -33.0, "fovy": 60.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_commit_on_target_rewards_and_elsewhere_does_not(env, seed):
    env.reset(seed=seed)
    task = env.unwrapped.task
    x1, y1, x2, y2 = task.target_boxes[0]
    _, reward, terminated, truncated, _ = env.step(commit((x1 + x2) / 2 / 320, (y1 + y2) / 2 / 240))
    assert (reward, terminated, truncated) == (1.0, True, False)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(commit(0.5, 0.5))

    env.reset(seed=seed)
    # A corner far from every target (targets sit on the table, never in a corner of the view).
    corners = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    boxes = task.target_boxes
    far = max(corners, key=lambda c: min(abs(c[0] * 320 - (b[0] + b[2]) / 2) + abs(c[1] * 240 - (b[1] + b[3]) / 2) for b in boxes))
    _, reward, terminated, _, _ = env.step(commit(*far))
    assert (reward, terminated) == (0.0, True)


def test_zoom_changes_view_and_narrows_fovy(env):
    obs0, info0 = env.reset(seed=7)
    obs1, reward, terminated, truncated, info1 = env.step(gaze(zoom=1.0))
    assert (reward, terminated, truncated) == (0.0, False, False)
    diff = np.abs(obs1["rgb"].astype(np.int16) - obs0["rgb"].astype(np.int16)).mean()
    assert diff > 5.0, diff
    assert info1["camera"]["fovy"] == pytest.approx(info0["camera"]["fovy"] / np.exp(0.3), rel=1e-5)


def test_reward_follows_the_target_after_gaze(env):
    """After zooming the target's pixels move: the default-view centre no longer scores by luck,
    the target's box in the current view does."""
    env.reset(seed=0)
    env.step(gaze(pan=-0.5, zoom=1.0))
    boxes = env.unwrapped.target_boxes()
    assert boxes, "the target left the view"
    x1, y1, x2, y2 = boxes[0]
    _, reward, terminated, _, _ = env.step(commit((x1 + x2) / 2 / 320, (y1 + y2) / 2 / 240))
    assert (reward, terminated) == (1.0, True)


def test_truncated_after_max_steps():
    env = gymnasium.make("PixelisSim-v0", families=["fine_detail"], max_steps=3)
    try:
        env.reset(seed=2)
        flags = [env.step(gaze(pan=0.1))[2:4] for _ in range(3)]
        assert flags == [(False, False), (False, False), (False, True)]
    finally:
        env.close()


def test_video_family_observes_the_clip_end():
    env = gymnasium.make("PixelisSim-v0", families=["tracking"])
    try:
        _, info = env.reset(seed=4)
        task = env.unwrapped.task
        assert len(task.frames) > 1 and info["time"] == task.frames[-1].stamp > 0
        x1, y1, x2, y2 = task.target_boxes[0]
        assert env.step(commit((x1 + x2) / 2 / 320, (y1 + y2) / 2 / 240))[1] == 1.0
    finally:
        env.close()
