"""Input checks shared by the estimators: clear errors instead of silent NaNs or broadcasting."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], expected_from: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(
            f"shape mismatch: {name} has shape {tuple(tensor.shape)} but {expected_from} has shape {tuple(expected)}"
        )


def check_finite(name: str, tensor: torch.Tensor, mask: torch.Tensor | None = None, row_offset: int = 0) -> None:
    """Raise naming the first offending rows if ``tensor`` holds NaN/inf where ``mask`` is true."""
    # Fast path: one reduction; NaN/inf anywhere makes it non-finite (NaN * 0 is NaN too).
    flat = tensor.detach().float().reshape(-1)
    total = flat.sum() if mask is None else torch.dot(flat, mask.reshape(-1).to(flat.dtype))
    if torch.isfinite(total):
        return
    bad = ~torch.isfinite(tensor)
    if mask is not None:
        bad &= mask.bool()
    if bad.any():
        rows = (bad.reshape(bad.shape[0], -1).any(dim=-1).nonzero().flatten() + row_offset).tolist()
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise ValueError(f"{name} contains NaN or inf at row index(es) {shown} ({len(rows)} row(s) in all)")


def check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """Raise naming the config ``key`` when ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")


def options(raw: Any, name: str, valid: Iterable[str]) -> dict[str, Any]:
    """``algorithm.<name>`` (None, a dict or a DictConfig) as a plain dict.

    A key not in ``valid`` raises, listing the valid ones, so a typo is never ignored.
    """
    if raw is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(raw, DictConfig):
            raw = OmegaConf.to_container(raw, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(raw, Mapping):
        raise TypeError(f"algorithm.{name} must be a mapping of options, got {type(raw).__name__}")
    valid = sorted(valid)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) algorithm.{name}.{', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    return dict(raw)


def section(config: Any, name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Read ``config.<name>`` (a dict, DictConfig or verl dataclass) merged over ``defaults``.

    An option not in ``defaults`` raises, listing the valid ones.
    """
    raw: Any = None
    if config is not None:
        raw = config.get(name, None) if hasattr(config, "get") else getattr(config, name, None)
    out = dict(defaults)
    out.update(options(raw, name, defaults))
    return out
