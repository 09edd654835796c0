"""End a run whose Ray worker died, with a message, instead of waiting forever.

When one FSDP rank's process dies in the middle of a step, the other ranks block in a collective (gloo/NCCL)
that never completes, and verl's driver waits on all ranks' results: the run hangs until the process-group
timeout (tens of minutes) or for ever. :class:`WorkerWatchdog` runs in the driver (``recipe/main.py``), reads
Ray's actor table every ``interval_s`` and, at the first actor that died with its process or node
(``WORKER_DIED``/``NODE_DIED``; actors ended on purpose are ignored), prints which worker died and the last
checkpoint ``trainer.resume_mode=auto`` would resume from, interrupts the driver (SIGINT, so Ray shuts its
local cluster down) and, if it is still alive ``grace_s`` later, exits it with status 1.

A rollout engine that dies inside a live server actor (vLLM's engine core is a child process of verl's
server actor) is reported by the process hosting it through :func:`report_engine_error` (Ray's key-value
store, see :mod:`verl_ext.cpu.vllm_engine_guard`); the watchdog polls those reports as well.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

FAILED_REASONS = ("WORKER_DIED", "NODE_DIED")
# Ray's memory monitor records its kills as an ``oom_context``, with no reason field: a run whose agent-loop worker
# it killed waited on that worker's requests for good (measured: 12 minutes, "running: 8, finished: 0")
OOM_CAUSE = "oom_context"
EXIT_STATUS = 1
ENGINE_ERROR_NAMESPACE = "verl_ext"
ENGINE_ERROR_PREFIX = "engine_error/"


def report_engine_error(message: str) -> None:
    """From the process hosting a rollout engine: print ``message`` and, in a Ray cluster, store it where the
    driver's watchdog reads it (:func:`engine_errors`)."""
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    try:
        import ray
        from ray.experimental import internal_kv

        if ray.is_initialized() and internal_kv._internal_kv_initialized():
            internal_kv._internal_kv_put(f"{ENGINE_ERROR_PREFIX}{os.getpid()}", message, overwrite=True,
                                         namespace=ENGINE_ERROR_NAMESPACE)  # fmt: skip
    except Exception:  # a report must never raise where it is made
        pass


def engine_errors() -> list[str]:
    """The messages :func:`report_engine_error` stored in the connected Ray cluster (none when not connected)."""
    from ray.experimental import internal_kv

    if not internal_kv._internal_kv_initialized():
        return []
    keys = internal_kv._internal_kv_list(ENGINE_ERROR_PREFIX, namespace=ENGINE_ERROR_NAMESPACE)
    values = (internal_kv._internal_kv_get(k, namespace=ENGINE_ERROR_NAMESPACE) for k in sorted(keys))
    return [v.decode(errors="replace") for v in values if v]


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
    process or node, or were killed by Ray's memory monitor."""
    out = []
    for info in actors.values():
        if info.get("State") != "DEAD":
            continue
        cause = str(info.get("DeathCause", ""))
        why = ("killed by Ray's memory monitor (the node ran low on memory)" if OOM_CAUSE in cause
               else next((r for r in FAILED_REASONS if f"reason: {r}" in cause), None))
        if why is None:
            continue
        address = info.get("Address") or {}
        name = info.get("Name") or "-"
        out.append(
            f"{info.get('ActorClassName') or info.get('ClassName') or 'actor'} (name {name}, pid {info.get('Pid')}, "
            f"node {address.get('IPAddress', '?')}): {why}"
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
                engines = engine_errors()
                dead = dead_workers(state.actors())
            except Exception:  # the cluster is shutting down; nothing to watch any more
                continue
            if dead or engines:
                self._fail(dead, engines)
                return

    def report(self) -> str | None:
        """After verl raised (e.g. ``ActorDiedError`` reached the driver first): the message, printed, if a worker
        died; None otherwise."""
        if self.message is None:
            try:
                import ray
                from ray._private import state

                dead = dead_workers(state.actors()) if ray.is_initialized() else []
                engines = engine_errors() if ray.is_initialized() else []
            except Exception:
                dead, engines = [], []
            if dead or engines:
                self._set_message(dead, engines)
        return self.message

    def _set_message(self, dead: list[str], engines: list[str] = ()) -> None:
        what = []
        if engines:
            what.append(f"the rollout engine died: {'; '.join(engines)}")
        if dead:
            what.append(f"a Ray worker died during training: {'; '.join(dead)}")
        self.message = (
            f"{'; '.join(what)}. The run is stopped; the last complete checkpoint is "
            f"{last_checkpoint(self.checkpoint_dir)} (trainer.resume_mode=auto resumes from it)."
        )
        print(f"\nERROR: {self.message}", file=sys.stderr, flush=True)

    def _fail(self, dead: list[str], engines: list[str] = ()) -> None:
        self._set_message(dead, engines)
        os.kill(os.getpid(), signal.SIGINT)  # the driver's ray.get raises KeyboardInterrupt; Ray shuts down
        time.sleep(self.grace_s)
        print(f"ERROR: the driver did not stop within {self.grace_s:.0f} s; exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_STATUS)


__all__ = ["WorkerWatchdog", "dead_workers", "engine_errors", "last_checkpoint", "report_engine_error"]
