#!/usr/bin/env python3
"""Cross-check the per-lesion quality (amtlib.evaluation.panoptic) against panoptica on random phantoms.

panoptica pins numpy < 2.3, so it is not in the test extra; install it beside the project without
touching the environment and run this script with it on the path:

    .venv/bin/pip install --no-deps --target /tmp/xcheck panoptica rich typer click shellingham \\
        markdown-it-py mdurl pygments "plotly<6" narwhals
    PYTHONPATH=/tmp/xcheck .venv/bin/python benchmarks/crosscheck_panoptica.py

On seeded random phantoms (boxes, shifted, resized or dropped, plus FPs, all >= 10 voxels) it prints
our TP/FP/FN, PQ, SQ, RQ at lesion IoU > 0.5 beside panoptica's (connected components, naive
matching at IoU > 0.5, strict), and the largest difference over all phantoms; exit 1 if any differs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=40)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    try:
        from panoptica import ConnectedComponentsInstanceApproximator, InputType, NaiveThresholdMatching, Panoptica_Evaluator
        from panoptica.metrics import Metric
    except ImportError as exc:
        sys.stderr.write(f"panoptica not importable ({exc}); see this script's docstring\n")
        return 2
    sys.path.insert(0, "tests")
    from test_panoptic import overlap_of, random_phantom

    from amtlib.evaluation import panoptic

    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC, instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU, matching_threshold=0.5, strict_threshold=True),
        verbose=False)
    rng = np.random.default_rng(args.seed)
    worst = {"counts": 0, "pq": 0.0, "sq": 0.0, "rq": 0.0}
    print(f"{'#':>3} {'TP/FP/FN ours':>14} {'panoptica':>10} {'PQ ours':>8} {'PQ pan.':>8} {'SQ ours':>8} {'SQ pan.':>8} "
          f"{'RQ ours':>8} {'RQ pan.':>8}")
    for i in range(args.phantoms):
        pred, ref = random_phantom(rng)
        _, q = panoptic.case_pairs(overlap_of(pred, ref), 0.5, min_pred_voxels=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = evaluator.evaluate(pred, ref, verbose=False)["ungrouped"]
        ours_c, their_c = (q["tp"], q["fp"], q["fn"]), (theirs.tp, theirs.fp, theirs.fn)
        worst["counts"] = max(worst["counts"], int(ours_c != their_c))
        for k in ("pq", "rq"):
            worst[k] = max(worst[k], abs(q[k] - getattr(theirs, k)))
        if q["tp"]:
            worst["sq"] = max(worst["sq"], abs(q["sq"] - theirs.sq))
        print(f"{i:3d} {'/'.join(map(str, ours_c)):>14} {'/'.join(map(str, their_c)):>10} {q['pq']:8.4f} {theirs.pq:8.4f} "
              f"{q['sq']:8.4f} {theirs.sq:8.4f} {q['rq']:8.4f} {theirs.rq:8.4f}")
    print(f"{args.phantoms} phantoms: counts differ in {worst['counts']} (max); largest |difference| PQ {worst['pq']:.2g}, "
          f"SQ {worst['sq']:.2g}, RQ {worst['rq']:.2g}")
    return 0 if worst["counts"] == 0 and max(worst["pq"], worst["sq"], worst["rq"]) < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
