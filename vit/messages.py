"""Errors a person reads (and notes of why a figure is missing): beside its English text, each carries a code
and the values that fill it, so that the app can say it in the visitor's language (vit.app.i18n) while
logs, the API and MCP keep the English text."""
from __future__ import annotations


class Said(Exception):
    """An error meant for the person who sent the request: str(e) is its English sentence; `code` (e.g.
    "image.not_image") and `values` (e.g. name="notes.jpg") let the app say the same in another language.
    No code: the app shows the English text."""

    def __init__(self, text: str, code: str | None = None, **values: object) -> None:
        super().__init__(text)
        self.code, self.values = code, values
