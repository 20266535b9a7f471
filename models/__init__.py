"""inferax.models: Flax modules, losses, training, data and analytic oracles."""

from inferax.models import gmm
from inferax.models.gmm import GaussianMixture, eight_gaussians, gaussian_mixture, random_mixture

__all__ = ["GaussianMixture", "eight_gaussians", "gaussian_mixture", "gmm", "random_mixture"]
