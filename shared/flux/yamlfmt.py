"""YAML text the way Flux writes it with ``sigs.k8s.io/yaml`` (go-yaml v2 underneath): keys sorted,
block sequences not indented under their key, strings that would read as another type
double-quoted (``"8080"``), multi-line strings as literal blocks (``|``, ``|-``, ``|+``: go-yaml v2
``encode.go`` ``stringv``; the emitter falls back to double quotes where a block cannot hold the
text, as libyaml does), no document end marker."""

from __future__ import annotations

import yaml

_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Resolver = yaml.resolver.Resolver()


class _GoStyleDumper(_Dumper):  # type: ignore[misc, valid-type]
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    # go-yaml quotes with double quotes what would otherwise resolve to a non-string
    # (numbers, booleans, null, timestamps) or cannot be a plain scalar.
    implicit = _Resolver.resolve(yaml.ScalarNode, value, (True, False))
    needs_quotes = (
        value == ""
        or implicit != "tag:yaml.org,2002:str"
        or value != value.strip()
        or value[0] in "!&*-?:,[]{}#|>@`\"'%"
        or ": " in value
        or " #" in value
        or "\n" in value
    )
    if needs_quotes:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_GoStyleDumper.add_representer(str, _represent_str)


def marshal(obj: object) -> str:
    """Serialise ``obj`` (dicts, lists, str, int, bool) as Flux's Go code would."""
    return yaml.dump(
        obj,
        Dumper=_GoStyleDumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
    )
