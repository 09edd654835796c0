"""The one place where this project compiles a Jinja template (student prompt, teacher prompt).

Templates are files users hand us (downloaded with a data set or a recipe), so they render in
jinja2's ``ImmutableSandboxedEnvironment``: a template can format its variables, but cannot reach
Python internals (``cycler.__init__.__globals__.os``), call mutating methods, or build huge strings
with ``*``/``**``. This module imports only jinja2: ``data_prep`` loads it by file path so that
building data never imports verl or torch.
"""

from __future__ import annotations

import operator

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Longest string or list one ``*``/``**`` in a template may produce (a prompt is far shorter).
MAX_BINOP_SIZE = 1_000_000
MAX_POW_BITS = 4096


class TemplateError(ValueError):
    """A template that does not compile, or that the sandbox refused while rendering; names the file."""


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator_name, left, right):
        if operator_name == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left).bit_length() * right > MAX_POW_BITS:
                raise jinja2.sandbox.SecurityError(f"'**' would build a number of over {MAX_POW_BITS} bits")
            return operator.pow(left, right)
        # ``*``: a sequence times a count is capped by the size of the result
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_BINOP_SIZE:
                raise jinja2.sandbox.SecurityError(f"'*' would build {len(seq) * n} items (limit {MAX_BINOP_SIZE})")
        return operator.mul(left, right)


def compile_template(text: str, source: str) -> jinja2.Template:
    """``text`` compiled in the sandbox (undefined variables raise). ``source`` names the file in errors."""
    env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template {source}: line {e.lineno}: {e.message}") from None


def render(template: jinja2.Template, source: str, **variables) -> str:
    """``template`` rendered with ``variables``; the sandbox's refusals and undefined variables
    become a ``TemplateError`` naming ``source``."""
    try:
        return template.render(**variables)
    except jinja2.sandbox.SecurityError as e:
        raise TemplateError(f"template {source}: refused by the sandbox: {e}") from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"template {source}: {e.message} (variables: {', '.join(sorted(variables))})") from None
