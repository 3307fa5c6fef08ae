"""The confidence gate: open a tool call only when the model is sure enough.

llama.cpp gives the model's distribution over the next token at every step. THAU's
calls open with ``<`` (SmolLM2's tokenizer: ``<``, ``TO``, ``OL``, ``:``), so the
probability of the token that opened ``<TOOL:`` is the model's confidence that a call
belongs there. Below the threshold the embedded backend takes the call back and lets the
model go on in plain text, with the opening tokens banned for that one step.

:class:`TokenRecorder` is the llama.cpp logits processor that measures it; the stream
logic lives in :mod:`thau.chat.backends.embedded`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_THRESHOLD: float | None = None
"""The gate of THAU adapters when no setting says otherwise: off, not even measured,
since no threshold paid on the shipped adapter's dev set (docs/default-adapter.md).
A setting of 0 measures each opening without refusing (``thau-train eval`` uses it)."""

MAX_REFUSALS = 3
"""After this many refused openings in one reply the opening tokens stay banned."""


@dataclass(frozen=True)
class GateDecision:
    """One ``<TOOL:`` the model began: its opening token's probability, and whether the
    call went ahead."""

    probability: float | None
    opened: bool


def opening_token_ids(llm: Any) -> list[int]:
    """The tokens that can begin ``<TOOL:``: their text ends in ``<``, ``<T``, ... (for
    SmolLM2: ``<``, `` <``, ``.<``, ``?<`` and a few more)."""
    found = []
    for token in range(llm.n_vocab()):
        try:
            text = llm.detokenize([token]).decode("utf-8")
        except (UnicodeDecodeError, ValueError):
            continue
        at = text.rfind("<")
        if at >= 0 and "<TOOL:".startswith(text[at:]):
            found.append(token)
    return found


@dataclass
class TokenRecorder:
    """A llama.cpp logits processor: the probability the model gave each token it then
    chose, and an optional ban on ``banned`` tokens (at the first step, or always).

    Probabilities are the model's own (softmax of the raw logits, before the ban). A
    token's probability is known at the next step, when llama.cpp passes it in
    ``input_ids``; the last token of a run is therefore never recorded.
    """

    banned: Sequence[int] = ()
    ban_first: bool = False
    ban_always: bool = False
    chosen: list[tuple[int, float]] = field(default_factory=list)
    _last: Any = None
    _steps: int = 0

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        import numpy as np

        if self._last is not None and len(input_ids):
            token = int(input_ids[-1])
            self.chosen.append((token, float(self._last[token])))
        shifted = np.exp(logits - np.max(logits))
        self._last = shifted / shifted.sum()
        ban = self.ban_always or (self.ban_first and self._steps == 0)
        self._steps += 1
        if ban and len(self.banned):
            logits = np.array(logits, copy=True)
            logits[list(self.banned)] = -np.inf
        return logits

    def opening(self, llm: Any, text: str, at: int) -> tuple[int, float | None]:
        """For the ``<`` at character ``at`` of ``text`` (this run's output): the character
        offset where the token holding it began, and that token's probability (``None``
        when it was not recorded)."""
        target = len(text[:at].encode("utf-8"))
        done = b""
        for token, probability in self.chosen:
            piece = llm.detokenize([token])
            if len(done) <= target < len(done) + len(piece):
                return len(done.decode("utf-8", errors="ignore")), probability
            done += piece
        return at, None
