"""Reading inference request bodies: bounded in time and in number, before admission.

An inference place (:meth:`service.core.inference.DataPlane.admitted`) is taken once
the body is in: a client that sends its headers and then its body slowly (or never)
would otherwise hold one of the few places, and eight such connections refused every
inference, HTTP and gRPC, for as long as they stayed open (uvicorn has no body
timeout). Bodies being received are bounded too (with the body size limit, that bounds
their memory), and each must arrive within ``seconds``.
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.requests import ClientDisconnect

from service.core.inference import Refused

__all__ = ["BodyReader", "ClientGone"]


class ClientGone(Exception):
    """The client went away before its body was in: nothing can be answered."""


class BodyReader:
    """At most ``most`` bodies received at once, each within ``seconds``."""

    def __init__(self, *, most: int, seconds: float) -> None:
        self.most = most
        self.seconds = seconds
        self.receiving = 0

    async def read(self, request: Request) -> bytes:
        if self.receiving >= self.most:
            raise Refused(
                "unavailable", f"{self.receiving} request bodies are being received; retry shortly"
            )
        self.receiving += 1
        try:
            return await asyncio.wait_for(request.body(), self.seconds)
        except TimeoutError:
            raise Refused(
                "timeout", f"the request body did not arrive within {self.seconds:g} s"
            ) from None
        except ClientDisconnect:
            raise ClientGone from None
        finally:
            self.receiving -= 1
