"""The apps' TLS options: what they build and what they refuse."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from aionetdicom.apps import common, echoscu, findscu, storescp


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def test_server_options(files: dict[str, Path]) -> None:
    parser = storescp.build_parser()
    flags = ["--cert", str(files["cert"]), "--key", str(files["key"])]
    args = parser.parse_args(["0", "--tls", *flags, "--ca", str(files["ca"])])
    context = common.tls_context(args, server=True)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    args = parser.parse_args(
        ["0", "--tls", *flags, "--ca", str(files["ca"]), "--optional-client-cert"]
    )
    assert common.tls_context(args, server=True).verify_mode == ssl.CERT_OPTIONAL  # type: ignore[union-attr]
    args = parser.parse_args(["0", "--tls", *flags])
    assert common.tls_context(args, server=True).verify_mode == ssl.CERT_NONE  # type: ignore[union-attr]
    dcmtk = parser.parse_args(
        ["0", "+tls", str(files["key"]), str(files["cert"]), "+cf", str(files["ca"])]
    )
    assert common.tls_context(dcmtk, server=True).verify_mode == ssl.CERT_REQUIRED  # type: ignore[union-attr]
    assert common.tls_context(parser.parse_args(["0"]), server=True) is None


def test_client_options(files: dict[str, Path]) -> None:
    args = echoscu.build_parser().parse_args(["h", "1", "--tls", "--ca", str(files["ca"])])
    context = common.tls_context(args, server=False)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert not context.check_hostname
    args = echoscu.build_parser().parse_args(["h", "1", "--tls", "--no-verify-peer"])
    assert common.tls_context(args, server=False).verify_mode == ssl.CERT_NONE  # type: ignore[union-attr]
    args = findscu.build_parser().parse_args(
        ["h", "1", "--tls", "--cert", str(files["cert"]), "--private-key", str(files["key"]),
         "-k", "PatientName=X"]
    )  # fmt: skip
    assert common.tls_context(args, server=False) is not None
    assert args.keys == ["PatientName=X"]  # -k stays the query key
    assert args.key == files["key"]


def test_refusals(files: dict[str, Path], tmp_path: Path) -> None:
    parser = storescp.build_parser()
    with pytest.raises(common.AppError, match="needs --cert"):
        common.tls_context(parser.parse_args(["0", "--tls"]), server=True)
    with pytest.raises(common.AppError, match="need --tls"):
        common.tls_context(parser.parse_args(["0", "--cert", str(files["cert"])]), server=True)
    missing = parser.parse_args(["0", "--tls", "--cert", str(tmp_path / "none.pem")])
    with pytest.raises(common.AppError, match="cannot set up TLS"):
        common.tls_context(missing, server=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    bad_ca = parser.parse_args(["0", "--tls", "--cert", str(files["cert"]), "--key",
                                str(files["key"]), "--ca", str(garbage)])  # fmt: skip
    with pytest.raises(common.AppError, match="cannot set up TLS"):
        common.tls_context(bad_ca, server=True)
