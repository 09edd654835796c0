"""Silences import-time messages of verl that say nothing to users of this package.

- verl's engine package tries every optional training engine on import and warns for each one that
  is not installed (torchtitan, veomni, automodel, mindspeed, megatron); we use only FSDP.
- On a machine with no accelerator device at all, verl's platform detection logs that it falls back to
  'nvidia' (and that the platform is not available). Our CPU runs select ``VERL_PLATFORM=cpu``
  explicitly; anything else on such a machine (the eval command, data tools) never touches a device.
  Where a GPU device node exists, the same messages point at a broken driver and are kept.
- TransferQueue asks for 8 threads per data operation (``TQ_NUM_THREADS``) and, on a machine with
  fewer physical cores, warns and uses the core count, on every put and get of every actor (over a
  hundred lines per CPU run). We default ``TQ_NUM_THREADS`` to that same core count before Ray starts
  its workers (they inherit the driver's environment), so the behaviour is unchanged; a value set by
  the user is kept.

Every other warning passes through unchanged.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings

UNUSED_ENGINES = ("torchtitan", "veomni", "automodel", "mindspeed", "megatron")
PLATFORM_LOGGER = "verl.plugin.platform.platform_manager"
_FALLBACK_MESSAGES = ("No supported accelerator detected", "is registered but not available")
_DEVICE_NODES = ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/davinci[0-9]*")


def no_accelerator_device() -> bool:
    """True when no NVIDIA, AMD or Ascend device node exists (checked without initialising a driver)."""
    return not any(glob.glob(pattern) for pattern in _DEVICE_NODES)


class _PlatformFallbackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in str(record.msg) for m in _FALLBACK_MESSAGES)


_INSTALLED = False


def install() -> None:
    """Install the filters (idempotent); must run before verl's engine package is imported."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    warnings.filterwarnings(
        "ignore", message=rf"({'|'.join(UNUSED_ENGINES)}) engine is not available", category=UserWarning
    )
    if no_accelerator_device():
        logging.getLogger(PLATFORM_LOGGER).addFilter(_PlatformFallbackFilter())
    _default_transfer_queue_threads()


TQ_DEFAULT_THREADS = 8  # transfer_queue's default for TQ_NUM_THREADS


def _default_transfer_queue_threads() -> None:
    import psutil

    cores = psutil.cpu_count(logical=False)
    if cores and cores < TQ_DEFAULT_THREADS:
        os.environ.setdefault("TQ_NUM_THREADS", str(cores))
