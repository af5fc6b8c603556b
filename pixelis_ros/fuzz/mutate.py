"""Seeded mutations shared by the targets: of bytes (files, payloads) and of text (model output).

Every function takes the case's ``random.Random`` so a case is a pure function of its seed.
"""

from __future__ import annotations

import random

# Values that broke parsers and tools in issue #13, as JSON number/string text.
HUGE_INTS = ["9" * 20, "9" * 400, "9" * 4300, "9" * 4301, "9" * 20000, "-" + "9" * 5000]
BAD_NUMBERS = ["1e309", "-1e309", "1e308", "NaN", "Infinity", "-Infinity", "-0", "0.5", "1e-320", "2e9",
               "-2147483649", "18446744073709551616", "3.4028236e38", '"12"', "null", "true", "[]", "{}"]
ODD_STRINGS = ["\\ud800", "\\udfff", "\\ud800\\ud800", "\\u0000", "\\u200b", "\\ufeff", "\\u202e", "\\ud83d\\ude00",
               "\\n\\n", ""]
RAW_ODD = ["\ud800", "\udcff", "\x00", "\u200b", "\ufeff", "\u202e", "\U0001f600", "\r", "\x1b[2J", "\ufffd"]


def byte_flip(rng: random.Random, data: bytes, flips: int | None = None) -> bytes:
    out = bytearray(data)
    for _ in range(flips or rng.randint(1, 16)):
        if out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def byte_set(rng: random.Random, data: bytes) -> bytes:
    """Some bytes set to boundary values (0x00, 0xff, 0x7f, 0x80)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x7F, 0x80))
    return bytes(out)


def zero_range(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.choice((1, 8, 64, 512, 4096, len(data))))
    return data[:start] + bytes(end - start) + data[end:]


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))] if data else data


def splice(rng: random.Random, data: bytes) -> bytes:
    """A chunk of the data repeated or moved: breaks lengths and offsets while keeping structure."""
    if len(data) < 4:
        return data + data
    a, b = sorted(rng.sample(range(len(data)), 2))
    chunk = data[a:b][:4096]
    at = rng.randrange(len(data))
    return data[:at] + chunk * rng.randint(1, 4) + data[at:]


def random_bytes(rng: random.Random, n: int | None = None) -> bytes:
    return rng.randbytes(n if n is not None else rng.choice((0, 1, 7, 64, 1000, 20000)))


BYTE_MUTATIONS = {"flip": byte_flip, "set": byte_set, "zero": zero_range, "truncate": truncate, "splice": splice}


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One to three byte mutations; (their names joined by '+', the result)."""
    names = [rng.choice(sorted(BYTE_MUTATIONS)) for _ in range(rng.choice((1, 1, 2, 3)))]
    for name in names:
        data = BYTE_MUTATIONS[name](rng, data)
    return "+".join(names), data


def random_text(rng: random.Random, n: int) -> str:
    """Text of ``n`` code points from ASCII, markup, Unicode and lone surrogates."""
    pools = ("abc xyz 0123456789{}[]\",:<>/_\\", "<think></think><tool_call></tool_call><answer></answer>",
             "".join(RAW_ODD), "éß漢字😀𝔘")
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def decoded_bytes(rng: random.Random, n: int) -> str:
    """Random bytes as a decoder would give them to us (with replacement characters)."""
    return rng.randbytes(n).decode(rng.choice(("utf-8", "latin-1")), errors=rng.choice(("replace", "surrogateescape")))
