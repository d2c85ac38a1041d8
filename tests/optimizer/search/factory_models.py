"""A torch factory for the search tests (``model.factory = "tests...:digits_mlp"``)."""

from onnxopt.models.recipes import digits_mlp as _digits_mlp


def digits_mlp():
    return _digits_mlp(64, 10)
