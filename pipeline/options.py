"""The one way from flags, ``--config FILE.yaml`` and environment variables to typed config: a jsonargparse
parser built from the fields of a command's config dataclasses.

A field with a docstring (the string literal on the line after it) is an option; the docstring is its help.
Nothing else is needed to add an option::

    @dataclass
    class TrainConfig:
        steps: int = 1000
        \"\"\"optimiser steps\"\"\"

gives ``--steps N``, the YAML key ``steps:`` and the environment variable ``OFA_TRAIN__STEPS``, typed by the
annotation (``int``, ``float``, ``str``, ``X | None``, ``list[...]``, ``dict[...]``, ``Literal[...]`` for
choices) with the same rules for all three; a ``bool`` field is a switch (``--cpu`` / ``--no-cpu``). The flag is
the field name with dashes (YAML keys take either spelling); the field's default is the option's. Fields without a
docstring are set by code, not by users. ``field(metadata=...)`` adjusts how a field shows:

- ``flag``: another flag name (``"--collection"`` for ``collections``; the YAML key may be either);
- ``type``: a function from a command-line string or a YAML value to the field's value (must accept its own output);
- ``repeat``: a list given one value per flag, repeated (``--data A --data B``);
- ``nargs``, ``metavar``: as in argparse; ``positional``: a positional argument instead of a flag.

jsonargparse's ``add_class_arguments`` is not used: it names flags ``--batch_size``, makes ``bool`` options take a
value and reads help only from docstrings in a separate package; the flags and keys here stay those of earlier
releases.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import typing
from typing import Any, Iterable


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}`` of the fields of ``cls`` (and its dataclass bases) that have one."""
    docs: dict[str, str] = {}
    for klass in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` that are options (have a docstring), in order."""
    docs = field_docs(cls)
    return [f for f in dataclasses.fields(cls) if f.name in docs]


def flag_of(f: dataclasses.Field) -> str:
    """The command-line flag of an option field: ``--batch-size`` for ``batch_size`` unless metadata renames it."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def field_default(f: dataclasses.Field) -> Any:
    """A field's default (``default_factory()`` called), or None when it has none (the command checks it)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def add_field_options(parser: Any, cls: type, taken: set[str] | None = None) -> None:
    """Add one argument per option field of ``cls`` to jsonargparse ``parser`` (dest = field name).

    ``taken``: names already added by another dataclass of the same command; a second one raises ``ValueError``."""
    from jsonargparse import ActionYesNo

    hints = typing.get_type_hints(cls, localns={})  # not the class namespace: a field may be named `list`
    docs = field_docs(cls)
    taken = set() if taken is None else taken
    for f in option_fields(cls):
        if f.name in taken:
            raise ValueError(f"{cls.__name__}.{f.name}: an option of that name is declared twice for one command")
        taken.add(f.name)
        meta = f.metadata
        kwargs: dict[str, Any] = {"help": docs[f.name], "default": field_default(f)}
        if hints[f.name] is bool and "type" not in meta:
            kwargs["action"] = ActionYesNo(yes_prefix="", no_prefix="no-")
        else:
            kwargs["type"] = meta.get("type", hints[f.name])
        for key in ("nargs", "metavar"):
            if key in meta:
                kwargs[key] = meta[key]
        if meta.get("repeat"):  # one value per flag: --tag TAG, not jsonargparse's list metavar
            kwargs.setdefault("metavar", flag_of(f).lstrip("-").replace("-", "_").upper())
        if meta.get("positional"):
            kwargs.pop("default")
            parser.add_argument(f.name, **kwargs)
        else:
            parser.add_argument(flag_of(f), dest=f.name, **kwargs)


def repeated_flags(classes: Iterable[type]) -> list[str]:
    """The flags of ``repeat`` list options among ``classes``' fields."""
    return [flag_of(f) for cls in classes for f in option_fields(cls) if f.metadata.get("repeat")]


def normalise_argv(argv: list[str], repeated: Iterable[str] = ()) -> list[str]:
    """A command's arguments as jsonargparse reads them, meaning what they meant before it:

    - ``--config FILE`` first, whatever its place, so flags override the file (jsonargparse applies them in order);
    - each flag of ``repeated`` given several times (``--data A --data B``) becomes one list at its first place.
    """
    configs: list[str] = []
    rest: list[str] = []
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if arg == "--":
            rest.extend(argv[i:])
            break
        if name in ("--config", *repeated) and (eq or i + 1 < len(argv)):
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            if name == "--config":
                configs += ["--config", value]
            else:
                if name not in values:
                    values[name] = []
                    rest.append(name)  # placeholder, filled below
                values[name].append(value)
            continue
        rest.append(arg)
        i += 1
    return configs + [a if a not in values else f"{a}={_as_list(values[a])}" for a in rest]


def _as_list(values: list[str]) -> str:
    """One list value for jsonargparse: JSON of ``values``, or the single value itself when already a list."""
    return values[0] if len(values) == 1 and values[0].lstrip().startswith("[") else json.dumps(values)


def build(cls: type, values: dict[str, Any], **overrides: Any) -> Any:
    """An instance of dataclass ``cls`` from the parsed ``values`` of its fields, then ``overrides``.

    A field without a default that is still None (not given by a flag, ``--config`` or the environment) raises
    ``ValueError`` naming its flag."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs.update(overrides)
    missing = [flag_of(f) for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING and kwargs.get(f.name) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (a flag, a --config key or an environment variable)")
    return cls(**kwargs)
