"""Rewrites one Gemm/MatMul/Conv node of an onnx_ir graph into QDQ form, in place.

Used by :class:`~onnxopt.optimizer.quantization.qdq_pass.QDQPass` on its private clone
of the model; nothing here touches a caller's model.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.errors import ConfigError, RewriteError
from onnxopt.graph import Namer, const_array, input_value
from onnxopt.optimizer.quantization.fixed_point import (
    frac_for_mse,
    frac_for_range,
    quantize_fixed,
)
from onnxopt.optimizer.quantization.graph_analysis import (
    is_nonneg,
    weight_channel_axis,
    weight_input,
)
from onnxopt.optimizer.quantization.integer_nodes import (
    DynamicInput,
    WeightCodes,
    dynamic_input,
    dynamic_matmul,
    quantized_gather,
)
from onnxopt.optimizer.quantization.labels import ResolvedNode
from onnxopt.optimizer.quantization.qdq_nodes import (
    ActivationQuant,
    activation_qdq,
    constant_dq,
)
from onnxopt.optimizer.quantization.spec import (
    ActivationMode,
    Container,
    FracFit,
    NodeQuantSpec,
    Role,
    Storage,
    TensorSpec,
    resolve_container,
)

_INT32_MAX = 2**31 - 1


def _channel_max_abs(array: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(i for i in range(array.ndim) if i != axis)
    return np.max(np.abs(array), axis=other) if other else np.abs(array)


def _through_identities(value: ir.Value) -> ir.Value:
    """``value`` with Identity and inference-mode Dropout producers looked through.

    onnxruntime removes both before it merges Q/DQ pairs, so a data_out behind them is as
    close to its reader as one fed directly.
    """
    while (producer := value.producer()) is not None and producer.inputs[0] is not None:
        if producer.op_type == "Identity" or (
            producer.op_type == "Dropout" and len(producer.inputs) < 3 and value.index() == 0
        ):
            value = producer.inputs[0]
        else:
            break
    return value


def constant_fracs(
    spec: TensorSpec, array: np.ndarray, axis: int, signed: bool, what: str
) -> int | np.ndarray:
    """The spec's fraction(s) for a constant: one int, or one per channel along ``axis``."""
    channels = array.shape[axis]
    if spec.frac is None and spec.fit is FracFit.MSE:
        return frac_for_mse(array, spec.width, signed, axis=axis if spec.per_channel else None)
    if not spec.per_channel:
        if spec.frac is None:
            return frac_for_range(float(np.max(np.abs(array), initial=0.0)), spec.width, signed)
        assert not isinstance(spec.frac, tuple)  # TensorSpec: a list of fractions is per channel
        return spec.frac
    if spec.frac is None:
        return frac_for_range(_channel_max_abs(array, axis), spec.width, signed)
    if isinstance(spec.frac, tuple) and len(spec.frac) not in (1, channels):
        raise ConfigError(f"{what}: {len(spec.frac)} fractions for {channels} output channels")
    return np.broadcast_to(np.asarray(spec.frac, dtype=np.int64), (channels,)).copy()


class NodeRewriter:
    """Quantizes nodes of one graph, sharing Q/DQ chains and names across nodes."""

    def __init__(self, graph: ir.Graph, storage: Storage, u8s8_exact: bool = True) -> None:
        self.graph = graph
        self.storage = storage
        self.u8s8_exact = u8s8_exact
        self.u8u8_nodes: list[str] = []  # signed weights stored as uint8 (zero point 128)
        self.names = Namer(graph)
        self.bit_widths: dict[str, int] = {}
        self.notes: list[str] = []
        self._chains: dict[tuple[ir.Value, ActivationQuant], ir.Value] = {}
        self._made: dict[ir.Value, ActivationQuant] = {}
        # data_out chains: DQ output -> (the float value it quantizes, its nodes, its node)
        self._outputs: dict[ir.Value, tuple[ir.Value, list[ir.Node], str]] = {}
        self._replaced: list[ir.Value] = []
        self._dynamic: dict[ir.Value, DynamicInput] = {}

    def rewrite(self, node: ir.Node, spec: NodeQuantSpec) -> ResolvedNode:
        """Quantize ``node`` per ``spec``: static Q/DQ, dynamic activations or weight-only."""
        if spec.activation is ActivationMode.DYNAMIC:
            return self._rewrite_dynamic(node, spec)
        if spec.activation is ActivationMode.WEIGHT_ONLY:
            return self._rewrite_gather(node, spec)
        return self._rewrite_static(node, spec)

    def _rewrite_static(self, node: ir.Node, spec: NodeQuantSpec) -> ResolvedNode:
        assert spec.data_in is not None  # NodeQuantSpec checks static specs
        data_in = self._quantize_input(node, spec.data_in)
        w_fracs, w_container = self._quantize_weight(node, spec.weight)
        has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
        if spec.bias is not None and has_bias:
            self._quantize_bias(node, spec.bias, data_in.frac + np.asarray(w_fracs))
        elif spec.bias is not None:
            self.notes.append(f"{node.name}: bias spec ignored, the node has no bias")
        data_out = self._quantize_output(node, spec.data_out) if spec.data_out else None
        return ResolvedNode(
            name=node.name or "",
            op_type=node.op_type,
            data_in=data_in,
            weight_width=spec.weight.width,
            weight_container=w_container,
            bias_width=spec.bias.width if spec.bias is not None and has_bias else None,
            float_bias=has_bias and spec.bias is None,
            data_out=data_out,
        )

    def _activation_quant(self, spec: TensorSpec, value: ir.Value) -> ActivationQuant:
        signed = spec.signed if spec.signed is not None else not is_nonneg(value)
        return ActivationQuant.from_spec(spec, signed)

    def _quantize_input(self, node: ir.Node, spec: TensorSpec) -> ActivationQuant:
        value = node.inputs[0]
        assert value is not None  # unsupported_reason() rejects nodes without data
        if (source := _through_identities(value)) in self._made:
            value = source
        aq = self._activation_quant(spec, value)
        upstream = self._made.get(value)
        if upstream == aq:  # already quantized this way upstream (data_out)
            return aq
        if value in self._outputs:
            # One quantization per reader: requantizing the upstream data_out would build
            # Q1->DQ1->Q2->DQ2, which onnxruntime's DoubleQDQPairsRemover (ORT_ENABLE_BASIC
            # and up) merges into one pair that is neither format. Read the float instead.
            value, _, producer = self._outputs[value]
            assert upstream is not None  # _quantize_output records every data_out in both maps
            self.notes.append(
                f"{node.name}: data_in ({aq.width}-bit, frac {aq.frac}) quantizes {producer}'s "
                f"output itself instead of requantizing its data_out ({upstream.width}-bit, "
                f"frac {upstream.frac}); give both the same format to share one Q/DQ"
            )
        chain = self._chains.get((value, aq))
        if chain is None:
            nodes, chain = activation_qdq(self.graph, self.names, value, aq, f"{node.name}_in")
            self.graph.insert_before(node, nodes)
            self._chains[(value, aq)] = chain
            self._made[chain] = aq
        node.replace_input_with(0, chain)
        return aq

    def _store_constant(
        self, node: ir.Node, index: int, ints: np.ndarray, container: Container, fracs, axis,
        signed: bool = True,
    ) -> str:  # fmt: skip
        prefix = f"{node.name}_{'weight' if index == 1 else 'bias'}"
        nodes, out, stored = constant_dq(
            self.graph, self.names, ints, container, fracs, axis, prefix, signed=signed
        )
        self.graph.insert_before(node, nodes)
        original = node.inputs[index]
        assert original is not None
        self._replaced.append(original)
        node.replace_input_with(index, out)
        return stored.name or ""

    def _quantize_weight(
        self, node: ir.Node, spec: TensorSpec
    ) -> tuple[int | np.ndarray, Container]:
        weight = const_array(node.inputs[1])
        assert weight is not None  # unsupported_reason() rejects non-constant weights
        signed = spec.signed if spec.signed is not None else True
        container = resolve_container(
            spec, Role.WEIGHT, signed, self.storage, u8s8_exact=self.u8s8_exact
        )
        axis = weight_channel_axis(node)
        fracs = constant_fracs(spec, weight, axis, signed, f"{node.name}.weight")
        ch_axis = axis if np.ndim(fracs) else None
        ints, _ = quantize_fixed(weight, spec.width, fracs, signed, axis=ch_axis)
        name = self._store_constant(node, 1, ints, container, fracs, ch_axis, signed)
        self.bit_widths[name] = spec.width
        if container.bits < 8:
            self.notes.append(
                f"{node.name}: weight packed as {container} on disk, cast to 8 bits at load"
            )
        elif signed and not container.signed:
            self.u8u8_nodes.append(node.name or "")
        return fracs, container

    def weight_codes(self, node: ir.Node, spec: TensorSpec) -> WeightCodes:
        """The node's constant weight (a Gather's table) quantized per ``spec``, laid out as
        the integer node reads it: ``[K, N]`` for Gemm/MatMul, ``[V, D]`` for a table."""
        index = weight_input(node)
        weight = const_array(node.inputs[index])
        assert weight is not None  # unsupported_reason() rejects non-constant weights
        signed = spec.signed if spec.signed is not None else True
        # a table lookup multiplies nothing: the u8s8 kernels' saturation does not apply
        exact = self.u8s8_exact or node.op_type == "Gather"
        container = resolve_container(spec, Role.WEIGHT, signed, self.storage, u8s8_exact=exact)
        axis = weight_channel_axis(node)
        fracs = constant_fracs(spec, weight, axis, signed, f"{node.name}.weight")
        ints, _ = quantize_fixed(weight, spec.width, fracs, signed,
                                 axis=axis if np.ndim(fracs) else None)  # fmt: skip
        trans_b = node.attributes.get_int("transB", 0)
        if node.op_type == "Gemm" and trans_b:
            ints = ints.T  # [N, K] -> [K, N]: the channels become MatMulInteger's columns
        self._replaced.append(input_value(node, index))
        if container.bits < 8:
            self.notes.append(
                f"{node.name}: weight packed as {container} on disk, cast to 8 bits at load"
            )
        return WeightCodes(ints, fracs, container, signed)

    def _replace_node(self, node: ir.Node, nodes: list[ir.Node], out: ir.Value) -> None:
        """Put ``nodes`` (computing ``out``) in place of ``node``; the first node whose name
        is the old node's takes it over."""
        self.graph.insert_before(node, nodes)
        old = node.outputs[0]
        out.shape = old.shape if out.shape is None else out.shape
        if old.is_graph_output():
            self._hand_over_output(old, out)
        ir.convenience.replace_all_uses_with(old, out)
        self.graph.remove(node, safe=True)

    def _dynamic_input(self, node: ir.Node) -> DynamicInput:
        value = node.inputs[0]
        assert value is not None  # unsupported_reason() rejects nodes without data
        if value not in self._dynamic:
            quant, self._dynamic[value] = dynamic_input(self.names, value, f"{node.name}_in")
            self.graph.insert_before(node, quant)
        return self._dynamic[value]

    def _rewrite_dynamic(self, node: ir.Node, spec: NodeQuantSpec) -> ResolvedNode:
        x = self._dynamic_input(node)
        weight = self.weight_codes(node, spec.weight)
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        name = node.name or ""
        node.name = self.names(f"{name}_float")
        nodes, out, stored = dynamic_matmul(self.graph, self.names, x, weight, bias, name)
        self._replace_node(node, nodes, out)
        self.bit_widths[stored.stored.name or ""] = spec.weight.width
        if weight.signed and not weight.container.signed:
            self.u8u8_nodes.append(name)
        return ResolvedNode(name, node.op_type, None, spec.weight.width, weight.container,
                            None, bias is not None, None, spec.activation)  # fmt: skip

    def _rewrite_gather(self, node: ir.Node, spec: NodeQuantSpec) -> ResolvedNode:
        table = self.weight_codes(node, spec.weight)
        name = node.name or ""
        node.name = self.names(f"{name}_float")
        ids = node.inputs[1]
        assert ids is not None
        nodes, out, stored = quantized_gather(self.graph, self.names, table, ids, name)
        self._replace_node(node, nodes, out)
        self.bit_widths[stored.stored.name or ""] = spec.weight.width
        return ResolvedNode(name, "Gather", None, spec.weight.width, table.container,
                            None, False, None, spec.activation)  # fmt: skip

    def _quantize_bias(self, node: ir.Node, spec: TensorSpec, acc_fracs: np.ndarray) -> None:
        bias = const_array(node.inputs[2])
        assert bias is not None  # unsupported_reason() rejects non-constant biases
        bias = bias.reshape(-1).astype(np.float64)
        signed = spec.signed if spec.signed is not None else True
        fracs = constant_fracs(spec, bias, 0, signed, f"{node.name}.bias")
        ints, _ = quantize_fixed(
            bias, spec.width, fracs, signed, axis=0 if np.ndim(fracs) else None
        )
        shift = acc_fracs - np.asarray(fracs)
        if np.any(shift < 0):
            self.notes.append(
                f"{node.name}: bias frac > f_in + f_w, bias rounded again to the accumulator grid"
            )
        acc = np.rint(np.ldexp(ints.astype(np.float64), shift))
        if np.any(np.abs(acc) > _INT32_MAX):
            raise RewriteError(f"{node.name}: bias overflows int32 at scale 2**-(f_in + f_w)")
        axis = 0 if np.ndim(acc_fracs) else None
        stored_fracs = acc_fracs if axis is not None else int(acc_fracs)
        name = self._store_constant(
            node, 2, acc.astype(np.int64), Container.INT32, stored_fracs, axis
        )
        self.bit_widths[name] = spec.width

    def _output_target(self, node: ir.Node) -> ir.Value:
        # Conv/Gemm -> Relu -> Q is the form onnxruntime fuses (the Relu folds into Q).
        out = node.outputs[0]
        consumers = out.consumers()
        if len(consumers) == 1 and consumers[0].op_type == "Relu" and not out.is_graph_output():
            self.notes.append(f"{node.name}: data_out quantized after its Relu")
            return consumers[0].outputs[0]
        return out

    def _quantize_output(self, node: ir.Node, spec: TensorSpec) -> ActivationQuant:
        target = self._output_target(node)
        aq = self._activation_quant(spec, target)
        uses = list(target.uses())
        nodes, chain = activation_qdq(self.graph, self.names, target, aq, f"{node.name}_out")
        producer = target.producer()
        assert producer is not None
        self.graph.insert_after(producer, nodes)
        for use in uses:
            use.node.replace_input_with(use.idx, chain)
        if target.is_graph_output():
            self._hand_over_output(target, chain)
        self._made[chain] = aq
        self._outputs[chain] = (target, nodes, node.name or "")
        return aq

    def _hand_over_output(self, old: ir.Value, new: ir.Value) -> None:
        name = old.name
        old.name = self.names(f"{name}_float")
        new.name = name
        outputs = self.graph.outputs
        for i, value in enumerate(outputs):
            if value is old:
                outputs[i] = new

    def remove_unread_outputs(self) -> None:
        """Drop data_out chains that every reader replaced with its own quantization."""
        for chain, (_, nodes, producer) in self._outputs.items():
            if chain.uses() or chain.is_graph_output():
                continue
            inputs = [v for n in nodes for v in n.inputs if v is not None]
            self.graph.remove(reversed(nodes), safe=True)
            for value in inputs:
                name = value.name
                if not value.uses() and name is not None and name in self.graph.initializers:
                    del self.graph.initializers[name]
            self.notes.append(f"{producer}: data_out dropped, every reader quantizes it itself")

    def remove_replaced_constants(self) -> None:
        """Drop float initializers and Constant nodes that no node uses any more."""
        for value in self._replaced:
            if value.uses() or value.is_graph_output():
                continue
            producer = value.producer()
            if producer is not None and producer.op_type == "Constant":
                self.graph.remove(producer)
            elif value.name is not None and value.name in self.graph.initializers:
                del self.graph.initializers[value.name]
