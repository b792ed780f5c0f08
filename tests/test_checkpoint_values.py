"""A checkpoint can never crash us. Forged numpy values (an object dtype whose "holds objects"
flag a file cleared, an ndarray over file bytes) are refused with the documented error before
any value is used; every load of such a file runs in a forked child, so that a crash fails the
test instead of killing pytest. Plain numpy values (the release files' scores) still load, the
values a resume converts are checked, and fuzzed checkpoints load or are refused."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from bench._common import LOADED, REFUSED, SIGNAL, run_in_child
from bench.fuzz import fuzz, load_like_our_code, model_config
from nanodet.engine.checkpointer import check_resumable, load_training_checkpoint, save_training_checkpoint
from nanodet.model import build_model
from nanodet.weights.checkpoint import CheckpointError, read_checkpoint

from . import crafted_pickles as cp

MARKER = 0.318309886  # the best metric the good checkpoint is written with, then replaced
# A child gets this much: far more than a load takes (0.3 s of CPU), so only a hang reaches it.
CHILD_LIMITS = {"wall_s": 300.0, "cpu_s": 30}


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return build_model(model_config().model.arch)


@pytest.fixture(scope="module")
def good_training(tmp_path_factory, model) -> Path:
    """A training checkpoint as our trainer writes it, best metric ``MARKER``."""
    path = tmp_path_factory.mktemp("good") / "model_last.ckpt"
    optimizer = torch.optim.AdamW(model.parameters())
    save_training_checkpoint(path, model, None, optimizer, None, 2, 20, MARKER, {"best_epoch": 1})
    return path


def _load_in_child(path: Path, model):
    return run_in_child(lambda: load_like_our_code(path, model), (CheckpointError,), **CHILD_LIMITS)


@pytest.mark.parametrize("forged", list(cp.HOSTILE_VALUES))
def test_a_forged_numpy_value_is_refused_and_nothing_dies(tmp_path, model, good_training, forged):
    """The issue's file: a real model_last.ckpt whose best metric is a forged numpy value. The
    old allow-list read it, and resume's float() (or the read itself) died with SIGSEGV."""
    path = cp.hostile_training_checkpoint(
        good_training, tmp_path / "model_last.ckpt", cp.HOSTILE_VALUES[forged](), MARKER
    )
    result = _load_in_child(path, model)
    assert result.outcome == REFUSED, result
    assert result.detail.startswith(f"CheckpointError: {path}: refused: "), result.detail
    assert result.detail.endswith("only tensors and plain values are accepted"), result.detail


def test_the_unguarded_numpy_value_does_crash(tmp_path):
    """What the refusal prevents, and that the child reports a crash: the same forged dtype built
    with numpy directly, then float() of an array over 8 bytes of 'A'."""

    def forged_float() -> None:
        dtype = np.dtype("O8", False, True)
        dtype.__setstate__((3, *cp.OBJECT_FLAGS_CLEARED))
        assert not dtype.hasobject
        float(np.ndarray((), dtype, cp.POINTER))

    result = run_in_child(forged_float, (CheckpointError,), **CHILD_LIMITS)
    assert (result.outcome, result.detail) == (SIGNAL, f"killed by {signal.Signals.SIGSEGV.name}")


def test_a_forged_value_anywhere_in_a_pth_is_refused(tmp_path, model):
    """Beside good weights, at the top level, where nothing converts it: refused all the same."""
    good = tmp_path / "good.pth"
    torch.save({"state_dict": model.state_dict()}, good)
    path = tmp_path / "forged.pth"
    path.write_bytes(cp.with_top_level_item(good.read_bytes(), "extra", cp.object_array_over_file_bytes()))
    result = _load_in_child(path, model)
    assert result.outcome == REFUSED and "refused: numpy dtype 'O8'" in result.detail, result


# --- plain numpy values -----------------------------------------------------------------

PLAIN_CODES = ["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"]


@pytest.mark.parametrize("package", ["numpy.core", "numpy._core"])
def test_plain_numpy_scalars_and_arrays_load_with_their_values(tmp_path, package):
    """Every plain dtype in both byte orders, as numpy 1 (``numpy.core``, flags as 0/1) and
    numpy 2 pickle them, and C and Fortran arrays."""
    items, expected = [], {}
    for code in PLAIN_CODES:
        for order in "<>":
            dtype = np.dtype(code).newbyteorder(order)
            value = np.array([7], dtype=np.dtype(code))[0] if code != "b1" else np.True_
            state = ("|" if dtype.itemsize == 1 else order, None, None, None, -1, -1, 0)
            scalar = cp.glob(f"{package}.multiarray", "scalar")
            scalar += cp.dtype(code, state, align=cp.integer(0), copy=cp.integer(1))
            scalar += cp.raw(np.array(value, dtype).tobytes()) + cp.TUPLE2 + cp.REDUCE
            items.append((cp.text(f"{code}{order}"), scalar))
            expected[f"{code}{order}"] = value
    fortran = np.asfortranarray(np.arange(6, dtype=">i2").reshape(2, 3))
    big_endian = (">", None, None, None, -1, -1, 0)
    array = cp.reconstructed_array("i2", (2, 3), fortran.tobytes(order="A"), big_endian, True, package)
    items.append((cp.text("fortran"), array))
    path = tmp_path / "plain.ckpt"
    path.write_bytes(cp.torch_zip(cp.PROTO2 + cp.mapping(items) + cp.STOP))

    ckpt = read_checkpoint(path)
    for key, value in expected.items():
        assert type(ckpt[key]) is type(value) and ckpt[key] == value, key
    assert np.array_equal(ckpt["fortran"], np.arange(6).reshape(2, 3)) and ckpt["fortran"].flags.f_contiguous


def test_numpy_values_as_torch_save_writes_them(tmp_path):
    values = {"score": np.float64(0.3301), "flag": np.bool_(True), "step": np.int64(12), "hist": np.arange(5.0)}
    torch.save(values, tmp_path / "n.ckpt")
    ckpt = read_checkpoint(tmp_path / "n.ckpt")
    assert ckpt["score"] == np.float64(0.3301) and ckpt["flag"] and ckpt["step"] == 12
    assert isinstance(ckpt["hist"], np.ndarray) and ckpt["hist"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_loaded_array_owns_its_data(tmp_path):
    """numpy keeps a large array's data in the bytes object it is given: the file's bytes are also
    a dict key here (one memo entry), and writing to the array must not change the key."""
    data = np.arange(500, dtype="f8").tobytes()
    array = cp.reconstructed_array("f8", (500,), data).replace(cp.raw(data), cp.raw(data) + b"q\x07", 1)
    shared_key = b"h\x07"  # BINGET 7: the same bytes object
    pkl = cp.PROTO2 + cp.mapping([(cp.text("a"), array), (shared_key, cp.integer(1))]) + cp.STOP
    (tmp_path / "alias.ckpt").write_bytes(cp.torch_zip(pkl))
    ckpt = read_checkpoint(tmp_path / "alias.ckpt")
    ckpt["a"][0] = 99.0
    (key,) = [k for k in ckpt if isinstance(k, bytes)]
    assert key == data and ckpt[key] == 1


@pytest.mark.parametrize(
    "state, message",
    [
        (("|", None, None, None, -1, -1, 63), "would change more than its byte order"),  # object flags on f8
        (("<", None, ("a",), {"a": ("f8", 0)}, 8, 1, 16), "would change more than its byte order"),
        (("<", None, None, None, 16, -1, 0), "would change more than its byte order"),  # another size
        (("x", None, None, None, -1, -1, 0), "would change more than its byte order"),
    ],
)
def test_a_plain_dtype_given_a_forged_state_is_refused(tmp_path, state, message):
    scalar = (
        cp.glob("numpy._core.multiarray", "scalar") + cp.dtype("f8", state) + cp.raw(bytes(8)) + cp.TUPLE2 + cp.REDUCE
    )
    path = tmp_path / "f.ckpt"
    path.write_bytes(cp.torch_zip(cp.checkpoint_pickle(scalar)))
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(path)
    assert str(err.value).startswith(f"{path}: refused: a numpy float64 dtype state")


@pytest.mark.parametrize(
    "array, message",
    [
        (cp.reconstructed_array("f8", (2,), bytes(8)), "data is not 2 float64 values"),
        (cp.reconstructed_array("f8", (2**31 - 1, 2**31 - 1), bytes(8)), "data is not 4611686014132420609 float64"),
        (cp.reconstructed_array("f8", (-1,), bytes(8)), "malformed shape"),
        (
            cp.glob("numpy", "ndarray") + cp.EMPTY_TUPLE + cp.dtype("f8") + cp.raw(bytes(8)) + cp.TUPLE3 + cp.REDUCE,
            "directly",
        ),
    ],
)
def test_arrays_other_than_numpy_pickles_them_are_refused(tmp_path, array, message):
    path = tmp_path / "a.ckpt"
    path.write_bytes(cp.torch_zip(cp.checkpoint_pickle(array)))
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


# --- the walk ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensor, what",
    [
        (lambda: torch.eye(3).to_sparse(), "a torch.sparse_coo tensor"),
        (lambda: torch.empty(3, device="meta"), "a tensor on meta"),
        (lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8), "a quantized tensor"),
    ],
)
def test_tensors_other_than_dense_cpu_ones_are_refused_with_where(tmp_path, tensor, what):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callbacks": {"x": [1, {"odd": tensor()}]}}, tmp_path / "t.ckpt")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "t.ckpt")
    where = "['callbacks']['x'][1]['odd']"
    assert (
        str(err.value)
        == f"{tmp_path / 't.ckpt'}: refused: {what} at {where}; only tensors and plain values are accepted"
    )


def test_deep_and_cyclic_values_are_walked(tmp_path):
    """200,000 nested lists (a recursive walk would overflow) and a list holding itself."""
    depth = 200_000
    nested = cp.EMPTY_LIST * depth + cp.APPEND * (depth - 1)
    cyclic = cp.EMPTY_LIST + b"q\x01" + b"h\x01" + cp.APPEND  # BINPUT 1, BINGET 1: appended to itself
    pkl = cp.PROTO2 + cp.mapping([(cp.text("deep"), nested), (cp.text("loop"), cyclic)]) + cp.STOP
    (tmp_path / "d.ckpt").write_bytes(cp.torch_zip(pkl))
    ckpt = read_checkpoint(tmp_path / "d.ckpt")
    assert ckpt["loop"][0] is ckpt["loop"]
    level, seen = ckpt["deep"], 1
    while level:
        level, seen = level[0], seen + 1
    assert seen == depth


def test_a_pickle_that_would_grow_two_hundred_fold_is_refused_unread(tmp_path):
    """5 MiB of EMPTY_SET opcodes would become 5 million sets (over 1 GiB): refused from the
    zip's directory, before torch.load (in a child: were it read, pytest would carry the sets)."""
    path = tmp_path / "sets.ckpt"
    path.write_bytes(cp.torch_zip(cp.PROTO2 + b"\x8f" * (5 << 20) + cp.STOP))
    result = run_in_child(lambda: read_checkpoint(path), (CheckpointError,), **CHILD_LIMITS)
    assert result.outcome == REFUSED, result
    assert result.detail.startswith(f"CheckpointError: {path}: refused: its pickle is 5.0 MiB"), result.detail
    assert result.rss_growth_mib < 100


# --- what a resume reads ----------------------------------------------------------------


def test_resume_gets_plain_numbers(good_training):
    ckpt = load_training_checkpoint(good_training)
    assert (ckpt["epoch"], ckpt["global_step"], ckpt["best_metric"], ckpt["best_epoch"]) == (2, 20, MARKER, 1)
    assert [type(ckpt[k]) for k in ("epoch", "global_step", "best_metric", "best_epoch")] == [int, int, float, int]


def _damaged(ckpt: dict, key: str, value) -> dict:
    *parents, last = key.split(".")
    target = ckpt
    for part in parents:
        target = target[part]
    target[last] = value
    return ckpt


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epoch", "3", "epoch: Input should be a valid integer"),
        ("global_step", torch.tensor([1, 2]), "global_step: Input should be a valid integer"),
        ("epoch", np.float64(2.5), "epoch: Input should be a valid integer"),
        ("best_metric", float("nan"), "best_metric: Input should be a finite number"),
        ("best_epoch", -5, "best_epoch: Input should be greater than or equal to -1"),
        ("optimizer_states", [], "optimizer_states[0] is not an optimizer state"),
        ("scaler", {"scale": 1.0}, "scaler is neither empty nor a GradScaler state"),
        ("rng_states.torch", torch.zeros(7, dtype=torch.uint8), "rng_states.torch is not a CPU generator state"),
        ("rng_states.numpy.pos", 700, "rng_states.numpy is not a MT19937 state"),
        ("rng_states.python", (3, (1, 2), None), "rng_states.python is not a random.getstate() state"),
        ("state_dict", {"model.w": "x"}, "state_dict holds something other than named tensors"),
    ],
)
def test_damage_to_what_resume_reads_is_named(good_training, key, value, message):
    ckpt = _damaged(torch.load(good_training, weights_only=True), key, value)
    with pytest.raises(CheckpointError) as err:
        check_resumable(ckpt, "model_last.ckpt")
    assert str(err.value).startswith("model_last.ckpt: not a resumable training checkpoint (")
    assert message in str(err.value)


# --- the fuzzer -------------------------------------------------------------------------


def test_fuzzed_checkpoints_load_or_are_refused():
    """50 seeded mutants of the release layout, our training checkpoint and our .pth (the
    first 50 of bench/fuzz.py --target checkpoints's run), each loaded in a child."""
    records, facts = fuzz(50, seed=0, jobs=2, **CHILD_LIMITS)
    assert {name: base["unmutated"] for name, base in facts["bases"].items()} == dict.fromkeys(facts["bases"], LOADED)
    outcomes = {r.result.outcome for r in records}
    failures = [
        (r.index, r.kind, r.what, r.result.outcome, r.result.detail)
        for r in records
        if r.result.outcome not in (LOADED, REFUSED)
    ]
    assert not failures
    assert outcomes == {LOADED, REFUSED}  # both paths ran: some mutants are harmless, most are not
    assert {r.base for r in records} == {"release", "training", "pth"}
