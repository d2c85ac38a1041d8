"""The evaluator against torch on trained, exported digits recipes (flat features -> images)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxopt.optimizer.evaluate import evaluate_model


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["digits-mlp", "digits-cnn"])
def test_accuracy_and_loss_agree_with_torch(recipe, digits, trained_recipe, exported_recipe):
    import torch  # the reference only; the evaluator itself never imports torch

    trained = trained_recipe(recipe)
    report = evaluate_model(
        exported_recipe(recipe), digits.test, num_classes=10, measure_latency=False
    )
    x = torch.from_numpy(digits.test.x).reshape(len(digits.test), *trained.input_shape)
    with torch.no_grad():
        logits = trained.module(x)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(digits.test.y)).item()
    predictions = logits.argmax(dim=1).numpy()
    np.testing.assert_array_equal(report.predictions, predictions)
    assert report.accuracy == pytest.approx(float((predictions == digits.test.y).mean()))
    assert report.loss == pytest.approx(loss, rel=1e-4)
    assert report.average_bitwidth == 32.0 and report.parameters > 0
