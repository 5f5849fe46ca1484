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
    certificate: Path | None = None  # behind the TLS front (:func:`tls_front`): its self-signed certificate

    aet = "ORTHANC"

    @property
    def dicomweb(self) -> str:
        if self.certificate is not None:
            return f"https://127.0.0.1:{self.http_port}/dicom-web"
        return f"dicomweb://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def base(self) -> str:
        return f"{'https' if self.certificate else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def dimse(self) -> str:
        return f"dimse://{self.aet}@127.0.0.1:{self.dicom_port}"

    def rest(self, method: str, path: str, **kw: Any) -> Any:
        import requests

        r = requests.request(method, f"{self.base}{path}", auth=(USER, PASSWORD), timeout=30,
                             verify=str(self.certificate) if self.certificate else True, **kw)
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


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made by openssl: (certificate, key), PEM files in ``folder``."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class TlsFront:
    """HTTPS in front of a running Orthanc, as a hospital's reverse proxy puts it (Debian's Orthanc 1.10.1
    crashes on its own HTTPS here): TLS with a self-signed certificate on a free loopback port, each
    connection piped to Orthanc's plain HTTP port by two threads. ``close()`` stops it."""

    def __init__(self, server: Orthanc, folder: Path) -> None:
        import ssl
        import threading

        folder.mkdir(parents=True, exist_ok=True)
        cert, key = self_signed(folder)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.target = server.http_port
        self.view = Orthanc(self.port, server.dicom_port, server.folder, server.process, cert)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        import threading

        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except OSError:  # a client that does not trust the certificate hangs up during the handshake
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def pipe(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pipe, args=(upstream, tls), daemon=True).start()
        pipe(tls, upstream)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


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
            requests.get(f"{server.base}/system", auth=(USER, PASSWORD), timeout=2).raise_for_status()
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
