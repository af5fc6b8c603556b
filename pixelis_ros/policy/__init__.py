"""Policies: what writes the CoTA turns. Backends (hf, onnx, tensorrt) register here later."""

from pixelis_ros.policy.base import Generation, Policy, PolicyError
from pixelis_ros.policy.scripted import ScriptedPolicy

__all__ = ["Generation", "Policy", "PolicyError", "ScriptedPolicy"]
