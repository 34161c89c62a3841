"""Commands for plugins: list-plugins, describe."""

from __future__ import annotations

import json
from dataclasses import MISSING

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import app, console
from latentbridge.config.schema import config_fields, did_you_mean, show_value
from latentbridge.errors import LatentBridgeError
from latentbridge.registry.host import DISABLE_ENV, KINDS, PluginInfo, get_registry

LIST_HELP = (
    "List every registered plugin: kind, name, status, provider and a one-line description.\n\n"
    'A name registered by two providers is listed twice with status "ambiguous" (a recipe that uses it '
    "fails, naming both). Plugins that failed to load are listed under the table; the rest work. The exit "
    "code is 0 even when there are problems.\n\n"
    "--json prints one list: an object per plugin (kind, name, status, distribution, version, module, "
    'description), then an object per load problem with "kind": "problem", "status" and "problem" saying '
    "what went wrong (import-error, hook-error, invalid-class, unknown-hook, invalid-plugin, ambiguous, "
    'bad-setting), "plugin_kind", "name", the provider\'s distribution, version and module where known, and '
    '"message" (also in "description"). Keep the rows whose kind is a plugin kind to ignore problems.'
)
DESCRIBE_HELP = (
    "Show a plugin's config: every key with its type, default and meaning.\n\n"
    "For an ambiguous name (registered by two providers) it says so and shows each provider's config; "
    "--provider DIST shows only that one."
)


@app.command("list-plugins", help=LIST_HELP)
def list_plugins(
    as_json: bool = typer.Option(
        False, "--json", help='Print JSON: a list of plugin objects, then one object per load problem ("kind": "problem").'
    ),
    kind: str = typer.Option(
        None, "--kind", help="Only this kind: objective, translator, injection, task, logger, system or quantity."),
) -> None:
    kinds = [*KINDS, "quantity"]
    if kind is not None and kind not in kinds:
        raise LatentBridgeError(f"--kind: unknown kind '{kind}'; use one of {', '.join(kinds)}{did_you_mean(kind, kinds)}")
    registry = get_registry()
    rows = [p.as_json() for p in registry.all() if kind is None or p.kind == kind]
    if kind in (None, "quantity"):
        rows += quantity_rows(registry)
    problems = [p for p in registry.problems if kind is None or p.kind in (None, kind)]
    if as_json:
        typer.echo(json.dumps(rows + [p.as_json() for p in problems], indent=2))
        return
    table = Table(title="latentbridge plugins")
    for column in ("kind", "name", "status", "distribution", "version", "description"):
        table.add_column(column, overflow="fold")
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"[bold red]{r['status']}[/]"
        table.add_row(r["kind"], r["name"], status, r["distribution"], r["version"], escape(r["description"]))
    console.print(table)
    if problems:
        console.print(f"[bold red]{len(problems)} plugin problem{'s' if len(problems) != 1 else ''}:[/]")
        for problem in problems:
            console.print(f"  {problem.problem}: {escape(problem.message)}", highlight=False)
    if registry.disabled:
        skipped = ", ".join(str(p) for p in registry.disabled)
        console.print(f"skipped by {DISABLE_ENV}: {escape(skipped)}", highlight=False)


def quantity_rows(registry) -> list[dict]:
    """The shared step quantities as list-plugins rows (kind ``quantity``; the help text as description)."""
    helps = {q.name: q.help for q in registry.quantities()}
    rows = []
    for name, providers in registry.quantity_providers().items():
        for p in providers:
            rows.append({"kind": "quantity", "name": name, "status": "ok" if len(providers) == 1 else "ambiguous",
                         "distribution": p.distribution, "version": p.version, "module": p.module,
                         "description": helps.get(name, "")})
    return rows


def _show(info: PluginInfo) -> None:
    console.print(f"[bold]{info.kind} {info.name}[/] from {escape(str(info.provider))}")
    console.print(escape(info.description))
    needs = sorted(getattr(info.cls, "needs", ()))
    if info.kind == "objective":
        console.print(f"needs: {', '.join(needs) or 'nothing shared'} (see `latentbridge list-plugins --kind quantity`)",
                      highlight=False)
        trains = info.cls.messages
        console.print(f"trains messages: {', '.join(trains) if trains is not None else 'any kind'}", highlight=False)
    if info.kind == "translator":
        extra = " (reads the source's key/value cache)" if info.cls.reads_cache else ""
        from latentbridge.api.messages import layout_of

        family = layout_of(info.cls.emits)
        console.print(f"emits: {info.cls.emits}{f' (layout {family})' if family else ''}{extra}", highlight=False)
    if info.kind == "injection":
        console.print(f"accepts messages: {', '.join(info.cls.accepts)} (layout families or kinds)", highlight=False)
    if info.kind == "system":
        default = "evaluated by default" if info.cls.default else "evaluated when eval.systems names it"
        console.print(f"role: {info.cls.role} ({default}; settings: eval.system_config.{info.name})", highlight=False)
    table = Table(show_header=True)
    for column in ("key", "type", "default", "meaning"):
        table.add_column(column, overflow="fold")
    for key, words, default, help_text in config_fields(info.cls.Config):
        shown = "(required)" if default is MISSING else show_value(default)
        table.add_row(key, escape(words), escape(shown), escape(help_text))
    console.print(table)


@app.command("describe", help=DESCRIBE_HELP)
def describe(
    name: str = typer.Argument(..., help="Plugin name, e.g. nll or linear."),
    kind: str = typer.Option(None, "--kind", help="Disambiguate when several kinds share the name."),
    provider: str = typer.Option(
        None, "--provider", help="For a name two distributions provide: the distribution (or module) to show."
    ),
) -> None:
    registry = get_registry()
    if kind is not None:
        kind = _kind_named(kind)
    matches = [p for p in registry.all() if p.name == name and (kind is None or p.kind == kind)]
    quantities = [r for r in quantity_rows(registry) if r["name"] == name] if kind in (None, "quantity") else []
    if quantities and matches:
        raise LatentBridgeError(f"'{name}' names several plugins ({matches[0].kind}, quantity); add --kind")
    if quantities:
        for r in quantities:
            console.print(f"[bold]quantity {name}[/] from {escape(r['module'])} ({escape(r['distribution'])} "
                          f"{escape(r['version'])}): {escape(r['description'])}", highlight=False)
        return
    if not matches:
        every = sorted({p.name for p in registry.all() if kind is None or p.kind == kind}
                       | ({r["name"] for r in quantity_rows(registry)} if kind in (None, "quantity") else set()))
        what = f"{KINDS[kind].words} " if kind in KINDS else ""
        elsewhere = sorted({p.kind for p in registry.all() if p.name == name})
        hint = f" ('{name}' is a {' and a '.join(elsewhere)}: --kind {elsewhere[0]})" if elsewhere else \
            did_you_mean(name, every)
        raise LatentBridgeError(f"unknown {what or 'plugin '}'{name}'{hint}; see `latentbridge list-plugins`")
    kinds = list(dict.fromkeys(p.kind for p in matches))
    if len(kinds) > 1:
        raise LatentBridgeError(f"'{name}' names several plugins ({', '.join(kinds)}); add --kind")
    if provider is not None:
        chosen = registry.find_provider(matches, provider)
        if not chosen:
            offered = ", ".join(str(p.provider) for p in matches)
            raise LatentBridgeError(f"--provider: no {KINDS[kinds[0]].words} '{name}' from '{provider}'; provided by {offered}")
        matches = chosen
    if len(matches) > 1:
        console.print(f"[bold red]{escape(registry.ambiguous_message(kinds[0], name))}[/]", highlight=False)
        console.print("Each provider's config follows; pick one with --provider DIST.\n", highlight=False)
    for i, info in enumerate(matches):
        if i:
            console.print()
        _show(info)


def _kind_named(kind: str) -> str:
    """``--kind`` as a kind's name: singular or plural (``translators``), any case; else one line, exit 2."""
    wanted = kind.strip().lower()
    known = [*KINDS, "quantity"]
    for name in known:
        if wanted in (name, f"{name}s", name.replace("_", "-"), f"{name.replace('_', '-')}s") or \
                (name.endswith("y") and wanted == f"{name[:-1]}ies"):
            return name
    raise LatentBridgeError(f"--kind {kind!r}: not a kind{did_you_mean(wanted, known)}; the kinds: {', '.join(known)}")
