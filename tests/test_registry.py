"""Every plugin family (tools, their backends, policy backends, task families) refuses a name twice
and answers an unknown name with its own error listing the known ones; a toolbox builds its tools
from the registry, and a node finds a bad backend at start-up."""

from __future__ import annotations

import pytest

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.registry import BACKENDS, load_policy
from pixelis_ros.registry import Registry
from pixelis_ros.sim.families import FAMILIES
from pixelis_ros.sim.families.base import FamilyError, family
from pixelis_ros.tools import TOOLS, ToolError, Toolbox, ToolboxConfig
from pixelis_ros.tools.ocr import OCR_BACKENDS
from pixelis_ros.tools.track import TRACK_BACKENDS


def test_registry_refuses_duplicates_and_names_the_known():
    r = Registry("widget", KeyError)
    r.register("a", 1)

    @r.register("b")
    def b():
        return 2

    assert r["b"] is b and sorted(r) == ["a", "b"]
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        r.register("a", 3)
    with pytest.raises(KeyError, match="unknown widget 'c'; known: a, b"):
        r["c"]
    with pytest.raises(KeyError) as e:
        r["x" * 10_000]
    assert len(str(e.value)) < 200  # a name can come from a model: never echoed whole


@pytest.mark.parametrize("registry, error, name", [
    (TOOLS, ToolError, "crop"), (OCR_BACKENDS, ToolError, "tesseract"), (TRACK_BACKENDS, ToolError, "kalman"),
    (BACKENDS, PolicyError, "jax"), (FAMILIES, FamilyError, "juggling"),
])
def test_each_family_raises_its_own_error(registry, error, name):
    with pytest.raises(error, match=f"unknown .*'{name}'; known: "):
        registry[name]


def test_family_lookup_and_backend_lookup_are_domain_errors_not_key_errors():
    with pytest.raises(FamilyError) as e:
        family("juggling")
    assert not isinstance(e.value, KeyError)
    assert family("counting").name == "counting"
    with pytest.raises(PolicyError, match="unknown policy backend 'jax'; known: onnx, tensorrt, torch"):
        load_policy("jax", "/nonexistent")


def test_toolbox_builds_from_the_registry_and_fails_early_with_the_tool_name():
    box = Toolbox(ToolboxConfig(zoom_target_side=300), enabled=["zoom", "temporal", "ocr"])
    box.build_all()
    assert box.tool("zoom").target_side == 300
    assert box.tool("temporal")._ocr is box.tool("ocr")  # one OCR engine, shared with the text predicate
    assert Toolbox(enabled=["zoom"]).tool("ocr") is None
    with pytest.raises(ToolError, match="tool track: unknown track backend 'kalman'"):
        Toolbox(ToolboxConfig(track_backend="kalman")).build_all()
    with pytest.raises(ToolError, match="tool segment: segment backend 'grabcut': bad options"):
        Toolbox(ToolboxConfig(segment_options={"checkpoint": "x.safetensors"})).build_all()
    with pytest.raises(ToolError, match="unknown tool.*'crop'"):
        Toolbox(enabled=["zoom", "crop"])


def test_node_refuses_to_start_with_a_bad_tool_backend():
    from pixelis_ros.node.agent_core import AgentNodeCore
    from pixelis_ros.node.config import AgentNodeConfig, ConfigError

    core = AgentNodeCore(AgentNodeConfig(track_backend="sam2", segment_checkpoint="/nonexistent/sam2.safetensors",
                                         accept_scripts=True), publish=lambda *a: None)
    with pytest.raises(ConfigError, match="the tools cannot start: tool track: .*sam2"):
        core.activate()
    assert core.agent is None  # nothing half-started
