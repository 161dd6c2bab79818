"""`serving.ingress: direct`: the ingress replica answers HTTP itself, without Serve's proxy.

Serve reads the mode when its controller starts, so this runs `shipyard serve` in a process of
its own, with its own embedded cluster, as a user would; the session's Serve stays as it is.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from shipyard.cluster.network import free_ports

pytestmark = pytest.mark.slow
START_S = 180.0
STOP_S = 90.0


def _wait_for_urls(lines: queue.Queue, log) -> tuple[str, str]:
    """The direct URL and the proxy's, from the foreground `shipyard serve`'s output."""
    deadline, direct = time.monotonic() + START_S, None
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:  # the process ended
            break
        log.write(line)
        direct = direct or re.match(r"serving .* at (http://\S+/)$", line.rstrip())
        proxy = re.search(r"ingress:\s+direct \(.* at (http://\S+/)\)", line)
        if direct and proxy:
            return direct.group(1), proxy.group(1)
    log.flush()
    raise AssertionError(f"no direct-ingress URL within {START_S:.0f} s (see {log.name})")


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_direct_ingress_serves_the_api_on_the_replicas_own_port(registered, tmp_path):
    project = registered.project
    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = [sys.executable, "-m", "shipyard.cli", "serve", str(project.source_file)]
    args += ["--serving.ingress", "direct", "--serving.port", str(port)]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    with open(tmp_path / "serve.log", "w") as log:
        try:
            direct, proxy = _wait_for_urls(lines, log)
            assert proxy == f"http://127.0.0.1:{port}/"
            assert direct.startswith("http://127.0.0.1:") and direct != proxy

            answer = requests.post(
                direct + "v1/predict", json={"inputs": ["win a free prize now"]}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            (prediction,) = body["predictions"]
            assert prediction["model"]["version"] == registered.champion
            assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-4
            assert answer.headers["x-request-id"] == body["request_id"]

            bad = requests.post(direct + "v1/predict", json={"inputs": [""]}, timeout=30)
            assert bad.status_code == 422 and "empty" in bad.json()["error"]
            # Serve's proxy still answers, for clients configured with serving.port.
            assert requests.get(proxy + "healthz", timeout=30).json() == {"status": "ok"}
        finally:
            started = time.monotonic()
            stop = subprocess.run(
                [sys.executable, "-m", "shipyard.cli", "serve", "down", str(project.source_file)],
                capture_output=True,
                text=True,
                env=env,
                timeout=STOP_S + 30,
            )
            try:
                proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
            while (line := lines.get(timeout=30)) is not None:
                log.write(line)
    assert stop.returncode == 0, stop.stderr
    assert proc.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    print(f"stopped in {time.monotonic() - started:.1f} s")
