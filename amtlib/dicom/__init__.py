"""DICOM beyond files: the PACS client (DICOMweb and DIMSE).

    pacs   find, retrieve and store over DICOMweb (QIDO/WADO/STOW-RS) or DIMSE (C-FIND/C-GET/C-STORE)

Part of the data layer: knows no model, runner or metric. Series reading and writing, annotations
and SEG/RTSTRUCT export (``amtlib.dicomio``, ``amtlib.annotations``, ``amtlib.export``) move here
in later steps of the layout change (issue 24).
"""
