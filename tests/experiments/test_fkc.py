"""The Feynman-Kac corrector reproduction on a shrunken quick config.

Also checks the two exact target samplers the experiment relies on: the grid
sampler against a Gaussian's moments, and the closed-form product of two
mixtures against a brute-force grid normalisation.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from inferax.experiments import fkc, fkc_scores, stats
from inferax.experiments.configs import fkc as fkc_config
from inferax.models import gmm


def tiny_config():
    c = fkc_config.get_config("quick")
    c.velocities = ["oracle"]
    c.num_seeds = 5  # seeds share one compiled sampler: each costs only a few seconds
    c.num_particles = [1024]
    c.num_repeats = 1
    c.num_steps = 100
    c.num_target_samples = 1500
    c.num_reference = 20_000
    c.grid_resolution = 400
    c.anneal.betas = [2.0]
    c.cfg.ws = [4.0]
    return c


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("fkc"))
    return workdir, fkc.run(tiny_config(), workdir)


def test_writes_results_plots_and_log(results):
    workdir, _ = results
    names = ["results.json", "fkc.log"] + [
        f"{t}_{k}.png"
        for t in ("anneal", "product", "cfg")
        for k in ("energy_distance", "mode_weight_error", "samples")
    ]
    for name in names:
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["seeds"] == [0, 1, 2, 3, 4] and saved["config"]["num_particles"] == [1024]
    for target, setting in [("anneal", "beta=2"), ("product", "p1*p2"), ("cfg", "w=4")]:
        for method in ("fkc", "unweighted"):
            entry = saved[target][setting]["oracle"][method]["1024"]
            assert {"energy_distance", "mode_weight_error", "ess_min", "nfe"} <= set(entry)
            tv = entry["mode_weight_error"]
            assert len(tv["values"]) == 5 and all(0.0 <= v <= 1.0 for v in tv["values"])
            assert tv["lo"] <= tv["mean"] <= tv["hi"]
        assert len(saved[target][setting]["exact"]["1024"]["energy_distance"]["values"]) == 5
    # NFE per particle: steps x models (a CFG pair counts 2), plus FKC's resample-move:
    # 2 MALA steps (Simpson line integral: 1 + 2 K = 5 score evaluations) after each of
    # the 99 inner steps, each evaluation costing the transition's models.
    assert saved["anneal"]["beta=2"]["oracle"]["fkc"]["1024"]["nfe"] == 100 + 5 * 99
    assert saved["product"]["p1*p2"]["oracle"]["fkc"]["1024"]["nfe"] == 200 + 2 * 5 * 99
    assert saved["cfg"]["w=4"]["oracle"]["unweighted"]["1024"]["nfe"] == 200
    # The unweighted SDE never reweights: its ESS is N throughout.
    assert saved["cfg"]["w=4"]["oracle"]["unweighted"]["1024"]["ess_min"]["values"] == [1024.0] * 5
    with open(os.path.join(workdir, "fkc.log")) as f:
        assert "FKC vs the unweighted SDE" in f.read()


def test_seeds_draw_different_targets(results):
    """A seed draws its own mixtures: the exact floors and the metrics differ across seeds."""
    _, res = results
    vals = res["anneal"]["beta=2"]["oracle"]["unweighted"][1024]["energy_distance"]["values"]
    assert len(set(vals)) == 5


def test_fkc_beats_the_unweighted_sde_with_the_oracle(results):
    """The claim where it is robust at this size: anneal and product hold on ED over 5 seeds."""
    _, res = results
    for target, setting in [("anneal", "beta=2"), ("product", "p1*p2")]:
        for n in (1024,):
            v = res["verdicts"][target][setting]["oracle"]["energy_distance"][n]
            assert v["verdict"] == stats.HOLDS, (target, n, v)
    # With 1024 particles FKC is at the exact sampler's floor on most drawn targets (the
    # median seed), the unweighted SDE far from it. (A seed can miss: issue 12's
    # off-centre failure; the median keeps this check about the typical target.)
    node = res["anneal"]["beta=2"]
    f_ed = node["oracle"]["fkc"][1024]["energy_distance"]["values"]
    u_ed = node["oracle"]["unweighted"][1024]["energy_distance"]["values"]
    assert np.median(f_ed) < 0.03 and np.median(u_ed) > 0.2, (f_ed, u_ed)
    # The verdict is read from the intervals: the swapped comparison fails (negative control).
    assert stats.compare(u_ed, f_ed)["verdict"] == stats.FAILS


def test_report_mentions_claim_numbers_and_intervals(results):
    _, res = results
    md = fkc.report(res)
    assert md.count("Skreta") == 2 and "| anneal | beta=2 | oracle | 1024 |" in md
    assert "exact (floor)" in md and "min step ESS" in md and "fkc/cfg_samples.png" in md
    s = fkc.summary(res)
    assert {r[0] for r in s["rows"]} == {
        "anneal beta=2, oracle velocity, N=1024",
        "product p1*p2, oracle velocity, N=1024",
        "cfg w=4, oracle velocity, N=1024",
    }


def test_grid_sampler_reproduces_a_gaussian():
    """Mean within 4 standard errors and covariance within 5% of a correlated Gaussian."""
    mean = np.array([1.0, -0.5])
    cov = np.array([[0.8, 0.3], [0.3, 0.5]])
    dist = sps.multivariate_normal(mean, cov)

    def log_density(x):  # unnormalised on purpose
        d = x - jnp.asarray(mean, jnp.float32)
        return -0.5 * jnp.einsum("ni,ij,nj->n", d, jnp.asarray(np.linalg.inv(cov)), d) + 3.0

    n = 100_000
    x = fkc.grid_samples(jax.random.key(0), log_density, [-5.0, -5.5], [7.0, 4.5], 500, n)
    assert x.shape == (n, 2) and x.dtype == np.float32
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * se), (x.mean(0), mean)
    np.testing.assert_allclose(np.cov(x, rowvar=False), cov, atol=0.05 * cov.max())
    # One-dimensional marginal: a KS test against the exact law.
    assert sps.kstest(x[:5000, 0], sps.norm(mean[0], np.sqrt(cov[0, 0])).cdf).pvalue > 1e-3
    assert np.isfinite(dist.logpdf(x[:10])).all()
    with pytest.raises(ValueError, match="resolution"):
        fkc.grid_samples(jax.random.key(0), log_density, [0, 0], [1, 1], 1, 10)
    with pytest.raises(ValueError, match="lo, hi"):
        fkc.grid_samples(jax.random.key(0), log_density, [0, 0], [1, -1], 10, 10)


def test_product_mixture_matches_a_brute_force_grid():
    p1 = gmm.gaussian_mixture([0.3, 0.7], [[-1.0, 0.0], [1.5, 1.0]], scale=0.7)
    covs = np.array(
        [[[0.5, 0.2], [0.2, 0.9]], [[1.2, -0.3], [-0.3, 0.4]], [[0.3, 0.0], [0.0, 0.3]]]
    )
    p2 = gmm.gaussian_mixture([0.2, 0.5, 0.3], [[0.0, 1.0], [1.0, -1.0], [-2.0, 0.5]], covs)
    prod = fkc.product_mixture(p1, p2)
    assert prod.num_components == 6
    # Normalise p1 p2 by brute force on a fine grid (float64) and compare pointwise.
    g = np.linspace(-8, 8, 801)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    log_pp = np.asarray(p1.log_prob(pts), np.float64) + np.asarray(p2.log_prob(pts), np.float64)
    log_z = np.log(np.exp(log_pp).sum() * (g[1] - g[0]) ** 2)
    idx = np.random.default_rng(0).choice(len(pts), 2000, replace=False)
    idx = idx[log_pp[idx] > -20]
    np.testing.assert_allclose(
        np.asarray(prod.log_prob(pts[idx]), np.float64), log_pp[idx] - log_z, atol=2e-3
    )
    # A wrong formula (e.g. dropping the overlap factor from the weights) is caught.
    naive = gmm.GaussianMixture(
        jnp.log(jnp.outer(p1.weights, p2.weights).ravel()), prod.means, prod.covs
    )
    assert np.max(np.abs(np.asarray(naive.log_prob(pts[idx])) - (log_pp[idx] - log_z))) > 0.1


def test_model_velocities_train_cache_and_shapes(tmp_path):
    """The trained-model path: three tiny models, cached, with the oracle's call signatures."""
    c = tiny_config()
    c.train.hidden, c.train.depth, c.train.train_steps, c.train.batch_size = 16, 1, 5, 32
    c.train.warmup_steps = 1
    problems = fkc.build_problems(c, jax.random.key(0))
    v = {
        k: fkc.bind(e)
        for k, e in fkc.model_velocities(problems, c, str(tmp_path), jax.random.key(1)).items()
    }
    for name in ("anneal", "product", "cfg"):
        assert os.path.isdir(os.path.join(tmp_path, "models", name)), name
    x = jnp.ones((3, 2))
    assert v["anneal"](x, 0.5).shape == (3, 2)
    assert v["product"][0](x, 0.5).shape == (3, 2)
    # The two experts are the same network with different labels: different fields.
    assert not np.allclose(v["product"][0](x, 0.5), v["product"][1](x, 0.5))
    assert v["cfg"](x, 0.5, jnp.array([0, 1, 3])).shape == (3, 2)


def test_bad_config_fails_before_anything_runs(tmp_path):
    for field, value, match in [
        ("velocities", ["exact"], "velocities"),
        ("transport", "straight", "transport"),
        ("num_seeds", 0, "num_seeds"),
        ("num_reference", 100, "num_reference"),
        ("g", "cosine-ish", "g"),
    ]:
        c = tiny_config()
        setattr(c, field, value)
        with pytest.raises(ValueError, match=match):
            fkc.run(c, str(tmp_path / field))
        assert not os.path.exists(tmp_path / field / "fkc.log"), field


def test_score_check_is_zero_for_exact_velocities_and_sees_a_curl():
    """``fkc_scores.score_check`` with the exact mixture velocities in the model's place: zero
    error and zero asymmetry (float32 round-off); a rotation added to one velocity (not
    the gradient of anything) shows up as asymmetry and error there, and only there."""
    config = tiny_config()
    problems = fkc.build_problems(config, jax.random.key(3))
    exact = fkc.oracle_velocities(problems, config)
    small = {"times": (0.5, 0.97), "num_points": 256}
    checked = fkc_scores.score_check(problems, {"model": exact}, jax.random.key(4), config, **small)
    names = {"anneal", "product/p1", "product/p2", "cfg/unconditional"}
    names |= {f"cfg/class {c}" for c in range(config.cfg.num_classes)}
    assert set(checked) == names
    for per_t in checked.values():
        assert set(per_t) == set(small["times"])
        for e in per_t.values():
            assert e["relative_error"] < 1e-4 and e["asymmetry"] < 1e-4, e
            assert e["oracle_asymmetry"] < 1e-4, e
    factory, theta = exact["anneal"]
    rot = jnp.array([[0.0, -1.0], [1.0, 0.0]])

    def curled(th):
        v = factory(th)
        return lambda x, t: v(x, t) + 0.3 * (x - 1.0) @ rot.T

    exact_curled = {**exact, "anneal": (curled, theta)}
    checked = fkc_scores.score_check(
        problems, {"model": exact_curled}, jax.random.key(4), config, **small
    )
    for t, e in checked["anneal"].items():
        assert e["asymmetry"] > 0.01 and e["relative_error"] > 0.01, (t, e)
        assert e["oracle_asymmetry"] < 1e-4
    assert all(e["asymmetry"] < 1e-4 for e in checked["product/p1"].values())


def test_implied_score_is_the_linear_interpolants_score_from_velocity():
    """The closed form the check uses agrees with ``interpolants.score_from_velocity``."""
    from inferax.sampling import interpolants

    mix = gmm.eight_gaussians()
    x = mix.marginal(0.6).sample(jax.random.key(0), 64)
    for t in (0.25, 0.9, 0.97):
        u = mix.velocity(x, t)
        general = interpolants.score_from_velocity(interpolants.linear(), u, x, t)
        closed = fkc_scores._implied_score(mix.velocity, x, t)
        np.testing.assert_allclose(closed, general, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(closed, mix.score(x, t), rtol=1e-3, atol=1e-3)
