"""Pegel-Warnung: flood warnings across municipal borders (CAP 1.2), built on urbanstack.toolkit."""

from .tool import PegelWarnung, main

__all__ = ["PegelWarnung", "main"]
