"""Width scaling: change the number of channels of Gemm, MatMul and Conv layers consistently.

How it works
------------
1. **Channel groups** (:func:`analyze_channels`). A producer's output channels, the
   channel-wise ops they flow through (bias Add, BatchNormalization, activations, Q/DQ,
   pooling, depthwise Conv, unit-dimension Reshape/Flatten) and every consumer's input
   channels form one group, scaled as one; a residual Add joins groups. Groups that cannot
   be scaled consistently (graph inputs and outputs, Reshape/Flatten mixing channels with
   space, Concat joining several tensors' channels into one axis, Softmax/LogSoftmax/Hardmax
   over the channel axis (before opset 13: over every axis from ``axis`` on), grouped Conv,
   quantized weights, unknown ops) are frozen with the reason. Naming a Gemm/MatMul/Conv that
   cannot be scaled gives the analysis' reason (weights produced by another node, depthwise
   Conv, ...). Widths cannot fall out of step: a multiplier applies to a group, never to one
   layer, and every scaled model is checked (``onnx.checker`` full check with strict shape
   inference, about 0.4 ms at 0.5x and 3 ms unscaled on digits-wide) before it is returned.
2. **Config** (:class:`WidthConfig`) in the lab's vocabulary: per node name a
   ``channel_multiplier`` (one value, or a list of choices for the search) and a mode
   ``output_only`` / ``both`` / ``input_only``. The new width of a group of C channels is
   ``round(C * m)`` (halves up); m must lie in [1/64, 16] and give at least one channel.
3. **Shrinking** (m < 1) keeps the most important channels (:class:`Importance`: activation
   RMS times outgoing weight norm on calibration data by default, or a data-free path weight
   norm) and refits every consumer of a shrunk group by ridge least squares, layer by layer:
   each consumer sees the shrunk model's own activations and is fitted to the original
   outputs of the units kept after it (see :mod:`.refit`). ``refit = "none"`` gives plain
   truncation of the same channels, the baseline the refit is measured against.
4. **Widening** (m > 1) is function-preserving (Net2Net): new channels copy existing ones
   (with every per-channel constant: biases, BatchNorm scale/bias/mean/var, Q/DQ scales,
   depthwise filters) and each consumer's incoming weight of a copied channel is divided
   evenly among its copies, so the widened model computes the original function up to
   float rounding.

What widening buys and costs
----------------------------
Widening adds no accuracy by itself: it is the original function in a bigger model. It buys
*room*. For quantization: splitting a channel halves the consumer weights that read it, so
when the copied channels are those with the largest weights (which the importance ranking
tends to pick) the consumer's weight range shrinks and a low-bit grid resolves the other
weights more finely (outlier channel splitting). For fine-tuning: training starts from the
trained function with extra capacity instead of from scratch; copies start identical, so
fine-tuning must break the symmetry (noise, dropout) for them to learn different features.
It costs size and latency: a Gemm whose input and output groups both grow by m has m^2
times the weights and multiply-adds (m times when one side grows), and activation memory
grows by m. Widening by an integer multiplier copies every channel evenly, which leaves
weight ranges unchanged.

Calibration data
----------------
Importance and refits read activations of the *base* model once per :class:`WidthScaler`
(cached) and of each shrunk candidate layer by layer. Use training data only, never
validation or test. :func:`refit_inputs` returns the whole training split by default
(1,077 digits samples rather than the 256 of the ``calibration`` subset): it keeps the
least-squares problems of digits-wide well determined up to 0.5x; with fewer samples than a
consumer has inputs the fit relies on the ridge penalty.

Use
---
>>> scaler = WidthScaler(model, refit_inputs(dataset))  # doctest: +SKIP
>>> result = scaler.scale(config)                      # a new model; ``model`` is untouched
>>> result.model, result.changes, result.frozen        # doctest: +SKIP

Scale first, then quantize: the result is a plain float model. Scaling a model that already
has quantized weights is refused for those layers (their groups are frozen).
"""

from onnxopt.config.width import (
    MAX_MULTIPLIER,
    MIN_MULTIPLIER,
    Importance,
    LayerWidth,
    Mode,
    Refit,
    WidthConfig,
)
from onnxopt.optimizer.width.analysis import analyze_channels
from onnxopt.optimizer.width.groups import (
    ChannelAnalysis,
    ChannelGroup,
    Edit,
    EditKind,
    WeightNode,
)
from onnxopt.optimizer.width.rewrite import ChannelMap, WidthScalingPass
from onnxopt.optimizer.width.scaler import (
    GroupChange,
    RefitReport,
    ScaleResult,
    WidthScaler,
    refit_inputs,
    scale_width,
)

__all__ = [
    "MAX_MULTIPLIER",
    "MIN_MULTIPLIER",
    "ChannelAnalysis",
    "ChannelGroup",
    "ChannelMap",
    "Edit",
    "EditKind",
    "GroupChange",
    "Importance",
    "LayerWidth",
    "Mode",
    "Refit",
    "RefitReport",
    "ScaleResult",
    "WeightNode",
    "WidthConfig",
    "WidthScaler",
    "WidthScalingPass",
    "analyze_channels",
    "refit_inputs",
    "scale_width",
]
