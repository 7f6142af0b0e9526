"""Build the built-in CIFAR-10 sample and the test fixtures from the real data in ../shared/datasets.

    python tools/release/make_sample.py --src ../shared/datasets

Writes edgecls/data/cifar10_sample.zip (200 train + 100 test JPEGs per class, the first files of
each class folder of cifar10-jpeg.zip, bytes copied unchanged), tests/fixtures/cifar10_tiny.zip
(20 + 10 per class) and tests/fixtures/cifar-10-batches-py-tiny/ (the first 40 images of batches 1
and 2 and of the test batch, lossless, in the original pickle format).
"""
from __future__ import annotations

import argparse
import pickle
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgecls.data.cifar import safe_load_pickle  # noqa: E402


def subset_zip(src: Path, dst: Path, top: str, per_class: dict[str, int]) -> int:
    with zipfile.ZipFile(src) as zin:
        names = sorted(n for n in zin.namelist() if n.endswith(".jpg"))
        chosen = []
        for split, count in per_class.items():
            by_class: dict[str, list[str]] = {}
            for n in names:
                parts = n.split("/")
                if parts[1] == split:
                    by_class.setdefault(parts[2], []).append(n)
            for cls, files in sorted(by_class.items()):
                chosen += files[:count]
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for n in chosen:
                info = zipfile.ZipInfo(top + "/" + n.split("/", 1)[1], date_time=(2020, 1, 1, 0, 0, 0))
                zout.writestr(info, zin.read(n))
        tmp.replace(dst)
    return len(chosen)


def tiny_batches(src: Path, dst: Path, count: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        batch = safe_load_pickle(src / name)
        out = {
            b"batch_label": batch[b"batch_label"] + f" (first {count} images)".encode(),
            b"labels": list(batch[b"labels"][:count]),
            b"data": batch[b"data"][:count].copy(),
        }
        (dst / name).write_bytes(pickle.dumps(out, protocol=2))
    (dst / "batches.meta").write_bytes((src / "batches.meta").read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "datasets"))
    args = ap.parse_args()
    src = Path(args.src)
    n = subset_zip(src / "cifar10-jpeg.zip", ROOT / "edgecls/data/cifar10_sample.zip", "cifar10-sample", {"train": 200, "test": 100})
    print(f"edgecls/data/cifar10_sample.zip: {n} images")
    n = subset_zip(src / "cifar10-jpeg.zip", ROOT / "tests/fixtures/cifar10_tiny.zip", "cifar10-tiny", {"train": 20, "test": 10})
    print(f"tests/fixtures/cifar10_tiny.zip: {n} images")
    tiny_batches(src / "cifar-10-batches-py-subset", ROOT / "tests/fixtures/cifar-10-batches-py-tiny", 40)
    print("tests/fixtures/cifar-10-batches-py-tiny: 3 batches of 40 images")


if __name__ == "__main__":
    main()
