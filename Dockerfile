# NanoDet-Plus executor for YMIR.
#   docker build -t nanodet-ymir .                                   (GPU image, weights downloaded)
#   docker build --build-arg FETCH_WEIGHTS=0 -t nanodet-ymir .       (offline: no weights baked in)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 ...
#                                   (the same torch version built for CUDA 12.6, for older drivers)
# Base: Debian bookworm with CPython 3.11, as the CI image test builds it. torch comes from pip at
# the version pinned in docker/constraints.txt, the one the test suite runs (PyPI's Linux wheel of
# torch 2.13.0 is built for CUDA 13.0 and brings its CUDA libraries as pip packages).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Where a build without PyPI finds a torch wheel (bind-mounted, e.g.
# `podman build -v /opt/wheels:/wheels:ro`); its version must still be the pinned one.
ARG TORCH_WHEEL_DIR=/wheels
ARG TORCH_INDEX_URL=

ENV PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/weights/torch \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp \
    NANODET_WEIGHTS_DIR=/weights

# 1. Dependencies (a layer that survives code changes), every version pinned by
# docker/constraints.txt; torch is checked against the pin after the install.
# onnx writes the training stages' ONNX attachment; onnxruntime is the CPU backend of infer/mining.
COPY docker/constraints.txt /tmp/constraints.txt
RUN set -e; \
    wheel=$(ls ${TORCH_WHEEL_DIR}/torch-*.whl 2>/dev/null | head -n 1 || true); \
    if [ -n "$wheel" ]; then torch="$wheel"; else torch=torch; fi; \
    if [ -n "$TORCH_INDEX_URL" ]; then index="--index-url $TORCH_INDEX_URL --extra-index-url https://pypi.org/simple"; fi; \
    python3 -m pip install -c /tmp/constraints.txt ${index:-} "$torch"; \
    python3 -m pip install -c /tmp/constraints.txt numpy opencv-python-headless pycocotools pyyaml \
        pydantic tensorboard tqdm onnx onnxruntime; \
    pinned=$(sed -n 's/^torch==//p' /tmp/constraints.txt); \
    python3 -c "import sys, torch; v = torch.__version__.split('+')[0]; sys.exit(0 if v == '$pinned' else f'torch {v} is not the pinned $pinned')"

# The standard library's bytecode: the python:*-slim images ship it without .pyc files, and a task
# runs as a user who cannot write them, so each start would compile what it imports (pip already
# wrote the packages' .pyc files; a file that does not compile is one nothing imports).
RUN python3 -m compileall -q -j 0 -x '/(site|dist)-packages/' "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
    || echo "some standard library files did not compile (they stay source only)"

# 2. Pretrained weights, downloaded before any code is copied (stdlib only, from the list in
# docker/weights.json), so that editing the code or the README never downloads again: the
# ImageNet ShuffleNetV2 backbones and the official NanoDet-Plus COCO checkpoints. Files put in
# docker/weights/ by hand are there first and are not downloaded again.
#   FETCH_WEIGHTS=0       offline builds and CI: nothing downloaded (only docker/weights/ baked in)
#   WEIGHTS_ONLY="a b"    only these entries of docker/weights.json (by name)
#   WEIGHTS_MIRROR=URL    a folder URL serving the same file names, instead of the listed URLs
# A killed download leaves hidden .NAME.*.part files in docker/weights/: .dockerignore keeps them
# out of the build context, and this step refuses any that reach it.
COPY docker/weights /weights
COPY docker/weights.json docker/download_weights.py /opt/weights-fetch/
ARG FETCH_WEIGHTS=1
ARG WEIGHTS_ONLY=
ARG WEIGHTS_MIRROR=
RUN partial=$(find /weights -name '*.part'); \
    if [ -n "$partial" ]; then \
        echo "partial downloads in docker/weights/ (left by an interrupted fetch), never baked in: delete them:" $partial >&2; \
        exit 1; \
    fi; \
    case "$FETCH_WEIGHTS" in \
        1) python3 /opt/weights-fetch/download_weights.py --dest /weights --only $WEIGHTS_ONLY \
               --mirror "$WEIGHTS_MIRROR" ;; \
        0) echo "FETCH_WEIGHTS=0: no pretrained weights downloaded (only those from docker/weights/)" ;; \
        *) echo "FETCH_WEIGHTS must be 1 or 0, not '$FETCH_WEIGHTS'" >&2; exit 1 ;; \
    esac

# 3. The code.
WORKDIR /app
COPY README.md /app/
COPY nanodet /app/nanodet
COPY executor /app/executor
COPY config /app/config
COPY start.py /app/start.py
COPY docker/weights.json docker/download_weights.py docker/fetch_weights.py /app/docker/
# Its bytecode, by the interpreter that runs the tasks: they run as a user who cannot write
# /app, so without it every start compiles the code it imports. Hash-checked .pyc files stay
# valid whatever the files' mtimes (a COPY or an image export may change them).
RUN python3 -m compileall -q -j 0 --invalidation-mode checked-hash /app

# 4. The weights verified by the code that will load them, downloaded or put in docker/weights/
# by hand: hash where the list has one, and every tensor of the model of their config present
# with its shape; a file the list does not name must fit the training of the config its name
# starts with (a mismatch fails the build). The log prints each file's sha256 and size.
RUN case "$FETCH_WEIGHTS" in \
        1) python3 /app/docker/fetch_weights.py --dest /weights --verify-only --only $WEIGHTS_ONLY ;; \
        0) python3 /app/docker/fetch_weights.py --dest /weights --verify-only --missing-ok ;; \
    esac \
 && chmod -R a+rX /app /weights

# Task templates and manifest, read by the platform with `docker run IMAGE cat /img-man/...`.
COPY docker/img-man /img-man
COPY docker/start.sh /usr/bin/start.sh
RUN chmod -R a+rX /img-man && chmod a+rx /usr/bin/start.sh

# An empty ENTRYPOINT passes any command through (`docker run IMAGE cat /img-man/...`).
ENTRYPOINT []
CMD ["bash", "/usr/bin/start.sh"]
