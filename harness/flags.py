"""Flags declared once: a dataclass field's default, type, bounds and help make its command-line flag.

    lr: float = flag(3e-4, "Adam step size, actor and critic", above=0)

gives `--lr X`, a finite float that must be > 0, with the help `Adam step size, actor and critic
(> 0; default: 0.0003)`. A field whose type is itself such a dataclass (RunConfig.td3) brings its
fields in as flags of their own. The same fields turn parsed flags back into the dataclass
(`build`) and into config.json's "flags" (`flat`); values read back from a file are checked as the
command line's (`check_value`), as values, never as command-line words.
"""
import argparse
import dataclasses
import inspect
import math
import os
import sys
import typing
from typing import Any, Callable


# What a flag's metadata may say, and what it means when it says nothing: low/high are inclusive
# bounds, above/below exclusive ones; `also` lists words taken besides numbers ('auto'); `unset`
# says what a None default means; `aliases` are other names of the flag (a value given
# under one is parsed, checked and recorded under the flag's own name); `agents` the agents it
# acts on (None: all); `needs` = (flag, condition) without which it has no effect.
METADATA = dict(help="", low=None, high=None, above=None, below=None, choices=None, also=(), unset="off",
                metavar=None, aliases=(), agents=None, needs=None)


def flag(default: Any, help: str, **metadata) -> dataclasses.Field:
    """A dataclass field that is also a flag; `metadata` takes the keys of METADATA."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def meta(f: dataclasses.Field) -> dict:
    """A field's flag metadata, every key of METADATA filled in."""
    return METADATA | dict(f.metadata)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, `runner.py: error: <where>...`, exit status 2, and whole flag names only.

    No abbreviations: argparse would take --total_step for --total_steps, and a sweep's own
    flags would swallow the abbreviation of a runner flag.
    """

    where = ""  # what the values came from, when not the command line: 'results/x/config.json: '

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {self.where}{message}\n")


def fail(prog: str, message: str) -> SystemExit:
    """A one-line error with exit status 2, for what is wrong beyond parsing (raise the result)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return SystemExit(2)


def leaf_fields(cls: type) -> list[dataclasses.Field]:
    """The flag fields of cls, those of a nested dataclass in its place."""
    found = []
    for f in dataclasses.fields(cls):
        found += leaf_fields(f.type) if dataclasses.is_dataclass(f.type) else [f]
    return found


def kinds(t: Any) -> set:
    """The plain types inside a type hint: `tuple[int, ...] | None` -> {int, NoneType}."""
    args = [a for a in typing.get_args(t) if a is not Ellipsis]
    return set().union(*map(kinds, args)) if args else {t}


def is_list(f: dataclasses.Field) -> bool:
    """Whether the flag takes one or more values (`nargs="+"`)."""
    return any(typing.get_origin(t) in (list, tuple) for t in (f.type, *typing.get_args(f.type)))


def value_kind(f: dataclasses.Field) -> type:
    """bool, int, float or str: what one value of the flag is (`float | str` is a number or a word)."""
    return next(kind for kind in (bool, int, float, str) if kind in kinds(f.type))


def bounds_text(info: dict) -> str:
    """The field's bounds as an error message says them: '>= 0', '> 0 and <= 1'."""
    return " and ".join(f"{symbol} {info[key]:g}" if isinstance(info[key], float) else f"{symbol} {info[key]}"
                        for key, symbol in
                        (("low", ">="), ("above", ">"), ("high", "<="), ("below", "<")) if info[key] is not None)


def alternatives(info: dict) -> str:
    """The words a number flag also takes, as messages say them: " or 'auto'"."""
    return "".join(f" or '{word}'" for word in info["also"])


def in_bounds(value: float, info: dict) -> bool:
    """Whether a number is finite and inside the field's bounds."""
    low, above, high, below = info["low"], info["above"], info["high"], info["below"]
    return (math.isfinite(value) and (low is None or value >= low) and (above is None or value > above)
            and (high is None or value <= high) and (below is None or value < below))


def noun(kind: type) -> str:
    """What one value of a flag of this kind is, as messages say it."""
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a text"}[kind]


def check_number(f: dataclasses.Field, value: int | float, shown: str) -> int | float:
    """A number of the flag's kind inside its bounds, else an ArgumentTypeError showing it as `shown`."""
    kind, info = value_kind(f), meta(f)
    if not in_bounds(value, info):
        must = " ".join(filter(None, (noun(kind), bounds_text(info))))
        raise argparse.ArgumentTypeError(f"must be {must}{alternatives(info)}, got {shown}")
    return value


def value_parser(f: dataclasses.Field) -> Callable[[str], Any]:
    """argparse's `type` for the flag: text -> value, or an error naming what would work."""
    kind, info = value_kind(f), meta(f)

    def parse(text: str):
        if kind is str or text in info["also"]:
            return text
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun(kind)}{alternatives(info)}, got '{text}'") from None
        return check_number(f, value, text)
    return parse


def check_one(f: dataclasses.Field, value: Any) -> Any:
    """One value of the flag as a file holds it (JSON: a number, text, true/false), checked as the command line's
    text would be; an ArgumentTypeError says what would work. Never parsed as words: '--help' is a text."""
    kind, info = value_kind(f), meta(f)
    if isinstance(value, str) and value in info["also"]:
        return value
    fits = {bool: type(value) is bool, int: type(value) is int, float: type(value) in (int, float),
            str: isinstance(value, str)}[kind]
    if not fits:
        raise argparse.ArgumentTypeError(f"expected {noun(kind)}{alternatives(info)}, got {value!r}")
    if info["choices"] and value not in info["choices"]:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from "
                                         f"{', '.join(map(repr, info['choices']))})")
    if kind in (int, float):
        try:
            value = kind(value)
        except OverflowError:  # an integer too large for a float
            raise argparse.ArgumentTypeError(f"must be {noun(kind)} {bounds_text(info)}, got {value}") from None
        return check_number(f, value, repr(value))
    return value


def check_value(f: dataclasses.Field, value: Any) -> Any:
    """A flag's value as a file holds it (a list for a list flag, None where None is the default), checked;
    tuples for lists. An ArgumentTypeError says what is wrong."""
    if value is None and f.default is None:
        return None
    if not is_list(f):
        return check_one(f, value)
    if not isinstance(value, (list, tuple)):
        raise argparse.ArgumentTypeError(f"expected a list, each {noun(value_kind(f))}, got {value!r}")
    if not value:
        raise argparse.ArgumentTypeError("expected at least one argument")
    return tuple(check_one(f, v) for v in value)


def default_text(f: dataclasses.Field) -> str:
    """The default as --help shows it: 128 128, 0.0003, off."""
    value = f.default
    if value is None or value is False:
        return meta(f)["unset"]
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text(f: dataclasses.Field) -> str:
    """The flag's help: its text, then its bounds and default, e.g. 'discount factor (>= 0 and < 1; default: 0.99)'."""
    info = meta(f)
    notes = [bounds_text(info) + alternatives(info)] if value_kind(f) in (int, float) else []
    if f.default is not dataclasses.MISSING:
        notes.append(f"default: {default_text(f)}")
    return f"{info['help']} ({'; '.join(filter(None, notes))})" if any(notes) else info["help"]


def add_flags(parser: argparse.ArgumentParser, cls: type, given_only: bool = False) -> None:
    """One flag per field of cls, a help group per dataclass; given_only: no defaults, so only given flags parse."""
    doc = (cls.__doc__ or "").strip().splitlines()[0]
    group = parser.add_argument_group(f"{cls.__name__} ({os.path.basename(inspect.getfile(cls))})", doc)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            add_flags(parser, f.type, given_only)
            continue
        kind, info, required = value_kind(f), meta(f), f.default is dataclasses.MISSING
        options = dict(help=help_text(f), default=argparse.SUPPRESS if given_only or required else f.default)
        if kind is bool:
            options["action"] = "store_true"
        else:
            metavar = info["metavar"] or {int: "N", float: "X"}.get(kind, f.name.upper())
            options |= dict(type=value_parser(f), nargs="+" if is_list(f) else None, choices=info["choices"],
                            metavar="|".join((metavar, *info["also"])) if not info["choices"] else None,
                            required=required)
        if not info["aliases"]:
            group.add_argument(f"--{f.name}", **options)
            continue
        # each name its own option, so that an error names the one typed; at most one of them given
        either = group.add_mutually_exclusive_group(required=options.pop("required", False))
        either.add_argument(f"--{f.name}", **options)
        for alias in info["aliases"]:
            either.add_argument(f"--{alias}", **options | dict(dest=f.name, help=f"the same as --{f.name}"))


def build(cls: type, values: dict) -> Any:
    """An instance of cls from flat flag values (lists become tuples); absent values take the default."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            kwargs[f.name] = build(f.type, values)
        elif f.name in values:
            value = values[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def flat(config: Any) -> dict:
    """A config's flags as one flat dict, in declaration order (config.json's "flags")."""
    values = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values |= flat(value) if dataclasses.is_dataclass(value) else {f.name: value}
    return values


def show_value(value: object) -> str:
    """A flag value as a label shows it: 10 not 10.0, 256,256 for a list, exact enough to tell values apart."""
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)
