"""Shared fixtures of the search tests."""

import jax.numpy as jnp
import pytest


class BrokenLM:
    """A decoding-protocol LM (the tree LM of ``step_tree``) with an extra float cache
    leaf ``junk``. ``mode`` (traced) 0: as ``inner``; 1: a NaN in ``junk`` only (the
    logits stay fine); 2: the logits of prompt 1's rows are NaN from the first decode
    step on."""

    def __init__(self, inner, mode):
        self.inner, self.mode = inner, mode
        self.vocab_size, self.max_len = inner.vocab_size, inner.max_len
        self.cache_axes = {"inner": inner.cache_axes, "junk": 0}

    def init_cache(self, batch_size, max_len):
        return {
            "inner": self.inner.init_cache(batch_size, max_len),
            "junk": jnp.zeros((batch_size,)),
        }

    def prefill(self, cache, tokens, mask):
        logits, inner = self.inner.prefill(cache["inner"], tokens, mask)
        return logits, dict(cache, inner=inner)

    def decode_step(self, cache, token, valid):
        logits, inner = self.inner.decode_step(cache["inner"], token, valid)
        bad = (inner["problem"] == 1)[:, None] & (self.mode == 2)
        junk = cache["junk"] + jnp.where(self.mode == 1, jnp.nan, 0.0)
        return jnp.where(bad, jnp.nan, logits), {"inner": inner, "junk": junk}


@pytest.fixture
def broken_lm():
    """``BrokenLM(inner, mode)``: a tree LM whose logits (or only its cache) go NaN."""
    return BrokenLM
