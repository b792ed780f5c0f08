"""NanoDet models: ShuffleNetV2 backbone, Ghost-PAN / PAN necks, GFL heads."""

from .detector import NanoDet, build_model, inference_parameter_count

__all__ = ["NanoDet", "build_model", "inference_parameter_count"]
