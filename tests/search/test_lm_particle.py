"""Particle filtering and particle Gibbs over reasoning steps (inferax.search.lm.particle,
inferax.search.lm.gibbs).

Truths: the step tree (tests/search/step_tree.py) enumerates every path with its
exact probability p(path). Many prompt groups of one problem run as independent
filters in one call; for SMC, ``Z_hat * sum_i w_i 1[leaf_i = l]`` is an unbiased
estimate of the unnormalised target ``gamma(l)`` for any N (Del Moral 2004), so
its mean over groups must match ``gamma`` leaf by leaf within a z-test whose
standard errors come from the groups themselves:

- ``"prm"`` weights, resampled every step: ``gamma = p(path) prod_t g(r_t)``
  (inner scores 0.5 give ``g = 1``: ``p(leaf) g(r_leaf)``);
- ``"ratio"`` weights, ESS-triggered: ``gamma = p(path) g(r_T)`` whatever the
  inner scores;

with ``g(r) = (r / (1 - r))^(1 / tau)``. Negative controls: the untilted target,
the wrong tau, and the other mode's target are rejected by the same test.
Particle Gibbs started from an exact reference keeps the exact normalised target
(conditional SMC is invariant for any N) while a plain filter of the same N is
visibly biased; the reference survives every resampling.

Cost: nearly all of it is XLA compilation, so each program compiles once (module
fixtures share the filter runs between tests) and cheaply (``FAST``); the trees are
decoded inside the compiled programs, not op by op.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import arithmetic as ar
from inferax.models import transformer as tr
from inferax.sampling import distributed, smc
from inferax.search.lm import beam as lm_beam
from inferax.search.lm import driver, steps
from inferax.search.lm import gibbs as lm_gibbs
from inferax.search.lm import particle as lp
from tests.search import step_tree as st

K, D = 3, 3
LM, LEAF = st.make(5, k=K, depth=D, problems=1, scale=0.5)
CFG = steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=2 * D, max_steps=D)
G, N = 4096, 4  # independent groups (prompts of problem 0) x particles
PROMPTS = st.prompts(np.zeros(G, np.int32))
P_LEAF = st.path_probs(LM, 0)
Z_CRIT = 4.5  # per-bin |z| bound: <= 28 bins x P(|z| > 4.5) ~ 2e-4 false alarms

# Compile cheaply: the programs run in well under a second, XLA's CPU codegen is the cost
# (the loop fusion emitters and LLVM optimisation roughly double the compile time).
jit = st.jit


def _inner_values(seed=3):
    rng = np.random.default_rng(seed)
    v = st.leaf_values(LM, LEAF)
    inner = st.offset(K, D)
    v[:, :inner] = rng.uniform(0.2, 0.8, size=(1, inner))
    return v


V_HALF = st.leaf_values(LM, LEAF)
V_INNER = _inner_values()


def g(r, tau=1.0):
    return (r / (1.0 - r)) ** (1.0 / tau)


def path_nodes(code):
    """Nodes reached after steps 1..D on the path to leaf ``code``."""
    digits = [(code // K ** (D - 1 - d)) % K for d in range(D)]
    out, c = [], 0
    for d, x in enumerate(digits):
        c = c * K + x
        out.append(st.offset(K, d + 1) + c)
    return out


def target(values, mode, tau=1.0):
    """Unnormalised exact target over the leaves."""
    out = np.zeros(K**D)
    for code in range(K**D):
        nodes = path_nodes(code)
        if mode == "prm":
            out[code] = P_LEAF[code] * np.prod([g(values[0, v], tau) for v in nodes])
        else:
            out[code] = P_LEAF[code] * g(values[0, nodes[-1]], tau)
    return out


@functools.partial(jit, static_argnames=("weights", "ess", "mesh"))
def run_pf(key, values, weights="prm", ess=1.0, mesh=None):
    prm = st.prm_fn(LM, values, jnp.zeros(G, jnp.int32))
    res, info = lp.particle_filter(
        key, LM, prm, N, prompts=PROMPTS, config=CFG, weights=weights,
        ess_threshold=ess, mesh=mesh,
    )  # fmt: skip
    return res, info, st.decode_rows(LM, res.tokens, res.num_tokens)


@pytest.fixture(scope="module")
def pf_half():
    """The filter with "prm" weights, resampled every step, inner scores 0.5."""
    return run_pf(jax.random.key(0), jnp.asarray(V_HALF))


@pytest.fixture(scope="module")
def pf_inner():
    """The same program with random inner scores."""
    return run_pf(jax.random.key(1), jnp.asarray(V_INNER))


def leaf_estimates(res, info, rows):
    """Per group: Z_hat * weighted leaf histogram ``[G, 27]`` and Z_hat ``[G]``."""
    code, depth = rows
    assert np.all(np.asarray(depth) == D) and np.all(np.asarray(res.finished))
    onehot = np.eye(K**D)[np.asarray(code)]  # [G, N, L]
    z = np.exp(np.asarray(info.trace["log_Z"][-1], np.float64))
    w = np.asarray(res.weights, np.float64)
    return z[:, None] * np.einsum("gn,gnl->gl", w, onehot), z


def z_scores(est, gamma, visits=50.0):
    """Per-leaf z-scores of the mean over the G groups against ``gamma``, standard errors
    from the groups' spread. Leaves of target mass below ``visits / G`` share one bin (as
    in a chi-square test), so that no standard error rests on a handful of visits."""
    rare = gamma / gamma.sum() * est.shape[0] < visits
    if rare.any():
        est = np.concatenate([est[:, ~rare], est[:, rare].sum(1, keepdims=True)], axis=1)
        gamma = np.concatenate([gamma[~rare], [gamma[rare].sum()]])
    mean = est.mean(0)
    se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
    return (mean - gamma) / np.maximum(se, 1e-12)


def test_prm_weights_inner_half_target_reward_tilted_leaves(pf_half):
    res, info, rows = pf_half
    est, z = leaf_estimates(res, info, rows)
    gamma = target(V_HALF, "prm")
    assert np.max(np.abs(z_scores(est, gamma))) < Z_CRIT
    # the normalised weighted distribution (ratio estimator) within a TV tolerance from the
    # groups' own spread: 0.5 * sum_l 3 se_l / Z
    q = est.mean(0) / z.mean()
    se = est.std(0, ddof=1) / np.sqrt(G) / z.mean()
    tol = 0.5 * np.sum(3 * se)
    tv = 0.5 * np.abs(q - gamma / gamma.sum()).sum()
    assert tv < tol, (tv, tol)
    # negative controls: no tilt, or the wrong tau
    assert np.max(np.abs(z_scores(est / z.mean()[None], P_LEAF))) > 10
    assert np.max(np.abs(z_scores(est, target(V_HALF, "prm", tau=2.0)))) > 10
    # budgets, exactly: every row makes D steps of 2 tokens, one PRM call per row per step
    assert info.sequences == G * N
    assert int(info.generated_tokens) == G * N * 2 * D <= G * N * CFG.max_new_tokens
    assert int(info.prm_calls) == G * N * D <= G * N * CFG.max_steps
    assert int(info.num_rounds) == D and int(info.decode_steps) == 2 * D
    tr_ = {k: np.asarray(v) for k, v in info.trace.items()}
    assert tr_["resampled"][: D - 1].all() and not tr_["resampled"][D - 1].any()
    assert (tr_["num_finished"][-1] == N).all() and (tr_["num_finished"][0] == 0).all()
    assert np.all(tr_["ess"] <= N + 1e-4) and int(tr_["num_nan_scores"]) == 0
    np.testing.assert_allclose(np.asarray(res.weights).sum(1), 1.0, atol=1e-5)


def test_prm_weights_with_inner_scores_target_the_product_of_tilts(pf_inner):
    est, _ = leaf_estimates(*pf_inner)
    assert np.max(np.abs(z_scores(est, target(V_INNER, "prm")))) < Z_CRIT
    assert np.max(np.abs(z_scores(est, target(V_INNER, "ratio")))) > 10


def test_ratio_weights_with_ess_trigger_target_the_final_tilt():
    res, info, rows = run_pf(jax.random.key(2), jnp.asarray(V_INNER), weights="ratio", ess=0.8)
    est, _ = leaf_estimates(res, info, rows)
    assert np.max(np.abs(z_scores(est, target(V_INNER, "ratio")))) < Z_CRIT
    assert np.max(np.abs(z_scores(est, target(V_INNER, "prm")))) > 10
    resampled = np.asarray(info.trace["resampled"])
    assert 0 < resampled.mean() < 1  # the trigger resamples some groups, not all


@functools.partial(jit, static_argnames=("iters",))
def run_pg(key, values, reference, iters=2):
    prm = st.prm_fn(LM, values, jnp.zeros(G, jnp.int32))
    res, info = lm_gibbs.particle_gibbs(
        key, LM, prm, N * iters, prompts=PROMPTS, num_iterations=iters, config=CFG,
        reference=reference,
    )  # fmt: skip
    return res, info, st.decode_rows(LM, res.tokens, res.num_tokens)[0]


def _tokens_of(codes):
    out = np.zeros((len(codes), 2 * D), np.int32)
    for i, c in enumerate(codes):
        digits = [(c // K ** (D - 1 - d)) % K for d in range(D)]
        out[i, 0::2] = np.asarray(digits) + st.FIRST
        out[i, 1::2] = st.STEP
        out[i, -1] = st.EOS
    return out


def test_particle_gibbs_keeps_the_exact_target_and_the_reference(pf_half):
    gamma = target(V_HALF, "prm")
    pi = gamma / gamma.sum()
    rng = np.random.default_rng(0)
    ref = _tokens_of(rng.choice(K**D, size=G, p=pi))  # exact draws from the target
    res, info, code = run_pg(jax.random.key(4), jnp.asarray(V_HALF), jnp.asarray(ref))
    hist = np.einsum(
        "gn,gnl->gl", np.asarray(res.weights, np.float64), np.eye(K**D)[np.asarray(code)]
    )
    assert np.max(np.abs(z_scores(hist, pi))) < Z_CRIT
    # the reference of each sweep survives at row 0 of every group
    refs = np.asarray(info.trace["reference_tokens"])
    np.testing.assert_array_equal(refs[0], ref)
    np.testing.assert_array_equal(np.asarray(res.tokens[:, 0]), refs[-1])
    # honest accounting: the replayed reference is decoded and counted
    np.testing.assert_array_equal(np.asarray(info.trace["replayed_tokens"]), 2 * D)
    assert info.sequences == G * N * 2
    assert int(info.generated_tokens) == 2 * G * N * 2 * D
    assert int(info.prm_calls) == 2 * G * N * D
    # negative control: a plain filter with the same N is biased (no reference kept)
    res0, _, (code0, _) = pf_half
    hist0 = np.einsum(
        "gn,gnl->gl", np.asarray(res0.weights, np.float64), np.eye(K**D)[np.asarray(code0)]
    )
    assert np.max(np.abs(z_scores(hist0, pi))) > Z_CRIT + 1


def test_same_answer_on_1_and_4_devices(devices, pf_inner):
    mesh = distributed.particle_mesh(devices[:4])
    a, ia, _ = pf_inner
    b, ib, _ = run_pf(jax.random.key(1), jnp.asarray(V_INNER), mesh=mesh)
    for x, y in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(a.choice), np.asarray(b.choice))
    np.testing.assert_allclose(np.asarray(a.weights), np.asarray(b.weights), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(ia.trace["log_Z"]), np.asarray(ib.trace["log_Z"]), rtol=1e-5, atol=1e-6
    )


def test_resampled_and_selected_caches_continue_as_full_forward_pass():
    """On the project's transformer: two filter rounds resampling after the first, and one
    beam-search selection (lm_beam.beam_step) followed by a decoded step. The gathered rows
    (tokens, logits, layer-major KV cache) continue exactly as a full forward pass over
    their own tokens. One compiled program holds the initialisation, both searches and the
    reference forward pass."""
    model = tr.Transformer(ar.VOCAB_SIZE, num_layers=1, d_model=16, num_heads=2, max_len=40)
    pr = jnp.asarray(ar.prompts(ar.split("test", 2, 2)))
    p_len = pr.shape[1]

    def hook(logits, s):  # a step every 3 tokens (no EOS), so rounds stay short
        force = (s.num_tokens % 3 == 2)[:, None]
        col = jnp.arange(logits.shape[1])[None]
        only = col == ar.STEP_ID
        logits = jnp.where(col == ar.EOS, -jnp.inf, logits)
        return jnp.where(force & ~only, -jnp.inf, jnp.where(~force & only, -jnp.inf, logits))

    cfg = steps.StepConfig(ar.EOS, ar.STEP_ID, max_new_tokens=9, max_steps=2, logits_hook=hook)

    def prm(s, pi):
        h = jnp.sum(s.tokens * (jnp.arange(s.tokens.shape[1]) + 1), axis=1)
        return jax.nn.sigmoid(3.0 * jnp.sin(0.37 * h))

    @jit
    def both(key):
        params = tr.init_params(model, jax.random.key(3))
        lm = tr.lm_functions(model, params)
        start = driver.start(lm, pr, None, 4, cfg)
        policy = lp.filter_policy(lm, 4, cfg, ess_threshold=1.0)
        final, _, trace, _ = driver.run(
            key,
            policy,
            policy.init(start),
            lm=lm,
            prm_fn=prm,
            prompt_index=start.prompt_index,
            config=cfg,
            ledger=steps.Ledger.zeros(2),
        )
        b0, bidx, _ = lm_beam.beam_init(lm, pr, None, 4, cfg)
        b1, _ = lm_beam.beam_step(jax.random.fold_in(key, 0), lm, prm, b0, bidx, cfg, 4, 2)
        b2, _, _ = steps.extend(jax.random.fold_in(key, 1), lm, b1.pool, bidx, prm, b1.score, cfg)
        # the reference: the full forward pass over every gathered row's own tokens
        pf = final.particles.state
        tokens = jnp.concatenate([pf.tokens, b2.tokens])
        num = jnp.concatenate([pf.num_tokens, b2.num_tokens])
        full = jnp.concatenate([jnp.tile(jnp.repeat(pr, 4, 0), (2, 1)), tokens], axis=1)
        real = jnp.arange(full.shape[1])[None] < (p_len + num)[:, None]
        ref = model.apply(params, full, real)[jnp.arange(16), p_len + num - 1]
        logits = jnp.concatenate([pf.logits, b2.logits])
        return trace["resampled"], pf.tokens, b1.pool.tokens, num, logits, ref

    resampled, pf_tokens, selected, num, logits, want = both(jax.random.key(11))
    assert np.asarray(resampled)[0].all()
    # copies share their ancestor's first step: the filter resampled, the beam kept 2 x 2
    first = np.asarray(pf_tokens[:, :3]).reshape(2, 4, 3)
    assert any(len({tuple(r) for r in grp}) < 4 for grp in first)
    sel = np.asarray(selected[:, :3]).reshape(2, 4, 3)
    np.testing.assert_array_equal(sel[:, :2], sel[:, 2:])
    assert np.all(np.asarray(num) == 6)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), atol=2e-5)


def test_grouped_smc_core_equals_independent_groups():
    """The core's [G, n] groups: each group is normalised, tested and resampled on its own
    (key fold_in(key, g)), with its own log Z."""
    from inferax.sampling import resampling

    scale = jnp.array([0.1, 3.0, 1.0]).repeat(5)

    def build(x):
        inc = -0.5 * jnp.sum(x**2, axis=1) * scale
        return inc, smc.build(lambda k, p, t: (p, inc), resampling="multinomial", ess_threshold=0.7)

    @jit
    def both(key):
        x = jax.random.normal(jax.random.key(0), (3 * 5, 2))
        inc, alg = build(x)
        new, info = alg.step(key, alg.init(x, jnp.zeros((3, 5))), 0)
        _, k_res, _ = jax.random.split(key, 3)

        def alone(grp, lw):  # each group alone, as the ungrouped core would see it
            ess = resampling.ess(lw)
            a = resampling.multinomial(jax.random.fold_in(k_res, grp), lw, 5)
            a = jnp.where(ess < 0.7 * 5, a, jnp.arange(5))
            return ess, jax.nn.logsumexp(lw) - jnp.log(5.0), ess < 0.7 * 5, a

        return x, new, info, jax.vmap(alone)(jnp.arange(3), inc.reshape(3, 5))

    x, new, info, (ess, log_z, resampled, anc) = both(jax.random.key(1))
    np.testing.assert_allclose(np.asarray(info.ess), np.asarray(ess), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new.log_Z), np.asarray(log_z), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(info.resampled), np.asarray(resampled))
    np.testing.assert_array_equal(np.asarray(info.ancestors), np.asarray(anc))
    rows = (np.arange(3)[:, None] * 5 + np.asarray(anc)).reshape(-1)
    np.testing.assert_array_equal(np.asarray(new.particles), np.asarray(x)[rows])
    assert 0 < int(np.sum(info.resampled)) < 3
    with pytest.raises(ValueError, match="log_weights"):
        jax.eval_shape(lambda x: build(x)[1].init(x, jnp.zeros((4, 5))), x)


def test_weighted_answer_votes_over_identical_candidates():
    tok = jnp.asarray([[[1, 2], [3, 4], [1, 2]]])
    num = jnp.full((1, 3), 2)
    fin = jnp.ones((1, 3), bool)
    scores = jnp.asarray([[0.2, 0.9, 0.3]])
    w = jnp.asarray([[0.3, 0.45, 0.25]])
    best, weighted = jit(lambda *a: [lp._choose(*a, answer)[0] for answer in ("best", "weighted")])(
        tok, num, fin, scores, w
    )
    assert int(best) == 1
    assert int(weighted) in (0, 2)  # 0.55 > 0.45


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(budget=0), "budget"),
        (dict(budget=2.5), "budget"),
        (dict(tau=0.0), "tau"),
        (dict(weights="product"), "weights"),
        (dict(answer="first"), "answer"),
        (dict(resampling="bogus"), "resampling"),
        (dict(config="cfg"), "config"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    args = dict(budget=2, config=CFG, prompts=st.prompts([0]))
    args.update(kwargs)
    prm = st.prm_fn(LM, V_HALF, jnp.zeros(1, jnp.int32))
    with pytest.raises((ValueError, TypeError), match=match):
        lp.particle_filter(jax.random.key(0), LM, prm, **args)


def test_bad_gibbs_and_mesh_arguments(devices):
    prm = st.prm_fn(LM, V_HALF, jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError, match="num_iterations"):
        lm_gibbs.particle_gibbs(jax.random.key(0), LM, prm, 2, prompts=st.prompts([0]),
                                num_iterations=0, config=CFG)  # fmt: skip
    with pytest.raises(ValueError, match="reference"):
        lm_gibbs.particle_gibbs(jax.random.key(0), LM, prm, 2, prompts=st.prompts([0]),
                                num_iterations=1, config=CFG,
                                reference=jnp.ones((1, 3), int))  # fmt: skip
    mesh = distributed.particle_mesh(devices[:4])
    with pytest.raises(ValueError, match="mesh"):
        lp.particle_filter(jax.random.key(0), LM, prm, 3, prompts=st.prompts([0]),
                           config=CFG, mesh=mesh)  # fmt: skip
