#!/usr/bin/env bash
# Build the real image from the Dockerfile with podman (no Docker engine, no registry) and
# run it as the platform does: a training task, then mining+infer on its model, as a
# non-root user, without network, /in read-only. Then check every output.
#
#   bash docker/image-test.sh            (make image-test)
#
# It also times the start of a mining task in this image and in the same image built without
# the line that precompiles /app (START_RUNS alternated runs each, default 3).
#
# Skips (exit 0, with a message) where podman cannot be installed or cannot run containers;
# under CI=true that is a failure (exit 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
IMAGE=localhost/nanodet-ymir:test
BASE=localhost/nanodet-base:bookworm
WORK=${IMAGE_TEST_DIR:-/var/tmp/nanodet-image-test}
USER_ID=4242:4242

say() { printf '[image-test] %s\n' "$*"; }
# Where the engine cannot run: a skip on a developer's machine, a failure in CI (CI=true).
skip() {
    if [ "${CI:-}" = true ]; then say "FAILED (CI=true, no skipping): $*"; exit 1; fi
    say "SKIPPED: $*"; exit 0
}

# --- podman, configured for a machine without a Docker engine -------------------------------
if ! command -v podman >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing podman from Debian"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            podman buildah runc fuse-overlayfs slirp4netns uidmap debootstrap) >/dev/null 2>&1 \
            || skip "podman could not be installed"
    else
        skip "podman is not installed and cannot be installed here (needs root and apt-get)"
    fi
fi
command -v debootstrap >/dev/null 2>&1 || skip "debootstrap is missing"

# Container ulimits no higher than ours (runc was refused an nproc above 32768 here even
# below the hard limit, so cap it there).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
ULIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
if [ "$(id -u)" = 0 ]; then
    # crun refuses this cgroup layout: runc + cgroupfs; podman's default ulimits exceed what we may set.
    mkdir -p /etc/containers
    cat > /etc/containers/containers.conf <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
fi
podman info >/dev/null 2>&1 || skip "podman cannot start here: $(podman info 2>&1 | tail -n 1)"

# A `docker` that is podman, keeping exit codes (podman 4.3's docker API always exits 0 on --rm).
SHIM=$(mktemp -d)
printf '#!/bin/sh\nexec podman "$@"\n' > "$SHIM/docker"
chmod +x "$SHIM/docker"
export PATH="$SHIM:$PATH"

# --- a local base image: Debian bookworm with python3, no registry ---------------------------
if ! podman image exists "$BASE"; then
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    say "debootstrap bookworm from $mirror"
    rootfs=$(mktemp -d /var/tmp/nanodet-rootfs.XXXX)
    bootstrap() {
        debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
            bookworm "$rootfs" "$mirror" >/dev/null
    }
    bootstrap || { say "debootstrap failed, retrying once"; rm -rf "$rootfs"; mkdir -p "$rootfs"; bootstrap; }
    tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

# --- the project image, from the real Dockerfile ---------------------------------------------
wheel_dir=$(dirname "$(ls /opt/wheels/torch-*.whl 2>/dev/null | head -n 1)")
[ -n "$wheel_dir" ] || skip "no local torch wheel under /opt/wheels"
ca=/etc/ssl/certs/ca-certificates.crt
rm -rf "$WORK" && mkdir -p "$WORK/served"
# The build downloads one weights file as the default build does, from a local server standing
# in for the release host (CI reaches package registries only): an official-format COCO
# checkpoint (a Lightning 1.4 pickle naming its callback classes), verified once the code is in.
"$PY" -c 'import sys; from pathlib import Path
from nanodet.config import load_config
from nanodet.model import build_model
from tests.old_checkpoints import save_lightning_checkpoint
state = build_model(load_config("config/nanodet-plus-m_320.yml").model.arch).state_dict()
save_lightning_checkpoint(state, Path(sys.argv[1]) / "nanodet-plus-m_320_checkpoint.ckpt", "1.4.9")' "$WORK/served"
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" -m http.server "$port" --bind 127.0.0.1 --directory "$WORK/served" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
build() {  # CONTEXT LOG [TAG]
    podman build --network host "${ULIMITS[@]}" -t "${3:-$IMAGE}" --build-arg BASE_IMAGE="$BASE" \
        --build-arg FETCH_WEIGHTS=1 --build-arg WEIGHTS_ONLY=nanodet-plus-m_320 \
        --build-arg WEIGHTS_MIRROR="http://127.0.0.1:$port/" \
        -v "$wheel_dir:/wheels:ro" -v "$ca:$ca:ro" -f "$1/Dockerfile" "$1" >"$2" 2>&1
}
context() {  # DIR [FROM]: a build context holding what the Dockerfile copies (from FROM, else this checkout)
    mkdir -p "$1"
    (cd "${2:-$ROOT}" && cp -a Dockerfile .dockerignore README.md start.py nanodet executor config docker "$1/")
}
# the line after the download step's STEP line in a build log: the cache hit, or its first output
download_step() { grep -A1 -E '^STEP [0-9]+/[0-9]+: RUN .*download_weights\.py --dest' "$1" | tail -n 1; }
# The stand-in is not the published release file, whose sha256 and size docker/weights.json pins:
# the context is this checkout with the stand-in's sha256 and size in that entry, nothing else changed.
context "$WORK/ctx-main"
"$PY" -c 'import hashlib, json, sys
from pathlib import Path
manifest, served = Path(sys.argv[1]), Path(sys.argv[2])
entries = json.loads(manifest.read_text())
entry = next(e for e in entries if e["name"] == "nanodet-plus-m_320")
entry.update(sha256=hashlib.sha256(served.read_bytes()).hexdigest(), size=served.stat().st_size)
manifest.write_text(json.dumps(entries, indent=2) + "\n")' \
    "$WORK/ctx-main/docker/weights.json" "$WORK/served/nanodet-plus-m_320_checkpoint.ckpt"
say "building $IMAGE"
t0=$(date +%s)
if ! build "$WORK/ctx-main" "$WORK/build-1.log"; then
    say "build failed, retrying once (package downloads can flake)"
    build "$WORK/ctx-main" "$WORK/build-1.log" || { tail -n 30 "$WORK/build-1.log"; say "FAILED: build"; exit 1; }
fi
build_s=$(( $(date +%s) - t0 ))
grep -q "downloaded from http://127.0.0.1:$port/nanodet-plus-m_320_checkpoint.ckpt" "$WORK/build-1.log" \
    || { tail -n 30 "$WORK/build-1.log"; say "FAILED: the build did not download the weights"; exit 1; }
verified=$(grep -o "ok nanodet-plus-m_320_checkpoint.ckpt: fits.*" "$WORK/build-1.log" | head -n 1)
[ -n "$verified" ] || { tail -n 30 "$WORK/build-1.log"; say "FAILED: the weights were not verified"; exit 1; }
say "build verified the weights: $verified"
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
say "built in ${build_s}s, image size $((size / 1024 / 1024)) MiB"

# This checkout's own list refuses the stand-in: the published hash is pinned (the download step fails).
pinned=$("$PY" -c 'import json; print(next(e["sha256"] for e in json.load(open("docker/weights.json")) if e["name"] == "nanodet-plus-m_320"))')
if build "$ROOT" "$WORK/build-pinned.log" "$IMAGE-refused"; then
    say "FAILED: the build accepted a file that is not the pinned nanodet-plus-m_320_checkpoint.ckpt"; exit 1
fi
grep -q "does not start with the expected $pinned" "$WORK/build-pinned.log" \
    || { tail -n 30 "$WORK/build-pinned.log"; say "FAILED: the pinned hash did not stop the build"; exit 1; }
say "this checkout's docker/weights.json (sha256 ${pinned:0:16}...) refuses the stand-in: ok"

# A second build after an edit of README.md, with a partial download a killed fetch left in
# docker/weights/: the weights layer comes from the cache and the partial file is not in the image.
context "$WORK/ctx-edit" "$WORK/ctx-main"
echo "edited for the cache check" >> "$WORK/ctx-edit/README.md"
partial=.nanodet-plus-m_320_checkpoint.ckpt.k1ll3d.part
head -c 4096 /dev/urandom > "$WORK/ctx-edit/docker/weights/$partial"
t0=$(date +%s)
build "$WORK/ctx-edit" "$WORK/build-2.log" || { tail -n 30 "$WORK/build-2.log"; say "FAILED: second build"; exit 1; }
step=$(download_step "$WORK/build-2.log")
case "$step" in
    *"Using cache"*) say "second build after a README edit: $(( $(date +%s) - t0 ))s, weights step: $step" ;;
    *) say "FAILED: the README edit re-ran the weights download ($step)"; exit 1 ;;
esac
baked=$(podman run --rm "$IMAGE" ls -A /weights | tr '\n' ' ')
case "$baked" in
    *.part*) say "FAILED: a partial download was baked into /weights: $baked"; exit 1 ;;
esac
# without its .dockerignore line the partial file reaches the build, which refuses it
context "$WORK/ctx-part" "$WORK/ctx-edit"
grep -v '\.part$' "$WORK/ctx-edit/.dockerignore" > "$WORK/ctx-part/.dockerignore"
if build "$WORK/ctx-part" "$WORK/build-part.log" "$IMAGE-refused"; then
    say "FAILED: a build context holding $partial built"; exit 1
fi
grep -q "partial downloads in docker/weights/.*$partial" "$WORK/build-part.log" \
    || { tail -n 30 "$WORK/build-part.log"; say "FAILED: the partial download did not stop the build"; exit 1; }
say "partial download: kept out by .dockerignore (/weights: $baked), refused by the build without it"

# The same image less the one Dockerfile line that precompiles /app: the start time without it.
compile_line='RUN python3 -m compileall -q -j 0 --invalidation-mode checked-hash /app'
context "$WORK/ctx-no-pyc" "$WORK/ctx-edit"
grep -vxF "$compile_line" "$WORK/ctx-edit/Dockerfile" > "$WORK/ctx-no-pyc/Dockerfile"
[ $(( $(wc -l < "$WORK/ctx-edit/Dockerfile") - $(wc -l < "$WORK/ctx-no-pyc/Dockerfile") )) = 1 ] \
    || { say "FAILED: the Dockerfile has no line '$compile_line' (update image-test.sh)"; exit 1; }
build "$WORK/ctx-no-pyc" "$WORK/build-no-pyc.log" "$IMAGE-no-pyc" \
    || { tail -n 30 "$WORK/build-no-pyc.log"; say "FAILED: build without the precompiled /app"; exit 1; }
rm -rf "$WORK/ctx-edit" "$WORK/ctx-part" "$WORK/ctx-no-pyc"  # ctx-main stays: what the image was built from

# --- templates, as the platform reads them ---------------------------------------------------
for t in training mining infer; do
    docker run --rm "$IMAGE" cat "/img-man/$t-template.yaml" | cmp -s - "$WORK/ctx-main/docker/img-man/$t-template.yaml" \
        || { say "FAILED: /img-man/$t-template.yaml differs"; exit 1; }
done
say "templates: ok"

# --- a training task, then mining+infer on its model -----------------------------------------
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
from executor.workspace import make_training_workspace
make_training_workspace(Path(sys.argv[1]) / "train-in", train_images=24, val_images=8, epochs=2, input_size=128,
                        batch_size_per_gpu=8, workers_per_gpu=2)
EOF
mkdir -p "$WORK/train-out" "$WORK/predict-out"
chmod 777 "$WORK/train-out" "$WORK/predict-out"
run_task() {  # IN OUT: as the platform runs the image (its log: OUT.log)
    find "$1" -type f -exec sha1sum {} + | sort > "$WORK/in-before.txt"
    docker run --rm --network none --user "$USER_ID" --shm-size 1g "${ULIMITS[@]}" \
        -v "$1:/in:ro" -v "$2:/out" "$IMAGE" >"$2.log" 2>&1 \
        || { say "FAILED: task exited $?"; tail -n 20 "$2.log"; tail -n 5 "$2/monitor.txt"; exit 1; }
    find "$1" -type f -exec sha1sum {} + | sort | cmp -s - "$WORK/in-before.txt" \
        || { say "FAILED: the task changed /in"; exit 1; }
}
t0=$(date +%s); run_task "$WORK/train-in" "$WORK/train-out"; say "training task: $(( $(date +%s) - t0 ))s"
grep -q "starting weights: COCO checkpoint /weights/nanodet-plus-m_320_checkpoint.ckpt" "$WORK/train-out.log" \
    || { tail -n 20 "$WORK/train-out.log"; say "FAILED: training did not start from the baked checkpoint"; exit 1; }
say "training: $(grep -o "class convs of .*" "$WORK/train-out.log" | head -n 1)"
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
from executor.workspace import make_predict_workspace
work = Path(sys.argv[1])
make_predict_workspace(work / "predict-in", work / "train-out" / "models", candidates=12, workers_per_gpu=2)
EOF
t0=$(date +%s); run_task "$WORK/predict-in" "$WORK/predict-out"; say "mining+infer task: $(( $(date +%s) - t0 ))s"
"$PY" docker/check_outputs.py "$WORK"

# --- the start of a mining task, with and without the precompiled /app ------------------------
# As the platform runs it (user 4242, /app not writable): which /app modules the task's imports
# take from .pyc files and which they compile (python3 -v), then the start (docker run to the
# log line naming the loaded model) and the imports alone, alternating the two images.
"$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
from executor.workspace import make_predict_workspace
work = Path(sys.argv[1])
make_predict_workspace(work / "mining-in", work / "train-out" / "models", candidates=12, infer=False)
EOF
imports='import sys; sys.path.insert(0, "/app"); sys.dont_write_bytecode = True; import executor.app, executor.predict'
app_modules() {  # IMAGE: "FROM_PYC COMPILED" counts of the /app modules a mining task imports
    docker run --rm --network none --user "$USER_ID" "$1" python3 -v -c "$imports" 2>&1 \
        | awk '/^# \/app\/.*\.pyc matches \/app\// {c++} /^# code object from \/app\/.*\.py$/ {s++} END {print c+0, s+0}'
}
read -r pyc_after compiled_after <<< "$(app_modules "$IMAGE")"
read -r pyc_before compiled_before <<< "$(app_modules "$IMAGE-no-pyc")"
[ "$compiled_after" = 0 ] && [ "$pyc_after" -gt 0 ] \
    || { say "FAILED: the task compiles $compiled_after /app modules at start ($pyc_after from .pyc)"; exit 1; }
say "/app modules a mining task imports: $pyc_after from .pyc, 0 compiled (without the step: $pyc_before from .pyc written by the root verification step, $compiled_before compiled at each start)"
# The /app part of those imports alone, timed once everything else they import is loaded (what
# precompiling changes, without the dependencies' much longer and noisier imports around it).
read -r -d '' app_imports <<'EOF' || true
import subprocess, sys
head = 'import sys; sys.path.insert(0, "/app"); sys.dont_write_bytecode = True\n'
listing = head + (
    "import executor.app, executor.predict\n"
    "print('\\n'.join(n for n, m in list(sys.modules.items()) if not (getattr(m, '__file__', None) or '').startswith('/app/')))"
)
deps = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True).stdout.split()
timing = head + (
    "import importlib, time\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except Exception:\n"
    "        pass\n"
    "t, c = time.perf_counter(), time.process_time()\n"
    "import executor.app, executor.predict\n"
    "print(f'{time.perf_counter() - t:.3f} {time.process_time() - c:.3f}')"
)
print(subprocess.run([sys.executable, "-c", timing, *deps], capture_output=True, text=True, check=True).stdout.strip())
EOF
app_import_s() {  # IMAGE: "WALL CPU" seconds of the /app imports, the rest already loaded
    docker run --rm --network none --user "$USER_ID" "$1" python3 -c "$app_imports"
}
mining_start() {  # IMAGE OUT: "START TOTAL" seconds from docker run to the model line, and to the end
    mkdir -p "$2" && chmod 777 "$2"
    local t0=$EPOCHREALTIME
    docker run --rm --network none --user "$USER_ID" --shm-size 1g "${ULIMITS[@]}" \
        -v "$WORK/mining-in:/in:ro" -v "$2:/out" "$1" 2>&1 \
        | while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done > "$2.log" \
        || { say "FAILED: mining task in $1" >&2; tail -n 20 "$2.log" >&2; return 1; }
    awk -v t0="$t0" -v t1="$EPOCHREALTIME" '/ model .* backend / && !s {s = $1 - t0}
        END {if (!s) exit 1; printf "%.2f %.2f\n", s, t1 - t0}' "$2.log" \
        || { say "FAILED: no model line in $2.log" >&2; return 1; }
}
runs=${START_RUNS:-3}
for i in $(seq "$runs"); do
    for v in after before; do
        image=$IMAGE; [ $v = before ] && image=$IMAGE-no-pyc
        start=$(mining_start "$image" "$WORK/mining-out-$v-$i") || exit 1
        imported=$(app_import_s "$image") || { say "FAILED: imports in $image"; exit 1; }
        echo "$v $start $imported" >> "$WORK/start-times.txt"
    done
done
"$PY" - "$WORK/start-times.txt" <<'EOF'
import statistics, sys
runs = {"after": [], "before": []}
for line in open(sys.argv[1]):
    v, *numbers = line.split()
    runs[v].append([float(x) for x in numbers])
def median(v, i):
    return statistics.median(r[i] for r in runs[v])
def each(v, i):
    return ", ".join(f"{r[i]:.2f}" for r in runs[v])
n = len(runs["after"])
for i, what in ((0, "start of a mining task (docker run to the model loaded)"), (1, "whole mining task"),
                (2, "its /app imports, the rest loaded"), (3, "CPU time of its /app imports")):
    print(f"[image-test] {what}, median of {n} alternated runs: {median('after', i):.2f} s with /app precompiled, "
          f"{median('before', i):.2f} s without ({each('after', i)} / {each('before', i)})")
EOF
say "PASSED (build ${build_s}s, image $((size / 1024 / 1024)) MiB)"
