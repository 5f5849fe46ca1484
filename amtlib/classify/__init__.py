"""The related papers' classifiers: segment, then classify (notebooks 07 and 08).

    arms       labels, the ROI of each case, the radiomics SVM and the tabular arms
    roc        AUC, DeLong variance and paired test, bootstrap CIs, thresholds
    cnn2d      2D CNN classifiers on tumour crops (the TET paper's CNN, the fusion paper's networks)
    histology  WHO risk stratification of thymic epithelial tumours: radiomics SVM vs 2D CNN (step 07)
    fusion     CT + circulating-tumour-cell / clinical fusion, benign vs malignant and multi-class (step 08)

Imports from the evaluation, data and ground layers only; never imported by them.
"""
