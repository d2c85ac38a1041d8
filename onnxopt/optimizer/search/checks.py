"""Config problems that do not depend on a trial, found against the base model before the study
is created: a ``by_name`` entry naming no node (or a node onnxopt does not quantize), a
``by_type`` entry matching no node. Each would otherwise make every trial fail, or search a
dimension that changes nothing, while the search exits 0.
"""

from __future__ import annotations

import onnx

from onnxopt.config.quantization import OP_TYPES
from onnxopt.config.search import SearchQuantization
from onnxopt.errors import ConfigError, did_you_mean
from onnxopt.optimizer.quantization.annotate import QUANTIZABLE


def check_quantization_entries(quant: SearchQuantization | None, model: onnx.ModelProto) -> None:
    """Check every ``by_name`` and ``by_type`` entry against the base model's nodes.

    Raises:
        ConfigError: Naming the entry, what the model holds and the closest node names.
    """
    if quant is None:
        return
    ops = {n.name: n.op_type for n in model.graph.node if n.name}
    quantizable = [name for name, op in ops.items() if op in QUANTIZABLE]
    for name in quant.by_name:
        where = f"search.quantization.by_name.{name}"
        if name not in ops:
            hint = did_you_mean(name, quantizable)
            raise ConfigError(f"{where}: no node {name!r} in the base model; {hint}")
        if ops[name] not in QUANTIZABLE:
            raise ConfigError(
                f"{where}: node {name!r} is a {ops[name]}; onnxopt quantizes "
                f"{', '.join(QUANTIZABLE)} nodes ({did_you_mean(name, quantizable)})"
            )
    present = set(ops.values())
    for key in quant.by_type:
        wanted = OP_TYPES[key]
        if not present & set(wanted):
            held = ", ".join(sorted(present & set(QUANTIZABLE))) or "none"
            raise ConfigError(
                f"search.quantization.by_type.{key}: the base model has no {'/'.join(wanted)} "
                f"node (its quantizable op types: {held}); remove the entry"
            )
