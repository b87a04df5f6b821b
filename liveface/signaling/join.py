"""Scenes shared over WebRTC: a second peer joins an existing session as another character.

The first offer of a session with several characters opens a :class:`SceneRoom` and gets its
*join token* back (192 random bits, URL-safe): whoever holds it may send an offer with
``"join": token`` (and optionally ``"character": n``) and drives the next free character (or
``n``). The token is the only key to the scene; it stops working when the session ends. All peers
see and hear the same scene (one :class:`~liveface.signaling.fanout.SceneFeed`); a joined peer
that leaves frees its character (it listens again), the first peer leaving ends the session and
every joined peer with it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCSessionDescription

from liveface.errors import BadInputError, JoinRefusedError
from liveface.runtime.events import CloseReason
from liveface.runtime.runtime import Runtime
from liveface.runtime.session import Session
from liveface.signaling.fanout import SceneFeed
from liveface.signaling.webrtc import PeerSession

#: Random bytes of a join token (its text is 32 URL-safe characters).
TOKEN_BYTES = 24


@dataclass(frozen=True)
class JoinRequest:
    """What a joining offer asks for: the token, and a character (None: the next free one)."""

    token: str
    character: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not 1 <= len(self.token) <= 256:
            raise BadInputError('"join" must be the join token string the first offer returned')
        c = self.character
        if c is not None and (isinstance(c, bool) or not isinstance(c, int)):
            raise BadInputError('"character" must be an integer (a character id)')


@dataclass
class SceneRoom:
    """A scene session and the peers driving its characters.

    Attributes:
        token: the join token.
        feed: the scene's media, shared by every peer.
        peers: the peer driving each character that has one.
        owner: the first peer (whose leaving ends the session).
    """

    session: Session
    token: str
    feed: SceneFeed
    peers: dict[int, PeerSession] = field(default_factory=dict)
    owner: PeerSession | None = None
    _claimed: set[int] = field(default_factory=set)

    def free(self) -> list[int]:
        """Characters nobody drives (or is about to)."""
        return [c for c in range(self.session.num_characters) if c not in self._claimed]


class JoinTable:
    """Every open scene room, by join token."""

    def __init__(self) -> None:
        self._rooms: dict[str, SceneRoom] = {}
        self._by_session: dict[str, SceneRoom] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def open(self, session: Session, video_delay_ms: int = 0) -> SceneRoom:
        """A room for a scene session; its first peer drives character 0."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        room = SceneRoom(session, token, SceneFeed(session, video_delay_ms))
        room._claimed.add(0)
        self._rooms[token] = room
        self._by_session[session.id] = room
        return room

    def claim(self, request: JoinRequest) -> tuple[SceneRoom, int]:
        """The room of ``request.token`` and the character the joining peer drives.

        Raises:
            JoinRefusedError: an unknown or expired token, a taken character, or none free.
            UnknownCharacterError: a character the scene does not have.
        """
        room = self._rooms.get(request.token)
        if room is None or room.session.closing:
            raise JoinRefusedError(
                "unknown or expired join token: use the join_token the scene's first offer "
                "returned, while that session lasts"
            )
        if request.character is None:
            free = room.free()
            if not free:
                raise JoinRefusedError("every character of this scene already has a peer")
            character = free[0]
        else:
            character = room.session.check_character(request.character)
            if character in room._claimed:
                raise JoinRefusedError(
                    f"character {character} already has a peer; free ones: {room.free()}"
                )
        room._claimed.add(character)
        return room, character

    def release(self, room: SceneRoom, character: int) -> None:
        """The peer of ``character`` left (or never connected): the character is free again."""
        room.peers.pop(character, None)
        room._claimed.discard(character)

    def room_of(self, session: Session) -> SceneRoom | None:
        return self._by_session.get(session.id)

    def close(self, session: Session) -> SceneRoom | None:
        """Forget the session's room (it ended); the caller closes its peers and feed."""
        room = self._by_session.pop(session.id, None)
        if room is not None:
            self._rooms.pop(room.token, None)
        return room


async def join_offer(
    runtime: Runtime,
    rooms: JoinTable,
    request: JoinRequest,
    sdp: str,
    kind: str,
    on_closed: Callable[[PeerSession], None],
) -> tuple[PeerSession, SceneRoom, int, RTCSessionDescription]:
    """Answer a joining peer's offer: it drives a character of an existing scene.

    Raises:
        JoinRefusedError, UnknownCharacterError: see :meth:`JoinTable.claim` (nothing is spent).
        BadInputError: the SDP is not a usable offer (the character is free again).
    """
    room, character = rooms.claim(request)

    def closed(peer: PeerSession) -> None:
        rooms.release(room, character)
        on_closed(peer)

    peer: PeerSession | None = None
    try:
        peer = PeerSession(
            runtime, room.session, closed, character=character, tracks=room.feed.subscribe(),
            owner=False,
        )  # fmt: skip
        room.peers[character] = peer
        answer = await peer.answer(sdp, kind)
    except BaseException:
        if peer is not None:
            await peer.aclose(CloseReason.OPEN_FAILED)
        else:
            rooms.release(room, character)
        raise
    return peer, room, character, answer


async def close_room(rooms: JoinTable, session: Session, reason: CloseReason) -> None:
    """The scene session ended: its joined peers and its feed end too."""
    room = rooms.close(session)
    if room is None:
        return
    for peer in list(room.peers.values()):
        if peer is not room.owner:
            await peer.aclose(reason)
    await room.feed.aclose()


def scene_fields(room: SceneRoom, character: int) -> dict[str, Any]:
    """What an offer's answer adds for a scene: the peer's character, the characters, the token."""
    chars = room.session.characters
    return {
        "character": character,
        "characters": [c.to_json(i) for i, c in enumerate(chars)],
        "join_token": room.token,
    }
