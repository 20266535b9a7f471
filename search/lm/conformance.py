"""A conformance kit for the decoding protocol: run it on any language-model adapter.

The rules it checks are those of ``docs/lm_protocol.md`` (and
``inferax.search.lm.decoding``):

- ``prefill`` of left-padded prompts gives the logits of the full forward pass
  after each row's last token, whatever the padding;
- every ``decode_step`` gives the full forward pass's logits after the row's
  tokens so far, at every position up to the cache's last slot;
- a held row (``valid`` False) does not change: its later logits are those of
  a sequence without the held calls, whatever token it was passed;
- gathering rows with ``particles.take`` over ``lm.cache_axes`` (resampling,
  beam selection) gives each new row the cache of the row it copied;
- a cache of ``required_capacity(prompt_len, max_new_tokens)`` slots is enough:
  a row uses one slot per prompt column and per token it generates, none
  while held.

::

    from inferax.search.lm import conformance
    report = conformance.check_lm(lm, prompts=prompts, prompt_mask=mask,
                                  max_new_tokens=8, key=jax.random.key(0))

``check_lm`` raises ``AssertionError`` naming the check, row and position that
differed (and ``ValueError`` for bad arguments or a cache too small), and
returns a ``ConformanceReport`` of the largest differences it saw.
``check_capacity`` alone runs before any tracing (``jax.eval_shape`` of
``init_cache``) and raises one ``ValueError`` when a cache cannot hold what a
search will write.

The reference ("full forward") is ``forward(tokens [1, L], mask) -> logits
[1, L, V]`` when given, else a ``prefill`` of the unpadded sequence into a
fresh cache of exactly its length (for the project's transformer these are
the same computation as its ``__call__``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks, particles

__all__ = ["ConformanceReport", "cache_capacity", "check_capacity", "check_lm", "required_capacity"]

_PROTOCOL = ("init_cache", "prefill", "decode_step", "cache_axes", "vocab_size")


class ConformanceReport(NamedTuple):
    """What ``check_lm`` compared.

    Attributes:
        prefill_error: largest ``|cached - reference|`` of the prefill logits.
        decode_error: largest difference over every ``decode_step`` of a valid row.
        gather_error: largest difference over the decode steps after the row gather.
        positions_checked: logits rows compared in all.
        held_calls: calls in which some row was held.
        capacity: the cache slots per row used (``required_capacity``).
    """

    prefill_error: float
    decode_error: float
    gather_error: float
    positions_checked: int
    held_calls: int
    capacity: int


def required_capacity(prompt_len: int, max_new_tokens: int) -> int:
    """Cache slots per row a search needs: ``prompt_len + max_new_tokens``.

    A row writes one slot per prompt column (pads included: a left pad takes a
    slot but is masked) and one per token it feeds to ``decode_step``; a held
    row (``valid`` False) writes none, so the need does not grow with the other
    rows' steps, the number of search rounds or the decode calls a batch makes.
    """
    prompt_len = _checks.positive_int(prompt_len, "prompt_len")
    max_new_tokens = _checks.positive_int(max_new_tokens, "max_new_tokens")
    return prompt_len + max_new_tokens


def _check_protocol(lm: Any) -> None:
    for name in _PROTOCOL:
        if not hasattr(lm, name):
            raise TypeError(f"lm: expected the decoding protocol (missing {name!r}), got {lm!r}")


def _shapes(lm: Any, batch_size: int, max_len: int) -> list[tuple[str, tuple[int, ...]]]:
    tree = jax.eval_shape(functools.partial(lm.init_cache, batch_size, max_len))
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path), tuple(leaf.shape)) for path, leaf in flat]


def cache_capacity(lm: Any, batch_size: int, max_len: int) -> tuple[int, str] | None:
    """Slots per row of ``lm.init_cache(batch_size, max_len)``, read off shapes (nothing runs).

    The slot axes are the axes whose size differs between ``init_cache(batch_size,
    max_len)`` and ``init_cache(batch_size, 1)``; the capacity is their smallest
    size at ``max_len``.

    Returns:
        ``(capacity, "leaf path, axis k")`` or None when no leaf depends on
            ``max_len`` (a recurrent state: no slot limit).
    """
    full, one = _shapes(lm, batch_size, max_len), _shapes(lm, batch_size, 1)
    best = None
    for (path, a), (_, b) in zip(full, one, strict=True):
        if len(a) != len(b):
            continue
        for ax, (sa, sb) in enumerate(zip(a, b, strict=True)):
            if sa != sb and (best is None or sa < best[0]):
                best = (sa, f"leaf {path or '<root>'}, axis {ax}")
    return best


def check_capacity(lm: Any, *, prompt_len: int, max_new_tokens: int, batch_size: int = 1) -> int:
    """Raises ``ValueError`` when ``lm`` cannot hold a search's sequences; returns the need.

    Checks, before anything is traced: ``lm.max_len`` (the longest sequence the
    model supports, if it says) and the slots of the cache ``init_cache``
    builds for ``required_capacity(prompt_len, max_new_tokens)`` (an adapter
    that caps its cache, or allocates one slot short, is caught here instead of
    silently dropping keys and values).

    Args:
        lm: the decoding protocol.
        prompt_len: ``P``, the prompts' padded length.
        max_new_tokens: tokens each row may generate.
        batch_size: rows of the probed cache.

    Returns:
        ``required_capacity(prompt_len, max_new_tokens)``.
    """
    _check_protocol(lm)
    need = required_capacity(prompt_len, max_new_tokens)
    batch_size = _checks.positive_int(batch_size, "batch_size")
    max_len = getattr(lm, "max_len", None)
    if max_len is not None and need > max_len:
        raise ValueError(
            f"max_new_tokens: expected prompt_len + max_new_tokens <= lm.max_len {max_len}, "
            f"got {prompt_len} + {max_new_tokens} = {need}"
        )
    cap = cache_capacity(lm, batch_size, need)
    if cap is not None and cap[0] < need:
        raise ValueError(
            f"lm.init_cache: expected a cache of at least {need} slots per row "
            f"(required_capacity = prompt_len {prompt_len} + max_new_tokens {max_new_tokens}; "
            f"held rows use none), got {cap[0]} slots ({cap[1]}) from "
            f"init_cache({batch_size}, {need}): the last tokens' keys and values would be lost"
        )
    return need


def _prompt_rows(prompts, prompt_mask):
    prompts = np.asarray(prompts)
    if prompts.ndim != 2 or not np.issubdtype(prompts.dtype, np.integer):
        raise ValueError(
            f"prompts: expected int tokens [B, P], got {prompts.dtype} {prompts.shape}"
        )
    mask = np.ones(prompts.shape, bool) if prompt_mask is None else np.asarray(prompt_mask, bool)
    if mask.shape != prompts.shape:
        raise ValueError(f"prompt_mask: expected shape {prompts.shape}, got {mask.shape}")
    for b, row in enumerate(mask):
        if not row[-1] or np.any(np.diff(row.astype(np.int8)) < 0):
            raise ValueError(
                f"prompt_mask: expected left padding (False only before the first real "
                f"token, last column True), got row {b} = {row.astype(int).tolist()}"
            )
    return prompts, mask


def _leaf_signature(tree) -> list[tuple[str, tuple[int, ...], str]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(p), tuple(np.shape(x)), str(jnp.result_type(x))) for p, x in flat]


def _check_same_cache(before, after, what: str) -> None:
    a, b = _leaf_signature(before), _leaf_signature(after)
    if jax.tree_util.tree_structure(before) != jax.tree_util.tree_structure(after) or a != b:
        diff = [f"{x} -> {y}" for x, y in zip(a, b, strict=False) if x != y] or ["tree structure"]
        raise AssertionError(
            f"{what}: expected the cache's structure, shapes and dtypes unchanged "
            f"(a decoding loop carries it), got {'; '.join(diff[:3])}"
        )


def _check_logits(logits, rows: int, vocab: int, what: str) -> np.ndarray:
    out = np.asarray(jnp.asarray(logits, jnp.float32))
    if out.shape != (rows, vocab):
        raise AssertionError(f"{what}: expected logits of shape {(rows, vocab)}, got {out.shape}")
    return out


def check_lm(
    lm: Any,
    *,
    prompts: jax.Array,
    prompt_mask: jax.Array | None = None,
    max_new_tokens: int,
    key: jax.Array,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    hold_prob: float = 0.3,
    forward: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> ConformanceReport:
    """Checks an adapter's cached logits against its full forward pass.

    Prefills ``prompts`` into a cache of ``required_capacity(P, max_new_tokens)``
    slots, then feeds every row ``max_new_tokens`` random tokens through
    ``decode_step`` (jitted), holding random rows on some calls (with a random
    token: a held row must ignore it) and gathering the rows once with
    ``particles.take`` half-way (a permutation with a duplicated row). Every
    logits row of a valid row is compared with the reference of that row's
    sequence so far: ``|cached - ref| <= atol + rtol * max|ref|``.

    Args:
        lm: the decoding protocol.
        prompts: ``[B, P]`` int tokens, left-padded (``B >= 2`` to test the gather).
        prompt_mask: ``[B, P]`` bool, False on the left pads (default all True).
        max_new_tokens: tokens fed to every row (the cache's last slot is reached).
        key: PRNG key of the random tokens, holds and gather.
        atol: absolute tolerance (bfloat16 models need about ``atol=rtol=3e-2``).
        rtol: tolerance relative to the reference's largest logit.
        hold_prob: probability that a row is held on a call.
        forward: optional ``(tokens [1, L], mask [1, L]) -> logits [1, L, V]``
            full forward pass (default: ``prefill`` into a fresh exact cache).

    Returns:
        a ``ConformanceReport``.

    Raises:
        ValueError: bad arguments, or a cache too small (``check_capacity``).
        AssertionError: logits that differ (naming the check, row, position,
            the held calls and gather before it, and the difference), logits
            of the wrong shape, or a cache whose shapes change between calls.

    Example:
        With ``lm`` and ``prompts`` from the package example (``inferax.search.lm``):

        >>> from inferax.search.lm import conformance
        >>> report = conformance.check_lm(
        ...     lm, prompts=prompts, max_new_tokens=4, key=jax.random.key(1))
        >>> report.capacity, report.positions_checked > 0, report.decode_error < 1e-4
        (7, True, True)
    """
    _check_protocol(lm)
    prompts, mask = _prompt_rows(prompts, prompt_mask)
    b, p = prompts.shape
    m = _checks.positive_int(max_new_tokens, "max_new_tokens")
    if not 0.0 <= float(hold_prob) < 1.0:
        raise ValueError(f"hold_prob: expected a float in [0, 1), got {hold_prob!r}")
    vocab = int(lm.vocab_size)
    cap = check_capacity(lm, prompt_len=p, max_new_tokens=m, batch_size=b)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    prefill = jax.jit(lm.prefill)
    decode = jax.jit(lm.decode_step)
    cache = jax.jit(lm.init_cache, static_argnums=(0, 1))(b, cap)
    axes = particles.leaf_axes(lm.cache_axes, cache, "lm.cache_axes")
    logits, new_cache = prefill(cache, jnp.asarray(prompts, jnp.int32), jnp.asarray(mask))
    _check_same_cache(cache, new_cache, "prefill")
    cache = new_cache
    logits = _check_logits(logits, b, vocab, "prefill")

    # Each check: (phase, row, sequence so far, cached logits, what came before).
    hist = [tuple(int(t) for t in prompts[i][mask[i]]) for i in range(b)]
    story = [f"prompt of {len(h)} real tokens after {p - len(h)} pads" for h in hist]
    checks = [("prefill", i, hist[i], logits[i], story[i]) for i in range(b)]
    finals = []
    fed = np.zeros(b, int)
    held = np.zeros(b, int)
    held_calls, call, gathered = 0, 0, False
    while np.any(fed < m):
        valid = (fed < m) & (rng.random(b) >= hold_prob)
        if not np.any(valid):
            valid[np.argmin(fed)] = True
        held_calls += bool(np.any(~valid))
        tok = rng.integers(0, vocab, size=b)
        out, new_cache = decode(cache, jnp.asarray(tok, jnp.int32), jnp.asarray(valid))
        _check_same_cache(cache, new_cache, f"decode_step (call {call})")
        cache = new_cache
        out = _check_logits(out, b, vocab, f"decode_step (call {call})")
        for i in np.flatnonzero(valid):
            hist[i] = hist[i] + (int(tok[i]),)
            fed[i] += 1
            phase = "decode after gather" if gathered else "decode"
            where = f"call {call}, after {held[i]} held calls; {story[i]}"
            checks.append((phase, i, hist[i], out[i], where))
        held += ~valid
        call += 1
        if not gathered and b > 1 and fed.sum() * 2 >= b * m:
            idx = (np.arange(b) + 1) % b
            if b > 2:
                idx[-1] = idx[0]
            finals.extend(hist)
            cache_before = cache
            take = jax.jit(lambda c, i: particles.take(c, i, axes))
            cache = take(cache, jnp.asarray(idx, jnp.int32))
            _check_same_cache(cache_before, cache, "particles.take over lm.cache_axes")
            hist = [hist[j] for j in idx]
            fed, held = fed[idx], held[idx]
            story = [f"{story[j]}; gathered from row {j} at call {call}" for j in idx]
            gathered = True
    finals.extend(hist)

    refs = _reference(lm, forward, finals, [c[2] for c in checks], vocab)
    errors = {"prefill": 0.0, "decode": 0.0, "decode after gather": 0.0}
    failures = []
    for phase, i, seq, got, where in checks:
        ref = refs[seq]
        err = float(np.max(np.abs(got - ref)))
        errors[phase] = max(errors[phase], err)
        if not err <= atol + rtol * float(np.max(np.abs(ref))):
            failures.append(
                f"{phase}: row {i}, position {len(seq) - 1} ({where}): "
                f"max |cached - full forward| = {err:.3g} > atol {atol:g} + rtol {rtol:g} * "
                f"max|ref| {float(np.max(np.abs(ref))):.3g}"
            )
    if failures:
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        raise AssertionError(
            f"check_lm: {len(failures)} of {len(checks)} logits rows differ from the full "
            f"forward pass (cache of {cap} slots = prompt_len {p} + max_new_tokens {m}):\n  "
            + "\n  ".join(failures[:5])
            + more
        )
    return ConformanceReport(
        prefill_error=errors["prefill"],
        decode_error=max(errors["decode"], errors["decode after gather"]),
        gather_error=errors["decode after gather"],
        positions_checked=len(checks),
        held_calls=held_calls,
        capacity=cap,
    )


def _reference(lm, forward, finals, seqs, vocab):
    """``{seq: reference logits [V] after seq's last token}`` for every ``seq`` in ``seqs``.

    ``forward``: one call on every final sequence, right-padded (a causal model's
    logits at a position never see later tokens, so the pads need no mask).
    ``prefill``: one jitted call per distinct length, rows unpadded, each into a
    fresh cache of exactly that length.
    """
    out: dict[tuple, np.ndarray] = {}
    if forward is not None:
        finals = sorted(set(finals))
        width = max(len(f) for f in finals)
        tokens = np.zeros((len(finals), width), np.int32)
        for r, f in enumerate(finals):
            tokens[r, : len(f)] = f
        run = jax.jit(lambda t: jnp.asarray(forward(t, jnp.ones(t.shape, bool)), jnp.float32))
        full = np.asarray(run(jnp.asarray(tokens)))
        if full.shape != (*tokens.shape, vocab):
            raise AssertionError(
                f"forward: expected logits of shape {(*tokens.shape, vocab)}, got {full.shape}"
            )
        for seq in seqs:
            r = next(r for r, f in enumerate(finals) if f[: len(seq)] == seq)
            out[seq] = full[r, len(seq) - 1]
        return out
    by_len: dict[int, list[tuple]] = {}
    for seq in sorted(set(seqs)):
        by_len.setdefault(len(seq), []).append(seq)
    rows = max(len(g) for g in by_len.values())

    @jax.jit
    def run(tokens):
        cache = lm.init_cache(tokens.shape[0], tokens.shape[1])
        return lm.prefill(cache, tokens, jnp.ones(tokens.shape, bool))[0]

    for group in by_len.values():
        tokens = np.asarray([group[min(r, len(group) - 1)] for r in range(rows)], np.int32)
        got = _check_logits(run(jnp.asarray(tokens)), rows, vocab, "prefill (reference)")
        out.update(zip(group, got, strict=False))
    return out
