"""liveface: a real-time streaming avatar runtime.

Audio comes in on a media clock, is cut into causal chunks, an engine turns each chunk into video
frames, and the frames go out on the same media clock together with the audio they animate.
"""

__version__ = "0.1.0"
