"""FineTuning: the one settings value both Keras pruners hold, checked where it is made (Python, CLI, recipe), and a
pass holding it caches like any other (an identical re-run hits; other settings or other data miss)."""
from __future__ import annotations

import numpy as np
import pytest

from mdeploy.passes.core.errors import BadInput


@pytest.fixture(scope="module")
def digits_source(digits_model):
    from mdeploy.passes.backends import open_artifact

    return open_artifact(digits_model)


@pytest.mark.parametrize("kwargs, words", [
    ({"epochs": 0}, "--epochs"),
    ({"epochs": 2.5}, "--epochs"),
    ({"batch_size": 0}, "--batch-size"),
    ({"learning_rate": 0.0}, "--learning-rate"),
    ({"learning_rate": float("nan")}, "--learning-rate"),
    ({"loss": " "}, "--loss"),
])
def test_bad_values_are_refused_where_the_value_is_made(kwargs, words):
    from mdeploy.passes.prune import FineTuning, fine_tuning_from

    with pytest.raises(BadInput, match=words):
        FineTuning("train.npz", **kwargs)
    with pytest.raises(BadInput, match=words):  # the same check when there is no data to tune on
        fine_tuning_from(None, **kwargs)
    with pytest.raises(BadInput, match="--fine-tune DATA"):
        FineTuning("")


def test_options_without_data():
    from mdeploy.passes.prune import FineTuning, fine_tuning_from

    assert fine_tuning_from(None, epochs=None, learning_rate=None) is None
    assert fine_tuning_from(None, epochs=3) is None  # a recipe may keep epochs beside a commented-out fine_tune
    with pytest.raises(BadInput, match="--epochs, --learning-rate tune fine-tuning, which needs --fine-tune") as e:
        fine_tuning_from(None, require_data=True, epochs=3, learning_rate=1e-4)
    assert "--fine-tune" in e.value.hint
    assert fine_tuning_from("t.npz", epochs=None, batch_size=16, seed=4) == FineTuning("t.npz", batch_size=16, seed=4)


def test_cli_refuses_tuning_flags_without_fine_tune(mdeploy, tmp_path, digits_model):
    r = mdeploy("prune", digits_model, "--sparsity", "0.5", "--epochs", "3", "-o", tmp_path)
    assert r.exit_code == 2 and "--epochs tune fine-tuning" in r.stderr
    r = mdeploy("prune", digits_model, "--structured", "--ratio", "0.3", "--fine-tune", "x.npz", "--epochs", "0",
                "-o", tmp_path)
    assert r.exit_code == 2 and "--epochs (recipe: prune.epochs) must be a whole number >= 1" in r.stderr
    assert not (tmp_path / "keras").exists()


def test_recipe_maps_to_one_value(tmp_path):
    from mdeploy.passes.prune import FineTuning
    from mdeploy.passes.workflows.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[prune]\nsparsity = 0.5\nfine_tune = "train.npz"\nepochs = 4\nlearning_rate = 1e-4\n'
                      'loss = "sparse_categorical_crossentropy"\n')
    tuning = load_recipe(recipe).prune.fine_tuning()
    assert tuning == FineTuning(str(tmp_path / "train.npz"), epochs=4, learning_rate=1e-4,
                                loss="sparse_categorical_crossentropy")
    with pytest.raises(BadInput, match="prune.epochs"):
        load_recipe(None, {"prune.epochs": 0})  # refused even without fine_tune


def test_cache_hits_on_an_identical_rerun_and_misses_on_other_settings(tmp_path, digits_source, digits_train_npz):
    from mdeploy.passes.core.pipeline import Context, cache_key, content_hash, run_pass
    from mdeploy.passes.prune import FineTuning, PruneKeras
    from mdeploy.passes.prune.structured import PruneStructured

    ctx = Context(out_dir=tmp_path / "out", cache_dir=tmp_path / "out" / ".cache")
    p = PruneStructured(flops_target=0.5, fine_tuning=FineTuning(str(digits_train_npz), epochs=1))
    steps: list = []
    first = run_pass(p, digits_source, ctx, steps)
    again = PruneStructured(flops_target=0.5, fine_tuning=FineTuning(str(digits_train_npz), epochs=1))  # a new value
    second = run_pass(again, digits_source, ctx, steps)
    assert [s.cached for s in steps] == [False, True]
    assert content_hash(second.path) == content_hash(first.path)
    assert second.meta["structured"]["fine_tune"]["epochs"] == 1
    assert steps[1].params["fine_tuning"]["epochs"] == 1  # the step record shows the nested value

    source_hash = content_hash(digits_source.path)
    key = cache_key(source_hash, p)
    for other in (PruneStructured(flops_target=0.5, fine_tuning=FineTuning(str(digits_train_npz), epochs=2)),
                  PruneStructured(flops_target=0.5, fine_tuning=FineTuning(str(digits_train_npz), epochs=1, seed=1)),
                  PruneStructured(flops_target=0.5)):
        assert cache_key(source_hash, other) != key

    # new data at the same path is a miss: the data file inside the nested value is hashed too
    data = tmp_path / "train.npz"
    np.savez(data, image=np.zeros((4, 8, 8, 1), np.float32), labels=np.zeros(4, np.int64))
    magnitude = PruneKeras(sparsity=0.5, fine_tuning=FineTuning(str(data)))
    before = cache_key(source_hash, magnitude)
    assert cache_key(source_hash, PruneKeras(sparsity=0.5, fine_tuning=FineTuning(str(data)))) == before
    np.savez(data, image=np.ones((4, 8, 8, 1), np.float32), labels=np.zeros(4, np.int64))
    assert cache_key(source_hash, magnitude) != before
