"""The ``deepwatch`` command line.

Results go to stdout (with ``--json``: exactly one JSON document); logs and progress go to stderr.
Exit codes: 0 success, 1 failure at run time, 2 bad input.
"""

from __future__ import annotations

import functools
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
detectors_app = typer.Typer(help="Detectors: list them, run the sanity check, compare them on a labelled set.",
                             no_args_is_help=True)
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
DetectorsOpt = Annotated[
    str | None, typer.Option("--detectors", help="comma-separated detector names (default: all)", show_default=False)
]
AlignedOpt = Annotated[
    bool, typer.Option("--aligned", help="the media are already aligned face crops: skip face detection")
]


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int, as_json: bool = False, **extra: Any) -> NoReturn:
    if as_json:
        emit_json({"error": message, **extra})
    stderr.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def query_or_fail(as_json: bool, **arguments: Any) -> Any:
    """``storage.query_args.build_query(**arguments)``, or exit 2 naming the options at fault: ``--since``, not
    the query's ``seen_since`` (``fields`` holds the names the API gives its query parameters)."""
    from storage.query_args import build_query

    try:
        return build_query(**arguments)
    except ContractError as exc:
        query_failed(exc, as_json)


def query_failed(exc: ContractError, as_json: bool) -> NoReturn:
    """Exit 2 for a query the index refused, naming the options at fault."""
    from storage.query_args import argument_of

    named = [(argument_of(field), message) for field, message in exc.problems]
    text = "; ".join(f"--{'text' if name == 'q' else name.replace('_', '-')}: {message}" for name, message in named)
    fail(f"invalid search filters: {text}", 2, as_json, fields=list(dict.fromkeys(name for name, _ in named)))


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


# --- running the system -----------------------------------------------------------------------


@app.command()
def up(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api_port: Annotated[int | None, typer.Option(help="API port (env: DEEPWATCH_API_PORT)")] = None,
    ready_timeout: Annotated[float, typer.Option(help="seconds to wait for every part")] = 180.0,
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
    as_json: JsonOpt = False,
) -> None:
    """Run the crawlers on their schedule until stopped (--status: show each source's state and exit)."""
    from ingest.crawler import run_crawler

    settings = settings_for(config, data_dir, as_json)
    if status:
        _crawl_status(settings, as_json)
        return
    try:
        run_crawler(settings, sources)
    except ContractError as exc:
        fail(str(exc), 2)


def _crawl_status(settings: Settings, as_json: bool) -> None:
    """Each source's state, from the running crawler or else the saved state; exit 0 either way."""
    from ingest.status import crawl_status

    document = crawl_status(settings)
    if as_json:
        emit_json(document)
        return
    stderr.print(document["message"], highlight=False)
    if not document["sources"]:
        return
    from rich.table import Table

    table = Table("source", "last run", "last success", "discovered", "published", "next run", "backoff",
                  "last error", title="crawler sources" + (" (running)" if document["running"] else " (saved state)"))
    for name, s in document["sources"].items():
        backoff = f"{s['backoff_s']:g}s ({s['consecutive_failures']} failed)" if s["consecutive_failures"] else ""
        table.add_row(name, s["last_run_at"] or "never", s["last_success_at"] or "never", str(s["discovered"]),
                      str(s["published"]), s["next_run_at"] or "", backoff, s["last_error"] or "")
    Console().print(table)


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
    from deepwatch.publisher import EventPublisher, PublishError
    from deepwatch.url_events import discovered

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
            with EventPublisher(settings.kafka_bootstrap, max_block_s=settings.kafka_publish_timeout_s) as publisher:
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


def _load_chosen(settings: Settings, detectors: str | None, aligned: bool, as_json: bool) -> list[Any]:
    """The detectors ``--detectors`` names (all enabled by default), loaded, and unless the input is ``aligned``
    already, the face landmark weights found (when faces are aligned): an unknown name exits 2, missing weights
    exit 1, before any media is decoded."""
    from deepwatch.media.landmarks import LandmarksUnavailable
    from serve.detectors.base import DetectorError
    from serve.detectors.registry import RegistryError, load_detectors
    from serve.scoring import landmark_weights

    names = [n.strip() for n in detectors.split(",") if n.strip()] if detectors else None
    try:
        loaded = load_detectors(settings, names)
        if not aligned:
            landmark_weights(settings)
        return loaded
    except RegistryError as exc:
        fail(str(exc), 2, as_json)
    except (DetectorError, LandmarksUnavailable) as exc:
        fail(str(exc), 1, as_json)


@app.command()
def score(
    path: Annotated[str, typer.Argument(help="media file or URL")],
    detectors: DetectorsOpt = None,
    aligned: AlignedOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Score one media file, or the media behind an http(s) URL (fetched through the SSRF guard), with the
    detector ensemble, in this process."""
    import tempfile

    from deepwatch.media.errors import MediaError
    from serve.scoring import score_file
    from serve.sources import MediaSource, materialize

    settings = settings_for(config, data_dir, as_json)
    is_url = path.lower().startswith(("http://", "https://"))
    if not is_url and not Path(path).is_file():
        fail(f"{path} is not a file", 2, as_json, file=path)
    loaded = _load_chosen(settings, detectors, aligned, as_json)
    try:
        with tempfile.TemporaryDirectory(prefix="dw-score-") as workdir:
            file = materialize(MediaSource(url=path), settings, Path(workdir)) if is_url else Path(path)
            result = score_file(file, settings, loaded, aligned=aligned)
    except MediaError as exc:
        fail(f"{path}: {exc}", 1, as_json, file=path, kind=type(exc).__name__)
    document = result.to_json()
    if as_json:
        emit_json(document)
        return
    score_text = "-" if result.score is None else f"{result.score:.3f}"
    Console().print(f"{result.verdict} (score {score_text}) {result.kind} {result.media_id}; "
                    f"{result.faces} faces in {result.frames} frames")
    for name, s in result.detectors.items():
        Console().print(f"  {name}: P(fake) {s.p_fake:.3f} over {s.frames} frames ({s.model_version})")


def _fingerprint_or_fail(path: Path, settings: Settings, as_json: bool) -> Any:
    """Fingerprint one file as the stream does (checked by ``normalize`` first: sniffed from its bytes, decoded
    under the time limit, converted where it must be); a file that is not there is bad input (exit 2), one that
    will not decode exit 1."""
    import tempfile

    from deepwatch.media.errors import MediaError
    from deepwatch.media.fingerprint import fingerprint_normalized
    from deepwatch.media.normalize import normalize

    if not path.is_file():
        fail(f"{path} is not a file", 2, as_json, file=str(path))
    try:
        with tempfile.TemporaryDirectory(prefix="dw-fingerprint-") as workdir:
            return fingerprint_normalized(normalize(path, settings=settings, workdir=Path(workdir)), settings=settings)
    except MediaError as exc:
        fail(f"{path}: {exc}", 1, as_json, file=str(path), kind=type(exc).__name__)


@app.command()
def match(
    file_a: Annotated[Path, typer.Argument()],
    file_b: Annotated[Path, typer.Argument()],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Compare two media files: duplicate, variant (same scene, other faces) or different."""
    from deepwatch.media.matching import match as match_fingerprints

    settings = settings_for(config, data_dir, as_json)
    first = _fingerprint_or_fail(file_a, settings, as_json)
    second = _fingerprint_or_fail(file_b, settings, as_json)
    result = match_fingerprints(first, second)
    document = {
        "relation": result.relation,
        "distance": result.distance,
        "matched_fraction": result.matched_fraction,
        "details": {**result.details, "sha256": [first.sha256, second.sha256]},
    }
    if as_json:
        emit_json(document)
        return
    Console().print(
        f"{result.relation}: {result.matched_fraction:.0%} of the shorter's frames matched, "
        f"median PDQ distance {result.distance:g} of 256"
    )


@app.command()
def fingerprint(
    file: Annotated[Path, typer.Argument(help="image or video file")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Fingerprint one media file: sha256, videohash, PDQ of sampled frames and of faces."""
    from dataclasses import asdict

    settings = settings_for(config, data_dir, as_json)
    result = _fingerprint_or_fail(file, settings, as_json)
    document = {
        "file": str(file),
        **{k: v for k, v in asdict(result).items() if k not in ("frames", "faces")},
        "frames": [asdict(f) for f in result.frames],
        "faces": [asdict(f) for f in result.faces],
        "fingerprints": result.to_contract().model_dump(mode="json"),
    }
    if as_json:
        emit_json(document)
        return
    Console().print(
        f"{result.kind} {result.width}x{result.height} sha256 {result.sha256}\n"
        f"videohash {result.videohash or '-'}; {len(result.frames)} frames ({result.decode_mode}), "
        f"{len(result.faces)} faces"
    )


ListOpt = Annotated[list[str] | None, typer.Option(show_default=False)]
# the search filters that search, export, detectors calibrate and reverdict share
KindOpt = Annotated[list[str] | None, typer.Option(help="image or video")]
SinceOpt = Annotated[str | None, typer.Option(help="seen since: 24h, 7d, 2026-11-01, an ISO time")]
UntilOpt = Annotated[str | None, typer.Option(help="seen until (same forms as --since)")]


@app.command()
def search(
    text: Annotated[str | None, typer.Argument(help="words that must all occur (title, uploader, text, URL)")] = None,
    verdict: Annotated[list[str] | None, typer.Option(help="fake, uncertain, real, no_face, error, unscored")] = None,
    min_score: Annotated[float | None, typer.Option(help="lowest ensemble score")] = None,
    max_score: Annotated[float | None, typer.Option(help="highest ensemble score")] = None,
    detector: Annotated[
        list[str] | None, typer.Option(help="per-detector range NAME=MIN:MAX, e.g. mesonet=0.8:1")
    ] = None,
    platform: ListOpt = None,
    source: ListOpt = None,
    kind: KindOpt = None,
    dedup: Annotated[list[str] | None, typer.Option(help="none, url, exact, near")] = None,
    review: Annotated[list[str] | None, typer.Option(help="none (not reviewed), fake, real, unsure")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    sort: Annotated[str, typer.Option(help="score_desc, score_asc, newest, oldest")] = "score_desc",
    limit: Annotated[int, typer.Option(help="records per page (1-500)")] = 20,
    cursor: Annotated[str | None, typer.Option(help="the `next` of the previous page")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Search the index with moderation filters; --json prints {total, items, next}."""
    from storage.index import SearchIndexError, open_index

    settings = settings_for(config, data_dir, as_json)
    query = query_or_fail(as_json, q=text, verdict=verdict, min_score=min_score, max_score=max_score,
                          detector=detector, platform=platform, source=source, kind=kind, dedup=dedup, review=review,
                          since=since, until=until, sort=sort, limit=limit, cursor=cursor)
    try:
        index = open_index(settings)
        try:
            page = index.search(query)
        finally:
            index.close()
    except ContractError as exc:  # a cursor the index cannot read
        query_failed(exc, as_json)
    except SearchIndexError as exc:
        fail(str(exc), 1, as_json)
    if as_json:
        emit_json(page.model_dump(mode="json"))
        return
    _print_records(page.items, f"{page.total} records")
    if page.next:
        stderr.print(f"more: --cursor {page.next}", highlight=False)


def _print_records(records: list[Any], title: str) -> None:
    from rich.table import Table

    table = Table("media_id", "verdict", "score", "first seen", "url", title=title)
    for r in records:
        url = r.sightings[0].canonical_url if r.sightings else ""
        score = "" if r.score is None else f"{r.score:.3f}"
        table.add_row(r.media_id[:12], r.verdict or "unscored", score, r.first_seen.isoformat(timespec="seconds"), url)
    Console().print(table)


@app.command()
def similar(
    target: Annotated[str, typer.Argument(help="media file or media_id")],
    radius: Annotated[
        list[str] | None, typer.Option(help="KIND=BITS, e.g. videohash=8 (defaults: videohash 10, pdq 31)")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List near-duplicates of a media file or a recorded media_id, each confirmed as duplicate, variant or
    different by comparing fingerprints. A file that was never recorded is fingerprinted first."""
    import re

    from deepwatch.digest import sha256_file
    from deepwatch.media.similar import find_similar, stored_fingerprint
    from storage.index import DEFAULT_RADIUS, SearchIndexError, open_index

    settings = settings_for(config, data_dir, as_json)
    radii: dict[str, int] = {}
    for spec in radius or []:
        kind, _, bits = spec.partition("=")
        if kind not in DEFAULT_RADIUS or not bits.isdigit():
            fail(f"--radius {spec!r}: want KIND=BITS with KIND one of {', '.join(DEFAULT_RADIUS)}", 2, as_json)
        radii[kind] = int(bits)
    is_file = not re.fullmatch(r"[0-9a-f]{64}", target)
    if is_file and not Path(target).is_file():
        fail(f"{target!r} is neither a media_id (64 hex digits) nor a file", 2, as_json)
    media_id = sha256_file(Path(target)) if is_file else target
    try:
        index = open_index(settings)
        try:
            record = index.get(media_id)
            if record is None and not is_file:
                fail(f"no record {media_id}", 1, as_json)
            # a recorded file's stored fingerprints are its own: no need to decode it again
            mine = stored_fingerprint(record) if record else _fingerprint_or_fail(Path(target), settings, as_json)
            fingerprints = record.fingerprints if record else mine.to_contract()
            found = find_similar(index, fingerprints, {**DEFAULT_RADIUS, **radii}, mine=mine)
        finally:
            index.close()
    except SearchIndexError as exc:
        fail(str(exc), 1, as_json)
    if as_json:
        emit_json({"media_id": media_id, "file": target if is_file else None, "recorded": record is not None,
                   "radius": {**DEFAULT_RADIUS, **radii},
                   "items": [{"media_id": f.candidate.media_id, "kind": f.candidate.kind,
                              "distance": f.candidate.distance, "via": f.candidate.via,
                              "relation": f.match.relation, "matched_fraction": f.match.matched_fraction,
                              "match_distance": f.match.distance, "record": f.record.model_dump(mode="json")}
                             for f in found]})
        return
    from rich.table import Table

    table = Table("media_id", "relation", "by", "distance", "verdict", "url", title=f"near {media_id[:12]}")
    for f in found:
        r = f.record
        table.add_row(r.media_id[:12], f.match.relation, f"{f.candidate.kind} ({f.candidate.via})",
                      str(f.candidate.distance), r.verdict or "unscored",
                      r.sightings[0].canonical_url if r.sightings else "")
    Console().print(table)


@app.command()
def export(
    out: Annotated[str, typer.Option("--out", help="directory, s3://bucket/prefix, or store:NAME (exports/NAME/)")],
    text: Annotated[str | None, typer.Option("--text", help="words that must all occur (as in search)")] = None,
    verdict: Annotated[list[str] | None, typer.Option(help="narrow by verdict (as in search)")] = None,
    min_score: Annotated[float | None, typer.Option(help="lowest ensemble score")] = None,
    max_score: Annotated[float | None, typer.Option(help="highest ensemble score")] = None,
    detector: Annotated[list[str] | None, typer.Option(help="per-detector range NAME=MIN:MAX")] = None,
    platform: ListOpt = None,
    source: ListOpt = None,
    kind: KindOpt = None,
    dedup: Annotated[list[str] | None, typer.Option(help="none, url, exact, near")] = None,
    review: Annotated[list[str] | None, typer.Option(help="none, fake, real, unsure")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    include_reviewed_real: Annotated[
        bool, typer.Option("--include-reviewed-real", help="also export flagged items a reviewer labelled real")
    ] = False,
    export_format: Annotated[str, typer.Option("--format", help="hf, webdataset or parquet")] = "hf",
    splits: Annotated[str, typer.Option("--splits", help="train,validation,test shares")] = "80,10,10",
    seed: Annotated[str, typer.Option(help="another seed draws other (fixed) splits")] = "",
    shard_items: Annotated[int, typer.Option(help="items per shard at most (webdataset, parquet)")] = 1000,
    faces: Annotated[
        bool, typer.Option("--faces", help="also each scored face as the detectors read it (PNG, faces/)")
    ] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export flagged fakes as a dataset: media, manifests, card; splits by near-duplicate cluster.

    Re-running completes a partial export without copying again. --json prints the summary."""
    from deepwatch.contracts import parse
    from storage.export import ExportError, ExportRequest, run_export

    settings = settings_for(config, data_dir, as_json)
    query = query_or_fail(as_json, q=text, verdict=verdict, min_score=min_score, max_score=max_score,
                          detector=detector, platform=platform, source=source, kind=kind, dedup=dedup, review=review,
                          since=since, until=until)
    try:
        shares = [s.strip() for s in splits.split(",")]
        request = parse(ExportRequest, {
            "out": out, "query": query.model_dump(), "include_reviewed_real": include_reviewed_real,
            "format": export_format, "ratios": shares, "seed": seed, "shard_max_items": shard_items, "faces": faces})
    except ContractError as exc:
        fail(str(exc), 2, as_json, fields=exc.fields)
    run = run_export
    if faces:  # decoding media is the serving layer's, imported only when asked for
        from serve.face_crops import cropper

        run = functools.partial(run_export, crop_faces=cropper(settings))
    try:
        summary = run(settings, request) if as_json else _export_with_bar(settings, request, run)
    except ExportError as exc:
        fail(str(exc), 1, as_json)
    document = summary.model_dump(mode="json")
    if as_json:
        emit_json(document)
    else:
        stderr.print(
            f"exported {summary.items} items ({summary.bytes} bytes) to {summary.out}: "
            + ", ".join(f"{k} {v}" for k, v in summary.splits.items())
            + f"; copied {summary.copied}, kept {summary.kept}, replaced {summary.replaced}",
            highlight=False,
        )
        if summary.missing.count:
            stderr.print(f"[yellow]{summary.missing.count} items have no stored media[/yellow]: "
                         + " ".join(summary.missing.ids[:20]), highlight=False)
        if summary.faces is not None:
            stderr.print(f"face crops: {summary.faces.crops} (written {summary.faces.written}, kept "
                         f"{summary.faces.kept}, {summary.faces.left_out} no longer in their media)", highlight=False)
    errors = summary.errors + (summary.faces.errors if summary.faces else [])
    if errors:
        for error in errors:
            stderr.print(f"[red]left out[/red] {error.media_id}: {error.error}", highlight=False)
        raise typer.Exit(1)


def _export_with_bar(settings: Settings, request: Any, run: Any) -> Any:
    """run_export with a rich progress bar on stderr (items done of selected, and the last action)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("export {task.description:>8}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr) as bar:
        task = bar.add_task("", total=None)

        def step(event: Any) -> None:
            bar.update(task, total=event.total, completed=event.done, description=event.action)

        return run(settings, request, progress=step)


def _registered(settings: Settings, as_json: bool) -> Any:
    from serve.detectors.registry import RegistryError, available, select

    try:
        return select(available(settings), settings.detectors)
    except RegistryError as exc:
        fail(str(exc), 2, as_json)


@detectors_app.command("list")
def detectors_list(as_json: JsonOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List the registered detectors."""
    from serve.detectors.registry import RegistryError, available

    settings = settings_for(config, data_dir, as_json)
    try:
        registered = available(settings)
    except RegistryError as exc:
        fail(str(exc), 2, as_json)
    rows = [{**r.cls.describe(settings.models_path), "origin": r.origin, "path": r.path} for r in registered.values()]
    if as_json:
        emit_json({"models_dir": str(settings.models_path), "detectors": rows})
        return
    from rich.table import Table

    table = Table("name", "version", "modality", "input", "license", "weights", "origin", title="detectors")
    for row in rows:
        present = all(w["present"] for w in row["weights"])
        table.add_row(row["name"], row["version"], row["modality"], str(row["input_size"]), row["license"],
                      "present" if present else "missing (deepwatch models pull)", row["origin"])
    Console().print(table)


@detectors_app.command("sanity")
def detectors_sanity(as_json: JsonOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Run every detector on bundled test media."""
    from serve.detectors.sanity import run_sanity

    settings = settings_for(config, data_dir, as_json)
    reports = run_sanity(_registered(settings, as_json), settings.models_path, settings.weights_cache_path)
    ok = all(r.ok for r in reports)
    if as_json:
        emit_json({"ok": ok, "models_dir": str(settings.models_path), "detectors": [r.to_json() for r in reports]})
    else:
        for r in reports:
            if r.ok:
                scores = ", ".join(f"{k} {v:.3f}" for k, v in r.p_fake.items())
                Console().print(f"[green]pass[/green] {r.name}: P(fake) {scores}", highlight=False)
            else:
                Console().print(f"[red]fail[/red] {r.name}: {r.error}", highlight=False)
    if not ok:
        raise typer.Exit(1)


@detectors_app.command("evaluate")
def detectors_evaluate(
    folder: Annotated[
        Path,
        typer.Argument(
            help="a labelled set: a folder with metadata.jsonl as `export` writes it, or with real/ and fake/; "
            "or such a manifest itself (an export's faces.jsonl, with --aligned)"
        ),
    ],
    detectors: DetectorsOpt = None,
    aligned: AlignedOpt = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Compare detectors on a labelled set: ROC AUC, accuracy at 0.5 and mean P(fake) per class, for each
    detector and the ensemble, every item scored as `score` scores it."""
    from serve.evaluation import LabelledSetError, evaluate, labelled_items

    settings = settings_for(config, data_dir, as_json)
    try:
        items = labelled_items(folder)
    except LabelledSetError as exc:
        fail(str(exc), 2, as_json, folder=str(folder))
    if folder.name == "faces.jsonl" and not aligned:
        stderr.print("[yellow]these look like an export's face crops: without --aligned, faces are searched for "
                     "again inside each crop[/yellow]", highlight=False)
    loaded = _load_chosen(settings, detectors, aligned, as_json)
    results, summaries, seconds = evaluate(items, settings, loaded, aligned=aligned)
    if as_json:
        emit_json({
            "folder": str(folder), "items": len(items), "errors": sum(1 for r in results if r.error),
            "seconds_per_item": round(seconds / len(items), 4),
            "summaries": {s.name: s.to_json() for s in summaries},
            "per_item": [r.to_json(folder) for r in results],
        })
        return
    out = Console()
    out.print(f"{len(items)} items from {folder}, {seconds / len(items):.2f} s an item", highlight=False)
    for s in summaries:
        auc = "-" if s.auc is None else f"{s.auc:.3f}"
        accuracy = "-" if s.accuracy is None else f"{s.accuracy:.3f}"
        out.print(f"  {s.name}: AUC {auc}, accuracy {accuracy} over {s.scored} scored "
                  f"({s.fakes} fake, {s.reals} real)", highlight=False)
    for r in results:
        if r.error:
            out.print(f"  [red]error[/red] {r.item.path}: {r.error}", highlight=False)


@detectors_app.command("calibrate")
def detectors_calibrate(
    platform: ListOpt = None,
    source: ListOpt = None,
    kind: KindOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    min_per_class: Annotated[
        int, typer.Option(min=2, help="reviewed fakes and reals each before a detector is fitted")
    ] = 10,
    max_records: Annotated[int | None, typer.Option(min=1, help="read only the newest N reviewed records")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """How each detector's recorded scores agree with moderators' reviews (fake or real), and the Platt
    parameters for the ensemble (DEEPWATCH_ENSEMBLE_PLATT) fitted on them; nothing is scored again."""
    from serve.calibration import calibrate, reviewed_evidence
    from storage.index import SearchIndexError, iter_search, open_index

    settings = settings_for(config, data_dir, as_json)
    query = query_or_fail(as_json, platform=platform, source=source, kind=kind, review=["fake", "real"],
                          since=since, until=until, sort="newest")
    try:
        index = open_index(settings)
        try:
            evidence, truncated = reviewed_evidence(iter_search(index, query), max_records)
        finally:
            index.close()
    except SearchIndexError as exc:
        fail(str(exc), 1, as_json)
    found = calibrate(evidence, settings.ensemble_weights, min_per_class, truncated, settings.ensemble_platt)
    if as_json:
        emit_json(found.to_json())
        return
    out = Console()
    out.print(f"{found.reviewed} reviewed records (fake or real) with detector scores"
              + (f", the newest {max_records} read" if found.truncated else ""), highlight=False)
    for s in found.before:
        auc = "-" if s.auc is None else f"{s.auc:.3f}"
        accuracy = "-" if s.accuracy is None else f"{s.accuracy:.3f}"
        fitted = found.platt.get(s.name)
        out.print(f"  {s.name}: AUC {auc}, accuracy {accuracy} ({s.fakes} fake, {s.reals} real)"
                  + (f", Platt a={fitted[0]:.4f} b={fitted[1]:.4f}" if fitted else ""), highlight=False)
    for name, why in found.skipped.items():
        out.print(f"  [yellow]not fitted[/yellow] {name}: {why}", highlight=False)
    in_force = json.dumps({name: list(ab) for name, ab in found.in_force.items()}, separators=(",", ":"))
    out.print(f"in force now: {in_force if found.in_force else 'none (the identity)'}", highlight=False,
              soft_wrap=True)
    if found.after is not None and found.after.accuracy is not None:
        auc = "-" if found.after.auc is None else f"{found.after.auc:.3f}"
        out.print(f"the ensemble with parameters fitted without them, on each fifth of the records in turn: AUC "
                  f"{auc}, accuracy {found.after.accuracy:.3f}", highlight=False)
        out.print(f"to use them: {found.setting}", highlight=False, soft_wrap=True)  # one line, to copy
        out.print("then `deepwatch detectors reverdict`, with the same setting, for the records scored before",
                  highlight=False)


@detectors_app.command("reverdict")
def detectors_reverdict(
    platform: ListOpt = None,
    source: ListOpt = None,
    kind: KindOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would change; write nothing")] = False,
    publish: Annotated[bool, typer.Option(
        "--publish", help="also publish a ScoredMedia on deepwatch.results for each record whose score or verdict moved"
    )] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Work out the scores and verdicts of the records scored before again, with the ensemble's settings as they
    are now (DEEPWATCH_ENSEMBLE_PLATT, _WEIGHTS, the verdict thresholds), from the detectors' scores the records
    keep; nothing is scored again. Run it with the settings the serve deployment has."""
    from deepwatch.contracts import TOPIC_RESULTS
    from deepwatch.endpoints import with_running_stack
    from deepwatch.publisher import EventPublisher, PublishError
    from serve.ensemble import EnsembleConfig
    from serve.reverdict import reverdict
    from storage.errors import StorageError
    from storage.index import SearchIndexError, open_index
    from storage.objects import open_object_store

    settings = settings_for(config, data_dir, as_json)
    query = query_or_fail(as_json, platform=platform, source=source, kind=kind, since=since, until=until)
    publisher: EventPublisher | None = None
    if publish and not dry_run:
        settings = with_running_stack(settings)
        if not settings.kafka_bootstrap:
            fail("no Kafka: start `deepwatch up` with this data directory or set DEEPWATCH_KAFKA_BOOTSTRAP", 1, as_json)
        try:  # connected before anything is rewritten: a broker that is not there changes nothing
            publisher = EventPublisher(settings.kafka_bootstrap, max_block_s=settings.kafka_publish_timeout_s,
                                       topic=TOPIC_RESULTS, client_id="deepwatch-reverdict")
        except PublishError as exc:
            fail(str(exc), 1, as_json)
    try:
        index = open_index(settings)
        try:
            done = reverdict(index, open_object_store(settings), query, EnsembleConfig.from_settings(settings),
                             dry_run=dry_run, publish=publisher.publish if publisher else None)
        finally:
            index.close()
            if publisher is not None:
                publisher.close()
    except (SearchIndexError, StorageError, PublishError) as exc:
        fail(f"{exc} (the batches before it are written and told; run it again for the rest)"
             if isinstance(exc, PublishError) else str(exc), 1, as_json)
    if as_json:
        emit_json(done.to_json())
        return
    out = Console()
    would = "would change" if dry_run else "changed"
    out.print(f"{done.examined} records with an ensemble verdict: {done.changed} {would}", highlight=False)
    for moved, count in sorted(done.transitions.items()):
        out.print(f"  {moved}: {count}", highlight=False)
    if done.copied_to_flagged:
        copied = "would be copied" if dry_run else "copied"
        out.print(f"{done.copied_to_flagged} now fake {copied} under flagged/, as the stream keeps a fake's bytes",
                  highlight=False)
    if done.published:
        out.print(f"{done.published} results published on {TOPIC_RESULTS} (trace id {done.trace_id})", highlight=False)
    if done.fake_without_media:
        out.print(f"[yellow]{len(done.fake_without_media)} now fake without their media stored[/yellow] (scored "
                  "when only fakes were kept): an export counts them as missing", highlight=False)


@models_app.command("pull")
def models_pull(as_json: JsonOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Fetch detector weights, and the face landmark network's when faces are aligned, into the models directory."""
    from serve.detectors.weights import FACE_LANDMARKS, pull

    settings = settings_for(config, data_dir, as_json)
    detectors = [r.cls for r in _registered(settings, as_json)]
    extra = [FACE_LANDMARKS] if settings.score_align_faces else []
    outcomes = pull(detectors, settings.models_path, settings.models_base_url, extra)
    ok = all(o.status != "failed" for o in outcomes)
    if as_json:
        emit_json({"ok": ok, "models_dir": str(settings.models_path), "files": [o.to_json() for o in outcomes]})
    else:
        for o in outcomes:
            colour = "red" if o.status == "failed" else "green"
            Console().print(f"[{colour}]{o.status}[/{colour}] {o.path}" + (f": {o.error}" if o.error else ""),
                            highlight=False)
    if not ok:
        raise typer.Exit(1)


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="benchmark name")],
    quick: Annotated[bool, typer.Option("--quick", help="the small version, fit for CI")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run a benchmark (see ../shared/BENCHMARKS.md for the output)."""
    runners = {"index": "bench.index", "fingerprint": "bench.fingerprint", "ingest": "bench.ingest",
               "serve": "bench.serve", "serve-gpu": "bench.serve_gpu", "stream": "bench.stream"}
    if name not in runners:
        fail(f"unknown benchmark {name!r}: one of {', '.join(sorted(runners))}", 2, as_json)
    import importlib

    document = importlib.import_module(runners[name]).run(quick=quick)
    if as_json:
        emit_json(document)
        return
    from rich.table import Table

    table = Table("result", "ours", "peer", "ratio", "target", title=f"bench {name}")
    for r in document["results"]:
        target = "" if "target" not in r else f"{r['target']} ({'met' if r['meets_target'] else 'missed'})"
        table.add_row(r["name"], f"{r['value']} {r['unit']}", f"{r['peer']['value']} ({r['peer']['name']})",
                      str(r["ratio"]), target)
    Console().print(table)


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
