"""Clients of the avatar server's ZeroMQ endpoint (protocol: ``docs/zmq-protocol.md``).

:class:`AsyncClient` for asyncio code, :class:`SyncClient` for blocking code; both yield
:class:`Frame` (image + the audio it animates, with media-clock pts) and :class:`Event` objects.
"""

from liveface.client.async_client import AsyncClient
from liveface.client.messages import CurveKeys, Event, Frame, ServerError
from liveface.client.remote_session import RemoteSession
from liveface.client.sync_client import SyncClient, SyncSession

__all__ = [
    "AsyncClient",
    "CurveKeys",
    "Event",
    "Frame",
    "RemoteSession",
    "ServerError",
    "SyncClient",
    "SyncSession",
]
