"""The privileged teacher prompt: hint sources, the Jinja template, truncation, teacher inputs."""

from verl_ext.privileged.builder import (
    HintResult,
    PrivilegedPromptBuilder,
    StudentSample,
    TeacherSample,
    load_template,
    pick_siblings,
    question_context,
)
from verl_ext.privileged.config import ESTIMATOR_DEFAULTS, TeacherConfig

__all__ = [
    "ESTIMATOR_DEFAULTS",
    "HintResult",
    "PrivilegedPromptBuilder",
    "StudentSample",
    "TeacherConfig",
    "TeacherSample",
    "load_template",
    "pick_siblings",
    "question_context",
]
