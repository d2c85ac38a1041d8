"""Child-process work for the containment tests: a real native crash, a hang, a filter.

Importable by reference (multiprocessing pickles functions by module and name), so the
forkserver child runs these, not onnxopt's probe.
"""

from __future__ import annotations

import ctypes
import json
import time

import onnx

from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY, metadata_value
from onnxopt.runtime import contained


def segfault(*_args) -> None:
    """Read address 0: a real SIGSEGV, as a runtime bug would raise it."""
    ctypes.string_at(0)


def hang(*_args) -> None:
    time.sleep(60)


def segfault_on_4_bit_weights(model, settings) -> None:
    """Crash like a runtime with a broken 4-bit path might: on any weight of 4 bits (as the
    quantizer's bit-width metadata records it); every other model gets the real check."""
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    widths = json.loads(metadata_value(proto, BIT_WIDTHS_KEY) or "{}")
    if 4 in widths.values():
        segfault()
    contained.open_and_run(model, settings)
