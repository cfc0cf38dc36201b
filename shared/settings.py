"""Reading app settings (environment variables in a Function) with errors that name the setting."""

from __future__ import annotations

from typing import Mapping

from .errors import SettingError


def number(environ: Mapping[str, str], name: str, default: float, *, integer: bool = False,
           minimum: float = 0.0, maximum: float | None = None) -> float:
    """App setting ``name`` as a number (``int`` when ``integer``), ``default`` when unset or blank.

    Raises :class:`shared.errors.SettingError` (field = ``name``) for text that is not a (whole)
    number, or a value below ``minimum`` or above ``maximum``."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingError(name, f"app setting {raw!r} is not a {'whole ' if integer else ''}number") from None
    if maximum is not None and not minimum <= value <= maximum:
        raise SettingError(name, f"app setting must be between {minimum:g} and {maximum:g}")
    if value < minimum:
        raise SettingError(name, f"app setting must be at least {minimum:g}")
    return value
