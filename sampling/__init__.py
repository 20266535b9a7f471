"""inferax.sampling: schedules, ODE/SDE flow samplers, guidance, SMC and Feynman-Kac correctors."""

from inferax.sampling import distributed, flow, guidance, resampling, schedules, smc
from inferax.sampling.distributed import island_smc_run, particle_mesh, shard_particles, sharded_run
from inferax.sampling.flow import FlowInfo
from inferax.sampling.guidance import cfg
from inferax.sampling.smc import SMC, SMCInfo, SMCState

__all__ = [
    "SMC",
    "FlowInfo",
    "SMCInfo",
    "SMCState",
    "cfg",
    "distributed",
    "flow",
    "guidance",
    "island_smc_run",
    "particle_mesh",
    "resampling",
    "schedules",
    "shard_particles",
    "sharded_run",
    "smc",
]
