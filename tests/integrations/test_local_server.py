"""The local server launcher (no pipecat needed): its command line, a failed start quoting the
server's log, and a server that dies with its parent."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import pytest

from liveface.errors import ConfigError
from liveface.integrations.local_server import LocalServer, LocalServerConfig, LocalServerError


def test_config_is_checked_and_becomes_a_serve_command(tmp_path):
    with pytest.raises(ConfigError, match="engine must be one of"):
        LocalServerConfig(engine="gpu")
    with pytest.raises(ConfigError, match="size must be"):
        LocalServerConfig(size=(0, 256))
    with pytest.raises(ConfigError, match="is not a file"):
        LocalServerConfig(portrait=str(tmp_path / "missing.jpg"))
    cmd = LocalServerConfig(size=(320, 240), fps=30, extra_args=("--chunk-frames", "2")).command(
        "ipc:///x"
    )
    assert cmd[1:] == [
        "-m",
        "liveface",
        "serve",
        "--no-http",
        "--zmq",
        "ipc:///x",
        "--engine",
        "warp",
        "--log-level",
        "WARNING",
        "--fps",
        "30",
        "--size",
        "320x240",
        "--chunk-frames",
        "2",
    ]


async def test_a_server_that_cannot_start_is_an_error_quoting_its_log():
    server = LocalServer(LocalServerConfig(fps=0))  # the server refuses fps 0
    with pytest.raises(LocalServerError, match="exited with status 2") as info:
        await server.start()
    assert "fps must be" in str(info.value)
    assert server.returncode == 2


PARENT = """
import asyncio, sys
from liveface.integrations.local_server import LocalServer

async def main():
    server = LocalServer()
    await server.start()
    print(server._proc.pid, server._dir, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's parent may be slow to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux only")
async def test_the_server_dies_with_a_killed_parent():
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    try:
        async with asyncio.timeout(120):
            pid_text, private_dir = (await parent.stdout.readline()).decode().split()
        pid = int(pid_text)
        assert running(pid)
    finally:
        parent.kill()  # no cleanup runs in the parent
        await parent.wait()
    try:
        async with asyncio.timeout(15):
            while await asyncio.to_thread(running, pid):
                await asyncio.sleep(0.1)
    finally:  # what the killed parent could not remove
        await asyncio.to_thread(shutil.rmtree, private_dir, True)
