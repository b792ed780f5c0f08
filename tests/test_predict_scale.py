"""Mining and infer over large candidate sets: a few warning lines however many candidates are
bad, every candidate still in the results, result files streamed byte for byte as before, and
what is kept per candidate small."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from executor.dataset import MISSING_WARNINGS
from executor.workspace import make_predict_workspace, write_env
from nanodet.inference.detections import Detections

from .executor_helpers import assert_success, candidates_of, infer_result, run_start, trained_models


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return trained_models(tmp_path_factory.mktemp("models"))


def _log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_many_unreadable_candidates_warn_a_few_lines_and_are_all_listed(models, tmp_path):
    """30 corrupt files and 8 missing ones among 4 good ones: at most MISSING_WARNINGS + 1 lines
    for each kind, the totals in the summary, and every candidate in both result files (the bad
    ones last with the lowest score, with no boxes)."""
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=4, batch_size_per_gpu=8, workers_per_gpu=1)
    good = candidates_of(in_dir)
    (in_dir / "assets" / "zz").mkdir()
    broken = [f"/in/assets/zz/broken-{k:02d}.jpg" for k in range(30)]
    for k, path in enumerate(broken):
        (in_dir / path.removeprefix("/in/")).write_bytes(b"not an image" if k % 2 else b"\xff\xd8\xff\xe0 truncated")
    gone = [f"/in/assets/zz/gone-{k}.jpg" for k in range(8)]
    rows = good[:2] + broken[:15] + gone[:4] + good[2:] + broken[15:] + gone[4:]
    (in_dir / "candidate-index.tsv").write_text("".join(f"{row}\n" for row in rows))
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)

    unreadable = _log_lines(proc.stdout, "unreadable candidate")
    assert len(unreadable) == MISSING_WARNINGS + 1, unreadable
    assert f"only the first {MISSING_WARNINGS} are named" in unreadable[-1]
    assert len(_log_lines(proc.stdout, "image file not found")) == MISSING_WARNINGS
    assert "30 unreadable, 8 missing" in proc.stdout
    assert "mining (aldd): 42 images ranked, 30 unreadable, 8 missing" in proc.stdout
    assert "infer: 42 images" in proc.stdout

    ranked = [line.split("\t") for line in (out / "result.tsv").read_text().splitlines()]
    assert [path for path, _ in ranked[4:]] == [row for row in rows if row not in good]  # index order among ties
    assert sorted(path for path, _ in ranked[:4]) == sorted(good) and all(float(s) >= 0 for _, s in ranked[:4])
    assert all(score == "-1" for _, score in ranked[4:])
    detection = infer_result(out)["detection"]
    assert list(detection) == [Path(row).name for row in rows]
    assert all(detection[Path(row).name] == {"boxes": []} for row in broken + gone)


def test_a_path_listed_twice_is_scored_at_both_rows(models, tmp_path):
    """The same file twice in the index (across a batch boundary and within one batch): both
    rows get its score, and nothing is counted as unreadable."""
    in_dir = make_predict_workspace(tmp_path / "in", models, candidates=3, batch_size_per_gpu=2, workers_per_gpu=0)
    a, b, c = candidates_of(in_dir)
    (in_dir / "candidate-index.tsv").write_text("".join(f"{row}\n" for row in (a, b, a, c, c)))
    out = tmp_path / "out"
    proc = run_start(in_dir, out)
    assert_success(proc, out)
    scores: dict[str, list[float]] = {}
    for line in (out / "result.tsv").read_text().splitlines():
        path, score = line.split("\t")
        scores.setdefault(path, []).append(float(score))
    assert sorted(scores) == sorted((a, b, c))
    # the two rows go through different batches: the same score up to the batch's float noise
    assert len(scores[a]) == 2 and scores[a][0] == pytest.approx(scores[a][1], rel=1e-4) and min(scores[a]) >= 0
    assert len(scores[c]) == 2 and scores[c][0] == pytest.approx(scores[c][1], rel=1e-4) and min(scores[c]) >= 0
    assert "0 unreadable" in proc.stdout and "unreadable candidate" not in proc.stdout


def _workspace(tmp_path: Path, protocol_version: str):
    from executor.paths import PathMapper
    from executor.protocol import parse_env, read_yaml

    in_dir, out = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out.mkdir()
    write_env(in_dir, mining=True, infer=True, protocol_version=protocol_version)
    return parse_env(read_yaml(in_dir / "env.yaml", "env")), PathMapper(in_dir, out), out


@pytest.mark.parametrize("protocol_version", ["1.1.0", "0.0.1"])
def test_streamed_result_files_are_what_one_dumps_gives(tmp_path, monkeypatch, protocol_version):
    """Written a few entries at a time (chunks of 3 here), the files are byte for byte the text of
    one ``json.dumps`` / one join: ties in index order, unreadable ones last, non-ASCII names
    escaped, a shared basename reported under its first candidate."""
    from executor import predict

    monkeypatch.setattr(predict, "WRITE_CHUNK", 3)
    env, mapper, out = _workspace(tmp_path, protocol_version)
    written = [f"/in/assets/{k % 3}/img-{k}.jpg" for k in range(10)] + ["/in/assets/x/çà €.jpg", "/in/other/img-4.jpg"]
    classes = ["circle", "square", "triangle"]
    results = predict.CandidateResults(len(written))
    values = [0.5, 0.25, 0.5, 0.125, 1e-9, 0.5, 0.75, 0.3333333333, 0.0, 2.5, 0.25, 0.5]
    for i, value in enumerate(values):
        if i in (3, 8):  # unreadable
            continue
        results.read[i] = True
        results.scores[i] = value
    results.boxes[0] = np.array([[1, 0.912345, 3, 4, 10, 12], [0, 0.5, 0, 0, 1, 1]])
    results.boxes[10] = np.array([[2, 0.35, 100, 200, 30, 40]])
    results.boxes[11] = np.array([[2, 0.99, 1, 1, 1, 1]])  # shares img-4.jpg's basename: not reported

    predict.write_mining_result(env, mapper, "aldd", written, results, missing=0)
    predict.write_infer_result(env, mapper, classes, written, results, missing=0)

    final = [values[i] if results.read[i] else predict.UNREADABLE_SCORE for i in range(len(written))]
    order = sorted(range(len(written)), key=lambda i: -final[i])
    expected_tsv = "\n".join(f"{written[i]}\t{final[i]:.8g}" for i in order) + "\n"
    assert (out / "result.tsv").read_text() == expected_tsv
    key = "boxes" if protocol_version == "1.1.0" else "annotations"

    def entry(row) -> dict:
        label, score, x, y, w, h = row
        return {"class_name": classes[int(label)], "score": score, "box": {"x": x, "y": y, "w": w, "h": h}}

    detection: dict[str, dict] = {}
    for i, path in enumerate(written):
        name = Path(path).name
        if name not in detection:
            rows = results.boxes[i].tolist() if i in results.boxes else []
            detection[name] = {key: [entry([int(v) if k != 1 else v for k, v in enumerate(r)]) for r in rows]}
    assert (out / "infer-result.json").read_bytes() == json.dumps({"detection": detection}).encode()
    assert not list(out.glob(".*.tmp"))


def test_compact_boxes_match_the_reported_boxes():
    """Threshold, pixel rounding (half to even, as before), boxes empty once rounded left out."""
    from executor.predict import compact_boxes

    dets = Detections(
        boxes=np.array([[0.5, 1.5, 10.4, 20.6], [5, 5, 5.4, 9], [1, 1, 3, 3]], dtype=np.float32),
        scores=np.array([0.9, 0.8, 0.2], dtype=np.float32),
        labels=np.array([2, 1, 0], dtype=np.int64),
    )
    rows = compact_boxes(dets, 0.35)
    assert rows is not None and rows.shape == (1, 6)
    assert rows[0].tolist() == [2, round(float(np.float32(0.9)), 6), 0, 2, 10, 19]
    assert compact_boxes(dets, 0.95) is None


def test_what_is_kept_per_candidate_is_small():
    """20 000 candidates, a third with two boxes above the threshold among eight: the results
    kept take about the size of the result files' numbers, far from the detector's outputs."""
    from executor.predict import CandidateResults, compact_boxes

    count = 20_000
    rng = np.random.default_rng(0)
    dets = Detections(
        boxes=(rng.uniform(0, 50, (8, 4)).cumsum(axis=1)).astype(np.float32),
        scores=np.array([0.9, 0.5, 0.3, 0.2, 0.1, 0.1, 0.06, 0.05], dtype=np.float32),
        labels=np.arange(8, dtype=np.int64) % 3,
    )
    empty = Detections(dets.boxes[:0], dets.scores[:0], dets.labels[:0])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        results = CandidateResults(count)
        for pos in range(count):
            results.read[pos] = True
            results.scores[pos] = 0.5
            rows = compact_boxes(dets if pos % 3 == 0 else empty, 0.35)
            if rows is not None:
                results.boxes[pos] = rows
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert len(results.boxes) == math.ceil(count / 3) and all(len(r) == 2 for r in results.boxes.values())
    per_candidate = grown / count
    assert per_candidate < 150, f"{per_candidate:.0f} bytes kept per candidate"
