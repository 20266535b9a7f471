"""The dtype policy: samplers compute in the state's dtype (see ``flow``'s module docstring).

As Optax tests dtype preservation: for each dtype the output keeps it, and the
result is close to a float64 reference started from the same (rounded) state,
within a tolerance set by the dtype's precision.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import gmm
from inferax.sampling import flow, interpolants, schedules, sde

MIX = gmm.gaussian_mixture(
    [0.3, 0.7], [[1.5, -0.5], [-1.0, 1.0]], [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.5]]]
)
# Max abs error against float64 after 8 steps; measured: float32 ~4e-7, float16 ~6e-3,
# bfloat16 ~1.2e-2 (8 significand bits).
TOL = {jnp.float64: 1e-12, jnp.float32: 1e-5, jnp.float16: 2e-2, jnp.bfloat16: 5e-2}
DTYPES = list(TOL)
IDS = [jnp.dtype(d).name for d in DTYPES]


def _start(dtype):
    x0 = flow.noise(jax.random.key(0), 32, (2,), dtype=jnp.float64).astype(dtype)
    return x0, x0.astype(jnp.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_flow_sample_keeps_the_dtype_and_matches_float64(dtype, solver):
    with jax.enable_x64(True):
        x0, x0_64 = _start(dtype)
        ts = schedules.sway(8)
        assert ts.dtype == jnp.float64
        ref, _ = flow.sample(MIX.velocity, x0_64, ts, solver=solver)
        out, info = jax.jit(
            lambda x: flow.sample(MIX.velocity, x, ts, solver=solver, return_trajectory=True)
        )(x0)
        assert out.dtype == dtype and info.trajectory.dtype == dtype
        err = float(jnp.max(jnp.abs(out.astype(jnp.float64) - ref)))
        assert err < TOL[dtype], err
        one = flow.step(MIX.velocity, x0, 0.0, 0.5, solver=solver)
        assert one.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_sde_sample_keeps_the_dtype(dtype):
    with jax.enable_x64(True):
        x0, x0_64 = _start(dtype)
        ts = schedules.uniform(8) * 0.98
        # g = 0: the ODE, compared with float64.
        ref, _ = sde.sample(jax.random.key(1), MIX.velocity, x0_64, ts, g="zero")
        out, _ = sde.sample(jax.random.key(1), MIX.velocity, x0, ts, g="zero")
        assert out.dtype == dtype
        assert float(jnp.max(jnp.abs(out.astype(jnp.float64) - ref))) < TOL[dtype]
        # With noise, on the VP path too: dtype kept, values finite.
        vp = interpolants.vp()
        v = interpolants.convert_velocity(MIX.velocity, vp)
        out, _ = sde.sample(jax.random.key(1), v, x0, ts, g="square", interpolant=vp)
        assert out.dtype == dtype and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))


def test_defaults_follow_jax_enable_x64():
    with jax.enable_x64(False):
        assert flow.noise(jax.random.key(0), 2, (2,)).dtype == jnp.float32
        assert schedules.sway(4).dtype == jnp.float32
    with jax.enable_x64(True):
        x0 = flow.noise(jax.random.key(0), 2, (2,))
        assert x0.dtype == jnp.float64 and schedules.sway(4).dtype == jnp.float64
        assert schedules.epss(7).dtype == jnp.float64
        assert flow.noise(jax.random.key(0), 2, (2,), dtype=jnp.bfloat16).dtype == jnp.bfloat16
        # The README's case: float32 noise made before x64 was on, a float64 grid.
        x32 = x0.astype(jnp.float32)
        out, _ = flow.sample(MIX.velocity, x32, schedules.sway(16), solver="midpoint")
        assert out.dtype == jnp.float32
    with pytest.raises(TypeError, match="dtype"):
        flow.noise(jax.random.key(0), 2, (2,), dtype=jnp.int32)


def test_a_grid_the_state_dtype_cannot_resolve_is_rejected():
    x0 = jnp.zeros((2, 2), jnp.bfloat16)
    flow.sample(MIX.velocity, x0, schedules.uniform(256))  # steps of 2^-8: representable
    with pytest.raises(ValueError, match="strictly increasing grid \\(in bfloat16\\)"):
        flow.sample(MIX.velocity, x0, schedules.uniform(1000))
    out, _ = flow.sample(MIX.velocity, x0.astype(jnp.float32), schedules.uniform(1000))
    assert np.all(np.isfinite(np.asarray(out)))
