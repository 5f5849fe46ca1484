"""A PACS client: find CT series, retrieve them to files, store objects and confirm every store.

Two protocols, one interface (:class:`Pacs`):

- DICOMweb, ``dicomweb://HOST:PORT/PATH`` (plain HTTP), ``dicomwebs://HOST/PATH`` or
  ``https://HOST/PATH`` / ``http://HOST:PORT/PATH``: QIDO-RS to find, WADO-RS to retrieve, STOW-RS
  to store (dicomweb-client over one requests session). Credentials never come from the command
  line: ``AMT_PACS_TOKEN`` (a bearer token) or ``AMT_PACS_USER`` + ``AMT_PACS_PASSWORD`` (HTTP
  basic), else ``~/.netrc`` (requests reads it for the host). An address with ``user:pass@`` in it is
  refused, so no secret reaches a log, ``predict.json`` or an error message.
- DIMSE, ``dimse://AET@HOST:PORT``: C-FIND (Study Root) to find, C-GET to retrieve (we take the
  storage SCP role for the CT classes), C-STORE to store, proposing the SEG and RTSTRUCT storage
  classes explicitly (pynetdicom). ``calling_aet`` is our AE title (default ``AMT``).

Query parameters of the address choose what to read: ``?StudyInstanceUID=...`` (and optionally
``&SeriesInstanceUID=...``). A PACS can answer success and keep nothing, so :meth:`Pacs.store`
queries for each object afterwards and raises :class:`PacsError` naming the PACS, the object and
the status when a store is refused or not confirmed. Retrieved files are named by their order
(``00001.dcm``...), never by a UID from the data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

from amtlib.errors import AmtError

#: Our AE title when none is given (``--calling-aet``).
DEFAULT_CALLING_AET = "AMT"
#: Environment variables holding HTTP credentials (never the command line).
TOKEN_ENV, USER_ENV, PASSWORD_ENV = "AMT_PACS_TOKEN", "AMT_PACS_USER", "AMT_PACS_PASSWORD"
#: Seconds to wait for a PACS to answer one request or association.
TIMEOUT_S = 30.0
#: SOP classes we retrieve as CT images and store as results.
CT_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_AET = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable characters, no backslash
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class PacsError(AmtError):
    """A PACS that cannot be reached, refuses a request, or does not confirm a store."""


@dataclass(frozen=True)
class PacsAddress:
    """Where a PACS is and what to read there. ``url``: the DICOMweb base (no credentials)."""

    protocol: str  # "dicomweb" or "dimse"
    host: str
    port: int
    url: str = ""
    called_aet: str = ""
    study_uid: str = ""
    series_uid: str = ""

    def display(self) -> str:
        """How errors and logs name the PACS (never a credential: none can be in the address)."""
        if self.protocol == "dimse":
            return f"dimse://{self.called_aet}@{self.host}:{self.port}"
        return self.url


def is_pacs_address(text: str) -> bool:
    """True for an address :func:`parse_address` reads (by its scheme), not a local path."""
    return str(text).split("://", 1)[0].lower() in ("dicomweb", "dicomwebs", "http", "https", "dimse") and "://" in str(text)


def _check_uid(value: str, what: str, address: str) -> str:
    if value and (len(value) > 64 or not _UID.match(value)):
        raise PacsError(address, f"{what} {value[:80]!r} is not a DICOM UID (digits and dots, at most 64)",
                        "copy the UID from the PACS")
    return value


def parse_address(text: str, need_study: bool = False) -> PacsAddress:
    """Read ``dicomweb://``, ``dicomwebs://``, ``http(s)://`` or ``dimse://AET@HOST:PORT`` (see the module).

    ``need_study``: a ``StudyInstanceUID`` query parameter is required (reading; pushing needs none).
    """
    parts = urlsplit(str(text))
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # the address is shown without the port (and never with credentials)
        given = parts.netloc.rpartition("@")[2].rpartition(":")[2][:20]
        raise PacsError(f"{scheme}://{parts.hostname or ''}{parts.path}",
                        f"the port {given!r} is not a number between 0 and 65535",
                        "fix the address, e.g. dimse://PACS@pacs:104") from None
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname or ""  # IPv6 in brackets
    shown = f"{scheme}://{host}{':' + str(port) if port else ''}{parts.path}"
    if parts.password is not None or (scheme != "dimse" and parts.username is not None):
        raise PacsError(shown, "credentials in the address are refused (they would reach logs and shell history)",
                        f"set {TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}, or use ~/.netrc")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - {"StudyInstanceUID", "SeriesInstanceUID"})
    if unknown:
        raise PacsError(shown, f"unknown query parameter(s) {', '.join(unknown)}",
                        "use ?StudyInstanceUID=...&SeriesInstanceUID=...")
    study = _check_uid(query.get("StudyInstanceUID", ""), "StudyInstanceUID", shown)
    series = _check_uid(query.get("SeriesInstanceUID", ""), "SeriesInstanceUID", shown)
    if need_study and not study:
        raise PacsError(shown, "no StudyInstanceUID given", "add ?StudyInstanceUID=<the study's UID> to the address")
    if not parts.hostname:
        raise PacsError(shown, "no host in the address", "write e.g. dicomweb://pacs:8042/dicom-web or dimse://PACS@pacs:104")
    if scheme == "dimse":
        aet = parts.username or ""
        if not _AET.match(aet):
            raise PacsError(shown, f"called AE title {aet!r} missing or invalid (1-16 characters, no backslash)",
                            "write dimse://AET@HOST:PORT")
        if not port:
            raise PacsError(shown, "no port", "write dimse://AET@HOST:PORT (104 or 11112 are usual)")
        return PacsAddress("dimse", parts.hostname, port, called_aet=aet, study_uid=study, series_uid=series)
    if scheme not in ("dicomweb", "dicomwebs", "http", "https"):
        raise PacsError(shown, f"unknown scheme {scheme!r}", "use dicomweb://, dicomwebs://, https:// or dimse://")
    http = {"dicomweb": "http", "dicomwebs": "https"}.get(scheme, scheme)
    url = f"{http}://{host}{':' + str(port) if port else ''}{parts.path.rstrip('/')}"
    return PacsAddress("dicomweb", parts.hostname, port or (443 if http == "https" else 80), url=url,
                       study_uid=study, series_uid=series)


@dataclass(frozen=True)
class RemoteSeries:
    """One series a PACS lists for a study."""

    study_uid: str
    series_uid: str
    modality: str
    description: str = ""
    n_instances: int | None = None


@dataclass
class StoreResult:
    """One object sent: its UIDs and file, the PACS's status, and whether a query found it after."""

    path: str
    sop_class: str
    sop_uid: str
    series_uid: str
    status: str
    confirmed: bool = False


class Pacs:
    """A PACS at ``address``: :meth:`find_series`, :meth:`retrieve_series`, :meth:`store`."""

    def __init__(self, address: PacsAddress, calling_aet: str = DEFAULT_CALLING_AET, timeout_s: float = TIMEOUT_S) -> None:
        if not _AET.match(calling_aet):
            raise PacsError("--calling-aet", f"{calling_aet!r} is not an AE title (1-16 characters, no backslash)",
                            "give e.g. --calling-aet AMT")
        self.address, self.calling_aet, self.timeout_s = address, calling_aet, timeout_s
        self._client: Any = None

    @property
    def name(self) -> str:
        return self.address.display()

    # ---------------------------------------------------------------------------- DICOMweb
    def _web(self) -> Any:
        if self._client is None:
            import requests
            from dicomweb_client.api import DICOMwebClient

            session = requests.Session()  # trust_env: ~/.netrc answers when no credentials are set
            token, user = os.environ.get(TOKEN_ENV, ""), os.environ.get(USER_ENV, "")
            if token:
                session.headers["Authorization"] = f"Bearer {token}"
            elif user:
                session.auth = (user, os.environ.get(PASSWORD_ENV, ""))
            self._client = DICOMwebClient(self.address.url, session=session, timeout=self.timeout_s)
        return self._client

    def _http(self, what: str, call: Callable[[], Any]) -> Any:
        import requests

        try:
            return call()
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            remedy = {401: f"give credentials ({TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV}, or ~/.netrc)",
                      403: "ask the PACS administrator for access", 404: "check the address's path and UIDs"}
            raise PacsError(self.name, f"{what}: refused with HTTP {code}",
                            remedy.get(code, "check the PACS's log")) from None  # type: ignore[arg-type]
        except requests.exceptions.SSLError:
            raise PacsError(self.name, f"{what}: the PACS's TLS certificate is not trusted or not valid for this host",
                            "set REQUESTS_CA_BUNDLE to the file of the CA that signed it") from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(self.name, f"{what}: cannot reach the PACS ({type(exc).__name__})",
                            "check the host and port, and that the PACS is running") from None

    # ---------------------------------------------------------------------------- DIMSE
    def _associate(self, contexts: Sequence[tuple[str, Sequence[str]]], roles: Sequence[Any] = (),
                   handlers: Sequence[Any] = ()) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, list(syntaxes) or None)
        a = self.address
        try:
            assoc = ae.associate(a.host, a.port, ae_title=a.called_aet, ext_neg=list(roles), evt_handlers=list(handlers))
        except (OSError, ValueError) as exc:
            raise PacsError(self.name, f"cannot open an association ({exc})", "check the host, port and AE titles") from None
        if not assoc.is_established:
            refused = [] if assoc.accepted_contexts else [c.abstract_syntax for c in assoc.rejected_contexts]
            if assoc.is_aborted and refused:  # pynetdicom aborts when the PACS accepts none of what we asked for
                from pydicom.uid import UID

                names = ", ".join(sorted({UID(u).name for u in refused}))
                raise PacsError(self.name, f"answered, but accepts none of the services asked for ({names})",
                                f"ask the PACS administrator to accept them from our AE title {self.calling_aet}")
            why = "rejected the association" if assoc.is_rejected else "cannot be reached or did not answer"
            raise PacsError(self.name, f"{why} (our AE title {self.calling_aet})",
                            "check the host and port, and that the PACS knows our AE title (--calling-aet)")
        return assoc

    @staticmethod
    def _status(status: Any) -> int:
        return int(getattr(status, "Status", -1)) if status is not None and "Status" in status else -1

    def _find(self, query: Any) -> list[Any]:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

        assoc = self._associate([(FIND, ())])
        found = []
        try:
            for status, identifier in assoc.send_c_find(query, FIND):
                code = self._status(status)
                if code in (0xFF00, 0xFF01) and identifier is not None:
                    found.append(identifier)
                elif code == -1:  # no status: the PACS aborted or closed the association
                    raise PacsError(self.name, f"ended the association without answering the C-FIND from our AE title "
                                    f"{self.calling_aet}", "check that the PACS knows our AE title (--calling-aet) "
                                    "and allows it to query")
                elif code != 0x0000:
                    raise PacsError(self.name, f"C-FIND failed with status 0x{code:04X}",
                                    "check that the PACS allows queries from our AE title")
        finally:
            assoc.release()
        return found

    # ---------------------------------------------------------------------------- the interface
    def find_series(self, study_uid: str, series_uid: str = "") -> list[RemoteSeries]:
        """Series of a study (one series when ``series_uid`` is given); every modality, in the PACS's order."""
        import pydicom

        if self.address.protocol == "dicomweb":
            filters = {"SeriesInstanceUID": series_uid} if series_uid else None
            rows = self._http("QIDO-RS series query", lambda: self._web().search_for_series(
                study_instance_uid=study_uid, search_filters=filters,
                fields=["Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances"]))
            datasets = [pydicom.Dataset.from_json(r) for r in rows]
        else:
            q = pydicom.Dataset()
            q.QueryRetrieveLevel = "SERIES"
            q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, series_uid
            q.Modality, q.SeriesDescription, q.NumberOfSeriesRelatedInstances = "", "", ""
            datasets = self._find(q)
        out = []
        for ds in datasets:
            n = ds.get("NumberOfSeriesRelatedInstances", None)
            out.append(RemoteSeries(str(ds.get("StudyInstanceUID", study_uid) or study_uid), str(ds.get("SeriesInstanceUID", "")),
                                    str(ds.get("Modality", "") or ""), str(ds.get("SeriesDescription", "") or ""),
                                    int(n) if n not in (None, "") else None))
        return [s for s in out if s.series_uid]

    def retrieve_series(self, study_uid: str, series_uid: str, folder: str | Path) -> list[Path]:
        """Every instance of a series as files ``folder/00001.dcm``...; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def keep(data: bytes) -> None:
            path = folder / f"{len(written) + 1:05d}.dcm"
            path.write_bytes(data)
            written.append(path)

        if self.address.protocol == "dicomweb":
            from io import BytesIO

            def fetch() -> None:
                for ds in self._web().iter_series(study_instance_uid=study_uid, series_instance_uid=series_uid):
                    buffer = BytesIO()
                    ds.save_as(buffer, enforce_file_format=True)
                    keep(buffer.getvalue())

            self._http("WADO-RS retrieve", fetch)
        else:
            self._c_get(study_uid, series_uid, keep)
        if not written:
            raise PacsError(self.name, f"series {series_uid}: the PACS sent no instance", "check the series in the PACS")
        return written

    def _c_get(self, study_uid: str, series_uid: str, keep: Callable[[bytes], None]) -> None:
        import pydicom
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

        def on_store(event: Any) -> int:
            keep(event.encoded_dataset())
            return 0x0000

        assoc = self._associate([(GET, ())] + [(c, ()) for c in CT_CLASSES],
                                roles=[build_role(c, scp_role=True) for c in CT_CLASSES],
                                handlers=[(evt.EVT_C_STORE, on_store)])
        q = pydicom.Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, series_uid
        try:
            final = None
            for status, _ in assoc.send_c_get(q, GET):
                final = self._status(status)
            if final not in (0x0000, 0xB000):
                raise PacsError(self.name, f"C-GET of series {series_uid} ended with status "
                                f"0x{(final or 0) & 0xFFFF:04X}", "check that the PACS allows retrieval by our AE title")
        finally:
            assoc.release()

    def store(self, paths: Iterable[str | Path]) -> list[StoreResult]:
        """Send each file, then query for it; raise :class:`PacsError` for the first refused or unconfirmed."""
        import pydicom

        datasets = [(str(p), pydicom.dcmread(str(p))) for p in paths]
        results = [StoreResult(p, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), "")
                   for p, ds in datasets]
        if self.address.protocol == "dicomweb":
            self._stow(datasets, results)
        else:
            self._c_store(datasets, results)
        for (path, ds), r in zip(datasets, results):
            r.confirmed = self.instance_exists(str(ds.StudyInstanceUID), r.series_uid, r.sop_uid)
            if not r.confirmed:
                raise PacsError(self.name, f"{path} (SOPInstanceUID {r.sop_uid}): the store answered {r.status} "
                                "but a query does not find the object", "check the PACS's log and storage; the local files stay")
        return results

    def _stow(self, datasets: list[tuple[str, Any]], results: list[StoreResult]) -> None:
        for (path, ds), r in zip(datasets, results):
            response = self._http(f"STOW-RS of {path}", lambda ds=ds: self._web().store_instances([ds]))
            failed = {str(item.get("ReferencedSOPInstanceUID", "")): int(item.get("FailureReason", 0))
                      for item in (response.get("FailedSOPSequence", None) or [])} if response is not None else {}
            if r.sop_uid in failed:
                raise PacsError(self.name, f"{path} (SOPInstanceUID {r.sop_uid}): store refused, failure reason "
                                f"0x{failed[r.sop_uid]:04X}", "check the PACS's log; the local files stay")
            r.status = "stored"

    def _c_store(self, datasets: list[tuple[str, Any]], results: list[StoreResult]) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        classes = sorted({r.sop_class for r in results})
        assoc = self._associate([(c, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)) for c in classes])
        try:
            for (path, ds), r in zip(datasets, results):
                try:
                    status = assoc.send_c_store(ds)
                except ValueError as exc:  # no accepted presentation context for the class
                    raise PacsError(self.name, f"{path}: the PACS accepts no {r.sop_class} storage ({exc})",
                                    "ask the PACS administrator to accept this storage class") from None
                code = self._status(status)
                if code not in (0x0000, 0xB000, 0xB006, 0xB007):
                    raise PacsError(self.name, f"{path} (SOPInstanceUID {r.sop_uid}): C-STORE refused with status "
                                    f"0x{code & 0xFFFF:04X}", "check the PACS's log; the local files stay")
                r.status = "stored" if code == 0 else f"stored with warning 0x{code:04X}"
        finally:
            assoc.release()

    def instance_exists(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the PACS lists this instance (QIDO-RS or an IMAGE-level C-FIND)."""
        import pydicom

        if self.address.protocol == "dicomweb":
            rows = self._http("QIDO-RS instance query", lambda: self._web().search_for_instances(
                study_instance_uid=study_uid, series_instance_uid=series_uid, search_filters={"SOPInstanceUID": sop_uid}))
            return any(pydicom.Dataset.from_json(r).get("SOPInstanceUID", "") == sop_uid for r in rows)
        q = pydicom.Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study_uid, series_uid, sop_uid
        return any(str(ds.get("SOPInstanceUID", "")) == sop_uid for ds in self._find(q))
