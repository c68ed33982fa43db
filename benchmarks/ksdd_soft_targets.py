"""How much of each KolektorSDD defect survives the label downsizing, per input scale and dilation.

For every defective KSDD image (fine masks) this prints the peak of the 1/8
soft target -- the classification target of the reference (``max_soft``) --
and the number of 1/8 cells above 0.5 (the pixel-metric ground truth), at the
input scales, dilations and annotations (``mask``, or ``boxes``: rotated
bounding boxes made from the masks, ``kdefect.data.labels.boxes_from_mask``) asked for. A small peak means the classifier is
asked to call a defective image only partly defective, which is the main cost
of training below the reference resolution (docs/RESULTS.md).

Usage:
    python benchmarks/ksdd_soft_targets.py --data-dir ../shared/datasets/KolektorSDD.zip
    python benchmarks/ksdd_soft_targets.py --data-dir KolektorSDD.zip --scales 0.25,0.5 --dilate 1,7 --csv out.csv
    python benchmarks/ksdd_soft_targets.py --data-dir KolektorSDD.zip --dilate 1 --annotation mask,boxes
"""

import argparse
import csv
import sys

import numpy as np

from kdefect.data.download import dataset_root
from kdefect.data.labels import LabelConfig, prepare_label
from kdefect.data.loaders.ksdd import REFERENCE_SIZE, folder_records
from kdefect.data.records import load_mask


def positive_masks(root):
    """``[(name, mask)]`` of every KSDD image whose mask has a defect."""
    out = []
    for folder in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("kos")):
        for record in folder_records(root, folder):
            mask = load_mask(record)
            if mask is not None and mask.any():
                out.append((record.name, mask))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="KolektorSDD folder or its official zip")
    parser.add_argument("--scales", default="0.25,0.5,1.0", help="input scales of 1408x512")
    parser.add_argument("--dilate", default="1,7", help="square dilation sizes at original resolution")
    parser.add_argument("--annotation", default="mask", help="mask and/or boxes (comma-separated)")
    parser.add_argument("--csv", help="write per-image peaks here")
    args = parser.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    dilations = [int(d) for d in args.dilate.split(",")]
    annotations = args.annotation.split(",")
    masks = positive_masks(dataset_root("ksdd", args.data_dir, progress=False))
    rows = []
    for name, mask in masks:
        row = {"image": name}
        for scale in scales:
            height, width = (int(round(s * scale)) // 8 * 8 for s in REFERENCE_SIZE)
            for annotation in annotations:
                for dilate in dilations:
                    config = LabelConfig(dilate=dilate, annotation=annotation)
                    target, _ = prepare_label(mask, height, width, config)
                    suffix = f"{height}x{width}_d{dilate}" + ("" if annotation == "mask" else f"_{annotation}")
                    row[f"peak_{suffix}"] = float(target.max())
                    row[f"cells_{suffix}"] = int((target > 0.5).sum())
        rows.append(row)
    keys = [k for k in rows[0] if k.startswith("peak_")]
    print(f"{len(rows)} defective images")
    print(f"{'input, dilation':<28}{'median peak':>12}{'min peak':>10}{'peak<0.5':>10}{'no cell>0.5':>13}")
    for key in keys:
        peaks = np.array([r[key] for r in rows])
        cells = np.array([r[key.replace('peak_', 'cells_')] for r in rows])
        label = key[5:].replace("_d", ", dilate ").replace("_boxes", ", boxes")
        print(f"{label:<28}{np.median(peaks):>12.2f}{peaks.min():>10.2f}{(peaks < 0.5).sum():>10d}"
              f"{(cells == 0).sum():>13d}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
