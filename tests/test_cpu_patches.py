"""The two monkeypatches of verl_ext.cpu.patches, each against verl's unpatched function."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from tensordict import TensorDict

from verl_ext.cpu.patches import cpu_backend, fix_3d_position_ids, ragged_dim


def test_cpu_backend_string():
    assert cpu_backend(None) == "cpu:gloo"
    assert cpu_backend("cpu:gloo,cpu:gloo") == "cpu:gloo"  # what verl builds on a cpu platform
    assert cpu_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"  # GPU strings untouched
    assert cpu_backend("cpu:gloo") == "cpu:gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_group_init_on_cpu_platform():
    """verl's own init fails with the duplicate backend string; the patched one gives a gloo group."""
    code = textwrap.dedent(
        """
        import torch.distributed as dist
        import verl  # loads verl_ext, which patches on VERL_PLATFORM=cpu
        import verl.utils.distributed as vd
        import verl.workers.engine_workers as ew
        assert ew.initialize_global_process_group_ray is vd.initialize_global_process_group_ray
        original = vd.initialize_global_process_group_ray.__wrapped__
        try:
            original()
        except ValueError as e:
            print("UPSTREAM:", e)
        vd.initialize_global_process_group_ray()
        print("BACKEND:", dist.get_backend(), dist.get_world_size())
        dist.destroy_process_group()
        """
    )
    env = dict(os.environ, VERL_PLATFORM="cpu", RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "UPSTREAM: Duplicate device type cpu" in out.stdout
    assert "BACKEND: cpu:gloo 1" in out.stdout


def _position_ids(lengths: list[int]) -> list[torch.Tensor]:
    # 4 rows as verl's Qwen-VL path stores them (text position + 3 M-RoPE rows), distinct values
    return [torch.arange(4 * n).view(4, n) + 1000 * i for i, n in enumerate(lengths)]


@pytest.mark.parametrize("lengths", [[5, 7, 3], [6, 6]])
def test_fix_3d_position_ids_keeps_every_sample(lengths):
    rows = _position_ids(lengths)
    td = TensorDict({"position_ids": torch.nested.as_nested_tensor(rows, layout=torch.jagged)}, batch_size=[len(rows)])
    fix_3d_position_ids(td)
    padded = torch.nested.to_padded_tensor(td["position_ids"], 0, output_size=(len(rows), 4, max(lengths)))
    for i, row in enumerate(rows):
        assert torch.equal(padded[i, :, : row.shape[1]], row)


def test_upstream_fix_breaks_equal_lengths():
    """verl's maybe_fix_3d_position_ids on equal-length samples: the layout is read wrongly."""
    from verl.utils.tensordict_utils import maybe_fix_3d_position_ids as upstream

    rows = _position_ids([6, 6])
    nested = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
    assert ragged_dim(nested) == 1  # torch stores equal lengths with the 4 rows as the ragged dim
    td = TensorDict({"position_ids": nested}, batch_size=[2])
    upstream(td)
    with pytest.raises(RuntimeError):
        torch.nested.to_padded_tensor(td["position_ids"], 0, output_size=(2, 4, 6))


def test_ragged_dim_unequal_lengths():
    nested = torch.nested.as_nested_tensor(_position_ids([2, 9]), layout=torch.jagged)
    assert ragged_dim(nested) == 2
