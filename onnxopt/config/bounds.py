"""Bounds of the numbers a run takes, from configs and from the command line.

Each bound is generous for real use and small enough that a typo cannot hang a run, exhaust
the memory or crash a worker. They are checked when a config is loaded and when options are
parsed, before any work. Plain constants (no imports): the CLI reads them on every start.
"""

from __future__ import annotations

MAX_THREADS = 1024
"""onnxruntime intra-op threads. The largest two-socket servers have 512 hardware threads;
100,000 made onnxruntime create as many threads (12 minutes, 2.7 GB, then a segfault)."""

MAX_BATCH_SIZE = 65_536
"""Latency and training batch sizes. 65,536 digits rows are 16 MiB of input; 10**8 tried to
allocate 23.8 GiB. Batches of large samples can still be too big: a caller allocating one
should check the bytes (:func:`onnxopt.data.shaping.check_batch_bytes`)."""

MAX_WARMUP = 1_000
"""Untimed warm-up runs per batch size (the default budget uses 3 to 10)."""

MAX_REPEATS = 10_000
"""Minimum timed runs per batch size: 10,000 put the p90 within about 0.3% (the defaults use
10 to 50); more only makes a trial slower."""

MAX_MIN_TIME_S = 60.0
"""Minimum timed seconds per batch size: a minute per batch size per trial is already a
benchmark, not a search (the defaults use 0.1 to 0.2 s)."""

MAX_EPOCHS = 10_000
"""Training epochs (the recipes use 25 to 40); 10**8 trained for ever."""

MAX_SEED = 2**32 - 1
"""Seeds: numpy's ``RandomState`` (behind Optuna's samplers) takes 0..2**32-1. Worker ``i`` of
a search samples with ``seed + i``, so the seed leaves room for every worker."""

MAX_TRIALS = 1_000_000
"""Trials of one search."""

MAX_WORKERS = 64
"""Worker processes of one search on one machine."""

MAX_TIMEOUT_S = 30 * 24 * 3600
"""A search's time budget: 30 days."""

MAX_INPUT_ELEMENTS = 2**26
"""Elements of one sample of a factory model's input (64 Mi: a 3 x 4096 x 4096 image fits)."""

MAX_INPUT_RANK = 8
"""Dimensions of one sample of a factory model's input."""

MAX_LEARNING_RATE = 10.0
"""Adam learning rates (the recipes use 1e-3 to 3e-3)."""

MAX_SCALE = 1e6
"""A metric's scale in a scalarised objective."""

MAX_LATENCY_MS = 3_600_000.0
"""A latency constraint: one hour per batch-1 run."""

MAX_SIZE_BYTES = 2**53
"""A size constraint (8 PiB: every size a float holds exactly)."""

MAX_TOP_K = 1_000
"""``top_k_accuracy``'s k (ImageNet reports k = 5)."""

MAX_METRIC_DROP = 1e12
"""A ``max_metric_drop`` limit, in the metric's own units (mse may be large)."""

MAX_STORAGE_RETRY_S = 3_600.0
"""How long a search retries a lost database connection: an hour rides out a server
upgrade; a worker waiting longer holds its trial for nothing."""
