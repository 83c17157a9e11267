"""HTML routers (pages); the JSON API lives in app.api."""

from fastapi import APIRouter

from app.web import admin, auth, evaluator, generation, media, metrics, plans, results

router = APIRouter()
for module in (auth, admin, results, plans, generation, metrics, evaluator, media):
    router.include_router(module.router)
