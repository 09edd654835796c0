"""verl_ext.cpu registers with verl only when VERL_PLATFORM=cpu, through verl's own lookups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import json
    import verl
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.workers.rollout.replica import RolloutReplicaRegistry
    from verl.workers.rollout import base as rollout_base
    from verl.workers.engine.base import EngineRegistry
    import verl.workers.engine.fsdp.transformer_impl  # noqa: F401  (built-in registrations)

    out = {"registered": "cpu" in PlatformRegistry.registered_names()}
    platform = get_platform()
    out["device"] = platform.device_name
    out["vendor"] = platform.vendor_name
    if out["device"] == "cpu":
        out["backend"] = platform.communication_backend_name()
        out["resource"] = platform.ray_resource_name()
        out["ray_options"] = platform.ray_resource_options(1)
        out["current_device"] = platform.device_module.current_device()
    try:
        out["engine"] = EngineRegistry._engines["language_model"]["fsdp2"]["cpu"].__name__
    except KeyError:
        out["engine"] = None
    try:
        out["replica"] = RolloutReplicaRegistry.get("hf").__name__
    except ValueError:
        out["replica"] = None
    out["adapter"] = rollout_base._ROLLOUT_REGISTRY.get(("hf", "async"))
    if out["adapter"]:
        out["adapter_cls"] = rollout_base.get_rollout_class("hf", "async").__name__
        out["engine_lookup"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
    print("PROBE" + json.dumps(out))
    """
)


def _probe(platform: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VERL_PLATFORM"}
    if platform:
        env["VERL_PLATFORM"] = platform
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("PROBE"))
    return json.loads(line[len("PROBE") :])


def test_cpu_platform_selected_registers_everything():
    got = _probe("cpu")
    assert got["registered"]
    assert (got["device"], got["vendor"], got["backend"]) == ("cpu", "cpu", "gloo")
    # Ray slots are "GPU" so verl's resource-pool check counts them (see verl_ext.cpu.platform)
    assert got["resource"] == "GPU" and got["ray_options"] == {"num_gpus": 1}
    assert got["current_device"] == "cpu"
    assert got["engine"] == "CPUFSDPEngineWithLMHead" == got["engine_lookup"]
    assert got["replica"] == "HFReplica"
    assert got["adapter"] == "verl_ext.cpu.hf_rollout.HFServerAdapter"
    assert got["adapter_cls"] == "HFServerAdapter"


def test_without_cpu_platform_nothing_is_active():
    """A GPU-style run (no VERL_PLATFORM=cpu): the platform class is known but never chosen, nothing else added."""
    got = _probe(None)
    assert got["registered"]
    assert got["device"] != "cpu"
    assert got["engine"] is None and got["replica"] is None and got["adapter"] is None
