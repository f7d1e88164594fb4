"""A recipe resolved from its file: the base it names, its own changes, then command-line ones.

One experiment differs from another in a setting or two; a recipe file may therefore name a
``base`` recipe (a path relative to its own folder) and say only what changes:

    {"base": "multi30k_lr1e-4_long.json", "description": "...",
     "set": {"mixer.mixer-epochs-per-stage": "3"}}

Its other top-level keys (``description``, or a whole step's flags) replace the base's; then
each ``set`` entry, in order, changes one setting, named by a dotted key:

- ``STEP.FLAG`` for the flag lists ``train``, ``model``, ``xent``, ``mixer`` and ``xent_more``
  (FLAG without its dashes, ``_`` read as ``-``): a string is the flag's value, replaced
  where the flag stands or, for a new flag, appended; ``true`` is a switch without a value;
  ``null`` removes the flag and its value;
- a path of JSON keys for the rest (``evaluate.batch_size``, ``finetune_from``).

``run_recipe.py --set KEY=VALUE`` makes the same change after the file's: for a flag, VALUE
as written (``null`` removes it, ``--set KEY`` alone adds a switch); elsewhere VALUE is read
as JSON where it parses (``--set evaluate.beams=[1,5]``), else as a string.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path

FLAG_STEPS = ("train", "model", "xent", "mixer", "xent_more")
Override = tuple[str, object]


class RecipeError(Exception):
    """A problem with the recipe or a failed step; reported as one message."""


def read_recipe(path: Path, overrides: Iterable[Override] = ()) -> dict:
    """The recipe of `path` with its base resolved, then `overrides` applied in order."""
    recipe = _resolve(path, seen=())
    for key, value in overrides:
        recipe = apply_override(recipe, key, value)
    return recipe


def _resolve(path: Path, seen: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        raise RecipeError(f"{path}: its bases form a cycle")
    try:
        text = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RecipeError(f"cannot read the recipe {path}: {error}") from None
    if "base" not in text:
        if "set" in text:
            raise RecipeError(f"{path}: 'set' needs a 'base' recipe to change")
        return text
    recipe = _resolve(path.parent / text["base"], (*seen, resolved))
    recipe.update({key: value for key, value in text.items() if key not in ("base", "set")})
    for key, value in text.get("set", {}).items():
        recipe = apply_override(recipe, key, value)
    return recipe


def apply_override(recipe: dict, key: str, value: object) -> dict:
    """A copy of `recipe` with the setting `key` (a dotted key, see the module) at `value`."""
    recipe = copy.deepcopy(recipe)
    step, _, rest = key.partition(".")
    if step in FLAG_STEPS:
        if not rest or step not in recipe:
            raise RecipeError(f"--set {key}: expected STEP.FLAG with STEP one of the recipe's")
        recipe[step] = set_flag(recipe[step], rest, value)
        return recipe
    *parents, leaf = key.split(".")
    node = recipe
    for name in parents:
        if not isinstance(node.get(name), dict):
            raise RecipeError(f"--set {key}: the recipe has no object {name!r} there")
        node = node[name]
    node[leaf] = value
    return recipe


def set_flag(flags: list[str], name: str, value: object) -> list[str]:
    """`flags` with `--name` given `value`: a string, True (a switch) or None (removed)."""
    if not (value is None or value is True or isinstance(value, str)):
        raise RecipeError(f"--{name}: a flag's value is a string, true or null, not {value!r}")
    flag = "--" + name.lstrip("-").replace("_", "-")
    new = [] if value is None else [flag] if value is True else [flag, value]
    if flag not in flags:
        if not new:
            raise RecipeError(f"{flag}: not among the flags {flags}, so not removed")
        return [*flags, *new]
    start = flags.index(flag)
    end = start + 1
    while end < len(flags) and not flags[end].startswith("--"):
        end += 1
    return [*flags[:start], *new, *flags[end:]]


def parse_override(text: str) -> Override:
    """``KEY=VALUE`` of the command line as (key, value); see the module for VALUE."""
    key, equals, raw = text.partition("=")
    if not key or key.startswith("."):
        raise RecipeError(f"--set {text}: expected KEY=VALUE")
    if key.split(".")[0] in FLAG_STEPS:
        if not equals:
            return key, True
        return key, None if raw == "null" else raw
    if not equals:
        raise RecipeError(f"--set {text}: expected KEY=VALUE")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
