"""Route dependencies: the gateway state and the caller's owner id."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from harmonia.gateway.app import GatewayState


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


def get_owner(request: Request) -> str:
    return get_state(request).auth(request)


State = Annotated[GatewayState, Depends(get_state)]
Owner = Annotated[str, Depends(get_owner)]
