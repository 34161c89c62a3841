"""The recipes shipped with latentbridge (``latentbridge ls`` / ``cp``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from latentbridge.errors import LatentBridgeError
from latentbridge.io.paths import kind_of, user_path


@dataclass(frozen=True)
class ShippedRecipe:
    name: str
    path: Path
    description: str


def recipes_dir() -> Path:
    return Path(str(resources.files("latentbridge.recipes")))


def _description(path: Path) -> str:
    """The first line of the recipe's opening comment."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        break
    return ""


def shipped_recipes() -> list[ShippedRecipe]:
    return [ShippedRecipe(p.stem, p, _description(p)) for p in sorted(recipes_dir().glob("*.yaml"))]


def shipped_recipe(name: str) -> ShippedRecipe:
    stem = name[:-5] if name.endswith(".yaml") else name
    for recipe in shipped_recipes():
        if recipe.name == stem:
            return recipe
    from latentbridge.config.schema import did_you_mean

    names = [r.name for r in shipped_recipes()]
    raise LatentBridgeError(
        f"no shipped recipe named '{name}'{did_you_mean(stem, names)}; see `latentbridge ls`"
    )


def find_recipe(recipe: str) -> Path:
    """A recipe path as given, or a shipped recipe by name."""
    path = user_path(recipe, "recipe")
    kind = kind_of(path, "recipe")
    if kind == "file":
        return path
    if kind is not None:
        raise LatentBridgeError(f"{recipe}: not a file")
    if "/" in recipe or "\\" in recipe:
        raise LatentBridgeError(f"recipe file not found: {recipe}")
    try:
        return shipped_recipe(recipe).path
    except LatentBridgeError:
        from latentbridge.config.schema import did_you_mean

        stem = recipe[:-5] if recipe.endswith(".yaml") else recipe
        hint = did_you_mean(stem, [r.name for r in shipped_recipes()])
        raise LatentBridgeError(
            f"recipe not found: '{recipe}' is neither a file nor a shipped recipe{hint}; see `latentbridge ls`"
        ) from None


def copy_recipe(name: str, dest: str | Path, force: bool = False) -> Path:
    """Copy a shipped recipe to ``dest`` (a file, or a folder to put ``<name>.yaml`` in)."""
    recipe = shipped_recipe(name)
    target = Path(dest).expanduser()
    if target.is_dir():
        target = target / f"{recipe.name}.yaml"
    if target.exists() and not force:
        raise LatentBridgeError(f"{target} already exists; use --force to overwrite it")
    if not target.parent.exists():
        raise LatentBridgeError(f"cannot copy to {target}: folder {target.parent} does not exist")
    shutil.copyfile(recipe.path, target)
    return target
