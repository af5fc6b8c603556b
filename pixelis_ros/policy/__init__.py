"""Policies: what writes the CoTA turns. Backends load by name through ``registry.load_policy``
(``torch`` = ``hf.py``); the offline tiny-model builder is ``builder.py``."""

from pixelis_ros.policy.base import Generation, Policy, PolicyError
from pixelis_ros.policy.scripted import ScriptedPolicy

__all__ = ["Generation", "Policy", "PolicyError", "ScriptedPolicy"]
