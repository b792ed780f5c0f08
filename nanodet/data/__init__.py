"""Data: image reading, inference pre-processing (:mod:`.preprocess`, no PyTorch), training
augmentation and batching (:mod:`.transforms`), datasets."""
