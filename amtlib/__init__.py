"""amtlib: helper library of the reproducibility package for Takemura et al., Sci Rep 2026.

A 3D U-Net that segments and detects anterior mediastinal tumours in chest CT. Each module owns one
part of the paper's methods; notebooks in ``notebooks/`` call them in order (see ``amtlib.pipeline``).

Conventions: arrays are (z, y, x) in numpy order; spacing is (z, y, x) in mm; case ids are strings and
files are ``<case_id>.nii.gz``; every random choice takes a seed or a ``numpy.random.Generator``.
"""

__version__ = "0.1.0"
