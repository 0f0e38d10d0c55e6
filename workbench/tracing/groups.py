"""Token groups of the averaged causal trace (Meng et al. 2022, Figure 2)."""

from __future__ import annotations

import numpy as np

TOKEN_GROUPS = ("first subject token", "middle subject tokens", "last subject token",
                "first subsequent token", "further tokens", "last token")
LAST_SUBJECT = TOKEN_GROUPS.index("last subject token")


def token_groups(n_tokens: int, span: tuple[int, int]) -> dict[str, list[int]]:
    """Positions of each group for a prompt of ``n_tokens`` whose subject spans ``[start, end)``.

    Tokens before the subject (BOS, or words of a relation-first phrasing) belong to no group. A
    one-token subject is both the first and the last subject token; when the subject ends the
    prompt, its last token is also the last token.
    """
    start, end = span
    last = n_tokens - 1
    return {
        "first subject token": [start],
        "middle subject tokens": list(range(start + 1, end - 1)),
        "last subject token": [end - 1],
        "first subsequent token": [end] if end < last else [],
        "further tokens": list(range(end + 1, last)),
        "last token": [last],
    }


def grouped(grid: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """``[n_groups, n_layers]`` means of the rows of ``grid`` (``[n_tokens, n_layers]``) per group;
    NaN for a group without tokens."""
    groups = token_groups(grid.shape[0], span)
    return np.stack([grid[groups[name]].mean(axis=0) if groups[name] else np.full(grid.shape[1], np.nan)
                     for name in TOKEN_GROUPS])
