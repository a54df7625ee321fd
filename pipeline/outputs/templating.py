"""The one Jinja2 environment behind every HTML page callpulse writes (call report, batch index,
evaluation report).

Design: templates live in ``pipeline/outputs/templates`` (package data, so a wheel carries them) and all
extend ``base.html.j2``. Autoescaping is on for every template, so any value a template prints is
HTML-escaped unless Python marked it as built markup (``markupsafe.Markup``: the matplotlib SVG, table
fragments rendered by the macros here). ``StrictUndefined`` turns a misspelt variable into an error at
render time instead of an empty string on a supervisor's page; it surfaces as ``ReportTemplateError``
naming the template.

The environment holds no per-call state (only compiled templates), so one per process is shared by
worker threads; Jinja2 environments are safe to render from several threads at once.
"""
from __future__ import annotations

import functools
from typing import Any

import jinja2
from markupsafe import Markup

from ..errors import PipelineError

__all__ = ["Markup", "ReportTemplateError", "environment", "macro", "render"]


class ReportTemplateError(PipelineError):
    """A report template could not be rendered (a missing variable, a syntax error, a missing file)."""


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared environment: package templates, autoescape everywhere, strict undefined variables."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.outputs", "templates"),
        autoescape=True,           # every template, whatever its file name: pages print call text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,          # a block tag on its own line leaves no blank line behind
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``template`` (a file name under templates/) with ``context``.

    Raises
    ------
    ReportTemplateError
        If the template is missing, does not parse, or uses a name the context lacks.
    """
    try:
        return environment().get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        raise ReportTemplateError(
            f"report template {template} failed: {type(exc).__name__}: {exc} (a template and the code that "
            "fills it disagree: fix the name in pipeline/outputs/templates or the context passed to it)"
        ) from exc


def macro(template: str, name: str, *args: Any, **kwargs: Any) -> Markup:
    """Call one macro of ``template`` from Python: an escaped HTML fragment for a larger page."""
    try:
        return Markup(getattr(environment().get_template(template).module, name)(*args, **kwargs))
    except jinja2.TemplateError as exc:
        raise ReportTemplateError(
            f"report macro {template}:{name} failed: {type(exc).__name__}: {exc}"
        ) from exc
