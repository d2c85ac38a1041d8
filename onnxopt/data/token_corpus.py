"""A generated token corpus for the bundled sentence encoder: offline, deterministic, instant.

Each "sentence" is drawn from one of :data:`TOPICS` topics: a length of 5..16 tokens, each
token from the topic's own 24 words with probability 0.7, else from 48 words shared by every
topic; shorter sentences are padded with id 0 and masked. Inputs are named after the
encoder's: ``input_ids`` and ``attention_mask`` (int64, ``(n, 16)``); the labels are the
topics (what the encoder is trained to separate). 1,600 sentences, split 60/20/20 with
seed 0; the calibration subset is 256 training sentences.
"""

from __future__ import annotations

import numpy as np

from onnxopt.data.dataset import Dataset, Split, calibration_subset

VOCAB = 256
SEQ_LEN = 16
TOPICS = 8
TOPIC_WORDS = 24
SHARED_WORDS = 48
SENTENCES = 1600
SEED = 0


def _sentences(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shared = 1 + np.arange(SHARED_WORDS)  # id 0 is padding
    topic_words = (1 + SHARED_WORDS + np.arange(TOPICS * TOPIC_WORDS)).reshape(TOPICS, -1)
    topics = rng.integers(0, TOPICS, n)
    lengths = rng.integers(5, SEQ_LEN + 1, n)
    own = topic_words[topics][np.arange(n)[:, None], rng.integers(0, TOPIC_WORDS, (n, SEQ_LEN))]
    common = shared[rng.integers(0, SHARED_WORDS, (n, SEQ_LEN))]
    ids = np.where(rng.random((n, SEQ_LEN)) < 0.7, own, common)
    mask = (np.arange(SEQ_LEN)[None, :] < lengths[:, None]).astype(np.int64)
    return (ids * mask).astype(np.int64), mask, topics.astype(np.int64)


def load_token_corpus() -> Dataset:
    """The generated corpus (named inputs ``input_ids``, ``attention_mask``; topic labels)."""
    ids, mask, topics = _sentences(np.random.default_rng(SEED), SENTENCES)
    cuts = [int(SENTENCES * 0.6), int(SENTENCES * 0.8)]

    def split(part: slice) -> Split:
        return Split({"input_ids": ids[part], "attention_mask": mask[part]}, topics[part])

    train = split(slice(0, cuts[0]))
    return Dataset(
        name="token-corpus",
        train=train,
        val=split(slice(cuts[0], cuts[1])),
        test=split(slice(cuts[1], None)),
        calibration=calibration_subset(train, 256, SEED),
        num_classes=TOPICS,
        source="onnxopt.data.token_corpus (generated)",
        notes={"inputs": f"token ids 0..{VOCAB - 1} (0 = padding) and a 0/1 attention mask"},
    )
