"""The evaluation protocol: sampling settings, token budget, image size and splits, as config.

The paper does not state its evaluation protocol. ``default`` is the sampling the official RLSD code
uses for validation; ``greedy`` is deterministic decoding. Either is written into every result file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

# Split read for each benchmark (the split behind the paper's Table 2 numbers); ZeroBench reads
# every split present (sub-questions and the main set) and reports both.
DEFAULT_SPLITS: dict[str, list[str]] = {
    "mmmu": ["validation"],
    "mathvista": ["testmini"],
    "mathvision": ["test"],
    "zerobench": ["zerobench_subquestions", "subquestions", "zerobench", "main"],
    "wemath": ["testmini"],
    "synthetic": ["test"],
}


@dataclass
class Protocol:
    """Generation settings shared by both backends.

    ``presence_penalty`` follows vLLM/OpenAI: ``logit -= penalty`` for every token already present
    in the generated text (prompt tokens excluded). ``temperature == 0`` means greedy decoding.
    ``min_pixels``/``max_pixels`` bound each image's area after Qwen-VL's smart resize (the
    training loader's clamp).
    """

    preset: str = "default"
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    presence_penalty: float = 1.5
    n: int = 1
    max_new_tokens: int = 4096
    seed: int = 0
    min_pixels: int = 262_144
    max_pixels: int = 1_048_576
    system_prompt: str | None = None
    splits: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SPLITS.items()})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> "Protocol":
        """A copy with ``key=value`` overrides (strings parsed as YAML; ``splits`` entries are merged
        into the current per-benchmark choice)."""
        names = {f.name: f for f in dataclasses.fields(self)}
        kw = {}
        for key, value in overrides.items():
            if key not in names:
                raise KeyError(f"unknown protocol field {key!r}; fields: {', '.join(names)}")
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if key == "splits":  # per-benchmark: merge into the current choice
                if not isinstance(value, dict):
                    raise ValueError(f"protocol field 'splits' must map benchmark -> [split, ...], got {value!r}")
                value = {**self.splits, **{b: [v] if isinstance(v, str) else list(v) for b, v in value.items()}}
            kw[key] = value
        out = dataclasses.replace(self, **kw)
        if out.n != 1:
            raise ValueError("protocol n must be 1: the scorers and tables count one answer per question")
        return out


PRESETS: dict[str, Protocol] = {
    "default": Protocol(),
    "greedy": Protocol(preset="greedy", temperature=0.0, top_p=1.0, top_k=-1, presence_penalty=0.0),
}


def load_protocol(preset: str = "default", yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> Protocol:
    """Preset, then fields from a YAML file, then ``key=value`` overrides."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if yaml_path:
        with open(yaml_path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of protocol fields")
        p = p.with_overrides(data)
    return p.with_overrides(overrides or {})
