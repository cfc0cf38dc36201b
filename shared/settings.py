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


def duration(environ: Mapping[str, str], name: str, default: float, *, maximum: float | None = None) -> float:
    """App setting ``name`` as seconds, from a Go-style duration (``24h``, ``90m``, ``1h30m``, ``45s``, the
    spelling of Flux's intervals) or a number of seconds (``3600``); ``default`` when unset or blank.

    Raises :class:`shared.errors.SettingError` (field = ``name``) for other text, a negative value, or one
    above ``maximum`` seconds."""
    import re

    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", raw)
    if m and any(m.groups()):
        h, mi, s = (int(x or 0) for x in m.groups())
        value = float(h * 3600 + mi * 60 + s)
    else:
        try:
            value = float(raw)
        except ValueError:
            raise SettingError(name, f"app setting {raw!r} is not a duration such as 24h, 90m or 3600") from None
        if value != value or value < 0:  # NaN or negative
            raise SettingError(name, "app setting must be a duration of at least 0s")
    if maximum is not None and value > maximum:
        raise SettingError(name, f"app setting must be at most {maximum / 3600:g}h")
    return value
