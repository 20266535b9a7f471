"""The LM round driver (inferax.search.lm.driver) through the particle filter.

Truths: exact enumeration of a step tree whose paths stop at different rounds
(tests/search/step_tree.make_stopping): the "prm" target
``gamma(path) = p(path) prod_{t <= T(path)} g(r_t)`` with ``T(path)`` the path's own
number of steps. For SMC, ``Z_hat * sum_i w_i 1[end_i = l]`` is unbiased for
``gamma(l)`` at any N, so its mean over G independent groups is z-tested leaf by
leaf at tau 0.5 and 2. Negative controls: the same test rejects the target that
re-applies a finished path's last ``g`` in every later round, and the inverted tau.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.search.lm import particle as lp
from inferax.search.lm import steps
from tests.search import step_tree as st

K, D = 3, 3
LM, VALUES = st.make_stopping(7, k=K, depth=D, problems=1, scale=0.7)
CFG = steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=2 * D, max_steps=D)
G, N = 4096, 4
PROMPTS = st.prompts(np.zeros(G, np.int32))
TERMINALS = st.terminals(LM, 0)
Z_CRIT = 4.5  # <= 40 bins x P(|z| > 4.5) ~ 3e-4 false alarms


def g(r, tau):
    return (r / (1.0 - r)) ** (1.0 / tau)


def gamma(tau, reapply=False):
    """Exact unnormalised target over the end nodes; ``reapply``: the old rule's target
    for a lone path (its last g re-applied up to max_steps rounds)."""
    out = np.zeros(st.num_nodes(K, D))
    for node, prob, path in TERMINALS:
        w = np.prod([g(VALUES[0, v], tau) for v in path])
        if reapply:
            w *= g(VALUES[0, path[-1]], tau) ** (D - len(path))
        out[node] += prob * w
    return out


@functools.partial(st.jit, static_argnames=("tau",))
def run_pf(key, tau):
    prm = st.prm_fn(LM, VALUES, jnp.zeros(G, jnp.int32))
    res, info = lp.particle_filter(key, LM, prm, N, prompts=PROMPTS, config=CFG, tau=tau)
    return res, info, st.end_nodes(LM, res.tokens, res.num_tokens)


def z_scores(est, target, visits=50.0):
    rare = target / target.sum() * est.shape[0] < visits
    est = np.concatenate([est[:, ~rare], est[:, rare].sum(1, keepdims=True)], axis=1)
    target = np.concatenate([target[~rare], [target[rare].sum()]])
    se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
    return (est.mean(0) - target) / np.maximum(se, 1e-12)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_prm_target_depends_on_the_path_alone(tau):
    res, info, ends = run_pf(jax.random.key(3), tau)
    assert np.all(np.asarray(res.finished))
    lengths = {len(p) for _, _, p in TERMINALS}
    assert lengths == {1, 2, 3}  # paths of different lengths, and the runs hit them
    hit = np.unique(np.asarray(ends))
    assert len(hit) > 20
    onehot = np.eye(st.num_nodes(K, D))[np.asarray(ends)]
    z = np.exp(np.asarray(info.trace["log_Z"][-1], np.float64))
    est = z[:, None] * np.einsum("gn,gnl->gl", np.asarray(res.weights, np.float64), onehot)
    assert np.max(np.abs(z_scores(est, gamma(tau)))) < Z_CRIT
    assert np.max(np.abs(z_scores(est, gamma(tau, reapply=True)))) > 2 * Z_CRIT
    assert np.max(np.abs(z_scores(est, gamma(1.0 / tau)))) > 2 * Z_CRIT
