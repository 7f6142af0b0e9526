"""Hostile data is bounded: oversized zip members, decompression bombs and non-image files are
skipped and counted, a small zip that expands to gigabytes keeps memory bounded, high-bit-depth
images are scaled to 8 bits."""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from edgecls.errors import DataError
from edgecls.preprocess import MAX_IMAGE_BYTES, load_image

from .conftest import TINY_ZIP, assert_one_line_error, run_cli


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes claiming width x height RGB pixels (a decompression bomb's header)."""
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG: grayscale for H x W values, RGB for H x W x 3."""
    rgb = values.ndim == 3
    h, w = values.shape[:2]
    raw = b"".join(b"\0" + values[i].astype(">u2").tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2 if rgb else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _hostile_zip(path, gigabytes: int = 0):
    """Two real classes from the tiny fixture plus hostile members in their folders."""
    with zipfile.ZipFile(TINY_ZIP) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for name in src.namelist():
            parts = name.split("/")
            if parts[2] in ("airplane", "cat"):
                dst.writestr("/".join(parts[1:]), src.read(name))
        dst.writestr("train/cat/bomb.png", png_header_bomb(20000, 20000))
        dst.writestr("train/cat/bomb_warn.png", png_header_bomb(10000, 10000))
        dst.writestr("train/cat/readme.txt", "not an image")
        dst.writestr("train/airplane/Thumbs.db", b"\0" * 100)
        dst.writestr("train/airplane/truncated.jpg", src.read("cifar10-tiny/train/airplane/0000.jpg")[:100])
        block = bytes(1 << 24)
        for i in range(gigabytes):
            with dst.open(f"train/cat/expands_{i}.png", "w", force_zip64=True) as member:
                for _ in range(64):  # 64 x 16 MiB = 1 GiB of zeros, about 5 MB compressed
                    member.write(block)
        with dst.open("train/cat/over_the_cap.jpg", "w", force_zip64=True) as member:
            member.write(bytes(MAX_IMAGE_BYTES + 1))


def test_hostile_members_are_skipped_and_counted(tmp_path):
    from edgecls.data import load_dataset

    path = tmp_path / "hostile.zip"
    _hostile_zip(path)
    data = load_dataset(path)
    # airplane and cat: 20 training images each in the fixture; 6 hostile members skipped.
    assert len(data.train) == 40 and len(data.test) == 20
    assert data.skipped == 6
    assert data.class_names == ("airplane", "cat")


def test_a_small_zip_expanding_to_gigabytes_keeps_memory_bounded(tmp_path):
    path = tmp_path / "bomb.zip"
    _hostile_zip(path, gigabytes=2)
    assert path.stat().st_size < 30 << 20
    # The peak from VmHWM: ru_maxrss would carry over the forking test process's peak across exec.
    code = ("import json, re, sys; from edgecls.data.folder import read_image_folder; "
            "r = read_image_folder(sys.argv[1], (32, 32)); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "print(json.dumps({'skipped': r[5], 'train': len(r[0]), 'peak_mib': hwm / 1024}))")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          env={"EDGECLS_NO_CACHE": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["skipped"] == 8 and result["train"] == 40
    # The figure in the README: the whole read, Python and numpy included, stays near 100 MiB.
    assert result["peak_mib"] < 250, result


def test_sixteen_bit_images_are_scaled_not_clipped():
    gray = np.full((8, 8), 40000, np.uint16)
    assert (load_image(png16(gray)) == round(40000 / 257)).all()
    rgb = np.stack([np.full((8, 8), v, np.uint16) for v in (0, 32896, 65535)], axis=-1)
    assert load_image(png16(rgb))[0, 0].tolist() == [0, 128, 255]
    ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    assert len(np.unique(load_image(png16(ramp))[..., 0])) == 64  # distinct levels kept, no saturation at 255


def test_decompression_bombs_become_clear_errors(tmp_path):
    for width in (20000, 10000):
        with pytest.raises(DataError, match="DecompressionBomb"):
            load_image(png_header_bomb(width, width))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_bomb(20000, 20000))
    big = tmp_path / "big.jpg"
    with open(big, "wb") as fh:
        fh.truncate(MAX_IMAGE_BYTES + 1)
    bundle = tmp_path / "bundle"
    import shutil

    from .conftest import FIXTURES

    shutil.copytree(FIXTURES / "bundles" / "seed_cnn_s8s8", bundle)
    assert_one_line_error(run_cli("predict", bundle, bomb), "bomb.png", "DecompressionBomb")
    assert_one_line_error(run_cli("predict", bundle, big), "big.jpg", "MiB limit")
    assert_one_line_error(run_cli("predict", bundle, tmp_path), "is a folder")


def test_non_image_files_in_a_class_folder_are_counted(tmp_path):
    from PIL import Image

    from edgecls.data import load_dataset

    root = tmp_path / "folder"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (16, 16), (i * 40, 10, 200 if cls == "a" else 20)).save(root / cls / f"{i}.png")
    (root / "a" / "labels.csv").write_text("x")
    (root / "b" / "model.pkl").write_bytes(b"\x80\x04")
    data = load_dataset(root, image_size=16)
    assert data.skipped == 2
    assert len(data.train) + len(data.test) == 10
