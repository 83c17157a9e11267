"""HTML routers (pages); the JSON API lives in app.api."""

from fastapi import APIRouter

from app.web import admin, auth, evaluator, generation, media, metrics, plans, results

router = APIRouter()
# FastAPI tries routes in order, each with its regular expression, on every request: the rating pages and
# their clips, the requests a study's crowd sends, come first (no path of theirs overlaps another module's).
for module in (evaluator, media, auth, admin, results, plans, generation, metrics):
    router.include_router(module.router)
