"""Hostile and malformed input: files users hand us (data, templates, checkpoints, resume state)
are untrusted. Each test feeds one such input and asserts the outcome: a clear error naming the
file/row/field, no side effect of the crafted content, bounded size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A template that, unsandboxed, runs a shell command creating a marker file.
def _rce_template(marker: Path) -> str:
    return "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}{{ question }}"


# ---------------------------------------------------------------- templates


def test_student_template_cannot_run_code(tmp_path):
    from data_prep.common import PromptRenderer, templating

    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.jinja"
    tpl.write_text(_rce_template(marker))
    with pytest.raises(templating.TemplateError, match=r"evil\.jinja.*sandbox"):
        PromptRenderer(tpl).render("q", "math", [])
    assert not marker.exists()


def test_build_parquet_with_hostile_template_reports_and_leaves_no_marker(tmp_path):
    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.jinja"
    tpl.write_text(_rce_template(marker))
    proc = subprocess.run([sys.executable, "data_prep/build_parquet.py", "synthetic", "--out-dir", str(tmp_path / "o"),
                           "--prompt-template", str(tpl), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and not marker.exists()
    assert "evil.jinja" in proc.stderr and "Traceback" not in proc.stderr


def test_teacher_template_cannot_run_code(tmp_path):
    from verl_ext.privileged import load_template
    from verl_ext.templating import TemplateError

    marker = tmp_path / "pwned"
    tpl = tmp_path / "evil.jinja"
    tpl.write_text(_rce_template(marker) + " {{ hint }}")
    with pytest.raises(TemplateError, match="sandbox"):
        load_template(str(tpl))
    assert not marker.exists()


def test_template_cannot_build_a_huge_string(tmp_path):
    from verl_ext.templating import TemplateError, compile_template, render

    with pytest.raises(TemplateError, match="limit"):
        render(compile_template("{{ 'x' * 10**9 }}", "t.jinja"), "t.jinja")
    with pytest.raises(TemplateError, match="bits"):
        render(compile_template("{{ 10 ** 10 ** 1000 }}", "t.jinja"), "t.jinja")
    assert render(compile_template("{{ '-' * 3 }}{{ 2 ** 3 }}", "t.jinja"), "t.jinja") == "---8"


def test_template_syntax_error_names_file_and_line():
    from verl_ext.templating import TemplateError, compile_template

    with pytest.raises(TemplateError, match=r"t\.jinja: line 2"):
        compile_template("ok\n{% if %}", "t.jinja")


@pytest.mark.parametrize("text, words", [
    ("{{ hint }}", "exactly once"),
    ("{{ question }} {{ question }} {{ hint }}", "exactly once"),
    ("{% if hint %}{{ question }}{% endif %} {{ hint }}", "also when the hint is empty"),
])
def test_teacher_template_must_render_the_question_once(tmp_path, text, words):
    from verl_ext.privileged import load_template

    tpl = tmp_path / "t.jinja"
    tpl.write_text(text)
    with pytest.raises(ValueError, match=words):
        load_template(str(tpl))


def test_released_and_builtin_templates_render_unchanged_in_the_sandbox():
    """The sandbox changes nothing for an honest template: the student template's text is checked
    against the words written here, the teacher's against the released wording."""
    from data_prep.common import PromptRenderer
    from verl_ext.privileged import load_template

    out = PromptRenderer().render("<image> What is 2+2?", "multiple choice", ["3", "4"])
    assert out.endswith("Question:\n<image> What is 2+2?\n\nOptions:\nA. 3\nB. 4")
    teacher = load_template("teacher").render(question=" Q ", hint=" H ", format_instruction="F")
    assert teacher == ("Q\n\nHere is a reference solution:\nH\n\nAfter understanding the reference solution, please "
                       "try to solve this problem using your own approach below. F")
