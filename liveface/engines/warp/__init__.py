"""The embedded CPU engine: a portrait animated by warping its face-landmark mesh (no weights).

``WarpEngine(WarpConfig(...))`` implements :class:`liveface.engines.base.Engine`. The face models
(MediaPipe's, run on LiteRT) are loaded only when a session opens.
"""

from liveface.engines.warp.config import WarpConfig
from liveface.engines.warp.engine import OPTIONS, WarpEngine, WarpState
from liveface.engines.warp.face import default_portrait

__all__ = ["OPTIONS", "WarpConfig", "WarpEngine", "WarpState", "default_portrait"]
