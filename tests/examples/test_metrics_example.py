"""examples/metrics.py: DCMTK traffic in, Prometheus text out over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.examples.helpers import DCMTK, HOST, example, make_files, terminate, wait_for_line
from tests.interop.test_echo_dcmtk import free_port, output, run, start_peer, stop

pytestmark = pytest.mark.interop


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def test_metrics_count_dcmtk_traffic(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    scp = start_peer(
        example("metrics", str(port), "--metrics-port", str(metrics_port), "--bind", HOST),
        tmp_path / "metrics.log",
        port=port,
    )
    try:
        wait_for_line(scp, f"metrics on http://{HOST}:{metrics_port}/metrics")
        files = make_files(tmp_path / "in", 3)
        echo = run([f"{DCMTK}echoscu", HOST, str(port)], dcmtk=True)
        assert echo.returncode == 0, output(echo)
        store = run([f"{DCMTK}storescu", HOST, str(port), *map(str, files.values())], dcmtk=True)
        assert store.returncode == 0, output(store)
        text = scrape(metrics_port)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            scrape(metrics_port, "/other")
        assert terminate(scp) == 0, scp.log()
    finally:
        stop(scp)
    assert 'dicom_operations_total{service="C-ECHO",role="SCP",status="success"} 1' in text
    assert 'dicom_operations_total{service="C-STORE",role="SCP",status="success"} 3' in text
    assert 'dicom_operation_seconds_count{service="C-STORE",role="SCP"} 3' in text
    assert "dicom_associations_open 0" in text
    released = 'dicom_associations_closed_total{outcome="released"} '
    assert int(text.split(released)[1].split()[0]) >= 2  # echo and store (and the probe)
    received = int(text.split("\ndicom_bytes_received_total ")[1].split()[0])
    assert received > sum(path.stat().st_size for path in files.values()) - 3 * 1024
