"""Operations shared by the model and the post-processing: NMS on PyTorch tensors
(:mod:`.nms`) and on NumPy arrays (:mod:`.opencv_nms`, no PyTorch)."""
