"""DICOM in and out: CT series, annotations, SEG/RTSTRUCT export, other models' DICOM masks, the PACS.

    dicomio      header scan, geometry checks, HU volumes, NIfTI conversion, CT series writing
    annotations  DICOM SEG and RT Structure Sets from clinical tools onto a CT series' grid
    export       predicted masks out as DICOM SEG and RT Structure Set referencing the source series
    predictions  another model's masks as SEG/RTSTRUCT, paired to cases for ``amt evaluate``
    pacs         find, retrieve and store over DICOMweb (QIDO/WADO/STOW-RS) or DIMSE (C-FIND/C-GET/C-STORE)

Part of the data layer: knows no model, runner or metric.
"""
