"""The bundled sentence encoder: a small torch TransformerEncoder over token ids and a mask,
mean-pooled into one embedding per sentence.

It is trained in seconds on the generated corpus (:mod:`onnxopt.data.token_corpus`) to
separate its topics (a linear head over the embedding, dropped afterwards), deterministically
for a seed. Its ONNX graph has what sentence encoders have: int64 ``input_ids`` and
``attention_mask`` inputs, an embedding Gather, MatMul/Gemm projections, LayerNorm, Softmax
attention and a masked mean.
"""

from __future__ import annotations

import torch
from torch import nn

from onnxopt.data.token_corpus import SEQ_LEN, VOCAB


class SentenceEncoder(nn.Module):
    """Token + position embeddings, ``layers`` transformer layers, masked mean pooling.

    ``forward(input_ids, attention_mask) -> (N, dim)``: padding (mask 0) is neither attended
    to nor pooled.
    """

    def __init__(
        self, vocab: int = VOCAB, seq_len: int = SEQ_LEN, dim: int = 64, heads: int = 4,
        layers: int = 2, ff: int = 128,
    ) -> None:  # fmt: skip
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.randn(seq_len, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, input_ids, attention_mask):  # noqa: D102 - torch forward
        hidden = self.tokens(input_ids) + self.positions[: input_ids.shape[1]]
        hidden = self.encoder(hidden, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def sentence_encoder(in_features: int, num_classes: int) -> nn.Module:
    """The recipe factory (the encoder's sizes come from the corpus, not from the data)."""
    return SentenceEncoder()
