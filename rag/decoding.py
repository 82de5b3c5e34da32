"""The token-level pieces of one generation: seeded sampling and stop sequences.

``make_sampler`` samples with a private ``torch.Generator`` (a seed gives the same text
whatever other threads do with the global RNG); ``make_criteria`` stops ``generate()`` on
cancellation or when a stop string appears; ``first_stop`` and ``held_back`` decide how much
of the streamed text may be shown before a stop string could still complete. Used by
``rag.generate``; torch and transformers are imported when a generation starts.
"""

from __future__ import annotations


def make_sampler(temperature: float, top_p: float, top_k: int, seed: int):
    import torch
    from transformers import LogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    class SeededSampler(LogitsProcessor):
        """Samples the next token with a private torch.Generator, then leaves only that token
        selectable, so generate()'s greedy step picks it. The global RNG is never used."""

        def __init__(self):
            self.warpers = [TemperatureLogitsWarper(temperature)]
            if top_k:
                self.warpers.append(TopKLogitsWarper(top_k=top_k))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=top_p))
            self.rng: torch.Generator | None = None

        def __call__(self, input_ids, scores):
            for w in self.warpers:
                scores = w(input_ids, scores)
            if self.rng is None or self.rng.device != scores.device:
                self.rng = torch.Generator(device=scores.device)
                self.rng.manual_seed(seed)
            probs = torch.softmax(scores.float(), dim=-1)
            chosen = torch.multinomial(probs, num_samples=1, generator=self.rng)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, chosen, 0.0)

    return SeededSampler()


def make_criteria(tokenizer, prompt_len: int, stops: list[str], should_stop):
    import torch
    from transformers import StoppingCriteria

    class Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), bool(should_stop()), dtype=torch.bool, device=input_ids.device)

    class StopText(StoppingCriteria):
        """Decodes only the tail of the output: enough tokens for the longest stop string even
        when a Vietnamese letter is split over several byte-level tokens."""

        def __init__(self):
            self.tail = 4 * max(len(s) for s in stops) + 8
            self.hit = False

        def __call__(self, input_ids, scores, **kwargs):
            tail_ids = input_ids[0, prompt_len:][-self.tail :]
            text = tokenizer.decode(tail_ids, skip_special_tokens=True)
            hit = any(s in text for s in stops)
            self.hit = self.hit or hit
            return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)

    criteria = [Cancel()]
    stop_text = StopText() if stops else None
    if stop_text is not None:
        criteria.append(stop_text)
    return criteria, stop_text


def first_stop(text: str, stops: list[str], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that could be the start of a stop string."""
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:k]):
                hold = k
                break
    return hold
