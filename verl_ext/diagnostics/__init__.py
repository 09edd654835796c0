"""Diagnostics: token-credit dumps (what the teacher credits and blames), answer-leakage and
stability metrics (``diag/...``), and their plots (:mod:`verl_ext.diagnostics.render`)."""

from verl_ext.diagnostics.dump import (
    FORMAT,
    TOKEN_FIELDS,
    VERSION,
    DiagnosticsConfig,
    ResponseRecord,
    TokenCreditDumper,
    build_records,
    read_records,
    select_rows,
    write_records,
)
from verl_ext.diagnostics.hook import TrainerDiagnostics
from verl_ext.diagnostics.leakage import (
    answer_leak_metrics,
    answer_token_masks,
    answer_token_metrics,
    find_answer_mention,
    normalize_answer,
    stability_metrics,
    text_before_answer,
)
from verl_ext.diagnostics.tokens import answer_token_mask, token_pieces

__all__ = [
    "FORMAT",
    "TOKEN_FIELDS",
    "VERSION",
    "DiagnosticsConfig",
    "ResponseRecord",
    "TokenCreditDumper",
    "TrainerDiagnostics",
    "answer_leak_metrics",
    "answer_token_mask",
    "answer_token_masks",
    "answer_token_metrics",
    "build_records",
    "find_answer_mention",
    "normalize_answer",
    "read_records",
    "select_rows",
    "stability_metrics",
    "text_before_answer",
    "token_pieces",
    "write_records",
]
