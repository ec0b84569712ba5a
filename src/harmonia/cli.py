"""The `harmonia` command: run the processes (up, gateway, worker) and use the API (submit, status,
wait, cancel, jobs, models). Errors print one line and exit non-zero."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from harmonia.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Harmonia: serve music-generation models.")

UrlOpt = Annotated[str, typer.Option("--url", envvar="HARMONIA_GATEWAY_URL", help="gateway base URL")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="HARMONIA_API_KEY", help="API key")]
DEFAULT_URL = "http://127.0.0.1:8000"


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"invalid setting {'.'.join(str(p) for p in first['loc'])}: {first['msg']}", 2)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Without API keys the gateway is open; refuse a non-loopback bind unless explicitly allowed."""
    if settings.api_keys or is_loopback(settings.host):
        return
    if not settings.allow_open_remote:
        fail(
            f"refusing to serve {settings.host} without API keys: set HARMONIA_API_KEYS, "
            "or HARMONIA_ALLOW_OPEN_REMOTE=true to serve it open",
            2,
        )


def _serve_gateway(settings: Settings, redis_url: str, workers: int = 1) -> None:
    """Serve the gateway; with `workers` > 1, that many processes share the listening socket (each
    builds its own app from the environment: `harmonia.gateway.app:app_from_env`)."""
    import uvicorn

    from harmonia.gateway import create_app
    from harmonia.redis_client import connect, connect_async

    if not settings.api_keys:
        typer.echo(f"harmonia: no API keys configured; the gateway on {settings.host} is open", err=True)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "timeout_graceful_shutdown": 30,
    }
    if workers > 1:
        # each process imports the app by name and builds it from the environment; their metrics
        # go to a shared folder that every process's /metrics adds up (prometheus multiprocess mode)
        import shutil
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="harmonia-metrics-")
        os.environ.update(HARMONIA_REDIS_URL=redis_url, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        try:
            uvicorn.run("harmonia.gateway.app:app_from_env", factory=True, workers=workers, **common)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    app_ = create_app(settings, connect(redis_url), connect_async(redis_url))
    uvicorn.Server(uvicorn.Config(app_, **common)).run()


@app.command()
def up(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="gateway port")] = 8000,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="state: Valkey data, artifacts")] = None,
    workers: Annotated[
        int, typer.Option(min=0, help="worker processes (0: gateway and Valkey only, workers run elsewhere)")
    ] = 1,
    threads: Annotated[int | None, typer.Option(help="threads per worker")] = None,
) -> None:
    """Start everything on this machine: embedded Valkey (unless HARMONIA_REDIS_URL is set), the
    gateway and workers for every queue. Ctrl-C stops it cleanly."""
    from harmonia.up import Supervisor

    settings = load_settings(host=host, port=port, data_dir=data_dir, worker_threads=threads)
    check_bind(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sup = Supervisor(settings, workers=workers)
    try:
        redis_url = sup.start()
    except Exception as exc:  # noqa: BLE001 - any start failure is reported in one line
        sup.stop()
        fail(str(exc))
    # uvicorn handles SIGINT/SIGTERM (graceful HTTP shutdown) and then re-raises the signal to
    # the handler that was installed before it; make that handler a no-op so the workers and
    # Valkey are stopped cleanly below instead of the process dying on the re-raise.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        _serve_gateway(settings, redis_url)
    finally:
        sup.stop()


@app.command()
def gateway(
    host: Annotated[str | None, typer.Option(help="address to bind")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="processes sharing the port (default: one per usable core, at most 4)"),
    ] = None,
) -> None:
    """Run the gateway (API) against HARMONIA_REDIS_URL."""
    settings = load_settings(host=host, port=port, gateway_workers=workers)
    if not settings.redis_url:
        fail("set HARMONIA_REDIS_URL (or run `harmonia up`, which starts an embedded Valkey)", 2)
    check_bind(settings)
    _serve_gateway(settings, settings.redis_url, settings.gateway_processes())


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option(help="comma-separated queues (default: all)")] = None,
    threads: Annotated[int | None, typer.Option(help="worker threads")] = None,
) -> None:
    """Run a worker consuming the given queues from HARMONIA_REDIS_URL."""
    from harmonia.redis_client import connect
    from harmonia.worker import WorkerProcess

    settings = load_settings(worker_threads=threads)
    if not settings.redis_url:
        fail("set HARMONIA_REDIS_URL (or run `harmonia up`)", 2)
    wanted = [q.strip() for q in queues.split(",") if q.strip()] if queues else settings.queues
    try:
        proc = WorkerProcess(settings, connect(settings.redis_url), wanted)
    except ValueError as exc:
        fail(str(exc), 2)
    proc.run_forever()


@app.command()
def probe(
    process: Annotated[str, typer.Argument(help="what to check: worker")],
) -> None:
    """Liveness probe (containers, Kubernetes): exit 0 if the worker on this host is alive, 1 with
    the reason if it is wedged (its liveness file is older than HARMONIA_WORKER_LIVENESS_MAX_AGE_S).
    A Redis outage does not fail it: restarting the worker would not help."""
    from harmonia.worker import liveness_age

    if process != "worker":
        fail(f"unknown process {process!r}: the probe knows `worker`", 2)
    settings = load_settings()
    path, limit = settings.liveness_file, settings.worker_liveness_max_age_s
    age = liveness_age(path)
    if age is None:
        fail(f"worker not alive: no liveness file at {path} (not started, or not on this host)")
    if age > limit:
        fail(f"worker wedged: {path} last touched {age:.0f} s ago (limit {limit:g} s)")
    typer.echo(f"worker alive: {path} touched {age:.0f} s ago")


SERVICE_PORTS = {"musicgen": 8001, "ollama": 8002, "diffsinger": 8003, "acestep": 8004, "stable-audio": 8005}


@app.command()
def serve(
    engine: Annotated[str, typer.Argument(help="musicgen, acestep, stable-audio, diffsinger or ollama")],
    model: Annotated[
        str | None, typer.Option(help="musicgen, acestep, stable-audio: hub id or local checkpoint folder")
    ] = None,
    voicebank: Annotated[Path | None, typer.Option(help="diffsinger: voicebank folder")] = None,
    host: Annotated[str | None, typer.Option(help="address to bind")] = None,
    port: Annotated[
        int | None,
        typer.Option(
            help="port (musicgen 8001, ollama 8002, diffsinger 8003, acestep 8004, stable-audio 8005)"
        ),
    ] = None,
) -> None:
    """Run one engine as a sync HTTP model service (POST /generate, /healthz, /readyz, /metrics, /info)."""
    from harmonia.errors import HarmoniaError

    if engine not in SERVICE_PORTS:
        fail(f"unknown service {engine!r}; choose one of: {', '.join(SERVICE_PORTS)}", 2)
    overrides: dict[str, Any] = {"host": host}
    settings = load_settings(**overrides)
    if voicebank is not None:
        settings.diffsinger.voicebank = voicebank
    if model is not None:
        if engine not in ("musicgen", "acestep", "stable-audio"):
            fail(f"--model is for musicgen, acestep and stable-audio, not {engine}", 2)
        getattr(settings, engine.replace("-", "_")).model = model
    check_bind(settings)
    port = SERVICE_PORTS[engine] if port is None else port
    try:
        if engine == "ollama":
            import uvicorn

            from harmonia.services.ollama import build_llm_app

            uvicorn.run(
                build_llm_app(settings), host=settings.host, port=port, log_level=settings.log_level.lower()
            )
        else:
            from harmonia.services.model import serve_model

            serve_model(engine, settings, host=settings.host, port=port)
    except HarmoniaError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


#: engine -> "module:function(path) -> Path" writing a tiny random checkpoint of it
TINY_BUILDERS = {
    "musicgen": ("harmonia.engines.musicgen.tiny:make_tiny_musicgen", "musicgen"),
    "acestep": ("harmonia.engines.acestep.tiny:make_tiny_acestep", "diffusers"),
    "stable-audio": ("harmonia.engines.stable_audio.tiny:make_tiny_stable_audio", "diffusers"),
}


@app.command("make-tiny")
def make_tiny(
    engine: Annotated[str, typer.Argument(help="musicgen, acestep or stable-audio")],
    path: Annotated[Path, typer.Argument(help="folder to write the checkpoint to")],
) -> None:
    """Write a tiny random-weight checkpoint with the real architecture (for offline trials and
    tests): `harmonia make-tiny acestep ./tiny && harmonia serve acestep --model ./tiny`."""
    import importlib

    if engine not in TINY_BUILDERS:
        fail(f"make-tiny knows: {', '.join(TINY_BUILDERS)} (not {engine!r})", 2)
    target, extra = TINY_BUILDERS[engine]
    module, _, function = target.partition(":")
    try:
        build = getattr(importlib.import_module(module), function)
        typer.echo(str(build(path)))
    except ImportError as exc:
        fail(f"needs the [{extra}] extra: {exc}", 2)
    except OSError as exc:
        fail(f"cannot write {path}: {exc}")


@app.command()
def compose(
    instructions: Annotated[str, typer.Argument(help='what to make, e.g. "lo-fi beat with piano"')],
    output: Annotated[Path, typer.Option("--output", "-o", help="the mix: .wav or .flac")] = Path("jen1.wav"),
    duration: Annotated[float | None, typer.Option("--duration", "-d", help="seconds")] = None,
    tempo: Annotated[float | None, typer.Option("--tempo", help="beats per minute")] = None,
    key: Annotated[str | None, typer.Option("--key", help='e.g. "D minor"')] = None,
    instrument: Annotated[list[str] | None, typer.Option("--instrument", "-i", help="repeatable")] = None,
    genre: Annotated[str | None, typer.Option("--genre")] = None,
    mood: Annotated[str | None, typer.Option("--mood")] = None,
    lyrics: Annotated[Path | None, typer.Option("--lyrics", help="a text file of lyric lines")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    engine: Annotated[str, typer.Option("--engine", help="auto | render | musicgen")] = "auto",
    stems: Annotated[bool, typer.Option("--stems", help="also write each part next to the mix")] = False,
) -> None:
    """Compose locally (no server): plan, arrange, render and master, with a progress bar. Writes the
    mix to OUTPUT and plan.json / arrangement.mid (and stems) beside it."""
    from harmonia.engines.base import LocalContext
    from harmonia.engines.registry import Registry
    from harmonia.errors import HarmoniaError

    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("wav", "flac"):
        fail(f"--output must end in .wav or .flac (got {output.name!r})", 2)
    payload: dict[str, Any] = {
        "instructions": instructions, "duration_s": duration, "tempo_bpm": tempo, "key": key,
        "instruments": instrument or None, "genre": genre, "mood": mood, "seed": seed, "engine": engine,
        "output": fmt, "stems": stems,
    }  # fmt: skip
    if lyrics is not None:
        try:
            payload["lyrics"] = lyrics.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"cannot read {lyrics}: {exc}", 2)
    payload = {k: v for k, v in payload.items() if v is not None}
    settings = load_settings()
    try:
        registry = Registry(settings)
        request = registry.validate("jen1", payload)
        jen1 = registry.engine("jen1")
        with _progress_bar() as bar:
            task = bar.add_task("plan", total=1.0)
            ctx = LocalContext(on_progress=lambda f, m: bar.update(task, completed=f, description=m or "…"))
            result = jen1.run(request, ctx)
    except HarmoniaError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    output.parent.mkdir(parents=True, exist_ok=True)
    for artifact in result.artifacts:
        if artifact.name == f"mix.{fmt}":
            output.write_bytes(artifact.data)
        elif artifact.name in ("plan.json", "arrangement.mid") or artifact.name.startswith("stem-"):
            (output.parent / f"{output.stem}.{artifact.name}").write_bytes(artifact.data)
    out = result.output
    typer.echo(
        f"wrote {output}: {out['duration_s']:.1f} s, {out['tempo_bpm']:g} bpm, {out['key']}, "
        f"{out['loudness_lufs']:.1f} LUFS, peak {out['peak_dbfs']:.1f} dBFS (planner: {out['planner']})"
    )
    for note in out.get("decisions", []):
        typer.echo(f"  - {note}")


def _client(url: str, api_key: str | None) -> Any:
    from harmonia.client import HarmoniaClient

    return HarmoniaClient(url, api_key)


def _parse_params(params: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--param {item!r}: expected KEY=VALUE", 2)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _api_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import httpx

    from harmonia.client import HarmoniaAPIError

    try:
        return fn(*args, **kwargs)
    except HarmoniaAPIError as exc:
        fail(str(exc))
    except httpx.TransportError as exc:
        fail(f"cannot reach the gateway: {exc}")


def _progress_bar() -> Any:
    """A progress bar on stderr: stdout carries only the result, so `harmonia submit --wait | jq` works."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=Console(stderr=True),
    )  # fmt: skip


def _follow_and_save(hc: Any, job: dict[str, Any], output: Path | None) -> dict[str, Any]:
    with _progress_bar() as bar:
        task = bar.add_task(job["status"], total=1.0)

        def on_event(kind: str, data: dict[str, Any]) -> None:
            if kind == "progress":
                bar.update(
                    task, completed=data.get("fraction", 0), description=data.get("message") or "running"
                )
            elif kind == "state":
                bar.update(task, description=data.get("status", ""))

        job = _api_call(hc.wait, job["id"], on_event=on_event)
        if job["status"] == "succeeded":
            bar.update(task, completed=1.0, description="succeeded")
    if job["status"] != "succeeded":
        err = job.get("error") or {}
        fail(f"job {job['id']} {job['status']}: {err.get('message', '')}")
    if output is not None:
        audio = [a for a in job["artifacts"] if a["content_type"].startswith("audio/")]
        if not audio:
            fail(f"job {job['id']} produced no audio artifact")
        _api_call(hc.download, job["id"], audio[0]["name"], output)
        typer.echo(f"wrote {output}", err=True)
    return job


@app.command()
def submit(
    model: Annotated[str, typer.Argument(help="model name (see `harmonia models`)")],
    instructions: Annotated[str | None, typer.Option(help="payload.instructions (jen1)")] = None,
    text: Annotated[str | None, typer.Option(help="payload.text (musicgen)")] = None,
    payload: Annotated[str | None, typer.Option(help="the whole payload as JSON")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="payload field KEY=VALUE")] = None,
    mode: Annotated[str, typer.Option(help="async or sync")] = "async",
    wait: Annotated[bool, typer.Option("--wait", help="follow progress until it finishes")] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="save the audio here (implies --wait)")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key header")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Submit a job; print its JSON (or follow it with --wait / -o)."""
    body: dict[str, Any] = {}
    if payload:
        try:
            body = json.loads(payload)
        except json.JSONDecodeError as exc:
            fail(f"--payload is not JSON: {exc.msg}", 2)
        if not isinstance(body, dict):
            fail("--payload must be a JSON object", 2)
    if instructions is not None:
        body["instructions"] = instructions
    if text is not None:
        body["text"] = text
    body.update(_parse_params(param or []))
    with _client(url, api_key) as hc:
        job = _api_call(hc.submit, model, body, mode=mode, idempotency_key=idempotency_key)
        if wait or output is not None:
            job = _follow_and_save(hc, job, output)
    typer.echo(json.dumps(job, indent=2))


@app.command()
def status(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Print a job's JSON."""
    with _client(url, api_key) as hc:
        typer.echo(json.dumps(_api_call(hc.get, job_id), indent=2))


@app.command("wait")
def wait_cmd(
    job_id: str,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="save the audio here")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """Follow a job until it finishes; optionally save its audio."""
    with _client(url, api_key) as hc:
        job = _follow_and_save(hc, _api_call(hc.get, job_id), output)
    typer.echo(json.dumps(job, indent=2))


@app.command()
def cancel(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Cancel a job."""
    with _client(url, api_key) as hc:
        typer.echo(json.dumps(_api_call(hc.cancel, job_id), indent=2))


@app.command()
def jobs(
    status_: Annotated[str | None, typer.Option("--status")] = None,
    model: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """List your jobs, newest first."""
    with _client(url, api_key) as hc:
        page = _api_call(hc.list, status=status_, model=model, limit=limit)
    for job in page["jobs"]:
        typer.echo(f"{job['id']}  {job['status']:<9}  {job['model']:<10}  {job['progress']['fraction']:.0%}")


@app.command()
def models(url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """List the models the gateway serves, with availability."""
    with _client(url, api_key) as hc:
        for m in _api_call(hc.models):
            state = "available" if m["available"] else f"unavailable: {m['reason']}"
            if m.get("note"):
                state += f" ({m['note']})"
            typer.echo(f"{m['name']:<12} queue={m['queue']:<10} {state}")


legacy_app = typer.Typer(
    no_args_is_help=True, help="The old script entry points, kept working (MIGRATION.md)."
)
app.add_typer(legacy_app, name="legacy")


@legacy_app.command("generate-musicgen")
def legacy_generate_musicgen(
    instrument: Annotated[str, typer.Option(help="the instrument to feature, e.g. violin")],
    duration: Annotated[float, typer.Option(help="seconds of audio")] = 5.0,
    output: Annotated[Path, typer.Option("--output", "-o", help="where to save the WAV")] = Path(
        "output.wav"
    ),
    prompt: Annotated[str | None, typer.Option(help="more description for the text prompt")] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same audio")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
) -> None:
    """`scripts/generate_musicgen_audio.py --instrument X --duration N`, now a `musicgen` job."""
    text = f"a piece played on {instrument}" + (f", {prompt}" if prompt else "")
    payload: dict[str, Any] = {"text": text, "duration_s": duration}
    if seed is not None:
        payload["seed"] = seed
    with _client(url, api_key) as hc:
        job = _api_call(hc.submit, "musicgen", payload)
        _follow_and_save(hc, job, output)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
