"""Training lowers the loss, and the trained model's frames follow held-out audio in the engine.

The recipe at tiny size (:mod:`tests.training.world`): a base DiT pretrained without audio, then
the audio adapter on it, frozen. Measured through the exported checkpoint in the real engine: the
correlation between the rendered mouth's opening and the held-out audio's loudness per frame.
"""

from __future__ import annotations

import numpy as np

from liveface.engines.diffusion.factory import DiffusionEngineConfig, create_diffusion_engine
from liveface.training.preview import render
from tests.training import world

#: Loss reduction of the whole recipe (random base -> pretrained -> adapter), measured 36x.
RECIPE_FACTOR = 10.0
#: Loss reduction of the adapter stage alone on the frozen base (audio explains the mouth, a
#: small part of each frame), measured 3.7x.
ADAPTER_FACTOR = 2.0


def engine(checkpoint):
    config = DiffusionEngineConfig(
        str(checkpoint), width=world.SIZE, height=world.SIZE, fps=25, chunk_frames=4
    )
    return create_diffusion_engine(config, device="cpu", dtype="float32")


def rendered(checkpoint) -> np.ndarray:
    portrait, wave, _ = world.held_out()
    return render(engine(checkpoint), portrait, wave, options={"seed": 0}).frames


def test_training_lowers_the_loss():
    world.teacher()
    pre = world.losses(world.root() / "run_pretrain")
    adapter = world.losses(world.teacher_run())
    start, end = pre[:3].mean(), adapter[-3:].mean()
    print(
        f"recipe loss {start:.4f} -> {end:.4f} ({start / end:.1f}x); adapter stage "
        f"{adapter[:3].mean():.4f} -> {end:.4f} ({adapter[:3].mean() / end:.2f}x)"
    )
    assert start / end >= RECIPE_FACTOR
    assert adapter[:3].mean() / end >= ADAPTER_FACTOR
    assert np.isfinite(adapter).all()


def test_trained_model_follows_held_out_audio_and_the_untrained_one_does_not():
    trained = world.audio_correlation(rendered(world.teacher()))
    untrained = world.audio_correlation(rendered(world.pretrained()))
    print(f"correlation with held-out audio: trained {trained:.3f}, untrained {untrained:.3f}")
    assert trained >= 0.5
    assert abs(untrained) <= 0.3
