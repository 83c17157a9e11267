"""HTML routes: media."""

from fastapi import APIRouter

router = APIRouter()
