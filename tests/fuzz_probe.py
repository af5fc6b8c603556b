"""A fuzz target whose cases end in each way on purpose, to check the fuzz runner classifies them:
ok, a domain error, an internal error, an unbounded message, a hang, an over-memory case, a crash."""

from __future__ import annotations

import os
import random
import time

from pixelis_ros.fuzz.target import Case, Target

KINDS = ["ok", "domain", "internal", "long_message", "hang", "memory", "crash"]


class ProbeError(ValueError):
    pass


class ProbeTarget(Target):
    name = "probe"
    domain_errors = (ProbeError,)

    def make(self, rng: random.Random) -> Case:
        kind = KINDS[rng.randrange(len(KINDS))]
        return Case(kind, kind, kind)

    def run(self, case: Case) -> list[str]:
        kind = case.data
        if kind == "domain":
            raise ProbeError("a bad input, said in our words")
        if kind == "internal":
            return {}["missing"]
        if kind == "long_message":
            raise ProbeError("x" * 5000)
        if kind == "hang":
            while True:
                time.sleep(0.01)
        if kind == "memory":
            block = bytearray(800 * 1024 * 1024)  # zero-filled, so every page is touched
            block[::4096] = b"\1" * len(block[::4096])
        if kind == "crash":
            os._exit(3)
        return []
