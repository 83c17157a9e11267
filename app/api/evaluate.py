"""JSON API v1: evaluate."""

from fastapi import APIRouter

router = APIRouter()
