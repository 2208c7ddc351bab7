"""qrscp's settings: flags, the TOML file, destinations, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aionetdicom import sop_classes
from aionetdicom.apps import common
from aionetdicom.apps.qrscp import _model_and_level, _safe_url, build_parser, load_settings


def settings(tmp_path: Path, *argv: str) -> object:
    args = build_parser().parse_args([*argv])
    return load_settings(args)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = settings(tmp_path, "11112")
    assert args.ae_title == "QRSCP"  # type: ignore[attr-defined]
    assert args.storage == (tmp_path / "qrscp-storage").resolve()  # type: ignore[attr-defined]
    assert args.storage.is_dir()  # type: ignore[attr-defined]
    assert args.database == f"sqlite:///{args.storage / 'index.db'}"  # type: ignore[attr-defined]
    assert args.destinations == {}  # type: ignore[attr-defined]


def test_toml_file_under_flags(tmp_path: Path) -> None:
    config = tmp_path / "qrscp.toml"
    config.write_text(
        'ae_title = "ARCHIVE"\n'
        f'storage = "{tmp_path / "archive"}"\n'
        'database = "postgresql://pacs:secret@db.local/pacs"\n'
        'allowed_calling_aes = ["CT1", "VIEWER"]\n'
        "[destinations.VIEWER]\n"
        'host = "10.0.0.7"\n'
        "port = 11112\n"
        "tls = true\n"
        "[tls]\n"
        'cert = "/etc/qr.pem"\n'
        'ca = "/etc/ca.pem"\n'
    )
    args = settings(tmp_path, "0", "--config", str(config), "--destination", "WS=127.0.0.1:104")
    assert args.ae_title == "ARCHIVE"  # type: ignore[attr-defined]
    assert args.allowed_calling_aet == ["CT1", "VIEWER"]  # type: ignore[attr-defined]
    assert args.destinations == {  # type: ignore[attr-defined]
        "VIEWER": ("10.0.0.7", 11112, True),
        "WS": ("127.0.0.1", 104, False),
    }
    assert args.cert == Path("/etc/qr.pem")  # type: ignore[attr-defined]
    assert args.ca == [Path("/etc/ca.pem")]  # type: ignore[attr-defined]
    assert not args.tls  # type: ignore[attr-defined]  # listen = false: plain TCP
    assert args.database == "postgresql://pacs:secret@db.local/pacs"  # type: ignore[attr-defined]
    flagged = settings(
        tmp_path, "0", "--config", str(config), "-aet", "OTHER", "--database", "sqlite:///x.db"
    )
    assert flagged.ae_title == "OTHER"  # type: ignore[attr-defined]
    assert flagged.database == "sqlite:///x.db"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "text", ["VIEWER", "VIEWER=host", "=h:1", "VIEWER=h:port", "VIEWER=h:1,ssl"]
)
def test_malformed_destination(tmp_path: Path, text: str) -> None:
    with pytest.raises(common.AppError, match="TITLE=HOST:PORT"):
        settings(tmp_path, "0", "-od", str(tmp_path), "--destination", text)


def test_port_from_the_command_line_the_config_or_the_default(tmp_path: Path) -> None:
    config = tmp_path / "port.toml"
    config.write_text("port = 4242\n")
    od = ["-od", str(tmp_path)]
    assert settings(tmp_path, *od).port == 11112  # type: ignore[attr-defined]
    assert settings(tmp_path, *od, "--config", str(config)).port == 4242  # type: ignore[attr-defined]
    assert settings(tmp_path, "104", *od, "--config", str(config)).port == 104  # type: ignore[attr-defined]
    assert settings(tmp_path, "0", *od, "--config", str(config)).port == 0  # type: ignore[attr-defined]
    config.write_text("port = 70000\n")
    with pytest.raises(common.AppError, match="port"):
        settings(tmp_path, *od, "--config", str(config))


def test_dcmtk_tls_pair_serves_the_destinations_too(tmp_path: Path) -> None:
    args = settings(
        tmp_path, "0", "-od", str(tmp_path), "+tls", "q.key", "q.pem", "--destination", "V=h:1,tls"
    )
    assert (args.tls, args.key, args.cert) == (True, Path("q.key"), Path("q.pem"))  # type: ignore[attr-defined]


def test_allowed_peers_setting(tmp_path: Path) -> None:
    config = tmp_path / "peers.toml"
    config.write_text('allowed_peers = ["10.0.0.0/8", "::1"]\n')
    args = settings(tmp_path, "0", "-od", str(tmp_path), "--config", str(config))
    assert [str(n) for n in args.allowed_peer] == ["10.0.0.0/8", "::1/128"]  # type: ignore[attr-defined]
    config.write_text('allowed_peers = ["10.0.0.300"]\n')
    with pytest.raises(common.AppError, match="allowed_peers"):
        settings(tmp_path, "0", "-od", str(tmp_path), "--config", str(config))


def test_tls_destination_flag_and_settings(tmp_path: Path) -> None:
    args = settings(tmp_path, "0", "-od", str(tmp_path), "--destination", "V=h:104,tls")
    assert args.destinations == {"V": ("h", 104, True)}  # type: ignore[attr-defined]
    config = tmp_path / "bad.toml"
    config.write_text('[tls]\ncolour = "blue"\n')
    with pytest.raises(common.AppError, match="unknown tls settings: colour"):
        settings(tmp_path, "0", "-od", str(tmp_path), "--config", str(config))


def test_unknown_setting_and_bad_toml(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('colour = "blue"\n')
    with pytest.raises(common.AppError, match=r"unknown settings.*colour"):
        settings(tmp_path, "0", "--config", str(config))
    config.write_text("ae_title = \n")
    with pytest.raises(common.AppError, match="cannot read --config"):
        settings(tmp_path, "0", "--config", str(config))


def test_missing_worklist_folder(tmp_path: Path) -> None:
    with pytest.raises(common.AppError, match="not a directory"):
        settings(tmp_path, "0", "-od", str(tmp_path), "--worklist", str(tmp_path / "none"))


def test_model_levels() -> None:
    assert _model_and_level(sop_classes.STUDY_ROOT_FIND, "STUDY") == ("STUDY", "STUDY")
    assert _model_and_level(sop_classes.STUDY_ROOT_FIND, "PATIENT") is None
    assert _model_and_level(sop_classes.PATIENT_STUDY_ONLY_GET, "SERIES") is None
    assert _model_and_level(sop_classes.PATIENT_STUDY_ONLY_MOVE, "STUDY") == ("PATIENT", "STUDY")
    assert _model_and_level(sop_classes.PATIENT_ROOT_FIND, None) is None


def test_password_is_not_logged() -> None:
    assert _safe_url("postgresql://pacs:secret@db/pacs") == "postgresql://pacs:***@db/pacs"
    assert _safe_url("sqlite:///a.db") == "sqlite:///a.db"
