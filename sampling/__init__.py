"""inferax.sampling: schedules, ODE/SDE flow samplers, guidance, SMC."""

from inferax.sampling import flow, guidance, schedules
from inferax.sampling.flow import FlowInfo
from inferax.sampling.guidance import cfg

__all__ = ["FlowInfo", "cfg", "flow", "guidance", "schedules"]
