"""inferax.sampling: schedules, ODE/SDE flow samplers, guidance, SMC, Feynman-Kac correctors
and energy minimisation.

Example:
    The examples of this package's functions start from this setup: a Gaussian
    target in 2-D (``inferax.models.gmm``, whose velocity on the linear
    interpolant is exact and cheap to compile), a key and 64 noise samples.

    >>> import jax, jax.numpy as jnp
    >>> from inferax.models import gmm
    >>> target = gmm.gaussian_mixture(jnp.array([1.0]), jnp.array([[1.0, -1.0]]), scale=0.5)
    >>> key = jax.random.key(0)
    >>> x0 = jax.random.normal(key, (64, 2))
"""

from inferax.sampling import (
    cost,
    distributed,
    energy,
    feynman_kac,
    flow,
    guidance,
    interpolants,
    mala,
    multiprocess,
    particles,
    resampling,
    schedule_tuning,
    schedules,
    sde,
    smc,
)
from inferax.sampling.cost import Costed, with_cost
from inferax.sampling.distributed import island_smc_run, particle_mesh, shard_particles, sharded_run
from inferax.sampling.energy import EnergyInfo, VerifyInfo
from inferax.sampling.feynman_kac import (
    TRANSPORTS,
    FKInfo,
    FKTransition,
    geometric_transition,
    transport_rate,
)
from inferax.sampling.flow import SOLVERS, FlowInfo, Solver
from inferax.sampling.guidance import cfg
from inferax.sampling.interpolants import (
    Interpolant,
    convert_velocity,
    linear,
    posterior_mean_from_velocity,
    renoise,
    score_from_velocity,
    time_to_linear,
    velocity_from_score,
    vp,
)
from inferax.sampling.mala import MALAInfo, MALAState
from inferax.sampling.particles import ParticleAxes
from inferax.sampling.schedule_tuning import TuneResult
from inferax.sampling.sde import EULER_MARUYAMA, G_SCHEDULES, SDE_SOLVERS, SDEInfo, SDESolver
from inferax.sampling.smc import SMC, SMCInfo, SMCState

__all__ = [
    "EULER_MARUYAMA",
    "MALAInfo",
    "MALAState",
    "SDE_SOLVERS",
    "SDESolver",
    "mala",
    "EnergyInfo",
    "VerifyInfo",
    "energy",
    "Costed",
    "ParticleAxes",
    "cost",
    "particles",
    "with_cost",
    "TRANSPORTS",
    "transport_rate",
    "FKInfo",
    "FKTransition",
    "G_SCHEDULES",
    "Interpolant",
    "SDEInfo",
    "convert_velocity",
    "feynman_kac",
    "geometric_transition",
    "interpolants",
    "multiprocess",
    "linear",
    "posterior_mean_from_velocity",
    "score_from_velocity",
    "sde",
    "time_to_linear",
    "velocity_from_score",
    "vp",
    "SMC",
    "FlowInfo",
    "SOLVERS",
    "Solver",
    "renoise",
    "SMCInfo",
    "SMCState",
    "cfg",
    "distributed",
    "flow",
    "guidance",
    "island_smc_run",
    "particle_mesh",
    "resampling",
    "schedule_tuning",
    "schedules",
    "TuneResult",
    "shard_particles",
    "sharded_run",
    "smc",
]
