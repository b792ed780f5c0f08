"""Weights in and out: the official NanoDet checkpoint formats read safely (weights-only
unpickling, inert stand-ins for the few names old release files carry, every loaded value checked),
class rows carried over to another class list, and the ImageNet backbones."""
