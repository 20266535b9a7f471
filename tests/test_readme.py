"""The README's code examples run as written, on a small untrained model."""

import pathlib
import re

import jax
import jax.numpy as jnp

from inferax.models import mlp

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2, "expected the sampler and the SMC examples"
    model = mlp.VelocityMLP(features=2, hidden=32, depth=2, num_classes=3)
    params = model.init(jax.random.key(0), jnp.zeros((2, 2)), jnp.zeros(2), jnp.zeros(2, int))
    namespace = {
        "model": model,
        "params": params,
        "labels": jnp.arange(1024) % 3,
        "null_label": mlp.null_label(3),
    }
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["x1"].shape == (1024, 2)
    # The plain-JAX example samples its exact Gaussian (1024 samples: SE of the mean ~0.016).
    x1_exact, mu, sigma = namespace["x1_exact"], namespace["mu"], namespace["sigma"]
    assert float(jnp.max(jnp.abs(x1_exact.mean(0) - mu))) < 0.06
    assert float(jnp.max(jnp.abs(x1_exact.std(0) - sigma))) < 0.04
    assert namespace["x"].shape == (4096, 2) and bool(jnp.all(jnp.isfinite(namespace["x"])))
    # The step-level search example: 8 particles per prompt, within their token budget.
    result, info = namespace["result"], namespace["info"]
    assert result.tokens.shape == (2, 8, 24) and int(info.generated_tokens) <= 2 * 8 * 24
    # Bring your own LM: a penzai model through the protocol, 4 particles per prompt.
    assert namespace["pz_result"].tokens.shape[:2] == (2, 4)
    assert namespace["report"].decode_error < 1e-4


def test_readme_methods_table_is_the_registry():
    """The README's table of search methods is ``core.methods_table()`` (regenerate it
    with the snippet in ``search.core.methods_table``'s docstring when a method changes)."""
    from inferax.search import core

    text = README.read_text()
    begin, end = "<!-- search-methods:begin -->\n", "<!-- search-methods:end -->"
    assert begin in text and end in text, "the README lost its methods-table markers"
    block = text[text.index(begin) + len(begin) : text.index(end)]
    assert block == core.methods_table(), "README methods table differs from the registries"
