"""A dead vLLM engine is reported with its error (verl_ext.cpu.vllm_engine_guard, verl_ext.watchdog), with vLLM's
own liveness monitor watching a real process that is killed or fails. The whole path through verl's trainer
is tests/test_e2e_cpu_vllm.py::test_killed_engine_ends_the_run."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import weakref

import pytest

pytest.importorskip("vllm")

from verl_ext import watchdog  # noqa: E402
from verl_ext.cpu import vllm_engine_guard as guard  # noqa: E402


def _sleep():
    time.sleep(60)


def _fail():
    raise SystemExit(3)


def _manager(proc):
    """vLLM's CoreEngineProcManager watching ``proc`` (built without starting an engine)."""
    from vllm.v1.engine.utils import CoreEngineProcManager

    m = object.__new__(CoreEngineProcManager)
    m.processes = [proc]
    m.manager_stopped = threading.Event()
    m.failed_proc_name = None
    m._finalizer = weakref.finalize(proc, lambda: None)
    return m


def _monitor():
    from vllm.v1.engine.utils import CoreEngineProcManager

    original = CoreEngineProcManager.monitor_engine_liveness
    return getattr(original, "__verl_ext_wrapped__", original)


def test_killed_engine_process_is_reported_with_its_signal(capsys):
    proc = mp.get_context("spawn").Process(target=_sleep, name="EngineCore", daemon=True)
    proc.start()
    exits = []
    monitor = guard.on_engine_death(_monitor(), exit_process=exits.append)
    threading.Timer(1.0, os.kill, (proc.pid, signal.SIGKILL)).start()
    start = time.time()
    monitor(_manager(proc))  # vLLM's monitor returns once the process is gone
    assert time.time() - start < 30
    err = capsys.readouterr().err
    assert f"vLLM engine process EngineCore (pid {proc.pid}) was killed by signal SIGKILL" in err
    assert exits == []  # not inside a Ray worker: nothing else to end


def test_engine_error_recorded_by_the_engine_is_named(capsys):
    proc = mp.get_context("spawn").Process(target=_fail, name="EngineCore", daemon=True)
    proc.start()
    proc.join(30)
    guard.error_file(proc.pid).write_text("RuntimeError: Attempted to load weight (torch.Size([192, 64])) into ...")
    guard.on_engine_death(_monitor(), exit_process=lambda status: None)(_manager(proc))
    err = capsys.readouterr().err
    assert f"EngineCore (pid {proc.pid}) exited with status 3: RuntimeError: Attempted to load weight" in err
    assert not guard.error_file(proc.pid).exists()  # read once


def test_stopped_manager_is_not_an_engine_death(capsys):
    proc = mp.get_context("spawn").Process(target=_sleep, name="EngineCore", daemon=True)
    proc.start()
    m = _manager(proc)
    m.manager_stopped.set()  # vLLM's own shutdown
    guard.on_engine_death(_monitor(), exit_process=lambda status: None)(m)
    proc.kill()
    assert "vLLM engine process" not in capsys.readouterr().err


def test_busy_loop_error_is_written_for_the_monitor():
    class Core:
        def run_busy_loop(self):
            raise ValueError("boom in the engine")

    guard.record_errors(Core.run_busy_loop)
    wrapped = guard.record_errors(Core.run_busy_loop)
    with pytest.raises(ValueError):
        wrapped(Core())
    path = guard.error_file(os.getpid())
    try:
        assert path.read_text() == "ValueError: boom in the engine"
    finally:
        path.unlink()

    class Stopping:
        def run_busy_loop(self):
            raise SystemExit(0)

    with pytest.raises(SystemExit):
        guard.record_errors(Stopping.run_busy_loop)(Stopping())
    assert not path.exists()  # a requested exit is no error


def test_watchdog_message_names_the_engine_error():
    dog = watchdog.WorkerWatchdog(None)
    dog._set_message([], ["vLLM engine process EngineCore (pid 7) was killed by signal SIGKILL"])
    assert dog.message.startswith("the rollout engine died: vLLM engine process EngineCore (pid 7) was killed")
    assert "last complete checkpoint is none" in dog.message
