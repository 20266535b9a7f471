"""Toy 2-D distributions and the sklearn digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import data, gmm

N = 4000


@pytest.mark.parametrize("name", sorted(data.TOY_DATASETS))
def test_toy_shape_dtype_determinism(name):
    a = data.toy_samples(name, jax.random.key(0), N)
    b = data.toy_samples(name, jax.random.key(0), N)
    c = data.toy_samples(name, jax.random.key(1), N)
    assert a.shape == (N, 2) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert bool(jnp.all(jnp.isfinite(a)))
    # All shapes live at the scale of a standard normal source.
    assert float(jnp.abs(a).max()) < 4.0 and 0.5 < float(a.std()) < 2.0


def test_toy_samplers_jit():
    f = jax.jit(data.moons, static_argnums=1)
    np.testing.assert_array_equal(f(jax.random.key(3), 10), data.moons(jax.random.key(3), 10))


def test_eight_gaussians_matches_the_analytic_mixture():
    x = np.asarray(data.eight_gaussians(jax.random.key(2), N), np.float64)
    mix = gmm.eight_gaussians()
    means = np.asarray(mix.means)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 2.0, rtol=1e-6)
    d = np.linalg.norm(x[:, None] - means[None], axis=-1)
    comp = d.argmin(1)
    resid = x - means[comp]
    # Per-axis std 0.2 (3-sigma band on the estimate from N samples: +-0.007).
    np.testing.assert_allclose(resid.std(0), 0.2, atol=0.01)
    np.testing.assert_allclose(resid.mean(0), 0.0, atol=0.01)
    freq = np.bincount(comp, minlength=8) / N
    np.testing.assert_allclose(freq, 1 / 8, atol=0.02)  # 3 sigma = 0.016


def test_checkerboard_support_and_uniformity():
    x = np.asarray(data.checkerboard(jax.random.key(4), N))
    assert np.all(np.abs(x) <= 2.0)
    cell = np.floor(x).astype(int) + 2
    assert np.all((cell[:, 0] + cell[:, 1]) % 2 == 0), "mass in a white cell"
    counts = np.bincount(cell[:, 1] * 4 + cell[:, 0], minlength=16)
    black = counts[counts > 0]
    assert len(black) == 8
    np.testing.assert_allclose(black / N, 1 / 8, atol=0.02)


def test_rings_radii():
    x = np.asarray(data.rings(jax.random.key(5), N))
    r = np.linalg.norm(x, axis=1)
    dist = np.abs(r[:, None] - np.array([0.5, 1.0, 1.5, 2.0])[None]).min(1)
    assert np.quantile(dist, 0.99) < 0.2  # jitter std 0.05
    # Ring probabilities proportional to the radius: 0.1, 0.2, 0.3, 0.4.
    ring = np.abs(r[:, None] - np.array([0.5, 1.0, 1.5, 2.0])[None]).argmin(1)
    np.testing.assert_allclose(np.bincount(ring) / N, [0.1, 0.2, 0.3, 0.4], atol=0.025)


def test_moons_two_balanced_arcs():
    x = np.asarray(data.moons(jax.random.key(6), N, noise=0.0))
    upper = np.abs(np.linalg.norm(x / 2 + [0.5, 0.25], axis=1) - 1) < 1e-4
    lower = np.abs(np.linalg.norm(x / 2 + [0.5, 0.25] - [1.0, 0.5], axis=1) - 1) < 1e-4
    assert np.all(upper | lower)
    assert abs(upper.mean() - 0.5) < 0.03


def test_gmm_samples():
    mix = gmm.gaussian_mixture([1.0, 3.0], [[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]], scale=0.1)
    x = data.gmm_samples(jax.random.key(7), N, mix)
    assert x.shape == (N, 3) and x.dtype == jnp.float32
    np.testing.assert_allclose(float((x[:, 0] > 2.5).mean()), 0.75, atol=0.03)
    with pytest.raises(TypeError, match="mixture"):
        data.gmm_samples(jax.random.key(7), 5, "8gaussians")


def test_toy_bad_arguments():
    with pytest.raises(ValueError, match="name: expected one of"):
        data.toy_samples("spirals", jax.random.key(0), 10)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n: expected a positive"):
            data.toy_samples("moons", jax.random.key(0), bad)


def test_digits_split():
    xtr, ytr = data.load_digits("train")
    xte, yte = data.load_digits("test")
    xall, yall = data.load_digits("all")
    assert xall.shape == (1797, 8, 8, 1)
    assert xtr.shape == (1438, 8, 8, 1) and xte.shape == (359, 8, 8, 1)
    assert ytr.shape == (1438,) and yte.shape == (359,)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32
    assert xtr.min() == -1.0 and xtr.max() == 1.0
    assert set(np.unique(ytr)) == set(range(10)) and set(np.unique(yte)) == set(range(10))
    # Disjoint, and together they are the whole set (pixel values are in 1/8 steps).
    key = lambda x, y: {(r.tobytes(), int(l)) for r, l in zip(x, y, strict=True)}
    tr, te, al = key(xtr, ytr), key(xte, yte), key(xall, yall)
    assert tr | te == al
    assert len(xtr) + len(xte) == len(xall)
    # Deterministic, and the seed matters.
    np.testing.assert_array_equal(data.load_digits("test")[0], xte)
    assert not np.array_equal(data.load_digits("test", seed=1)[0], xte)
    assert data.load_digits("test", test_fraction=0.5)[0].shape[0] == 898


def test_digits_to_unit():
    xtr, _ = data.load_digits("train")
    u = data.digits_to_unit(xtr)
    assert u.min() == 0.0 and u.max() == 1.0
    np.testing.assert_allclose(
        data.digits_to_unit(jnp.array([-1.0, 0.0, 1.0, 3.0])), [0, 0.5, 1, 1]
    )


def test_digits_bad_arguments():
    with pytest.raises(ValueError, match="split: expected 'train', 'test' or 'all'"):
        data.load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits("train", test_fraction=1.0)
