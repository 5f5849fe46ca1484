"""amtlib.dicom.pacs without a PACS server: addresses (DIMSE and DICOMweb, what is read from them, every
refusal naming the address and a remedy, no secret repeated), the HTTP error mapping, credentials from
the environment, the DICOMweb calls against a stand-in client, and the DIMSE calls against a small
pynetdicom SCP on loopback that answers with the statuses a real PACS may give (refusals, warnings,
failures Orthanc never sends). test_predict runs the round trips through a real Orthanc."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests

from amtlib.dicom import pacs
from amtlib.dicom.dicomio import write_ct_series
from amtlib.dicom.pacs import (
    Pacs,
    PacsAddress,
    PacsError,
    RemoteSeries,
    is_pacs_address,
    parse_address,
)
from amtlib.errors import AmtError

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.1.2"


# ------------------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize("text, expected", [
    ("dimse://PACS@pacs.example:104", PacsAddress("dimse", "pacs.example", 104, called_aet="PACS")),
    (f"dimse://ORTHANC@127.0.0.1:4242?StudyInstanceUID={STUDY}&SeriesInstanceUID={SERIES}",
     PacsAddress("dimse", "127.0.0.1", 4242, called_aet="ORTHANC", study_uid=STUDY, series_uid=SERIES)),
    ("DIMSE://My AE_1@Host:11112", PacsAddress("dimse", "host", 11112, called_aet="My AE_1")),  # scheme and host: any case
    ("dicomweb://pacs:8042/dicom-web/", PacsAddress("dicomweb", "pacs", 8042, url="http://pacs:8042/dicom-web")),
    ("dicomwebs://pacs.example/wado/rs", PacsAddress("dicomweb", "pacs.example", 443, url="https://pacs.example/wado/rs")),
    ("https://pacs.example:8443/dicom-web", PacsAddress("dicomweb", "pacs.example", 8443, url="https://pacs.example:8443/dicom-web")),
    (f"http://pacs/dicom-web?StudyInstanceUID={STUDY}", PacsAddress("dicomweb", "pacs", 80, url="http://pacs/dicom-web",
                                                                     study_uid=STUDY)),
])
def test_addresses_are_read_into_protocol_host_port_and_uids(text, expected):
    assert parse_address(text) == expected
    assert is_pacs_address(text)


def test_display_names_the_pacs_as_it_was_addressed():
    assert parse_address("dimse://PACS@pacs:104?StudyInstanceUID=1.2").display() == "dimse://PACS@pacs:104"
    assert parse_address("dicomwebs://pacs/dicom-web/?StudyInstanceUID=1.2").display() == "https://pacs/dicom-web"
    assert Pacs(parse_address("dicomweb://pacs:8042/dicom-web")).name == "http://pacs:8042/dicom-web"


def test_need_study_asks_for_a_study_uid_and_only_then():
    assert parse_address("dicomweb://pacs:8042/dicom-web").study_uid == ""  # pushing needs no study
    for text in ("dicomweb://pacs:8042/dicom-web", f"dimse://PACS@pacs:104?SeriesInstanceUID={SERIES}",
                 "dimse://PACS@pacs:104?StudyInstanceUID="):  # an empty value is no value
        with pytest.raises(PacsError) as err:
            parse_address(text, need_study=True)
        assert err.value.problem == "no StudyInstanceUID given" and "?StudyInstanceUID=" in err.value.remedy
    assert parse_address(f"dimse://PACS@pacs:104?StudyInstanceUID={STUDY}", need_study=True).study_uid == STUDY


@pytest.mark.parametrize("text, shown, problem, remedy", [
    ("dimse://pacs:104", "dimse://pacs:104", "called AE title '' missing or invalid", "dimse://AET@HOST:PORT"),
    ("dimse://" + "A" * 17 + "@pacs:104", "dimse://pacs:104", "called AE title 'AAAAAAAAAAAAAAAAA' missing", "AET@HOST"),
    ("dimse://PACS@pacs", "dimse://pacs", "no port", "104 or 11112"),
    ("dimse://PACS@pacs:70000", "dimse://pacs", "the port '70000' is not a number between 0 and 65535", "dimse://PACS@pacs:104"),
    ("dicomweb://pacs:80x/dicom-web", "dicomweb://pacs/dicom-web", "the port '80x' is not a number", "fix the address"),
    ("dicomweb:///dicom-web", "dicomweb:///dicom-web", "no host in the address", "dicomweb://pacs:8042/dicom-web"),
    ("ftp://pacs/x", "ftp://pacs/x", "unknown scheme 'ftp'", "dicomweb://, dicomwebs://, https:// or dimse://"),
    ("dimse://PACS@pacs:104?StudyInstanceUID=1.2.abc", "dimse://pacs:104", "StudyInstanceUID '1.2.abc' is not a DICOM UID",
     "copy the UID"),
    ("dimse://PACS@pacs:104?SeriesInstanceUID=1..2", "dimse://pacs:104", "SeriesInstanceUID '1..2' is not a DICOM UID", "UID"),
    ("dimse://PACS@pacs:104?StudyInstanceUID=" + "1." * 32 + "1", "dimse://pacs:104", "is not a DICOM UID (digits and dots, at most 64)",
     "UID"),
    ("dicomweb://pacs/dicom-web?PatientID=P1&limit=3", "dicomweb://pacs/dicom-web", "unknown query parameter(s) PatientID, limit",
     "?StudyInstanceUID=...&SeriesInstanceUID=..."),
])
def test_a_bad_address_is_a_pacs_error_naming_it_and_the_remedy(text, shown, problem, remedy):
    with pytest.raises(PacsError) as err:
        parse_address(text)
    assert isinstance(err.value, AmtError)  # the guard prints it as one line, exit code 2
    assert err.value.file == shown and problem in err.value.problem and remedy in err.value.remedy


@pytest.mark.parametrize("text", ["dicomweb://amt:hunter2@pacs:8042/dicom-web", "https://amt@pacs/dicom-web",
                                  "dimse://PACS:hunter2@pacs:104", "dicomweb://amt:hunter2@pacs:8o42/dicom-web"])
def test_credentials_in_an_address_are_refused_and_never_repeated(text):
    with pytest.raises(PacsError) as err:
        parse_address(text)
    said = str(err.value)
    assert "hunter2" not in said and "amt@" not in said and "amt:" not in said
    if "8o42" not in text:  # a bad port is found first; otherwise the credentials are the problem
        assert "credentials in the address are refused" in said
        assert pacs.TOKEN_ENV in err.value.remedy and pacs.USER_ENV in err.value.remedy and ".netrc" in err.value.remedy


def test_a_query_value_is_not_repeated_in_the_refusal():
    with pytest.raises(PacsError) as err:
        parse_address("dicomweb://pacs/dicom-web?access_token=s3cret&StudyInstanceUID=1.2")
    assert "access_token" in str(err.value) and "s3cret" not in str(err.value)


@pytest.mark.parametrize("text, expected", [
    ("dicomweb://pacs/x", True), ("DICOMWEBS://pacs/x", True), ("https://pacs/x", True), ("http://pacs/x", True),
    ("dimse://A@pacs:104", True), ("ftp://pacs/x", False), ("/data/dicom/study1", False), ("dicomweb:/pacs", False),
    ("runs/demo/dimse", False), ("dimse", False), (Path("dimse://x"), False), ("C:\\dicom\\study", False),
])
def test_is_pacs_address_by_scheme(text, expected):
    assert is_pacs_address(text) is expected


def test_calling_ae_title_is_checked():
    address = parse_address("dimse://PACS@pacs:104")
    for bad in ("", "A" * 17, "AM\\T"):
        with pytest.raises(PacsError) as err:
            Pacs(address, calling_aet=bad)
        assert err.value.file == "--calling-aet" and "is not an AE title" in err.value.problem
    assert Pacs(address, calling_aet="A" * 16).calling_aet == "A" * 16
    assert Pacs(address).calling_aet == pacs.DEFAULT_CALLING_AET == "AMT"


def test_status_of_a_response():
    ok, warn = pydicom.Dataset(), pydicom.Dataset()
    ok.Status, warn.Status = 0x0000, 0xB000
    assert Pacs._status(ok) == 0 and Pacs._status(warn) == 0xB000
    assert Pacs._status(None) == -1 and Pacs._status(pydicom.Dataset()) == -1  # no answer, or one without a status


# ------------------------------------------------------------------------------------------ DICOMweb


WEB = "dicomweb://pacs.example:8042/dicom-web"


def _http_error(code: int | None) -> requests.exceptions.HTTPError:
    response = None
    if code is not None:
        response = requests.Response()
        response.status_code = code
    return requests.exceptions.HTTPError("refused", response=response)


@pytest.mark.parametrize("exc, problem, remedy", [
    (_http_error(401), "QIDO-RS series query: refused with HTTP 401", f"give credentials ({pacs.TOKEN_ENV}, or {pacs.USER_ENV}"),
    (_http_error(403), "refused with HTTP 403", "ask the PACS administrator for access"),
    (_http_error(404), "refused with HTTP 404", "check the address's path and UIDs"),
    (_http_error(503), "refused with HTTP 503", "check the PACS's log"),
    (_http_error(None), "refused with HTTP ?", "check the PACS's log"),
    (requests.exceptions.SSLError("bad cert"), "the PACS's TLS certificate is not trusted", "REQUESTS_CA_BUNDLE"),
    (requests.exceptions.ConnectTimeout("slow"), "cannot reach the PACS (ConnectTimeout)", "check the host and port"),
    (requests.exceptions.ConnectionError("refused"), "cannot reach the PACS (ConnectionError)", "that the PACS is running"),
])
def test_http_failures_become_one_pacs_error_naming_the_request(exc, problem, remedy):
    p = Pacs(parse_address(WEB))

    def call():
        raise exc

    with pytest.raises(PacsError) as err:
        p._http("QIDO-RS series query", call)
    assert err.value.file == "http://pacs.example:8042/dicom-web"
    assert err.value.problem.startswith("QIDO-RS series query: ") and problem in err.value.problem
    assert remedy in err.value.remedy
    assert err.value.__suppress_context__  # no chained traceback from requests


def test_http_passes_an_answer_through_and_other_errors_unchanged():
    p = Pacs(parse_address(WEB))
    assert p._http("x", lambda: [1, 2]) == [1, 2]
    with pytest.raises(KeyError):
        p._http("x", lambda: {}["missing"])


@pytest.mark.parametrize("env, header, auth", [
    ({pacs.TOKEN_ENV: "tok-123"}, "Bearer tok-123", None),
    ({pacs.USER_ENV: "reader", pacs.PASSWORD_ENV: "pw"}, None, ("reader", "pw")),
    ({pacs.USER_ENV: "reader"}, None, ("reader", "")),
    ({pacs.TOKEN_ENV: "tok-123", pacs.USER_ENV: "reader", pacs.PASSWORD_ENV: "pw"}, "Bearer tok-123", None),  # the token wins
    ({}, None, None),  # requests then asks ~/.netrc
])
def test_credentials_come_from_the_environment(monkeypatch, env, header, auth):
    for name in (pacs.TOKEN_ENV, pacs.USER_ENV, pacs.PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    p = Pacs(parse_address("dicomwebs://pacs.example/dicom-web"), timeout_s=7.0)
    client = p._web()
    assert client is p._web()  # one client, one session
    assert client.base_url == "https://pacs.example/dicom-web"
    session = client._session
    assert session.headers.get("Authorization") == header and session.auth == auth
    assert session.trust_env


def _ct_files(folder: Path, n: int = 3, seed: str = "pacs-test") -> list[Path]:
    volume = np.arange(n * 16, dtype=np.float32).reshape(n, 4, 4)
    return write_ct_series(volume, (2.0, 1.0, 1.0), folder, {"PatientID": "P-PACS"}, seed)


def _json(**values: Any) -> dict[str, Any]:
    ds = pydicom.Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    return ds.to_json_dict()


@dataclass
class FakeWeb:
    """A stand-in for dicomweb_client's DICOMwebClient: records the calls, answers what it is given."""

    series_rows: list[dict] = field(default_factory=list)
    instances: list[pydicom.Dataset] = field(default_factory=list)
    store_answer: Any = None
    listed: list[dict] = field(default_factory=list)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def search_for_series(self, **kw):
        self.calls.append(("series", kw))
        return self.series_rows

    def iter_series(self, **kw):
        self.calls.append(("iter", kw))
        yield from self.instances

    def store_instances(self, datasets):
        self.calls.append(("store", {"uids": [str(d.SOPInstanceUID) for d in datasets]}))
        return self.store_answer

    def search_for_instances(self, **kw):
        self.calls.append(("instances", kw))
        return self.listed


def _web_pacs(fake: FakeWeb) -> Pacs:
    p = Pacs(parse_address(WEB))
    p._client = fake
    return p


def test_dicomweb_find_series_reads_the_rows_and_drops_those_without_a_series_uid():
    fake = FakeWeb(series_rows=[
        _json(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, Modality="CT", SeriesDescription="chest 1mm",
              NumberOfSeriesRelatedInstances=42),
        _json(SeriesInstanceUID=SERIES + ".9", Modality="SR"),  # no study UID echoed, no count
        _json(StudyInstanceUID=STUDY, Modality="CT"),  # no series UID: nothing to retrieve
    ])
    found = _web_pacs(fake).find_series(STUDY)
    assert found == [RemoteSeries(STUDY, SERIES, "CT", "chest 1mm", 42), RemoteSeries(STUDY, SERIES + ".9", "SR", "", None)]
    assert fake.calls == [("series", {"study_instance_uid": STUDY, "search_filters": None,
                                      "fields": ["Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances"]})]
    _web_pacs(fake).find_series(STUDY, SERIES)
    assert fake.calls[-1][1]["search_filters"] == {"SeriesInstanceUID": SERIES}


def test_dicomweb_retrieve_names_files_by_arrival_not_by_uid(tmp_path):
    files = _ct_files(tmp_path / "src")
    sent = [pydicom.dcmread(f) for f in reversed(files)]  # the PACS's order, not the slice order
    fake = FakeWeb(instances=sent)
    got = _web_pacs(fake).retrieve_series(STUDY, SERIES, tmp_path / "in" / "series")
    assert [p.name for p in got] == ["00001.dcm", "00002.dcm", "00003.dcm"]
    assert [pydicom.dcmread(p).SOPInstanceUID for p in got] == [d.SOPInstanceUID for d in sent]
    np.testing.assert_array_equal(pydicom.dcmread(got[0]).pixel_array, sent[0].pixel_array)
    assert fake.calls == [("iter", {"study_instance_uid": STUDY, "series_instance_uid": SERIES})]
    with pytest.raises(PacsError) as err:
        _web_pacs(FakeWeb()).retrieve_series(STUDY, SERIES, tmp_path / "empty")
    assert err.value.problem == f"series {SERIES}: the PACS sent no instance"


def test_dicomweb_store_reads_the_failed_sop_sequence(tmp_path):
    files = _ct_files(tmp_path / "src", n=2)
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    answer, item = pydicom.Dataset(), pydicom.Dataset()
    item.ReferencedSOPInstanceUID, item.FailureReason = uids[1], 0xA700
    answer.FailedSOPSequence = [item]
    fake = FakeWeb(store_answer=answer)
    with pytest.raises(PacsError) as err:
        _web_pacs(fake).store(files)
    assert err.value.problem == f"{files[1]} (SOPInstanceUID {uids[1]}): store refused, failure reason 0xA700"
    assert "the local files stay" in err.value.remedy
    assert [c for c in fake.calls if c[0] == "store"] == [("store", {"uids": [u]}) for u in uids]  # one STOW-RS per file


def test_dicomweb_store_is_confirmed_only_by_the_instance_itself(tmp_path):
    files = _ct_files(tmp_path / "src", n=2)
    first = pydicom.dcmread(files[0])
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    fake = FakeWeb(store_answer=pydicom.Dataset(), listed=[_json(SOPInstanceUID=u) for u in uids])
    results = _web_pacs(fake).store(files)
    assert [(r.path, r.sop_uid, r.status, r.confirmed) for r in results] == [(str(f), u, "stored", True) for f, u in zip(files, uids)]
    assert results[0].sop_class == pacs.CT_CLASSES[0] and results[0].series_uid == str(first.SeriesInstanceUID)
    queries = [kw for what, kw in fake.calls if what == "instances"]
    assert queries[0] == {"study_instance_uid": str(first.StudyInstanceUID), "series_instance_uid": str(first.SeriesInstanceUID),
                          "search_filters": {"SOPInstanceUID": uids[0]}}
    # a PACS that ignores the filter and lists some other instance has not kept ours
    fake = FakeWeb(store_answer=None, listed=[_json(SOPInstanceUID=uids[1])])
    with pytest.raises(PacsError) as err:
        _web_pacs(fake).store(files)
    assert err.value.problem == (f"{files[0]} (SOPInstanceUID {uids[0]}): the store answered stored "
                                 "but a query does not find the object")


# ------------------------------------------------------------------------------------------ DIMSE


@dataclass
class Scp:
    """What the loopback SCP answers (set by each test) and what it was sent."""

    port: int = 0
    find_answers: list = field(default_factory=list)
    store_status: int = 0x0000
    stored: dict = field(default_factory=dict)
    get_datasets: list = field(default_factory=list)
    get_failure: int = 0
    queries: list = field(default_factory=list)

    def reset(self) -> Scp:
        port = self.port
        self.__init__()
        self.port = port
        return self

    def address(self, aet: str = "PACS") -> PacsAddress:
        return parse_address(f"dimse://{aet}@127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def _scp_server():
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    state = Scp()

    def on_find(event):
        q = event.identifier
        state.queries.append(q)
        if q.QueryRetrieveLevel == "IMAGE":
            for uid in state.stored:
                if uid == q.SOPInstanceUID:
                    hit = pydicom.Dataset()
                    hit.QueryRetrieveLevel, hit.SOPInstanceUID = "IMAGE", uid
                    yield 0xFF00, hit
            yield 0x0000, None
            return
        yield from state.find_answers

    def on_store(event):
        ds = event.dataset
        if state.store_status in (0x0000, 0xB000, 0xB006, 0xB007):
            state.stored[str(ds.SOPInstanceUID)] = ds
        return state.store_status

    def on_get(event):
        state.queries.append(event.identifier)
        yield len(state.get_datasets) or 1
        for ds in state.get_datasets:
            yield 0xFF00, ds
        if state.get_failure:
            yield state.get_failure, None

    ae = AE("PACS")
    ae.require_called_aet = True
    ae.require_calling_aet = ["AMT"]
    ae.add_supported_context(FIND)
    ae.add_supported_context(GET)
    for c in pacs.CT_CLASSES:
        ae.add_supported_context(c, scu_role=True, scp_role=True)
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_STORE, on_store), (evt.EVT_C_GET, on_get)])
    state.port = int(server.server_address[1])
    yield state
    server.shutdown()


@pytest.fixture()
def scp(_scp_server):
    return _scp_server.reset()


def _series_answer(uid: str, modality: str, description: str | None = None, count: Any = None) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.QueryRetrieveLevel, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "SERIES", STUDY, uid, modality
    if description is not None:
        ds.SeriesDescription = description
    if count is not None:
        ds.NumberOfSeriesRelatedInstances = count
    return ds


def test_dimse_find_series_sends_a_series_query_and_reads_the_answers(scp):
    scp.find_answers = [(0xFF00, _series_answer(SERIES, "CT", "chest", 42)), (0xFF01, _series_answer(SERIES + ".9", "SR", "", "")),
                        (0xFF00, _series_answer("", "CT")), (0x0000, None)]
    found = Pacs(scp.address(), timeout_s=10).find_series(STUDY)
    assert found == [RemoteSeries(STUDY, SERIES, "CT", "chest", 42), RemoteSeries(STUDY, SERIES + ".9", "SR", "", None)]
    (q,) = scp.queries
    assert q.QueryRetrieveLevel == "SERIES" and q.StudyInstanceUID == STUDY and q.SeriesInstanceUID in ("", None)
    assert {"Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances"} <= set(q.dir())  # asked to be returned
    scp.find_answers = [(0x0000, None)]
    assert Pacs(scp.address(), timeout_s=10).find_series(STUDY, SERIES) == []
    assert scp.queries[-1].SeriesInstanceUID == SERIES


def test_dimse_find_failure_status_is_named(scp):
    scp.find_answers = [(0xC000, None)]
    with pytest.raises(PacsError) as err:
        Pacs(scp.address(), timeout_s=10).find_series(STUDY)
    assert err.value.file == f"dimse://PACS@127.0.0.1:{scp.port}"
    assert err.value.problem == "C-FIND failed with status 0xC000" and "allows queries from our AE title" in err.value.remedy


@pytest.mark.parametrize("called, calling", [("OTHER", "AMT"), ("PACS", "STRANGER")])
def test_dimse_rejected_association_names_our_ae_title(scp, called, calling):
    with pytest.raises(PacsError) as err:
        Pacs(scp.address(called), calling_aet=calling, timeout_s=10).find_series(STUDY)
    assert err.value.file == f"dimse://{called}@127.0.0.1:{scp.port}"
    assert err.value.problem == f"rejected the association (our AE title {calling})" and "--calling-aet" in err.value.remedy


def test_dimse_retrieve_keeps_every_instance_in_arrival_order(scp, tmp_path):
    files = _ct_files(tmp_path / "src")
    scp.get_datasets = [pydicom.dcmread(f) for f in (files[2], files[0], files[1])]
    got = Pacs(scp.address(), timeout_s=10).retrieve_series(STUDY, SERIES, tmp_path / "in")
    assert [p.name for p in got] == ["00001.dcm", "00002.dcm", "00003.dcm"]
    assert [pydicom.dcmread(p).SOPInstanceUID for p in got] == [d.SOPInstanceUID for d in scp.get_datasets]
    np.testing.assert_array_equal(pydicom.dcmread(got[0]).pixel_array, scp.get_datasets[0].pixel_array)
    (q,) = scp.queries
    assert (q.QueryRetrieveLevel, q.StudyInstanceUID, q.SeriesInstanceUID) == ("SERIES", STUDY, SERIES)


def test_dimse_retrieve_failure_status_is_named(scp, tmp_path):
    scp.get_failure = 0xA702
    with pytest.raises(PacsError) as err:
        Pacs(scp.address(), timeout_s=10).retrieve_series(STUDY, SERIES, tmp_path / "in")
    assert err.value.problem == f"C-GET of series {SERIES} ended with status 0xA702"
    assert "allows retrieval by our AE title" in err.value.remedy


def test_dimse_store_with_a_warning_is_kept_and_confirmed_by_an_image_query(scp, tmp_path):
    files = _ct_files(tmp_path / "src", n=2)
    scp.store_status = 0xB007
    results = Pacs(scp.address(), timeout_s=10).store(files)
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    assert [(r.sop_uid, r.status, r.confirmed) for r in results] == [(u, "stored with warning 0xB007", True) for u in uids]
    assert sorted(scp.stored) == sorted(uids)
    assert [(q.QueryRetrieveLevel, q.SOPInstanceUID) for q in scp.queries] == [("IMAGE", u) for u in uids]
    scp.store_status = 0x0000
    assert [r.status for r in Pacs(scp.address(), timeout_s=10).store(files[:1])] == ["stored"]


def test_dimse_store_refused_names_the_file_and_status(scp, tmp_path):
    files = _ct_files(tmp_path / "src", n=2)
    scp.store_status = 0xA700
    with pytest.raises(PacsError) as err:
        Pacs(scp.address(), timeout_s=10).store(files)
    uid = str(pydicom.dcmread(files[0]).SOPInstanceUID)
    assert err.value.problem == f"{files[0]} (SOPInstanceUID {uid}): C-STORE refused with status 0xA700"
    assert "the local files stay" in err.value.remedy and scp.stored == {} and scp.queries == []


def test_dimse_store_of_a_class_the_pacs_does_not_take(scp, tmp_path):
    """A SEG and an RTSTRUCT go in one association; a PACS may accept one class and not the other. Here
    a CT (accepted) and an MR (not offered by the SCP): the CT is stored, the MR named with its class."""
    ct, mr = _ct_files(tmp_path / "src", n=2)
    ds = pydicom.dcmread(mr)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.save_as(mr)
    with pytest.raises(PacsError) as err:
        Pacs(scp.address(), timeout_s=10).store([ct, mr])
    assert err.value.problem.startswith(f"{mr}: the PACS accepts no 1.2.840.10008.5.1.4.1.1.4 storage")
    assert "accept this storage class" in err.value.remedy
    assert list(scp.stored) == [str(pydicom.dcmread(ct).SOPInstanceUID)]



def test_dimse_store_to_a_pacs_that_takes_none_of_the_classes_says_so(scp, tmp_path):
    """Only MR objects, which the SCP does not offer: pynetdicom aborts an association with no accepted
    context. That is a PACS that answered and refuses the class, not one that cannot be reached."""
    files = _ct_files(tmp_path / "src", n=2)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
        ds.save_as(f)
    with pytest.raises(PacsError) as err:
        Pacs(scp.address(), timeout_s=10).store(files)
    assert err.value.problem == "answered, but accepts none of the services asked for (MR Image Storage)"
    assert err.value.remedy == "ask the PACS administrator to accept them from our AE title AMT" and scp.stored == {}


@pytest.mark.parametrize("text, url, shown", [
    ("dicomweb://[::1]:8042/dicom-web", "http://[::1]:8042/dicom-web", "dicomweb://[::1]:8042/dicom-web"),
    ("https://[fe80::1]/wado", "https://[fe80::1]/wado", "https://[fe80::1]/wado"),
])
def test_an_ipv6_dicomweb_address_keeps_its_brackets(text, url, shown):
    a = parse_address(text)
    assert (a.host, a.url) == (url.split("[")[1].split("]")[0], url)
    with pytest.raises(PacsError) as err:
        parse_address(text.replace("/dicom-web", "/dicom-web?Bogus=1").replace("/wado", "/wado?Bogus=1"))
    assert err.value.file == shown


# ------------------------------------------------------------------------------------------ a real Orthanc


def test_both_protocols_list_and_retrieve_the_same_series_from_a_real_orthanc(orthanc, monkeypatch, tmp_path):
    """test_predict goes through ``amt predict``; here the client's own answers: one study with two CT
    series (3 and 2 slices), listed alike over DICOMweb and DIMSE, one series by its UID, each retrieved
    whole, and an instance Orthanc does not hold is not found."""
    import pacs_fixtures

    monkeypatch.setenv(pacs.USER_ENV, pacs_fixtures.USER)
    monkeypatch.setenv(pacs.PASSWORD_ENV, pacs_fixtures.PASSWORD)
    monkeypatch.delenv(pacs.TOKEN_ENV, raising=False)
    orthanc.clear()
    first = _ct_files(tmp_path / "a", n=3, seed="orthanc-a")
    study = str(pydicom.dcmread(first[0]).StudyInstanceUID)
    volume = np.zeros((2, 4, 4), np.float32)
    second = write_ct_series(volume, (2.0, 1.0, 1.0), tmp_path / "b", {"PatientID": "P-PACS", "StudyInstanceUID": study,
                                                                       "SeriesDescription": "second"}, "orthanc-b")
    orthanc.upload(first + second)
    uids = {str(pydicom.dcmread(f[0]).SeriesInstanceUID): sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in f)
            for f in (first, second)}
    web, dimse = Pacs(parse_address(orthanc.dicomweb), timeout_s=10), Pacs(parse_address(orthanc.dimse), timeout_s=10)
    listed = {name: sorted(p.find_series(study), key=lambda s: s.series_uid) for name, p in (("web", web), ("dimse", dimse))}
    assert listed["web"] == listed["dimse"]
    assert [(s.study_uid, s.series_uid, s.modality, s.n_instances) for s in listed["web"]] == \
        sorted((study, uid, "CT", len(sop)) for uid, sop in uids.items())
    assert "second" in [s.description for s in listed["web"]]
    one = str(pydicom.dcmread(second[0]).SeriesInstanceUID)
    for p in (web, dimse):
        assert [s.series_uid for s in p.find_series(study, one)] == [one]
        got = p.retrieve_series(study, one, tmp_path / p.address.protocol)
        assert [g.name for g in got] == ["00001.dcm", "00002.dcm"]
        assert sorted(str(pydicom.dcmread(g).SOPInstanceUID) for g in got) == uids[one]
        assert p.instance_exists(study, one, uids[one][0])
        assert not p.instance_exists(study, one, uids[one][0] + ".7")
    orthanc.clear()
