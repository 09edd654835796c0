"""End a run whose Ray worker died, with a message, instead of waiting forever.

When one FSDP rank's process dies in the middle of a step, the other ranks block in a collective (gloo/NCCL)
that never completes, and verl's driver waits on all ranks' results: the run hangs until the process-group
timeout (tens of minutes) or for ever. :class:`WorkerWatchdog` runs in the driver (``recipe/main.py``), reads
Ray's actor table every ``interval_s`` and, at the first actor that died with its process or node
(``WORKER_DIED``/``NODE_DIED``; actors ended on purpose are ignored), prints which worker died and the last
checkpoint ``trainer.resume_mode=auto`` would resume from, interrupts the driver (SIGINT, so Ray shuts its
local cluster down) and, if it is still alive ``grace_s`` later, exits it with status 1.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

FAILED_REASONS = ("WORKER_DIED", "NODE_DIED")
EXIT_STATUS = 1


def last_checkpoint(checkpoint_dir: str | os.PathLike | None) -> str:
    """The checkpoint verl's tracker file names (what ``resume_mode=auto`` loads), or a sentence saying none."""
    if not checkpoint_dir:
        return "none (no trainer.default_local_dir)"
    tracker = Path(checkpoint_dir) / "latest_checkpointed_iteration.txt"
    try:
        step = int(tracker.read_text().strip())
    except (OSError, ValueError):
        return f"none under {checkpoint_dir} (the run starts from the beginning)"
    return str(Path(checkpoint_dir) / f"global_step_{step}")


def dead_workers(actors: dict) -> list[str]:
    """Descriptions of the actors in Ray's actor table (``ray._private.state.actors()``) that died with their
    process or node."""
    out = []
    for info in actors.values():
        if info.get("State") != "DEAD":
            continue
        cause = str(info.get("DeathCause", ""))
        if not any(f"reason: {r}" in cause for r in FAILED_REASONS):
            continue
        address = info.get("Address") or {}
        name = info.get("Name") or "-"
        out.append(
            f"{info.get('ActorClassName') or info.get('ClassName') or 'actor'} (name {name}, pid {info.get('Pid')}, "
            f"node {address.get('IPAddress', '?')}): {next((r for r in FAILED_REASONS if r in cause), 'died')}"
        )
    return out


class WorkerWatchdog:
    """Daemon thread of the driver; :meth:`start` it before verl's ``run_ppo`` (it waits for ``ray.init``)."""

    def __init__(self, checkpoint_dir: str | None, interval_s: float = 2.0, grace_s: float = 30.0):
        self.checkpoint_dir = checkpoint_dir
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.message: str | None = None
        self._thread = threading.Thread(target=self._run, name="verl_ext-worker-watchdog", daemon=True)

    def start(self) -> "WorkerWatchdog":
        self._thread.start()
        return self

    def _run(self) -> None:
        import ray
        from ray._private import state

        while True:
            time.sleep(self.interval_s)
            if not ray.is_initialized():
                continue
            try:
                dead = dead_workers(state.actors())
            except Exception:  # the cluster is shutting down; nothing to watch any more
                continue
            if dead:
                self._fail(dead)
                return

    def report(self) -> str | None:
        """After verl raised (e.g. ``ActorDiedError`` reached the driver first): the message, printed, if a worker
        died; None otherwise."""
        if self.message is None:
            try:
                import ray
                from ray._private import state

                dead = dead_workers(state.actors()) if ray.is_initialized() else []
            except Exception:
                dead = []
            if dead:
                self._set_message(dead)
        return self.message

    def _set_message(self, dead: list[str]) -> None:
        self.message = (
            f"a Ray worker died during training: {'; '.join(dead)}. The run is stopped; the last complete "
            f"checkpoint is {last_checkpoint(self.checkpoint_dir)} (trainer.resume_mode=auto resumes from it)."
        )
        print(f"\nERROR: {self.message}", file=sys.stderr, flush=True)

    def _fail(self, dead: list[str]) -> None:
        self._set_message(dead)
        os.kill(os.getpid(), signal.SIGINT)  # the driver's ray.get raises KeyboardInterrupt; Ray shuts down
        time.sleep(self.grace_s)
        print(f"ERROR: the driver did not stop within {self.grace_s:.0f} s; exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_STATUS)


__all__ = ["WorkerWatchdog", "dead_workers", "last_checkpoint"]
