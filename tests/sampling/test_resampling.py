"""Tests for inferax.sampling.resampling.

Truths used: unbiasedness E[count_i] = M w_i (checked over 20000 keys with a
5-standard-error tolerance from the binomial variance), a float64 NumPy
reference fed the same uniforms, exact ESS values, and zero-weight exclusion.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.sampling import resampling

SCHEMES = sorted(resampling.RESAMPLERS)
NUM_KEYS = 20_000


def _counts(fn, log_weights, m, num_keys=NUM_KEYS, seed=0):
    keys = jax.random.split(jax.random.key(seed), num_keys)
    n = log_weights.shape[0]

    @jax.jit
    def counts(keys):
        return jax.vmap(lambda k: jnp.bincount(fn(k, log_weights, m), length=n))(keys)

    return np.asarray(counts(keys), np.float64)


def _weights64(log_weights):
    l = np.asarray(log_weights, np.float64)
    w = np.exp(l - l.max())
    return w / w.sum()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("m", [8, 13])
def test_unbiased(scheme, m):
    w = np.array([0.02, 0.3, 0.05, 0.0, 0.18, 0.25, 0.11, 0.09])
    l = jnp.log(jnp.asarray(w, jnp.float32))
    counts = _counts(resampling.get(scheme), l, m)
    assert counts.shape == (NUM_KEYS, 8)
    np.testing.assert_array_equal(counts.sum(axis=1), m)
    mean = counts.mean(axis=0)
    # Per-index variance of each scheme's count is at most the multinomial
    # M w (1 - w), or 1/4 for floor/ceil schemes; 5 standard errors.
    se = np.sqrt(np.maximum(m * w * (1 - w), 0.25) / NUM_KEYS)
    np.testing.assert_array_less(np.abs(mean - m * w), 5 * se)
    assert counts[:, 3].max() == 0  # zero weight never chosen


def test_biased_scheme_is_detected():
    # Negative control: the same check rejects a wrong scheme (ignores weights).
    w = np.array([0.02, 0.3, 0.05, 0.0, 0.18, 0.25, 0.11, 0.09])
    l = jnp.log(jnp.asarray(w, jnp.float32))
    counts = _counts(lambda k, lw, m: resampling.multinomial(k, jnp.zeros_like(lw), m), l, 8)
    se = np.sqrt(np.maximum(8 * w * (1 - w), 0.25) / NUM_KEYS)
    assert np.any(np.abs(counts.mean(axis=0) - 8 * w) > 5 * se)


def test_variance_ordering():
    w = np.array([0.02, 0.3, 0.05, 0.0, 0.18, 0.25, 0.11, 0.09])
    l = jnp.log(jnp.asarray(w, jnp.float32))
    var = {s: _counts(resampling.get(s), l, 8).var(axis=0).sum() for s in SCHEMES}
    # Multinomial: sum_i M w_i (1 - w_i); the others are well below it here.
    assert abs(var["multinomial"] - 8 * np.sum(w * (1 - w))) < 0.05 * var["multinomial"]
    for s in ("stratified", "systematic", "residual"):
        assert var[s] < 0.9 * var["multinomial"], (s, var)
    assert var["systematic"] <= var["stratified"] * 1.05


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resampled_moments_match_weighted(scheme):
    n = 4096
    x = jax.random.normal(jax.random.key(1), (n,))
    l = -0.5 * (x - 1.0) ** 2  # reweight N(0, 1) towards N(0.5, 0.5)
    w = _weights64(l)
    x64 = np.asarray(x, np.float64)
    mean_w = np.sum(w * x64)
    var_w = np.sum(w * (x64 - mean_w) ** 2)
    anc = resampling.get(scheme)(jax.random.key(2), l)
    xs = x64[np.asarray(anc)]
    se = np.sqrt(var_w / n)  # multinomial standard error bounds the others
    assert abs(xs.mean() - mean_w) < 5 * se
    assert abs(xs.var() - var_w) < 5 * var_w * np.sqrt(2.0 / n) + 5 * se**2
    assert abs(mean_w - 0.5) < 0.05 and abs(var_w - 0.5) < 0.05


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("m", [None, 5])
def test_one_hot(scheme, m):
    l = jnp.full((7,), -jnp.inf).at[4].set(3.0)
    for seed in range(5):
        anc = resampling.get(scheme)(jax.random.key(seed), l, m)
        assert anc.dtype == jnp.int32 and anc.shape == (m or 7,)
        np.testing.assert_array_equal(anc, 4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_zero_weights_never_chosen(scheme):
    fn = resampling.get(scheme)
    # Zeros at the start, the middle and the end; float32 cumsum below 1.
    cases = [
        np.array([0.3, 0.7 - 1e-7, 0.0], np.float32),
        np.array([0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0], np.float32),
        np.array(
            [0.23676449, 0.10028219, 0.01523023, 0.00614347, 0.30229998, 0.3392796, 0.0],
            np.float32,
        ),
    ]
    for w in cases:
        with np.errstate(divide="ignore"):
            l = jnp.asarray(np.log(w))
        counts = _counts(fn, l, w.shape[0], num_keys=2000, seed=3)
        assert np.all(counts[:, w == 0] == 0), (scheme, w)


def test_cdf_guard_when_float32_sum_ends_below_one():
    w = np.array(
        [0.23676449, 0.10028219, 0.01523023, 0.00614347, 0.30229998, 0.3392796, 0.0], np.float32
    )
    assert np.cumsum(w, dtype=np.float32)[-1] < 1.0  # a naive CDF would pick index 6
    l = jnp.log(jnp.asarray(w))
    below_one = np.nextafter(np.float32(1), np.float32(0))
    anc = resampling.inverse_cdf(l, jnp.array([below_one, 1.0, 0.0], jnp.float32))
    np.testing.assert_array_equal(anc, [5, 5, 0])
    # Systematic with u = (M - 1 + U) / M rounding up to 1 in float32.
    anc = resampling.inverse_cdf(l, jnp.array([(2 + below_one) / 3], jnp.float32))
    assert int(anc[0]) == 5


@pytest.mark.parametrize("scheme", SCHEMES)
def test_nan_counts_as_minus_inf(scheme):
    fn = resampling.get(scheme)
    l = jnp.array([0.1, jnp.nan, -0.3, 0.5, jnp.nan])
    l_inf = jnp.where(jnp.isnan(l), -jnp.inf, l)
    for seed in range(20):
        key = jax.random.key(seed)
        a = fn(key, l)
        np.testing.assert_array_equal(a, fn(key, l_inf))
        assert not np.any(np.isin(np.asarray(a), [1, 4]))
    assert float(resampling.ess(l)) == pytest.approx(float(resampling.ess(l_inf)))


def test_plus_inf_particles_share_the_mass():
    l = jnp.array([0.0, jnp.inf, -1.0, jnp.inf])
    counts = _counts(resampling.multinomial, l, 4, num_keys=4000).sum(axis=0)
    assert counts[0] == counts[2] == 0
    assert abs(counts[1] - counts[3]) < 5 * np.sqrt(16000 * 0.25) * 2


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bad", [-jnp.inf, jnp.nan])
def test_all_invalid_documented_behaviour(scheme, bad):
    l = jnp.full((5,), bad)
    assert bool(resampling.all_invalid(l))
    np.testing.assert_array_equal(resampling.get(scheme)(jax.random.key(0), l), np.arange(5))
    np.testing.assert_array_equal(resampling.get(scheme)(jax.random.key(0), l, 7), np.arange(7) % 5)
    assert float(resampling.ess(l)) == 0.0
    normalized, lse = resampling.log_normalize(l)
    assert np.all(np.asarray(normalized) == -np.inf) and float(lse) == -np.inf
    assert not bool(resampling.all_invalid(l.at[2].set(-1e30)))


def test_ess_and_log_normalize():
    assert float(resampling.ess(jnp.zeros(16))) == pytest.approx(16.0, rel=1e-6)
    assert float(resampling.ess(jnp.full(16, -jnp.inf).at[3].set(-50.0))) == pytest.approx(1.0)
    l = jnp.log(jnp.array([0.5, 0.25, 0.25])) + 123.0
    assert float(resampling.ess(l)) == pytest.approx(1 / (0.25 + 2 * 0.0625), rel=1e-5)
    normalized, lse = resampling.log_normalize(l)
    np.testing.assert_allclose(np.exp(normalized), [0.5, 0.25, 0.25], rtol=1e-5)
    assert float(lse) == pytest.approx(123.0, rel=1e-6)


def _ref_inverse_cdf(w64, u):
    cdf = np.cumsum(w64)
    return np.clip(
        np.searchsorted(cdf / cdf[-1], u.astype(np.float64), side="right"), 0, len(w64) - 1
    )


def _ref_ancestors(scheme, key, l, m):
    """Float64 NumPy reference given the uniforms each scheme documents."""
    w = _weights64(l)
    m32 = np.float32(m)
    if scheme == "multinomial":
        return _ref_inverse_cdf(w, np.asarray(jax.random.uniform(key, (m,))))
    if scheme == "stratified":
        u = (np.arange(m, dtype=np.float32) + np.asarray(jax.random.uniform(key, (m,)))) / m32
        return _ref_inverse_cdf(w, u)
    if scheme == "systematic":
        u = (np.arange(m, dtype=np.float32) + np.asarray(jax.random.uniform(key, ()))) / m32
        return _ref_inverse_cdf(w, u)
    copies = np.floor(m * w).astype(int)
    det = np.repeat(np.arange(len(w)), copies)
    rem = m * w - copies
    rnd = _ref_inverse_cdf(rem / rem.sum(), np.asarray(jax.random.uniform(key, (m,))))
    return np.concatenate([det, rnd[len(det) :]])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("m", [50, 37])
def test_matches_float64_reference(scheme, m):
    rng = np.random.default_rng(5)
    fn = jax.jit(resampling.get(scheme), static_argnums=2)
    for seed in range(30):
        l = rng.normal(size=50).astype(np.float32) * 2.0
        l[rng.random(50) < 0.2] = -np.inf
        key = jax.random.key(seed)
        got = np.asarray(fn(key, jnp.asarray(l), m))
        np.testing.assert_array_equal(got, _ref_ancestors(scheme, key, l, m))


def test_bad_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="log_weights.*1-D.*shape \\(2, 3\\)"):
        resampling.systematic(key, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="log_weights.*1-D"):
        resampling.multinomial(key, jnp.zeros((0,)))
    with pytest.raises(TypeError, match="log_weights.*floating.*int32"):
        resampling.residual(key, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="num_samples.*positive.*got 0"):
        resampling.stratified(key, jnp.zeros(3), 0)
    with pytest.raises(TypeError, match="num_samples"):
        resampling.stratified(key, jnp.zeros(3), 2.5)
    with pytest.raises(TypeError, match="num_samples"):
        resampling.stratified(key, jnp.zeros(3), True)
    with pytest.raises(ValueError, match="resampling.*systematic.*got 'sytematic'"):
        resampling.get("sytematic")
    with pytest.raises(TypeError, match="log_weights"):
        resampling.ess(jnp.arange(3))
    assert resampling.get("residual") is resampling.residual


# --------------------------------------------------------------------------- counting form
# ``stratified`` and ``systematic`` count the points below each CDF value
# (``resampling._stratified_counts``) instead of a binary search.


_count_jit = jax.jit(resampling._stratified_counts, static_argnums=3)


def _count_ancestors(w, shifts, m):
    w = jnp.asarray(w, jnp.float32)
    return np.asarray(_count_jit(w, jnp.all(w == 0), jnp.asarray(shifts, jnp.float32), m))


@pytest.mark.parametrize("m", [32, 64, 128])
def test_counting_equals_searchsorted_on_exact_inputs(m):
    # Weights k/32 (every partial sum is exact in any order), M a power of 2
    # and shifts multiples of 1/8 make every float32 operation exact, so the
    # counting form must equal searchsorted(c, u, side="right") bit for bit,
    # ties u_k == c_i included (U = 0 puts points on CDF values).
    rng = np.random.default_rng(0)
    for trial in range(20):
        q = rng.multinomial(32, rng.dirichlet(np.full(24, 0.5)))
        if trial % 3 == 0:
            q[-1] = 0  # trailing zero weights
            q[int(np.argmax(q))] += 32 - q.sum()
        w64 = q / 32.0
        cdf = np.cumsum(w64)
        for shifts in (0.0, 0.5, 0.875, rng.integers(0, 8, m) / 8.0):
            u = (np.arange(m) + np.asarray(shifts)) / m
            ref = np.minimum(np.searchsorted(cdf, u, side="right"), 23)
            got = _count_ancestors(w64, shifts, m)
            np.testing.assert_array_equal(got, ref, err_msg=f"trial {trial}, shifts {shifts}")
            assert not np.any(q[got] == 0)


@pytest.mark.parametrize("m", [3, 7, 10_007])
def test_counting_extreme_shifts_never_pick_zero_weights(m):
    # U = 0 and U = 1 - ulp. With U = 1 - ulp a naive ceil(M c - U) rounds
    # M - U down to M - 1 (float32, any M >= 2) and would hand the last slot
    # to a trailing zero-weight particle; the float32 sums here end below 1.
    below_one = np.nextafter(np.float32(1), np.float32(0))
    cases = [
        np.array([0.3, 0.7 - 1e-7, 0.0], np.float32),
        np.array([0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0], np.float32),
        np.array(
            [0.23676449, 0.10028219, 0.01523023, 0.00614347, 0.30229998, 0.3392796, 0.0],
            np.float32,
        ),
    ]
    for w in cases:
        for shift in (0.0, below_one):
            for shifts in (jnp.float32(shift), jnp.full((m,), shift, jnp.float32)):
                a = _count_ancestors(w, shifts, m)
                assert a.shape == (m,) and a.dtype == np.int32
                assert np.all(np.diff(a) >= 0)
                counts = np.bincount(a, minlength=w.shape[0])
                assert counts.sum() == m and np.all(counts[w == 0] == 0), (m, w, shift)
                # Every positive particle gets floor or ceil of M w_i (up to float32 rounding).
                assert np.all(np.abs(counts - m * w.astype(np.float64)) < 1 + 1e-6 * m)


@pytest.mark.parametrize("scheme,slack", [("systematic", 1.0), ("stratified", 2.0)])
def test_counting_large_n_with_non_monotone_cumsum(scheme, slack):
    # N = 1e5 with 30% zero weights: XLA's CPU cumsum is not monotone here.
    n = 100_000
    l = 2.0 * jax.random.normal(jax.random.key(1), (n,), jnp.float32)
    l = jnp.where(jax.random.uniform(jax.random.key(2), (n,)) < 0.3, -jnp.inf, l)
    w32 = jax.nn.softmax(l)
    assert np.any(np.diff(np.asarray(jnp.cumsum(w32))) < 0), "cumsum monotone: test is moot"
    w = _weights64(l)
    cdf = np.cumsum(w)
    fn = jax.jit(resampling.get(scheme))
    for seed in range(2):
        key = jax.random.key(seed)
        a = np.asarray(fn(key, l))
        assert np.all(np.diff(a) >= 0)
        counts = np.bincount(a, minlength=n)
        assert counts.sum() == n and np.all(counts[w == 0] == 0)
        # Systematic: each count is floor or ceil of N w_i; stratified: within 2.
        # The float32 CDF moves N c_i by at most N * 3e-7 = 0.03.
        assert np.all(np.abs(counts - n * w) < slack + 0.05)
        # Same ancestors as the float64 inverse CDF at the documented points,
        # except where float32 rounding moves a boundary.
        shape = () if scheme == "systematic" else (n,)
        u = (np.arange(n) + np.asarray(jax.random.uniform(key, shape), np.float64)) / n
        ref = np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), n - 1)
        assert np.mean(a == ref) > 0.99
