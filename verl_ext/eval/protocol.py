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
    "math500": ["test"],
    "aime24": ["test"],
    "aime25": ["test"],
    "arithmetic": ["test"],
}
# Samples per question where the field reports the mean accuracy over k samples (avg@k): AIME's 30 questions
# give a noisy single-sample accuracy (DAPO and Qwen3 report AIME as avg@k, k 16-64).
DEFAULT_REPEATS: dict[str, int] = {"aime24": 16, "aime25": 16}


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
    # Qwen3's hybrid chat template: False renders the empty think block (as the text recipes train); None: as is
    enable_thinking: bool | None = None
    # avg@k: k sampled answers per question (sample ids get "#r"); greedy decoding uses 1
    repeats: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_REPEATS))
    splits: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SPLITS.items()})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def repeats_for(self, benchmark: str) -> int:
        """k of avg@k for ``benchmark`` (1 when decoding is greedy: every sample would be the same)."""
        return 1 if self.greedy else int(self.repeats.get(benchmark, 1))

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
            if key == "repeats":  # per-benchmark: merge
                if not isinstance(value, dict):
                    raise ValueError(f"protocol field 'repeats' must map benchmark -> k, got {value!r}")
                value = {**self.repeats, **value}
            if key == "splits":  # per-benchmark: merge into the current choice
                if not isinstance(value, dict):
                    raise ValueError(f"protocol field 'splits' must map benchmark -> [split, ...], got {value!r}")
                value = {**self.splits, **{b: [v] if isinstance(v, str) else list(v) for b, v in value.items()}}
            kw[key] = value
        out = dataclasses.replace(self, **kw)
        out.check()
        if out.n != 1:
            raise ValueError("protocol n must be 1: the scorers and tables count one answer per question")
        return out

    def check(self) -> None:
        """ValueError naming the field when a value has the wrong type or range (a typo such as
        ``temperature=abc`` must stop the run before any model loads)."""
        def bad(name, want):
            raise ValueError(f"protocol field {name!r} must be {want}, got {getattr(self, name)!r}")

        def number(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        def integer(v):
            return isinstance(v, int) and not isinstance(v, bool)

        for name in ("temperature", "presence_penalty"):
            if not number(getattr(self, name)) or (name == "temperature" and self.temperature < 0):
                bad(name, "a number" + (" >= 0" if name == "temperature" else ""))
        if not number(self.top_p) or not 0 < self.top_p <= 1:
            bad("top_p", "a number in (0, 1]")
        if not integer(self.top_k) or self.top_k < -1:
            bad("top_k", "an integer >= -1 (-1: off)")
        for name in ("n", "max_new_tokens", "min_pixels", "max_pixels"):
            if not integer(getattr(self, name)) or getattr(self, name) <= 0:
                bad(name, "a positive integer")
        if not integer(self.seed):
            bad("seed", "an integer")
        if self.min_pixels > self.max_pixels:
            bad("min_pixels", f"at most max_pixels ({self.max_pixels})")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            bad("system_prompt", "a string")
        if self.enable_thinking is not None and not isinstance(self.enable_thinking, bool):
            bad("enable_thinking", "true, false or null")
        if not isinstance(self.repeats, dict) or not all(integer(v) and v >= 1 for v in self.repeats.values()):
            bad("repeats", "a mapping of benchmark -> k >= 1")
        if not isinstance(self.preset, str):
            bad("preset", "a string")
        if not isinstance(self.splits, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in self.splits.values()):
            bad("splits", "a mapping of benchmark -> [split, ...]")


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
