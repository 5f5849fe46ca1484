"""Interactive 3D viewer of a case: CT with reference and prediction overlays (for teaching demos).

Uses NiiVue through ``ipyniivue`` (an anywidget), which renders in JupyterLab and, unlike itkwidgets,
does not block a headless papermill run. Install with the ``viewer`` extra
(``pip install -e '.[viewer]'``). NiiVue draws with WebGL2: in a browser without it (some remote
desktops, old GPUs, software rendering switched off) the cell stays blank and only the browser console
shows the error. Nothing here is needed to regenerate the paper's numbers.

The viewer opens with its crosshair on the reference tumour (on the prediction when there is no
reference), shows the reference in orange and the prediction in blue -- the colours of the static
figures (:data:`amtlib.figures.REFERENCE_COLOUR`, :data:`amtlib.figures.PREDICTION_COLOUR`) -- with a
legend above it; the organ labels are off unless ``show_anatomy=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from amtlib.errors import AmtError

#: Overlay colours (RGB 0-255) matching the static figures: reference orange, prediction blue.
OVERLAY_RGB: dict[str, tuple[int, int, int]] = {"reference": (255, 140, 0), "prediction": (31, 119, 255)}
#: Colormap of the anatomy labels (only drawn when asked for).
ANATOMY_COLORMAP = "random"


def _niivue() -> Any:
    try:
        import ipyniivue
    except ImportError:
        raise ImportError(
            "the 3D viewer needs ipyniivue: install the viewer extra with `pip install -e '.[viewer]'` "
            "(or `pip install ipyniivue`) and open the notebook in JupyterLab"
        ) from None
    return ipyniivue


def crosshair_fraction(mask_path: str | Path) -> list[float] | None:
    """NiiVue crosshair position (fractions 0-1 along R, A, S of the volume) of the mask's centroid.

    NiiVue's fractions are those of voxel centres in the volume reoriented to RAS:
    ``(index_RAS + 0.5) / n``. ``None`` when the mask is empty. Needs an axis-aligned affine (as every
    NIfTI the pipeline writes).
    """
    import nibabel as nib

    img = nib.load(str(mask_path))
    data = np.asarray(img.dataobj)
    idx = np.argwhere(data > 0)
    if idx.size == 0:
        return None
    centre = idx[:, :3].mean(axis=0)
    shape = np.array(data.shape[:3], dtype=float)
    ornt = nib.orientations.io_orientation(img.affine)  # for each array axis: (RAS axis, +1/-1)
    frac = [0.5, 0.5, 0.5]
    for axis, (ras_axis, flip) in enumerate(ornt):
        v = centre[axis] if flip > 0 else shape[axis] - 1 - centre[axis]
        frac[int(ras_axis)] = float((v + 0.5) / shape[axis])
    return frac


def _legend_html(entries: Sequence[tuple[str, str]]) -> str:
    items = "".join(
        f'<span style="margin-right:1.2em"><span style="display:inline-block;width:0.9em;height:0.9em;'
        f'background:{colour};border:1px solid #333;vertical-align:middle;margin-right:0.35em"></span>{label}</span>'
        for label, colour in entries)
    return f'<div style="font:13px sans-serif;padding:2px 0">{items}</div>'


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def view_case(
    image_path: str | Path,
    reference_path: str | Path | None = None,
    prediction_path: str | Path | None = None,
    anatomy_path: str | Path | None = None,
    window_hu: tuple[float, float] = (-160.0, 240.0),
    opacity: float = 0.5,
    height: int = 500,
    show_anatomy: bool = False,
    legend: bool = True,
) -> Any:
    """NiiVue widget showing a CT (mediastinal window ``window_hu``) and the given masks as overlays.

    Display it by leaving it as the last expression of a cell. Opens in multiplanar mode (axial,
    coronal, sagittal and a 3D rendering) with the crosshair on the reference tumour. ``anatomy_path``
    is drawn only with ``show_anatomy``. With ``legend`` the result is an ``ipywidgets.VBox`` of a
    legend and the NiiVue widget (``.niivue``); else the NiiVue widget itself. Missing files raise
    ``ValueError`` naming the file; ``ImportError`` says how to install the viewer when ipyniivue is absent.
    """
    niivue = _niivue()
    layers = [{"path": image_path, "colormap": "gray", "cal_min": float(window_hu[0]), "cal_max": float(window_hu[1])}]
    kinds = ["image"]
    # prediction first, reference drawn over it (both semi-transparent, so overlap shows both)
    for key, path in (("prediction", prediction_path), ("reference", reference_path)):
        if path:
            layers.append({"path": path, "colormap": "gray", "opacity": float(opacity), "cal_min": 0.5, "cal_max": 1.0})
            kinds.append(key)
    if anatomy_path and show_anatomy:
        layers.append({"path": anatomy_path, "colormap": ANATOMY_COLORMAP, "opacity": 0.25, "cal_min": 0.0, "cal_max": 255.0})
        kinds.append("anatomy")
    for layer in layers:
        if not Path(layer["path"]).is_file():
            raise AmtError(layer["path"], "file not found", "check the run folder")
        layer["path"] = str(layer["path"])
    nv = niivue.NiiVue(height=height)
    nv.load_volumes(layers)
    for vol, kind in zip(nv.volumes, kinds):
        if kind in OVERLAY_RGB:  # a one-colour label map: 0 transparent, 1 the figure colour
            r, g, b = OVERLAY_RGB[kind]
            vol.set_colormap_label({"R": [0, r], "G": [0, g], "B": [0, b], "A": [0, 255], "I": [0, 1], "labels": ["", kind]})
    nv.set_slice_type(niivue.SliceType.MULTIPLANAR)
    focus = reference_path or prediction_path
    frac = crosshair_fraction(focus) if focus else None
    if frac is not None:
        nv.scene.crosshair_pos = frac
    if not legend:
        return nv
    import ipywidgets

    entries = [("reference", _hex(OVERLAY_RGB["reference"]))] if reference_path else []
    entries += [("prediction", _hex(OVERLAY_RGB["prediction"]))] if prediction_path else []
    entries += [("anatomy labels", "#999999")] if "anatomy" in kinds else []
    note = "" if frac is None else " &nbsp; crosshair on the " + ("reference" if reference_path else "predicted") + " tumour"
    box = ipywidgets.VBox([ipywidgets.HTML(_legend_html(entries) + f'<div style="font:12px sans-serif;color:#555">CT window '
                                           f'{window_hu[0]:g} to {window_hu[1]:g} HU{note}</div>'), nv])
    box.niivue = nv
    return box


def view_table_case(table: Any, case_id: str, **kwargs: Any) -> Any:
    """:func:`view_case` for a row of the notebook's evaluation table (``image_path, mask_path, pred_path``)."""
    hit = table[table["case_id"] == case_id]
    if hit.empty:
        raise ValueError(f"case {case_id!r} is not in the evaluation table")
    row = hit.iloc[0]
    return view_case(row["image_path"], row["mask_path"], row["pred_path"], row.get("anatomy_path") or None, **kwargs)
