"""ml_collections configs for the experiment binaries, shipped with the package.

Each module ``<name>.py`` here defines ``get_config(variant)``. A config is
named ``NAME`` or ``NAME:VARIANT`` from anywhere (``--config=sway:quick``);
``path(name)`` is the file that ``ml_collections.config_flags`` loads, and
``load("sway:quick")`` returns the ``ConfigDict`` directly (for notebooks).
"""

from __future__ import annotations

import importlib
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The configs shipped with the package (e.g. ``["fkc", "sway"]``)."""
    return sorted(f[:-3] for f in os.listdir(_HERE) if f.endswith(".py") and not f.startswith("_"))


def path(name: str) -> str:
    """The file of config ``name``.

    Raises:
        ValueError: if no config of that name ships with the package.
    """
    if name not in names():
        raise ValueError(
            f"config: expected one of {names()} (optionally NAME:VARIANT), got {name!r}"
        )
    return os.path.join(_HERE, f"{name}.py")


def load(spec: str):
    """The ``ConfigDict`` of ``"NAME"`` or ``"NAME:VARIANT"`` (``get_config(VARIANT)``)."""
    name, _, variant = spec.partition(":")
    path(name)  # checks the name
    module = importlib.import_module(f"{__name__}.{name}")
    return module.get_config(variant) if variant else module.get_config()
