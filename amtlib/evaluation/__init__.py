"""The evaluation layer: the paper's voxel-wise and lesion-wise metrics, their tables and the failure analysis.

    metrics    voxel-wise Dice, IoU, sensitivity, precision per case (Table 3)
    lesions    connected components, size filter, one-to-one matching, the IoU-sweep FROC (Fig 4, Table 4)
    stats      case bootstrap, mean ± SD (95% CI), the subgroup tables
    boundary   HD95, ASSD and NSD per case with every convention pinned (not in the paper)
    panoptic   per-lesion Dice/IoU of matched pairs and PQ = SQ x RQ (not in the paper)
    evaluate   ``amt evaluate``: any model's masks against the references, per case and per table
    nnunet     ``amt export-nnunet`` (the split as an nnU-Net v2 dataset) and nnU-Net's summary.json schema
    failure    top/bottom Dice groups, failure categories, anatomy attribution (step 06)
    radiomics  shape and first-order features of the reference masks, group comparisons (step 06)

Imports only from the data and ground layers, and never needs torch (tests/test_architecture.py).
"""
