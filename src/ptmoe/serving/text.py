"""Token ids -> text deltas for one request, with stop strings. One place for both engines, so a
streamed answer is the same text as the whole one: each delta is the newly decoded suffix, held back
while it may still be the start of a stop string or ends in an incomplete UTF-8 character."""

from __future__ import annotations

import threading

# one lock for every tokenizer call: a fast tokenizer is not safe to use from two threads at once
TOKENIZER_LOCK = threading.Lock()


class TextStream:
    def __init__(self, tokenizer, stop: list[str] | None = None, eos_ids=()):
        self.tokenizer, self.stop, self.eos = tokenizer, [s for s in (stop or []) if s], set(eos_ids)
        self.tokens: list[int] = []
        self.text = ""  # the answer so far (cut at a stop string once one appears)
        self.sent = 0  # characters of self.text already handed out as deltas
        self.stopped = False  # a stop string or EOS ended it

    def push(self, token: int) -> str:
        """Add a token; returns the text that can be sent now. Sets .stopped on EOS or a stop string."""
        if self.stopped:
            return ""
        if token in self.eos:
            self.stopped = True
            return self.flush()
        self.tokens.append(token)
        with TOKENIZER_LOCK:
            text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self.flush()
        self.text = text
        hold = max((len(s) - 1 for s in self.stop), default=0)
        safe = len(text) - hold
        while safe > self.sent and text[safe - 1] == "\ufffd":  # wait for the rest of a character
            safe -= 1
        return self._take(safe)

    def flush(self) -> str:
        """Everything not yet sent (at the end of the request)."""
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta = self.text[self.sent : upto]
        self.sent = upto
        return delta
