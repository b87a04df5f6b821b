"""pipecat integration: :class:`LivefaceVideoService`, a local, open avatar video service.

Needs the optional extra: ``pip install 'liveface[pipecat]'``. See ``docs/pipecat.md``.
"""

try:
    import pipecat  # noqa: F401
except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        "liveface.integrations.pipecat needs pipecat-ai: pip install 'liveface[pipecat]'"
    ) from e

from liveface.integrations.local_server import LocalServer, LocalServerConfig, LocalServerError
from liveface.integrations.pipecat.service import LivefaceVideoService

__all__ = ["LivefaceVideoService", "LocalServer", "LocalServerConfig", "LocalServerError"]
