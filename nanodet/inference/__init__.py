"""Inference: a model (config + weights, or an exported graph) on a device turned into detections
for images of any size: batching, decoding the head, NMS, mapping boxes back, and the ``detect`` command."""
