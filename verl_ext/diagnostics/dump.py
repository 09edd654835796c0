"""Token-credit dumps: per-token teacher/student log-probs, RLSD weights and final advantages.

Format (JSONL, one object per sampled response; ``FORMAT``/``VERSION`` identify it)::

    {"format": "rlsd-verl/token-credit", "version": 1,
     "step": int, "row": int (index in the step's batch), "uid": str (verl's prompt-group id),
     "estimator": str, "reward": float (sum of the row's token-level rewards),
     "seq_advantage": float (GRPO's A_i), "advantage_sign": -1 | 0 | 1,
     "lambda": float | null, "clip_eps": float | null (rlsd only), "teacher_valid": bool,
     "ground_truth": str | null, "data_source": str | null, "text": str (the decoded response),
     "tokens": {                      # columns, one entry per valid response token, same length N
        "text": [str],                # the token's piece of "text" (concatenation == text)
        "id": [int],
        "student_logp": [float],      # log pi_S(y_t), the rollout-time (old) log-prob
        "teacher_logp": [float],      # log pi_T(y_t | privileged context)
        "delta": [float],             # teacher_logp - student_logp
        "w": [float] | null,          # rlsd: exp(sign(A_i) * delta_t)
        "w_clipped": [float] | null,  # rlsd: clip(w, 1 - clip_eps, 1 + clip_eps)
        "advantage": [float]}}        # the estimator's final token advantage

``w`` and ``w_clipped`` are the formula values at every token; where RLSD does not reweight
(``negative_only`` rows with ``A_i >= 0``, tokens outside ``thought_only``'s span) the final
``advantage`` is ``A_i`` regardless. The dumper writes ``<dir>/step_<step:06d>.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from verl_ext.algorithms.checks import options
from verl_ext.diagnostics.tokens import token_pieces

FORMAT = "rlsd-verl/token-credit"
VERSION = 1
TOKEN_FIELDS = ("text", "id", "student_logp", "teacher_logp", "delta", "w", "w_clipped", "advantage")
_OPTIONAL_TOKEN_FIELDS = ("w", "w_clipped")


@dataclass
class ResponseRecord:
    """One dumped response; ``tokens`` maps each name of :data:`TOKEN_FIELDS` to a list (or None for w's)."""

    step: int
    row: int
    uid: str
    estimator: str
    reward: float
    seq_advantage: float
    advantage_sign: int
    text: str
    tokens: dict[str, list | None]
    lam: float | None = None
    clip_eps: float | None = None
    teacher_valid: bool = True
    ground_truth: str | None = None
    data_source: str | None = None

    def __len__(self) -> int:
        return len(self.tokens["id"])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lambda"] = d.pop("lam")
        return {"format": FORMAT, "version": VERSION, **d}


@dataclass
class DiagnosticsConfig:
    """``algorithm.diagnostics``: ``dump_every`` (0 = no dumps; else steps 1, 1 + N, 1 + 2N, ...),
    ``num_responses`` per dumped step, ``dir`` (relative paths resolve against the trainer's working
    directory), ``seed`` (response choice), ``leakage`` (log the ``diag/`` leakage metrics every step),
    ``answer_window`` (how many final tokens are searched for the answer block)."""

    dump_every: int = 0
    num_responses: int = 4
    dir: str = "token_credit"
    seed: int = 0
    leakage: bool = True
    answer_window: int = 256

    @classmethod
    def from_config(cls, raw: Any) -> "DiagnosticsConfig":
        """From a mapping / DictConfig / None; unknown keys and negative counts raise."""
        raw = options(raw, "diagnostics", cls.__dataclass_fields__)
        cfg = cls(**{k: v for k, v in raw.items() if v is not None})
        for name in ("dump_every", "num_responses", "answer_window"):
            if int(getattr(cfg, name)) < 0:
                raise ValueError(f"algorithm.diagnostics.{name} must be >= 0, got {getattr(cfg, name)}")
        return cfg


def select_rows(
    seq_advantages: Sequence[float], k: int, step: int, seed: int = 0, valid: Sequence[bool] | None = None
) -> list[int]:
    """``k`` row indices to dump, deterministic in (``seed``, ``step``): positive- and
    negative-advantage rows alternately (positive first), each side in the order of a permutation
    seeded by ``seed + step`` (so different prompt groups show up); zero-advantage rows fill the rest.
    Rows with ``valid`` false (no teacher signal) come last."""
    adv = np.asarray([float(a) for a in seq_advantages])
    ok = np.ones(len(adv), bool) if valid is None else np.asarray([bool(v) for v in valid])
    order = np.random.default_rng(int(seed) + int(step)).permutation(len(adv))
    pos = [int(i) for i in order if ok[i] and adv[i] > 0]
    neg = [int(i) for i in order if ok[i] and adv[i] < 0]
    rest = [int(i) for i in order if ok[i] and adv[i] == 0] + [int(i) for i in order if not ok[i]]
    picked: list[int] = []
    while (pos or neg) and len(picked) < k:
        for side in (pos, neg):
            if side and len(picked) < k:
                picked.append(side.pop(0))
    picked += rest[: max(0, k - len(picked))]
    return picked


def _row_values(t: torch.Tensor, i: int, idx: torch.Tensor) -> list[float]:
    return [float(v) for v in t[i].detach().float()[idx].tolist()]


def build_records(
    *,
    step: int,
    estimator: str,
    rows: Sequence[int],
    response_ids: Sequence[Sequence[int]],
    response_mask: torch.Tensor,
    old_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    seq_advantages: torch.Tensor,
    rewards: torch.Tensor,
    uids: Sequence[Any],
    tokenizer,
    lam: float | None = None,
    clip_eps: float | None = None,
    teacher_valid: torch.Tensor | None = None,
    ground_truths: Sequence[str | None] | None = None,
    data_sources: Sequence[str | None] | None = None,
) -> list[ResponseRecord]:
    """Records of the batch rows ``rows``. Tensors are ``[B, T]`` (``seq_advantages``, ``rewards``:
    ``[B]``); ``response_ids[i]`` holds at least the row's valid positions (padded or not).
    ``w``/``w_clipped`` are filled for ``estimator == "rlsd"`` (``clip_eps`` required then)."""
    is_rlsd = estimator == "rlsd"
    if is_rlsd and clip_eps is None:
        raise ValueError("build_records: estimator rlsd needs clip_eps for the clipped weight")
    out = []
    for i in rows:
        idx = response_mask[i].bool().nonzero().flatten()
        ids_row = list(response_ids[i])
        if len(idx) and int(idx[-1]) >= len(ids_row):
            raise ValueError(
                f"build_records: row {i} has {len(ids_row)} response ids but its mask marks position {int(idx[-1])}"
            )
        ids = [int(ids_row[j]) for j in idx.tolist()]
        student = _row_values(old_log_probs, i, idx)
        teacher = _row_values(teacher_log_probs, i, idx)
        delta = [t - s for t, s in zip(teacher, student)]
        a = float(seq_advantages[i])
        sign = (a > 0) - (a < 0)
        w = w_clipped = None
        if is_rlsd:
            w = [math.exp(sign * d) for d in delta]
            w_clipped = [min(max(x, 1.0 - clip_eps), 1.0 + clip_eps) for x in w]
        pieces = token_pieces(tokenizer, ids)
        out.append(
            ResponseRecord(
                step=int(step),
                row=int(i),
                uid=str(uids[i]),
                estimator=str(estimator),
                reward=float(rewards[i]),
                seq_advantage=a,
                advantage_sign=sign,
                text="".join(pieces),
                tokens={
                    "text": pieces,
                    "id": ids,
                    "student_logp": student,
                    "teacher_logp": teacher,
                    "delta": delta,
                    "w": w,
                    "w_clipped": w_clipped,
                    "advantage": _row_values(advantages, i, idx),
                },
                lam=None if lam is None else float(lam),
                clip_eps=None if clip_eps is None or not is_rlsd else float(clip_eps),
                teacher_valid=True if teacher_valid is None else bool(teacher_valid[i]),
                ground_truth=None if ground_truths is None or ground_truths[i] is None else str(ground_truths[i]),
                data_source=None if data_sources is None or data_sources[i] is None else str(data_sources[i]),
            )
        )
    return out


def write_records(path: str | os.PathLike, records: Sequence[ResponseRecord]) -> Path:
    """Write ``records`` as JSONL (atomically: a temporary file renamed into place). Non-finite
    numbers raise, naming the row and field, since JSON has no NaN."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            try:
                line = json.dumps(rec.to_json(), ensure_ascii=False, allow_nan=False)
            except ValueError as e:
                bad = [k for k, v in rec.tokens.items() if v and isinstance(v[0], float) and not all(map(math.isfinite, v))]
                raise ValueError(f"{path}: row {rec.row} (uid {rec.uid}): non-finite value in {bad or 'a scalar field'}") from e
            f.write(line + "\n")
    os.replace(tmp, path)
    return path


def _fail(path, lineno, msg):
    raise ValueError(f"{path}:{lineno}: {msg}")


def read_records(path: str | os.PathLike) -> list[ResponseRecord]:
    """Parse a dump written by :func:`write_records`; any malformed line raises with file, line and field."""
    out = []
    scalars = {
        "step": int, "row": int, "uid": str, "estimator": str, "reward": (int, float),
        "seq_advantage": (int, float), "advantage_sign": int, "text": str,
    }  # fmt: skip
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                _fail(path, lineno, f"not JSON ({e})")
            if not isinstance(d, dict) or d.get("format") != FORMAT:
                _fail(path, lineno, f"field 'format': expected {FORMAT!r}")
            if d.get("version") != VERSION:
                _fail(path, lineno, f"field 'version': expected {VERSION}, got {d.get('version')!r}")
            for name, typ in scalars.items():
                if name not in d:
                    _fail(path, lineno, f"missing field {name!r}")
                if not isinstance(d[name], typ) or isinstance(d[name], bool):
                    _fail(path, lineno, f"field {name!r}: expected {typ}, got {type(d[name]).__name__}")
            tokens = d.get("tokens")
            if not isinstance(tokens, dict):
                _fail(path, lineno, "field 'tokens': expected an object of columns")
            n = None
            for name in TOKEN_FIELDS:
                col = tokens.get(name)
                if col is None and name in _OPTIONAL_TOKEN_FIELDS:
                    continue
                if not isinstance(col, list):
                    _fail(path, lineno, f"field 'tokens.{name}': expected a list")
                if n is None:
                    n = len(col)
                elif len(col) != n:
                    _fail(path, lineno, f"field 'tokens.{name}': length {len(col)} != {n} (tokens.text)")
            extra = sorted(set(tokens) - set(TOKEN_FIELDS))
            if extra:
                _fail(path, lineno, f"unknown token field(s) {extra}")
            out.append(
                ResponseRecord(
                    step=d["step"], row=d["row"], uid=d["uid"], estimator=d["estimator"], reward=float(d["reward"]),
                    seq_advantage=float(d["seq_advantage"]), advantage_sign=d["advantage_sign"], text=d["text"],
                    tokens={k: tokens.get(k) for k in TOKEN_FIELDS}, lam=d.get("lambda"), clip_eps=d.get("clip_eps"),
                    teacher_valid=bool(d.get("teacher_valid", True)), ground_truth=d.get("ground_truth"),
                    data_source=d.get("data_source"),
                )
            )  # fmt: skip
    return out


@dataclass
class TokenCreditDumper:
    """Writes token-credit dumps every ``config.dump_every`` steps (see :class:`DiagnosticsConfig`)."""

    config: DiagnosticsConfig
    tokenizer: Any
    written: list[Path] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.config.dump_every > 0 and self.config.num_responses > 0

    def should_dump(self, step: int) -> bool:
        """Steps 1, 1 + N, 1 + 2N, ... (verl counts steps from 1), so the first step is always seen."""
        return self.enabled and (int(step) - 1) % self.config.dump_every == 0

    def path_for(self, step: int) -> Path:
        return Path(self.config.dir) / f"step_{int(step):06d}.jsonl"

    def dump(self, step: int, **batch: Any) -> Path | None:
        """At a dump step: choose rows with :func:`select_rows` and write :func:`build_records` of them
        (``batch``: its keyword arguments except ``step``, ``rows``, ``tokenizer``). Returns the path or None."""
        if not self.should_dump(step):
            return None
        valid = batch.get("teacher_valid")
        rows = select_rows(
            batch["seq_advantages"].tolist(), self.config.num_responses, step, self.config.seed,
            None if valid is None else valid.tolist(),
        )  # fmt: skip
        records = build_records(step=step, rows=rows, tokenizer=self.tokenizer, **batch)
        path = write_records(self.path_for(step), records)
        self.written.append(path)
        return path
