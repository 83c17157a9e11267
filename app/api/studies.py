"""JSON API v1: studies."""

from fastapi import APIRouter

router = APIRouter()
