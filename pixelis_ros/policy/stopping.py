"""Where a generated turn ends: at ``</tool_call>``, ``</answer>`` or an end-of-sequence token.

The tiny models' tokenizers hold every CoTA tag as one token, but released Qwen tokenizers do not
(``</answer>`` is several tokens in Qwen2.5-VL and Qwen3-VL), so a stop is a token id *or* a
string appearing in the decoded tail. ``StopRule`` works on plain token id lists; the torch
backend wraps it as a transformers ``StoppingCriteria`` and the ONNX runtime calls it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

STOP_STRINGS = ("</tool_call>", "</answer>")


@dataclass
class StopRule:
    """Stop conditions for one tokenizer."""

    tokenizer: object
    """A transformers tokenizer (``decode``, ``encode``)."""
    eos_ids: tuple[int, ...]
    """Token ids that end the sequence (``<|im_end|>``, ``<|endoftext|>``); not part of the text."""
    stop_strings: tuple[str, ...] = STOP_STRINGS
    """Strings that end a turn; kept in the text."""
    single_ids: dict[int, str] = field(init=False)
    """Stop strings that are one token, by id (checked without decoding)."""
    tail_tokens: int = field(init=False)
    """How many trailing tokens to decode to see a multi-token stop string."""

    def __post_init__(self) -> None:
        self.single_ids = {}
        longest = 1
        for s in self.stop_strings:
            ids = self.tokenizer.encode(s, add_special_tokens=False)
            if len(ids) == 1:
                self.single_ids[ids[0]] = s
            longest = max(longest, len(ids), len(s))  # a token covers at least one character
        self.tail_tokens = longest + 1

    def stop_index(self, ids: list[int]) -> int | None:
        """Length of the turn within generated ``ids`` (stop string kept, eos dropped), or None
        when the turn has not ended."""
        for i, tok in enumerate(ids):
            if tok in self.eos_ids:
                return i
            if tok in self.single_ids:
                return i + 1
            text = self.tokenizer.decode(ids[max(0, i + 1 - self.tail_tokens):i + 1], skip_special_tokens=False)
            if any(s in text for s in self.stop_strings):
                return i + 1
        return None

    def done(self, ids: list[int]) -> bool:
        """Whether the last token of ``ids`` ends the turn (checked once per new token)."""
        if not ids:
            return False
        last = ids[-1]
        if last in self.eos_ids or last in self.single_ids:
            return True
        text = self.tokenizer.decode(ids[-self.tail_tokens:], skip_special_tokens=False)
        return any(s in text for s in self.stop_strings)

    def cut(self, text: str) -> str:
        """``text`` up to and including the first stop string."""
        ends = [text.find(s) + len(s) for s in self.stop_strings if s in text]
        return text[:min(ends)] if ends else text


def stopping_criteria(rule: StopRule, prompt_len: int):
    """A transformers ``StoppingCriteria`` applying ``rule`` to each row's generated tokens."""
    import torch
    from transformers import StoppingCriteria

    class _Criteria(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            rows = [rule.done(row[prompt_len:].tolist()) for row in input_ids]
            return torch.tensor(rows, dtype=torch.bool, device=input_ids.device)

    return _Criteria()
