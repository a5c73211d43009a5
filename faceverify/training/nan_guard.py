"""The NaN guard without a host synchronisation per step: each step's loss values (a device tensor)
wait in a :class:`LossWindow`, read once at log, evaluation and checkpoint steps; the first
non-finite step and term are named, and since a checkpoint is written only after a check, nothing
past the last good state is ever saved."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from faceverify.errors import FaceverifyError
from faceverify.training import distributed


class NonFiniteLossError(FaceverifyError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the term(s)."""


class LossWindow:
    """The loss values ``[terms + total]`` of the steps since the last check, still on the device."""

    def __init__(self) -> None:
        self.values: list[torch.Tensor] = []
        self.first_step = 0

    def append(self, step: int, values: torch.Tensor) -> None:
        if not self.values:
            self.first_step = step
        self.values.append(values)

    def check(self, info: distributed.DistInfo, names: list[str], last: Path, last_saved_step: int | None,
              discard_pending: Callable[[], None]) -> None:
        """Empty the window; raise :class:`NonFiniteLossError` if any rank's window holds a
        non-finite value (``discard_pending`` first drops what the bad step would have applied)."""
        if not self.values:
            return
        values = torch.stack(self.values)
        local_bad = not bool(torch.isfinite(values).all())
        first_step, self.values = self.first_step, []
        if not distributed.broadcast_flag(local_bad, info):
            return
        message = "another rank"
        if local_bad:
            rows = values.cpu()
            finite = torch.isfinite(rows)
            first = int((~finite.all(dim=1)).nonzero()[0, 0])
            bad = [f"{name} = {float(rows[first, i])}" for i, name in enumerate(names)
                   if name != "total" and not bool(finite[first, i])]
            message = f"step {first_step + first}: {', '.join(bad) or 'total = ' + str(float(rows[first, -1]))}"
        discard_pending()
        kept = (f"the run rolled back to its last checkpoint ({last}, step {last_saved_step}), which is intact; "
                "nothing after it was saved" if last_saved_step is not None
                else "no checkpoint had been written yet; nothing was saved")
        raise NonFiniteLossError(f"non-finite loss at {message}; {kept}; lower optim.lr or set optim.clip_grad_norm")
