"""When the teacher copy is refreshed from the policy (pure logic, no verl).

``rate_at(step)`` returns the blend rate applied before training step ``step`` (verl's 1-based
``global_steps``), or None when the teacher is left as it is:

- ``frozen``: 1.0 at steps ``s > 1`` with ``(s - 1) % sync_every == 0`` (a plain copy);
- ``ema``: ``ema_rate`` at every step ``s > 1``;
- ``live``: always None (the policy itself is the teacher; there is no copy).

At step 1 the copy already equals the policy (verl loads both from the same checkpoint). After a
resume without a saved teacher copy the first step re-syncs fully (1.0).
"""

from __future__ import annotations


class TeacherSchedule:
    def __init__(self, mode: str, sync_every: int = 10, ema_rate: float = 0.05):
        if mode not in ("frozen", "live", "ema"):
            raise ValueError(f"teacher mode must be frozen, live or ema, got {mode!r}")
        self.mode = mode
        self.sync_every = int(sync_every)
        self.ema_rate = float(ema_rate)
        self._resync = False

    @property
    def needs_copy(self) -> bool:
        return self.mode in ("frozen", "ema")

    def on_start(self, restored_step: int, teacher_restored: bool = False) -> None:
        """Call once after verl restored (or not) a checkpoint; ``restored_step`` 0 = fresh start.

        ``teacher_restored``: the teacher copy was loaded from the checkpoint too (no re-sync needed).
        """
        self._resync = self.needs_copy and int(restored_step) > 0 and not teacher_restored

    def rate_at(self, step: int) -> float | None:
        if not self.needs_copy:
            return None
        if self._resync:
            self._resync = False
            return 1.0
        if step <= 1:
            return None
        if self.mode == "frozen":
            return 1.0 if (step - 1) % self.sync_every == 0 else None
        return self.ema_rate
