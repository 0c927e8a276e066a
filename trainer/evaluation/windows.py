"""Rolling windows over one document, the way lm-evaluation-harness scores ``loglikelihood_rolling``.

The document's ids are preceded by one prefix id (the model's BOS, or EOS when it has none)
and cut into consecutive, non-overlapping chunks of ``seq_len`` predicted tokens. A chunk is
predicted from the token just before it plus the chunk itself (a model input of ``seq_len``
tokens), so every id of the document is predicted exactly once and no window carries more
context than its own tokens (``get_rolling_token_windows`` with ``context_len=1`` followed by
``make_disjoint_window`` in lm-eval). The first chunk sees the prefix, the last one may be
shorter than ``seq_len``.
"""

from __future__ import annotations


def rolling_windows(
    ids: list[int], prefix_id: int, seq_len: int
) -> list[tuple[list[int], list[int]]]:
    """(model input, predicted ids) pairs of equal length covering ``ids`` once, in order."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    stream = [prefix_id, *ids]
    windows = []
    for start in range(0, len(ids), seq_len):
        predicted = stream[start + 1 : start + 1 + seq_len]
        windows.append((stream[start : start + len(predicted)], predicted))
    return windows
