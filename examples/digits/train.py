"""Train a small CrossFormer on the scikit-learn digits (64x64 RGB, ImageNet normalisation), on the CPU.

    python examples/digits/train.py            # -> examples/digits/crossformer_digits.pth

Deterministic: fixed seeds, one intra-op thread by default, deterministic algorithms. The checkpoint is
``{"model": state_dict}``, loadable with ``create_model(None, weights=path)`` (the architecture is read
off the tensor shapes). It is written atomically (temp file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from data import NUM_CLASSES, SIZE, load_split

from crossformer_deploy import CrossFormerConfig, create_model

HERE = os.path.dirname(os.path.abspath(__file__))

# Depths (2, 2, 1, 1): at 64x64 the stage maps are 16, 8, 4, 2, so stages 0 (16x16, interval 8) and
# 1 (8x8, interval 4) each have a real LDA block; at 4x4 and 2x2 every block is SDA (small-map rule),
# so extra depth there would only add width-256 parameters. Head dim 32, the rest as the paper's defaults.
CONFIG = CrossFormerConfig(embed_dim=32, depths=(2, 2, 1, 1), num_heads=(1, 2, 4, 8), name="digits")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in each direction; uncovered pixels get the
    background (black, i.e. the normalised value of 0)."""
    if max_shift <= 0:
        return x
    bg = x.amin(dim=(0, 2, 3), keepdim=True)  # black after normalisation, per channel
    p = max_shift
    padded = F.pad(x - bg, (p, p, p, p)) + bg
    dy, dx = torch.randint(0, 2 * p + 1, (2, x.shape[0]), generator=gen).tolist()
    return torch.stack([padded[i, :, a:a + SIZE, b:b + SIZE] for i, (a, b) in enumerate(zip(dy, dx))])


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 150) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        logits = model(x[i:i + batch])
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(y), correct / len(y)


def save_atomic(state: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "crossformer_digits.pth"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--max-shift", type=int, default=4, help="augmentation: random shift in pixels (at 64x64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    model = create_model(CONFIG, num_classes=NUM_CLASSES)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {CONFIG}")
    print(f"params {n_params:,}; train {len(y_train)}, test {len(y_test)} images of {SIZE}x{SIZE}; "
          f"{args.threads} thread(s)")

    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(y_train) / args.batch_size)
    total = args.epochs * steps_per_epoch
    warmup = max(1, round(args.warmup_epochs * steps_per_epoch))

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    start = time.perf_counter()
    acc = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(y_train), generator=gen)
        run_loss, run_correct = 0.0, 0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb = random_shift(x_train[idx], args.max_shift, gen)
            yb = y_train[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += loss.item() * len(idx)
            run_correct += (logits.argmax(1) == yb).sum().item()
        test_loss, acc = evaluate(model, x_test, y_test)
        print(f"epoch {epoch:2d}/{args.epochs}  lr {opt.param_groups[0]['lr']:.2e}  "
              f"train loss {run_loss / len(y_train):.4f} acc {run_correct / len(y_train):.2%}  "
              f"test loss {test_loss:.4f} acc {acc:.2%}  [{time.perf_counter() - start:.0f} s]", flush=True)

    model.eval()
    save_atomic({"model": model.state_dict()}, args.out)
    size = os.path.getsize(args.out)
    print(f"held-out accuracy {acc:.2%} ({round(acc * len(y_test))}/{len(y_test)}); "
          f"training {time.perf_counter() - start:.0f} s; saved {args.out} ({size / 2**20:.2f} MiB)")
    return acc


if __name__ == "__main__":
    main()
