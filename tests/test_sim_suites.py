"""Suites: the shipped YAML files load, validation names what is wrong, episodes are deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelis_ros.sim.families import FAMILIES
from pixelis_ros.sim.scene import Shift
from pixelis_ros.sim.suites import (FIELDS, SEED_STRIDE, Suite, SuiteError, family_schedule, iter_tasks, list_suites,
                                    load_suite, parse_suite, scene_seeds)

SHIPPED = ["shifted", "smoke", "test", "train", "val"]


def test_every_shipped_suite_loads():
    assert list_suites() == SHIPPED
    suites = {name: load_suite(name) for name in SHIPPED}
    for name, suite in suites.items():
        assert isinstance(suite, Suite) and suite.name == name
        assert set(suite.families) == set(FAMILIES), name
        assert (suite.width, suite.height) == (640, 480)
    assert (suites["train"].seed, suites["train"].episodes) == (0, 1000)
    assert (suites["val"].seed, suites["val"].episodes) == (100000, 120)
    assert (suites["test"].seed, suites["test"].episodes) == (200000, 120)
    shifted = suites["shifted"]
    assert shifted.seed == suites["test"].seed and shifted.scene == suites["test"].scene
    assert shifted.shift == Shift(lighting=0.6, tint=(1.0, 0.85, 0.7), texture="stripes", fonts="shifted", noise=6.0,
                                  camera_jitter=0.05)
    assert suites["test"].shift == Shift()
    # Seed ranges never overlap: train's last seed is below val's first, val's below test's.
    last = {n: s.seed + SEED_STRIDE * s.episodes - 1 for n, s in suites.items()}
    assert last["train"] < suites["val"].seed and last["val"] < suites["test"].seed
    assert last["test"] < suites["smoke"].seed
    assert suites["smoke"].episodes == len(FAMILIES)


def test_load_by_path_and_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("families: {text: 2, counting: 1}\n")
    suite = load_suite(path)
    assert suite.name == "mine" and suite.families == {"text": 2.0, "counting": 1.0}
    assert (suite.episodes, suite.seed, suite.width, suite.height, suite.shift) == (100, 0, 640, 480, Shift())
    assert load_suite(str(path)) == suite
    data = suite.to_json()
    assert set(data) == set(FIELDS)
    assert parse_suite(data) == suite


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


BASE = "families: {text: 1}\n"


@pytest.mark.parametrize("text, match", [
    ("families: {text: 1\n", r"suite\.yaml: invalid YAML: .*line \d+"),
    ("- text\n- counting\n", r"must be a YAML mapping .* got list"),
    ("episodes: 3\n", r"missing field 'families'"),
    (BASE + "epsiodes: 3\n", r"unknown field 'epsiodes'; allowed fields: \['name', 'families', 'episodes'"),
    (BASE + "episodes: ten\n", r"field 'episodes' must be an integer, got str \('ten'\)"),
    (BASE + "episodes: 0\n", r"field 'episodes' must be >= 1, got 0"),
    (BASE + "seed: 1.5\n", r"field 'seed' must be an integer, got float"),
    (BASE + "seed: -1\n", r"field 'seed' must be >= 0"),
    (BASE + "name: [a]\n", r"field 'name' must be a string, got list"),
    ("families: [text]\n", r"field 'families' must be a mapping, got list"),
    ("families: {}\n", r"field 'families' is empty"),
    ("families: {texts: 1}\n", r"unknown family 'texts'; known families: \['counting', 'fine_detail', 'spatial', "
                               r"'temporal', 'text', 'tracking'\]"),
    ("families: {text: 0}\n", r"family 'text' has weight 0; weights must be > 0"),
    ("families: {text: -2}\n", r"family 'text' has weight -2; weights must be > 0"),
    ("families: {text: heavy}\n", r"field 'families.text' must be a finite number, got str"),
    (BASE + "width: 641\n", r"field 'width' must be a positive multiple of 2, got 641"),
    (BASE + "height: 0\n", r"field 'height' must be a positive multiple of 2, got 0"),
    (BASE + "height: -480\n", r"field 'height' must be a positive multiple of 2, got -480"),
    (BASE + "width: 4096\n", r"field 'width' is 4096, above the world's offscreen buffer \(1280"),
    (BASE + "width: '640'\n", r"field 'width' must be an integer, got str"),
    (BASE + "clip: {frames: 20, fsp: 10}\n", r"unknown clip field 'fsp'; allowed clip fields: \['frames', 'fps'\]"),
    (BASE + "clip: {fps: 0}\n", r"field 'clip.fps' must be > 0"),
    (BASE + "clip: 20\n", r"field 'clip' must be a mapping, got int"),
    (BASE + "shift: {brightness: 0.5}\n", r"unknown shift field 'brightness'; allowed shift fields: \['lighting', 'tint', "
                                          r"'texture', 'fonts', 'noise', 'camera_jitter'\]"),
    (BASE + "shift: {tint: [1, 1]}\n", r"field 'shift.tint' must be a list of three numbers"),
    (BASE + "shift: {texture: marble}\n", r"field 'shift.texture' must be one of \['default', 'stripes', 'noise'\]"),
    (BASE + "shift: {fonts: comic}\n", r"field 'shift.fonts' must be one of \['default', 'shifted'\]"),
    (BASE + "shift: {noise: -1}\n", r"field 'shift.noise' must be >= 0"),
    (BASE + "shift: {lighting: true}\n", r"field 'shift.lighting' must be a finite number, got bool"),
    (BASE + "scene: {n_objects: [8, 4]}\n", r"field 'scene.n_objects' is a bad range: min 8 > max 4"),
    (BASE + "scene: {n_objects: [5, 13]}\n", r"field 'scene.n_objects' is a bad range: max 13 is above 12"),
    (BASE + "scene: {n_objects: [0, 3]}\n", r"field 'scene.n_objects' is a bad range: min 0 is below 1"),
    (BASE + "scene: {n_objects: 5}\n", r"field 'scene.n_objects' must be a \[min, max\] list of two integers, got int"),
    (BASE + "scene: {n_moving: [1, 2.5]}\n", r"field 'scene.n_moving\[1\]' must be an integer, got float"),
    (BASE + "scene: {n_objects: [2, 3], n_moving: [1, 4]}\n", r"field 'scene.n_moving' is a bad range: max 4 is above 3"),
    (BASE + "scene: {objects: [2, 3]}\n", r"unknown scene field 'objects'; allowed scene fields: \['n_objects'"),
])
def test_validation_errors(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(SuiteError, match=match) as info:
        load_suite(path)
    assert str(path) in str(info.value)  # every message names the file


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(SuiteError, match=r"unknown suite 'nope'; known suites: \['shifted', 'smoke', 'test', 'train', 'val'\]"):
        load_suite("nope")
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(tmp_path / "absent.yaml")
    assert issubclass(SuiteError, ValueError)


def test_weighted_schedule_is_exact_and_prefix_stable():
    suite = parse_suite({"families": {"text": 3, "counting": 1, "tracking": 2}})
    schedule = family_schedule(suite, 60)
    assert [schedule.count(f) for f in ("text", "counting", "tracking")] == [30, 10, 20]
    assert family_schedule(suite, 13) == schedule[:13]
    for k in range(0, 60, 6):  # every window of one period holds the exact mix
        window = schedule[k:k + 6]
        assert (window.count("text"), window.count("counting"), window.count("tracking")) == (3, 1, 2)
    even = family_schedule(load_suite("train"), 12)
    assert even[:6] == list(load_suite("train").families) and even[6:] == even[:6]


def test_scene_seeds_are_disjoint_per_episode():
    suite = load_suite("val")
    seen = set()
    for i in range(50):
        seeds = set(scene_seeds(suite, i))
        assert len(seeds) == SEED_STRIDE and not seeds & seen
        seen |= seeds
    assert min(seen) == suite.seed


def test_iter_tasks_is_deterministic_and_start_addresses_episodes():
    suite = load_suite("smoke")
    first = [t for t in iter_tasks(suite, episodes=4)]
    assert [t.family for t in first] == list(suite.families)[:4]
    assert all(t.seed in scene_seeds(suite, i) for i, t in enumerate(first))
    again = next(iter_tasks(suite, episodes=1, start=2))
    key = lambda t: (t.id, t.question, t.answer, t.trace)  # noqa: E731
    assert key(again) == key(first[2])


def test_a_family_that_cannot_be_posed_fails_with_its_seeds():
    # spatial needs two distinct visible objects: one object per scene never poses it.
    suite = parse_suite({"families": {"spatial": 1}, "scene": {"n_objects": [1, 1], "n_moving": [0, 0]}, "seed": 7,
                         "width": 320, "height": 240}, default_name="lonely")
    with pytest.raises(SuiteError, match=rf"suite 'lonely': episode 0 \(spatial\): none of scene seeds 7..{6 + SEED_STRIDE}"):
        next(iter_tasks(suite, episodes=1))
