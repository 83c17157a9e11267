"""JSON API v1: generation."""

from fastapi import APIRouter

router = APIRouter()
