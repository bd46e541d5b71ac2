"""Pages: Jinja2 templates shipped in the package, rendered in the page's language.

One ``Renderer`` serves every hub: its template folders are searched in order (the hub's
own first, then the shared layout in ``runtime/web/templates``). Each language has its own
Jinja environment with that language's catalogue installed, so a template writes
``{{ _("Dashboards") }}`` and gets German or English; ``number``, ``datetime`` and ``date``
filters format for the page's language. ``asset('hub.js')`` names a bundle through the
build's manifest (cache-busting file names).

Because each environment has exactly one language, ``_("a literal")`` without arguments is
translated once, when the template is compiled (:class:`TranslatedLiterals`), instead of on
every render: a page has dozens of them, and each call costs the i18n extension's context
lookups, a ``Markup`` and a ``%`` formatting.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import jinja2
import jinja2.ext
from jinja2.lexer import Token, TokenStream
from fastapi import Request
from fastapi.responses import HTMLResponse

from . import i18n
from .compression import SPLICE, Fragment, spliced_page

WEB_DIR = Path(__file__).parent
SHARED_TEMPLATES = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"
STATIC_PREFIX = "/static"


class Assets:
    """The front-end bundle's file names, from ``static/dist/manifest.json`` (written by the build)."""

    def __init__(self, static_dir: Path = STATIC_DIR, prefix: str = STATIC_PREFIX):
        self.static_dir, self.prefix = static_dir, prefix

    @cached_property
    def manifest(self) -> dict[str, str]:
        path = self.static_dir / "dist" / "manifest.json"
        if not path.exists():
            raise RuntimeError(f"the front-end bundle is missing ({path}); build it with "
                               "'python -m urbanstack.webassets build' (make install does)")
        data = json.loads(path.read_text())
        return data.get("files", data)

    def path(self, name: str) -> Path:
        """The built file of ``name`` on disk."""
        return self.static_dir / "dist" / self.manifest[name]

    def url(self, name: str) -> str:
        try:
            return f"{self.prefix}/dist/{self.manifest[name]}"
        except KeyError:
            raise KeyError(f"the front-end bundle has no {name!r}; known: {', '.join(sorted(self.manifest))}") from None


class ToolTemplates(jinja2.BaseLoader):
    """Templates of City Tools' pages, named ``<pages name>:<file>`` (:mod:`urbanstack.toolkit.pages`),
    so a hub includes a tool's page inside its own layout."""

    def get_source(self, environment: jinja2.Environment, template: str):
        name, colon, file = template.partition(":")
        if not colon:
            raise jinja2.TemplateNotFound(template)
        from urbanstack.toolkit import pages

        folder = pages.template_folders().get(name)
        if folder is None:
            raise jinja2.TemplateNotFound(template)
        return jinja2.FileSystemLoader(str(folder)).get_source(environment, file)


class TranslatedLiterals(jinja2.ext.Extension):
    """Compiles ``_("literal")`` (one string, no arguments) into its translation in the environment's
    language, with exactly the result the i18n extension's call gives at render time (newstyle gettext:
    the translation marked safe and formatted with no values, so ``%%`` becomes ``%``). Anything else
    (arguments, variables, ``x._(…)``) stays a call. The catalogue is extracted from the templates'
    source, which this does not change."""

    PATTERN = ("name", "lparen", "string", "rparen")

    def filter_stream(self, stream: TokenStream):
        translations = getattr(self.environment, "urbanstack_translations", None)
        if translations is None:
            yield from stream
            return
        tokens = list(stream)   # at compile time only
        i = 0
        while i < len(tokens):
            window = tokens[i:i + 4]
            if (tuple(t.type for t in window) == self.PATTERN and window[0].value == "_"
                    and (i == 0 or tokens[i - 1].type != "dot")):
                try:
                    translated = translations.gettext(window[2].value) % {}
                except (TypeError, ValueError, KeyError):
                    translated = None   # left to fail at render time, as before
                if translated is not None:
                    line = window[0].lineno
                    yield from (Token(line, "lparen", "("), Token(line, "string", translated),
                                Token(line, "pipe", "|"), Token(line, "name", "safe"), Token(line, "rparen", ")"))
                    i += 4
                    continue
            yield tokens[i]
            i += 1


class Renderer:
    def __init__(self, template_dirs: Iterable[Path], assets: Assets | None = None):
        self.template_dirs = [*template_dirs, SHARED_TEMPLATES]
        self.assets = assets or Assets()
        self._environments = {lang: self._environment(lang) for lang in i18n.LANGUAGES}

    def _environment(self, lang: str) -> jinja2.Environment:
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader([str(d) for d in self.template_dirs]), ToolTemplates()])
        env = jinja2.Environment(loader=loader,
                                 autoescape=True, undefined=jinja2.StrictUndefined,
                                 extensions=["jinja2.ext.i18n", TranslatedLiterals], trim_blocks=True,
                                 lstrip_blocks=True)
        env.install_gettext_translations(i18n.translations(lang), newstyle=True)
        env.urbanstack_translations = i18n.translations(lang)   # what TranslatedLiterals compiles in
        env.filters["number"] = lambda value, digits=2: i18n.format_number(value, lang, digits)
        env.filters["datetime"] = lambda value, style="short": i18n.format_datetime(value, lang, style)
        env.filters["date"] = lambda value: i18n.format_date(value, lang)
        env.filters["localized"] = lambda texts: i18n.localized(texts, lang)
        env.globals["asset"] = self.assets.url
        env.globals["point_map"] = self.point_map
        env.globals["map_bounds"] = self.map_bounds
        env.globals["lang"] = lang
        from .sessions import ROLE_NAMES
        env.globals["role_names"] = ROLE_NAMES
        return env

    def _basemap(self) -> Path | None:
        try:
            return self.assets.path("basemap.json")
        except KeyError:
            return None

    def point_map(self, points, title: str, id: str):
        """The server-drawn SVG map of ``points`` over the build's basemap (:mod:`.pointmap`)."""
        from . import pointmap

        return pointmap.svg(points, title, id, self._basemap())

    def map_bounds(self, points) -> str:
        """The view the SVG map chose where the points alone do not frame it (one place), for map.js."""
        from . import pointmap

        return pointmap.bounds_json(points, self._basemap())

    def render(self, template: str, lang: str, **context: Any) -> str:
        return self._environments[lang].get_template(template).render(**context)

    def page(self, request: Request, template: str, *, status: int = 200, headers: dict[str, str] | None = None,
             splice: tuple[str, Fragment] | None = None, **context: Any) -> HTMLResponse:
        """A whole page (or an htmx fragment) for ``request``; the request state carries language,
        session and CSRF token (see :mod:`.security`). ``splice=(name, fragment)``: the context's
        ``name`` is a large cached fragment, compressed once (:func:`.compression.spliced_page`)."""
        lang = getattr(request.state, "lang", i18n.DEFAULT_LANGUAGE)
        session = getattr(request.state, "session", None)
        if splice is not None:
            context[splice[0]] = SPLICE
        html = self.render(template, lang, request=request, session=session,
                           csrf_token=getattr(session, "csrf_token", ""), **context)
        if splice is not None:
            return spliced_page(request.scope, html, splice[1], status=status, headers=headers)
        return HTMLResponse(html, status_code=status, headers=headers)
