"""The bridge card: what a translator was trained for (models by hash, widths, layout, versions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentbridge.errors import LatentBridgeError
from latentbridge.io.atomic import write_synced
from latentbridge.io.digest import json_digest

CARD_FILE = "bridge_card.json"


# -- the bridge card ----------------------------------------------------------------------------------


# evaluation systems that became defaults after runs were made: left out of the hash (as options added later
# are left out at their defaults), so a run made before them resumes, its later evaluations gaining them
LATER_DEFAULT_SYSTEMS = ("covgauss", "randomrot")


# translator fields added later, by translator: at these values a recipe is the one it was before them
LATER_TRANSLATOR_DEFAULTS = {"c2c": {"include_response": False, "dtype": "auto"}}
# translator fields added later that only chat templates read: left out at their default where the task has none
# (a recipe with chat templates hashes anew: the added field's default changed what it does)
UNREAD_WITHOUT_CHAT = {"c2c": {"chat_alignment": "auto"}}
# translator fields added later whose default changed what a recipe does: by translator, per field, the value a
# recipe had before it, from its other fields. A recipe at that value hashes as before; a run folder's recipe
# written before the field is read at that value (a run made then is evaluated and resumed as it was trained)
FORMER_TRANSLATOR_VALUES = {"c2c": {"special_tokens": lambda c: "fused" if c.get("alignment") == "last_character"
                                    else "own"}}
# the soft-token fields every translator config had before SoftTokenConfig (by translator: their default)
FORMER_SOFT_FIELDS = {"scale": "target_rms", "target_rms": None}
FORMER_SOFT_DEFAULTS = {"ac": {"scale": "none"}}


def _translator_as_hashed_before(translator: dict[str, Any]) -> dict[str, Any]:
    """A translator config as recipes hashed it before the fields it gained or lost since: a run started then
    resumes. A field added later is left out at its default; a config without the soft-token fields gets
    them back at the values every such recipe held (they did nothing outside soft tokens)."""
    name, config = translator["name"], dict(translator)  # the recipe's flat block: name and fields
    for key, default in LATER_TRANSLATOR_DEFAULTS.get(name, {}).items():
        if key in config and config[key] == default:
            del config[key]
    for key, former in FORMER_TRANSLATOR_VALUES.get(name, {}).items():
        if key in config and config[key] == former(config):
            del config[key]
    if "scale" not in config and "target_rms" not in config:
        config.update({**FORMER_SOFT_FIELDS, **FORMER_SOFT_DEFAULTS.get(name, {})})
    return config


def recipe_hash(recipe_dict: dict[str, Any]) -> str:
    """Hash of the resolved recipe: what is trained and evaluated. Where the run is written and what
    watches it (its loggers) are left out, so adding a logger to a resumed run is allowed; so are the
    evaluation systems that became defaults later (:data:`LATER_DEFAULT_SYSTEMS`)."""
    data = {k: v for k, v in recipe_dict.items() if k not in ("run_dir", "loggers")}
    translator = data.get("translator")
    if isinstance(translator, dict) and "name" in translator:
        data["translator"] = _translator_as_hashed_before(translator)
        task = data.get("task")
        chat = isinstance(task, dict) and task.get("chat_template") and translator.get("alignment") != "last_character"
        if not chat:  # without chat templates (or with c2c's last_character alignment) it changes nothing
            for key, default in UNREAD_WITHOUT_CHAT.get(translator["name"], {}).items():
                if data["translator"].get(key) == default:
                    data["translator"] = {k: v for k, v in data["translator"].items() if k != key}
    evaluation = data.get("eval")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("systems"), list):
        data["eval"] = {**evaluation, "systems": [s for s in evaluation["systems"] if s not in LATER_DEFAULT_SYSTEMS]}
    return json_digest(data, 16)


def bridge_card(experiment: Any) -> dict[str, Any]:
    """What a translator was trained for: the models (by hash), widths, vocabularies, layout and versions."""
    from latentbridge._version import __version__

    b = experiment.bridge
    recipe = experiment.recipe

    def side(model: Any) -> dict[str, Any]:
        return {
            "name": model.name,
            "config_hash": model.fingerprint["config"],
            "tokenizer_hash": model.fingerprint["tokenizer"],
            "hidden_size": model.hidden_size,
            "vocab_size": model.vocab_size,
        }

    return {
        "source": side(b.source),
        "target": side(b.target),
        "source_layer": b.source_layer,
        "k": b.translator.k,
        "translator": recipe.translator.name,
        "injection": recipe.injection.name,
        "latentbridge": __version__,
        "plugins": experiment.plugin_versions(),
        "recipe_hash": recipe_hash(recipe.to_dict()),
    }


CARD_CHECKED = [
    ("source", "config_hash"), ("source", "tokenizer_hash"), ("source", "hidden_size"), ("source", "vocab_size"),
    ("target", "config_hash"), ("target", "tokenizer_hash"), ("target", "hidden_size"), ("target", "vocab_size"),
    ("source_layer", None), ("k", None), ("translator", None),
]


def check_card(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse a translator made for another model pair, saying what differs."""
    diffs = []
    for key, sub in CARD_CHECKED:
        a = saved.get(key) if sub is None else (saved.get(key) or {}).get(sub)
        b = current.get(key) if sub is None else (current.get(key) or {}).get(sub)
        if a != b:
            name = key if sub is None else f"{key}.{sub}"
            diffs.append(f"{name} {a} -> {b}")
    if diffs:
        made_for = f"{saved['source']['name']} -> {saved['target']['name']}"
        now = f"{current['source']['name']} -> {current['target']['name']}"
        raise LatentBridgeError(
            f"{where} was trained for {made_for}, not for {now}: " + "; ".join(diffs)
        )


def as_run_made(data: dict[str, Any]) -> dict[str, Any]:
    """A run folder's recipe data with each translator field it lacks (written before the field existed) at the
    value the run was made with (:data:`FORMER_TRANSLATOR_VALUES`)."""
    translator = data.get("translator")
    if isinstance(translator, dict):
        for key, former in FORMER_TRANSLATOR_VALUES.get(translator.get("name"), {}).items():
            translator.setdefault(key, former(translator))
    return data


def read_card(folder: Path) -> dict[str, Any] | None:
    path = folder / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_card(folder: Path, card: dict[str, Any]) -> None:
    write_synced(folder / CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
