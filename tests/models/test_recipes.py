
import numpy as np
import pytest
import torch

from onnxopt.data.registry import BUNDLED
from onnxopt.errors import ModelLoadError, UsageError
from onnxopt.models.recipes import RECIPES, default_data, get_recipe
from onnxopt.models.training import (
    input_shape_for,
    load_state_dict,
    load_weights,
    save_weights,
    train,
)

EXPECTED_PARAMS = {  # computed by hand from the layer sizes in the issue
    "digits-mlp": (64 * 64 + 64) + 2 * 64 + (64 * 32 + 32) + 2 * 32 + (32 * 10 + 10),
    "digits-wide": (64 * 1024 + 1024) + 2 * (1024 * 1024 + 1024) + (1024 * 10 + 10),
    "jsc-tiny": 2 * 16 + (16 * 5 + 5),
    "jsc-toy": 2 * 16 + (16 * 8 + 8) + 16 + (8 * 8 + 8) + 16 + (8 * 5 + 5) + 10,
    "jsc-three-linear-layers": 2 * 16 + (16 * 16 + 16) * 2 + (16 * 5 + 5),
    "jsc-s": 2 * 16
    + (16 * 64 + 64)
    + 128
    + (64 * 32 + 32)
    + 2 * (32 * 32 + 32)
    + (32 * 5 + 5)
    + 10,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_recipe_layer_sizes(name):
    features, classes = (64, 10) if name.startswith("digits") else (16, 5)
    module = RECIPES[name].build(features, classes).eval()
    assert sum(p.numel() for p in module.parameters()) == EXPECTED_PARAMS[name]
    assert module(torch.zeros(3, features)).shape == (3, classes)


def test_cnn_takes_images():
    module = RECIPES["digits-cnn"].build(64, 10).eval()
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3
    assert module(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_default_dataset_is_bundled_or_refused_with_how_to_pass_it(name):
    recipe = RECIPES[name]
    if recipe.default_dataset in BUNDLED:
        expected = {"classification": "digits", "regression": "diabetes",
                    "embedding": "token-corpus"}[recipe.task]  # fmt: skip
        assert default_data(recipe) == recipe.default_dataset == expected
        return
    assert name.startswith("jsc")
    with pytest.raises(UsageError) as info:
        default_data(recipe)
    assert f"recipe {name!r}" in str(info.value) and "pass --data" in str(info.value)


def test_weights_paths_may_be_strings_and_bad_files_say_what_was_expected(digits, tmp_path):
    trained = train("jsc-tiny", digits, epochs=1, seed=0, progress=False)
    save_weights(trained, tmp_path / "w.pt")
    assert load_weights(str(tmp_path / "w.pt")).recipe == "jsc-tiny"
    assert set(load_state_dict(str(tmp_path / "w.pt"))) == set(trained.module.state_dict())
    (tmp_path / "bad.pt").write_text("hello\n")
    with pytest.raises(ModelLoadError, match=r"not a torch weights file; expected a state dict"):
        load_weights(str(tmp_path / "bad.pt"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_weights(str(tmp_path / "missing.pt"))


def test_unknown_recipe_names_closest():
    with pytest.raises(UsageError, match="digits-mlp"):
        get_recipe("digit-mlp")


def test_training_is_deterministic_and_weights_round_trip(digits, tmp_path):
    a = train("jsc-tiny", digits, epochs=2, seed=3, progress=False)
    b = train("jsc-tiny", digits, epochs=2, seed=3, progress=False)
    for (ka, va), (kb, vb) in zip(
        a.module.state_dict().items(), b.module.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    path = tmp_path / "w.pt"
    save_weights(a, path)
    loaded = load_weights(path)
    assert loaded.recipe == "jsc-tiny" and loaded.input_shape == (64,)
    x = torch.from_numpy(digits.test.x[:16])
    with torch.no_grad():
        assert torch.equal(loaded.module(x), a.module(x))


@pytest.mark.parametrize(
    ("name", "minimum"), [("digits-mlp", 0.95), ("digits-cnn", 0.97), ("digits-wide", 0.96)]
)
def test_trained_recipes_reach_target_accuracy(digits, trained_recipe, name, minimum):
    trained = trained_recipe(name)
    shape = input_shape_for(get_recipe(name), digits)
    x = torch.from_numpy(digits.test.x.reshape(len(digits.test.x), *shape))
    with torch.no_grad():
        accuracy = float((trained.module(x).argmax(1).numpy() == digits.test.y).mean())
    assert accuracy >= minimum, f"{name}: test accuracy {accuracy:.4f} < {minimum}"
    assert np.isfinite(trained.val_score)


@pytest.mark.slow
def test_encoder_and_regressor_train_deterministically_and_export(tmp_path):
    import onnx
    import onnxruntime as ort

    from onnxopt.data.registry import load_dataset
    from onnxopt.exporters.torch_named import export_named

    corpus = load_dataset("token-corpus")
    runs = [train("sentence-encoder", corpus, epochs=1, seed=3, progress=False) for _ in "ab"]
    first, second = (dict(r.module.state_dict()) for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert runs[0].val_metric == "topic_accuracy" and runs[0].val_score > 0.5
    model = export_named(runs[0].module, runs[0].sample, tmp_path / "e.onnx", output_name="e")
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert inputs == {"input_ids": onnx.TensorProto.INT64, "attention_mask": onnx.TensorProto.INT64}
    ops = {n.op_type for n in model.graph.node}
    assert {"Gather", "MatMul", "Softmax", "LayerNormalization"} <= ops
    rows = {k: v[:5] for k, v in corpus.test.arrays().items()}
    got = ort.InferenceSession(str(tmp_path / "e.onnx")).run(None, rows)[0]
    with torch.no_grad():
        expected = runs[0].module(*(torch.from_numpy(v) for v in rows.values())).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert got.shape == (5, 64)
    regressor = train("diabetes-mlp", load_dataset("diabetes"), epochs=5, progress=False)
    assert regressor.val_metric == "mse" and 0 < regressor.val_score < 1.5
    with pytest.raises(UsageError, match="regression targets"):
        train("diabetes-mlp", corpus, epochs=1, progress=False)
