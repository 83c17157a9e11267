"""HTML routes: generation (queue, progress, retry)."""

from fastapi import APIRouter

router = APIRouter()
