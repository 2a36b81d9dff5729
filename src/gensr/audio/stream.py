"""Reading audio in bounded memory: blocks in, the same samples out as a whole-file read.

`StreamResampler` turns a stream of input blocks into exactly (byte for byte) what
gensr.audio.io.resample gives for the whole signal: it runs scipy's polyphase filter
(resample_poly: the same Kaiser FIR, the same padding) on overlapping slices whose first sample
falls on a filter phase boundary, and keeps only outputs whose whole filter support lies inside
the slice. Memory is one block plus the filter's reach, whatever the file's length.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from scipy.signal import firwin, upfirdn


class StreamResampler:
    """Feed mono blocks at `sr_in` with `push`, then `finish`; each call returns the next float32 output."""

    def __init__(self, sr_in: int, sr_out: int):
        g = math.gcd(sr_in, sr_out)
        self.up, self.down = sr_out // g, sr_in // g
        self.identity = self.up == self.down == 1
        if self.identity:
            return
        # resample_poly's filter for window=('kaiser', 5.0), padtype='constant' (scipy.signal._signaltools)
        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float64)
        h *= self.up
        n_pre_pad = self.down - half_len % self.down
        # resample_poly also appends n_post_pad zeros, but for this filter length it is always 0
        self.h = np.concatenate([np.zeros(n_pre_pad), h])
        self.n_pre_remove = (half_len + n_pre_pad) // self.down
        self.taps_per_phase = -(-len(self.h) // self.up)  # input samples one output depends on
        self.buffer = np.zeros(0, dtype=np.float64)
        self.base = 0  # input index of buffer[0]; always a multiple of `down`
        self.next_out = self.n_pre_remove  # next upfirdn output index to emit
        self.n_in = 0

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if self.identity:
            return block
        self.n_in += block.size
        self.buffer = np.concatenate([self.buffer, block.astype(np.float64)])
        # output j reads inputs up to floor(j * down / up): emit every j whose inputs have all arrived
        end = self.base + self.buffer.size
        stop = (end * self.up - 1) // self.down + 1 if end else 0  # first j reading input index >= end
        return self._emit(stop, final=False)

    def finish(self) -> np.ndarray:
        """The outputs that depend on the end of the signal (the filter's tail)."""
        if self.identity:
            return np.zeros(0, np.float32)
        n_out = -(-self.n_in * self.up // self.down)
        return self._emit(self.n_pre_remove + n_out, final=True)

    def _emit(self, stop: int, final: bool) -> np.ndarray:
        if stop <= self.next_out:
            return np.zeros(0, np.float32)
        offset = self.base * self.up // self.down  # upfirdn index of the slice's output 0
        y = upfirdn(self.h, self.buffer, self.up, self.down)
        out = y[self.next_out - offset : stop - offset].astype(np.float32)
        self.next_out = stop
        if not final:  # keep the inputs the next output still reads, from a phase boundary on
            first_needed = max(0, (stop * self.down) // self.up - self.taps_per_phase + 1)
            new_base = max(self.base, first_needed // self.down * self.down)
            self.buffer = self.buffer[new_base - self.base :]
            self.base = new_base
        return out


def resample_blocks(blocks: Iterator[np.ndarray], sr_in: int, sr_out: int) -> Iterator[np.ndarray]:
    """Resample an iterator of mono blocks; the concatenated output equals audio.io.resample of the whole."""
    resampler = StreamResampler(sr_in, sr_out)
    for block in blocks:
        out = resampler.push(block)
        if out.size:
            yield out
    tail = resampler.finish()
    if tail.size:
        yield tail
