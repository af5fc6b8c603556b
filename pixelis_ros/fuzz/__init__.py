"""Our own fuzzers: seeded malformed inputs against the agent loop, the image codec, the bag
reader and model folders, each case in a worker process with a time limit and its peak RSS.

Issue #13 found, from outside, inputs that hang the node (a renderer loop, quadratic regexes),
crash it (lone surrogates, 4,300-digit integers, OpenCV assertions), blow its memory (forged
image headers) or echo megabytes back. These targets make the same kinds of input from a seed,
so a fix stays fixed: ``bench_fuzz`` runs a number of cases and counts what escaped;
``tests/test_fuzz.py`` runs a few hundred and asserts that nothing did.

A case ends in one of four ways: ``ok``; ``error`` — one of our domain errors (the message is
kept and its length checked); ``internal`` — any other exception escaping, or a failure the code
under test caught only as a last line of defence (an episode's ``internal_error``); ``hang`` —
over its time limit (the worker is killed and a new one takes the next case). Two more checks
apply to every case: every error message the user would see is at most ``MAX_MESSAGE_CHARS``
long, and no case raises the worker's peak RSS by more than ``MAX_CASE_MB``.
"""

from pixelis_ros.fuzz.run import MAX_CASE_MB, MAX_MESSAGE_CHARS, TARGETS, bench_fuzz, split_cases

__all__ = ["MAX_CASE_MB", "MAX_MESSAGE_CHARS", "TARGETS", "bench_fuzz", "split_cases"]
