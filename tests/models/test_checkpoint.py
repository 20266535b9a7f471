"""The orbax Checkpointer wrapper."""

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inferax.models.checkpoint import Checkpointer, abstract_tree
from inferax.models.flow_matching import init_train_state


class Pair(NamedTuple):
    a: jax.Array
    b: dict


def make_tree(seed=0):
    k = jax.random.key(seed)
    return Pair(
        a=jax.random.normal(k, (3, 4)),
        b={"i": jnp.arange(5, dtype=jnp.int32) + seed, "h": jnp.ones((2,), jnp.bfloat16) * seed},
    )


def assert_tree_equal(x, y):
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def test_round_trip_against_abstract_target(tmp_path):
    tree = make_tree(1)
    with Checkpointer(tmp_path / "ck") as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(7, tree)
        ckpt.wait()
        target = jax.eval_shape(lambda: make_tree(0))
        assert isinstance(jax.tree.leaves(target)[0], jax.ShapeDtypeStruct)
        restored = ckpt.restore(7, target)
    assert isinstance(restored, Pair)
    assert_tree_equal(restored, tree)


def test_train_state_round_trip(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = init_train_state(params, opt, ema_decay=0.99)
    state = state._replace(step=jnp.int32(12))
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(12, state)
    # A fresh Checkpointer (a new process, in effect) finds and restores it.
    with Checkpointer(str(tmp_path)) as ckpt:
        assert ckpt.latest_step() == 12
        restored = ckpt.restore(12, init_train_state(params, opt, ema_decay=0.99))
    assert_tree_equal(restored, state)
    without_ema = init_train_state(params, opt)
    assert without_ema.ema_params is None
    with Checkpointer(str(tmp_path / "noema")) as ckpt:
        ckpt.save(1, without_ema)
        assert_tree_equal(ckpt.restore(1, without_ema), without_ema)


def test_max_to_keep_and_interval(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=5) as ckpt:
        assert ckpt.save(0, make_tree(0))
        assert not ckpt.save(3, make_tree(3))  # not a multiple of 5
        assert ckpt.save(3, make_tree(3), force=True)
        assert ckpt.save(5, make_tree(5))
        assert ckpt.save(10, make_tree(10))
        ckpt.wait()
        assert ckpt.all_steps() == [5, 10]
        assert ckpt.latest_step() == 10
        assert_tree_equal(ckpt.restore(5, make_tree()), make_tree(5))
        with pytest.raises(ValueError, match=r"step: expected one of the saved steps \[5, 10\]"):
            ckpt.restore(0, make_tree())
    assert sorted(os.listdir(tmp_path)) == ["10", "5"]


def test_relative_directory_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer("rel/ck") as ckpt:
        assert os.path.isabs(ckpt.directory)
        ckpt.save(1, make_tree())
    assert os.path.isdir(tmp_path / "rel" / "ck" / "1")


def test_abstract_tree():
    tree = make_tree()
    abstract = abstract_tree(tree)
    assert jax.tree.structure(abstract) == jax.tree.structure(tree)
    leaf = abstract.b["h"]
    assert isinstance(leaf, jax.ShapeDtypeStruct) and leaf.dtype == jnp.bfloat16
    assert abstract_tree(abstract) == abstract


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep: expected a positive int, got 0"):
        Checkpointer(tmp_path, max_to_keep=0)
    with pytest.raises(ValueError, match="save_interval_steps"):
        Checkpointer(tmp_path, save_interval_steps=-1)
    with pytest.raises(TypeError, match="directory"):
        Checkpointer(None)
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(ValueError, match="step: expected a non-negative int, got -1"):
        ckpt.save(-1, make_tree())
    with pytest.raises(ValueError, match="step: expected a non-negative int"):
        ckpt.save(1.5, make_tree())
    ckpt.close()
    ckpt.close()  # idempotent
    with pytest.raises(ValueError, match="is closed"):
        ckpt.save(1, make_tree())
