"""Make one teacher of several trained models: the mean of their probabilities, written as an
'edgecls train' directory that `edgecls train --teacher DIR` takes like any other run.

    python tools/release/ensemble_teacher.py runs/ship/resnet20_teacher_c2 runs/ship/resnet8_kd120 \
        --out runs/ship/teacher_ens

The members must know the same classes and take the same preprocessing (runs trained on the same
data). Measure the ensemble first with experiments/ensemble_accuracy.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgecls.training.distill import save_ensemble_teacher  # noqa: E402
from edgecls.errors import EdgeclsError  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("members", nargs="+", help="finished 'edgecls train' directories")
    ap.add_argument("--out", required=True, help="new directory for the ensemble teacher")
    args = ap.parse_args(argv)
    try:
        record = save_ensemble_teacher(args.members, args.out)
    except EdgeclsError as e:
        print(f"ensemble_teacher: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {record['arch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
