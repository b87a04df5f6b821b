"""Named groups of MediaPipe face-mesh landmarks (478 points with the refined irises).

The indices are facts of the face-mesh topology (the contours of its ``FACEMESH_LIPS``,
``FACEMESH_*_EYE`` and ``FACEMESH_FACE_OVAL`` connection sets), ordered here as open chains from
the corner with the smaller image x to the one with the larger x. "Left"/"right" mean the image's
left and right, not the subject's.
"""

from __future__ import annotations

import numpy as np

NUM_LANDMARKS = 478

# Lips: outer and inner contours, split at the mouth corners into an upper and a lower chain.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

# Eyes: lid margins from the corner on the image left to the corner on the image right.
EYE_L_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_L_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_R_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
EYE_R_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)

# Lower edge of each eyebrow (the upper limit of the lid skin a blink stretches).
BROW_L_LOWER = (46, 53, 52, 65, 55)
BROW_R_LOWER = (285, 295, 282, 283, 276)

# Face oval as a closed loop starting at the forehead (10), passing the chin (152).
FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)

FOREHEAD = 10
CHIN = 152
NOSE_TIP = 1
# Refined iris centres (present because the mesh runs with ``refine_landmarks=True``).
IRIS_CENTERS = (468, 473)
# The face mesh proper; the ten iris points are left out of the warp mesh (blinks own the eyes).
MESH_POINTS = 468


def eye_centers(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(2,)`` of the eyes on the image left and right, from ``lm (478, 2)``."""
    left = lm[list(EYE_L_UPPER + EYE_L_LOWER)].mean(axis=0)
    right = lm[list(EYE_R_UPPER + EYE_R_LOWER)].mean(axis=0)
    return left, right


def chain_at(lm: np.ndarray, chain: tuple[int, ...], xs: np.ndarray) -> np.ndarray:
    """The y of a landmark chain, linearly interpolated at columns ``xs (n,)``; ``(n,)``.

    Columns outside the chain's x range take the value of its nearest end.
    """
    pts = lm[list(chain)]
    order = np.argsort(pts[:, 0], kind="stable")
    return np.interp(xs, pts[order, 0], pts[order, 1])
