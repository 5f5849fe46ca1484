"""A real PACS for the tests: Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) started on
loopback from a JSON configuration written here (free ports, a temporary storage folder), stopped after.

The server needs HTTP basic credentials (so the tests show they come from the environment), knows our
AE title ``AMT`` as a modality (C-FIND and C-GET allowed), and refuses, through a Lua filter, any SEG
or RTSTRUCT whose PatientID is ``REFUSEPUSH`` (a PACS that says no). Tests talk to its REST API with
plain ``requests``, independently of the package's client.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
USER, PASSWORD = "amt-test", "s3cret-Pw-7f1"
REFUSED_PATIENT = "REFUSEPUSH"

_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  if (dicom.Modality == 'SEG' or dicom.Modality == 'RTSTRUCT') and dicom.PatientID == '%s' then
    return false
  end
  return true
end
""" % REFUSED_PATIENT


def missing() -> str:
    """Why the real PACS cannot run here ('' when it can)."""
    if not Path(ORTHANC).is_file():
        return "Orthanc not installed: apt-get install orthanc orthanc-dicomweb"
    if not Path(DICOMWEB_PLUGIN).is_file():
        return "Orthanc's DICOMweb plugin not installed: apt-get install orthanc-dicomweb"
    return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its ports, the DICOMweb and DIMSE addresses, a REST helper."""

    http_port: int
    dicom_port: int
    folder: Path
    process: subprocess.Popen

    aet = "ORTHANC"

    @property
    def dicomweb(self) -> str:
        return f"dicomweb://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dimse://{self.aet}@127.0.0.1:{self.dicom_port}"

    def rest(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        r = requests.request(method, f"http://127.0.0.1:{self.http_port}{path}", auth=(USER, PASSWORD), timeout=30, **kw)
        r.raise_for_status()
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content

    def upload(self, paths: list[Path]) -> None:
        for p in paths:
            self.rest("POST", "/instances", data=Path(p).read_bytes())

    def find(self, **query: str) -> list[str]:
        """Orthanc ids of instances matching DICOM tag values (its own /tools/find)."""
        return self.rest("POST", "/tools/find", json={"Level": "Instance", "Query": query})

    def file(self, orthanc_id: str) -> bytes:
        return self.rest("GET", f"/instances/{orthanc_id}/file")

    def clear(self) -> None:
        for pid in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{pid}")


def start(folder: Path) -> Orthanc:
    """Write the configuration into ``folder`` and start Orthanc; wait until its REST API answers."""
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    (folder / "filter.lua").write_text(_LUA)
    config = {
        "Name": "amt-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": Orthanc.aet, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [DICOMWEB_PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {"amt": {"AET": "AMT", "Host": "127.0.0.1", "Port": 1, "AllowFind": True, "AllowGet": True,
                                    "AllowStore": True, "AllowEcho": True}},
        "DicomCheckCalledAet": True, "LuaScripts": [str(folder / "filter.lua")], "StorageCompression": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(http_port, dicom_port, folder, proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            requests.get(f"http://127.0.0.1:{http_port}/system", auth=(USER, PASSWORD), timeout=2).raise_for_status()
            return server
        except requests.RequestException:
            time.sleep(0.2)
    stop(server)
    raise RuntimeError("Orthanc did not answer within 30 s")


def stop(server: Orthanc) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(server.folder / "db", ignore_errors=True)
