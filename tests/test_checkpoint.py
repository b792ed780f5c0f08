"""Both official weight formats load; mismatches are reported, not fatal; bad files fail clearly."""

import pickle
from pathlib import Path

import pytest
import torch

from nanodet.config import load_config
from nanodet.model import build_model
from nanodet.weights.checkpoint import CheckpointError, load_weights, save_pth

from .conftest import CONFIG_DIR, randomized_model


@pytest.fixture(scope="module")
def cfg():
    return load_config(CONFIG_DIR / "nanodet-plus-m_320.yml")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pth_round_trip(tmp_path: Path, cfg):
    src = randomized_model(cfg, seed=1)
    save_pth(src, tmp_path / "m.pth")
    dst = build_model(cfg.model.arch)
    report = load_weights(dst, tmp_path / "m.pth")
    assert not report.missing and not report.unexpected and not report.shape_mismatch
    assert _equal(src.state_dict(), dst.state_dict())


def test_lightning_ckpt_prefers_averaged_weights(tmp_path: Path, cfg):
    raw, ema = randomized_model(cfg, seed=1), randomized_model(cfg, seed=2)
    state = {f"model.{k}": v for k, v in raw.state_dict().items()}
    state |= {f"avg_model.{k}": v for k, v in ema.state_dict().items()}
    assert len(state) == 1774  # as the official Plus checkpoints
    torch.save(
        {"epoch": 299, "global_step": 1000, "state_dict": state, "pytorch-lightning_version": "1.9.0"},
        tmp_path / "model_best.ckpt",
    )
    dst = build_model(cfg.model.arch)
    report = load_weights(dst, tmp_path / "model_best.ckpt")
    assert report.source_format == "ckpt (EMA weights)"
    assert _equal(ema.state_dict(), dst.state_dict())


def test_lightning_ckpt_without_ema_uses_model_weights(tmp_path: Path, cfg):
    raw = randomized_model(cfg, seed=3)
    torch.save({"state_dict": {f"model.{k}": v for k, v in raw.state_dict().items()}}, tmp_path / "m.ckpt")
    dst = build_model(cfg.model.arch)
    load_weights(dst, tmp_path / "m.ckpt")
    assert _equal(raw.state_dict(), dst.state_dict())


BOX_ROWS = 4 * (7 + 1)  # reg_max 7
CLASS_CONVS = [f"head.gfl_cls.{i}.{p}" for i in range(4) for p in ("weight", "bias")] + [
    f"aux_head.gfl_cls.{p}" for p in ("weight", "bias")
]


def _fine_tune(cfg, classes: list[str], path: Path, **kwargs):
    model = build_model(cfg.with_classes(classes).model.arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_weights(model, path, class_names=classes, **kwargs)
    return model.state_dict(), before, report


def _assert_rows(after: dict, before: dict, source: dict, rows: list[int | None], n_source: int) -> None:
    """Each class conv: target class i holds source row rows[i] (None: its initial row), and the
    Plus head's box rows are the source's last BOX_ROWS rows."""
    for key in CLASS_CONVS:
        for target, row in enumerate(rows):
            expected = before[key][target] if row is None else source[key][row]
            assert torch.equal(after[key][target], expected), (key, target)
        if key.startswith("head."):
            assert torch.equal(after[key][len(rows) :], source[key][n_source:]), key


def test_coco_weights_onto_project_classes_keep_box_rows_and_shared_classes(tmp_path: Path, cfg, caplog):
    """The official release records no names: an 80-class file is read as COCO's classes."""
    caplog.set_level("INFO")
    coco = randomized_model(cfg, seed=4)
    save_pth(coco, tmp_path / "coco.pth")
    classes = ["person", "Traffic light", "widget"]
    after, before, report = _fine_tune(cfg, classes, tmp_path / "coco.pth")

    assert not report.shape_mismatch and not report.missing and len(report.loaded) == 887
    _assert_rows(after, before, coco.state_dict(), [0, 9, None], 80)
    for key, value in after.items():  # everything else is the file's
        if key not in CLASS_CONVS:
            assert torch.equal(value, coco.state_dict()[key]), key
    assert report.class_transfer.kept == ["person", "Traffic light"] and report.class_transfer.new == ["widget"]
    line = next(r.message for r in caplog.records if "class convs of" in r.message)
    assert "10 class-conv tensors rebuilt from 80 to 3 classes; box-distribution rows kept (32 per tensor)" in line
    assert "class rows kept for 2 classes matched by name (person, Traffic light)" in line
    assert "new classes at their initial rows: widget" in line and "COCO's 80" in line


def test_recorded_class_names_map_rows_by_name(tmp_path: Path, cfg):
    """A model of ours records its classes: rows follow names through reorders and new classes."""
    shapes_cfg = cfg.with_classes(["circle", "square", "triangle"])
    shapes = randomized_model(shapes_cfg, seed=5)
    save_pth(shapes, tmp_path / "shapes.pth", class_names=["circle", "square", "triangle"])
    after, before, _ = _fine_tune(cfg, ["square", "star", "circle"], tmp_path / "shapes.pth")
    _assert_rows(after, before, shapes.state_dict(), [1, None, 0], 3)

    # the same classes in another order: same shapes, rows still follow the names
    after, before, report = _fine_tune(cfg, ["triangle", "circle", "square"], tmp_path / "shapes.pth")
    _assert_rows(after, before, shapes.state_dict(), [2, 0, 1], 3)
    assert report.class_transfer.new == []


def test_given_class_names_win_over_the_files(tmp_path: Path, cfg):
    shapes = randomized_model(cfg.with_classes(["a", "b"]), seed=6)
    save_pth(shapes, tmp_path / "ab.pth", class_names=["a", "b"])
    after, before, _ = _fine_tune(cfg, ["b", "c"], tmp_path / "ab.pth", source_class_names=["b", "c"])
    _assert_rows(after, before, shapes.state_dict(), [0, 1], 2)


def test_unknown_source_names_keep_only_the_box_rows(tmp_path: Path, cfg, caplog):
    caplog.set_level("INFO")
    five = randomized_model(cfg.with_classes(list("abcde")), seed=7)
    save_pth(five, tmp_path / "five.pth")  # no names recorded, not COCO's count
    after, before, report = _fine_tune(cfg, ["a", "b", "c"], tmp_path / "five.pth")
    _assert_rows(after, before, five.state_dict(), [None, None, None], 5)
    assert "the file's class names are unknown: class rows start anew" in caplog.text

    # same count, no names: loads as it is (the previous behaviour)
    three = randomized_model(cfg.with_classes(["x", "y", "z"]), seed=8)
    save_pth(three, tmp_path / "three.pth")
    after, _, report = _fine_tune(cfg, ["a", "b", "c"], tmp_path / "three.pth")
    assert report.class_transfer is None
    assert all(torch.equal(after[k], three.state_dict()[k]) for k in CLASS_CONVS)


def test_strict_loading_never_rebuilds_class_convs(tmp_path: Path, cfg):
    save_pth(randomized_model(cfg, seed=4), tmp_path / "coco.pth")
    model = build_model(cfg.with_classes(["person"]).model.arch)
    with pytest.raises(CheckpointError, match="the weights are for 80 classes, the model config has 1"):
        load_weights(model, tmp_path / "coco.pth", strict=True, class_names=["person"])


def test_weights_of_another_width_are_refused_for_fine_tuning(tmp_path: Path, cfg):
    """A 1.5x file for a 1.0x config: the head would fit, the backbone and neck do not."""
    wide = load_config(CONFIG_DIR / "nanodet-plus-m-1.5x_320.yml")
    save_pth(build_model(wide.model.arch), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model(cfg.model.arch), tmp_path / "wide.pth")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'wide.pth'}: only ")
    assert "backbone and neck tensors fit (at least 90% must;" in message
    assert "weights of another architecture or width than the model config" in message


def test_inference_model_ignores_training_only_keys(tmp_path: Path, cfg):
    save_pth(randomized_model(cfg), tmp_path / "full.pth")
    model = build_model(cfg.model.arch, with_aux=False)
    report = load_weights(model, tmp_path / "full.pth")
    assert not report.unexpected and not report.missing and len(report.loaded) == 645


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04garbage"])
def test_garbage_file_is_one_clear_error(tmp_path: Path, cfg, content):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model(cfg.model.arch), bad)
    message = str(err.value)
    assert message.startswith(str(bad)) and "\n" not in message


def test_missing_file(tmp_path: Path, cfg):
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_weights(build_model(cfg.model.arch), tmp_path / "nope.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, cfg, capsys):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_weights(build_model(cfg.model.arch), evil)
    assert "this must never run" not in capsys.readouterr().out


def test_torch_saved_pickle_naming_code_is_refused_as_such(tmp_path: Path, cfg):
    """The format torch.save writes: the message says why (code), without torch's advice to
    load it with weights_only=False; the code never runs."""
    marker = tmp_path / "ran"
    torch.save({"state_dict": _WritesFile(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model(cfg.model.arch), tmp_path / "evil.pth")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'evil.pth'}: refused: loading it would import code (")
    assert "GLOBAL" in message and "weights_only" not in message and "add_safe_globals" not in message
    assert not marker.exists()


class _WritesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('x')",))


def test_wrong_architecture_is_an_error(tmp_path: Path, cfg):
    torch.save({"state_dict": {"foo.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no tensor in this checkpoint fits"):
        load_weights(build_model(cfg.model.arch), tmp_path / "other.pth")


def test_coco_class_names_are_the_official_configs():
    from nanodet.weights.class_transfer import COCO_CLASS_NAMES

    for path in CONFIG_DIR.glob("nanodet-plus-*.yml"):
        assert list(load_config(path).class_names) == COCO_CLASS_NAMES, path
