"""The sway reproduction end to end on a shrunken quick config (2 seeds)."""

import copy
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.experiments import stats, sway, sway_infill
from inferax.experiments.configs import sway as sway_config
from inferax.models import gmm, infill
from inferax.sampling import schedules


def tiny_config():
    c = sway_config.get_config("quick")
    c.num_seeds = 2
    c.nfes = [4, 8, 16]
    c.sway_coefs = [-1.0, 0.0]
    c.toy.num_train = 4000
    c.toy.num_eval = 600
    c.toy.hidden = 64
    c.toy.train_steps = 120
    c.toy.warmup_steps = 12
    c.digits.hidden = 128
    c.digits.train_steps = 100
    c.digits.warmup_steps = 10
    c.digits.classifier_steps = 100  # test accuracy 0.98 (asserted > 0.9)
    c.digits.samples_per_class = 10
    c.infill.hidden = 32
    c.infill.depth = 1
    c.infill.train_steps = 40
    c.infill.batch_size = 32
    c.infill.warmup_steps = 4
    c.infill.cfg_scales = [2.0]
    c.infill.num_eval = 60
    c.infill.reference_steps = 16
    c.infill.tune_nfes = [8]
    c.infill.tune_batch = 16
    c.infill.tune_iters = 4
    c.infill.tune_coefs = 3
    return c


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sway"))
    return workdir, sway.run(tiny_config(), workdir)


def test_writes_results_plots_and_log(results):
    workdir, res = results
    for name in ["results.json", "sway.log", "toy_energy_distance.png", "toy_samples.png",
                 "digits_frechet.png", "digits_samples.png"]:  # fmt: skip
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["seeds"] == [0, 1]
    # metric by dataset, velocity/CFG, solver, schedule, NFE; per-seed values kept.
    entry = saved["toy"]["velocity"]["model"]["euler"]["sway-1"]["8"]
    assert set(entry) == {"steps", "nfe", "energy_distance", "nll"} and entry["steps"] == 8
    ed = entry["energy_distance"]
    assert len(ed["values"]) == 2 and ed["lo"] <= ed["mean"] <= ed["hi"]
    assert ed["mean"] == pytest.approx(np.mean(ed["values"]))
    assert saved["toy"]["velocity"]["oracle"]["midpoint"]["uniform"]["16"]["steps"] == 8
    digits = saved["digits"]["cfg"]["w=2"]["euler"]["uniform"]["16"]
    assert digits["steps"] == 8 and all(0.0 <= a <= 1.0 for a in digits["accuracy"]["values"])
    # One step on [0, 1] (4 NFE, midpoint, CFG) is degenerate and left out.
    assert "4" not in saved["digits"]["cfg"]["w=2"]["midpoint"]["uniform"]
    with open(os.path.join(workdir, "sway.log")) as f:
        log = f.read()
    assert "vs uniform at 16 NFE" in log and "improvement" in log


def test_reported_nfe_counts_only_active_steps(results):
    """FlowInfo.nfe of every sweep entry is steps x evals x CFG factor, not the padded length."""
    _, res = results
    for solver, evals in (("euler", 1), ("midpoint", 2)):
        for name, row in res["toy"]["velocity"]["model"][solver].items():
            for n, e in row.items():
                assert e["nfe"] == e["steps"] * evals == n, (solver, name, n)
        for name, row in res["digits"]["cfg"]["w=2"][solver].items():
            for n, e in row.items():
                assert e["nfe"] == e["steps"] * evals * 2 == n, (solver, name, n)


def test_padding_is_not_integrated():
    """A padded grid with num_active_steps gives the unpadded solve and the unpadded cost.

    Negative control: integrating the padding (num_active_steps = padded length)
    costs more NFE, and padding that is not at t = 1 changes the samples.
    """
    mix = gmm.eight_gaussians()

    def apply(_, x, t):
        return mix.velocity(x, t)

    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    ref, _ = sway._sample_uncond(apply, None, x0, sway.grid(-1.0, 4), 4, "midpoint")
    padded = sway.grid(-1.0, 4, 9)
    assert padded.shape == (10,) and bool(jnp.all(padded[4:] == 1.0))
    x, nfe = sway._sample_uncond(apply, None, x0, padded, 4, "midpoint")
    np.testing.assert_allclose(x, ref, atol=1e-6)
    assert int(nfe) == 8
    _, nfe_all = sway._sample_uncond(apply, None, x0, padded, 9, "midpoint")
    assert int(nfe_all) == 18
    # The padding really is ignored: garbage after the active part changes nothing ...
    junk = padded.at[5:].set(jnp.linspace(0.1, 0.9, 5))
    x_junk, _ = sway._sample_uncond(apply, None, x0, junk, 4, "midpoint")
    np.testing.assert_allclose(x_junk, ref, atol=1e-6)
    # ... while a grid whose active part differs does change the result.
    x_other, _ = sway._sample_uncond(apply, None, x0, sway.grid(0.0, 4, 9), 4, "midpoint")
    assert float(jnp.max(jnp.abs(x_other - ref))) > 1e-3


def test_numbers_are_sane(results):
    _, res = results
    oracle = res["toy"]["velocity"]["oracle"]
    # With the exact velocity, more NFE gets closer to the data: NLL approaches the data's NLL.
    nll_16 = oracle["midpoint"]["uniform"][16]["nll"]["mean"]
    assert abs(nll_16 - res["toy"]["floor"]["nll"]["mean"]) < 0.25
    for s in (0, 1):
        e4 = oracle["euler"]["uniform"][4]["energy_distance"]["values"][s]
        e16 = oracle["euler"]["uniform"][16]["energy_distance"]["values"][s]
        assert e4 > e16, (s, e4, e16)
    assert res["digits"]["classifier_test_accuracy"] > 0.9
    # Verdicts compare sway at N with uniform at 2N only where both exist.
    assert set(res["verdicts"]["toy/model/euler"]["sway-1"]) == {4, 8}
    assert set(res["verdicts"]["digits/w=2/midpoint"]["sway-1"]) == {8}
    for per_grid in res["verdicts"].values():
        for v in per_grid["sway-1"].values():
            # 2 seeds cannot reach 5% in an exact test: nothing is decided.
            assert v["verdict"] == stats.NOT_DECIDABLE and "n = 2" in v["reason"], v


def test_non_finite_metrics_make_the_verdict_fail(results):
    """A broken model (inf metrics for both grids) must not read as 'matches or beats'."""
    _, res = results
    broken = copy.deepcopy(res)
    table = broken["toy"]["velocity"]["model"]["euler"]
    for name, n in (("sway-1", 8), ("uniform", 16)):
        table[name][n]["energy_distance"] = stats.t_interval([math.inf, math.inf])
    v = sway.verdicts(broken, [4, 8])["toy/model/euler"]["sway-1"][8]
    assert v["verdict"] == stats.FAILS and "non-finite" in v["reason"]
    # Negative control: the untouched results give a finite comparison.
    assert sway.verdicts(res, [4, 8])["toy/model/euler"]["sway-1"][8]["improvement"]["finite"]


def test_report_mentions_claim_numbers_and_intervals(results):
    _, res = results
    md = sway.report(res)
    assert md.count("F5-TTS") == 2  # the section title and the claim, once
    assert "| sway-1 |" in md and "Verdicts" in md and "[" in md and "noise floor" in md.lower()
    s = sway.summary(res)
    assert "Table 5" in s["claim"]
    assert {r[0] for r in s["rows"]} == {
        "toy/model/euler",
        "toy/model/midpoint",
        "toy/oracle/euler",
        "toy/oracle/midpoint",
        "digits/w=2/euler",
        "digits/w=2/midpoint",
        "infill/w=2/euler",
        "infill/w=2/midpoint",
    }


def test_bad_config_fails_before_anything_runs(tmp_path):
    for field, value, match in [
        ("solvers", ["euler", "rk45"], "solvers"),
        ("nfes", [4, 0], "nfes"),
        ("sway_coefs", [-1.0], "sway_coefs"),
        ("num_seeds", 0, "num_seeds"),
        ("toy.warmup_steps", 10**6, "toy.warmup_steps"),
        ("digits.model", "unet", "digits.model"),
        ("infill.mask", "left", "infill.mask"),
        ("infill.tune_nfes", [5], "infill.tune_nfes"),
    ]:
        c = tiny_config()
        section, _, name = field.rpartition(".")
        setattr(c[section] if section else c, name, value)
        with pytest.raises(ValueError, match=match):
            sway.run(c, str(tmp_path / field))
        assert not os.path.exists(tmp_path / field), field


def test_infill_part(results):
    """The infilling quick run: every grid (tuned included) finite, NFE counted, the tuning
    recorded within its cost, verdicts and the report's per-model winners."""
    workdir, res = results
    for name in ["infill_ref_mse.png", "infill_samples.png"]:
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    table = res["infill"]["cfg"]["w=2"]["euler"]
    assert {"uniform", "sway-1", "tuned"} <= set(table) and set(table["tuned"]) == {8}
    for solver, evals in (("euler", 1), ("midpoint", 2)):
        for name, row in res["infill"]["cfg"]["w=2"][solver].items():
            for n, e in row.items():
                assert e["nfe"] == e["steps"] * evals * 2 == n, (solver, name, n)
                for m in ("ref_mse", "mse", "psnr", "accuracy"):
                    assert e[m]["finite"] and len(e[m]["values"]) == 2, (solver, name, n, m)
                assert 0.0 <= e["accuracy"]["mean"] <= 1.0 and e["ref_mse"]["mean"] >= 0.0
    tuning = res["infill"]["tuning"]["w=2"]["euler"][8]
    assert tuning["error_tuned"] <= tuning["error_sway"] <= tuning["error_uniform"]
    assert len(tuning["ts"]) == 5 and tuning["ts"][0] == 0.0 and tuning["ts"][-1] == 1.0
    assert set(res["verdicts"]["infill/w=2/euler"]["sway-1"]) == {4, 8}
    md = sway.report(res)
    assert "### Infilling" in md and "Which grid wins" in md and "| tuned |" in md
    assert "infill/w=2/midpoint" in md and "Tuned grids" in md
    assert any(r[0] == "infill/w=2/euler" for r in sway.summary(res)["rows"])


def test_infill_sampler_keeps_observed_pixels_exactly():
    """The experiment's jitted completion keeps the observed pixels bit-exact on a padded
    sway grid (an untrained network: exactness cannot come from the training)."""
    net = infill.InfillVelocity(hidden=16, depth=1)
    obs = jax.random.uniform(jax.random.key(0), (5, 8, 8, 1), minval=-1.0, maxval=1.0)
    mask = infill.make_masks("bottom", 5)
    params = jax.jit(net.init)(jax.random.key(1), obs, jnp.zeros(5), obs, mask)
    x0 = infill.initial_state(jax.random.normal(jax.random.key(2), obs.shape), obs, mask)
    ts = sway_infill._pad(schedules.sway(3, -1.0), 6)
    x1, nfe = sway_infill._complete(net, params, x0, obs, mask, ts, 3, "midpoint", 2.0)
    assert int(nfe) == 12
    np.testing.assert_array_equal(np.asarray(x1 * mask), np.asarray(obs * mask))
    assert float(jnp.max(jnp.abs((x1 - x0) * (1 - mask)))) > 1e-3
