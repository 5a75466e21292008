"""Lightning add-ons for dependable runs: loss guard, random states, atomic files.

A non-finite-loss guard, exact resumes (random states and the data position), and
atomic checkpoint files.

Use them together with :class:`~lightly_derm.data.ResumableDataLoader` (see
docs/reliability.rst)::

    trainer = pl.Trainer(
        callbacks=[NonFiniteLossGuard(), ExactResume(), ModelCheckpoint(...)],
        plugins=[AtomicCheckpointIO()],
        deterministic=True,
    )
"""

from lightly_derm.callbacks.atomic_checkpoint_io import AtomicCheckpointIO, atomic_save
from lightly_derm.callbacks.exact_resume import (
    ExactResume,
    get_rng_states,
    set_rng_states,
)
from lightly_derm.callbacks.non_finite_loss import (
    NonFiniteLossError,
    NonFiniteLossGuard,
)

__all__ = [
    "AtomicCheckpointIO",
    "ExactResume",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "atomic_save",
    "get_rng_states",
    "set_rng_states",
]
