"""Resampling schemes for sequential Monte Carlo, in log space.

Each scheme maps unnormalised log-weights ``l`` (shape ``[N]``) to ``M``
ancestor indices such that particle ``i`` is copied ``M w_i`` times in
expectation, ``w = softmax(l)`` (unbiasedness; Douc, Cappe & Moulines 2005,
"Comparison of resampling schemes for particle filtering"):

- ``multinomial``: ``M`` i.i.d. draws from ``w`` (``u_k ~ U[0, 1)`` i.i.d.);
- ``stratified``:  ``u_k = (k + U_k) / M``, one uniform per stratum;
- ``systematic``:  ``u_k = (k + U) / M``, one uniform shared by all strata;
- ``residual``:    ``floor(M w_i)`` deterministic copies, then multinomial
  draws from the remainders ``M w_i - floor(M w_i)`` for the free slots.

All invert the empirical CDF at the points ``u``. ``multinomial`` and the
random part of ``residual`` use ``inverse_cdf`` (cumulative sum, a running max,
``searchsorted``, a clip). ``stratified`` and ``systematic``, whose points are
sorted with one per stratum, skip the binary search: they count the points
below each CDF value, ``cnt_i = floor(M c_i) + [U < frac(M c_i)]``, and turn
the counts into ancestors with a histogram and a prefix sum, in O(N + M)
(``_stratified_counts``); this is ``inverse_cdf`` at the same points, up to
where float rounding falls. All shapes are static, so every scheme is ``jit``-
and ``vmap``-compatible.

Conventions (shared by ``ess``, ``log_normalize`` and the SMC module):

- NaN log-weights count as ``-inf`` (zero weight). A particle of zero weight is
  never selected, whatever the rounding of the float32 cumulative sum.
- ``+inf`` log-weights: the ``+inf`` particles share all the mass equally.
- If every log-weight is ``-inf``/NaN (``all_invalid(l)`` is True), there is no
  distribution to sample: every scheme then returns the identity ancestors
  ``arange(M) % N`` (keep the population as it is), ``ess`` returns 0 and
  ``log_normalize`` returns ``-inf`` everywhere. The caller detects the
  condition with ``all_invalid`` (``smc.step`` reports it in its ``Info``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from inferax.sampling import _checks

Resampler = Callable[..., jax.Array]


def check_log_weights(log_weights, name: str = "log_weights") -> jax.Array:
    """A floating ``[N]`` array (N >= 1), promoted to at least float32."""
    if not hasattr(log_weights, "dtype"):
        log_weights = jnp.asarray(log_weights)
    if not jnp.issubdtype(log_weights.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {log_weights.dtype}")
    if log_weights.ndim != 1 or log_weights.shape[0] < 1:
        raise ValueError(
            f"{name}: expected a non-empty 1-D array [N], got shape {tuple(log_weights.shape)}"
        )
    # Weights are summed in at least float32 (bfloat16 cumulative sums are too coarse).
    return jnp.asarray(log_weights, jnp.promote_types(log_weights.dtype, jnp.float32))


def _check_num_samples(num_samples, n: int) -> int:
    if num_samples is None:
        return n
    return _checks.positive_int(num_samples, "num_samples")


def sanitize(log_weights: jax.Array) -> jax.Array:
    """Maps NaN to ``-inf``; if any entry is ``+inf``, those entries share the mass.

    Args:
        log_weights: ``[N]`` unnormalised log-weights.

    Returns:
        ``[N]`` log-weights without NaN or ``+inf`` (``-inf`` allowed).
    """
    l = jnp.where(jnp.isnan(log_weights), -jnp.inf, log_weights)
    pos_inf = l == jnp.inf
    return jnp.where(jnp.any(pos_inf), jnp.where(pos_inf, 0.0, -jnp.inf), l).astype(l.dtype)


def all_invalid(log_weights: jax.Array) -> jax.Array:
    """True iff every log-weight is ``-inf`` or NaN (no particle has weight)."""
    log_weights = check_log_weights(log_weights)
    return jnp.all(sanitize(log_weights) == -jnp.inf)


def log_normalize(log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalises log-weights with ``logsumexp``.

    Args:
        log_weights: ``[N]`` unnormalised log-weights (NaN counts as ``-inf``).

    Returns:
        ``(l - logsumexp(l), logsumexp(l))``. If every weight is invalid, the
            first is ``-inf`` everywhere and the second is ``-inf``.
    """
    l = sanitize(check_log_weights(log_weights))
    lse = jax.nn.logsumexp(l)
    normalized = jnp.where(jnp.isfinite(lse), l - lse, -jnp.inf)
    return normalized.astype(l.dtype), lse


def check_not_probabilities(log_weights, name: str = "log_weights") -> None:
    """Refuses, when its values are known before tracing, an array that looks like
    normalised weights passed where log-weights are expected.

    Rejected: ``N >= 2`` entries, all in [0, 1], summing to 1 (within 1e-5 N),
    not all equal. Read as log-weights such an array gives a nearly flat ESS
    (e.g. 1.98 for weights [0.9, 0.1] whose true ESS is 1.22), a silent
    error. A log-weight vector that genuinely has this form can be shifted by
    any constant (``ess`` is invariant to it). Traced values are not checked.

    Raises:
        ValueError: naming ``name``, for such an array.
    """
    values = _checks.concrete_value(log_weights)
    if values is None or values.ndim != 1 or values.shape[0] < 2:
        return
    v = values.astype(np.float64)
    if not np.all(np.isfinite(v)) or v.min() < 0.0 or v.max() > 1.0 or v.min() == v.max():
        return
    if abs(v.sum() - 1.0) <= 1e-5 * v.shape[0]:
        raise ValueError(
            f"{name}: expected log-weights, got what look like normalised weights (all "
            f"{v.shape[0]} entries in [0, 1], summing to {v.sum():.6g}); pass jnp.log(weights) "
            "(or shift genuine log-weights by a constant: the result does not change)"
        )


def ess(log_weights: jax.Array) -> jax.Array:
    """Effective sample size ``1 / sum w_i^2 = exp(2 lse(l) - lse(2 l))`` from LOG-weights.

    Kong, Liu & Wong (1994). Equals ``N`` for equal weights and 1 for a single
    nonzero weight; 0 when every weight is invalid (``-inf``/NaN).

    Args:
        log_weights: ``[N]`` unnormalised log-weights (not weights: a known
            array of N >= 2 unequal entries in [0, 1] summing to 1 is refused,
            see ``check_not_probabilities``).

    Raises:
        ValueError / TypeError: a non-floating or non-1-D array, or weights
            where log-weights are expected.

    Example:
        >>> import jax.numpy as jnp
        >>> from inferax.sampling import resampling
        >>> float(resampling.ess(jnp.zeros(4)))  # equal weights
        4.0
        >>> float(resampling.ess(jnp.array([0.0, -jnp.inf, -jnp.inf])))  # one live particle
        1.0
    """
    check_not_probabilities(log_weights)
    l = sanitize(check_log_weights(log_weights))
    invalid = jnp.all(l == -jnp.inf)
    # Shift by the maximum first: at |l| ~ 1e6 the unshifted float32 difference
    # 2 lse(l) - lse(2 l) loses the digits that matter.
    l = l - jnp.where(invalid, 0.0, jnp.max(l))
    value = jnp.exp(2.0 * jax.nn.logsumexp(l) - jax.nn.logsumexp(2.0 * l))
    return jnp.where(invalid, jnp.zeros((), l.dtype), value)


def _weights(l: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalised weights of checked log-weights, and the all-invalid flag.

    Applies ``sanitize`` on the way with a single max-reduction: after NaN ->
    ``-inf``, the max is ``+inf`` iff some entry is ``+inf`` and ``-inf`` iff
    every entry is invalid. Bit-identical to normalising ``sanitize(l)``.
    """
    l = jnp.where(jnp.isnan(l), -jnp.inf, l)
    top = jnp.max(l)
    pos_inf = top == jnp.inf
    l = jnp.where(pos_inf, jnp.where(l == jnp.inf, 0.0, -jnp.inf), l).astype(l.dtype)
    top = jnp.where(pos_inf, 0.0, top)
    invalid = top == -jnp.inf
    w = jnp.exp(l - jnp.where(invalid, 0.0, top))
    return w / jnp.maximum(jnp.sum(w), jnp.finfo(l.dtype).tiny), invalid


def _cdf(w: jax.Array, invalid: jax.Array) -> jax.Array:
    """Non-decreasing normalised CDF of ``w``, ending at exactly 1 unless ``invalid``.

    XLA's CPU ``cumsum`` adds in a tree, so it is not monotone in float. A
    running max makes it non-decreasing and gives a zero-weight entry exactly
    the value of the entry before it (0 for leading zeros); as max is exact,
    ``associative_scan(maximum)`` equals ``lax.cummax`` bit for bit and is
    cheaper on CPU. Dividing by the last entry makes the CDF end at exactly 1
    (``x / x == 1`` in IEEE arithmetic; the float32 sum may end below 1), and
    trailing zero-weight entries equal it.
    """
    cdf = jax.lax.associative_scan(jnp.maximum, jnp.where(w > 0, jnp.cumsum(w), 0.0))
    return cdf / jnp.where(invalid, 1.0, cdf[-1])


def _inverse_cdf(w: jax.Array, invalid: jax.Array, uniforms: jax.Array) -> jax.Array:
    n = w.shape[0]
    m = uniforms.shape[0]
    # A zero-weight index has the CDF value of the index before it, so it is
    # never the first entry above u; u < 1 stops before trailing zero weights.
    cdf = _cdf(w, invalid)
    below_one = jnp.nextafter(jnp.ones((), uniforms.dtype), jnp.zeros((), uniforms.dtype))
    u = jnp.clip(uniforms, 0.0, below_one)
    idx = jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, n - 1).astype(jnp.int32)
    return jnp.where(invalid, jnp.arange(m, dtype=jnp.int32) % n, idx)


def _stratified_counts(w: jax.Array, invalid: jax.Array, shifts: jax.Array, m: int) -> jax.Array:
    """Inverse CDF at the sorted points ``u_k = (k + U_k) / M`` by counting, in O(N + M).

    With the monotone CDF ``c`` (``_cdf``), ``x_i = M c_i``, ``j_i = floor(x_i)``
    and ``f_i = x_i - j_i`` (exact in float), the number of points below
    ``c_i`` is ``cnt_i = #{k : k + U_k < x_i} = j_i + [U_{j_i} < f_i]``: strata
    ``k < j_i`` lie below, strata ``k > j_i`` above. As the points are sorted,
    ``searchsorted(c, u_k, side="right") = #{i : c_i <= u_k} = #{i : cnt_i <= k}``,
    a prefix sum of the histogram of ``cnt``. Particle ``i`` gets
    ``cnt_i - cnt_{i-1}`` copies: none when ``w_i = 0`` (``c_i = c_{i-1}``
    exactly, so the counts are equal), and the last positive particle and the
    zero-weight ones after it have ``c = 1``, ``cnt = M``. ``cnt`` is a
    monotone function of ``c`` (float rounding is monotone), so the ancestors
    are non-decreasing. The only rounding is that of ``M c_i`` (against that
    of ``(k + U_k) / M`` in ``inverse_cdf``).

    Args:
        w: ``[N]`` normalised weights.
        invalid: all-invalid flag (identity ancestors are returned).
        shifts: ``U_k`` in [0, 1): shape ``[M]`` (stratified) or ``[]`` (systematic).
        m: number of ancestors ``M``.

    Returns:
        ``int32 [M]`` non-decreasing ancestor indices.
    """
    n = w.shape[0]
    c = _cdf(w, invalid)
    x = m * c
    j = jnp.floor(x)
    f = x - j
    j = j.astype(jnp.int32)
    u = shifts if shifts.ndim == 0 else shifts[jnp.minimum(j, m - 1)]
    cnt = jnp.clip(j + (u < f).astype(jnp.int32), 0, m)
    # c = 1 means every point lies below (guards against any rounding of M * 1).
    cnt = jnp.where(c >= 1.0, m, cnt)
    hist = jnp.zeros(m + 1, jnp.int32).at[cnt].add(1)
    # Integer prefix sum: exact in any order, and the scan is cheaper than cumsum on CPU.
    idx = jnp.minimum(jax.lax.associative_scan(jnp.add, hist[:m]), n - 1)
    return jnp.where(invalid, jnp.arange(m, dtype=jnp.int32) % n, idx)


def inverse_cdf(log_weights: jax.Array, uniforms: jax.Array) -> jax.Array:
    """Ancestors ``a_k = min{i : sum_{j<=i} w_j > u_k}`` for given points ``u`` in [0, 1).

    Args:
        log_weights: ``[N]`` unnormalised log-weights (NaN counts as ``-inf``).
        uniforms: ``[M]`` points in [0, 1) (values outside are clipped).

    Returns:
        ``int32 [M]`` ancestor indices; ``arange(M) % N`` if all weights are invalid.
    """
    l = check_log_weights(log_weights)
    uniforms = jnp.asarray(uniforms)
    if uniforms.ndim != 1:
        raise ValueError(f"uniforms: expected a 1-D array [M], got shape {uniforms.shape}")
    w, invalid = _weights(l)
    return _inverse_cdf(w, invalid, uniforms.astype(l.dtype))


def multinomial(
    key: jax.Array, log_weights: jax.Array, num_samples: int | None = None
) -> jax.Array:
    """Multinomial resampling: ``M`` i.i.d. draws, ``u_k ~ U[0, 1)``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalised log-weights.
        num_samples: ``M``, number of ancestors (default ``N``).

    Returns:
        ``int32 [M]`` ancestor indices.
    """
    l = check_log_weights(log_weights)
    m = _check_num_samples(num_samples, l.shape[0])
    return inverse_cdf(l, jax.random.uniform(key, (m,), dtype=l.dtype))


def stratified(key: jax.Array, log_weights: jax.Array, num_samples: int | None = None) -> jax.Array:
    """Stratified resampling (Kitagawa 1996): ``u_k = (k + U_k) / M``, ``U_k`` i.i.d.

    Evaluated by counting the points below each CDF value (``_stratified_counts``,
    O(N + M), no binary search).

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalised log-weights.
        num_samples: ``M``, number of ancestors (default ``N``).

    Returns:
        ``int32 [M]`` ancestor indices (non-decreasing).
    """
    return _by_counting(key, log_weights, num_samples, one_uniform=False)


def systematic(key: jax.Array, log_weights: jax.Array, num_samples: int | None = None) -> jax.Array:
    """Systematic resampling (Carpenter, Clifford & Fearnhead 1999): ``u_k = (k + U) / M``.

    Evaluated by counting (``_stratified_counts``): particle ``i`` gets
    ``ceil(M c_i - U) - ceil(M c_{i-1} - U)`` copies, ``c`` the CDF (``c_{-1} = 0``).

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalised log-weights.
        num_samples: ``M``, number of ancestors (default ``N``).

    Returns:
        ``int32 [M]`` ancestor indices (non-decreasing).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from inferax.sampling import resampling
        >>> log_weights = jnp.log(jnp.array([0.5, 0.5, 0.0, 0.0]))
        >>> resampling.systematic(jax.random.key(0), log_weights).tolist()
        [0, 0, 1, 1]
    """
    return _by_counting(key, log_weights, num_samples, one_uniform=True)


def _by_counting(key, log_weights, num_samples, *, one_uniform: bool) -> jax.Array:
    """Stratified (``M`` uniforms) or systematic (one shared uniform) by counting."""
    l = check_log_weights(log_weights)
    m = _check_num_samples(num_samples, l.shape[0])
    w, invalid = _weights(l)
    u = jax.random.uniform(key, () if one_uniform else (m,), dtype=l.dtype)
    return _stratified_counts(w, invalid, u, m)


def residual(key: jax.Array, log_weights: jax.Array, num_samples: int | None = None) -> jax.Array:
    """Residual resampling (Liu & Chen 1998), with static shapes.

    Particle ``i`` first gets ``floor(M w_i)`` copies (slots ``0 .. D-1``, in
    index order, ``D = sum_i floor(M w_i)``); the ``M - D`` free slots are
    filled with multinomial draws (``u_k ~ U[0, 1)``, ``k = D .. M-1``) from the
    remainders ``M w_i - floor(M w_i)``. Unbiased: the expected count is
    ``floor(M w_i) + (M - D) r_i / sum_j r_j = M w_i``.

    Args:
        key: PRNG key.
        log_weights: ``[N]`` unnormalised log-weights.
        num_samples: ``M``, number of ancestors (default ``N``).

    Returns:
        ``int32 [M]`` ancestor indices.
    """
    l = check_log_weights(log_weights)
    n = l.shape[0]
    m = _check_num_samples(num_samples, n)
    w, invalid = _weights(l)
    scaled = m * w
    copies = jnp.floor(scaled)
    counts = jnp.cumsum(copies.astype(jnp.int32))
    slots = jnp.arange(m, dtype=jnp.int32)
    deterministic = jnp.clip(jnp.searchsorted(counts, slots, side="right"), 0, n - 1)
    remainder = scaled - copies
    rem_total = jnp.sum(remainder)
    rem_invalid = invalid | (rem_total <= 0)
    rem_w = remainder / jnp.where(rem_invalid, 1.0, rem_total)
    u = jax.random.uniform(key, (m,), dtype=l.dtype)
    random = _inverse_cdf(rem_w, rem_invalid, u)
    idx = jnp.where(slots < counts[-1], deterministic, random).astype(jnp.int32)
    return jnp.where(invalid, slots % n, idx)


RESAMPLERS: dict[str, Resampler] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def get(name: str) -> Resampler:
    """Returns the resampling function called ``name`` (a key of ``RESAMPLERS``).

    Raises:
        ValueError: if ``name`` is not a known scheme.
    """
    if not isinstance(name, str) or name not in RESAMPLERS:
        raise ValueError(f"resampling: expected one of {sorted(RESAMPLERS)}, got {name!r}")
    return RESAMPLERS[name]
