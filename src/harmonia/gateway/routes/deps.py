"""Route dependencies: the gateway state and the caller's owner id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from harmonia.gateway.state import GatewayState


# async: FastAPI would run plain functions in the thread pool, a hop per request for no I/O
async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


async def get_owner(request: Request) -> str:
    state: GatewayState = request.app.state.gw
    return state.auth(request)


State = Annotated[GatewayState, Depends(get_state)]
Owner = Annotated[str, Depends(get_owner)]
