"""penzai transformers (Gemma, Gemma 2, Llama, Mistral) through inferax's decoding protocol.

``pip install "inferax[penzai]"``. A penzai ``TransformerLM`` (from
``penzai.models.transformer``: built from a config, or loaded from weights on
disk with penzai's own loaders) becomes the three callables every
``inferax.search.lm`` method takes::

    from inferax.models import penzai_lm

    lm = penzai_lm.lm_functions(model)      # model: penzai TransformerLM
    state, info = decoding.sample(key, lm, prompts, mask, max_new_tokens=32, eos_id=1)

What the adapter takes care of, so that the caller does not:

- **Padding by mask, not by token value.** penzai's own sampling mode treats
  every token equal to ``pad_id`` as padding; here the prompt mask says which
  tokens are real, so a real token that happens to equal the pad id is kept.
  Positions (RoPE) count real tokens only; pads get position -1 and are never
  attended to.
- **No batch size baked in.** penzai's ``KVCachingTransformerLM`` fixes its
  batch axes and cache length when it is built; ``init_cache(batch_size,
  max_len)`` here makes a cache of any size, and one adapter serves every
  population size a search uses.
- **A write slot per row; held rows use none.** penzai's cache has one shared
  write index, so every call uses a slot in every row, and a search whose rows
  finish their reasoning steps at different times would need slots for the
  longest step of every round. Here every attention layer is swapped for one
  that writes each row's keys and values at that row's own slots (the rule of
  ``docs/lm_protocol.md``), so a search needs ``prompt_len + max_new_tokens``
  slots whatever the other rows do.
- **Named axes and state.** Tokens and logits are plain ``[N, T]`` / ``[N, V]``
  arrays; the cache is a plain dict of arrays with the row axis first
  (``cache_axes = 0``), so ``particles.take`` gathers it for resampling and
  beam selection. penzai's state variables are bound and unbound inside each
  call: the three callables are pure and ``jit``-able.

Loading real weights you already have on disk (no download happens here)::

    # Gemma / Gemma 2, from the checkpoint directory of the `gemma` release:
    import orbax.checkpoint as ocp
    from penzai.models.transformer.variants import gemma
    params = ocp.PyTreeCheckpointer().restore("/path/to/gemma2-2b/")
    model = gemma.gemma_from_pretrained_checkpoint(params)

    # Llama / Mistral, from a Hugging Face model directory (needs `transformers`, torch):
    import transformers
    from penzai.models.transformer.variants import llama
    hf = transformers.LlamaForCausalLM.from_pretrained("/path/to/llama-dir")
    model = llama.llama_from_huggingface_model(hf)

    lm = penzai_lm.lm_functions(model)

``tiny_model`` builds random-weight models of the same families in a second
on a CPU, for tests, the docs and the benchmark.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

try:
    from penzai import pz
    from penzai.models.transformer import model_parts
    from penzai.models.transformer.variants import llamalike_common
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "inferax.models.penzai_lm needs penzai: pip install 'inferax[penzai]'"
    ) from exc

__all__ = ["FAMILIES", "PenzaiLM", "forward", "lm_functions", "tiny_config", "tiny_model"]

FAMILIES = ("gemma", "gemma2", "llama")
"""Families ``tiny_config`` builds (all are penzai "llama-like" transformers)."""

_SLOTS = "inferax_slots"
_KV_POSITIONS = "kv_token_positions"
_LABEL = "inferax/kv_cache_{}"


@pz.pytree_dataclass
class RowCachedAttention(pz.nn.Layer):
    """``pz.nn.Attention`` with a key/value cache written at per-row slots.

    penzai's ``KVCachingAttention`` writes every row at one shared cache index;
    this layer writes row ``n``'s ``T`` new keys and values at the slots given
    by the side input ``inferax_slots`` (``[batch, seq]`` ints; a slot equal to
    the cache length is dropped, which is how a held row writes nothing), then
    attends over the whole cache. The causal mask compares the queries'
    ``token_positions`` with the cache slots' ``kv_token_positions`` (-1 on
    empty slots and pads), as penzai's sampling mode does.

    Attributes:
        input_to_query: the query sublayer of the original attention.
        input_to_key: the key sublayer of the original attention.
        input_to_value: the value sublayer of the original attention.
        query_key_to_attn: the attention-weights sublayer of the original attention.
        attn_value_to_output: the output sublayer of the original attention.
        kv_cache: a state variable holding ``(keys, values)`` named arrays with
            a ``"seq"`` axis of the cache's length.
    """

    input_to_query: pz.nn.Layer
    input_to_key: pz.nn.Layer
    input_to_value: pz.nn.Layer
    query_key_to_attn: pz.nn.Layer
    attn_value_to_output: pz.nn.Layer
    kv_cache: pz.StateVariable

    def __call__(self, x: pz.nx.NamedArray, **side_inputs: Any) -> pz.nx.NamedArray:
        slots = side_inputs[_SLOTS].untag("seq")
        query = self.input_to_query(x, **side_inputs)
        key = self.input_to_key(x, **side_inputs)
        value = self.input_to_value(x, **side_inputs)
        key_cache, value_cache = self.kv_cache.value

        def write(cache, new, at):
            return cache.at[at].set(new.astype(cache.dtype), mode="drop")

        key_cache = pz.nx.nmap(write)(key_cache.untag("seq"), key.untag("seq"), slots).tag("seq")
        value_cache = pz.nx.nmap(write)(value_cache.untag("seq"), value.untag("seq"), slots)
        value_cache = value_cache.tag("seq")
        self.kv_cache.value = (key_cache, value_cache)
        attn = self.query_key_to_attn((query, key_cache), **side_inputs)
        return self.attn_value_to_output((attn, value_cache), **side_inputs)


def _use_kv_positions(masker):
    if masker.kv_positions_input_name != "token_positions":
        raise ValueError(
            "model: expected attention masks keyed by 'token_positions', got "
            f"{masker.kv_positions_input_name!r} in {type(masker).__name__}"
        )
    return dataclasses.replace(masker, kv_positions_input_name=_KV_POSITIONS)


class PenzaiLM(NamedTuple):
    """The decoding protocol over a penzai transformer (``inferax.search.lm.decoding``).

    Attributes:
        init_cache: ``(batch_size, max_len) -> cache``: ``{"k": (...), "v": (...),
            "positions": [N, S], "length": [N], "fill": [N]}``; per attention layer
            ``k`` and ``v`` are ``[N, S, *head_axes, projection]`` in the model's
            activation dtype; ``positions`` holds each slot's token position
            (-1: empty or a pad); ``length`` counts real tokens (the next
            position), ``fill`` used slots (the next slot to write).
        prefill: ``(cache, tokens [N, P], mask [N, P]) -> (logits [N, V], cache)``.
        decode_step: ``(cache, token [N], valid [N]) -> (logits [N, V], cache)``.
        cache_axes: 0 (every cache leaf has its rows on axis 0).
        vocab_size: the vocabulary size.
        max_len: None (RoPE positions are unbounded; the cache is sized per call).
        forward: ``(tokens [N, T], mask [N, T]) -> logits [N, T, V]``, the
            uncached model (the reference of ``inferax.search.lm.conformance``).
    """

    init_cache: Any
    prefill: Any
    decode_step: Any
    cache_axes: Any
    vocab_size: int
    max_len: int | None
    forward: Any


def _positions(length: jax.Array, valid: jax.Array) -> jax.Array:
    """Position of every new token (real tokens count from ``length``; invalid ones get -1)."""
    vi = valid.astype(jnp.int32)
    pos = length[:, None] + jnp.cumsum(vi, axis=1) - vi
    return jnp.where(valid, pos, -1)


def _check_model(model: Any) -> None:
    if not isinstance(model, model_parts.TransformerLM):
        raise TypeError(
            "model: expected a penzai.models.transformer.model_parts.TransformerLM "
            f"(uncached), got {type(model).__name__}"
        )
    if pz.select(model.body).at_instances_of(pz.nn.LayerStack).count():
        raise ValueError(
            "model: expected unstacked decoder blocks, got a pz.nn.LayerStack "
            "(load the model with use_layer_stack=False)"
        )


def forward(model: Any, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The uncached model on left- or right-padded tokens: ``[N, T] -> logits [N, T, V]`` float32.

    Positions count real tokens (``mask`` True); pads get position -1, are not
    attended to, and their logits are meaningless.
    """
    _check_model(model)
    tokens = jnp.asarray(tokens, jnp.int32)
    mask = jnp.ones(tokens.shape, bool) if mask is None else jnp.asarray(mask, bool)
    pos = _positions(jnp.zeros(tokens.shape[:1], jnp.int32), mask)
    out = model(
        pz.nx.wrap(tokens).tag("batch", "seq"),
        token_positions=pz.nx.wrap(pos).tag("batch", "seq"),
    )
    return out.unwrap("batch", "seq", "vocabulary").astype(jnp.float32)


def lm_functions(model: Any) -> PenzaiLM:
    """Adapts a penzai ``TransformerLM`` to the decoding protocol.

    Args:
        model: an uncached ``penzai.models.transformer.model_parts.TransformerLM``
            (Gemma, Gemma 2, Llama, Mistral, GPT-NeoX: any body whose attention
            layers are ``pz.nn.Attention`` with positional causal masks), with
            unstacked blocks.

    Returns:
        a ``PenzaiLM``; its callables are pure (``jit`` them or pass them to a
            search, which does).

    Raises:
        TypeError: if ``model`` is not a penzai ``TransformerLM``.
        ValueError: if it uses a layer stack or masks keyed by other positions.
    """
    _check_model(model)
    meta = model.metadata
    head_axes = {**meta.common_head_axes, "projection": meta.projection_dim}
    cache_dtype = meta.activation_dtype
    attn_sel = pz.select(model.body).at_instances_of(pz.nn.Attention)
    swapped = {}
    for i, (path, attn) in enumerate(attn_sel.selected_by_path.items()):
        fixed = (
            pz.select(attn)
            .at_instances_of(
                pz.nn.ApplyCausalAttentionMask | pz.nn.ApplyCausalSlidingWindowAttentionMask
            )
            .apply(_use_kv_positions)
        )
        swapped[path] = RowCachedAttention(
            input_to_query=fixed.input_to_query,
            input_to_key=fixed.input_to_key,
            input_to_value=fixed.input_to_value,
            query_key_to_attn=fixed.query_key_to_attn,
            attn_value_to_output=fixed.attn_value_to_output,
            kv_cache=pz.StateVariable(value=None, label=_LABEL.format(i)),
        )
    num_layers = len(swapped)
    if num_layers == 0:
        raise ValueError("model: expected pz.nn.Attention layers in its body, found none")
    body = attn_sel.set_by_path(swapped)
    body, _ = pz.unbind_state_vars(body)
    body = pz.freeze_params(body)
    names = ("batch", "seq", *head_axes)

    def init_cache(batch_size: int, max_len: int) -> dict:
        shape = (batch_size, max_len, *head_axes.values())
        zeros = tuple(jnp.zeros(shape, cache_dtype) for _ in range(num_layers))
        return {
            "k": zeros,
            "v": zeros,
            "positions": jnp.full((batch_size, max_len), -1, jnp.int32),
            "length": jnp.zeros((batch_size,), jnp.int32),
            "fill": jnp.zeros((batch_size,), jnp.int32),
        }

    def step(cache: dict, tokens: jax.Array, valid: jax.Array) -> tuple[jax.Array, dict]:
        n, t = tokens.shape
        s = cache["positions"].shape[1]
        valid = valid.astype(bool)
        moves = jnp.any(valid, axis=1)
        pos = _positions(cache["length"], valid)
        # A row that moves writes its T tokens at [fill, fill + T); a held row writes
        # nowhere (slot s is out of range and dropped).
        slots = jnp.where(moves[:, None], cache["fill"][:, None] + jnp.arange(t)[None], s)
        rows = jnp.arange(n)[:, None]
        kv_pos = cache["positions"].at[rows, slots].set(pos, mode="drop")
        values = [
            pz.StateVariableValue(
                value=(pz.nx.wrap(k).tag(*names), pz.nx.wrap(v).tag(*names)),
                label=_LABEL.format(i),
            )
            for i, (k, v) in enumerate(zip(cache["k"], cache["v"], strict=True))
        ]
        out, new_values = body.stateless_call(
            values,
            pz.nx.wrap(tokens.astype(jnp.int32)).tag("batch", "seq"),
            token_positions=pz.nx.wrap(pos).tag("batch", "seq"),
            **{
                _KV_POSITIONS: pz.nx.wrap(kv_pos).tag("batch", "seq"),
                _SLOTS: pz.nx.wrap(slots).tag("batch", "seq"),
            },
        )
        by_label = {v.label: v.value for v in new_values}
        kv = [by_label[_LABEL.format(i)] for i in range(num_layers)]
        new = {
            "k": tuple(k.unwrap(*names) for k, _ in kv),
            "v": tuple(v.unwrap(*names) for _, v in kv),
            "positions": kv_pos,
            "length": cache["length"] + jnp.sum(valid, axis=1, dtype=jnp.int32),
            "fill": cache["fill"] + jnp.where(moves, t, 0).astype(jnp.int32),
        }
        logits = out.unwrap("batch", "seq", "vocabulary").astype(jnp.float32)
        return logits, new

    def prefill(cache, tokens, mask):
        logits, cache = step(cache, jnp.asarray(tokens), jnp.asarray(mask, bool))
        return logits[:, -1], cache

    def decode_step(cache, token, valid):
        logits, cache = step(cache, jnp.asarray(token)[:, None], jnp.asarray(valid, bool)[:, None])
        return logits[:, 0], cache

    return PenzaiLM(
        init_cache=init_cache,
        prefill=prefill,
        decode_step=decode_step,
        cache_axes=0,
        vocab_size=meta.vocab_size,
        max_len=None,
        forward=lambda tokens, mask=None: forward(model, tokens, mask),
    )


def tiny_config(
    family: Literal["gemma", "gemma2", "llama"] = "gemma",
    *,
    vocab_size: int = 64,
    num_layers: int = 2,
    embedding_dim: int = 32,
    dtype: Any = jnp.float32,
) -> Any:
    """A small ``LlamalikeTransformerConfig`` of a family's architecture.

    ``"gemma"``: multi-query attention, GeGLU, tied embeddings (Gemma 1);
    ``"gemma2"``: grouped-query attention alternating a sliding window of 4
    tokens with global layers, post-norms, attention and final logit soft caps
    (Gemma 2); ``"llama"``: grouped-query attention, SwiGLU, an untied head
    (Llama 2/3, Mistral without its window).

    Args:
        family: one of ``FAMILIES``.
        vocab_size: vocabulary size.
        num_layers: number of transformer blocks.
        embedding_dim: model width, a multiple of 4 (4 query heads of
            ``embedding_dim // 4``).
        dtype: parameter and activation dtype (float32 or bfloat16).

    Returns:
        The ``LlamalikeTransformerConfig``.

    Raises:
        ValueError: an unknown ``family``, or ``embedding_dim`` not a multiple of 4.
    """
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    if embedding_dim % 4:
        raise ValueError(f"embedding_dim: expected a multiple of 4, got {embedding_dim}")
    common = dict(
        embedding_dim=embedding_dim,
        projection_dim=embedding_dim // 4,
        mlp_hidden_dim=2 * embedding_dim,
        num_decoder_blocks=num_layers,
        vocab_size=vocab_size,
        parameter_dtype=dtype,
        activation_dtype=dtype,
    )
    cfg = llamalike_common.LlamalikeTransformerConfig
    if family == "gemma":
        return cfg(
            num_kv_heads=1, query_head_multiplier=4, mlp_variant="geglu_approx",
            tie_embedder_and_logits=True, **common,
        )  # fmt: skip
    if family == "gemma2":
        window = llamalike_common.AttentionTypeSlidingWindowCausal(4)
        return cfg(
            num_kv_heads=2, query_head_multiplier=2, mlp_variant="geglu_approx",
            tie_embedder_and_logits=True,
            attention_type=(window, llamalike_common.AttentionTypeGlobalCausal()),
            use_post_attn_norm=True, use_post_ffw_norm=True,
            final_logit_softcap=30.0, attn_logits_soft_cap=50.0, **common,
        )  # fmt: skip
    return cfg(
        num_kv_heads=2, query_head_multiplier=2, mlp_variant="swiglu",
        tie_embedder_and_logits=False, **common,
    )  # fmt: skip


def tiny_model(key: jax.Array, family: str = "gemma", **kwargs) -> Any:
    """A random-weight penzai ``TransformerLM`` of ``tiny_config(family, **kwargs)``."""
    return llamalike_common.build_llamalike_transformer(
        tiny_config(family, **kwargs), init_base_rng=key
    )
