"""DICOM TLS against DCMTK (Debian's build has ``+tls``): both directions, mutual
authentication, and qrscp moving to a TLS destination. Certificates from trustme."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import trustme

from tests.dicom_files import make_ct, write_file
from tests.interop.test_echo_dcmtk import free_port, our_app, output, run, start_peer, stop

pytestmark = pytest.mark.interop

HOST = "127.0.0.1"
DCMTK = "/usr/bin/"


@dataclass
class Party:
    cert: Path
    key: Path


@dataclass
class PKI:
    ca: Path
    server: Party
    client: Party
    stranger: Party  # issued by another CA


def _party(ca: trustme.CA, folder: Path, name: str) -> Party:
    leaf = ca.issue_cert(HOST, "localhost", common_name=name)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return Party(cert, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other = trustme.CA(key_type=trustme.KeyType.RSA)
    return PKI(
        folder / "ca.pem",
        _party(ca, folder, "server"),
        _party(ca, folder, "client"),
        _party(other, folder, "stranger"),
    )


def dcmtk_tls(party: Party, ca: Path) -> list[str]:
    return ["+tls", str(party.key), str(party.cert), "+cf", str(ca)]


def our_tls(party: Party, ca: Path, key: str = "--key") -> list[str]:
    """Our TLS flags (findscu, getscu and movescu spell the key ``--private-key``)."""
    return ["--tls", "--cert", str(party.cert), key, str(party.key), "--ca", str(ca)]


def test_dcmtk_storescu_to_our_storescp(pki: PKI, tmp_path: Path) -> None:
    """DCMTK echoscu and storescu (+tls, client certificate) into our storescp --tls;
    a DCMTK client with a certificate from another CA is refused."""
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    scp = start_peer(
        our_app(
            "storescp", str(port), "--bind", HOST, "-od", str(out), "--max-runtime", "60",
            *our_tls(pki.server, pki.ca),
        ),
        tmp_path / "storescp.log",
        port=port,
    )  # fmt: skip
    try:
        echo = run([f"{DCMTK}echoscu", *dcmtk_tls(pki.client, pki.ca), HOST, str(port)], dcmtk=True)
        assert echo.returncode == 0, output(echo) + scp.log()
        ds = make_ct(seed=3)
        path = write_file(ds, tmp_path / "ct.dcm")
        store = run(
            [f"{DCMTK}storescu", *dcmtk_tls(pki.client, pki.ca), HOST, str(port), str(path)],
            dcmtk=True,
        )
        assert store.returncode == 0, output(store) + scp.log()
        stranger = run(
            [f"{DCMTK}echoscu", *dcmtk_tls(pki.stranger, pki.ca), HOST, str(port)], dcmtk=True
        )
        assert stranger.returncode != 0, output(stranger)
        again = run(
            [f"{DCMTK}echoscu", *dcmtk_tls(pki.client, pki.ca), HOST, str(port)], dcmtk=True
        )
        assert again.returncode == 0, output(again) + scp.log()
    finally:
        stop(scp)
    stored = list(out.rglob("*.dcm"))
    assert [pydicom.dcmread(p).SOPInstanceUID for p in stored] == [ds.SOPInstanceUID]
    assert "(TLS)" in scp.log()


def test_our_storescu_to_dcmtk_storescp(pki: PKI, tmp_path: Path) -> None:
    """Our echoscu and storescu --tls into DCMTK storescp +tls (which requires a client
    certificate): with ours it works, without one it fails."""
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    scp = start_peer(
        [f"{DCMTK}storescp", *dcmtk_tls(pki.server, pki.ca), "-od", str(out), str(port)],
        tmp_path / "storescp.log",
        port=port,
        env={"TCP_NODELAY": "1"},
    )
    try:
        ds = make_ct(seed=4)
        path = write_file(ds, tmp_path / "ct.dcm")
        echo = run(our_app("echoscu", HOST, str(port), *our_tls(pki.client, pki.ca)))
        assert echo.returncode == 0, output(echo) + scp.log()
        store = run(our_app("storescu", HOST, str(port), str(path), *our_tls(pki.client, pki.ca)))
        assert store.returncode == 0, output(store) + scp.log()
        anonymous = run(our_app("echoscu", HOST, str(port), "--tls", "--ca", str(pki.ca)))
        assert anonymous.returncode != 0, output(anonymous)
        plain = run(our_app("echoscu", HOST, str(port)))
        assert plain.returncode != 0, output(plain)
    finally:
        stop(scp)
    received = [pydicom.dcmread(p).SOPInstanceUID for p in out.iterdir()]
    assert received == [ds.SOPInstanceUID]


def test_qrscp_over_tls_moves_to_a_tls_destination(pki: PKI, tmp_path: Path) -> None:
    """qrscp listening with TLS: DCMTK storescu +tls stores, DCMTK findscu +tls finds,
    our movescu --tls (DCMTK's movescu has no TLS) moves the study to a DCMTK
    storescp +tls (a ``,tls`` destination)."""
    moved = tmp_path / "moved"
    moved.mkdir()
    dest_port = free_port()
    destination = start_peer(
        [f"{DCMTK}storescp", *dcmtk_tls(pki.server, pki.ca), "-aet", "TLSDEST", "-od",
         str(moved), str(dest_port)],
        tmp_path / "dest.log",
        port=dest_port,
        env={"TCP_NODELAY": "1"},
    )  # fmt: skip
    port = free_port()
    qrscp = start_peer(
        our_app(
            "qrscp", str(port), "--bind", HOST, "-od", str(tmp_path / "storage"),
            "--destination", f"TLSDEST={HOST}:{dest_port},tls", "--max-runtime", "60",
            *our_tls(pki.server, pki.ca),
        ),
        tmp_path / "qrscp.log",
        port=port,
    )  # fmt: skip
    try:
        ds = make_ct(seed=5)
        path = write_file(ds, tmp_path / "ct.dcm")
        tls = dcmtk_tls(pki.client, pki.ca)
        store = run(
            [f"{DCMTK}storescu", *tls, "-aec", "QRSCP", HOST, str(port), str(path)], dcmtk=True
        )
        assert store.returncode == 0, output(store) + qrscp.log()
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ds.StudyInstanceUID}"]
        find = run(
            [f"{DCMTK}findscu", "-S", *tls, "-aec", "QRSCP", "-X", "-od", str(tmp_path), *keys,
             HOST, str(port)],
            dcmtk=True,
        )  # fmt: skip
        assert find.returncode == 0, output(find) + qrscp.log()
        assert len(list(tmp_path.glob("rsp*.dcm"))) == 1
        move = run(
            our_app("movescu", HOST, str(port), "-S", "-aec", "QRSCP", "-aem", "TLSDEST", *keys,
                    *our_tls(pki.client, pki.ca, "--private-key"))
        )  # fmt: skip
        assert move.returncode == 0, output(move) + qrscp.log()
    finally:
        stop(qrscp)
        stop(destination)
    received = [pydicom.dcmread(p).SOPInstanceUID for p in moved.iterdir()]
    assert received == [ds.SOPInstanceUID], qrscp.log() + destination.log()
