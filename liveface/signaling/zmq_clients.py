"""Who is connected to the ZeroMQ endpoint, and which sessions each client owns.

A client is identified by its routing id and, when CURVE is on, the public key it authenticated
with (the ZAP user id): a peer that reuses another's routing id with another key is another
client. A session belongs to the client that opened it and to no one else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import zmq

from liveface.signaling.zmq_link import SessionLink


@dataclass(eq=False)
class ClientRecord:
    """One client: where to send, when it was last heard from, what it owns."""

    identity: bytes
    user: str
    last_seen: float
    links: dict[str, SessionLink] = field(default_factory=dict)
    opening: int = 0  # OPEN requests being prepared


def user_id(frame: zmq.Frame) -> str:
    """The ZAP user id (the CURVE public key, Z85) of the connection a frame came from."""
    try:
        return str(frame.get("User-Id"))
    except zmq.ZMQError:
        return ""


class ClientTable:
    """Clients by (routing id, user id), and each session's owner."""

    def __init__(self) -> None:
        self._clients: dict[tuple[bytes, str], ClientRecord] = {}
        self._owners: dict[str, ClientRecord] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def seen(self, identity: bytes, user: str) -> ClientRecord:
        """The client a message came from (created on its first message), marked alive now."""
        key = (identity, user)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = ClientRecord(identity, user, time.monotonic())
        client.last_seen = time.monotonic()
        return client

    def is_current(self, client: ClientRecord) -> bool:
        """False once the client was forgotten (it timed out)."""
        return self._clients.get((client.identity, client.user)) is client

    def attach(self, client: ClientRecord, link: SessionLink) -> None:
        client.links[link.id] = link
        self._owners[link.id] = client

    def detach(self, link: SessionLink) -> ClientRecord | None:
        """Forget a session; returns the client that owned it."""
        client = self._owners.pop(link.id, None)
        if client is not None:
            client.links.pop(link.id, None)
        return client

    def links(self) -> Iterator[SessionLink]:
        for client in list(self._clients.values()):
            yield from list(client.links.values())

    def silent(self, timeout_s: float) -> list[ClientRecord]:
        """Clients not heard from for ``timeout_s``; those with nothing left are forgotten."""
        now = time.monotonic()
        gone = []
        for key, client in list(self._clients.items()):
            if now - client.last_seen > timeout_s:
                gone.append(client)
                if client.opening == 0 and not client.links:
                    del self._clients[key]
        return gone

    def clear(self) -> None:
        self._clients.clear()
        self._owners.clear()
