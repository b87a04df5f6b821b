#!/usr/bin/env python3
"""liveface command line: ``serve`` (default) runs the server, ``render`` makes an mp4 offline.

python run_avatar.py                       # http://127.0.0.1:8080, CPU engine, default portrait
python run_avatar.py serve --port 9000 --portrait me.jpg --max-sessions 8
python run_avatar.py serve --zmq tcp://127.0.0.1:5555
python run_avatar.py render --audio speech.mp3 --portrait me.jpg --out talk.mp4
"""

from __future__ import annotations

import argparse
import sys


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
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run_avatar.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the HTTP/WebRTC (and ZeroMQ) server")
    _engine_args(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument("--max-sessions", type=int, help="concurrent sessions (default 4)")
    serve.add_argument("--delay-ms", type=int, help="output delay absorbing jitter (default 80)")
    serve.add_argument("--zmq", help="also serve ZeroMQ on this address, e.g. tcp://127.0.0.1:5555")
    serve.add_argument("--zmq-curve-dir", help="CURVE keys directory (see docs/zmq-protocol.md)")
    serve.add_argument("--no-http", action="store_true", help="serve ZeroMQ only")
    render = sub.add_parser("render", help="render an audio file into an mp4")
    _engine_args(render)
    render.add_argument("--audio", required=True, help="input audio (any format ffmpeg reads)")
    render.add_argument("--out", required=True, help="output .mp4")
    if not argv or argv[0] not in ("serve", "render", "-h", "--help"):
        argv = ["serve", *argv]
    return parser.parse_args(argv)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from liveface.runtime.config import ServerConfig

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
        log_level=args.log_level,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        max_sessions=getattr(args, "max_sessions", None),
        delay_ms=getattr(args, "delay_ms", None),
        zmq=getattr(args, "zmq", None),
        zmq_curve_dir=getattr(args, "zmq_curve_dir", None),
        http=False if getattr(args, "no_http", False) else None,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from liveface.errors import AvatarError

    try:
        config = _config(args)
        if args.command == "render":
            from liveface.runtime.cli import run_render

            return run_render(config, args.audio, args.out)
        from liveface.runtime.cli import run_server

        return run_server(config)
    except AvatarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
