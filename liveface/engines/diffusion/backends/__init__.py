"""Execution backends of the diffusion engine's fixed-shape steps.

* :mod:`.precision` - compute dtype (bfloat16 by default) and FP8 capability detection;
* :mod:`.compiled` - ``torch.compile`` (CUDA graphs) with a warm-up and an eager fallback;
* :mod:`.onnx_export` - the DiT denoising step and the TAEHV decode step as ONNX graphs, with a
  parity check against eager PyTorch (onnxruntime);
* :mod:`.tensorrt` - TensorRT engines built from those graphs (the ``gpu`` extra, imported lazily).

Nothing is imported here: each backend pulls in its own dependencies when used.
"""
