"""Train the digits classifier whose features the digits' Fréchet distance and KID use, and write
the weights that ship with the package (sde_gen/models/digits_classifier.pt).

    python experiments/train_digits_classifier.py            # 40 epochs, seed 0, ~1 min on a CPU
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sde_gen.data import Digits
from sde_gen.models.digits_classifier import WEIGHTS, fit_digits_classifier

OUT = Path(__file__).resolve().parents[1] / "sde_gen" / "models" / WEIGHTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    net, acc = fit_digits_classifier(Digits(), args.epochs, args.seed)
    torch.save(net.state_dict(), args.out)
    print(f"test accuracy {acc:.4f}; weights -> {args.out}")


if __name__ == "__main__":
    main()
