"""A small decoder-only transformer with a KV cache, and its adapter to the decoding protocol.

Pre-LayerNorm blocks (Radford et al. 2019, GPT-2) with learned position
embeddings and causal multi-head attention (Vaswani et al. 2017, eq. 1). The
KV cache is a dict of arrays, every leaf per row::

    k, v:    [layers, N, S, heads, head_dim]   layer-major (particle axis 1)
    mask:    [N, S] bool   which slots hold a real token (particle axis 0)
    length:  [N] int32     real tokens per row = next position id (axis 0)
    fill:    [N] int32     slots used per row = next slot to write (axis 0)

A call writes a row's ``T`` new tokens into its slots ``[fill, fill + T)``;
a token marked invalid (a left pad of a prompt) is written but masked and does
not advance the row's position. A row whose tokens are all invalid (held: it
has finished, or it waits while other rows finish their reasoning step) uses
no slot, so a row never needs more slots than its own prompt plus the tokens it
generates, however long the other rows' steps are. The cache pytree matches
``CACHE_AXES`` for the SMC core (``inferax.sampling.particles``): gathering
rows gathers every leaf. The full forward pass (``__call__``) runs the same
blocks over a fresh cache of exactly ``T`` slots.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

CACHE_AXES = {"k": 1, "v": 1, "mask": 0, "length": 0, "fill": 0}
_NEG = -1e9


class Transformer(nn.Module):
    """Decoder-only transformer; ``out_dim=None`` gives vocabulary logits.

    Attributes:
        vocab_size: number of token ids.
        num_layers: transformer blocks.
        d_model: residual width.
        num_heads: attention heads (``d_model`` must be divisible by it).
        max_len: learned position embeddings (positions beyond are clipped).
        out_dim: width of the output head; ``None`` means ``vocab_size``
            (a language model), 1 gives a scalar per position (a reward model).
        mlp_ratio: hidden width of the MLP over ``d_model``.
    """

    vocab_size: int
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    max_len: int = 64
    out_dim: int | None = None
    mlp_ratio: int = 4

    def setup(self):
        if self.d_model % self.num_heads:
            raise ValueError(
                f"num_heads: expected a divisor of d_model = {self.d_model}, got {self.num_heads}"
            )
        self.embed = nn.Embed(self.vocab_size, self.d_model)
        self.pos = nn.Embed(self.max_len, self.d_model)
        hd = self.d_model // self.num_heads
        self.qkv = [
            nn.DenseGeneral((3, self.num_heads, hd), name=f"qkv_{i}")
            for i in range(self.num_layers)
        ]
        self.proj = [
            nn.DenseGeneral(self.d_model, axis=(-2, -1), name=f"proj_{i}")
            for i in range(self.num_layers)
        ]
        self.up = [nn.Dense(self.mlp_ratio * self.d_model) for _ in range(self.num_layers)]
        self.down = [nn.Dense(self.d_model) for _ in range(self.num_layers)]
        self.ln1 = [nn.LayerNorm() for _ in range(self.num_layers)]
        self.ln2 = [nn.LayerNorm() for _ in range(self.num_layers)]
        self.ln_f = nn.LayerNorm()
        self.head = nn.Dense(self.vocab_size if self.out_dim is None else self.out_dim)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """An empty cache for ``batch_size`` rows and ``max_len`` slots (no parameters needed)."""
        shape = (self.num_layers, batch_size, max_len, self.num_heads, self.head_dim)
        return {
            "k": jnp.zeros(shape, jnp.float32),
            "v": jnp.zeros(shape, jnp.float32),
            "mask": jnp.zeros((batch_size, max_len), bool),
            "length": jnp.zeros((batch_size,), jnp.int32),
            "fill": jnp.zeros((batch_size,), jnp.int32),
        }

    def step(self, tokens: jax.Array, valid: jax.Array, cache: dict) -> tuple[jax.Array, dict]:
        """Runs ``tokens [N, T]`` (``valid [N, T]`` bool) through the cache.

        Returns:
            ``(outputs [N, T, out], cache)`` with each row's new keys and
                values written at its slots ``[fill, fill + T)`` (none for a row
                whose tokens are all invalid).
        """
        n, t = tokens.shape
        valid = valid.astype(bool)
        vi = valid.astype(jnp.int32)
        positions = cache["length"][:, None] + jnp.cumsum(vi, axis=1) - vi
        positions = jnp.clip(positions, 0, self.max_len - 1)
        rows = jnp.arange(n)[:, None]
        slots = cache["fill"][:, None] + jnp.arange(t)[None]  # [N, T]
        # Slots past the cache's end are dropped (the decoding loops never get there:
        # a row's slots are its prompt and its own generated tokens).
        mask = cache["mask"].at[rows, slots].set(valid, mode="drop")
        s = mask.shape[1]
        causal = jnp.arange(s)[None, None, :] <= slots[:, :, None]  # [N, T, S]
        allowed = mask[:, None, :] & causal
        bias = jnp.where(allowed, 0.0, _NEG)[:, None]  # [N, 1, T, S]
        x = self.embed(tokens) + self.pos(positions)
        # Written in place into the layer-major arrays (no per-layer copies to restack).
        k_all, v_all = cache["k"], cache["v"]
        for i in range(self.num_layers):
            qkv = self.qkv[i](self.ln1[i](x))  # [N, T, 3, H, D]
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            k_all = k_all.at[i, rows, slots].set(k.astype(k_all.dtype), mode="drop")
            v_all = v_all.at[i, rows, slots].set(v.astype(v_all.dtype), mode="drop")
            kc, vc = k_all[i], v_all[i]
            logits = jnp.einsum("nthd,nshd->nhts", q, kc) / jnp.sqrt(self.head_dim) + bias
            att = jax.nn.softmax(logits, axis=-1)
            x = x + self.proj[i](jnp.einsum("nhts,nshd->nthd", att, vc))
            h = self.ln2[i](x)
            x = x + self.down[i](nn.gelu(self.up[i](h)))
        out = self.head(self.ln_f(x))
        new = {
            "k": k_all,
            "v": v_all,
            "mask": mask,
            "length": cache["length"] + jnp.sum(vi, axis=1),
            "fill": cache["fill"] + jnp.where(jnp.any(valid, axis=1), t, 0),
        }
        return out, new

    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Full forward pass: ``tokens [N, T] -> outputs [N, T, out]`` (causal).

        ``mask [N, T]`` marks real tokens (pads are neither attended to nor
        counted in positions); default all real.
        """
        if mask is None:
            mask = jnp.ones(tokens.shape, bool)
        out, _ = self.step(tokens, mask, self.init_cache(tokens.shape[0], tokens.shape[1]))
        return out


class LMFunctions(NamedTuple):
    """The decoding protocol of ``inferax.search.lm.decoding`` (duck-typed, Flax-free).

    Attributes:
        init_cache: ``(batch_size, max_len) -> cache``.
        prefill: ``(cache, tokens [N, P], mask [N, P]) -> (logits [N, V], cache)``,
            the logits after the last prompt position.
        decode_step: ``(cache, token [N], valid [N]) -> (logits [N, V], cache)``.
        cache_axes: the cache's particle axes (a pytree prefix).
        vocab_size: number of token ids.
        max_len: the longest sequence the model supports (None: unbounded).
    """

    init_cache: Any
    prefill: Any
    decode_step: Any
    cache_axes: Any
    vocab_size: int
    max_len: int | None = None


def lm_functions(model: Transformer, params: Any) -> LMFunctions:
    """Adapts a ``Transformer`` and its parameters to the decoding protocol."""
    if model.out_dim is not None:
        raise ValueError(f"model: expected a language model (out_dim=None), got {model.out_dim}")

    def prefill(cache, tokens, mask):
        out, cache = model.apply(params, tokens, mask, cache, method=Transformer.step)
        return out[:, -1], cache

    def decode_step(cache, token, valid):
        out, cache = model.apply(
            params, token[:, None], valid[:, None], cache, method=Transformer.step
        )
        return out[:, 0], cache

    return LMFunctions(
        init_cache=model.init_cache,
        prefill=prefill,
        decode_step=decode_step,
        cache_axes=CACHE_AXES,
        vocab_size=model.vocab_size,
        max_len=model.max_len,
    )


def init_params(model: Transformer, key: jax.Array, length: int = 8) -> Any:
    """Parameters of ``model`` initialised from ``key``."""
    return model.init(key, jnp.zeros((1, length), jnp.int32))
