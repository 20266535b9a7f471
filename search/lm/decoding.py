"""Batched, compiled sampling from any JAX language model through a small decoding protocol.

The protocol (any object with these attributes; ``inferax.models.transformer.
lm_functions`` adapts the project's transformer, and a test plugs in a pure-JAX
recurrent model):

- ``init_cache(batch_size, max_len) -> cache``: an empty cache pytree;
- ``prefill(cache, tokens [N, P], mask [N, P]) -> (logits [N, V], cache)``:
  left-padded prompts (``mask`` False on pads), logits after the last position;
- ``decode_step(cache, token [N], valid [N]) -> (logits [N, V], cache)``: one
  token per row; a row with ``valid`` False is being held (its logits are
  ignored and its state must not change in a way that affects later logits);
- ``cache_axes``: the particle axis of every cache leaf (a pytree prefix, as in
  ``inferax.sampling.particles``: 1 for layer-major ``[layers, N, ...]``, None
  for shared leaves such as a scalar write index);
- ``vocab_size`` and ``max_len`` (the longest sequence, or None).

A population is a ``DecodeState`` whose leaves all carry the particle axis
(``state_axes``), so the SMC core and beam selection gather it with one
``particles.take`` and never re-run a prefix. ``generate`` extends every row
by one ``lax.while_loop`` with a done mask, until EOS, the end of the current
reasoning step (the unit of step-level search), or the token limit.

Randomness: the token a row draws at its ``j``-th generated position uses
``fold_in(fold_in(key, first_index + row), j)``, so samples do not depend on
the batch split or the number of devices (DESIGN.md, Randomness).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, particles
from inferax.search.lm import conformance

_NEG_INF = -jnp.inf
UNTIL = ("eos", "step")


class DecodeState(NamedTuple):
    """A population of partial generations.

    Attributes:
        tokens: ``[N, T]`` int32 generated tokens, left-aligned per row, PAD after.
        num_tokens: ``[N]`` int32 tokens generated so far per row.
        num_steps: ``[N]`` int32 step delimiters generated so far.
        finished: ``[N]`` bool: EOS generated or the row is full.
        logits: ``[N, V]`` next-token logits of every row.
        cache: the model's cache pytree.
    """

    tokens: jax.Array
    num_tokens: jax.Array
    num_steps: jax.Array
    finished: jax.Array
    logits: jax.Array
    cache: Any


class DecodeInfo(NamedTuple):
    """What a call spent.

    Attributes:
        sequences: rows decoded (B x num_samples).
        generated_tokens: tokens generated over all rows (int32).
        decode_steps: batched ``decode_step`` calls (loop iterations).
        prompt_tokens: prompt tokens prefilled (``start`` only; 0 in ``generate``).
        tokens_per_group: ``[G]`` int32 tokens generated per row group
            (``generate`` with ``tokens_left``; else None).
        out_of_budget: ``[N]`` bool rows this call finished because their group's
            token cap was reached (``generate`` with ``tokens_left``; else None).
        bad_prompt_tokens: int32 prompt ids outside ``[0, lm.vocab_size)`` at
            unmasked positions (``start`` / ``sample``; else None). Concrete
            prompts with such ids are refused (ValueError); only prompts traced
            under ``jit`` can get here, and the model's output for them is garbage.
        non_finite_logits: int32 tokens sampled from model logits that held a NaN or an
            infinity (``generate`` / ``sample``: ``non_finite_rows`` of each active row
            before ``logits_hook``; else None). Non-zero means the model's output was
            not a distribution and those tokens are garbage.
    """

    sequences: int
    generated_tokens: jax.Array
    decode_steps: jax.Array
    prompt_tokens: jax.Array
    tokens_per_group: jax.Array | None = None
    out_of_budget: jax.Array | None = None
    bad_prompt_tokens: jax.Array | None = None
    non_finite_logits: jax.Array | None = None


def check_finite_logits(
    num_non_finite: jax.Array,
    runtime_checks: bool,
    *,
    counted: str = "row-steps with",
    field: str = "trace['num_non_finite_logits']",
) -> None:
    """With ``runtime_checks``, a ``checkify`` error if ``num_non_finite`` (a count of
    ``non_finite_rows``, any shape) is not all zero; else nothing is added.

    The one run-time check of non-finite model outputs: ``sample`` (tokens sampled from
    them, ``info.non_finite_logits``) and every step-level search (``steps``: row-steps,
    ``trace['num_non_finite_logits']``); ``counted`` and ``field`` name what was counted
    and where the caller reports it.
    """
    _checks.runtime_check(
        jnp.sum(num_non_finite) == 0,
        f"lm: expected finite next-token logits, got {{}} {counted} NaN/inf logits ({field})",
        runtime_checks,
        jnp.sum(num_non_finite, dtype=jnp.int32),
    )


def non_finite_rows(logits: jax.Array) -> jax.Array:
    """``[R]`` bool: the rows of ``logits [R, V]`` that hold a NaN or an infinity.

    ``-inf`` counts too: the model's own output should be finite everywhere;
    constraints that mask tokens belong in a ``logits_hook``, applied after the count.
    """
    return ~jnp.all(jnp.isfinite(logits), axis=-1)


def state_axes(lm: Any) -> DecodeState:
    """The particle axes of a ``DecodeState`` of ``lm`` (for ``particles.take`` / SMC)."""
    return DecodeState(0, 0, 0, 0, 0, lm.cache_axes)


def _check_lm(lm: Any) -> int:
    """Checks the protocol's attributes; returns ``lm.vocab_size`` as an int."""
    for name in ("init_cache", "prefill", "decode_step", "cache_axes", "vocab_size"):
        if not hasattr(lm, name):
            raise TypeError(f"lm: expected the decoding protocol (missing {name!r}), got {lm!r}")
    return _checks.positive_int(lm.vocab_size, "lm.vocab_size")


def check_token_id(value: Any, name: str, vocab_size: int, *, optional: bool = False):
    """A static token id in ``[0, vocab_size)`` (``None`` too when ``optional``).

    An id outside the vocabulary is never drawn (an EOS of -1 never ends a row)
    and indexes past the embedding (NaN logits), so it is refused.

    Raises:
        TypeError: for a non-integer (a float, a bool, a traced array).
        ValueError: for an id outside ``[0, vocab_size)``.
    """
    if value is None and optional:
        return None
    what = f"a token id in [0, {vocab_size}) (lm.vocab_size = {vocab_size})"
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        concrete = None
        if isinstance(value, np.ndarray | jax.Array) and jnp.ndim(value) == 0:
            if jnp.issubdtype(value.dtype, jnp.integer):
                concrete = _checks.concrete_value(value)
        if concrete is None:
            raise TypeError(f"{name}: expected {what}, got {value!r}")
        value = concrete
    value = int(value)
    if not 0 <= value < vocab_size:
        hint = " (use eos_id=None to decode without an EOS)" if name == "eos_id" else ""
        raise ValueError(f"{name}: expected {what}, got {value}{hint}")
    return value


def check_prompt_ids(prompts: jax.Array, prompt_mask: jax.Array | None, vocab_size: int) -> None:
    """Refuses prompt ids outside ``[0, vocab_size)`` at unmasked positions, when the
    prompts are known at trace time (a traced prompt is counted in
    ``DecodeInfo.bad_prompt_tokens`` instead)."""
    vals = _checks.concrete_value(prompts)
    if vals is None:
        return
    bad = (vals < 0) | (vals >= vocab_size)
    mask = None if prompt_mask is None else _checks.concrete_value(prompt_mask)
    if mask is not None:
        bad = bad & mask.astype(bool)
    if bad.any():
        b, p = np.argwhere(bad)[0]
        raise ValueError(
            f"prompts: expected token ids in [0, {vocab_size}) (lm.vocab_size = {vocab_size}), "
            f"got {int(bad.sum())} out-of-range ids (the first {int(vals[b, p])} in prompt "
            f"{int(b)} at position {int(p)})"
        )


def count_bad_prompt_ids(prompts: jax.Array, prompt_mask: jax.Array, vocab_size: int) -> jax.Array:
    """int32 count of prompt ids outside ``[0, vocab_size)`` at unmasked positions.

    The run-time counterpart of ``check_prompt_ids`` for prompts traced under ``jit``
    (an out-of-range id gathers past the embedding: NaN or clamped, garbage logits).
    """
    bad = (prompts < 0) | (prompts >= vocab_size)
    return jnp.sum(jnp.asarray(prompt_mask, bool) & bad, dtype=jnp.int32)


def start(
    lm: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    runtime_checks: bool = False,
) -> tuple[DecodeState, DecodeInfo]:
    """Prefills each prompt once and copies its cache row ``num_samples`` times.

    Rows ``b * num_samples + j`` continue prompt ``b``.

    Args:
        lm: the decoding protocol.
        prompts: ``[B, P]`` int token ids, left-padded.
        prompt_mask: ``[B, P]`` bool, False on pads (default: all True).
        num_samples: continuations per prompt.
        max_new_tokens: capacity for generated tokens per row.
        runtime_checks: also turn out-of-range ids of traced prompts (counted in
            ``info.bad_prompt_tokens``) into a ``checkify`` error naming ``prompts``
            (the caller runs under ``jax.experimental.checkify.checkify`` and calls
            ``err.throw()``; without it nothing is added to the program).

    Returns:
        ``(state, info)``: the population of ``B * num_samples`` rows and a
            ``DecodeInfo`` with ``prompt_tokens`` and ``bad_prompt_tokens``.

    Raises:
        ValueError: if the prompt plus ``max_new_tokens`` exceeds ``lm.max_len``,
            shapes disagree, or a (concrete) prompt id at an unmasked position is
            outside ``[0, lm.vocab_size)`` (traced prompts: ``info.bad_prompt_tokens``).
        TypeError: if ``runtime_checks`` is not a Python bool.

    Example:
        With ``lm`` and ``prompts`` from the package example (``inferax.search.lm``):

        >>> from inferax.search.lm import decoding
        >>> state, info = decoding.start(lm, prompts, num_samples=3, max_new_tokens=4)
        >>> state.tokens.shape, state.logits.shape, int(info.prompt_tokens)
        ((6, 4), (6, 8), 6)
    """
    vocab = _check_lm(lm)
    if not isinstance(runtime_checks, bool):
        raise TypeError(f"runtime_checks: expected a Python bool, got {runtime_checks!r}")
    num_samples = _checks.positive_int(num_samples, "num_samples")
    max_new_tokens = _checks.positive_int(max_new_tokens, "max_new_tokens")
    prompts = jnp.asarray(prompts)
    if prompts.ndim != 2 or not jnp.issubdtype(prompts.dtype, jnp.integer):
        raise ValueError(
            f"prompts: expected int tokens [B, P], got {prompts.dtype} {prompts.shape}"
        )
    b, p = prompts.shape
    max_len = getattr(lm, "max_len", None)
    if max_len is not None and p + max_new_tokens > max_len:
        raise ValueError(
            f"prompts: expected prompt length + max_new_tokens <= the model's max_len {max_len}, "
            f"got {p} + {max_new_tokens}"
        )
    # The cache the search allocates must hold every row's prompt and new tokens: an
    # adapter whose init_cache caps or shortens it fails here, before tracing, instead
    # of silently dropping keys and values (the protocol's capacity rule).
    conformance.check_capacity(lm, prompt_len=p, max_new_tokens=max_new_tokens, batch_size=b)
    if prompt_mask is None:
        prompt_mask = jnp.ones((b, p), bool)
    prompt_mask = jnp.asarray(prompt_mask, bool)
    if prompt_mask.shape != (b, p):
        raise ValueError(f"prompt_mask: expected shape {(b, p)}, got {prompt_mask.shape}")
    check_prompt_ids(prompts, prompt_mask, vocab)
    num_bad = count_bad_prompt_ids(prompts, prompt_mask, vocab)
    _checks.runtime_check(
        num_bad == 0,
        f"prompts: expected token ids in [0, {vocab}) (lm.vocab_size = {vocab}) at unmasked "
        "positions, got {} out-of-range ids (traced prompts; garbage logits)",
        runtime_checks,
        num_bad,
    )
    cache = lm.init_cache(b, p + max_new_tokens)
    logits, cache = lm.prefill(cache, prompts.astype(jnp.int32), prompt_mask)
    rows = jnp.repeat(jnp.arange(b), num_samples)
    cache = particles.take(cache, rows, particles.leaf_axes(lm.cache_axes, cache, "cache_axes"))
    n = b * num_samples
    state = DecodeState(
        tokens=jnp.zeros((n, max_new_tokens), jnp.int32),
        num_tokens=jnp.zeros((n,), jnp.int32),
        num_steps=jnp.zeros((n,), jnp.int32),
        finished=jnp.zeros((n,), bool),
        logits=logits[rows],
        cache=cache,
    )
    zero = jnp.zeros((), jnp.int32)
    return state, DecodeInfo(
        n, zero, zero, jnp.asarray(b * p, jnp.int32), bad_prompt_tokens=num_bad
    )


def check_sampling(temperature, top_k, top_p, vocab_size: int) -> tuple[float, int | None, float]:
    """Validated ``(temperature, top_k, top_p)``."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float | np.floating):
        raise TypeError(f"temperature: expected a float >= 0, got {temperature!r}")
    if not float(temperature) >= 0:
        raise ValueError(f"temperature: expected a float >= 0, got {temperature!r}")
    if top_k is not None:
        top_k = _checks.positive_int(top_k, "top_k")
        if top_k > vocab_size:
            raise ValueError(f"top_k: expected <= vocab_size {vocab_size}, got {top_k}")
    if top_p is None:
        top_p = 1.0
    if isinstance(top_p, bool) or not isinstance(top_p, int | float | np.floating):
        raise TypeError(f"top_p: expected a float in (0, 1], got {top_p!r}")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p: expected a float in (0, 1], got {top_p!r}")
    return float(temperature), top_k, float(top_p)


def process_logits(
    logits: jax.Array, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0
) -> jax.Array:
    """Log-probabilities (unnormalised) of the sampling distribution: ``logits / T``
    restricted to the ``top_k`` largest and to the smallest set of most likely
    tokens whose mass reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020);
    other entries are ``-inf``. ``temperature = 0`` keeps the raw logits (the
    caller takes the argmax)."""
    x = logits.astype(jnp.float32)
    if temperature > 0:
        x = x / temperature
    if top_k is not None and top_k < x.shape[-1]:
        kth = jax.lax.top_k(x, top_k)[0][..., -1:]
        x = jnp.where(x >= kth, x, _NEG_INF)
    if top_p < 1.0:
        srt = jnp.sort(x, axis=-1)[..., ::-1]
        prob = jax.nn.softmax(srt, axis=-1)
        before = jnp.cumsum(prob, axis=-1) - prob
        keep = before < top_p
        cut = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        x = jnp.where(x >= cut, x, _NEG_INF)
    return x


def row_keys(key: jax.Array, first_index: int, num_rows: int, position: jax.Array) -> jax.Array:
    """``fold_in(fold_in(key, first_index + row), position[row])`` for every row."""
    rows = first_index + jnp.arange(num_rows)
    return jax.vmap(lambda r, j: jax.random.fold_in(jax.random.fold_in(key, r), j))(rows, position)


def sample_tokens(
    keys: jax.Array, logits: jax.Array, temperature: float, top_k, top_p
) -> jax.Array:
    """One token per row from ``process_logits`` (argmax at temperature 0)."""
    x = process_logits(logits, temperature, top_k, top_p)
    if temperature == 0:
        return jnp.argmax(x, axis=-1).astype(jnp.int32)
    return jax.vmap(jax.random.categorical)(keys, x).astype(jnp.int32)


def last_token(state: DecodeState, pad_id: int = 0) -> jax.Array:
    """The last generated token of every row (``pad_id`` for an empty row)."""
    j = jnp.maximum(state.num_tokens - 1, 0)
    tok = jnp.take_along_axis(state.tokens, j[:, None], axis=1)[:, 0]
    return jnp.where(state.num_tokens > 0, tok, pad_id)


def advance(
    lm: Any, s: DecodeState, tok: jax.Array, active: jax.Array, *, eos_id: int | None,
    step_id: int | None, pad_id: int = 0,
) -> tuple[DecodeState, jax.Array]:  # fmt: skip
    """One decoding iteration's bookkeeping, shared by every decoding loop.

    Active rows write ``tok`` at their own position, count a step delimiter,
    finish on EOS or a full row, and feed the token to ``lm.decode_step``
    (held rows pass ``valid=False``, write ``pad_id`` nowhere and keep their logits).

    Returns:
        ``(state, is_step [R])``.
    """
    n, cap = s.tokens.shape
    rows = jnp.arange(n)
    tok = jnp.where(active, tok, pad_id)
    col = jnp.minimum(s.num_tokens, cap - 1)
    tokens = s.tokens.at[rows, col].set(jnp.where(active, tok, s.tokens[rows, col]))
    num_tokens = s.num_tokens + active
    is_step = active & (tok == step_id) if step_id is not None else jnp.zeros_like(active)
    is_eos = active & (tok == eos_id) if eos_id is not None else jnp.zeros_like(active)
    finished = s.finished | is_eos | (num_tokens >= cap)
    new_logits, cache = lm.decode_step(s.cache, tok, active)
    logits = jnp.where(active[:, None], new_logits.astype(s.logits.dtype), s.logits)
    return DecodeState(tokens, num_tokens, s.num_steps + is_step, finished, logits, cache), is_step


def generate(
    key: jax.Array,
    lm: Any,
    state: DecodeState,
    *,
    eos_id: int | None,
    step_id: int | None = None,
    until: str = "eos",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    logits_hook: Callable[[jax.Array, DecodeState], jax.Array] | None = None,
    pad_id: int = 0,
    first_index: int = 0,
    group_index: jax.Array | None = None,
    tokens_left: jax.Array | None = None,
) -> tuple[DecodeState, DecodeInfo]:
    """Extends every unfinished row until EOS, the end of one step, or its capacity.

    One ``lax.while_loop`` with fixed shapes: each iteration samples a token
    for every active row, writes it at the row's own position, feeds it to
    ``lm.decode_step`` (held rows pass ``valid=False``) and keeps the new
    logits of active rows only.

    Args:
        key: PRNG key of this call.
        lm: the decoding protocol.
        state: the population (from ``start`` or an earlier ``generate``).
        eos_id: end-of-sequence token (the row finishes), in ``[0, lm.vocab_size)``;
            None decodes every row to its capacity (no EOS).
        step_id: step delimiter token (counted in ``num_steps``), in ``[0, lm.vocab_size)``.
        until: ``"eos"`` (decode to the end) or ``"step"`` (stop each row after
            its next step delimiter: one reasoning step for every particle).
        temperature: sampling temperature (0: greedy; ``process_logits``).
        top_k: keep the ``top_k`` most likely tokens (None: all).
        top_p: nucleus mass in ``(0, 1]`` (None: 1).
        logits_hook: ``hook(logits [N, V], state) -> logits``, applied before
            sampling (constraints; see ``budget_forcing``); it must keep the
            shape ``[N, V]`` (else ValueError when traced).
        pad_id: written for rows that are held, in ``[0, lm.vocab_size)``.
        first_index: global index of row 0 (for splitting a batch over calls).
        group_index: ``[N]`` int32 group (prompt) of every row, with ``tokens_left``.
        tokens_left: ``[G]`` int32 token cap of every group. A group takes a decoding
            iteration only while its active rows fit in what it has left; when they
            do not, its active rows are finished (flagged in ``info.out_of_budget``)
            and the group generates no more: the tokens generated never exceed the cap.

    Returns:
        ``(state, info)``.

    Raises:
        ValueError: naming the argument: a token id (``eos_id``, ``step_id``,
            ``pad_id``) outside the vocabulary, a ``logits_hook`` output of the wrong
            shape, sampling settings out of range.
        TypeError: naming the argument: a token id or sampling setting of the wrong
            type, a ``logits_hook`` that is not callable.

    Example:
        With ``lm`` and ``prompts`` from the package example (``inferax.search.lm``):

        >>> from inferax.search.lm import decoding
        >>> state, _ = decoding.start(lm, prompts, num_samples=3, max_new_tokens=4)
        >>> state, info = decoding.generate(
        ...     jax.random.key(1), lm, state, eos_id=1, step_id=2, until="step")
        >>> state.tokens.shape, bool((state.num_tokens >= 1).all())
        ((6, 4), True)
    """
    vocab = _check_lm(lm)
    temperature, top_k, top_p = check_sampling(temperature, top_k, top_p, vocab)
    eos_id = check_token_id(eos_id, "eos_id", vocab, optional=True)
    step_id = check_token_id(step_id, "step_id", vocab, optional=True)
    pad_id = check_token_id(pad_id, "pad_id", vocab)
    if logits_hook is not None and not callable(logits_hook):
        raise TypeError(f"logits_hook: expected None or a callable, got {logits_hook!r}")
    if until not in UNTIL:
        raise ValueError(f"until: expected one of {UNTIL}, got {until!r}")
    if until == "step" and step_id is None:
        raise ValueError("step_id: expected the step delimiter's id when until='step', got None")
    first_index = _checks.non_negative_int(first_index, "first_index")
    n, cap = state.tokens.shape
    capped = tokens_left is not None
    if capped != (group_index is not None):
        raise ValueError("tokens_left: expected together with group_index (both or neither)")
    left0 = jnp.asarray(tokens_left, jnp.int32) if capped else jnp.zeros((1,), jnp.int32)
    groups = jnp.asarray(group_index, jnp.int32) if capped else jnp.zeros((n,), jnp.int32)

    def active_of(s: DecodeState, stopped):
        return ~s.finished & ~stopped & (s.num_tokens < cap)

    def afford(s, stopped, left, oob):
        """Finishes the active rows of every group that cannot pay for one more token each."""
        if not capped:
            return s, oob
        want = jax.ops.segment_sum(
            active_of(s, stopped).astype(jnp.int32), groups, num_segments=left.shape[0]
        )
        cut = active_of(s, stopped) & (want > left)[groups]
        return s._replace(finished=s.finished | cut), oob | cut

    def cond(carry):
        s, stopped, *_ = carry
        return jnp.any(active_of(s, stopped))

    def body(carry):
        s, stopped, spent, calls, left, oob, bad = carry
        active = active_of(s, stopped)
        bad = bad + jnp.sum(active & non_finite_rows(s.logits), dtype=jnp.int32)
        logits = s.logits if logits_hook is None else _hooked(logits_hook, s)
        keys = row_keys(key, first_index, n, s.num_tokens)
        tok = sample_tokens(keys, logits, temperature, top_k, top_p)
        out, is_step = advance(lm, s, tok, active, eos_id=eos_id, step_id=step_id, pad_id=pad_id)
        if until == "step":
            stopped = stopped | is_step
        left = left - jax.ops.segment_sum(
            active.astype(jnp.int32), groups, num_segments=left.shape[0]
        )
        out, oob = afford(out, stopped, left, oob)
        spent = spent + jnp.sum(active, dtype=jnp.int32)
        return out, stopped, spent, calls + 1, left, oob, bad

    zero = jnp.zeros((), jnp.int32)
    stopped0 = jnp.zeros((n,), bool)
    state, oob0 = afford(state, stopped0, left0, stopped0)
    init = (state, stopped0, zero, zero, left0, oob0, zero)
    state, _, spent, calls, left, oob, bad = jax.lax.while_loop(cond, body, init)
    if not capped:
        return state, DecodeInfo(n, spent, calls, zero, non_finite_logits=bad)
    return state, DecodeInfo(n, spent, calls, zero, left0 - left, oob, non_finite_logits=bad)


def _hooked(hook: Callable, s: DecodeState) -> jax.Array:
    out = hook(s.logits, s)
    if jnp.shape(out) != s.logits.shape:
        raise ValueError(
            f"logits_hook: expected logits of shape {s.logits.shape} (rows, vocabulary), "
            f"got {jnp.shape(out)}"
        )
    if not jnp.issubdtype(jnp.result_type(out), jnp.floating):
        raise TypeError(f"logits_hook: expected floating logits, got {jnp.result_type(out)}")
    return out


def sample(
    key: jax.Array,
    lm: Any,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    eos_id: int | None,
    runtime_checks: bool = False,
    **kwargs: Any,
) -> tuple[DecodeState, DecodeInfo]:
    """``start`` then ``generate``: ``num_samples`` completions of every prompt.

    Other keyword arguments are those of ``generate``. The info counts the prompt
    tokens prefilled, the generated tokens and the decode steps, and (prompts
    traced under ``jit``) the out-of-range prompt ids in ``bad_prompt_tokens``.

    Args:
        key: PRNG key.
        lm: the decoding protocol.
        prompts: ``[B, P]`` int token ids, left-padded.
        prompt_mask: ``[B, P]`` bool, False on pads (default: all True).
        num_samples: completions per prompt.
        max_new_tokens: capacity for generated tokens per row.
        eos_id: end-of-sequence token (``generate``).
        runtime_checks: out-of-range ids of traced prompts (``start``) and tokens
            sampled from non-finite model logits (``info.non_finite_logits``) become
            ``checkify`` errors (run the call under ``checkify.checkify``).
        **kwargs: the other arguments of ``generate``.

    Returns:
        ``(state, info)``.

    Raises:
        ValueError: as ``start`` and ``generate`` (concrete prompt ids outside the
            vocabulary are refused before tracing).
        TypeError: as ``start`` and ``generate``.

    Example:
        With ``lm`` and ``prompts`` from the package example (``inferax.search.lm``):

        >>> from inferax.search.lm import decoding
        >>> state, info = decoding.sample(
        ...     jax.random.key(1), lm, prompts, num_samples=3, max_new_tokens=4, eos_id=None)
        >>> state.tokens.shape, state.num_tokens.tolist(), int(info.generated_tokens)
        ((6, 4), [4, 4, 4, 4, 4, 4], 24)
    """
    state, info0 = start(
        lm, prompts, prompt_mask, num_samples=num_samples, max_new_tokens=max_new_tokens,
        runtime_checks=runtime_checks,
    )  # fmt: skip
    state, info = generate(key, lm, state, eos_id=eos_id, **kwargs)
    check_finite_logits(
        info.non_finite_logits, runtime_checks,
        counted="tokens sampled from", field="info.non_finite_logits",
    )  # fmt: skip
    return state, info._replace(
        prompt_tokens=info0.prompt_tokens, bad_prompt_tokens=info0.bad_prompt_tokens
    )


def budget_forcing(
    *,
    answer_id: int,
    step_id: int,
    min_steps: int = 0,
    max_steps: int | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> Callable[[jax.Array, DecodeState], jax.Array]:
    """A logits hook bounding the reasoning steps (budget forcing, Muennighoff et al. 2025).

    Before ``min_steps`` step delimiters the answer delimiter (and EOS) are
    suppressed; at the start of a line after ``max_steps`` steps the answer
    delimiter is forced.

    The token ids must be ints >= 0 (checked here) and below the vocabulary size
    (checked against the logits' last axis when the hook is traced).
    """
    answer_id = _checks.non_negative_int(answer_id, "answer_id")
    step_id = _checks.non_negative_int(step_id, "step_id")
    if eos_id is not None:
        eos_id = _checks.non_negative_int(eos_id, "eos_id")
    pad_id = _checks.non_negative_int(pad_id, "pad_id")
    min_steps = _checks.non_negative_int(min_steps, "min_steps")
    if max_steps is not None:
        max_steps = _checks.non_negative_int(max_steps, "max_steps")
        if max_steps < min_steps:
            raise ValueError(f"max_steps: expected >= min_steps {min_steps}, got {max_steps}")

    def hook(logits: jax.Array, state: DecodeState) -> jax.Array:
        vocab = logits.shape[-1]
        for name, value in (("answer_id", answer_id), ("step_id", step_id), ("eos_id", eos_id)):
            if value is not None:
                check_token_id(value, f"budget_forcing {name}", vocab)
        too_few = (state.num_steps < min_steps)[:, None]
        cols = jnp.arange(logits.shape[-1])[None, :]
        banned = (cols == answer_id) | ((cols == eos_id) if eos_id is not None else False)
        logits = jnp.where(too_few & banned, _NEG_INF, logits)
        if max_steps is not None:
            line_start = (state.num_tokens == 0) | (last_token(state, pad_id) == step_id)
            force = (line_start & (state.num_steps >= max_steps))[:, None]
            logits = jnp.where(force & (cols != answer_id), _NEG_INF, logits)
        return logits

    return hook
