"""Rolling windows over one document, the way lm-evaluation-harness scores ``loglikelihood_rolling``.

The document's ids are preceded by one prefix id (the model's BOS, or EOS when it has none)
and cut into consecutive chunks of ``seq_len`` predicted ids, so every id is predicted
exactly once. A full chunk is predicted from the id just before it plus the chunk itself (a
model input of ``seq_len`` ids, no overlap with the previous window's context). The last,
shorter chunk is predicted from a full window that ends at the document's end: its context
reaches back into ids already scored, which are fed but not counted. This is lm-eval's
``get_rolling_token_windows(context_len=1)`` followed by ``make_disjoint_window`` and its
truncation of each request to the model's ``max_length``.
"""

from __future__ import annotations

Window = tuple[list[int], list[int], int]
"""(model input, the id each input position predicts, how many of the last ones are scored)."""


def rolling_windows(ids: list[int], prefix_id: int, seq_len: int) -> list[Window]:
    """Windows whose scored predictions cover ``ids`` once, in order."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    stream = [prefix_id, *ids]
    n = len(ids)
    windows = []
    for start in range(0, n, seq_len):
        scored = min(seq_len, n - start)
        end = start + scored  # stream[end] is the last predicted id
        first = max(0, end - seq_len)
        windows.append((stream[first:end], stream[first + 1 : end + 1], scored))
    return windows
