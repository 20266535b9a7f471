"""Data sets made in code: 2-D toy distributions and the sklearn 8x8 digits.

Every toy sampler has the signature ``(key, n) -> [n, 2] float32`` and is a
pure function of its key. The shapes are of the usual size (about [-2, 2]^2)
so that a standard-normal source, the flow-matching source of
``inferax.models.flow_matching``, covers them without rescaling.

The digits are ``sklearn.datasets.load_digits`` (1797 images of 8x8 pixels
with values 0..16, bundled with scikit-learn: nothing is downloaded), scaled to
[-1, 1] and split into train/test by a seeded permutation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from inferax.models import gmm

ToySampler = Callable[[jax.Array, int], jax.Array]


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n: expected a positive Python int (number of samples), got {n!r}")
    return int(n)


def eight_gaussians(key: jax.Array, n: int) -> jax.Array:
    """Eight equal-weight Gaussians on a circle of radius 2 with std 0.2.

    Samples exactly the law of ``inferax.models.gmm.eight_gaussians()``, so its
    analytic velocity and score are the oracle for models trained on it.
    """
    n = _check_n(n)
    return gmm.eight_gaussians(radius=2.0, scale=0.2).sample(key, n).astype(jnp.float32)


def moons(key: jax.Array, n: int, noise: float = 0.1) -> jax.Array:
    """Two interleaved half circles (the sklearn "moons" shape), centred and scaled by 2.

    Upper moon ``(cos a, sin a)``, lower moon ``(1 - cos a, 0.5 - sin a)`` with
    ``a ~ U[0, pi]``, shifted by ``(-0.5, -0.25)``, times 2, plus N(0, noise^2)
    jitter. Each point picks its moon with probability 1/2.
    """
    n = _check_n(n)
    k_side, k_ang, k_noise = jax.random.split(key, 3)
    side = jax.random.bernoulli(k_side, 0.5, (n,))
    a = jax.random.uniform(k_ang, (n,), minval=0.0, maxval=math.pi)
    upper = jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
    lower = jnp.stack([1.0 - jnp.cos(a), 0.5 - jnp.sin(a)], axis=-1)
    x = jnp.where(side[:, None], upper, lower)
    x = 2.0 * (x - jnp.array([0.5, 0.25]))
    return (x + noise * jax.random.normal(k_noise, (n, 2))).astype(jnp.float32)


def checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Uniform on the 8 "black" unit cells of a 4x4 checkerboard covering [-2, 2]^2.

    A cell (i, j), i, j in {0..3}, is black when i + j is even; each black cell
    has probability 1/8 and the density is 1/8 inside it.
    """
    n = _check_n(n)
    k_cell, k_pos = jax.random.split(key)
    cell = jax.random.randint(k_cell, (n,), 0, 8)
    row = cell // 2
    col = 2 * (cell % 2) + (row % 2)  # i + j even
    corner = jnp.stack([col, row], axis=-1).astype(jnp.float32) - 2.0
    return (corner + jax.random.uniform(k_pos, (n, 2))).astype(jnp.float32)


def rings(key: jax.Array, n: int, noise: float = 0.05) -> jax.Array:
    """Four concentric circles of radii 0.5, 1, 1.5, 2 plus N(0, noise^2) jitter.

    A ring is chosen with probability proportional to its radius (uniform
    density along the total arc length), the angle uniformly.
    """
    n = _check_n(n)
    k_ring, k_ang, k_noise = jax.random.split(key, 3)
    radii = jnp.array([0.5, 1.0, 1.5, 2.0])
    ring = jax.random.categorical(k_ring, jnp.log(radii), shape=(n,))
    a = jax.random.uniform(k_ang, (n,), minval=0.0, maxval=2 * math.pi)
    x = radii[ring][:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
    return (x + noise * jax.random.normal(k_noise, (n, 2))).astype(jnp.float32)


def gmm_samples(key: jax.Array, n: int, mixture: gmm.GaussianMixture) -> jax.Array:
    """``[n, d]`` float32 exact samples of a ``GaussianMixture``."""
    n = _check_n(n)
    if not isinstance(mixture, gmm.GaussianMixture):
        raise TypeError(
            f"mixture: expected an inferax.models.gmm.GaussianMixture, got {type(mixture).__name__}"
        )
    return mixture.sample(key, n).astype(jnp.float32)


TOY_DATASETS: dict[str, ToySampler] = {
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "checkerboard": checkerboard,
    "rings": rings,
}


def toy_samples(name: str, key: jax.Array, n: int) -> jax.Array:
    """``[n, 2]`` float32 samples of the toy distribution registered as ``name``.

    Raises:
        ValueError: if ``name`` is not a key of ``TOY_DATASETS``.
    """
    if name not in TOY_DATASETS:
        raise ValueError(f"name: expected one of {sorted(TOY_DATASETS)}, got {name!r}")
    return TOY_DATASETS[name](key, n)


# ------------------------------------------------------------------- digits
NUM_DIGIT_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    return np.asarray(bunch.images, np.float64), np.asarray(bunch.target, np.int32)


def load_digits(
    split: str = "train", test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The sklearn 8x8 digits, scaled to [-1, 1], with a deterministic split.

    The 1797 images are permuted by ``np.random.default_rng(seed)``; the first
    ``round(1797 * test_fraction)`` form the test split, the rest the train
    split. The same ``(test_fraction, seed)`` always gives the same disjoint
    splits.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (unsplit, original order).
        test_fraction: fraction in (0, 1) held out for the test split.
        seed: seed of the permutation.

    Returns:
        ``(images [N, 8, 8, 1] float32 in [-1, 1], labels [N] int32)``.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    raw, labels = _raw_digits()
    images = (raw / 16.0 * 2.0 - 1.0).astype(np.float32)[..., None]
    if split == "all":
        return images, labels.copy()
    perm = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    return images[idx], labels[idx]


def digits_to_unit(images: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """Maps images from [-1, 1] back to [0, 1] (clipped) for plotting."""
    if isinstance(images, np.ndarray):
        return np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    return jnp.clip((images + 1.0) / 2.0, 0.0, 1.0)
