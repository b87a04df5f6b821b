"""liveface command line: ``serve`` (default) runs the server, ``render`` makes an mp4 offline.

liveface                                   # http://127.0.0.1:8080, CPU engine, default portrait
liveface serve --port 9000 --portrait me.jpg --max-sessions 8
liveface serve --zmq tcp://127.0.0.1:5555
liveface render --audio speech.mp3 --portrait me.jpg --out talk.mp4

The composition root: it parses the arguments, builds the config, the engine, the runtime and the
transports, and runs them. ``python -m liveface`` and ``run_avatar.py`` are the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path

from liveface import __version__
from liveface.engines.base import Engine
from liveface.errors import ConfigError
from liveface.pipeline.image import load_image
from liveface.runtime.config import ServerConfig
from liveface.runtime.factory import create_engines

log = logging.getLogger("liveface")


def _setup_logging(config: ServerConfig) -> None:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run_render(config: ServerConfig, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from liveface.runtime.render import VideoEncoding, check_output, render

    check_output(Path(args.out))  # before the engine starts: a bad path fails at once
    encoding = VideoEncoding(preset=args.preset, crf=args.crf)
    options: dict[str, object] = {}
    if args.still:
        if config.engine != "warp":
            raise ConfigError("--still is an option of the CPU (warp) engine")
        options["head_motion"] = False
    if args.seed is not None:
        options["seed"] = args.seed

    _setup_logging(config)
    # The CPU engine renders in a child process, so that it and the encoder (here) use a core
    # each; the diffusion engine stays here with its GPU.
    processes = 1 if config.processes() > 0 else 0
    (engine,) = create_engines(dataclasses.replace(config, engine_processes=processes))
    portrait = load_image(config.portrait) if config.portrait else None
    bars: list[tqdm] = []  # shown from the first frame on, not for a render that fails first

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="frame", desc="render", file=sys.stderr))
        bars[0].total = total
        bars[0].n = done
        bars[0].refresh()

    try:
        frames = render(
            engine,
            args.audio,
            args.out,
            portrait=portrait,
            progress=progress,
            encoding=encoding,
            options=options,
        )
    finally:
        for bar in bars:
            bar.close()
        engine.shutdown()
    print(f"wrote {args.out}: {frames} frames at {engine.spec.fps} fps")
    return 0


async def serve(config: ServerConfig, engines: list[Engine], stop: asyncio.Event) -> None:
    """Run HTTP (and ZeroMQ when configured) on one Runtime until ``stop`` is set."""
    from aiohttp import web

    from liveface.runtime.runtime import Runtime
    from liveface.signaling.http import build_app

    portrait = load_image(config.portrait) if config.portrait else None
    runtime = Runtime(config, engines, default_portrait=portrait)
    runtime.start()  # opens the default portrait once: a bad one fails here, not per client
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runtime.aclose)
        if config.http:
            runner = web.AppRunner(build_app(runtime), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, config.host, config.port)
            try:
                await site.start()
            except OSError as e:
                raise ConfigError(
                    f"cannot listen on {config.host}:{config.port} ({e.strerror}); "
                    "pick another --port or stop what uses it"
                ) from e
            log.info(
                "serving http://%s:%d (engine %s, %d engine worker(s))",
                config.host, config.port, runtime.engine.name, len(engines),
            )  # fmt: skip
        if config.zmq:
            from liveface.signaling.zmq_server import ZmqServer

            zserver = ZmqServer(runtime)
            await zserver.start()
            stack.push_async_callback(zserver.aclose)
            log.info("serving ZeroMQ on %s", config.zmq)
        await stop.wait()


def run_server(config: ServerConfig) -> int:
    _setup_logging(config)
    if config.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    engines = create_engines(config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(config, engines, stop)

    try:
        asyncio.run(main())
    finally:
        for engine in engines:
            engine.shutdown()
    return 0


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        if len(parts) == 1:
            return int(parts[0]), int(parts[0])
        if len(parts) == 2:
            return int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}")


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (flags override it)")
    p.add_argument("--engine", choices=["warp", "diffusion"], help="avatar engine (default warp)")
    p.add_argument("--portrait", help="portrait image (default: a built-in public-domain photo)")
    p.add_argument("--fps", type=int, help="output frame rate (default 25)")
    p.add_argument("--size", type=_size, help="output size, N or WxH (default 512)")
    p.add_argument("--chunk-frames", type=int, help="video frames per engine chunk")
    p.add_argument("--lookahead-ms", type=int, help="audio lookahead past a chunk (default 0)")
    p.add_argument("--checkpoint", help="diffusion engine checkpoint directory")
    p.add_argument(
        "--model",
        choices=["s2v-14b", "liveavatar", "liveface"],
        help="diffusion model of --checkpoint (default: detected from its config.json)",
    )
    p.add_argument("--lora", help="LiveAvatar's liveavatar.safetensors, if not in --checkpoint")
    p.add_argument("--fp8", action="store_true", help="FP8 weights for the diffusion DiT")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="liveface", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"liveface {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the HTTP/WebRTC (and ZeroMQ) server")
    _engine_args(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--max-sessions", type=int, help="concurrent sessions (default 4)")
    serve.add_argument(
        "--engine-processes",
        type=int,
        help="engine child processes (default: one per core for the CPU engine, 0 for diffusion)",
    )
    serve.add_argument("--delay-ms", type=int, help="output delay absorbing jitter (default 80)")
    serve.add_argument(
        "--pipeline-ranks",
        type=int,
        help="LiveAvatar: DiT pipeline processes, one denoising step run each (default 0: none)",
    )
    serve.add_argument(
        "--pipeline-launcher", choices=["spawn", "torchrun"], help="how pipeline ranks start"
    )
    serve.add_argument("--zmq", help="also serve ZeroMQ on this address, e.g. tcp://127.0.0.1:5555")
    serve.add_argument("--zmq-curve-dir", help="CURVE keys directory (see docs/zmq-protocol.md)")
    serve.add_argument("--no-http", action="store_true", help="serve ZeroMQ only")
    serve.add_argument("--stun", action="append", help="STUN server URL (repeatable), e.g. "
                       "stun:stun.example.org:3478; none by default")  # fmt: skip
    serve.add_argument("--turn", action="append", help="TURN server URL (repeatable), e.g. "
                       "turns:turn.example.org:443?transport=tcp")  # fmt: skip
    serve.add_argument("--turn-user", help="TURN username")
    serve.add_argument("--turn-password", help="TURN credential (or LIVEFACE_TURN_PASSWORD)")
    serve.add_argument("--token", help="require this bearer token for /offer (or LIVEFACE_TOKEN)")
    render = sub.add_parser("render", help="render an audio file into an mp4")
    _engine_args(render)
    render.add_argument("--audio", required=True, help="input audio (any format ffmpeg reads)")
    render.add_argument("--out", required=True, help="output .mp4")
    render.add_argument(
        "--preset",
        default="ultrafast",
        help="x264 preset: ultrafast (default, fastest) ... veryfast (a seventh of the bytes)",
    )
    render.add_argument("--crf", type=int, default=20, help="x264 quality, 0-51, lower is better")
    render.add_argument(
        "--still",
        action="store_true",
        help="CPU engine: no head sway or breathing (blinks and mouth stay); renders faster",
    )
    render.add_argument("--seed", type=int, help="the session's random seed (blinks, sway, noise)")
    if not argv or argv[0] not in ("serve", "render", "-h", "--help", "--version"):
        argv = ["serve", *argv]
    return parser.parse_args(argv)


def _ice_servers(args: argparse.Namespace) -> list[dict[str, object]] | None:
    stun = getattr(args, "stun", None) or []
    turn = getattr(args, "turn", None) or []
    if not stun and not turn:
        return None
    servers: list[dict[str, object]] = [{"urls": url} for url in stun]
    if turn:
        password = args.turn_password or os.environ.get("LIVEFACE_TURN_PASSWORD")
        servers.append({"urls": turn, "username": args.turn_user, "credential": password})
    return servers


def _config(args: argparse.Namespace) -> ServerConfig:
    size = getattr(args, "size", None)
    return ServerConfig.load(
        args.config,
        engine=args.engine,
        portrait=args.portrait,
        fps=args.fps,
        width=size[0] if size else None,
        height=size[1] if size else None,
        chunk_frames=args.chunk_frames,
        lookahead_ms=args.lookahead_ms,
        checkpoint=args.checkpoint,
        model=args.model,
        lora=args.lora,
        fp8=True if args.fp8 else None,
        pipeline_ranks=getattr(args, "pipeline_ranks", None),
        pipeline_launcher=getattr(args, "pipeline_launcher", None),
        log_level=args.log_level,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        max_sessions=getattr(args, "max_sessions", None),
        engine_processes=getattr(args, "engine_processes", None),
        delay_ms=getattr(args, "delay_ms", None),
        zmq=getattr(args, "zmq", None),
        zmq_curve_dir=getattr(args, "zmq_curve_dir", None),
        http=False if getattr(args, "no_http", False) else None,
        ice_servers=_ice_servers(args),
        auth_token=getattr(args, "token", None) or os.environ.get("LIVEFACE_TOKEN") or None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from liveface.errors import AvatarError

    try:
        config = _config(args)
        if args.command == "render":
            return run_render(config, args)
        return run_server(config)
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
