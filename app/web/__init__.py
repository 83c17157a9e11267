"""HTML routers (pages); the JSON API lives in app.api."""

from fastapi import APIRouter

from app.web import admin, auth, evaluator, media, results

router = APIRouter()
for module in (auth, admin, results, evaluator, media):
    router.include_router(module.router)
