# NanoDet-Plus executor for YMIR.
#   docker build -t nanodet-ymir .
#   docker build --build-arg BASE_IMAGE=<local base with python3> -t nanodet-ymir .
# Base: the official PyTorch CUDA runtime image (torch 2.x, CUDA 12.x, cuDNN 9).
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

# Where a base without torch finds a torch wheel (bind-mounted at build time, e.g.
# `podman build -v /opt/wheels:/wheels:ro`); the PyTorch base images already have torch.
ARG TORCH_WHEEL_DIR=/wheels

ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/weights/torch \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp \
    NANODET_WEIGHTS_DIR=/weights

# Dependencies first (a layer that survives code changes); torch only when the base lacks it.
# onnx writes the training stages' ONNX attachment; onnxruntime is the CPU backend of infer/mining.
# Versions pinned by docker/constraints.txt (the ones the tests ran with).
COPY docker/constraints.txt /tmp/constraints.txt
RUN python3 -c "import torch" 2>/dev/null \
 || python3 -m pip install "$(ls ${TORCH_WHEEL_DIR}/torch-*.whl | head -n 1)" \
 && python3 -m pip install -c /tmp/constraints.txt numpy opencv-python-headless pycocotools pyyaml \
        pydantic tensorboard tqdm onnx onnxruntime

WORKDIR /app
COPY README.md /app/
COPY nanodet /app/nanodet
COPY executor /app/executor
COPY config /app/config
COPY start.py /app/start.py

# Task templates and manifest, read by the platform with `docker run IMAGE cat /img-man/...`.
COPY docker/img-man /img-man
# Pretrained weights at /weights: whatever is in docker/weights/ (weights brought by hand), then
# the ImageNet ShuffleNetV2 backbones and the official NanoDet-Plus COCO checkpoints, downloaded
# and verified by docker/fetch_weights.py (a mismatch fails the build). The default build
# downloads them; `--build-arg FETCH_WEIGHTS=0` is for offline builds and CI: then no weights
# are baked in, and training starts from random init unless the user brings weights.
COPY docker/weights /weights
COPY docker/fetch_weights.py /app/docker/fetch_weights.py
# Declared here, not at the top: the dependency layers above stay cached whatever its value.
ARG FETCH_WEIGHTS=1
RUN case "$FETCH_WEIGHTS" in \
        1) python3 /app/docker/fetch_weights.py --dest /weights ;; \
        0) echo "FETCH_WEIGHTS=0: no pretrained weights baked in (only those from docker/weights/)" ;; \
        *) echo "FETCH_WEIGHTS must be 1 or 0, not '$FETCH_WEIGHTS'" >&2; exit 1 ;; \
    esac \
 && chmod -R a+rX /app /img-man /weights

COPY docker/start.sh /usr/bin/start.sh
RUN chmod a+rx /usr/bin/start.sh

# An empty ENTRYPOINT passes any command through (`docker run IMAGE cat /img-man/...`).
ENTRYPOINT []
CMD ["bash", "/usr/bin/start.sh"]
