"""Test configuration: the test process sees 4 CPU devices.

The flag must be set before JAX initialises its backends, so it is set at
import time of this file, which pytest loads before any test module.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 4, f"conftest expected 4 CPU devices, got {len(devs)}"
    return devs
