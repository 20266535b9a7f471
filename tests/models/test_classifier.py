"""DigitsClassifier: accuracy on held-out digits, features, caching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import classifier, data


@pytest.fixture(scope="module")
def trained():
    xtr, ytr = data.load_digits("train")
    params = classifier.train_classifier(jax.random.key(0), xtr, ytr, steps=300, batch_size=128)
    return params


def test_reaches_95_percent_on_the_test_split(trained):
    xte, yte = data.load_digits("test")
    acc = classifier.accuracy(trained, xte, yte)
    assert acc >= 0.95, acc
    # Negative control: shuffled labels are at chance level.
    perm = np.random.default_rng(0).permutation(len(yte))
    assert classifier.accuracy(trained, xte, yte[perm]) < 0.3


def test_features_and_logits_agree(trained):
    xte, _ = data.load_digits("test")
    x = jnp.asarray(xte[:16])
    model = classifier.DigitsClassifier()
    logits, feats = model.apply(trained, x, return_features=True)
    assert logits.shape == (16, 10) and feats.shape == (16, 64)
    np.testing.assert_allclose(classifier.features(trained, x), feats, atol=1e-5)
    head = trained["params"]["head"]
    np.testing.assert_allclose(feats @ head["kernel"] + head["bias"], logits, atol=1e-4)
    np.testing.assert_allclose(model.apply(trained, x), logits, atol=1e-5)


def test_workdir_caches_the_parameters_per_seed_and_data(tmp_path, monkeypatch):
    xtr, ytr = data.load_digits("train")
    kw = dict(steps=3, batch_size=8, workdir=tmp_path)
    a = classifier.train_classifier(jax.random.key(1), xtr[:64], ytr[:64], **kw)
    # A different seed or data split trains a new entry (the cache keys them).
    b = classifier.train_classifier(jax.random.key(2), xtr[:64], ytr[:64], **kw)
    c = classifier.train_classifier(jax.random.key(1), xtr[64:128], ytr[64:128], **kw)
    assert not np.array_equal(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0])
    assert not np.array_equal(jax.tree.leaves(a)[-1], jax.tree.leaves(c)[-1])
    assert len(list((tmp_path / "classifier").iterdir())) == 3

    # The same arguments restore without training (training would fail here).
    def no_training(*args, **kwargs):
        raise AssertionError("retrained instead of restoring")

    monkeypatch.setattr(classifier.optax, "adam", no_training)
    again = classifier.train_classifier(jax.random.key(1), xtr[:64], ytr[:64], **kw)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(u, v)


def test_bad_arguments():
    xtr, ytr = data.load_digits("test")
    with pytest.raises(ValueError, match=r"images: expected shape \[N, H, W, C\]"):
        classifier.train_classifier(jax.random.key(0), xtr[:, :, :, 0], ytr, steps=1)
    with pytest.raises(ValueError, match=r"labels: expected integer labels of shape \(359,\)"):
        classifier.train_classifier(jax.random.key(0), xtr, ytr[:5], steps=1)
    with pytest.raises(ValueError, match="steps"):
        classifier.train_classifier(jax.random.key(0), xtr, ytr, steps=0)
    with pytest.raises(ValueError, match="lr"):
        classifier.train_classifier(jax.random.key(0), xtr, ytr, steps=1, lr=0.0)
