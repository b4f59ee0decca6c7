"""CTC output layer."""

from torch import Tensor, nn

BLANK_ID = 0
"""Index of the CTC blank symbol in every vocabulary used by streamkd."""


class CTCHead(nn.Module):
    """Encoder frames (B, T, d_model) -> per-frame log-probabilities (B, T, vocab_size)."""

    def __init__(self, d_model: int, vocab_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must include blank and at least one token, got {vocab_size}")
        self.vocab_size = vocab_size
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.dropout(x)).log_softmax(dim=-1)


__all__ = ["BLANK_ID", "CTCHead"]
