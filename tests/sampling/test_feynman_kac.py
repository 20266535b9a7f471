"""Feynman-Kac correctors against closed-form and quadrature targets.

Every target is prod_i p_i^beta_i of exact Gaussian-mixture marginals
(models/gmm.py, linear interpolant). Moments of the weighted population and
the log normalising-constant estimate are compared with 1-D quadrature (and
closed forms for Gaussians); the unweighted SDE and a sign-flipped weight must
fail the same check. Every target runs with both transports ("model", the
default, and "scaled" = the plain sum_i beta_i u_i drift): both are exact.
Tolerances are ~3-4 standard deviations of each estimate (plus its small
discretisation bias), measured over 10 seeds with the same N = 10000 particles
and 200 Euler steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import feynman_kac as fk
from inferax.sampling import interpolants as I
from inferax.sampling import smc

N = 10_000
TS = jnp.linspace(0.0, 1.0, 201)

G1 = gmm.gaussian_mixture([1.0], [[1.5]], scale=0.8)
G2 = gmm.gaussian_mixture([1.0], [[-1.0]], scale=0.7)
MIX = gmm.gaussian_mixture([0.3, 0.7], [[-2.0], [1.5]], covs=[[[0.25]], [[0.64]]])
# CFG pair of Gaussians (q_c narrower than q_u, so q_c^w q_u^(1-w) is normalisable).
CU = gmm.gaussian_mixture([1.0], [[0.0]], scale=1.5)
CC = gmm.gaussian_mixture([1.0], [[1.0]], scale=0.6)
# CFG with a label-conditional mixture: q_u = (q_a + q_c) / 2, q_c = one component.
MU = gmm.gaussian_mixture([0.5, 0.5], [[-1.0], [1.5]], covs=[[[0.36]], [[0.64]]])
MC = gmm.gaussian_mixture([1.0], [[1.5]], scale=0.8)


def _cond_velocity(cond_model, uncond_model):
    def v(x, t, c):
        return jnp.where(c[:, None] == 1, cond_model.velocity(x, t), uncond_model.velocity(x, t))

    return v


def _log_prob_np(model):
    return lambda xs: np.asarray(model.log_prob(jnp.asarray(xs[:, None], jnp.float32)), np.float64)


def _quadrature(log_density):
    """Mean, variance and log integral of exp(log_density) on a fine 1-D grid (float64)."""
    xs = np.linspace(-15.0, 15.0, 60_001)
    lp = log_density(xs)
    w = np.exp(lp - lp.max())
    log_z = np.log(w.sum() * (xs[1] - xs[0])) + lp.max()
    w /= w.sum()
    mean = (w * xs).sum()
    return mean, (w * (xs - mean) ** 2).sum(), log_z


def _log_z0(beta_sum):
    """log of int N(x; 0, 1)^B dx in 1-D: the start of every path."""
    return 0.5 * (1.0 - beta_sum) * np.log(2 * np.pi) - 0.5 * np.log(beta_sum)


def _sample_signed(key, transition, sign, n=N, ts=TS):
    """``fk.sample`` with every log-weight increment multiplied by ``sign`` (-1: the
    sign error a test must detect), built from the public pieces."""
    k_init, k_run = jax.random.split(key)
    x0 = transition.init(k_init, n, (1,), ts[0], jnp.float32)

    def signed(k, x, inp):
        x_next, inc = transition(k, x, inp)
        return x_next, sign * inc

    algo = smc.build(signed, ess_threshold=1.0)
    state, infos = algo.run(k_run, algo.init(x0), (ts[:-1], ts[1:]), resample_last=False)
    return state.particles, state.log_weights, state.log_Z, infos


def _weighted_moments(x, log_weights):
    w = np.asarray(jax.nn.softmax(log_weights), np.float64)
    x = np.asarray(x[:, 0], np.float64)
    mean = (w * x).sum()
    return mean, (w * (x - mean) ** 2).sum()


CASES = {
    # name: (transition factory, log target density, mean tol, var tol, log Z tol)
    "anneal_gaussian": (
        lambda **kw: fk.anneal(G1.velocity, 2.0, g=2.0, **kw),
        lambda xs: 2.0 * _log_prob_np(G1)(xs),  # exact N(1.5, 0.32)
        0.03,
        0.015,
        0.08,
    ),
    "product_gaussians": (
        lambda **kw: fk.product(G1.velocity, G2.velocity, g="linear", **kw),
        lambda xs: _log_prob_np(G1)(xs) + _log_prob_np(G2)(xs),
        0.035,
        0.035,
        0.055,
    ),
    "cfg_gaussians": (
        lambda **kw: fk.cfg(
            _cond_velocity(CC, CU), jnp.int32(1), jnp.int32(0), 1.0, g="linear", **kw
        ),
        lambda xs: 2.0 * _log_prob_np(CC)(xs) - _log_prob_np(CU)(xs),
        0.03,
        0.03,
        0.05,
    ),
    "anneal_mixture": (
        lambda **kw: fk.anneal(MIX.velocity, 2.0, g=2.0, **kw),
        lambda xs: 2.0 * _log_prob_np(MIX)(xs),
        0.1,
        0.2,
        0.06,
    ),
    "cfg_mixture": (
        lambda **kw: fk.cfg(
            _cond_velocity(MC, MU), jnp.int32(1), jnp.int32(0), 1.0, g="linear", **kw
        ),
        lambda xs: 2.0 * _log_prob_np(MC)(xs) - _log_prob_np(MU)(xs),
        0.06,
        0.055,
        0.06,
    ),
}


@pytest.mark.parametrize("transport", fk.TRANSPORTS)
@pytest.mark.parametrize("name", list(CASES))
def test_fkc_hits_the_target_and_the_baselines_miss(name, transport):
    make, log_density, tol_mean, tol_var, tol_log_z = CASES[name]
    transition = make(transport=transport)
    assert transition.transport == transport
    mean, var, log_z1 = _quadrature(log_density)
    if name == "anneal_gaussian":  # closed form N(m, s^2 / beta)
        np.testing.assert_allclose([mean, var], [1.5, 0.32], atol=1e-4)
    if name == "product_gaussians":
        prec = 1 / 0.64 + 1 / 0.49
        np.testing.assert_allclose([mean, var], [(1.5 / 0.64 - 1.0 / 0.49) / prec, 1 / prec], 1e-4)
    if name == "cfg_gaussians":  # precision (1 - w) / s_u^2 + w / s_c^2
        prec = -1 / 2.25 + 2 / 0.36
        np.testing.assert_allclose([mean, var], [(2 * 1.0 / 0.36) / prec, 1 / prec], atol=1e-4)

    def close(m, v):
        return abs(m - mean) < tol_mean and abs(v - var) < tol_var

    # One compilation for the weighted run and the sign-flipped probe (vmap over the sign).
    run = jax.jit(jax.vmap(lambda sign: _sample_signed(jax.random.key(0), transition, sign)))
    xs, log_ws, log_zs, infos = run(jnp.array([1.0, -1.0]))
    got = _weighted_moments(xs[0], log_ws[0])
    assert close(*got), (got, (mean, var))
    # log Z: no constant is dropped from G, so log_Z estimates log(Z_1 / Z_0) exactly.
    exact_log_z = log_z1 - _log_z0(float(np.sum(transition.betas)))
    log_z = float(log_zs[0])
    assert abs(log_z - exact_log_z) < tol_log_z, (log_z, exact_log_z)
    # fk.sample is that run with sign +1, same keys (one compilation more per case: checked
    # on one target per transition kind, both transports, to keep the suite's time).
    if name in ("anneal_mixture", "product_gaussians", "cfg_gaussians"):
        x_fk, lw_fk, info_fk = jax.jit(
            lambda k: fk.sample(k, transition, N, TS, event_shape=(1,), dtype=jnp.float32)
        )(jax.random.key(0))
        np.testing.assert_allclose(x_fk, xs[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(float(info_fk.log_Z), log_z, rtol=1e-5, atol=1e-5)
    assert bool(jnp.all(infos.resampled[0, :-1])) and not bool(infos.resampled[0, -1])
    assert not bool(jnp.any(infos.all_invalid[0]))
    flipped = _weighted_moments(xs[1], log_ws[1])
    assert not close(*flipped), ("flipped weights should miss", flipped, (mean, var))

    unweighted_run = jax.jit(
        lambda k: fk.sample(k, transition, N, TS, event_shape=(1,), weighted=False)
    )
    x_u, log_w_u, info_u = unweighted_run(jax.random.key(0))
    np.testing.assert_allclose(log_w_u, -np.log(N), rtol=1e-6)
    assert not bool(jnp.any(info_u.resampled)) and float(info_u.log_Z) == 0.0
    unweighted = _weighted_moments(x_u, log_w_u)
    assert not close(*unweighted), ("unweighted SDE should miss", unweighted, (mean, var))


@pytest.mark.parametrize("transport", fk.TRANSPORTS)
def test_product_in_two_dimensions(transport):
    """Event axes are reduced correctly: product of two anisotropic 2-D Gaussians."""
    c1 = np.array([[0.5, 0.2], [0.2, 0.4]])
    c2 = np.array([[0.3, -0.1], [-0.1, 0.6]])
    m1, m2 = np.array([1.0, -0.5]), np.array([-0.5, 1.0])
    p1 = gmm.gaussian_mixture([1.0], [m1], covs=[c1])
    p2 = gmm.gaussian_mixture([1.0], [m2], covs=[c2])
    prec = np.linalg.inv(c1) + np.linalg.inv(c2)
    cov = np.linalg.inv(prec)
    mean = cov @ (np.linalg.solve(c1, m1) + np.linalg.solve(c2, m2))
    tr = fk.product(p1.velocity, p2.velocity, g=2.0, transport=transport)
    x, log_w, info = jax.jit(lambda k: fk.sample(k, tr, 4000, TS[::2], event_shape=(2,)))(
        jax.random.key(1)
    )
    w = np.asarray(jax.nn.softmax(log_w), np.float64)
    xn = np.asarray(x, np.float64)
    got_mean = w @ xn
    got_cov = (w[:, None] * (xn - got_mean)).T @ (xn - got_mean)
    np.testing.assert_allclose(got_mean, mean, atol=0.04)
    np.testing.assert_allclose(got_cov, cov, atol=0.03)
    assert int(info.nfe) == 100 * 2


@pytest.mark.parametrize("transport", fk.TRANSPORTS)
def test_anneal_along_the_vp_interpolant(transport):
    """The same corrector on a converted VP velocity (VP scores, warped grid) hits N(1.5, 0.32).

    Tolerances as the linear case plus the approximate VP start (a(0) ~ 6.6e-3, where
    alpha = a'/a ~ 1500 is large but finite).
    """
    vp = I.vp()
    tr = fk.anneal(
        I.convert_velocity(G1.velocity, vp), 2.0, g=2.0, interpolant=vp, transport=transport
    )
    ts = 1.0 - (1.0 - TS) ** 2  # small steps near the data, where b' diverges
    x, log_w, _ = jax.jit(lambda k: fk.sample(k, tr, N, ts, event_shape=(1,)))(jax.random.key(0))
    mean, var = _weighted_moments(x, log_w)
    assert abs(mean - 1.5) < 0.04 and abs(var - 0.32) < 0.03, (mean, var)


def test_weight_rate_special_cases_and_ve_reduction():
    """G reduces to the paper's variance-exploding increments (REFERENCES 3b)."""
    k = jax.random.split(jax.random.key(2), 4)
    u1, u2, s1, s2 = (jax.random.normal(kk, (7, 3)) for kk in k)
    dot = lambda a, b: jnp.sum(a * b, -1)  # noqa: E731
    beta = 1.7
    np.testing.assert_allclose(
        fk.weight_rate(u1[None], s1[None], jnp.array([beta])),
        beta * (beta - 1) * dot(u1, s1),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        fk.weight_rate(jnp.stack([u1, u2]), jnp.stack([s1, s2]), jnp.array([1.0, 1.0])),
        dot(u1, s2) + dot(u2, s1),
        rtol=1e-5,
        atol=1e-5,
    )
    # VE: u_i = (g^2 / 2) s_i.
    g2 = 2.3
    ve = lambda s: 0.5 * g2 * s  # noqa: E731
    np.testing.assert_allclose(
        fk.weight_rate(ve(s1)[None], s1[None], jnp.array([beta])),
        0.5 * beta * (beta - 1) * g2 * dot(s1, s1),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        fk.weight_rate(jnp.stack([ve(s1), ve(s2)]), jnp.stack([s1, s2]), jnp.array([1.0, 1.0])),
        g2 * dot(s1, s2),
        rtol=1e-5,
        atol=1e-5,
    )
    w = 2.5  # models ordered (cond, uncond) with betas (w, 1 - w), as fk.cfg does
    np.testing.assert_allclose(
        fk.weight_rate(jnp.stack([ve(s1), ve(s2)]), jnp.stack([s1, s2]), jnp.array([w, 1 - w])),
        0.5 * w * (w - 1) * g2 * dot(s1 - s2, s1 - s2),
        rtol=1e-4,
        atol=1e-4,
    )


def test_transition_drift_increment_and_init():
    """One step by hand: drift sum beta u + sigma^2/2 sum beta s, increment G dt."""
    tr = fk.product(G1.velocity, G2.velocity, g=1.5, transport="scaled")
    x = jax.random.normal(jax.random.key(3), (16, 1))
    t0, t1 = 0.3, 0.35
    x_next, inc = tr(jax.random.key(4), x, (t0, t1))
    u1, u2 = G1.velocity(x, t0), G2.velocity(x, t0)
    s1, s2 = G1.score(x, t0), G2.score(x, t0)
    mean = x + 0.05 * (u1 + u2 + 0.5 * 1.5**2 * (s1 + s2))
    z = jax.random.normal(jax.random.key(4), x.shape)
    np.testing.assert_allclose(x_next, mean + 1.5 * np.sqrt(0.05) * z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inc, 0.05 * (u1 * s2 + u2 * s1)[:, 0], rtol=1e-4, atol=1e-5)
    # options: centring shifts every increment by the same amount; clip bounds them
    tr_c = fk.product(G1.velocity, G2.velocity, g=1.5, center=True, clip=0.01, transport="scaled")
    _, inc_c = tr_c(jax.random.key(4), x, (t0, t1))
    np.testing.assert_allclose(inc_c, np.clip(inc - inc.mean(), -0.01, 0.01), atol=1e-6)
    # q_0 = N(0, I / sum beta)
    x0 = tr.init(jax.random.key(5), 40_000, (1,))
    assert abs(float(x0.var()) - 0.5) < 0.015


@pytest.mark.parametrize("interp_name", ["linear", "vp"])
def test_model_transport_step_matches_the_gamma_formula(interp_name):
    """Drift Gamma alpha x + (h + sigma^2/2) S and the increment
    (Gamma - 1) alpha <x, S> + h (|S|^2 - sum beta |s_i|^2) + (Gamma - B) alpha d, written
    with alpha = a'/a, h = b (a'b - ab')/a and the exact scores (float64 NumPy)."""
    interp = I.linear() if interp_name == "linear" else I.vp()
    m1 = gmm.gaussian_mixture([0.4, 0.6], [[1.5, -0.5], [-1.0, 2.0]], scale=0.8)
    m2 = gmm.gaussian_mixture([1.0], [[-1.0, 0.5]], scale=0.7)
    vels = [m.velocity if interp_name == "linear" else I.convert_velocity(m.velocity, interp)
            for m in (m1, m2)]  # fmt: skip
    betas, p, sig = np.array([1.5, 0.7]), 2.5, 1.5
    big_b = betas.sum()
    tr = fk.geometric_transition(vels, betas, g=sig, interpolant=interp, transport_power=p)
    x = jax.random.normal(jax.random.key(3), (16, 2))
    z = np.asarray(jax.random.normal(jax.random.key(4), x.shape), np.float64)
    xn = np.asarray(x, np.float64)
    for t0 in (0.3, 0.8):
        dt = 0.01
        x_next, inc = tr(jax.random.key(4), x, (t0, t0 + dt))
        a, b, da, db = (
            float(f(jnp.float32(t0))) for f in (interp.a, interp.b, interp.da, interp.db)
        )
        alpha, h = da / a, b * (da * b - a * db) / a
        ss = [np.asarray(I.score_from_velocity(interp, v(x, t0), x, t0), np.float64) for v in vels]
        big_s = betas[0] * ss[0] + betas[1] * ss[1]
        gamma = 1 + (big_b - 1) * (1 - a) ** p
        drift = gamma * alpha * xn + (h + 0.5 * sig**2) * big_s
        np.testing.assert_allclose(x_next, xn + dt * drift + sig * np.sqrt(dt) * z, atol=2e-4)
        g_rate = (
            (gamma - 1) * alpha * (xn * big_s).sum(-1)
            + h
            * (
                (big_s**2).sum(-1)
                - sum(bi * (si**2).sum(-1) for bi, si in zip(betas, ss, strict=True))
            )
            + (gamma - big_b) * alpha * 2
        )
        np.testing.assert_allclose(inc, dt * g_rate, rtol=2e-3, atol=2e-4)
    # linear at t = 0: c = (Gamma - B) alpha -> -(B - 1) p, finite
    if interp_name == "linear":
        c0 = fk.transport_rate(interp, jnp.float32(0.0), big_b, "model", p)
        np.testing.assert_allclose(c0, -(big_b - 1) * p, rtol=1e-6)
        x0n, inc0 = tr(jax.random.key(4), x, (0.0, 0.01))
        # the t = 0 step in closed form: every linear score is s_i = -x there
        us0 = [np.asarray(v(x, 0.0), np.float64) for v in vels]
        big_s0 = -big_b * xn
        c0n = -(big_b - 1) * p
        drift0 = sum(bi * ui for bi, ui in zip(betas, us0, strict=True)) + c0n * xn
        drift0 = drift0 + 0.5 * sig**2 * big_s0
        np.testing.assert_allclose(x0n, xn + 0.01 * drift0 + sig * 0.1 * z, rtol=1e-4, atol=1e-4)
        g0 = (sum(bi * ui for bi, ui in zip(betas, us0, strict=True)) * big_s0).sum(-1)
        g0 -= sum(bi * (ui * -xn).sum(-1) for bi, ui in zip(betas, us0, strict=True))
        g0 += c0n * ((xn * big_s0).sum(-1) + 2)
        np.testing.assert_allclose(inc0, 0.01 * g0, rtol=2e-3, atol=2e-4)
    # B = 1 (CFG-like exponents): both transports are the same step
    one = [fk.geometric_transition(vels, [2.0, -1.0], interpolant=interp, transport=tp)
           for tp in fk.TRANSPORTS]  # fmt: skip
    outs = [o(jax.random.key(4), x, (0.3, 0.31)) for o in one]
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_nfe_doubled_cfg_batch_and_jit_traces_once():
    calls = []

    def cond_v(x, t, c):
        calls.append(x.shape[0])  # a Python side effect: runs once per trace
        return jnp.where(c[:, None] == 1, CC.velocity(x, t), CU.velocity(x, t))

    tr = fk.cfg(cond_v, jnp.int32(1), jnp.int32(0), 1.0)
    run = jax.jit(lambda k: fk.sample(k, tr, 64, TS[:11], event_shape=(1,)))
    _, _, info = run(jax.random.key(0))
    n = len(calls)
    x, _, _ = run(jax.random.key(1))
    # traced once on the first call (the shape check runs in that trace), never again
    assert len(calls) == n == 1 and set(calls) == {128}  # one doubled batch per step
    assert int(info.nfe) == 10 * 2 and info.ess.shape == (10,) and x.shape == (64, 1)
    three = fk.geometric_transition([G1.velocity, G2.velocity, MIX.velocity], [0.5, 0.5, 1.0])
    assert three.nfe_per_step == 3 and fk.anneal(G1.velocity, 2.0).nfe_per_step == 1


def test_bad_inputs():
    v = G1.velocity
    with pytest.raises(ValueError, match="betas"):
        fk.geometric_transition([v, v], [1.0])
    with pytest.raises(ValueError, match="betas"):
        fk.geometric_transition([v], [np.nan])
    with pytest.raises(ValueError, match="positive sum"):
        fk.geometric_transition([v, v], [1.0, -2.0])
    with pytest.raises(TypeError, match="velocity_fns"):
        fk.geometric_transition(v, [1.0])
    with pytest.raises(TypeError, match=r"velocity_fns\[1\]"):
        fk.geometric_transition([v, 3.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="clip"):
        fk.anneal(v, 2.0, clip=-1.0)
    with pytest.raises(TypeError, match="center"):
        fk.anneal(v, 2.0, center="yes")
    with pytest.raises(ValueError, match="transport: expected one of"):
        fk.anneal(v, 2.0, transport="ode")
    for bad in (0.0, -1.0, float("inf"), True, "2"):
        with pytest.raises(ValueError, match="transport_power"):
            fk.anneal(v, 2.0, transport_power=bad)
    with pytest.raises(ValueError, match="g: expected one of"):
        fk.anneal(v, 2.0, g="cubic")
    with pytest.raises(TypeError, match="interpolant"):
        fk.anneal(v, 2.0, interpolant="vp")
    with pytest.raises(ValueError, match="null_cond"):
        fk.cfg(lambda x, t, c: x, {"a": jnp.int32(1)}, jnp.int32(0), 1.0)
    with pytest.raises(ValueError, match="guidance_scale.*s > -1"):
        fk.cfg(lambda x, t, c: x, jnp.int32(1), jnp.int32(0), -1.0)
    with pytest.raises(TypeError, match="guidance_scale"):
        fk.cfg(lambda x, t, c: x, jnp.int32(1), jnp.int32(0), "2")
    with pytest.raises(ValueError, match="langevin_step_size"):
        fk.sample(jax.random.key(0), fk.anneal(v, 2.0), 8, TS, event_shape=(1,),
                  langevin_steps=2, langevin_step_size=1.5)  # fmt: skip
    with pytest.raises(ValueError, match="langevin_steps"):
        fk.sample(jax.random.key(0), fk.anneal(v, 2.0), 8, TS, event_shape=(1,),
                  langevin_steps=-1)  # fmt: skip
    tr = fk.anneal(v, 2.0)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="transition"):
        fk.sample(key, lambda k, x, i: (x, x[:, 0]), 8, TS, event_shape=(1,))
    with pytest.raises(ValueError, match="num_particles"):
        fk.sample(key, tr, 0, TS, event_shape=(1,))
    with pytest.raises(ValueError, match="strictly increasing"):
        fk.sample(key, tr, 8, jnp.array([0.0, 0.6, 0.5, 1.0]), event_shape=(1,))
    with pytest.raises(ValueError, match=r"g\(t\) >= 0"):
        fk.sample(key, fk.anneal(v, 2.0, g=lambda t: t - 0.5), 8, TS, event_shape=(1,))
    with pytest.raises(ValueError, match="resampling|scheme"):
        fk.sample(key, tr, 8, TS, event_shape=(1,), resampling="magic")
    with pytest.raises(ValueError, match="velocity_fns"):
        fk.sample(key, fk.anneal(lambda x, t: x[:, :0], 2.0), 8, TS, event_shape=(1,))
    with pytest.raises(TypeError, match="event_shape"):
        fk.sample(key, tr, 8, TS, event_shape=None)
