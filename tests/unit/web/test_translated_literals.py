"""``_("literal")`` compiled into its translation (runtime/web/rendering.py, TranslatedLiterals) gives
exactly the page text the i18n extension's call gives at render time, in German and English."""

from __future__ import annotations

import jinja2
import pytest

from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.rendering import Renderer, TranslatedLiterals

TEMPLATES = [
    '<a href="/x">{{ _("Dashboards") }}</a>',
    '{{ _("Sign out") ~ "<b>" }}',                               # the text stays safe, the rest is escaped
    '{% set label = _("Overview") %}<h1>{{ label }}</h1>',
    "{{ _('Data access')|upper }} {{ _(\"Main navigation\") }}",
    '{{ _("100%% open") }}',                                     # formatted with no values: %% is %
    '{{ _("%(count)s rows", count=3) }}',                        # arguments: stays a call
    '{{ _(name) }}',                                             # a variable: stays a call
    '{% for _ in [1] %}{{ loop.index }}{% endfor %}{{ _("Usage") }}',
    '{{ obj._("Usage") }}',                                      # an attribute named _, not gettext
]


class Obj:
    def _(self, text):
        return f"<{text}>"


def _environment(lang: str, folded: bool) -> jinja2.Environment:
    extensions = ["jinja2.ext.i18n", TranslatedLiterals] if folded else ["jinja2.ext.i18n"]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, extensions=extensions)
    env.install_gettext_translations(i18n.translations(lang), newstyle=True)
    env.urbanstack_translations = i18n.translations(lang)
    return env


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize("source", TEMPLATES)
def test_compiled_translation_renders_like_the_call(lang, source):
    context = {"name": "Dashboards", "obj": Obj()}
    expected = _environment(lang, folded=False).from_string(source).render(**context)
    assert _environment(lang, folded=True).from_string(source).render(**context) == expected


def test_german_page_text_is_compiled_in_and_no_gettext_call_is_left():
    env = _environment("de", folded=True)
    code = env.compile('<p>{{ _("Sign out") }}</p>', raw=True)
    assert "gettext" not in code and "_(" not in code
    german = i18n.translations("de").gettext("Sign out")
    assert german != "Sign out" and german in env.from_string('<p>{{ _("Sign out") }}</p>').render()


def test_the_hubs_renderer_compiles_translations_per_language():
    renderer = Renderer([])
    assert renderer.render("error.html", "en", title="T", message="M", back=None, messages=[], request=None,
                           session=None, csrf_token="", hub=None) != renderer.render(
        "error.html", "de", title="T", message="M", back=None, messages=[], request=None, session=None,
        csrf_token="", hub=None)
