"""The Markdown table beside the paper's Table 2."""

import pytest

from verl_ext.eval.table import PAPER_TABLE2, average, markdown_table


def test_paper_rows_average_their_five_columns():
    # a transcription check: each printed Avg is the mean of its five numbers, to 2 decimals
    for name, row in PAPER_TABLE2.items():
        assert sum(row[:5]) / 5 == pytest.approx(row[5], abs=0.005), name


def test_our_row_average_and_delta_by_hand():
    scores = {"mmmu": 60.0, "mathvista": 70.0, "mathvision": 50.0, "zerobench": 20.0, "wemath": 50.0}
    assert average(scores) == 50.0  # 250 / 5
    md = markdown_table(scores, "rlsd")
    assert "| **rlsd (ours)** | 60.00 | 70.00 | 50.00 | 20.00 | 50.00 | 50.00 |" in md
    # 60 - 67.22, 70 - 78.10, 50 - 52.73, 20 - 24.85, 50 - 58.00; Avg 50 - 56.18
    assert "| Δ ours − paper (RLSD) | -7.22 | -8.10 | -2.73 | -4.85 | -8.00 | -6.18 |" in md
    assert md.count("(paper) |") == 6


def test_missing_benchmark_leaves_the_average_empty():
    scores = {"mmmu": 60.0, "mathvista": 70.0}
    assert average(scores) is None
    md = markdown_table(scores, "step100")
    assert "| **step100 (ours)** | 60.00 | 70.00 | — | — | — | — |" in md
    assert "Δ ours" not in md  # not a paper method name
