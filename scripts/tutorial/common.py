"""Small helpers every fact module uses: rounding for a stable JSON, and a parser's flags as rows."""
import argparse
import math




def r(x, digits: int = 6):
    """Round floats (also inside lists) to `digits` significant digits so the JSON is small and stable."""
    if isinstance(x, (list, tuple)):
        return [r(v, digits) for v in x]
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return 0.0 if x == 0 else x
    return float(f"{x:.{digits}g}")


def jsonable_default(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable_default(v) for v in value]
    return str(value)


def parser_flags(parser: argparse.ArgumentParser, base: dict | None = None) -> list:
    """Every option of a parser: flag, default, type, choices, help, header; `own` marks options or defaults that
    differ from `base` ({dest: default} of the shared parser)."""
    group_of = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            group_of[action.dest] = group.title
    flags = []
    for a in parser._actions:
        if not a.option_strings or a.dest == "help":
            continue
        kind = ("flag" if a.nargs == 0 else getattr(a.type, "__name__", "str") if a.type else "str")
        row = {"flag": max(a.option_strings, key=len), "dest": a.dest, "default": jsonable_default(a.default),
               "type": kind, "choices": jsonable_default(list(a.choices)) if a.choices else None,
               "help": a.help or "", "group": group_of.get(a.dest, "")}
        if base is not None:
            row["shared"] = a.dest in base
            row["stage_default"] = a.dest in base and base[a.dest] != a.default
        flags.append(row)
    return flags


# ---------------------------------------------------------------------------------------------------------- presets
