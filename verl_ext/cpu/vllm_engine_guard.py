"""A dead vLLM engine ends the training run, naming the engine's error.

verl's vLLM server is a Ray actor (``vLLMHttpServer``) that hosts vLLM's ``AsyncLLM``; the engine core runs in
a child process of that actor. When the engine core dies, vLLM only marks its client dead: the Ray actor stays
alive, so verl's driver (and :class:`verl_ext.watchdog.WorkerWatchdog`, which watches Ray actors) keeps
waiting; a weight sync into a dead engine waited for over 6 minutes. Two hooks, installed by
:func:`verl_ext.cpu.vllm_patches.register` in every vLLM process:

- in the engine core process, an exception that ends its busy loop is written to a small file named after the
  process id (vLLM logs it, but only in the engine's own output);
- in the process hosting the engine, when vLLM's liveness monitor sees an engine core exit unexpectedly, the
  message (process, exit code or signal, the recorded error) is published through
  :func:`verl_ext.watchdog.report_engine_error` (stderr and Ray's key-value store, which the driver's
  watchdog polls) and, inside a Ray worker, the hosting process exits, so that anything waiting on the server
  actor fails instead of hanging.
"""

from __future__ import annotations

import functools
import os
import signal
import tempfile
from pathlib import Path

EXIT_STATUS = 1
MAX_ERROR_CHARS = 2000


def error_file(pid: int) -> Path:
    return Path(tempfile.gettempdir()) / f"verl_ext_vllm_engine_{pid}.err"


def record_errors(run_busy_loop):
    """Wrap ``EngineCoreProc.run_busy_loop``: an exception other than a requested exit is written to
    :func:`error_file` of this process before it propagates."""

    @functools.wraps(run_busy_loop)
    def wrapper(self, *args, **kwargs):
        try:
            return run_busy_loop(self, *args, **kwargs)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as e:
            try:
                error_file(os.getpid()).write_text(f"{type(e).__name__}: {e}"[:MAX_ERROR_CHARS])
            except OSError:
                pass
            raise

    wrapper.__verl_ext_wrapped__ = run_busy_loop
    return wrapper


def describe_exit(name: str, pid: int | None, exitcode: int | None) -> str:
    """'vLLM engine process EngineCore (pid 123) was killed by signal SIGKILL: <recorded error>' and the like."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    elif exitcode is None:
        how = "stopped"
    else:
        how = f"exited with status {exitcode}"
    message = f"vLLM engine process {name} (pid {pid}) {how}"
    recorded = None
    if pid is not None:
        path = error_file(pid)
        try:
            recorded = path.read_text().strip() or None
            path.unlink()
        except OSError:
            pass
    return f"{message}: {recorded}" if recorded else message


def _in_ray_worker() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:
        return False


def on_engine_death(monitor_engine_liveness, exit_process=os._exit):
    """Wrap ``CoreEngineProcManager.monitor_engine_liveness`` (returns when an engine process ended or the
    manager stopped): an unexpected death is reported and, in a Ray worker, ends the hosting process."""

    @functools.wraps(monitor_engine_liveness)
    def wrapper(self, *args, **kwargs):
        try:
            return monitor_engine_liveness(self, *args, **kwargs)
        finally:
            failed = getattr(self, "failed_proc_name", None)
            if failed:
                from verl_ext.watchdog import report_engine_error

                proc = next((p for p in getattr(self, "processes", []) if p.name == failed), None)
                report_engine_error(describe_exit(failed, getattr(proc, "pid", None), getattr(proc, "exitcode", None)))
                if _in_ray_worker():
                    exit_process(EXIT_STATUS)

    wrapper.__verl_ext_wrapped__ = monitor_engine_liveness
    return wrapper


def install() -> None:
    """Both hooks (idempotent)."""
    from vllm.v1.engine.core import EngineCoreProc
    from vllm.v1.engine.utils import CoreEngineProcManager

    if not hasattr(EngineCoreProc.run_busy_loop, "__verl_ext_wrapped__"):
        EngineCoreProc.run_busy_loop = record_errors(EngineCoreProc.run_busy_loop)
    if not hasattr(CoreEngineProcManager.monitor_engine_liveness, "__verl_ext_wrapped__"):
        CoreEngineProcManager.monitor_engine_liveness = on_engine_death(CoreEngineProcManager.monitor_engine_liveness)
