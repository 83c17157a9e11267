"""HTML routes: evaluator."""

from fastapi import APIRouter

router = APIRouter()
