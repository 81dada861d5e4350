"""P-tuning reparameterisation of the soft tokens (Liu et al. 2021, "GPT Understands, Too").

Instead of feeding the trainable soft embeddings E [N, D] to the model directly, a small
network produces them: `E' = E + f(E)`, with

- `"lstm"`: a 2-layer bidirectional LSTM (hidden D/2 per direction) over the N tokens, then
  Linear(D, D) -> ReLU -> Linear(D, D), as in P-tuning;
- `"mlp"`: Linear(D, D) -> ReLU -> Linear(D, D) applied to each token.

The last linear layer starts at zero, so at initialisation E' equals E exactly: soft tokens
initialised from words (`{soft=It was}`) keep those embeddings until training moves them.
The residual form is our choice (P-tuning replaces E by f(E)); it changes only the start.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UserError

KINDS = ("lstm", "mlp")


class PromptEncoder(nn.Module):
    def __init__(self, kind: str, dim: int, hidden: int | None = None):
        super().__init__()
        if kind not in KINDS:
            raise UserError(f"unknown prompt encoder {kind!r}; use one of {', '.join(KINDS)} (or none)")
        self.kind = kind
        hidden = int(hidden or dim)
        if kind == "lstm":
            self.lstm = nn.LSTM(input_size=dim, hidden_size=max(1, hidden // 2), num_layers=2,
                                bidirectional=True, batch_first=True)
            inner = 2 * max(1, hidden // 2)
        else:
            self.lstm = None
            inner = dim
        self.mlp = nn.Sequential(nn.Linear(inner, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[N, D] soft embeddings -> [N, D] reparameterised embeddings."""
        h = embeddings
        if self.lstm is not None:
            h = self.lstm(h.unsqueeze(0))[0].squeeze(0)
        return embeddings + self.mlp(h)


def make_prompt_encoder(kind: str | None, dim: int) -> PromptEncoder | None:
    if kind is None or str(kind).lower() in ("", "none"):
        return None
    return PromptEncoder(str(kind).lower(), dim)
