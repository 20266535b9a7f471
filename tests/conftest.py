"""Test configuration: the test process sees 4 CPU devices.

The flag must be set before JAX initialises its backends, so it is set at
import time of this file, which pytest loads before any test module.
"""

import os

# Compile cheaply: the suite's time is mostly XLA:CPU compilation, not running the
# compiled programs, and XLA:CPU's new fusion emitters make compilation several times
# slower (a 16-step flow sampler: 1.3 s -> 0.5 s without them) while the small test
# programs run about as fast. (LLVM at level 0 would halve it again but changes the
# rounding of sharded programs, and the suite checks 1 vs 4 devices bit for bit.)
# Experiments, benchmarks and users run with XLA's defaults.
FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4 " + FAST_COMPILE
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 4, f"conftest expected 4 CPU devices, got {len(devs)}"
    return devs
