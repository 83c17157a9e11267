"""JSON API v1: results."""

from fastapi import APIRouter

router = APIRouter()
