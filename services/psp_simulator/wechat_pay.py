"""Placeholder until the channel lands."""

from __future__ import annotations

from fastapi import APIRouter

from services.psp_simulator.context import SimulatorContext


def create_router(context: SimulatorContext) -> APIRouter:
    return APIRouter()
