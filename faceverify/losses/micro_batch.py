"""Losses whose state moves once per optimiser step, told where a forward lies in the step.

With gradient accumulation (``optim.accumulate = k``) one optimiser step runs ``k`` forwards on
``k`` micro-batches of its batch. A loss with state that belongs to the *step* (ArcFace's margin
warm-up and SphereFace's lambda counters, Partial FC's class sample and its step, the center loss's
batch for Eq. 4) must then see all ``k`` micro-batches as one batch: the counters move at the last
micro-batch only, the center update and the Partial FC rows gather what all ``k`` contributed. The
:class:`~faceverify.losses.objective.Objective` calls :meth:`MicroBatchAware.set_micro_batch`
before each forward; used alone (one forward per step) a loss behaves as before.
"""

from __future__ import annotations


class MicroBatchAware:
    """Mixin: ``first_micro_batch`` / ``last_micro_batch`` of the coming forward (both True when a
    step is one forward)."""

    first_micro_batch: bool = True
    last_micro_batch: bool = True

    def set_micro_batch(self, first: bool, last: bool) -> None:
        self.first_micro_batch, self.last_micro_batch = first, last
