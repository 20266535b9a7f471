"""Energy-Based Transformers (Gladstone et al. 2025) and same-size feed-forward baselines.

An EBT maps a context ``x`` and a candidate ``y`` to a scalar energy ``E(x, y)``;
its prediction is ``argmin_y E`` found by gradient descent with a learnable
step size ``alpha`` (``inferax.sampling.energy.minimize``). Two tasks:

- **digits completion** (continuous): context = the top half of an 8x8 digit
  (32 pixels in [-1, 1]), candidate = the bottom half (32 pixels). Tokens are
  the 8 image rows (4 context rows, 4 candidate rows) embedded by one linear
  map plus a learned position embedding; a small pre-LayerNorm transformer
  pools them into one energy.
- **next token** (discrete) on the arithmetic traces (``models.arithmetic``):
  context = a sequence and a position ``t``, candidate = a logit vector ``y``
  over the vocabulary for token ``t + 1``; ``softmax(y) @ E_tok`` (the token
  embedding table) plus the position embedding of ``t + 1`` is appended to
  the embedded tokens ``<= t`` and the transformer's output at that slot gives
  the energy (the paper's recipe for text: predictions are distributions
  embedded before the energy network).

The baselines (``DigitsFF``, ``TokenFF``) use the same trunk, the same
embeddings and width, and predict in one forward pass from learned query
tokens: they cannot "think longer". Every module is written for one example
(leading batch axes are allowed) so that ``energy.minimize`` can ``vmap`` it.
Activations are smooth (GELU), so ``grad_y E`` is differentiable again, as the
training's second-order gradient needs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

ALPHA_MIN = 1e-4  # the paper's clamp of the learnable step size
ROWS, HALF = 4, 32  # digits: 4 rows of 8 pixels per half
_NEG = -1e9


class Trunk(nn.Module):
    """Pre-LayerNorm transformer blocks (Vaswani et al. 2017, eq. 1) on ``[..., T, d]``.

    Attributes:
        d_model: residual width.
        num_layers: blocks.
        num_heads: attention heads (a divisor of ``d_model``).
        mlp_ratio: MLP hidden width over ``d_model``.
    """

    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, keys_valid: jax.Array | None = None) -> jax.Array:
        if self.d_model % self.num_heads:
            raise ValueError(
                f"num_heads: expected a divisor of d_model = {self.d_model}, got {self.num_heads}"
            )
        hd = self.d_model // self.num_heads
        for _ in range(self.num_layers):
            qkv = nn.DenseGeneral((3, self.num_heads, hd))(nn.LayerNorm()(x))
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
            logits = jnp.einsum("...thd,...shd->...hts", q, k) / np.sqrt(hd)
            if keys_valid is not None:
                logits = jnp.where(keys_valid[..., None, None, :], logits, _NEG)
            att = jax.nn.softmax(logits, axis=-1)
            out = jnp.einsum("...hts,...shd->...thd", att, v)
            x = x + nn.DenseGeneral(self.d_model, axis=(-2, -1))(out)
            h = nn.LayerNorm()(x)
            x = x + nn.Dense(self.d_model)(nn.gelu(nn.Dense(self.mlp_ratio * self.d_model)(h)))
        return nn.LayerNorm()(x)


def _rows(half: jax.Array) -> jax.Array:
    return half.reshape(half.shape[:-1] + (ROWS, HALF // ROWS))


class DigitsEBT(nn.Module):
    """``E(top [..., 32], bottom [..., 32]) -> [...]``: energy of a completed digit."""

    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 4

    @nn.compact
    def __call__(self, context: jax.Array, y: jax.Array) -> jax.Array:
        rows = jnp.concatenate([_rows(context), _rows(y)], axis=-2)  # [..., 8, 8]
        pos = self.param("pos", nn.initializers.normal(0.02), (2 * ROWS, self.d_model))
        x = nn.Dense(self.d_model, name="embed")(rows) + pos
        h = Trunk(self.d_model, self.num_layers, self.num_heads)(x)
        return nn.Dense(1, name="head")(jnp.mean(h, axis=-2))[..., 0]


class DigitsFF(nn.Module):
    """``top [..., 32] -> bottom [..., 32]`` in one pass (the feed-forward baseline)."""

    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 4

    @nn.compact
    def __call__(self, context: jax.Array) -> jax.Array:
        pos = self.param("pos", nn.initializers.normal(0.02), (2 * ROWS, self.d_model))
        query = self.param("query", nn.initializers.normal(0.02), (ROWS, self.d_model))
        ctx = nn.Dense(self.d_model, name="embed")(_rows(context))
        q = jnp.broadcast_to(query, ctx.shape)
        x = jnp.concatenate([ctx, q], axis=-2) + pos
        h = Trunk(self.d_model, self.num_layers, self.num_heads)(x)
        out = nn.Dense(HALF // ROWS, name="head")(h[..., ROWS:, :])
        return out.reshape(out.shape[:-2] + (HALF,))


class _TokenBase(nn.Module):
    """Causal transformer over the context tokens, then one extra slot at position ``t + 1``.

    ``encode`` runs the context once (causal attention, so the states of
    positions ``<= t`` never see later tokens or the slot) and returns its
    per-layer keys and values; ``slot`` runs the extra token against them. The
    context's work is thus done once per example, not once per optimisation
    step: only the slot depends on the candidate.
    """

    vocab_size: int
    max_len: int = 48
    d_model: int = 32
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 2

    def setup(self):
        if self.d_model % self.num_heads:
            raise ValueError(
                f"num_heads: expected a divisor of d_model = {self.d_model}, got {self.num_heads}"
            )
        hd = self.d_model // self.num_heads
        self.embed = nn.Embed(self.vocab_size, self.d_model)
        self.pos = nn.Embed(self.max_len + 1, self.d_model)
        self.ln1 = [nn.LayerNorm() for _ in range(self.num_layers)]
        self.ln2 = [nn.LayerNorm() for _ in range(self.num_layers)]
        self.qkv = [nn.DenseGeneral((3, self.num_heads, hd)) for _ in range(self.num_layers)]
        self.proj = [nn.DenseGeneral(self.d_model, axis=(-2, -1)) for _ in range(self.num_layers)]
        self.up = [nn.Dense(self.mlp_ratio * self.d_model) for _ in range(self.num_layers)]
        self.down = [nn.Dense(self.d_model) for _ in range(self.num_layers)]
        self.ln_f = nn.LayerNorm()

    def _mlp(self, i, x):
        return x + self.down[i](nn.gelu(self.up[i](self.ln2[i](x))))

    def encode(self, tokens: jax.Array, t: jax.Array) -> dict:
        """``{"k", "v": [..., layers, L, H, hd], "valid": [..., L], "t": [...]}`` of the context."""
        length = tokens.shape[-1]
        t = jnp.asarray(t)
        x = self.embed(tokens) + self.pos(jnp.arange(length))
        causal = jnp.tril(jnp.ones((length, length), bool))
        ks, vs = [], []
        for i in range(self.num_layers):
            qkv = self.qkv[i](self.ln1[i](x))
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
            logits = jnp.einsum("...thd,...shd->...hts", q, k) / np.sqrt(q.shape[-1])
            att = jax.nn.softmax(jnp.where(causal, logits, _NEG), axis=-1)
            x = x + self.proj[i](jnp.einsum("...hts,...shd->...thd", att, v))
            x = self._mlp(i, x)
            ks.append(k)
            vs.append(v)
        valid = jnp.arange(length) <= t[..., None]
        return {"k": jnp.stack(ks, -4), "v": jnp.stack(vs, -4), "valid": valid, "t": t}

    def slot(self, enc: dict, s: jax.Array) -> jax.Array:
        """Output state of the extra token ``s [..., d]`` placed at position ``t + 1``."""
        x = s + self.pos(jnp.clip(enc["t"] + 1, 0, self.max_len))
        for i in range(self.num_layers):
            qkv = self.qkv[i](self.ln1[i](x))
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
            keys = jnp.concatenate([enc["k"][..., i, :, :, :], k[..., None, :, :]], axis=-3)
            vals = jnp.concatenate([enc["v"][..., i, :, :, :], v[..., None, :, :]], axis=-3)
            ok = jnp.concatenate([enc["valid"], jnp.ones(enc["valid"].shape[:-1] + (1,), bool)], -1)
            logits = jnp.einsum("...hd,...shd->...hs", q, keys) / np.sqrt(q.shape[-1])
            att = jax.nn.softmax(jnp.where(ok[..., None, :], logits, _NEG), axis=-1)
            x = x + self.proj[i](jnp.einsum("...hs,...shd->...hd", att, vals))
            x = self._mlp(i, x)
        return self.ln_f(x)


class TokenEBT(_TokenBase):
    """``E(tokens [..., L], t [...], y [..., V]) -> [...]``: energy of logits ``y`` for token t+1.

    ``softmax(y)`` is embedded with the token table (``softmax(y) @ E_tok``).
    ``energy(enc, y)`` is the same on an ``encode``d context (what inference
    iterates on).
    """

    def setup(self):
        super().setup()
        self.head = nn.Dense(1)

    def energy(self, enc: dict, y: jax.Array) -> jax.Array:
        slot = jax.nn.softmax(y, axis=-1) @ self.embed.embedding
        return self.head(self.slot(enc, slot))[..., 0]

    def __call__(self, tokens: jax.Array, t: jax.Array, y: jax.Array) -> jax.Array:
        return self.energy(self.encode(tokens, t), y)


class TokenFF(_TokenBase):
    """``(tokens [..., L], t [...]) -> logits [..., V]`` for token t+1 (the baseline)."""

    def setup(self):
        super().setup()
        self.query = self.param("query", nn.initializers.normal(0.02), (self.d_model,))
        self.head = nn.Dense(self.vocab_size)

    def __call__(self, tokens: jax.Array, t: jax.Array) -> jax.Array:
        enc = self.encode(tokens, t)
        slot = jnp.broadcast_to(self.query, jnp.shape(t) + (self.d_model,))
        return self.head(self.slot(enc, slot))


def token_energy(model: TokenEBT) -> tuple:
    """``(encode(net, context) -> enc, energy(net, enc, y) -> scalar)`` for ``ebt_train``."""

    def encode(net, c):
        return model.apply(net, c["tokens"], c["t"], method=model.encode)

    def energy_fn(net, enc, y):
        return model.apply(net, enc, y, method=model.energy)

    return encode, energy_fn


# ------------------------------------------------------------------ data and losses
def digits_halves(images) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 8, 8, 1]`` images -> ``(top [N, 32], bottom [N, 32])``."""
    flat = np.asarray(images).reshape(len(images), 64)
    return flat[:, :HALF], flat[:, HALF:]


def join_halves(top, bottom) -> np.ndarray:
    """``(top [N, 32], bottom [N, 32]) -> [N, 8, 8, 1]`` images."""
    return np.concatenate([np.asarray(top), np.asarray(bottom)], axis=-1).reshape(-1, 8, 8, 1)


def token_examples(tokens: np.ndarray | jax.Array, loss_mask: np.ndarray | jax.Array) -> dict:
    """One example per masked position of each sequence: context and next token.

    Args:
        tokens: ``[B, L]`` int sequences.
        loss_mask: ``[B, L]``, 1 where the *next* token is to be predicted
            (``arithmetic.training_sequences``).

    Returns:
        ``{"context": {"tokens": [M, L], "t": [M]}, "target": [M]}`` (int32).
    """
    tokens, mask = np.asarray(tokens), np.asarray(loss_mask)
    rows, cols = np.nonzero(mask[:, :-1] > 0)
    return {
        "context": {"tokens": tokens[rows].astype(np.int32), "t": cols.astype(np.int32)},
        "target": tokens[rows, cols + 1].astype(np.int32),
    }


def smooth_l1(pred, target):
    """Mean smooth-L1 (Huber, beta = 1) loss, the paper's loss for images."""
    return jnp.mean(optax.huber_loss(pred, target, delta=1.0))


def cross_entropy(logits, target):
    """Mean cross-entropy of ``logits [..., V]`` against int ``target [...]``."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, target))


def alpha_of(params) -> jax.Array:
    """The clamped learnable step size ``max(alpha, 1e-4)``."""
    return jnp.maximum(params["alpha"], ALPHA_MIN)
