"""Two Ray nodes on one machine (``scripts/local_cluster.sh``): RLSD for 2 steps with ``trainer.nnodes=2
trainer.n_gpus_per_node=1`` places one FSDP rank on each node and writes its checkpoint under one path; the
cluster is stopped afterwards, also when the run fails, and no process of it is left."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from verl_ext.cpu.launch import latest_checkpoint, read_metrics, run_training

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local_cluster.sh"
SMALL = [
    "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=4",
    # 16 rows over 2 ranks: micro-batches that divide each rank's 8 rows
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "trainer.val_before_train=false", "trainer.test_freq=-1",
    "trainer.save_freq=2",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(folder: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", folder], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_rlsd_on_two_ray_nodes(tmp_path, warm_model_dir, synthetic_data_dir):
    port = _free_port()
    folder = f"/tmp/rlsd_ray_test_{port}"  # short: Ray's socket paths must stay under 107 characters
    env = dict(os.environ, RAY_PORT=str(port), CLUSTER_DIR=folder, CPUS_PER_NODE="8", GPUS_PER_NODE="1",
               RAY_AUTH_MODE="disabled")
    address = f"127.0.0.1:{port}"
    try:
        subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True, timeout=300)
        os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver joins the cluster the script started
        metrics, ckpt = run_training(
            "rlsd", tmp_path, warm_model_dir, synthetic_data_dir, steps=2,
            extra=[*SMALL, "trainer.nnodes=2", "trainer.n_gpus_per_node=1", "ray_kwargs.ray_init.num_cpus=null",
                   "ray_kwargs.ray_init.num_gpus=null", f"+ray_kwargs.ray_init.address={address}",
                   # the trainer runs in the cluster's worker processes: they see the job's env, not the driver's
                   f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={tmp_path / 'metrics' / 'rlsd.jsonl'}"],
            timeout=900,
        )  # fmt: skip
        steps = read_metrics(metrics)
        assert sorted(steps) == [1, 2] and all(math_ok(m) for m in steps.values())
        final = latest_checkpoint(ckpt)
        assert final is not None and final.name == "global_step_2"
        # one FSDP shard file per rank, both under the one checkpoint path; the teacher copy beside them
        assert len(list((final / "actor").glob("model_world_size_2_rank_*.pt"))) == 2
        assert sorted(p.name for p in (final / "teacher").iterdir()) == ["teacher_rank0.pt", "teacher_rank1.pt"]
        nodes = _worker_nodes(address)
        assert len(nodes) == 2, f"the two ranks ran on {nodes}"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
        deadline = time.time() + 30
        while _cluster_pids(folder) and time.time() < deadline:
            time.sleep(1)
        assert not _cluster_pids(folder), "processes of the test cluster are left"


def math_ok(m: dict) -> bool:
    import math

    return all(math.isfinite(v) for v in m.values() if isinstance(v, float))


def _worker_nodes(address: str) -> set[str]:
    """Node ids of the trainer's actor workers, read from the cluster's actor table (dead actors stay listed)."""
    import subprocess
    import sys

    code = (
        "import ray; from ray._private import state; ray.init(address=%r, logging_level='ERROR');"
        "print('\\n'.join(a['Address']['NodeID'] for a in state.actors().values() if a.get('ActorClassName', '')"
        ".endswith('WorkerDict') or 'WorkerDict' in str(a.get('ActorClassName'))))" % address
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return {line for line in out.stdout.split() if line}
