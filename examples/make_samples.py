"""Rebuild the Marketplace input and output samples in examples/samples/ from sample_input/.

Run from the repository root: ``python examples/make_samples.py``. It packs ``sample_input/`` into
``samples/input/sample_input.zip`` (as ``mia-robustness bundle`` packs it), starts the container's own
``./serve`` on a loopback port, and keeps what it answers:

* batch transform: the server started with ``MIA_AUDIT_OPTIONS`` (the job's ``Environment``), the bundle
  POSTed as ``application/zip`` -> ``samples/batch/output/sample_input.zip.out`` (the object batch
  transform writes next to the input's name);
* real-time endpoint: the same bundle with the options in ``X-Amzn-SageMaker-Custom-Attributes`` and
  ``Accept: application/json`` -> ``samples/realtime/output/report.json``; also as CSV -> ``report.csv``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLES = HERE / "samples"
# Small enough for a real-time endpoint's 60 s on one ml.c5.2xlarge.
OPTIONS = "attack_models=threshold,rf;repeats=1;proportions=0.5,1"

sys.path.insert(0, str(ROOT / "src"))
from mia_robustness.bundle import pack_bundle  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=600) as answer:
        return answer.read()


def serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environ = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "MIA_BIND_HOST": "127.0.0.1", **env}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"
    process = subprocess.Popen([str(ROOT / "serve")], env=environ, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("serve did not start")


def main() -> None:
    bundle = pack_bundle(
        ROOT / "sample_input" / "model.joblib",
        ROOT / "sample_input" / "train.csv",
        ROOT / "sample_input" / "subject.csv",
        SAMPLES / "input" / "sample_input.zip",
    )
    body = bundle.read_bytes()
    front = (
        {}
        if subprocess.run(["which", "nginx"], capture_output=True).returncode == 0
        else {"MIA_FRONT_SERVER": "none"}
    )
    with tempfile.TemporaryDirectory() as temp:
        process, url = serve({**front, "MIA_TEMP_DIR": temp, "MIA_AUDIT_OPTIONS": OPTIONS})
        try:
            batch = post(
                f"{url}/invocations", body, {"Content-Type": "application/zip", "Accept": "application/json"}
            )
        finally:
            process.terminate()
            process.wait(timeout=60)
        (SAMPLES / "batch" / "output").mkdir(parents=True, exist_ok=True)
        (SAMPLES / "batch" / "output" / "sample_input.zip.out").write_bytes(batch)

        process, url = serve({**front, "MIA_TEMP_DIR": temp})
        try:
            realtime = {
                suffix: post(
                    f"{url}/invocations",
                    body,
                    {
                        "Content-Type": "application/zip",
                        "Accept": media,
                        "X-Amzn-SageMaker-Custom-Attributes": OPTIONS,
                    },
                )
                for suffix, media in (("json", "application/json"), ("csv", "text/csv"))
            }
        finally:
            process.terminate()
            process.wait(timeout=60)
    (SAMPLES / "realtime" / "output").mkdir(parents=True, exist_ok=True)
    for suffix, data in realtime.items():
        (SAMPLES / "realtime" / "output" / f"report.{suffix}").write_bytes(data)
    print(f"samples written under {SAMPLES}")


if __name__ == "__main__":
    main()
