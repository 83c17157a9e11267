"""HTML routes: results."""

from fastapi import APIRouter

router = APIRouter()
