"""``latentbridge cache``: what is cached on disk (source hidden states, baseline outputs), and clearing it."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from latentbridge.cli.app import app, console
from latentbridge.errors import LatentBridgeError

cache_app = typer.Typer(no_args_is_help=True, help="The on-disk caches: source hidden states and baseline outputs.")
app.add_typer(cache_app, name="cache")


def _root(directory: str | None):
    from pathlib import Path

    from latentbridge.io.caches import cache_root

    return Path(directory).expanduser() if directory else cache_root()


@cache_app.command("info")
def cache_info(
    directory: str = typer.Option(None, "--dir", help="Cache folder (default: $LATENTBRIDGE_CACHE_DIR or ~/.cache/latentbridge)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the caches: kind, key, entries (shards or files), size."""
    from latentbridge.io.caches import cache_entries

    root = _root(directory)
    rows = cache_entries(root)
    if as_json:
        typer.echo(json.dumps({"root": str(root), "entries": rows}, indent=2))
        return
    table = Table(title=f"cache in {escape(str(root))}")
    for column in ("kind", "key", "what", "entries", "size"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["kind"], r["key"], escape(r["what"]), str(r["entries"]), f"{r['bytes'] / 2**20:.1f} MiB")
    console.print(table if rows else f"the cache in {escape(str(root))} is empty")


@cache_app.command("clear")
def cache_clear(
    directory: str = typer.Option(None, "--dir", help="Cache folder (default: $LATENTBRIDGE_CACHE_DIR or ~/.cache/latentbridge)."),
    kind: str = typer.Option(None, "--kind", help="Only 'source' or 'baselines'."),
) -> None:
    """Delete cached source hidden states and baseline outputs (they are recomputed when needed)."""
    from latentbridge.io.caches import clear_cache

    if kind not in (None, "source", "baselines"):
        raise LatentBridgeError(f"--kind must be 'source' or 'baselines', got '{kind}'")
    freed = clear_cache(_root(directory), kind)
    console.print(f"cleared {freed / 2**20:.1f} MiB")
