"""inferax: inference-time scaling of generative models in JAX.

The subpackages are ``inferax.models``, ``inferax.sampling``, ``inferax.search``
and ``inferax.experiments`` (folders at the repository root, mapped by
``pyproject.toml``); this file, the top-level package, only carries the version.
It imports nothing else, so ``import inferax`` stays cheap and
``from inferax.sampling import flow`` works as before.
"""

from importlib import metadata as _metadata

try:
    __version__: str = _metadata.version("inferax")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
