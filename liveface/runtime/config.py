"""Typed, frozen, validated server configuration: a TOML file, then command-line flags on top."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveface.errors import ConfigError

ENGINES = ("warp", "diffusion")
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server for the peer connections (the server's and the page's).

    Attributes:
        urls: ``stun:host:port``, ``turn:host:port?transport=tcp``, ``turns:host:443``, ...
        username, credential: TURN credentials (None for STUN).
    """

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    @classmethod
    def parse(cls, value: Any) -> IceServer:
        """From a TOML table ``{urls = "..." or [...], username?, credential?}`` or a URL."""
        if isinstance(value, IceServer):
            return value
        if isinstance(value, str):
            value = {"urls": value}
        if not isinstance(value, dict):
            raise ConfigError(f"an ICE server must be a URL or a table with urls (got {value!r})")
        urls = value.get("urls")
        urls = (urls,) if isinstance(urls, str) else tuple(urls or ())
        extra = sorted(set(value) - {"urls", "username", "credential"})
        bad = [u for u in urls if not isinstance(u, str) or not u.startswith(ICE_SCHEMES)]
        if not urls or bad or extra:
            raise ConfigError(
                "an ICE server needs urls starting with stun:, stuns:, turn: or turns: and only "
                f"username / credential besides (got {value!r})"
            )
        turn = any(u.startswith(("turn:", "turns:")) for u in urls)
        username, credential = value.get("username"), value.get("credential")
        if turn and not (isinstance(username, str) and isinstance(credential, str)):
            raise ConfigError(f"TURN server {urls[0]} needs a username and a credential")
        return cls(urls, username, credential)

    def to_json(self) -> dict[str, Any]:
        """The form ``RTCPeerConnection({iceServers})`` takes in a browser."""
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out.update(username=self.username, credential=self.credential)
        return out


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``run_avatar.py serve`` needs. Per-session state never lives here.

    Attributes:
        host, port: HTTP listen address (loopback by default; expose it deliberately).
        engine: ``warp`` (CPU, no weights, the default) or ``diffusion`` (needs ``checkpoint``).
        portrait: default portrait image path (None: the engine's built-in portrait).
        fps, width, height: output video.
        chunk_frames: video frames per engine chunk (smaller: lower latency, more overhead).
        lookahead_ms: audio the engine may read past a chunk's end (0: strictly causal).
        max_sessions: concurrent sessions; the next offer gets a 503.
        delay_ms: fixed output delay absorbing engine and network jitter (live sessions).
        zmq: ZeroMQ ROUTER address to bind (None: no ZeroMQ endpoint).
        http: serve HTTP/WebRTC (False with ``zmq`` set runs ZeroMQ only).
        zmq_curve_dir: directory with ``server.key_secret`` and ``authorized_clients/`` (CURVE).
        checkpoint: diffusion checkpoint directory.
        model: diffusion model of ``checkpoint``: ``s2v-14b`` (the official Wan2.2-S2V-14B
            folder), ``liveavatar`` (that folder with LiveAvatar's LoRA), ``liveface`` (a
            liveface.json bundle), None: detected from the folder (an S2V folder holding
            ``liveavatar.safetensors``, or given ``lora``, is LiveAvatar).
        lora: LiveAvatar's LoRA file when it is not in the checkpoint folder.
        pipeline_ranks: LiveAvatar's timestep-forcing pipeline: DiT processes (one per GPU);
            0 runs the DiT in the server's process.
        pipeline_launcher: how the ranks start: ``spawn`` (children of the server) or
            ``torchrun``.
        fp8: store the diffusion DiT's block weights in FP8 (about half the memory).
        max_upload_mb: largest portrait upload accepted.
        audio_jitter_packets: audio packets aiortc holds before decoding (its default is 4).
        degrade_high, degrade_low: engine utilisation above which quality is lowered, below
            which it is raised again (see liveface.runtime.degrade); degrade_high >= 1 disables.
        engine_processes: engine child processes, each with its own GIL (0: the engine runs in
            the server's process; None: one per CPU core for the CPU engine, 0 for the
            diffusion engine, which owns a GPU).
        video_delay_ms: the WebRTC video is sent (and stamped) this much after the audio it goes
            with. Chrome lines the two up before its audio output, whose latency (about 40 ms
            measured in Chromium on Linux: baseLatency 10 + outputLatency 30) then puts the
            picture that much ahead of the voice; the default sends the picture that much later
            (see README, audio and video in sync; 0 turns it off).
        ice_servers: STUN/TURN servers for the server's peer connections and the page's; none by
            default, so a loopback or LAN server makes no outbound request (see README, NAT).
        ice_timeout_s: an answered offer whose peer does not connect within this long is closed
            and its slot freed.
        auth_token: when set, ``/offer`` (and ``/ice``) need ``Authorization: Bearer <token>``.
        uvloop: use uvloop when installed.
        log_level: Python logging level name.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    engine: str = "warp"
    portrait: str | None = None
    fps: int = 25
    width: int = 512
    height: int = 512
    chunk_frames: int = 1
    lookahead_ms: int = 0
    max_sessions: int = 4
    delay_ms: int = 80
    zmq: str | None = None
    http: bool = True
    zmq_curve_dir: str | None = None
    checkpoint: str | None = None
    model: str | None = None
    lora: str | None = None
    pipeline_ranks: int = 0
    pipeline_launcher: str = "spawn"
    fp8: bool = False
    max_upload_mb: float = 10.0
    audio_jitter_packets: int = 0
    degrade_high: float = 0.9
    degrade_low: float = 0.55
    engine_processes: int | None = None
    video_delay_ms: int = 40
    ice_servers: tuple[IceServer, ...] = ()
    ice_timeout_s: float = 4.0
    auth_token: str | None = None
    uvloop: bool = True
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ice_servers", tuple(IceServer.parse(s) for s in self.ice_servers))
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        if not 0 < self.port < 65536:
            problems.append(f"port must be 1..65535 (got {self.port})")
        if not 1 <= self.fps <= 60:
            problems.append(f"fps must be 1..60 (got {self.fps})")
        for name in ("width", "height"):
            v = getattr(self, name)
            if not (64 <= v <= 2048 and v % 2 == 0):
                problems.append(f"{name} must be an even number in 64..2048 (got {v})")
        if not 1 <= self.chunk_frames <= 64:
            problems.append(f"chunk_frames must be 1..64 (got {self.chunk_frames})")
        if not 0 <= self.lookahead_ms <= 500:
            problems.append(f"lookahead_ms must be 0..500 (got {self.lookahead_ms})")
        if self.max_sessions < 1:
            problems.append(f"max_sessions must be >= 1 (got {self.max_sessions})")
        if not 0 <= self.delay_ms <= 5000:
            problems.append(f"delay_ms must be 0..5000 (got {self.delay_ms})")
        if not 0 <= self.audio_jitter_packets <= 16:
            problems.append(f"audio_jitter_packets must be 0..16 (got {self.audio_jitter_packets})")
        if self.engine_processes is not None and not 0 <= self.engine_processes <= 64:
            problems.append(f"engine_processes must be 0..64 (got {self.engine_processes})")
        if not -200 <= self.video_delay_ms <= 500:
            problems.append(f"video_delay_ms must be -200..500 (got {self.video_delay_ms})")
        if not 0.5 <= self.ice_timeout_s <= 60:
            problems.append(f"ice_timeout_s must be 0.5..60 (got {self.ice_timeout_s})")
        if self.auth_token is not None and len(self.auth_token) < 16:
            problems.append("auth_token must be at least 16 characters (use a random one)")
        if not 0.0 < self.degrade_low < self.degrade_high:
            problems.append("degrade thresholds need 0 < degrade_low < degrade_high")
        if not self.http and not self.zmq:
            problems.append("with http off, set zmq to an address, or nothing is served")
        if self.model not in (None, "s2v-14b", "liveavatar", "liveface"):
            problems.append(f"model must be s2v-14b, liveavatar or liveface (got {self.model!r})")
        if self.lora is not None and not Path(self.lora).is_file():
            problems.append(f"lora {self.lora} is not a file")
        if not 0 <= self.pipeline_ranks <= 16:
            problems.append(f"pipeline_ranks must be 0..16 (got {self.pipeline_ranks})")
        if self.pipeline_launcher not in ("spawn", "torchrun"):
            problems.append("pipeline_launcher must be spawn or torchrun")
        if self.portrait is not None and not Path(self.portrait).is_file():
            problems.append(f"portrait {self.portrait} is not a file")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))

    def processes(self) -> int:
        """How many engine processes to start (``engine_processes`` with ``None`` resolved)."""
        if self.engine_processes is not None:
            return self.engine_processes
        if self.engine == "diffusion":
            return 0
        return max(1, len(os.sched_getaffinity(0)))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServerConfig:
        """Read a TOML file (a ``[server]`` table or top-level keys), then apply ``overrides``.

        ``None`` overrides are ignored, so unset command-line flags keep the file's values.
        """
        values: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                data = tomllib.loads(p.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise ConfigError(f"cannot read config file {p}: {e}") from e
            values.update(data.get("server", data))
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as e:
            raise ConfigError(f"invalid configuration: {e}") from e
