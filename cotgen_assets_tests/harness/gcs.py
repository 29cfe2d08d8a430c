"""A local Google Cloud Storage stand-in (`gcp-storage-emulator`, from PyPI) as a real process.

gcs = start_gcs("cotgen")          # in-memory, on a free loopback port, with bucket `cotgen`
env = gcs.env()                    # what gcsfs needs to use it (merge into a process's env)
gcs.fs()                           # a gcsfs filesystem on it, to look at the bucket from a test
gcs.stop()
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from cotgen_assets_tests.harness.dagster import free_port, stop_process, wait_for

BIN = Path(sys.executable).with_name("gcp-storage-emulator")
BUCKET = "cotgen"  # the bucket of the `gcs` fixture's stand-in


class GcsServer:
    def __init__(self, port: int, bucket: str, log_path: Path, proc: subprocess.Popen):
        self.port, self.bucket, self.log_path, self.proc = port, bucket, log_path, proc
        self.url = f"http://127.0.0.1:{port}"

    def env(self) -> dict[str, str]:
        """gcsfs to the stand-in, anonymously, without the gRPC layout probe (60 s per call here)."""
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "FSSPEC_GS_TOKEN": "anon",
            "FSSPEC_GCS_TOKEN": "anon",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }

    def data_url(self, prefix: str) -> str:
        return f"gs://{self.bucket}/{prefix}"

    def fs(self):
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.url, token="anon", skip_instance_cache=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)


def start_gcs(bucket: str, log_dir: Path, timeout: float = 30) -> GcsServer:
    port = free_port()
    log_path = Path(log_dir) / "gcs-emulator.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(BIN), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
            + ["--default-bucket", bucket],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = GcsServer(port, bucket, log_path, proc)

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited: {server.log()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/storage/v1/b/{bucket}", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(answers, timeout=timeout, interval=0.2, message="the GCS stand-in answering")
    except BaseException:
        server.stop()
        raise
    return server
