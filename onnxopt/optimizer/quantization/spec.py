"""What to quantize: frozen, self-validating specs per tensor and per node, and containers.

Specs say *what* (width, fraction, signedness, granularity, storage type); the QDQ pass
decides *how*. Every invalid spec raises :class:`~onnxopt.errors.ConfigError` with a
one-line message at construction time.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

from onnxopt.errors import ConfigError, did_you_mean
from onnxopt.optimizer.quantization.fixed_point import FRAC_LIMIT, MAX_WIDTH, MIN_WIDTH


class Granularity(enum.StrEnum):
    """One fraction for the whole tensor, or one per output channel (weights only)."""

    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"


class Storage(enum.StrEnum):
    """How weights of 4 bits or fewer are stored.

    ``CONTAINER`` keeps them in an 8-bit container; ``PACKED`` stores INT4/INT2
    initializers (two/four per byte on disk) that the graph casts to 8 bits, so files are
    smaller while onnxruntime still fuses the 8-bit kernels (memory at run time is 8-bit).
    """

    CONTAINER = "container"
    PACKED = "packed"


class ActivationMode(enum.StrEnum):
    """How a node's activation input is quantized.

    ``STATIC``: a fixed-point Q/DQ with a calibrated (or given) fraction; ``DYNAMIC``: at run
    time from the tensor's own range (``DynamicQuantizeLinear`` -> ``MatMulInteger``, what
    onnxruntime's ``quantize_dynamic`` emits); ``WEIGHT_ONLY``: only the constant is quantized
    (a Gather table: the lookup reads integer codes, a DequantizeLinear follows).
    """

    STATIC = "static"
    DYNAMIC = "dynamic"
    WEIGHT_ONLY = "weight_only"


class FracFit(enum.StrEnum):
    """How an "auto" constant fraction is chosen: to cover the range, or for least error."""

    RANGE = "range"
    MSE = "mse"


class Role(enum.StrEnum):
    """Which input of a quantized node a tensor spec describes."""

    ACTIVATION = "activation"
    WEIGHT = "weight"
    BIAS = "bias"


class Container(enum.StrEnum):
    """The integer type that stores a quantized tensor."""

    INT2 = "int2"
    UINT2 = "uint2"
    INT4 = "int4"
    UINT4 = "uint4"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"

    @property
    def bits(self) -> int:
        """Bits per element."""
        return int(self.value.removeprefix("u").removeprefix("int"))

    @property
    def signed(self) -> bool:
        """Whether the container is two's complement."""
        return not self.value.startswith("u")

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy (or ml_dtypes) dtype of the container."""
        sub_byte = {"int2": ml_dtypes.int2, "uint2": ml_dtypes.uint2}
        sub_byte |= {"int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4}
        return np.dtype(sub_byte.get(self.value, self.value))

    @property
    def min_opset(self) -> int:
        """The lowest default-domain opset whose Q/DQ accept this container."""
        if self.bits == 2:
            return 25
        if self.bits in (4, 16):
            return 21
        return 13

    def zero_point(self, signed: bool) -> int:
        """Zero point storing ``signed`` values: mid-range for signed values in unsigned types."""
        return 2 ** (self.bits - 1) if signed and not self.signed else 0

    def holds(self, width: int, signed: bool) -> bool:
        """Whether a ``width``-bit value of that signedness fits (with ``zero_point``)."""
        return width <= self.bits - (1 if self.signed and not signed else 0)


def _coerce_enum(enum_type: type[enum.StrEnum], value: Any, what: str) -> Any:
    if isinstance(value, enum_type):
        return value
    valid = [member.value for member in enum_type]
    if isinstance(value, str) and value in valid:
        return enum_type(value)
    raise ConfigError(f"{what}: unknown value {value!r}; {did_you_mean(str(value), valid)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _coerce_frac(frac: Any) -> int | tuple[int, ...] | None:
    if frac is None:
        return None
    if _is_int(frac):
        fracs: tuple[int, ...] = (int(frac),)
    elif isinstance(frac, Sequence | np.ndarray) and len(frac) > 0 and all(map(_is_int, frac)):
        fracs = tuple(int(f) for f in frac)
    else:
        raise ConfigError(f"frac must be an integer or a non-empty list of integers, got {frac!r}")
    bad = [f for f in fracs if abs(f) > FRAC_LIMIT]
    if bad:
        raise ConfigError(f"frac {bad[0]} is outside [-{FRAC_LIMIT}, {FRAC_LIMIT}]")
    return fracs[0] if _is_int(frac) else fracs


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """How one tensor is quantized.

    Attributes:
        width: Total bits, 2..16 (sign included for signed values).
        frac: Fraction bits (scale ``2**-frac``); a tuple gives one per output channel
            (``per_channel`` weights only); ``None`` means "auto" from the tensor's own
            values (weights and biases only; activations need calibration first).
        signed: Signedness; ``None`` lets the pass decide (activations: unsigned when the
            producer is a Relu or the value is known non-negative; weights/bias: signed).
        granularity: ``per_tensor`` or ``per_channel`` (weights and bias only).
        container: The storage type; ``None`` lets :func:`choose_container` decide.
        fit: How an "auto" (``None``) fraction of a constant is chosen (:class:`FracFit`).
    """

    width: int
    frac: int | tuple[int, ...] | None = None
    signed: bool | None = None
    granularity: Granularity = Granularity.PER_TENSOR
    container: Container | None = None
    fit: FracFit = FracFit.RANGE

    def __post_init__(self) -> None:
        if not _is_int(self.width) or not MIN_WIDTH <= self.width <= MAX_WIDTH:
            raise ConfigError(
                f"width must be an integer in {MIN_WIDTH}..{MAX_WIDTH}, got {self.width!r}"
            )
        if self.signed is not None and not isinstance(self.signed, bool):
            raise ConfigError(f"signed must be true, false or unset, got {self.signed!r}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "frac", _coerce_frac(self.frac))
        object.__setattr__(self, "fit", _coerce_enum(FracFit, self.fit, "fit"))
        if self.fit is FracFit.MSE and self.frac is not None:
            raise ConfigError("fit 'mse' chooses the fraction: leave frac unset")
        gran = _coerce_enum(Granularity, self.granularity, "granularity")
        object.__setattr__(self, "granularity", gran)
        if self.container is not None:
            object.__setattr__(
                self, "container", _coerce_enum(Container, self.container, "container")
            )
        if isinstance(self.frac, tuple) and gran is not Granularity.PER_CHANNEL:
            raise ConfigError("a list of fractions needs granularity 'per_channel'")
        if self.container is not None and self.signed is not None:
            _check_fits(self.container, self.width, self.signed)

    @property
    def per_channel(self) -> bool:
        """Whether the spec has one fraction per output channel."""
        return self.granularity is Granularity.PER_CHANNEL


def _check_fits(container: Container, width: int, signed: bool) -> None:
    if not container.holds(width, signed):
        kind = "signed" if signed else "unsigned"
        raise ConfigError(f"container {container} cannot hold a {width}-bit {kind} value")


def _check_activation(spec: TensorSpec, what: str) -> None:
    if spec.per_channel:
        raise ConfigError(f"{what}: activations are quantized per tensor only")
    if spec.frac is None:
        raise ConfigError(f"{what}: activation frac must be set (calibrate before quantizing)")
    if spec.fit is not FracFit.RANGE:
        raise ConfigError(f"{what}: fit 'mse' applies to constants (weights) only")
    if spec.container is not None and spec.container.bits not in (8, 16):
        raise ConfigError(
            f"{what}: activation container must be 8 or 16 bits, got {spec.container}"
        )


@dataclasses.dataclass(frozen=True)
class NodeQuantSpec:
    """Specs for one Gemm/MatMul/Conv (or Gather) node.

    Attributes:
        weight: The constant weight (input 1; a Gather's table, input 0).
        bias: The bias (Gemm input C / Conv input B); ``None`` keeps a float bias (which
            stops onnxruntime from fusing a static node) or means the node has none.
        data_in: The activation input (input 0); ``None`` unless ``activation`` is static.
        data_out: The node output; when the output feeds only a Relu, the Relu output is
            quantized instead (the form onnxruntime fuses). Static nodes only.
        activation: Static, dynamic or weight-only (:class:`ActivationMode`).
    """

    weight: TensorSpec
    bias: TensorSpec | None
    data_in: TensorSpec | None
    data_out: TensorSpec | None = None
    activation: ActivationMode = ActivationMode.STATIC

    def __post_init__(self) -> None:
        for name in ("weight", "bias", "data_in", "data_out"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, TensorSpec):
                raise ConfigError(f"{name} must be a TensorSpec, got {type(value).__name__}")
        mode = _coerce_enum(ActivationMode, self.activation, "activation")
        object.__setattr__(self, "activation", mode)
        if mode is ActivationMode.STATIC:
            self._check_static()
        else:
            self._check_weight_only(mode)
        if self.weight.container is Container.INT32:
            raise ConfigError("weight: container int32 is reserved for biases")
        if self.bias is not None and self.bias.container not in (None, Container.INT32):
            raise ConfigError(
                f"bias: biases are stored as int32, got container {self.bias.container}"
            )

    def _check_static(self) -> None:
        if self.data_in is None:
            raise ConfigError("data_in: a static node needs an activation spec")
        _check_activation(self.data_in, "data_in")
        if self.data_out is not None:
            _check_activation(self.data_out, "data_out")
            if self.data_out.container is Container.INT8:
                # Measured on onnxruntime 1.32: Conv->Relu->Q(int8)->MaxPool fails at
                # session creation, and narrow int8 outputs (with Clip) never fuse.
                raise ConfigError(
                    "data_out: int8 containers break onnxruntime's QDQ fusion; use uint8 "
                    "(signed values get zero point 128)"
                )

    def _check_weight_only(self, mode: ActivationMode) -> None:
        given = [n for n in ("data_in", "data_out", "bias") if getattr(self, n) is not None]
        if given:
            raise ConfigError(
                f"{given[0]}: a {mode} node quantizes its weight only (its activations are "
                "quantized at run time or not at all, its bias stays float)"
            )
        if mode is ActivationMode.DYNAMIC and self.weight.width > 8:
            raise ConfigError(
                f"weight: dynamic activations run MatMulInteger, which takes weights of at most "
                f"8 bits, got {self.weight.width}; use activation = \"static\" for wider weights"
            )


def choose_container(
    role: Role, width: int, signed: bool, storage: Storage, *, u8s8_exact: bool = True
) -> Container:
    """The default container for a tensor.

    Activations use uint8 up to 8 bits (zero point 128 for signed values, which is what
    onnxruntime's x86 integer kernels fuse), else int16/uint16. Weights use int8/uint8
    up to 8 bits (INT4/INT2 when ``storage`` is packed and the width allows), else
    int16/uint16. Biases are int32 at the accumulator scale.

    Signed 8-bit weights go into uint8 (zero point 128) when ``u8s8_exact`` is false: the
    target CPU's u8 x s8 kernels saturate on full-range int8 weights, its u8 x u8 kernels do
    not (:mod:`onnxopt.runtime.cpu`). Narrower weights (|code| <= 64) are exact in int8.

    Args:
        role: Which kind of tensor.
        width: Its width in bits.
        signed: Its signedness.
        storage: Container or packed storage for narrow weights.
        u8s8_exact: Whether the target CPU multiplies uint8 by full-range int8 exactly.

    Returns:
        The container type.
    """
    prefix = "int" if signed else "uint"
    if role is Role.BIAS:
        return Container.INT32
    if role is Role.ACTIVATION:
        return Container.UINT8 if width <= 8 else Container(f"{prefix}16")
    if storage is Storage.PACKED and width <= 4:
        return Container(f"{prefix}{2 if width <= 2 else 4}")
    if width == 8 and signed and not u8s8_exact:
        return Container.UINT8
    return Container(f"{prefix}{8 if width <= 8 else 16}")


def resolve_container(
    spec: TensorSpec, role: Role, signed: bool, storage: Storage, *, u8s8_exact: bool = True
) -> Container:
    """The spec's container, or the default one; ConfigError when it cannot hold the value.

    Signed values in an unsigned container are stored around the mid-range zero point
    (:meth:`Container.zero_point`).
    """
    container = spec.container or choose_container(
        role, spec.width, signed, storage, u8s8_exact=u8s8_exact
    )
    _check_fits(container, spec.width, signed)
    return container
