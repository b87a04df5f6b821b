"""CURVE keys for the ZeroMQ endpoint: the directory layout, creating it, and the authenticator.

Layout of a keys directory (``--zmq-curve-dir``)::

    server.key              the server's public key (give it to clients)
    server.key_secret       the server's key pair (keep it on the server)
    authorized_clients/     public keys (``*.key``) of the clients allowed in
    clients/NAME.key_secret a client's key pair, written by :func:`create_curve_dir` for convenience
                            (hand it to that client and delete it from the server)

Keys are in ZeroMQ's certificate format (``zmq.auth.create_certificates``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator

from liveface.errors import ConfigError

SERVER_PUBLIC = "server.key"
SERVER_SECRET = "server.key_secret"
AUTHORIZED_DIR = "authorized_clients"
CLIENTS_DIR = "clients"


def create_curve_dir(path: str | Path, clients: tuple[str, ...] = ("client",)) -> Path:
    """Create (or extend) a keys directory with a server key pair and one pair per client.

    Existing server keys are kept, so clients already holding ``server.key`` still work.

    Returns:
        The directory.
    """
    root = Path(path)
    authorized = root / AUTHORIZED_DIR
    client_dir = root / CLIENTS_DIR
    for d in (root, authorized, client_dir):
        d.mkdir(parents=True, exist_ok=True)
    if not (root / SERVER_SECRET).is_file():
        zmq.auth.create_certificates(root, "server")
    for name in clients:
        public, _secret = zmq.auth.create_certificates(client_dir, name)
        shutil.copy(public, authorized / f"{name}.key")
    return root


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``*.key_secret`` file.

    Raises:
        ConfigError: the file is missing or holds no secret key.
    """
    p = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read CURVE key pair {p}: {e}") from e
    if not secret:
        raise ConfigError(f"{p} holds no secret key; pass a *.key_secret file")
    return public, secret


def load_public(path: str | Path) -> bytes:
    """A public key from a ``*.key`` (or ``*.key_secret``) file.

    Raises:
        ConfigError: the file is missing or unreadable.
    """
    p = Path(path)
    try:
        public, _ = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read CURVE public key {p}: {e}") from e
    return public


class CurveServer:
    """The server side of CURVE: the key pair and a ZAP authenticator on the socket's context.

    Args:
        directory: a keys directory (see the module docstring).

    Raises:
        ConfigError: the server key pair or the authorized clients directory is missing.
    """

    def __init__(self, directory: str | Path) -> None:
        root = Path(directory)
        self.authorized = root / AUTHORIZED_DIR
        if not self.authorized.is_dir():
            raise ConfigError(
                f"CURVE directory {root} has no {AUTHORIZED_DIR}/ folder of client public keys; "
                "create one with liveface.protocol.curve.create_curve_dir"
            )
        self.public, self.secret = load_keypair(root / SERVER_SECRET)
        self._auth: AsyncioAuthenticator | None = None

    def start(self, context: zmq.Context) -> None:
        """Start the authenticator; call on the event loop, before the socket binds."""
        auth = AsyncioAuthenticator(context)
        auth.start()
        # Only the public keys found in authorized_clients/ may connect.
        auth.configure_curve(domain="*", location=str(self.authorized))
        self._auth = auth

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server with this key pair."""
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
