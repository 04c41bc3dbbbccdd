"""Configuration shared by the ``ofa`` commands: options from a YAML file (``ofa ingest --config``,
``ofa train --config``) and argparse options built from a config dataclass's fields (``add_options``),
so each default is written once, on its field."""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Callable


def load_yaml_options(path: str, known: Collection[str]) -> dict[str, Any]:
    """Read ``path`` as a mapping of option names (dashes or underscores) to values.

    Raises ``ValueError`` naming the file for bad YAML, a non-mapping document or an unknown
    option; ``OSError`` (e.g. a missing file) passes through.
    """
    import yaml

    with open(path) as f:
        try:
            doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values, got {type(doc).__name__}")
    out = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(f"{path}: unknown option {key!r} (known: {', '.join(sorted(known))})")
        out[name] = value
    return out


def json_object(text: str) -> dict:
    """An argparse type: a JSON object (e.g. ``--storage-options '{"anon": true}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


@dataclass(frozen=True)
class Flag:
    """How one field of a config dataclass shows on the command line; its default stays on the field."""

    help: str
    flag: str | None = None                 # default: --field-name
    type: Callable[[str], Any] | None = None  # default: the field's annotated type (int, float, str)
    choices: Sequence[Any] | None = None
    action: str | None = None               # e.g. "append" for list fields given once per value
    metavar: str | None = None
    default_text: str | None = None         # what "(default: ...)" says when the field's value is not it (None: derived)


_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}


def _scalar(annotation: Any) -> str:
    """The one scalar type name of a field annotation such as ``int`` or ``"int | None"`` (else ``""``)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    names = [t.strip() for t in text.split("|") if t.strip() != "None"]
    return names[0] if len(names) == 1 and names[0] in _SCALARS else ""


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (``default_factory()`` called), or ``dataclasses.MISSING``."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def add_options(parser: argparse.ArgumentParser, cls: type, flags: dict[str, Flag], suppress: bool = False,
                exclusive: Sequence[Sequence[str]] = ()) -> None:
    """Add one ``--option`` per entry of ``flags`` (field name of dataclass ``cls`` -> ``Flag``), in order:
    type from the field's annotation, bools as switches (``--no-x`` for a field that defaults to True),
    help ending in the field's default. The parsed value lands under the field's name. With ``suppress``,
    an option not given is absent from the namespace (so a config file can fill it); otherwise it holds
    the field's default. Each set of names in ``exclusive`` is a mutually exclusive group."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    group_of = {}
    for names in exclusive:
        group = parser.add_mutually_exclusive_group()
        group_of.update(dict.fromkeys(names, group))
    for name, spec in flags.items():
        f = fields[name]
        default = field_default(f)
        kind = _scalar(f.type)
        kwargs: dict[str, Any] = {"dest": name}
        flag = spec.flag or "--" + name.replace("_", "-")
        if kind == "bool" and spec.type is None:
            kwargs["action"] = "store_false" if default is True else "store_true"
            if default is True and not spec.flag:
                flag = "--no-" + name.replace("_", "-")
        else:
            kwargs["type"] = spec.type or _SCALARS.get(kind, str)
            for key in ("choices", "action", "metavar"):
                if getattr(spec, key) is not None:
                    kwargs[key] = getattr(spec, key)
            if spec.flag and not spec.metavar and not spec.choices:
                kwargs["metavar"] = spec.flag.lstrip("-").replace("-", "_").upper()
        shown = spec.default_text if spec.default_text is not None else (
            None if default is None or default is dataclasses.MISSING or default == [] or kind == "bool" else default)
        kwargs["help"] = spec.help if shown is None else f"{spec.help} (default: {str(shown).replace('%', '%%')})"
        if suppress:
            kwargs["default"] = argparse.SUPPRESS
        elif default is not dataclasses.MISSING:
            kwargs["default"] = default
        group_of.get(name, parser).add_argument(flag, **kwargs)


def from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of dataclass ``cls`` from the parsed fields present in ``args``, then ``overrides``."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**values, **overrides})
