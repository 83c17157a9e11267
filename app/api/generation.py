"""JSON API v1: generation (queue a batch, progress, retry failed clips, cost per model)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from app.api.studies import ERRORS, Message, Responses
from app.deps import MAX_ID, StudyForUser
from app.security import DbSession
from app.services import generation as svc

router = APIRouter(tags=["generation"])
RESPONSES: Responses = {**ERRORS, 503: {"model": Message}}
# Bounds matching the columns (32-bit ids, 64-bit seeds): a bigger number is a 422, not a driver overflow.
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
PromptRef = RowId | Annotated[str, Field(min_length=1, max_length=100)]


class QueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    theme: str | None = Field(default=None, max_length=100, description="Only prompts of this theme.")
    prompt_ids: list[PromptRef] | None = Field(default=None, max_length=10000,
                                               description="Prompt ids (numeric) or the suite's ids, e.g. urban-003.")
    seeds: list[Seed] | None = Field(default=None, min_length=1, max_length=100,
                                     description="Default: the study's seeds.")


class QueueOut(BaseModel):
    batch_id: int | None
    created: int
    resent: int
    already_done: int
    running: int
    failed: int
    tasks_sent: int
    message: str


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_ids: list[RowId] | None = Field(default=None, max_length=10000, description="Default: every failed clip.")


class RetryOut(BaseModel):
    requeued: int


@router.post("/studies/{study_id}/generation/queue", response_model=QueueOut, status_code=202, responses=RESPONSES)
def api_queue(study: StudyForUser, body: QueueIn, session: DbSession) -> QueueOut:
    """Queue prompts x models x seeds. Queuing again never duplicates a clip; still-queued clips are re-sent."""
    try:
        r = svc.queue_batch(session, study_id=study.id, theme=body.theme, prompt_ids=body.prompt_ids,
                            seeds=body.seeds)
    except svc.BrokerUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    except svc.GenerationError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return QueueOut(batch_id=r.batch_id, created=r.created, resent=r.resent, already_done=r.already_done,
                    running=r.running, failed=r.failed, tasks_sent=r.tasks_sent, message=r.describe())


@router.get("/studies/{study_id}/generation", responses=ERRORS)
def api_progress(study: StudyForUser, session: DbSession) -> dict[str, Any]:
    """Per-model queued/running/done/failed counts, ETA, exactly what each model runs with, failed clips."""
    return svc.generation_progress(session, study_id=study.id)


@router.get("/studies/{study_id}/generation/costs", responses=ERRORS)
def api_costs(study: StudyForUser, session: DbSession) -> list[dict[str, Any]]:
    """Per model: median and p90 seconds per clip, UNet evaluations, peak memory, device-seconds, speedup."""
    return svc.cost_summary(session, study_id=study.id)


@router.post("/studies/{study_id}/generation/retry", response_model=RetryOut, responses=RESPONSES)
def api_retry(study: StudyForUser, body: RetryIn, session: DbSession) -> RetryOut:
    """Queue failed clips again (all of the study's, or the listed ones)."""
    try:
        return RetryOut(requeued=svc.retry_failed(session, study_id=study.id, clip_ids=body.clip_ids))
    except svc.BrokerUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from exc
    except svc.GenerationError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
