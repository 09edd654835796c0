"""Teacher options (``algorithm.teacher.*``), resolved against the chosen advantage estimator.

Every key may be ``null`` in the Hydra config, which means "the default" (per estimator where noted):

==========================  ==============================================  ===============================
key                         meaning                                         default
==========================  ==============================================  ===============================
hint                        ``answer`` | ``reference`` | ``sibling`` |      rlsd: answer; opsd, grpo_opsd:
                            ``shuffled`` (the control: the hint of another  reference; sdpo: sibling
                            prompt of the same problem type in the batch)
shuffle_source              shuffled: whose text is passed on, ``answer``   answer
                            or ``reference``
shuffle_group               shuffled: the ``extra_info`` field whose value  problem_type
                            a borrowed hint's row shares (e.g. ``task``)
mode                        ``frozen`` | ``live`` | ``ema``                 sdpo: ema; others: frozen
sync_every                  frozen: re-sync the teacher copy every N steps  10
ema_rate                    ema: ``teacher <- (1 - r) teacher + r policy``  0.05
context                     ``question``: the data's question (options      question
                            lettered, images in place), as released;
                            ``student_prompt``: the student's whole last
                            user turn (task block, Format line, ...)
reference_field             ``extra_info`` key of the reference trace       qwen3vl_235b_thinking_response
template                    built-in name (``teacher``, ``sdpo``) or a      sibling hint: sdpo; else teacher
                            path to a Jinja file
format_instruction          the Format sentence (template variable)         the student's Format sentence
max_hint_length             token budget of each hint text (cut at its end) 4096 (the released default)
max_length                  teacher prompt + response token limit; a row    data.max_prompt_length +
                            over it after cutting its hint to nothing gets  max_hint_length + 512 +
                            no teacher signal (never an error)              data.max_response_length
truncation_marker           appended to a cut hint                          `` ... [truncated]``
success_threshold           sibling: a response succeeded when its reward   0.0 (released: score > 0)
                            score is > this
sibling_pick                ``shortest_pair`` (shortest success + shortest  shortest_pair
                            failure, as released) | ``shortest`` |
                            ``random`` (a success only)
seed                        seed of the ``random`` sibling choice           data.seed, else 0
allow_multiple_updates      permit ppo_epochs > 1 / several mini batches    false
                            (delta then uses stale old log-probs; warns
                            every step)
==========================  ==============================================  ===============================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from verl_ext.algorithms.checks import check_choice, options

HINT_SOURCES = ("answer", "reference", "sibling", "shuffled")
SHUFFLE_SOURCES = ("answer", "reference")
TEACHER_MODES = ("frozen", "live", "ema")
SIBLING_PICKS = ("shortest_pair", "shortest", "random")
CONTEXTS = ("question", "student_prompt")

DEFAULT_REFERENCE_FIELD = "qwen3vl_235b_thinking_response"
DEFAULT_FORMAT_INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue enclosed within <thought> </thought> "
    "tags. The final answer MUST be enclosed within <answer> </answer> tags."
)
# The released code's trace budget (its RLSD script raises it to 12000; answers are far shorter).
DEFAULT_MAX_HINT_LENGTH = 4096
# Room for the template's own words and the chat markup around the question and the hint.
TEMPLATE_OVERHEAD = 512

# Per-estimator defaults: (hint source, teacher mode).
ESTIMATOR_DEFAULTS: dict[str, tuple[str, str]] = {
    "rlsd": ("answer", "frozen"),
    "opsd": ("reference", "frozen"),
    "grpo_opsd": ("reference", "frozen"),
    "sdpo": ("sibling", "ema"),
}


def default_max_length(max_prompt_length: int | None, max_response_length: int | None, max_hint_length: int) -> int | None:
    """Student prompt + hint + template + response: every row the rollout can produce fits."""
    if max_prompt_length is None or max_response_length is None:
        return None
    return int(max_prompt_length) + int(max_hint_length) + TEMPLATE_OVERHEAD + int(max_response_length)


@dataclasses.dataclass
class TeacherConfig:
    hint: str = "answer"
    shuffle_source: str = "answer"
    shuffle_group: str = "problem_type"
    mode: str = "frozen"
    sync_every: int = 10
    ema_rate: float = 0.05
    context: str = "question"
    reference_field: str = DEFAULT_REFERENCE_FIELD
    template: str | None = None
    format_instruction: str = DEFAULT_FORMAT_INSTRUCTION
    max_hint_length: int = DEFAULT_MAX_HINT_LENGTH
    max_length: int | None = None
    truncation_marker: str = " ... [truncated]"
    success_threshold: float = 0.0
    sibling_pick: str = "shortest_pair"
    seed: int = 0
    allow_multiple_updates: bool = False

    def __post_init__(self) -> None:
        check_choice("algorithm.teacher.hint", self.hint, HINT_SOURCES)
        check_choice("algorithm.teacher.shuffle_source", self.shuffle_source, SHUFFLE_SOURCES)
        check_choice("algorithm.teacher.mode", self.mode, TEACHER_MODES)
        check_choice("algorithm.teacher.context", self.context, CONTEXTS)
        check_choice("algorithm.teacher.sibling_pick", self.sibling_pick, SIBLING_PICKS)
        if int(self.sync_every) < 1:
            raise ValueError(f"algorithm.teacher.sync_every must be >= 1, got {self.sync_every}")
        if not 0.0 < float(self.ema_rate) <= 1.0:
            raise ValueError(f"algorithm.teacher.ema_rate must be in (0, 1], got {self.ema_rate}")
        if int(self.max_hint_length) < 1:
            raise ValueError(f"algorithm.teacher.max_hint_length must be positive, got {self.max_hint_length}")
        if self.max_length is not None and int(self.max_length) < 1:
            raise ValueError(f"algorithm.teacher.max_length must be positive, got {self.max_length}")
        if not self.reference_field:
            raise ValueError("algorithm.teacher.reference_field must be a non-empty extra_info key")
        if self.template is None:
            self.template = "sdpo" if self.hint == "sibling" else "teacher"

    @classmethod
    def resolve(
        cls,
        raw: Mapping[str, Any] | None,
        estimator: str,
        max_prompt_length: int | None = None,
        max_response_length: int | None = None,
        seed: int | None = None,
    ) -> "TeacherConfig":
        """Merge ``raw`` (``algorithm.teacher``; nulls mean default) over the estimator's defaults.

        ``max_prompt_length``/``max_response_length`` (verl's ``data.*``) give ``max_length``'s default.
        """
        raw = options(raw, "teacher", (f.name for f in dataclasses.fields(cls)))
        hint, mode = ESTIMATOR_DEFAULTS.get(estimator, ("answer", "frozen"))
        values: dict[str, Any] = {"hint": hint, "mode": mode, "seed": seed or 0}
        values.update({k: v for k, v in raw.items() if v is not None})
        if values.get("max_length") is None:
            hint_len = int(values.get("max_hint_length", DEFAULT_MAX_HINT_LENGTH))
            values["max_length"] = default_max_length(max_prompt_length, max_response_length, hint_len)
        return cls(**values)

    @classmethod
    def from_verl(cls, config: Any) -> "TeacherConfig":
        """Resolved from a composed verl config: ``algorithm.teacher`` + data lengths + seed, with
        ``max_length`` capped by the token limit of the engine that runs the teacher forward."""
        data = config.data
        resolved = cls.resolve(
            config.algorithm.get("teacher", None),
            str(config.algorithm.adv_estimator),
            max_prompt_length=data.get("max_prompt_length", None),
            max_response_length=data.get("max_response_length", None),
            seed=data.get("seed", None),
        )
        limit = engine_token_limit(config, resolved.mode)
        if limit is not None and (resolved.max_length is None or resolved.max_length > limit):
            resolved.max_length = limit
        return resolved


def engine_token_limit(config: Any, mode: str) -> int | None:
    """The longest sequence verl's dynamic batching accepts in the teacher forward (None: no limit).

    ``frozen``/``ema`` run on the ref worker (``ref.log_prob_max_token_len_per_gpu``), ``live`` on the
    actor (``rollout.log_prob_max_token_len_per_gpu``); verl asserts every sequence fits it.
    """
    arr = config.actor_rollout_ref
    section_ = arr.ref if mode in ("frozen", "ema") else arr.rollout
    if not section_.get("log_prob_use_dynamic_bsz", False):
        return None
    limit = section_.get("log_prob_max_token_len_per_gpu", None)
    return None if limit is None else int(limit)

