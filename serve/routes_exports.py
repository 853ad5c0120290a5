"""Dataset exports over HTTP: ``POST /v1/exports`` starts :func:`storage.export.run_export` in a background
thread, ``GET /v1/exports/{id}`` follows it, ``GET /v1/exports`` lists them.

The ``admin`` scope: an export reads every flagged file and writes a copy of the dataset, which is more than
reading (``read``) or judging (``review``) records.

Destinations are the operator's, never a path from the request: ``store:NAME`` (``exports/NAME/`` in the
object store) or ``s3://bucket/prefix`` (the settings' S3 endpoint and credentials). A local directory is
refused with 422 on ``out``: writing wherever a request says would make this route a path-write primitive.

One export runs at a time per API process (a second POST while one runs gets 409): exports are long, I/O
bound, and two at once would only compete for the same store. The jobs are kept **in this process's
memory**, the last :data:`KEEP_JOBS` of them: a restarted API (or another replica) forgets them, running
ones included. The export itself is resumable and idempotent, so posting the same request again completes
a partial one without copying twice.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, Field

from deepwatch.contracts import Part
from serve.auth import require_scope
from serve.context import ApiContext, ApiKey, context
from serve.face_crops import cropper
from storage.export import ExportError, ExportProgress, ExportRequest, ExportSummary, run_export

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")
KEEP_JOBS = 100
ALLOWED_DESTINATIONS = ("store:", "s3://")

Ctx = Annotated[ApiContext, Depends(context)]
Admin = Annotated[ApiKey, Depends(require_scope("admin"))]
ExportId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="as POST /v1/exports returned it")]
Status = Literal["queued", "running", "done", "failed"]


class Progress(Part):
    done: Annotated[int, Field(ge=0)] = 0
    total: Annotated[int, Field(ge=0)] = 0
    bytes: Annotated[int, Field(ge=0)] = 0


class ExportJob(Part):
    id: str
    status: Status
    request: ExportRequest
    requested_by: str = Field(description="the API key's name")
    created_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    progress: Progress = Field(default_factory=Progress)
    summary: ExportSummary | None = Field(None, description="once done")
    error: str | None = Field(None, description="why it failed")


class ExportList(Part):
    items: list[ExportJob] = Field(description="newest first")


class _Jobs:
    """The jobs of this process, behind one lock: the worker thread and the routes both change them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, ExportJob] = OrderedDict()

    def start(self, request: ExportRequest, requested_by: str) -> ExportJob | None:
        """A new queued job, or None while another is queued or running."""
        with self._lock:
            if any(j.status in ("queued", "running") for j in self._jobs.values()):
                return None
            job = ExportJob(id=secrets.token_hex(8), status="queued", request=request, requested_by=requested_by,
                            created_at=datetime.now(UTC))
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_JOBS:
                self._jobs.popitem(last=False)  # the oldest; never the running one, which is the newest
            return job

    def update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = job.model_copy(update=fields)

    def get(self, job_id: str) -> ExportJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[ExportJob]:
        with self._lock:
            return list(reversed(self._jobs.values()))


# Module state, not app.state: Ray Serve pickles the app into each replica (see serve.context).
JOBS = _Jobs()


def _run(ctx: ApiContext, job_id: str, request: ExportRequest) -> None:
    JOBS.update(job_id, status="running", started_at=datetime.now(UTC))

    def progress(step: ExportProgress) -> None:
        JOBS.update(job_id, progress=Progress(done=step.done, total=step.total, bytes=step.bytes))

    try:
        summary = run_export(ctx.settings, request, progress=progress, store=ctx.store(),
                             crop_faces=cropper(ctx.settings))
    except ExportError as exc:
        log.error("export %s failed: %s", job_id, exc)
        JOBS.update(job_id, status="failed", error=str(exc), finished_at=datetime.now(UTC))
    except Exception as exc:  # a thread's exception reaches no one: record it where the caller looks
        log.exception("export %s failed", job_id)
        JOBS.update(job_id, status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=datetime.now(UTC))
    else:
        JOBS.update(job_id, status="done", summary=summary, finished_at=datetime.now(UTC),
                    progress=Progress(done=summary.items, total=summary.items, bytes=summary.bytes))


@router.post("/exports", status_code=202, response_model=ExportJob,
             responses={409: {"description": "another export is running"}})
def start_export(ctx: Ctx, key: Admin, request: Annotated[ExportRequest, Body()]) -> JSONResponse:
    """Start an export of the flagged records; follow it at ``Location``."""
    if not request.out.startswith(ALLOWED_DESTINATIONS):
        raise RequestValidationError([{
            "type": "value_error", "loc": ("body", "out"), "input": request.out,
            "msg": "the API exports only to store:NAME or s3://bucket/prefix, not to a local directory",
        }])
    job = JOBS.start(request, key.name)
    if job is None:
        raise HTTPException(409, "another export is running; wait for it (GET /v1/exports)")
    threading.Thread(target=_run, args=(ctx, job.id, request), name=f"export-{job.id}", daemon=True).start()
    return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/exports/{job.id}"})


@router.get("/exports", response_model=ExportList)
def list_exports(key: Admin) -> ExportList:
    return ExportList(items=JOBS.all())


@router.get("/exports/{export_id}", response_model=ExportJob)
def get_export(key: Admin, export_id: ExportId) -> ExportJob:
    job = JOBS.get(export_id)
    if job is None:
        raise HTTPException(404, f"no export {export_id} in this API process (a restart forgets them)")
    return job
