"""A faster lm-eval model for multiple-choice scoring: each shared context is encoded once.

Owns `PrefixSharingLM`, a subclass of lm-eval's `HFLM` (the released class, not a fork) that
overrides only `_loglikelihood_tokens`. lm-eval scores a multiple-choice document by running
context + choice once per choice, so the context (often most of the tokens) is encoded 2-4
times. Here the requests are grouped by their context tokens; the context runs once with the
KV / SSM cache (logits of its last position only), the cache is repeated for the choices, and
the choices run as one right-padded batch on top of it. Right padding never changes the
valid positions of a causal model, so no attention mask is needed. The result per request is
what lm-eval computes: (sum of the continuation's log-probabilities, whether every token is
the argmax). Requests longer than the model's maximum length go to HFLM's own code, and so do
recurrent models (Mamba): transformers' Mamba mixer treats a multi-token step after a cached
prefix as a fresh prefill, so its state cannot be continued over a whole choice.
"""
from __future__ import annotations

import logging
from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from bench.adapters import ADAPTERS
from bench.evaluation.latency import cache_kwarg

log = logging.getLogger(__name__)
Request = tuple[tuple[str, str], list[int], list[int]]


def shares_contexts(model: torch.nn.Module) -> bool:
    """Whether a context's cache can be continued by a multi-token step: attention models of a
    known architecture only (not recurrent ones, and not an architecture we have no adapter for)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return any(model_type in a.model_types and not a.recurrent for a in ADAPTERS.values())


class PrefixSharingLM(HFLM):
    """HFLM whose loglikelihood encodes each distinct context once (see the module docstring)."""

    @torch.no_grad()
    def _score_group(self, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
        key = cache_kwarg(self.model)
        ids = torch.tensor([ctx], device=self.device)                           # [1, Lc]
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        first = F.log_softmax(out.logits[0, -1].float(), dim=-1)                # [V]: cont[0]
        cache = getattr(out, key)                                               # filled by use_cache
        n, width = len(conts), max(len(c) for c in conts) - 1
        results = []
        if width > 0:
            cache.batch_repeat_interleave(n)
            pad = self.tokenizer.pad_token_id or 0
            rest = torch.full((n, width), pad, dtype=torch.long, device=self.device)  # [n, W]
            for i, c in enumerate(conts):
                rest[i, :len(c) - 1] = torch.tensor(c[:-1])
            logits = self.model(input_ids=rest, use_cache=True, **{key: cache}).logits
            logp = F.log_softmax(logits.float(), dim=-1)                        # [n, W, V]
        for i, c in enumerate(conts):
            total = float(first[c[0]])
            greedy = int(first.argmax()) == c[0]
            if len(c) > 1:
                target = torch.tensor(c[1:], device=self.device)                 # [len-1]
                lp = logp[i, :len(c) - 1]                                        # [len-1, V]
                total += float(lp.gather(-1, target[:, None]).sum())
                greedy = greedy and bool((lp.argmax(-1) == target).all())
            results.append((total, greedy))
        return results

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        if self.backend != "causal" or not shares_contexts(self.model):
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        long: list[int] = []
        for i, (_, ctx, cont) in enumerate(requests):
            if not ctx or not cont or len(ctx) + len(cont) > self.max_length:
                long.append(i)
            else:
                groups[tuple(ctx)].append(i)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc="loglikelihood (shared contexts)")
        # longest first, like lm-eval (memory problems show up at once)
        for ctx in sorted(groups, key=lambda c: -(len(c) + max(len(requests[i][2]) for i in groups[c]))):
            members = groups[ctx]
            scored = self._score_group(list(ctx), [requests[i][2] for i in members])
            for i, res in zip(members, scored):
                results[i] = res
                self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
            bar.update(len(members))
        bar.close()
        if long:
            for i, res in zip(long, super()._loglikelihood_tokens([requests[i] for i in long],
                                                                   disable_tqdm, override_bs)):
                results[i] = res
        return results  # type: ignore[return-value]
