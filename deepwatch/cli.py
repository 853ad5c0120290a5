"""The ``deepwatch`` command line.

Results go to stdout (with ``--json``: exactly one JSON document); logs and progress go to stderr.
Exit codes: 0 success, 1 failure at run time, 2 bad input or a part that is not built yet.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from deepwatch.contracts import ContractError
from deepwatch.settings import Settings, load_settings

app = typer.Typer(
    name="deepwatch",
    help="Watch social media for deepfakes: crawl, deduplicate, score, search, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
detectors_app = typer.Typer(help="Detectors: list them, run the sanity check.", no_args_is_help=True)
models_app = typer.Typer(help="Model weights.", no_args_is_help=True)
config_app = typer.Typer(help="Settings.", no_args_is_help=True)
app.add_typer(detectors_app, name="detectors")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

stderr = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML settings file (env: DEEPWATCH_CONFIG)", show_default=False)
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory (env: DEEPWATCH_DATA_DIR)", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int, as_json: bool = False, **extra: Any) -> NoReturn:
    if as_json:
        emit_json({"error": message, **extra})
    stderr.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def settings_for(config: Path | None, data_dir: Path | None, as_json: bool = False, **overrides: Any) -> Settings:
    try:
        settings = load_settings(config, data_dir=data_dir, **overrides)
    except ContractError as exc:
        fail(str(exc), 2, as_json, fields=exc.fields)
    logging.basicConfig(
        level=settings.log_level.upper(),
        handlers=[RichHandler(console=stderr, show_path=False, rich_tracebacks=False)],
        format="%(name)s: %(message)s",
        force=True,
    )
    for noisy in ("httpx", "httpcore", "kafka"):  # per-request INFO lines drown what matters
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    return settings


def missing(command: str, part: str, issue: int, as_json: bool = False) -> NoReturn:
    """A command whose part has not been built yet says so, and exits 2."""
    fail(f"`deepwatch {command}` needs {part}, which is not built yet (issue #{issue})", 2, as_json,
         missing=part, issue=issue)


# --- running the system -----------------------------------------------------------------------


@app.command()
def up(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api_port: Annotated[int | None, typer.Option(help="API port (env: DEEPWATCH_API_PORT)")] = None,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for every part")] = 90.0,
) -> None:
    """Run the whole system on this machine with embedded defaults (Ctrl-C stops it)."""
    from deepwatch.embedded.stack import Stack

    settings = settings_for(config, data_dir, api_port=api_port)
    stack = Stack(
        settings,
        str(config) if config else None,
        report=lambda message: stderr.print(message, highlight=False),
        progress=lambda message: stderr.status(message),
    )
    code = stack.run(ready_timeout)
    raise typer.Exit(code)


@app.command()
def serve(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run the Ray Serve app (API and detectors) until stopped."""
    from serve.app import run_serve

    settings = settings_for(config, data_dir)
    overrides = {"data_dir": str(data_dir)} if data_dir else {}
    run_serve(settings, str(config) if config else None, overrides)


@app.command()
def worker(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run the Faust stream worker until stopped."""
    from deepwatch.endpoints import with_running_stack
    from stream.app import run_worker

    settings = with_running_stack(settings_for(config, data_dir))
    if not settings.kafka_bootstrap:
        fail("no Kafka: set DEEPWATCH_KAFKA_BOOTSTRAP or start `deepwatch up` with this data directory", 2)
    run_worker(settings, settings.kafka_bootstrap)


@app.command()
def crawl(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    sources: Annotated[Path | None, typer.Option(help="YAML sources file")] = None,
    status: Annotated[bool, typer.Option("--status", help="show each source's last run and error")] = False,
) -> None:
    """Run the crawlers on their schedule until stopped."""
    from ingest.crawler import run_crawler

    settings = settings_for(config, data_dir)
    if status:
        missing("crawl --status", "the source scheduler", 5)
    try:
        run_crawler(settings, sources)
    except ContractError as exc:
        fail(str(exc), 2)


# --- one-off commands ----------------------------------------------------------------------------


@app.command()
def submit(
    urls: Annotated[list[str], typer.Argument(help="media or page URLs")],
    source: Annotated[str, typer.Option(help="source name recorded on the event")] = "cli",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the events, publish nothing")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Publish URLs for scoring (to the running `deepwatch up` of this data directory, or DEEPWATCH_KAFKA_BOOTSTRAP)."""
    from deepwatch.endpoints import with_running_stack
    from deepwatch.media.errors import MediaError
    from ingest.events import discovered
    from ingest.producer import PublishError, UrlPublisher

    settings = with_running_stack(settings_for(config, data_dir, as_json))
    events, errors = [], []
    for url in urls:
        try:
            events.append(discovered(url, source))
        except (MediaError, ContractError) as exc:
            errors.append({"url": url, "error": str(exc)})
    published: list[tuple[int, int]] = []
    if events and not dry_run:
        if not settings.kafka_bootstrap:
            fail("no Kafka: start `deepwatch up` with this data directory or set DEEPWATCH_KAFKA_BOOTSTRAP", 1, as_json)
        try:
            with UrlPublisher(settings.kafka_bootstrap) as publisher:
                published = publisher.publish(events)
        except PublishError as exc:
            fail(str(exc), 1, as_json)
    documents = [e.model_dump(mode="json") for e in events]
    if as_json:
        emit_json({"published": len(published), "dry_run": dry_run, "events": documents, "errors": errors})
    else:
        for event in events:
            stderr.print(f"{'would publish' if dry_run else 'published'} {event.canonical_url}", highlight=False)
        for error in errors:
            stderr.print(f"[red]refused[/red] {error['url']}: {error['error']}", highlight=False)
    if errors:
        raise typer.Exit(2)


@app.command()
def score(
    path: Annotated[str, typer.Argument(help="media file or URL")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Score one media file with the detector ensemble."""
    missing("score", "the detector ensemble", 7, as_json)


@app.command()
def match(
    file_a: Annotated[Path, typer.Argument()],
    file_b: Annotated[Path, typer.Argument()],
    as_json: JsonOpt = False,
) -> None:
    """Compare two media files: duplicate, variant or different."""
    missing("match", "the media fingerprints", 4, as_json)


@app.command()
def search(
    text: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Search the index (moderation filters)."""
    missing("search", "the search index", 3, as_json)


@app.command()
def similar(
    target: Annotated[str, typer.Argument(help="media file or media_id")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List near-duplicates of a file or record."""
    missing("similar", "the search index", 3, as_json)


@app.command()
def export(
    out: Annotated[str, typer.Option("--out", help="directory or s3://bucket/prefix")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a dataset of flagged fakes."""
    missing("export", "the dataset exporter", 9, as_json)


@detectors_app.command("list")
def detectors_list(as_json: JsonOpt = False) -> None:
    """List the registered detectors."""
    missing("detectors list", "the detector registry", 7, as_json)


@detectors_app.command("sanity")
def detectors_sanity(as_json: JsonOpt = False) -> None:
    """Run every detector on bundled test media."""
    missing("detectors sanity", "the detector registry", 7, as_json)


@models_app.command("pull")
def models_pull(as_json: JsonOpt = False) -> None:
    """Fetch detector weights into the models directory."""
    missing("models pull", "the detector registry", 7, as_json)


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="benchmark name")],
    quick: Annotated[bool, typer.Option("--quick", help="the small version, fit for CI")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a benchmark (see ../shared/BENCHMARKS.md for the output)."""
    missing(f"bench {name}", f"the {name!r} benchmark", 3, as_json)


@config_app.command("show")
def config_show(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """Print the effective settings, secrets masked."""
    settings = settings_for(config, data_dir, as_json)
    masked = settings.masked()
    if as_json:
        emit_json(masked)
        return
    from rich.table import Table

    table = Table("setting", "value", title="effective settings")
    for key, value in masked.items():
        table.add_row(key, json.dumps(value))
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
