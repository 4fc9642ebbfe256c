"""A fixed-capacity ring of timestamped samples whose most recent part is always contiguous.

Why not a plain circular array: the plot redraws 60 times a second and hands slices straight to
pyqtgraph, so reading the last n samples must be a view, not a copy. The array holds twice the
capacity; samples are appended at the end and, when it fills, the newest `capacity` samples are
moved to the front once (amortised O(1) per sample).
"""

from __future__ import annotations

import numpy as np


class RingBuffer:
    """The newest `capacity` samples of a (n, channels) stream with their timestamps."""

    def __init__(self, capacity: int, channels: int, dtype: np.dtype | type = np.float32) -> None:
        if capacity < 1 or channels < 1:
            raise ValueError(f"capacity and channels must be >= 1, got {capacity}, {channels}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self._data = np.zeros((2 * self.capacity, self.channels), dtype=dtype)
        self._ts = np.zeros(2 * self.capacity, dtype=np.float64)
        self._end = 0  # one past the newest sample
        self.total = 0  # samples ever appended

    def __len__(self) -> int:
        return min(self._end, self.capacity)

    def clear(self) -> None:
        self._end = 0
        self.total = 0

    def extend(self, timestamps: np.ndarray, samples: np.ndarray) -> None:
        """Append n samples (n, channels) with n timestamps; older samples fall out."""
        samples = np.asarray(samples)
        timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        n = timestamps.shape[0]
        if samples.shape != (n, self.channels):
            raise ValueError(f"expected samples of shape ({n}, {self.channels}), got {samples.shape}")
        if n == 0:
            return
        self.total += n
        if n >= self.capacity:
            self._data[: self.capacity] = samples[-self.capacity :]
            self._ts[: self.capacity] = timestamps[-self.capacity :]
            self._end = self.capacity
            return
        if self._end + n > 2 * self.capacity:
            keep = self.capacity - n
            self._data[:keep] = self._data[self._end - keep : self._end]
            self._ts[:keep] = self._ts[self._end - keep : self._end]
            self._end = keep
        self._data[self._end : self._end + n] = samples
        self._ts[self._end : self._end + n] = timestamps
        self._end += n

    def grow(self, capacity: int) -> None:
        """Raise the capacity, keeping the held samples (for irregular streams faster than guessed)."""
        if capacity <= self.capacity:
            return
        ts, data = self.last()
        total = self.total
        self.capacity = int(capacity)
        self._data = np.zeros((2 * self.capacity, self.channels), dtype=self._data.dtype)
        self._ts = np.zeros(2 * self.capacity, dtype=np.float64)
        self._end = 0
        self.extend(ts.copy(), data.copy())
        self.total = total

    def last(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Views of the newest n samples (all held samples when n is None): (timestamps, data)."""
        held = len(self)
        n = held if n is None else max(0, min(int(n), held))
        return self._ts[self._end - n : self._end], self._data[self._end - n : self._end]

    def since(self, t0: float) -> tuple[np.ndarray, np.ndarray]:
        """Views of the held samples with timestamp >= t0 (timestamps assumed non-decreasing)."""
        ts, data = self.last()
        i = int(np.searchsorted(ts, t0, side="left"))
        return ts[i:], data[i:]
