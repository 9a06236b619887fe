"""The training batch source: windows of `context + 1` tokens drawn from the D_F training tokens.

A window holds the inputs (its first `context` tokens) and their next-token targets (its last `context`). Windows
start every `context` tokens, so consecutive windows share one token and every training token except the very
first is a target exactly once per epoch. Each epoch shifts that grid by a random offset in [0, context), so
repeated epochs over a small D_F do not see identical windows, and visits the windows in a seeded random order.

The stream of windows runs through as many epochs as the run needs; a global batch is the next `batch_windows`
windows of that stream (it may straddle an epoch boundary when D_F is small). Every data-parallel rank walks the
same stream and keeps its own contiguous slice of each global batch, so the union over ranks is exactly what one
process would train on. Epoch permutations are derived from (seed, epoch) alone, so the position in the stream
is the whole state: `state_dict()` is three integers and a resume continues bit for bit.

D_F smaller than one window (`context + 1` tokens) raises ConfigError instead of wrapping around: a window that
repeats its own tokens would teach the model a fake periodicity, and such a run is a configuration mistake.

The tokens stay as given (a memory-mapped uint16 token file, typically): a batch gathers only its own windows
and converts only them to int64, so a trial's memory does not grow with D_F (a paper-scale training sequence
converted whole would take 8 bytes per token, ~120 GB per rank for OpenWebText2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sweep_engine.data.tokenfile import release
from sweep_engine.errors import ConfigError


class BatchSource:
    """Deterministic, shardable, resumable stream of training windows.

    Args:
        tokens: The training token ids (1-D, D_F of them).
        context: Tokens the model sees per window; windows hold `context + 1` tokens.
        batch_windows: Windows per *global* batch (summed over data-parallel ranks).
        seed: Seeds every epoch's grid shift and permutation.
        rank: This process's data-parallel rank.
        world_size: Number of data-parallel ranks; must divide `batch_windows`.

    Raises:
        ConfigError: For a D_F shorter than one window or a batch that does not split evenly across ranks.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        context: int,
        batch_windows: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            raise ConfigError(
                f"training tokens must be a 1-D integer array, but got shape {tokens.shape}, {tokens.dtype}"
            )
        if context < 1 or batch_windows < 1:
            raise ConfigError(
                f"`context >= 1` and `batch_windows >= 1` must hold, but got "
                f"(context={context}, batch_windows={batch_windows})"
            )
        if len(tokens) < context + 1:
            raise ConfigError(
                f"the training set must hold at least one window of `context + 1` tokens, but got "
                f"(d_f={len(tokens)}, context={context}); raise d_f or lower context"
            )
        if not (0 <= rank < world_size) or batch_windows % world_size:
            raise ConfigError(
                f"`batch_windows % world_size == 0` and `0 <= rank < world_size` must hold, but got "
                f"(batch_windows={batch_windows}, world_size={world_size}, rank={rank})"
            )
        self.tokens = tokens  # never converted or copied whole (see the module docstring)
        self.context = context
        self.batch_windows = batch_windows
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0  # epochs started so far minus one: the epoch the next window comes from
        self.position = 0  # windows of the current epoch already drawn
        self.windows_drawn = 0  # global windows drawn (all ranks)
        self._offsets = np.arange(context + 1, dtype=np.int64)
        self._starts = self._epoch_starts(0)

    @property
    def tokens_drawn(self) -> int:
        """Input tokens drawn so far over all ranks (`context` per window), i.e. training tokens seen."""
        return self.windows_drawn * self.context

    @property
    def windows_per_epoch(self) -> int:
        """Windows in the current epoch (varies by at most one with the epoch's grid shift)."""
        return len(self._starts)

    def _epoch_starts(self, epoch: int) -> np.ndarray:
        # A generator per (seed, epoch), not one long-lived generator: the epoch number alone then rebuilds the
        # permutation on resume, with no RNG state to save.
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.tokens)
        # Shift the grid by up to context - 1 tokens, but keep at least one whole window in the epoch.
        shift = int(rng.integers(0, min(self.context, n - self.context)))
        starts = np.arange(shift, n - self.context, self.context, dtype=np.int64)
        rng.shuffle(starts)  # in place: the same order as rng.permutation(starts), without its copy
        return starts

    def next_batch(self) -> np.ndarray:
        """The next global batch's slice for this rank.

        Returns:
            int64 array of shape (batch_windows // world_size, context + 1).
        """
        need = self.batch_windows
        parts: list[np.ndarray] = []
        while need:
            take = min(need, len(self._starts) - self.position)
            parts.append(self._starts[self.position : self.position + take])
            self.position += take
            need -= take
            if self.position == len(self._starts):
                self.epoch += 1
                self.position = 0
                self._starts = self._epoch_starts(self.epoch)
        starts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.windows_drawn += self.batch_windows
        per_rank = self.batch_windows // self.world_size
        mine = starts[self.rank * per_rank : (self.rank + 1) * per_rank]
        # One gather of this rank's windows (a copy out of the map), then the only int64 conversion.
        batch = self.tokens[mine[:, None] + self._offsets].astype(np.int64, copy=False)
        # A random read through a map faults in far more than it reads (fault-around, large folios: ~300 KB
        # per window measured here); dropping those pages each step keeps this process's resident set at one
        # batch's worth instead of growing towards the training set over a run. They stay in the page cache.
        release(self.tokens)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream (plus the settings it is only valid for)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "windows_drawn": self.windows_drawn,
            "seed": self.seed,
            "context": self.context,
            "batch_windows": self.batch_windows,
            "n_tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` taken on a source built with the same tokens and settings.

        Raises:
            ConfigError: If the state was taken with a different seed, context, batch or training set size.
        """
        mine = {"seed": self.seed, "context": self.context, "batch_windows": self.batch_windows}
        mine["n_tokens"] = len(self.tokens)
        theirs = {k: state.get(k) for k in mine}
        if theirs != mine:
            raise ConfigError(f"batch source state does not match this source: state {theirs}, source {mine}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.windows_drawn = int(state["windows_drawn"])
        self._starts = self._epoch_starts(self.epoch)
