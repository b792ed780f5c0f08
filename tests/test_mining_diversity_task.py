"""mining_diversity through start.py: the template switch, a burst of copies discounted in
result.tsv, scores that never increase down the file, and one ranking for 1 and 2 processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from executor.workspace import make_predict_workspace

from .executor_helpers import assert_success, candidates_of, edit_yaml, run_start, trained_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return trained_models(tmp_path_factory.mktemp("models"))


def ranking(out: Path) -> list[tuple[str, float]]:
    rows = [line.split("\t") for line in (out / "result.tsv").read_text().splitlines()]
    return [(path, float(score)) for path, score in rows]


def assert_never_increasing(rows: list[tuple[str, float]]) -> None:
    scores = [s for _, s in rows]
    assert all(a >= b for a, b in zip(scores, scores[1:])), scores


def add_copies(in_dir: Path, source: str, count: int, tag: str = "burst") -> list[str]:
    """``count`` byte-identical copies of the candidate ``source`` (an /in path), appended to the index."""
    local = in_dir / source.removeprefix("/in/")
    copies = []
    for k in range(count):
        name = local.with_name(f"{tag}-{k}{local.suffix}")
        shutil.copyfile(local, name)
        copies.append("/in/" + str(name.relative_to(in_dir)))
    with (in_dir / "candidate-index.tsv").open("a") as index:
        index.writelines(f"{c}\n" for c in copies)
    return copies


def test_the_template_key_is_false_by_default_and_documented():
    template = yaml.safe_load((ROOT / "docker" / "img-man" / "mining-template.yaml").read_text())
    assert template["mining_diversity"] is False
    assert "mining_diversity" in (ROOT / "docs" / "usage.md").read_text()


def test_a_burst_of_copies_reaches_the_top_once_with_the_switch_on(models, tmp_path):
    """Seven distinct candidates, one unreadable file, and four copies of the top-scored one.
    Switch off: the five identical images share the top score and fill the top 5. Switch on:
    one of them stays first with its score; the others follow at 1/2, 1/4, 1/8, 1/16 of it, so
    the candidates scored in between come before them; the unreadable one stays last."""
    in_dir = make_predict_workspace(
        tmp_path / "in", models, candidates=7, infer=False, batch_size_per_gpu=4, workers_per_gpu=0
    )
    assert_success(run_start(in_dir, tmp_path / "first"), tmp_path / "first")
    top = ranking(tmp_path / "first")[0][0]
    burst = [top, *add_copies(in_dir, top, 4)]
    (in_dir / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with (in_dir / "candidate-index.tsv").open("a") as index:
        index.write("/in/broken.jpg\n")

    edit_yaml(in_dir / "config.yaml", mining_diversity="false")
    assert_success(run_start(in_dir, tmp_path / "off"), tmp_path / "off")
    off = ranking(tmp_path / "off")
    assert_never_increasing(off)
    assert {p for p, _ in off[:5]} == set(burst)
    s = off[0][1]
    assert [score for _, score in off[:5]] == pytest.approx([s] * 5, rel=1e-5)

    edit_yaml(in_dir / "config.yaml", mining_diversity="true")
    proc = run_start(in_dir, tmp_path / "on")
    assert_success(proc, tmp_path / "on")
    assert "no labelled_embeddings.npy beside" in proc.stdout  # a model trained elsewhere: no labelled groups
    on = ranking(tmp_path / "on")
    assert_never_increasing(on)
    assert sorted(p for p, _ in on) == sorted(candidates_of(in_dir))
    assert on[-1] == ("/in/broken.jpg", -1.0)
    assert on[0][0] in burst and on[0][1] == pytest.approx(s, rel=1e-5)
    copies = [(rank, score) for rank, (path, score) in enumerate(on) if path in burst]
    assert [score for _, score in copies] == pytest.approx([s, s / 2, s / 4, s / 8, s / 16], rel=1e-5)
    second = copies[1][0]
    assert second > 1, "a distinct candidate scores above half the burst's score: it must rank before the copy"
    assert sum(path in burst for path, _ in on[:second]) == 1  # the top-k, k up to that rank: one of the burst
    others = {p: score for p, score in off if p not in burst and p != "/in/broken.jpg"}
    assert all(score <= others[p] + 1e-9 for p, score in on if p in others)  # discounted at most


def test_two_processes_rank_as_one_with_the_switch_on(models, tmp_path):
    """The ranking runs once over the candidates of both ranks: the same file order and scores."""
    in_dir = make_predict_workspace(
        tmp_path / "in", models, candidates=7, infer=False, batch_size_per_gpu=2, workers_per_gpu=0
    )
    first = candidates_of(in_dir)
    add_copies(in_dir, first[0], 3, "a")
    add_copies(in_dir, first[3], 2, "b")
    edit_yaml(in_dir / "config.yaml", mining_diversity=True)
    assert_success(run_start(in_dir, tmp_path / "one"), tmp_path / "one")
    edit_yaml(in_dir / "config.yaml", cpu_processes=2)
    proc = run_start(in_dir, tmp_path / "two")
    assert_success(proc, tmp_path / "two")
    assert "launching 2 processes with torchrun" in proc.stdout + proc.stderr
    one, two = ranking(tmp_path / "one"), ranking(tmp_path / "two")
    assert [p for p, _ in two] == [p for p, _ in one]
    assert [s for _, s in two] == pytest.approx([s for _, s in one], rel=1e-5)
    assert_never_increasing(one)
    assert len(one) == 12 and sum(s < one[0][1] / 1.5 for _, s in one) >= 3  # copies were discounted


def test_a_candidate_like_a_labelled_image_starts_discounted(models, tmp_path):
    """The training task leaves the embeddings of its images beside its weights: a candidate that
    is one of them starts as its group's second member (half its score) and yields the top. A
    damaged file: a warning naming it, and the ranking of no file at all."""
    from executor.labelled_embeddings import write_labelled_embeddings
    from nanodet.config import load_config

    in_dir = make_predict_workspace(
        tmp_path / "in", models, candidates=7, infer=False, batch_size_per_gpu=4, workers_per_gpu=0
    )
    edit_yaml(in_dir / "config.yaml", mining_diversity=True)
    (in_dir / "models" / "labelled_embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    proc = run_start(in_dir, tmp_path / "damaged")
    assert_success(proc, tmp_path / "damaged")
    assert "labelled_embeddings.npy: not read" in proc.stdout
    unseeded = ranking(tmp_path / "damaged")
    (top, s), s2 = unseeded[0], unseeded[1][1]
    assert s / 4 < s2 < s  # so the seeded ranking has another candidate first

    labelled = tmp_path / "labelled.json"  # a training set of one image: the top candidate
    labelled.write_text(json.dumps({"images": [{"id": 1, "file_name": top.removeprefix("/in/")}]}))
    split = {"img_path": str(in_dir), "ann_path": str(labelled)}
    cfg = load_config(in_dir / "models" / "train_cfg.yml").merged({"data": {"train": split, "val": split}})
    weights = in_dir / "models" / "nanodet_model_best.pth"
    assert write_labelled_embeddings(cfg, weights, in_dir / "models" / "labelled_embeddings.npy") == 2
    proc = run_start(in_dir, tmp_path / "seeded")
    assert_success(proc, tmp_path / "seeded")
    assert "groups seeded by 2 labelled images" in proc.stdout
    seeded = ranking(tmp_path / "seeded")
    assert_never_increasing(seeded)
    assert seeded[0][0] != top
    assert dict(seeded)[top] == pytest.approx(s / 4, rel=1e-5)  # labelled twice (training and validation)
    assert all(dict(seeded)[p] <= score + 1e-9 for p, score in unseeded)
