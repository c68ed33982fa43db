"""DAGM, Severstal Steel, KSDD2 and folder loaders on small generated folders in the published layouts."""

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from kdefect.config import TrainConfig
from kdefect.data import records as records_module
from kdefect.data.datasets import load_splits
from kdefect.data.labels import LabelConfig, prepare_label
from kdefect.data.loaders.steel import read_annotations, rle_decode, rle_encode
from kdefect.data.pipeline import training_dataset
from kdefect.data.splits import dagm_split, ksdd2_split, steel_split
from kdefect.errors import InputError


def _gray(path, height, width, seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(path, format=fmt)


def _mask(path, height, width, box):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((height, width), np.uint8)
    if box is not None:
        y0, y1, x0, x1 = box
        m[y0:y1, x0:x1] = 255
    Image.fromarray(m).save(path)
    return m


def _split_file(path, splits, gz=False):
    data = json.dumps({"_format": "test", "splits": splits}).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


# --------------------------------------------------------------------------- DAGM


def _dagm_folder(root, cls, names, positives, size=32):
    for part in ("Train", "Test"):
        folder = root / f"Class{cls}" / part
        for i, name in enumerate(names[part]):
            _gray(folder / name, size, size, seed=i)
            if name in positives:
                _mask(folder / "Label" / name.replace(".PNG", "_label.PNG"), size, size, (4, 12, 8, 20))
        (folder / "Label").mkdir(parents=True, exist_ok=True)
        (folder / "Label" / "Labels.txt").write_text("not an image\n")


def test_dagm_loader(tmp_path):
    names = {"Train": ["0001.PNG", "0002.PNG", "0003.PNG"], "Test": ["0004.PNG", "0005.PNG"]}
    _dagm_folder(tmp_path / "DAGM", 3, names, {"0002.PNG", "0005.PNG"})
    train = [[] for _ in range(10)]
    test = [[] for _ in range(10)]
    train[2] = [["0002.PNG", False], ["0001.PNG", True], ["0003.PNG", True]]
    test[2] = [["0004.PNG", True], ["0005.PNG", True]]
    split = _split_file(tmp_path / "dagm.json.gz", {"split_5": [train, test]}, gz=True)
    config = TrainConfig(dataset="dagm", fold=3, segmented=5, data_dir=str(tmp_path), input_size=(16, 16),
                         extra={"split_file": split})
    data = load_splits(config)
    assert data.train.names == ["0002", "0001", "0003"]
    assert data.train.is_positive.tolist() == [True, False, False]
    assert data.train.is_segmented.tolist() == [False, True, True]  # image-level only positive
    assert data.test.is_positive.tolist() == [False, True]
    assert data.train.images.shape == (3, 16, 16, 1)
    assert data.train.seg_target.shape == (3, 2, 2) and data.train.seg_target[0].max() > 0


def test_dagm_with_the_packaged_split(tmp_path):
    train, test = dagm_split(0, 1)
    positives = {n for n, flag in train if not flag}  # split_0: only negatives are fully labelled
    assert len(train) == len(test) == 575 and len(positives) == 79
    names = {"Train": [n for n, _ in train], "Test": [n for n, _ in test]}
    _dagm_folder(tmp_path, 1, names, positives, size=8)
    data = load_splits(TrainConfig(dataset="dagm", fold=1, segmented=0, data_dir=str(tmp_path), input_size=(8, 8)))
    assert len(data.train) == 575 and data.train.num_positives == 79
    assert not data.train.is_segmented[data.train.is_positive].any()


def test_dagm_bad_input(tmp_path):
    names = {"Train": ["0001.PNG"], "Test": ["0002.PNG"]}
    _dagm_folder(tmp_path, 1, names, set())
    config = TrainConfig(dataset="dagm", fold=1, data_dir=str(tmp_path), input_size=(16, 16))
    with pytest.raises(InputError, match=r"dagm has no fold \(class\) 11; expected one of 1..10"):
        load_splits(config.replace(fold=11))
    with pytest.raises(InputError, match=r"dagm has no split 'split_7'"):
        load_splits(config.replace(segmented=7))
    with pytest.raises(InputError, match=r"DAGM image .*Class1/Train/0\d+.PNG \(listed in the split\) does not exist"):
        load_splits(config)  # the packaged split lists 575 images; only one exists
    _mask(tmp_path / "Class1" / "Train" / "Label" / "0999_label.PNG", 32, 32, None)
    from kdefect.data.loaders.dagm import part_records

    with pytest.raises(InputError, match=r"mask .*0999_label.PNG has no image 0999.PNG"):
        part_records(tmp_path / "Class1" / "Train", [("0001.PNG", True)])


# --------------------------------------------------------------------------- Severstal Steel


def test_rle_round_trip_and_conventions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = (rng.random((256, 1600)) > 0.97).astype(np.uint8)
        assert np.array_equal(rle_decode(rle_encode(mask)), mask)
    # 1-based, column-major: run "1 3" covers the first three rows of column 0.
    m = rle_decode("1 3 257 2", 256, 1600)
    assert m[:3, 0].tolist() == [1, 1, 1] and m[3, 0] == 0 and m[:2, 1].tolist() == [1, 1]
    assert m.sum() == 5
    full = np.ones((4, 3), np.uint8)
    assert rle_encode(full) == "1 12" and rle_encode(np.zeros((4, 3))) == ""
    assert rle_decode("12 1", 4, 3)[3, 2] == 1  # the very last pixel
    for bad, message in [("1 2 3", "odd number"), ("0 2", "outside"), ("12 2", "outside"), ("a b", "integers")]:
        with pytest.raises(InputError, match=message):
            rle_decode(bad, 4, 3)


def _steel_folder(root, ids, boxes):
    rows = ["ImageId,ClassId,EncodedPixels"]
    for i, image_id in enumerate(ids):
        _gray(root / "train_images" / f"{image_id}.jpg", 256, 1600, seed=i)
    expected = {}
    for image_id, per_class in boxes.items():
        for cls, box in per_class:
            m = np.zeros((256, 1600), np.uint8)
            y0, y1, x0, x1 = box
            m[y0:y1, x0:x1] = 1
            rows.append(f"{image_id}.jpg,{cls},{rle_encode(m)}")
            expected[image_id] = m  # the last row wins
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return expected


def test_steel_loader(tmp_path, monkeypatch):
    ids = ["000a1", "000b2", "000c3", "000d4", "000e5", "000f6"]
    boxes = {"000a1": [(1, (10, 60, 100, 300)), (3, (100, 200, 800, 1000))], "000c3": [(2, (0, 256, 0, 16))],
             "000e5": [(4, (50, 70, 1500, 1600))]}
    expected = _steel_folder(tmp_path, ids, boxes)
    assert set(read_annotations(tmp_path / "train.csv")) == set(boxes)
    split = _split_file(tmp_path / "steel.json", {"split_2_1": [
        [["000a1", True], ["000c3", False], ["000b2", True], ["000d4", True]],
        [["000e5", True]],
        [["000f6", True]],
    ]})
    config = TrainConfig(dataset="steel", positives=2, segmented=1, data_dir=str(tmp_path), input_size=(32, 200), dilate=1,
                         extra={"split_file": split})
    data = load_splits(config)
    train = data.train
    assert (len(train), len(data.test), len(data.validation)) == (4, 1, 1)
    assert train.is_positive.tolist() == [True, True, False, False]
    assert train.is_segmented.tolist() == [True, False, True, True]
    target, weight = prepare_label(expected["000a1"], 32, 200, LabelConfig())
    np.testing.assert_allclose(train.seg_target[0], target)
    np.testing.assert_allclose(train.seg_weight[0], weight)
    assert data.test.is_positive.tolist() == [True] and data.validation.is_positive.tolist() == [False]

    # Too big for RAM (limit lowered here) -> streamed from disk, same labels, same batches shape.
    monkeypatch.setattr(records_module, "IN_MEMORY_LIMIT_BYTES", 1000)
    streamed = load_splits(config).train
    assert streamed.images is None and streamed.image_paths[0].name == "000a1.jpg"
    np.testing.assert_allclose(streamed.seg_target, train.seg_target)
    x, y = next(iter(training_dataset(streamed, np.array([[0, 1, 2, 3]]), 2)))
    assert tuple(x.shape) == (2, 32, 200, 1) and float(x.numpy().max()) <= 1.0
    forced = load_splits(config.replace(in_memory=True)).train
    assert forced.images is not None


def test_steel_bad_input(tmp_path):
    ids = ["000a1"]
    _steel_folder(tmp_path, ids, {"000a1": [(1, (0, 10, 0, 10))], "0zzz9": [(1, (0, 10, 0, 10))]})
    config = TrainConfig(dataset="steel", data_dir=str(tmp_path), input_size=(32, 200))
    with pytest.raises(InputError, match=r"train.csv has a mask for 0zzz9.jpg but .*train_images has no such image"):
        load_splits(config)
    with pytest.raises(InputError, match=r"steel has no split 'split_1000_7'"):
        load_splits(config.replace(segmented=7))
    with pytest.raises(InputError, match=r"steel has a single split; fold must be 0"):
        load_splits(config.replace(fold=2))


def test_steel_packaged_splits():
    train, test, val = steel_split()
    assert (len(train), len(test), len(val)) == (2000, 2000, 500)
    train, test, val = steel_split(3000)
    assert (len(train), len(test), len(val)) == (3000 + 4143, 2400, 1118)
    assert sum(flag for _, flag in steel_split(1000, 250)[0]) == 250 + 1000


# --------------------------------------------------------------------------- KSDD2


def test_ksdd2_loader(tmp_path):
    rng = np.random.default_rng(0)
    for part, ids in (("train", [10001, 10002, 10003]), ("test", [20001, 20002])):
        for image_id in ids:
            img = rng.integers(0, 256, (60, 24, 3), dtype=np.uint8)
            (tmp_path / part).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / part / f"{image_id}.png")
            box = (10, 30, 4, 12) if image_id in (10002, 20001) else None
            _mask(tmp_path / part / f"{image_id}_GT.png", 60, 24, box)
    split = _split_file(tmp_path / "ksdd2.json.gz", {"split_1": [
        [[10001, True], [10002, False], [10003, True]], [[20001, True], [20002, True]]]}, gz=True)
    config = TrainConfig(dataset="ksdd2", segmented=1, channels=3, data_dir=str(tmp_path), input_size=(64, 24),
                         extra={"split_file": split})
    data = load_splits(config)
    assert data.train.input_shape == (64, 24, 3) and data.train.images.shape == (3, 64, 24, 3)
    assert data.train.names == ["10001", "10002", "10003"]
    assert data.train.is_positive.tolist() == [False, True, False]
    assert data.train.is_segmented.tolist() == [True, False, True]
    assert data.test.is_positive.tolist() == [True, False]
    # Colour is kept (RGB): the channels differ.
    assert not np.array_equal(data.train.images[..., 0], data.train.images[..., 1])
    (tmp_path / "train" / "10002.png").unlink()
    with pytest.raises(InputError, match=r"mask .*10002_GT.png has no image 10002.png"):
        load_splits(config)


def test_ksdd2_packaged_splits():
    train, test = ksdd2_split()
    assert (len(train), len(test)) == (2331, 1004)
    assert sum(flag for _, flag in ksdd2_split(0)[0]) == 2085  # only negatives keep masks in split_0


# --------------------------------------------------------------------------- folder


def _folder_dataset(root, n_neg=6, n_pos=4, n_weak=2, size=(40, 56)):
    """images/ of mixed sizes and formats, masks/ for some positives, labels.csv for weak ones."""
    labels = ["image,label"]
    for i in range(n_neg + n_pos + n_weak):
        h, w = size[0] + 8 * (i % 3), size[1] + 5 * (i % 2)
        suffix = [".png", ".jpg", ".bmp", ".tif"][i % 4]
        _gray(root / "images" / f"img{i:02d}{suffix}", h, w, seed=i)
        if n_neg <= i < n_neg + n_pos:
            _mask(root / "masks" / f"img{i:02d}.png", h, w, (5, 15, 10, 30))
        elif i >= n_neg + n_pos:
            labels.append(f"img{i:02d}{suffix},1")
        elif i == 0:
            _mask(root / "masks" / f"img{i:02d}.png", h, w, None)  # empty mask = defect-free
            labels.append(f"img{i:02d},0")
    (root / "labels.csv").write_text("\n".join(labels) + "\n")


def test_folder_seeded_split(tmp_path):
    _folder_dataset(tmp_path)
    config = TrainConfig(dataset="folder", data_dir=str(tmp_path), input_size=(32, 48), test_fraction=0.5, seed=3)
    data = load_splits(config)
    train, test = data.train, data.test
    assert len(train) + len(test) == 12 and data.validation is None
    assert train.num_positives == test.num_positives == 3  # stratified: 6 positives split in half
    assert not set(train.names) & set(test.names)
    assert train.images.shape[1:] == (32, 48, 1)
    both = {n: (p, s) for t in (train, test) for n, p, s in zip(t.names, t.is_positive, t.is_segmented)}
    assert both["img00"] == (False, True) and both["img06"] == (True, True)
    assert both["img10"] == (True, False) and both["img11"] == (True, False)  # labels.csv only
    cls = {n: c for t in (train, test) for n, c in zip(t.names, t.cls_target())}
    assert cls["img10"] == 1.0 and cls["img00"] == 0.0
    again = load_splits(config)
    assert again.train.names == train.names  # seeded
    assert load_splits(config.replace(seed=4)).train.names != train.names


def test_folder_subfolders_colour(tmp_path):
    for part in ("train", "test", "val"):
        _folder_dataset(tmp_path / part, n_neg=2, n_pos=1, n_weak=0)
    data = load_splits(TrainConfig(dataset="folder", data_dir=str(tmp_path), input_size=(16, 24), channels=3))
    assert (len(data.train), len(data.test), len(data.validation)) == (3, 3, 3)
    assert data.train.images.shape == (3, 16, 24, 3)
    assert data.train.num_positives == 1


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "images" / "img03.tif").write_bytes(b"garbage"), r"cannot read image .*img03.tif"),
        (lambda r: _mask(r / "masks" / "img07.png", 10, 10, (0, 5, 0, 5)),
         r"mask .*img07.png is 10x10 \(HxW\) but its image .*img07.tif is 48x61"),
        (lambda r: _mask(r / "masks" / "ghost.png", 10, 10, None), r"mask .*ghost.png has no image with the stem 'ghost'"),
        (lambda r: (r / "labels.csv").write_text("image,label\nimg06.png,0\n"),
         r"labels.csv says img06 is defect-free \(0\) but its mask .*img06.png shows a defect"),
        (lambda r: (r / "labels.csv").write_text("image,label\nnothere.png,1\n"), r"labels 'nothere', which is not an image"),
        (lambda r: (r / "labels.csv").write_text("image,label\nimg01.jpg,maybe\n"), r"line 2: label 'maybe'"),
        (lambda r: (r / "labels.csv").write_text("file,defect\n"), r"columns image,label"),
        (lambda r: _gray(r / "images" / "img01.png", 8, 8), r"two images .* share the name 'img01'"),
    ],
)
def test_folder_bad_input(tmp_path, damage, message):
    _folder_dataset(tmp_path)
    damage(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InputError, match=message):
        load_splits(TrainConfig(dataset="folder", data_dir=str(tmp_path), input_size=(32, 48)))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_folder_missing_or_empty(tmp_path):
    config = TrainConfig(dataset="folder", input_size=(32, 32))
    with pytest.raises(InputError, match=r"data directory .*missing does not exist"):
        load_splits(config.replace(data_dir=str(tmp_path / "missing")))
    with pytest.raises(InputError, match=r"data directory .* is empty"):
        load_splits(config.replace(data_dir=str(tmp_path)))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"images holds no images"):
        load_splits(config.replace(data_dir=str(tmp_path)))


def test_input_size_must_divide_by_8(tmp_path):
    with pytest.raises(InputError, match=r"input size 30x32 \(HxW\) must be .* divisible by 8"):
        TrainConfig(dataset="folder", input_size=(30, 32))
    _folder_dataset(tmp_path)
    with pytest.raises(InputError, match=r"scale 0.1 gives an input size of 25.6x25.6"):
        load_splits(TrainConfig(dataset="folder", data_dir=str(tmp_path), input_size=None, scale=0.1))
