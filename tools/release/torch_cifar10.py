"""Train a PyTorch ResNet-8 (MLPerf Tiny's image-classification architecture: a 16-channel stem and
three residual stages of 16, 32 and 64 channels, BatchNorm, adaptive average pooling, Flatten and
Linear, ending in logits) on CIFAR-10's JPEG training images and export it with torch's default
exporter (dynamo: opset 18, weights in a .onnx.data file beside the model): the PyTorch model that
BENCHMARKS.md's "A PyTorch model" section gives to `edgecls export`.

45,000 training images train it; the other 5,000 (a fixed, class-balanced draw) are its validation
split, which picks the epoch kept. The test images are not read here: `edgecls export` reads them
once, for the reported figures. Run in a virtual environment that has torch (edgecls does not need
it), e.g.:

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 onnx onnxscript pillow numpy
    /tmp/torchvenv/bin/python tools/release/torch_cifar10.py --data ../shared/datasets/cifar10-jpeg.zip \
        --out runs/torch-resnet8 --epochs 15

It writes OUT/resnet8_torch.onnx (+ .onnx.data), OUT/labels.json and OUT/train.json (versions,
preprocessing, per-epoch validation accuracy, the epoch kept), and checkpoints every epoch
(OUT/checkpoint.pt; --resume goes on from it).
"""
from __future__ import annotations

import argparse
import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def read_train(zip_path: Path):
    images, labels = [], []
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(n for n in zf.namelist() if "/train/" in n and n.lower().endswith(".jpg"))
        classes = sorted({Path(n).parent.name for n in names})
        for n in names:
            images.append(np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB")))
            labels.append(classes.index(Path(n).parent.name))
    return np.stack(images), np.array(labels), classes


def normalize(images: np.ndarray) -> torch.Tensor:
    x = (images.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class ResNet8(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips."""
    n = batch.shape[0]
    padded = nn.functional.pad(batch, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, n), generator=generator)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    images, labels, classes = read_train(args.data)
    rng = np.random.default_rng(0)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:500] for c in range(len(classes))])
    train = np.setdiff1d(np.arange(len(labels)), val)
    x_train, y_train = normalize(images[train]), torch.from_numpy(labels[train])
    x_val, y_val = normalize(images[val]), labels[val]
    model = ResNet8(len(classes))
    steps = (len(train) + 127) // 128
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=args.epochs * steps)
    history, best, start = [], (-1.0, None, 0), 0
    checkpoint = args.out / "checkpoint.pt"
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"]), optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history, best, start = state["history"], state["best"], state["epoch"] + 1
    generator = torch.Generator().manual_seed(start)
    for epoch in range(start, args.epochs):
        began = time.time()
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for i in range(0, len(train), 128):
            batch = order[i:i + 128]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(augment(x_train[batch], generator)), y_train[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([model(x_val[i:i + 500]).argmax(1) for i in range(0, len(val), 500)]).numpy()
        accuracy = float((predicted == y_val).mean())
        history.append({"epoch": epoch + 1, "val_accuracy": round(accuracy, 4), "seconds": round(time.time() - began, 1)})
        if accuracy > best[0]:
            best = (accuracy, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "history": history, "best": best, "epoch": epoch}, checkpoint)
        print(json.dumps(history[-1]), flush=True)
    model.load_state_dict(best[1])
    model.eval()
    program = torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), dynamo=True)
    program.save(str(args.out / "resnet8_torch.onnx"), external_data=True)
    import onnx
    import onnxscript

    (args.out / "labels.json").write_text(json.dumps(classes) + "\n")
    (args.out / "train.json").write_text(json.dumps({
        "torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__,
        "numpy": np.__version__, "threads": torch.get_num_threads(),
        "preprocessing": {"scale": "1/255", "mean": MEAN, "std": STD, "layout": "NCHW"},
        "train_images": int(len(train)), "val_images": int(len(val)), "epochs": args.epochs,
        "kept_epoch": best[2], "val_accuracy": round(best[0], 4), "history": history}, indent=2) + "\n")
    print(f"kept epoch {best[2]} (validation accuracy {best[0]:.4f}); wrote {args.out}")


if __name__ == "__main__":
    main()
