"""The battery of bad inputs (issue 18, "no silent garbage anywhere").

Every entry is ``(id, call, expected error type, substring of the message)``:
``call(workdir)`` must raise that error naming the argument or config field.
A new case (search, LM, ...) is one more entry of ``CASES``. The experiment
cases go through ``run(config, workdir)`` and must fail before the run takes
its workdir, so none of them trains anything. What can only be seen at run time
(a traced grid, a traced NaN) is counted in the samplers' info; those counts are
tested below the battery.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import inferax
from inferax.experiments import common, configs, ebt, flow_scaling, lm_scaling, schema, sway
from inferax.models.checkpoint import Checkpointer
from inferax.sampling import energy, flow, resampling, schedules, smc
from inferax.search.flow import noise as flow_noise
from inferax.search.lm import decoding as dec
from inferax.search.lm import particle as lm_particle
from inferax.search.lm import steps as lm_steps
from tests.search import step_tree as st

X0 = jnp.ones((4, 2), jnp.float32)
X0_INF = X0.at[0, 0].set(jnp.inf)  # concrete, closed over inside jit: checked at trace time


def velocity(x, t):
    return -x


def quadratic(context, y):
    return 0.5 * jnp.sum(y**2)


def _minimize(**kw):
    def call(_):
        energy.minimize(jax.random.key(0), quadratic, None, X0, num_steps=5, step_size=0.1, **kw)

    return call


def _config(name: str, overrides: list[tuple[str, str]]):
    """A quick config with command-line overrides applied (as ``--config.F=V`` would)."""
    return common.apply_overrides(configs.load(f"{name}:quick"), overrides)


def _run(module, name: str, *overrides: tuple[str, str]):
    def call(workdir):
        module.run(_config(name, list(overrides)), workdir)

    return call


def _checkified(fn):
    """Runs ``fn`` under ``jit(checkify(...))`` and throws its run-time error."""

    def call(_):
        err, _ = jax.jit(checkify.checkify(fn))()
        err.throw()

    return call


RuntimeCheckError = checkify.JaxRuntimeError

# --- language models: the tiny exact tree LM of the search tests (vocabulary 6)
LM, _REWARD = st.make(k=3, depth=2, problems=1)
PROMPTS = st.prompts([0])
STEP_CFG = lm_steps.StepConfig(eos_id=st.EOS, step_id=st.STEP, max_new_tokens=4, max_steps=2)
PRM_HALF = lambda state, prompt_index: jnp.full(prompt_index.shape, 0.5)  # noqa: E731
PRM_TOO_HIGH = lambda state, prompt_index: jnp.full(prompt_index.shape, 1.5)  # noqa: E731


def _sample(prompts=PROMPTS, **kw):
    def call(_):
        kw.setdefault("eos_id", st.EOS)
        dec.sample(jax.random.key(0), LM, prompts, max_new_tokens=4, **kw)

    return call


def _generate(**kw):
    def call(_):
        state, _ = dec.start(LM, PROMPTS, max_new_tokens=4)
        kw.setdefault("eos_id", st.EOS)
        dec.generate(jax.random.key(0), LM, state, **kw)

    return call


def _extend(prm=PRM_HALF, cfg=STEP_CFG):
    def call(_):
        state, pidx, _ = lm_steps.start(LM, PROMPTS, None, 2, STEP_CFG)
        lm_steps.extend(jax.random.key(0), LM, state, pidx, prm, jnp.zeros(2), cfg)

    return call


def _sample_search(cfg):
    def call(_):
        lm_particle.particle_filter(jax.random.key(0), LM, PRM_HALF, 2, prompts=PROMPTS, config=cfg)

    return call


def _smc_nan_transition():
    alg = smc.build(lambda k, x, i: (x.at[0].set(jnp.nan), jnp.zeros(4)), runtime_checks=True)
    return alg.run(jax.random.key(0), alg.init(X0), jnp.arange(2))


def _smc_all_invalid():
    alg = smc.build(lambda k, x, i: (x, jnp.full(4, -jnp.inf)), runtime_checks=True)
    return alg.run(jax.random.key(0), alg.init(X0), jnp.arange(2))


CASES = [
    # --- energy minimisation
    ("minimize noise_scale < 0", _minimize(noise="langevin", noise_scale=-1.0),
     ValueError, "noise_scale: expected a finite number >= 0"),
    ("minimize unscaled noise_scale < 0", _minimize(noise="unscaled", noise_scale=-1.0),
     ValueError, "noise_scale"),
    ("minimize num_active_steps > num_steps", _minimize(num_active_steps=9),
     ValueError, "num_active_steps: expected an int in [0, 5]"),
    # --- the flow core
    ("flow.step t1 = 1.5", lambda _: flow.step(velocity, X0, 0.5, 1.5),
     ValueError, "t1: expected a time in [0, 1], got 1.5"),
    ("flow.step t0 = -0.1", lambda _: flow.step(velocity, X0, -0.1, 0.5),
     ValueError, "t0: expected a time in [0, 1]"),
    ("flow.step backwards", lambda _: flow.step(velocity, X0, 0.5, 0.2),
     ValueError, "t1: expected a time after t0 = 0.5"),
    ("flow.sample NaN in x0",
     lambda _: flow.sample(velocity, X0.at[2, 1].set(jnp.nan), schedules.uniform(4)),
     ValueError, "x0: expected finite values, got 1 NaN/inf entries (the first in sample 2)"),
    ("flow.sample NaN in x0 under jit",
     lambda _: jax.jit(lambda: flow.sample(velocity, X0_INF, schedules.uniform(4)))(),
     ValueError, "x0: expected finite values"),
    ("flow.sample complex velocity",
     lambda _: flow.sample(lambda x, t: x.astype(jnp.complex64), X0, schedules.uniform(4)),
     TypeError, "velocity_fn: expected a real floating-point output"),
    ("flow.sample decreasing grid",
     lambda _: flow.sample(velocity, X0, jnp.array([0.0, 0.6, 0.3, 1.0])),
     ValueError, "ts: expected a strictly increasing grid"),
    ("flow.sample decreasing grid, jit, runtime_checks",
     _checkified(lambda: jax.jit(lambda ts: flow.sample(velocity, X0, ts, runtime_checks=True))(
         jnp.array([0.0, 0.6, 0.3, 1.0]))),
     RuntimeCheckError, "ts: expected times in [0, 1], strictly increasing"),
    ("flow.sample NaN velocity, runtime_checks",
     _checkified(lambda: flow.sample(lambda x, t: x / (t - 0.5), X0, schedules.uniform(2),
                                     runtime_checks=True)),
     RuntimeCheckError, "velocity_fn: expected finite outputs, got 8 NaN/inf entries"),
    ("flow.sample traced NaN x0, runtime_checks",
     _checkified(lambda: jax.jit(lambda x: flow.sample(velocity, x, schedules.uniform(2),
                                                       runtime_checks=True))(
         X0.at[0, 0].set(jnp.nan))),
     RuntimeCheckError, "x0: expected finite values, got 1 NaN/inf entries"),
    ("sway_warp on a decreasing grid", lambda _: schedules.sway_warp([0.0, 0.6, 0.3, 1.0]),
     ValueError, "ts: expected a strictly increasing grid"),
    ("resampling.ess given weights", lambda _: resampling.ess(jnp.array([0.7, 0.2, 0.1])),
     ValueError, "log_weights: expected log-weights, got what look like normalised weights"),
    # --- language models: token ids against lm.vocab_size (6), hooks, PRM scores
    ("decoding.sample prompt id 999", _sample(prompts=PROMPTS.at[0, 1].set(999)),
     ValueError, "prompts: expected token ids in [0, 6) (lm.vocab_size = 6), got 1 out-of-range "
     "ids (the first 999 in prompt 0 at position 1)"),
    ("decoding.sample prompt id -3", _sample(prompts=PROMPTS.at[0, 1].set(-3)),
     ValueError, "prompts: expected token ids in [0, 6)"),
    ("decoding.sample eos_id = 999", _sample(eos_id=999),
     ValueError, "eos_id: expected a token id in [0, 6) (lm.vocab_size = 6), got 999"),
    ("decoding.sample eos_id = -1", _sample(eos_id=-1),
     ValueError, "eos_id: expected a token id in [0, 6) (lm.vocab_size = 6), got -1 (use "
     "eos_id=None"),
    ("decoding.generate step_id = 999", _generate(step_id=999),
     ValueError, "step_id: expected a token id in [0, 6) (lm.vocab_size = 6), got 999"),
    ("decoding.generate step_id = -1", _generate(step_id=-1, until="step"),
     ValueError, "step_id: expected a token id in [0, 6)"),
    ("decoding.generate pad_id = 6", _generate(pad_id=6),
     ValueError, "pad_id: expected a token id in [0, 6)"),
    ("decoding.generate eos_id a float", _generate(eos_id=2.0),
     TypeError, "eos_id: expected a token id in [0, 6)"),
    ("decoding.generate logits_hook of the wrong shape",
     _generate(logits_hook=lambda logits, s: logits[:, :3]),
     ValueError, "logits_hook: expected logits of shape (1, 6) (rows, vocabulary), got (1, 3)"),
    ("budget_forcing answer_id = 999",
     _generate(logits_hook=dec.budget_forcing(answer_id=999, step_id=st.STEP)),
     ValueError, "budget_forcing answer_id: expected a token id in [0, 6)"),
    ("budget_forcing step_id = -1", lambda _: dec.budget_forcing(answer_id=3, step_id=-1),
     ValueError, "step_id: expected a non-negative int"),
    ("steps.start step_id = 999",
     lambda _: lm_steps.start(LM, PROMPTS, None, 2, STEP_CFG._replace(step_id=999)),
     ValueError, "step_id: expected a token id in [0, 6) (lm.vocab_size = 6), got 999"),
    ("steps.start eos_id = -1",
     lambda _: lm_steps.start(LM, PROMPTS, None, 2, STEP_CFG._replace(eos_id=-1)),
     ValueError, "eos_id: expected a non-negative int"),
    ("steps.extend eos_id = 999", _extend(cfg=STEP_CFG._replace(eos_id=999)),
     ValueError, "eos_id: expected a token id in [0, 6)"),
    ("steps.extend PRM score 1.5 (concrete)", _extend(prm=PRM_TOO_HIGH),
     ValueError, "prm_fn: expected scores in [0, 1] (or NaN), got 2 outside (the first 1.5 for "
     "row 0)"),
    ("particle_filter eos_id = 999",
     lambda _: lm_particle.particle_filter(jax.random.key(0), LM, PRM_HALF, 2, prompts=PROMPTS,
                                           config=STEP_CFG._replace(eos_id=999)),
     ValueError, "eos_id: expected a token id in [0, 6)"),
    ("particle_filter prompt id 999",
     lambda _: lm_particle.particle_filter(jax.random.key(0), LM, PRM_HALF, 2,
                                           prompts=PROMPTS.at[0, 0].set(999), config=STEP_CFG),
     ValueError, "prompts: expected token ids in [0, 6)"),
    # --- flow search
    ("flow neighbors of a zero pivot",
     lambda _: flow_noise.neighbors(jax.random.key(0), jnp.zeros((2, 3)), 4),
     ValueError, "pivot: expected a non-zero array (its direction defines the shell), got all "
     "zeros of shape (2, 3)"),
    ("flow neighbors of a NaN pivot",
     lambda _: flow_noise.neighbors(jax.random.key(0), X0.at[0, 0].set(jnp.nan), 4),
     ValueError, "pivot: expected finite values, got 1 NaN/inf entries"),
    # --- the SMC core: run-time failures under runtime_checks
    ("smc NaN particles, runtime_checks", _checkified(_smc_nan_transition),
     RuntimeCheckError, "transition_fn: expected finite particles, got 1 particles with NaN/inf"),
    ("smc every log-weight -inf, runtime_checks", _checkified(_smc_all_invalid),
     RuntimeCheckError, "log_weights: expected some finite log-weight after reweighting"),
    ("smc check_finite not bools",
     lambda _: smc.build(lambda k, x, i: (x, jnp.zeros(4)), check_finite={"x": 1}),
     TypeError, "check_finite: expected Python bools, got 1"),
    ("smc check_finite not a prefix of the particles",
     lambda _: smc.build(lambda k, x, i: (x, jnp.zeros(4)), check_finite={"y": True}).step(
         jax.random.key(0), smc.init(X0), 0),
     ValueError, "check_finite: expected a bool or a pytree prefix of the particles"),
    ("StepConfig runtime_checks not a bool",
     _sample_search(STEP_CFG._replace(runtime_checks="yes")),
     TypeError, "config.runtime_checks: expected a Python bool, got 'yes'"),
    ("sample runtime_checks not a bool", _sample(runtime_checks=1),
     TypeError, "runtime_checks: expected a Python bool, got 1"),
    ("smc runtime_checks not a bool",
     lambda _: smc.build(lambda k, x, i: (x, jnp.zeros(4)), runtime_checks=1),
     TypeError, "runtime_checks: expected a Python bool, got 1"),
    # --- experiments: the config fails before anything is trained
    ("ebt digits.lr = -1", _run(ebt, "ebt", ("digits.lr", "-1")),
     ValueError, "config.digits.lr: expected a float > 0, got -1.0"),
    ("ebt digits.num_eval > test split", _run(ebt, "ebt", ("digits.num_eval", "100000")),
     ValueError, "digits.num_eval: expected <= 359 (the digits test split), got 100000"),
    ("lm_scaling lm.train_difficulty = 3",
     _run(lm_scaling, "lm_scaling", ("lm.train_difficulty", "3")),
     ValueError, "config.lm.train_difficulty: expected a tuple of exactly 2 items"),
    ("sway toy.num_eval = 0", _run(sway, "sway", ("toy.num_eval", "0")),
     ValueError, "config.toy.num_eval: expected an int >= 1, got 0"),
    ("flow_scaling num_seeds = 0", _run(flow_scaling, "flow_scaling", ("num_seeds", "0")),
     ValueError, "config.num_seeds: expected an int >= 1, got 0"),
    ("fkc num_particles = 0",
     lambda _: schema.check(_config("fkc", [("num_particles", "0")]), "fkc"),
     ValueError, "config.num_particles: expected a list of >= 1 items, distinct, each an int >= 2"),
    ("schema of an unknown experiment", lambda _: schema.check(_config("ebt", []), "ebtt"),
     ValueError, "name: expected one of"),
    # --- checkpoints
    ("Checkpointer max_to_keep = 0", lambda w: Checkpointer(w, max_to_keep=0),
     ValueError, "max_to_keep: expected a positive int, got 0"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(tmp_path, call, error, message):
    workdir = str(tmp_path / "run")
    with pytest.raises(error) as info:
        call(workdir)
    assert message in str(info.value), str(info.value)
    assert not os.path.exists(workdir) or not os.listdir(workdir)  # failed before any work


def test_config_of_wrong_type_and_unknown_field_are_refused():
    c = configs.load("ebt:quick").to_dict()  # (a ConfigDict itself refuses 1.5 for an int)
    c["seed"] = 1.5
    with pytest.raises(TypeError, match=r"config\.seed: expected an int >= 0 .*got 1\.5"):
        schema.check(c, "ebt")
    c = configs.load("ebt:quick")
    c.digits.lr, c.tokens.num_eval = -1.0, 0
    with pytest.raises(ValueError) as info:  # every problem in one message
        schema.check(c, "ebt")
    assert "config.digits.lr" in str(info.value) and "config.tokens.num_eval" in str(info.value)
    c = configs.load("ebt:quick")
    c.digits.new_field = 3
    with pytest.raises(ValueError, match=r"config\.digits\.new_field: no such field"):
        schema.check(c, "ebt")


@pytest.mark.parametrize("spec", [f"{n}{v}" for n in configs.names() for v in ("", ":quick")])
def test_every_shipped_config_passes_its_schema(spec):
    schema.check(configs.load(spec), spec.partition(":")[0])
    assert set(schema.SCHEMAS) == set(configs.names())  # one schema per config


# ------------------------------------------------------------------ run-time counts
def test_flow_info_counts_what_is_only_known_at_run_time():
    sample = jax.jit(lambda x, ts: flow.sample(velocity, x, ts, solver="midpoint")[1])
    good = sample(X0, jnp.array([0.0, 0.3, 0.6, 1.0]))
    assert bool(good.grid_valid) and int(good.non_finite_inputs) == 0
    assert int(good.non_finite_outputs) == 0
    bad = sample(X0.at[1].set(jnp.nan), jnp.array([0.0, 0.6, 0.3, 1.0]))
    assert not bool(bad.grid_valid)
    assert int(bad.non_finite_inputs) == 2
    # The NaN row feeds the velocity at every evaluation: 2 entries x 2 evals x 3 steps.
    assert int(bad.non_finite_outputs) == 12
    nan_v = flow.sample(lambda x, t: x * jnp.nan, X0, schedules.uniform(3))[1]
    assert int(nan_v.non_finite_outputs) == 3 * X0.size


def test_energy_info_flags_non_finite_candidates_and_self_verify_skips_them():
    def log_energy(context, y):  # NaN for y <= 0
        return jnp.sum(jnp.log(y))

    y0 = jnp.array([[1.0], [-1.0]])
    _, info = energy.minimize(None, log_energy, None, y0, num_steps=3, step_size=0.1)
    np.testing.assert_array_equal(np.asarray(info.non_finite), [False, True])
    chosen, _, verify = energy.self_verify(
        None, lambda c, y: jnp.sum(jnp.log(y)), None, y0.reshape(1, 2, 1), num_candidates=2,
        num_steps=3, step_size=0.1,
    )  # fmt: skip
    assert int(verify.chosen[0]) == 0 and np.isfinite(np.asarray(chosen)).all()


def test_traced_num_active_steps_is_clipped_and_reported():
    run = jax.jit(lambda n: energy.minimize(None, quadratic, None, X0, num_steps=5,
                                            step_size=0.1, num_active_steps=n)[1])  # fmt: skip
    np.testing.assert_array_equal(np.asarray(run(9).stopped_at), [5] * 4)
    np.testing.assert_array_equal(np.asarray(run(2).stopped_at), [2] * 4)


def test_ess_takes_log_weights():
    w = jnp.array([0.9, 0.1])
    assert float(resampling.ess(jnp.log(w))) == pytest.approx(1 / (0.81 + 0.01), rel=1e-5)
    # Log-weights that happen to look like weights are accepted once shifted (ESS is
    # invariant to the shift).
    assert float(resampling.ess(w - 1.0)) == pytest.approx(
        float(jnp.exp(2 * jax.nn.logsumexp(w) - jax.nn.logsumexp(2 * w))), rel=1e-5
    )
    assert float(resampling.ess(jnp.full(4, 0.25))) == pytest.approx(4.0)  # equal: no harm


def test_version():
    from importlib import metadata

    assert inferax.__version__ == metadata.version("inferax")
    assert inferax.__version__ != "0+unknown"
    from inferax.sampling import flow as flow_again  # the subpackages still import

    assert flow_again is flow


# ------------------------------------------------------------------ search / LM counts
def test_traced_prompt_ids_are_counted():
    run = st.jit(lambda p: dec.sample(jax.random.key(0), LM, p, max_new_tokens=4,
                                      eos_id=st.EOS)[1].bad_prompt_tokens)  # fmt: skip
    assert int(run(PROMPTS)) == 0
    assert int(run(PROMPTS.at[0, 1].set(999))) == 1
    mask = jnp.array([[False, True]])  # a masked (pad) position is not looked at
    state, info = dec.start(LM, PROMPTS.at[0, 0].set(-1), mask, max_new_tokens=4)
    assert int(info.bad_prompt_tokens) == 0


def test_eos_id_none_decodes_to_capacity():
    state, info = dec.sample(jax.random.key(0), LM, PROMPTS, max_new_tokens=4, eos_id=None)
    assert int(state.num_tokens[0]) == 4 and bool(state.finished[0])


def test_prm_scores_out_of_range_under_jit_are_nan_and_counted():
    def prm(state, prompt_index):  # 1.5 once a row has two tokens, else in range
        return jnp.where(state.num_tokens >= 2, 1.5, 0.25)

    run = st.jit(lambda key, scale: lm_particle.particle_filter(
        key, LM, lambda s, i: prm(s, i) * scale, 4, prompts=PROMPTS, config=STEP_CFG))  # fmt: skip
    res, info = run(jax.random.key(0), 1.0)
    # Every row reaches two tokens in round 0: 4 bad scores, each scored once per round.
    assert int(info.trace["num_bad_scores"]) == int(info.prm_calls) > 0
    assert int(info.trace["num_nan_scores"]) == 0
    assert np.isnan(np.asarray(res.scores)).all()  # treated as NaN: never clipped to 1
    _, ok = run(jax.random.key(0), 0.5)  # 0.75 and 0.125: all in range
    assert int(ok.trace["num_bad_scores"]) == 0 and int(ok.trace["num_nan_scores"]) == 0


def test_traced_zero_pivot_gives_the_pivot_itself():
    nb = jax.jit(lambda p: flow_noise.neighbors(jax.random.key(0), p, 3))
    np.testing.assert_array_equal(np.asarray(nb(jnp.zeros((2, 3)))), np.zeros((3, 2, 3)))
    pivot = jnp.arange(1.0, 7.0).reshape(2, 3)
    out = nb(pivot)  # a non-zero pivot: neighbours on its shell, as before
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out).reshape(3, -1), axis=1),
                               np.linalg.norm(np.asarray(pivot)), rtol=1e-5)  # fmt: skip


# ------------------------------------------------------------------ SMC counts
def _nan_row(k, x, i):
    """Particle 1 (and, on step 1, particle 2 too) gets a NaN; increments stay finite."""
    x = x.at[1, 0].set(jnp.nan)
    return jnp.where((i == 1) & (jnp.arange(4) == 2)[:, None], jnp.inf, x), jnp.zeros(4)


def test_smc_counts_non_finite_particles():
    alg = smc.build(_nan_row, ess_threshold=0.0)
    _, infos = st.jit(lambda: alg.run(jax.random.key(0), alg.init(X0), jnp.arange(2)))()
    np.testing.assert_array_equal(np.asarray(infos.num_non_finite_particles), [1, 2])
    np.testing.assert_array_equal(np.asarray(infos.num_nan), [0, 0])  # the weights are fine
    # Groups: a [G] count; an int leaf and a shared leaf.
    tree = {"x": jnp.ones((4, 2)), "n": jnp.arange(4), "shared": jnp.ones(())}
    grouped = smc.build(
        lambda k, t, i: (dict(t, x=t["x"].at[3].set(jnp.nan)), jnp.zeros(4)),
        particle_axes={"x": 0, "n": 0, "shared": None},
    )
    st0 = grouped.init(tree, jnp.zeros((2, 2)))
    _, info = st.jit(lambda s: grouped.step(jax.random.key(0), s, 0))(st0)
    np.testing.assert_array_equal(np.asarray(info.num_non_finite_particles), [0, 1])
    shared_nan = smc.build(
        lambda k, t, i: (dict(t, shared=jnp.nan * t["shared"]), jnp.zeros(4)),
        particle_axes={"x": 0, "n": 0, "shared": None},
    )
    _, info = st.jit(lambda t: shared_nan.step(jax.random.key(0), shared_nan.init(t), 0))(tree)
    assert int(info.num_non_finite_particles) == 4


def test_smc_check_finite_selects_the_leaves_looked_at():
    """``check_finite`` (a bool prefix of the particles) leaves a large leaf that cannot
    matter on its own out of the pass (an LM's KV cache); the default looks at all."""
    tree = {"x": jnp.ones((4, 2)), "cache": jnp.ones((3, 4, 5))}
    axes = {"x": 0, "cache": 1}

    def nan_in(leaf, row):
        def move(k, t, i):
            where = (slice(None), row) if leaf == "cache" else (row,)
            return dict(t, **{leaf: t[leaf].at[where].set(jnp.nan)}), jnp.zeros(4)

        return move

    def count(leaf, row, check_finite=True):
        alg = smc.build(nan_in(leaf, row), particle_axes=axes, check_finite=check_finite)
        return int(st.jit(lambda t: alg.step(jax.random.key(0), alg.init(t), 0))(tree)[1]
                   .num_non_finite_particles)  # fmt: skip

    assert count("cache", 2) == 1 and count("x", 1) == 1  # default: every floating leaf
    assert count("cache", 2, {"x": True, "cache": False}) == 0  # the cache is not looked at
    assert count("x", 1, {"x": True, "cache": False}) == 1
    assert count("x", 1, False) == 0


def test_smc_runtime_checks_keep_the_outputs():
    def move(k, x, i):
        x = x + 0.1 * jax.random.normal(k, x.shape)
        return x, -jnp.sum(x**2, axis=1)

    def run(checks):
        alg = smc.build(move, runtime_checks=checks, ess_threshold=0.7)
        return alg.run(jax.random.key(3), alg.init(X0), jnp.arange(5))

    plain = st.jit(lambda: run(False))()
    err, checked = st.jit(checkify.checkify(lambda: run(True)))()
    err.throw()  # nothing failed
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(checked),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(jnp.sum(plain[1].num_non_finite_particles)) == 0
