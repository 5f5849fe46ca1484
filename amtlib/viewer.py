"""Interactive 3D viewer of a case: CT with reference and prediction overlays (for teaching demos).

Uses NiiVue through ``ipyniivue`` (an anywidget), which renders in JupyterLab and, unlike itkwidgets,
does not block a headless papermill run. Install with the ``viewer`` extra
(``pip install -e '.[viewer]'``). Nothing here is needed to regenerate the paper's numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Overlay colours (NiiVue colormap names) matching the static figures: reference orange, prediction blue.
OVERLAY_COLORMAPS: dict[str, str] = {"reference": "warm", "prediction": "blue", "anatomy": "random"}


def _niivue() -> Any:
    try:
        import ipyniivue
    except ImportError:
        raise ImportError(
            "the 3D viewer needs ipyniivue: install the viewer extra with `pip install -e '.[viewer]'` "
            "(or `pip install ipyniivue`) and open the notebook in JupyterLab"
        ) from None
    return ipyniivue


def view_case(
    image_path: str | Path,
    reference_path: str | Path | None = None,
    prediction_path: str | Path | None = None,
    anatomy_path: str | Path | None = None,
    window_hu: tuple[float, float] = (-160.0, 240.0),
    opacity: float = 0.5,
    height: int = 500,
) -> Any:
    """NiiVue widget showing a CT (mediastinal window ``window_hu``) and the given masks as overlays.

    Display it by leaving it as the last expression of a cell. Missing files raise ``ValueError``
    naming the file; ``ImportError`` says how to install the viewer when ipyniivue is absent. The
    widget opens in multiplanar mode (axial, coronal, sagittal and a 3D rendering).
    """
    niivue = _niivue()
    layers = [{"path": image_path, "colormap": "gray", "cal_min": window_hu[0], "cal_max": window_hu[1]}]
    for key, path in (("reference", reference_path), ("prediction", prediction_path), ("anatomy", anatomy_path)):
        if path:
            top = 1.0 if key != "anatomy" else 255.0
            layers.append({"path": path, "colormap": OVERLAY_COLORMAPS[key], "opacity": opacity if key != "anatomy" else 0.25, "cal_min": 0.0, "cal_max": top})
    for layer in layers:
        if not Path(layer["path"]).is_file():
            raise ValueError(f"{layer['path']}: file not found; check the run folder")
        layer["path"] = str(layer["path"])
    nv = niivue.NiiVue(height=height)
    nv.load_volumes(layers)
    nv.set_slice_type(niivue.SliceType.MULTIPLANAR)
    return nv


def view_table_case(table: Any, case_id: str, **kwargs: Any) -> Any:
    """:func:`view_case` for a row of the notebook's evaluation table (``image_path, mask_path, pred_path``)."""
    hit = table[table["case_id"] == case_id]
    if hit.empty:
        raise ValueError(f"case {case_id!r} is not in the evaluation table")
    row = hit.iloc[0]
    return view_case(row["image_path"], row["mask_path"], row["pred_path"], row.get("anatomy_path") or None, **kwargs)
