"""Teacher options (``algorithm.teacher.*``), resolved against the chosen advantage estimator.

Every key may be ``null`` in the Hydra config, which means "the estimator's default":

=================  ===============================================  ==============================
key                meaning                                          default
=================  ===============================================  ==============================
hint               ``answer`` | ``reference`` | ``sibling``         rlsd: answer; opsd, grpo_opsd:
                                                                    reference; sdpo: sibling
mode               ``frozen`` | ``live`` | ``ema``                  rlsd, opsd, grpo_opsd: frozen;
                                                                    sdpo: ema
sync_every         frozen: re-sync the teacher copy every N steps   10
ema_rate           ema: ``teacher <- (1 - r) teacher + r policy``   0.05
reference_field    ``extra_info`` key of the reference trace        qwen3vl_235b_thinking_response
template           built-in name (``teacher``, ``sibling``) or a    teacher
                   path to a Jinja file
format_instruction the output-format sentence closing the prompt    the student's Format line
max_length         teacher prompt + response token budget           data.max_prompt_length +
                                                                    data.max_response_length
truncation_marker  appended to a cut hint                           `` ... [truncated]``
success_threshold  sibling: a response counts as successful when    1.0
                   its score is >= this
sibling_pick       ``random`` (seeded) | ``shortest``               random
seed               seed of the sibling choice                       data.seed, else 0
=================  ===============================================  ==============================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from verl_ext.algorithms.checks import options

HINT_SOURCES = ("answer", "reference", "sibling")
TEACHER_MODES = ("frozen", "live", "ema")
SIBLING_PICKS = ("random", "shortest")

DEFAULT_REFERENCE_FIELD = "qwen3vl_235b_thinking_response"
DEFAULT_FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue enclosed within <thought> </thought> "
    "tags. The final answer MUST be enclosed within <answer> </answer> tags."
)

# Per-estimator defaults: (hint source, teacher mode).
ESTIMATOR_DEFAULTS: dict[str, tuple[str, str]] = {
    "rlsd": ("answer", "frozen"),
    "opsd": ("reference", "frozen"),
    "grpo_opsd": ("reference", "frozen"),
    "sdpo": ("sibling", "ema"),
}


@dataclasses.dataclass
class TeacherConfig:
    hint: str = "answer"
    mode: str = "frozen"
    sync_every: int = 10
    ema_rate: float = 0.05
    reference_field: str = DEFAULT_REFERENCE_FIELD
    template: str = "teacher"
    format_instruction: str = DEFAULT_FORMAT_INSTRUCTION
    max_length: int | None = None
    truncation_marker: str = " ... [truncated]"
    success_threshold: float = 1.0
    sibling_pick: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hint not in HINT_SOURCES:
            raise ValueError(f"algorithm.teacher.hint must be one of {HINT_SOURCES}, got {self.hint!r}")
        if self.mode not in TEACHER_MODES:
            raise ValueError(f"algorithm.teacher.mode must be one of {TEACHER_MODES}, got {self.mode!r}")
        if self.sibling_pick not in SIBLING_PICKS:
            raise ValueError(f"algorithm.teacher.sibling_pick must be one of {SIBLING_PICKS}, got {self.sibling_pick!r}")
        if int(self.sync_every) < 1:
            raise ValueError(f"algorithm.teacher.sync_every must be >= 1, got {self.sync_every}")
        if not 0.0 < float(self.ema_rate) <= 1.0:
            raise ValueError(f"algorithm.teacher.ema_rate must be in (0, 1], got {self.ema_rate}")
        if self.max_length is not None and int(self.max_length) < 1:
            raise ValueError(f"algorithm.teacher.max_length must be positive, got {self.max_length}")
        if not self.reference_field:
            raise ValueError("algorithm.teacher.reference_field must be a non-empty extra_info key")

    @classmethod
    def resolve(
        cls,
        raw: Mapping[str, Any] | None,
        estimator: str,
        max_length: int | None = None,
        seed: int | None = None,
    ) -> "TeacherConfig":
        """Merge ``raw`` (``algorithm.teacher``; nulls mean default) over the estimator's defaults."""
        raw = options(raw, "teacher", (f.name for f in dataclasses.fields(cls)))
        hint, mode = ESTIMATOR_DEFAULTS.get(estimator, ("answer", "frozen"))
        values: dict[str, Any] = {"hint": hint, "mode": mode, "max_length": max_length, "seed": seed or 0}
        values.update({k: v for k, v in raw.items() if v is not None})
        return cls(**values)
