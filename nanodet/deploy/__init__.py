"""Deployment: the inference graph (model + box decode), its ONNX / OpenVINO export, and the
runtimes that execute it (PyTorch, ONNX Runtime, OpenVINO) behind one interface."""
