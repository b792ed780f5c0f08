"""Tensor operations shared by the model and the post-processing."""

from nanodet.ops.nms import batched_nms, multiclass_nms, nms

__all__ = ["batched_nms", "multiclass_nms", "nms"]
