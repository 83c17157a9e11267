"""JSON API under /api/v1, documented by FastAPI's OpenAPI at /api/v1/docs."""

from fastapi import APIRouter

from app.api import evaluate, generation, results, studies

router = APIRouter(prefix="/api/v1")
for module in (studies, evaluate, results, generation):
    router.include_router(module.router)
