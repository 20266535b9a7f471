"""inferax.models: Flax modules, losses, training, data and analytic oracles.

``train`` is the training submodule (``train.train``, ``train.train_or_restore``,
keyed by ``cache.cache_record``); ``checkpoint`` holds the verified
``Checkpointer`` and the ``DirectoryLock`` of a run;
the 2-D data samplers live in ``data`` (``data.eight_gaussians``) and the exact
mixture oracles in ``gmm`` (``gmm.eight_gaussians``).
"""

from inferax.models import (
    arithmetic,
    cache,
    checkpoint,
    classifier,
    convnet,
    data,
    ebt,
    ebt_train,
    flow_matching,
    gmm,
    infill,
    lm_train,
    mlp,
    prm,
    train,
    transformer,
)
from inferax.models.checkpoint import (
    Checkpointer,
    CorruptCheckpointError,
    DirectoryLock,
    DirectoryLockedError,
    NonFiniteError,
)
from inferax.models.classifier import DigitsClassifier, accuracy, train_classifier
from inferax.models.convnet import ConvVelocity
from inferax.models.data import TOY_DATASETS, digits_to_unit, gmm_samples, load_digits, toy_samples
from inferax.models.ebt import DigitsEBT, DigitsFF, TokenEBT, TokenFF
from inferax.models.ebt_train import EBTTraining
from inferax.models.flow_matching import (
    TrainState,
    flow_matching_loss,
    init_train_state,
    make_train_step,
)
from inferax.models.gmm import GaussianMixture, eight_gaussians, gaussian_mixture, random_mixture
from inferax.models.mlp import VelocityMLP, null_label, sinusoidal_embedding
from inferax.models.train import make_optimizer, train_or_restore
from inferax.models.transformer import LMFunctions, Transformer, lm_functions

__all__ = [
    "DigitsEBT",
    "DigitsFF",
    "EBTTraining",
    "TokenEBT",
    "TokenFF",
    "ebt",
    "ebt_train",
    "TOY_DATASETS",
    "Checkpointer",
    "ConvVelocity",
    "CorruptCheckpointError",
    "DirectoryLock",
    "DirectoryLockedError",
    "DigitsClassifier",
    "GaussianMixture",
    "NonFiniteError",
    "TrainState",
    "VelocityMLP",
    "accuracy",
    "cache",
    "checkpoint",
    "classifier",
    "convnet",
    "data",
    "digits_to_unit",
    "eight_gaussians",
    "flow_matching",
    "flow_matching_loss",
    "gaussian_mixture",
    "gmm",
    "gmm_samples",
    "infill",
    "init_train_state",
    "load_digits",
    "make_optimizer",
    "make_train_step",
    "mlp",
    "null_label",
    "random_mixture",
    "sinusoidal_embedding",
    "toy_samples",
    "train",
    "train_classifier",
    "train_or_restore",
    "LMFunctions",
    "Transformer",
    "arithmetic",
    "lm_functions",
    "lm_train",
    "prm",
    "transformer",
]
