"""KolektorSDD from the shared archive, through the same extract code a user's download uses."""

import json
from pathlib import Path

import numpy as np
import pytest

from kdefect.config import TrainConfig, load_config
from kdefect.data.datasets import load_splits
from kdefect.data.download import dataset_root
from kdefect.data.imageio import read_mask
from kdefect.data.records import resolve_input_size
from kdefect.data.splits import ksdd_split
from kdefect.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
ZIP = SHARED / "KolektorSDD.zip"
SCALE = 0.125  # 176x64: fast on CPUs, still a valid SegDecNet input


@pytest.fixture(scope="session")
def ksdd_root(tmp_path_factory):
    """The archive extracted once into a temporary cache by ``dataset_root`` (as a user's local zip)."""
    return dataset_root("ksdd", ZIP, cache=tmp_path_factory.mktemp("kdefect_cache"))


def ksdd_config(root, **changes):
    """The user's path: ``configs/ksdd.yaml`` with a data folder, a small scale and fold 0."""
    return load_config("ksdd", data_dir=str(root), scale=SCALE, fold=0, **changes)


@pytest.fixture(scope="session")
def fold0(ksdd_root):
    """Fold 0 of split_33_33 at 176x64; its train and test sets together hold all of KSDD."""
    return load_splits(ksdd_config(ksdd_root))


@pytest.fixture(scope="session")
def positive_names(fold0):
    return {n for s in (fold0.train, fold0.test) for n, p in zip(s.names, s.is_positive) if p}


def _tiny_split(tmp_path, train, test, segmented=True):
    """A split file in the published format with only a few folders (fast loads)."""
    entry = lambda folders: [[f, segmented] for f in folders]  # noqa: E731
    data = {"splits": {"split_33_33": [[entry(train)] * 3, [entry(test)] * 3]}}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_extracted_layout(ksdd_root):
    folders = sorted(p.name for p in ksdd_root.iterdir() if p.is_dir())
    assert folders == [f"kos{i:02d}" for i in range(1, 51)]
    assert len(list(ksdd_root.glob("kos*/Part*.jpg"))) == 399


def test_fold0_counts(fold0):
    train, test = fold0.train, fold0.test
    assert len(train) + len(test) == 399
    assert train.num_positives + test.num_positives == 52
    assert (train.num_positives, test.num_positives) == (34, 18)
    assert train.input_shape == test.input_shape == (176, 64, 1)
    assert train.images.shape == (len(train), 176, 64, 1) and train.images.dtype == np.uint8
    assert train.seg_target.shape == (len(train), 22, 8)
    assert not set(train.names) & set(test.names)
    assert "kos21_Part7" not in train.names + test.names
    assert "kos21_Part5" in train.names + test.names
    assert train.is_segmented.all() and test.is_segmented.all()
    # Negatives have empty targets and unit weights; positives have soft targets in (0, 1].
    neg = ~train.is_positive
    assert train.seg_target[neg].max() == 0 and (train.seg_weight[neg] == 1).all()
    assert (train.seg_target[train.is_positive].reshape(34, -1).max(axis=1) > 0).all()


@pytest.mark.parametrize(
    "fold, train_folders, test_folders, train_pos, test_pos",
    [(0, 33, 17, 34, 18), (1, 33, 17, 34, 18), (2, 34, 16, 36, 16)],
)
def test_fold_sizes_match_reference(fold, train_folders, test_folders, train_pos, test_pos, positive_names):
    train, test = ksdd_split(33, 33, fold)
    assert (len(train), len(test)) == (train_folders, test_folders)
    folders = [f for f, _ in train] + [f for f, _ in test]
    assert sorted(folders) == [f"kos{i:02d}" for i in range(1, 51)]

    def positives(entries):
        names = {f for f, _ in entries}
        return sum(n.split("_")[0] in names for n in positive_names)

    assert (positives(train), positives(test)) == (train_pos, test_pos)


def test_every_positive_mask_decodes_non_empty(ksdd_root, fold0):
    masks = sorted(ksdd_root.glob("kos*/Part*_label.bmp"))
    assert len(masks) == 399
    non_empty = {f"{m.parent.name}_{m.stem[:-6]}" for m in masks if read_mask(m).max() > 0}
    assert len(non_empty) == 52
    for samples in (fold0.train, fold0.test):
        positives = {n for n, p in zip(samples.names, samples.is_positive) if p}
        assert positives <= non_empty
        for i in np.flatnonzero(samples.is_positive):
            assert read_mask(samples.mask_paths[i]).max() == 255  # palette 0/1 -> luminance 0/255


def test_scale_and_input_size():
    ref = (1408, 512)
    assert load_config("ksdd").input_size is None  # the YAML asks for the reference size
    assert resolve_input_size(load_config("ksdd"), ref) == (1408, 512)
    assert resolve_input_size(load_config("ksdd", scale=0.5), ref) == (704, 256)
    assert resolve_input_size(load_config("ksdd", scale=0.25), ref) == (352, 128)
    assert resolve_input_size(load_config("ksdd", scale=0.25, input_size=(64, 32)), ref) == (64, 32)
    with pytest.raises(InputError, match=r"scale 0.3 .*422.4x153.6.*multiples of 8"):
        resolve_input_size(TrainConfig(dataset="ksdd", input_size=None, scale=0.3), ref)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"fold": 3}, r"ksdd has no fold 3; expected one of 0, 1, 2"),
        ({"positives": 7}, r"ksdd has no split 'split_7_7'; available: split_10_10"),
        ({"segmented": 7}, r"ksdd has no split 'split_33_7'"),
        ({"positives": 10, "segmented": 5}, r"'split_10_5'"),
        ({"scale": 0.3}, r"scale 0.3"),
    ],
)
def test_bad_split_values(ksdd_root, changes, message):
    config = ksdd_config(ksdd_root).replace(**changes)
    with pytest.raises(InputError, match=message):
        load_splits(config)


def test_mixed_supervision_flags(ksdd_root, tmp_path):
    # Positives of folders with is_fully_labeled False train on their image label only.
    split = _tiny_split(tmp_path, ["kos20", "kos01"], ["kos02"], segmented=False)
    data = load_splits(ksdd_config(ksdd_root, extra={"split_file": split}))
    train = data.train
    assert train.num_positives >= 1
    assert not train.is_segmented[train.is_positive].any()
    assert train.is_segmented[~train.is_positive].all()  # negatives keep their (empty) masks
    # The mask still gives the soft classification target, as in the reference.
    soft = train.seg_target[train.is_positive].reshape(train.num_positives, -1).max(axis=1)
    np.testing.assert_allclose(train.cls_target()[train.is_positive], soft)
    assert (soft > 0).all()


def test_published_mixed_split_selected():
    train, _ = ksdd_split(33, 5, 0)
    assert 0 < sum(not flag for _, flag in train) < len(train)
    assert ksdd_split(33, 5, 0)[1] == ksdd_split(33, 33, 0)[1]  # test sets equal in every split


def test_dilation_grows_the_target(ksdd_root, tmp_path):
    split = _tiny_split(tmp_path, ["kos20"], ["kos01"])
    base = ksdd_config(ksdd_root, extra={"split_file": split})
    plain, dilated = (load_splits(base.replace(dilate=d)).train for d in (1, 15))
    assert dilated.seg_target.sum() > plain.seg_target.sum() > 0


def test_boxes_annotation_reaches_the_targets(ksdd_root, tmp_path):
    split = _tiny_split(tmp_path, ["kos20"], ["kos01"])
    base = ksdd_config(ksdd_root, extra={"split_file": split})
    masks, boxes = (load_splits(base.replace(annotation=a)).train for a in ("mask", "boxes"))
    assert boxes.seg_target.sum() > masks.seg_target.sum() > 0


def test_streaming_matches_in_memory(ksdd_root, tmp_path):
    from kdefect.data.pipeline import evaluation_dataset

    split = _tiny_split(tmp_path, ["kos20"], ["kos01"])
    base = ksdd_config(ksdd_root, extra={"split_file": split})
    ram, disk = (load_splits(base.replace(in_memory=m)).train for m in (True, False))
    assert ram.images is not None and disk.images is None
    assert [p.name for p in disk.image_paths] == [p.name for p in ram.image_paths]
    np.testing.assert_array_equal(ram.seg_target, disk.seg_target)
    x_ram = np.concatenate([x.numpy() for x, _ in evaluation_dataset(ram, 4)])
    x_disk = np.concatenate([x.numpy() for x, _ in evaluation_dataset(disk, 4)])
    # Same JPEG IDCT (accurate integer) and the same bilinear resize and rounding.
    np.testing.assert_array_equal(x_ram, x_disk)


@pytest.mark.slow
def test_pipeline_feeds_segdecnet_fit(fold0):
    import keras

    from kdefect.callbacks import DynamicBalance
    from kdefect.data.pipeline import training_dataset
    from kdefect.data.sampling import epoch_schedule
    from kdefect.model import SegDecNet

    train, epochs, batch = fold0.train, 1, 8
    schedule, counts = epoch_schedule(train.is_positive, epochs, batch, seed=1)
    assert schedule.shape == (1, 64)  # 34 positives + 34 negatives, drop_last at batch 8
    model = SegDecNet(input_shape=train.input_shape)
    model.compile(keras.optimizers.SGD(0.05), delta=0.01)
    history = model.fit(
        training_dataset(train, schedule, batch),
        epochs=epochs,
        steps_per_epoch=2,  # of the 8 batches: enough to show the pipeline feeds fit
        callbacks=[DynamicBalance(epochs)],
        verbose=0,
    )
    losses = next(v for k, v in history.history.items() if "loss" in k)
    assert len(losses) == 1 and np.isfinite(losses[0])
