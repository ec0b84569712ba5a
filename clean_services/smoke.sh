#!/usr/bin/env bash
# Container smoke test: build and start Valkey, the gateway and the jen1 worker from
# docker-compose.clean.yml, run the original curl examples against the gateway (with an API key),
# check that a real WAV comes back (PCM, >= 1 s, not silence), then tear everything down.
#
#   clean_services/smoke.sh                    # redis + orchestrator + jen1
#   SMOKE_MUSICGEN=1 clean_services/smoke.sh   # + the MusicGen service and POST /generate, on a tiny
#                                              #   random-weight checkpoint written by `harmonia make-tiny`
#                                              #   into the models volume (no download); set
#                                              #   MUSICGEN_MODEL=facebook/musicgen-small for the real one
#   SMOKE_GPU=1 ...                            # with docker-compose.gpu.yml (needs the NVIDIA toolkit)
#
# Needs a Docker daemon and Compose v2 (`docker compose`, `docker-compose`, or $COMPOSE). Where there
# is none it prints why and exits 77 (the conventional "skipped" status), so CI runs it only where
# Docker exists. Needs curl and python3 on the host.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if ! docker info >/dev/null 2>&1; then
  echo "smoke: no reachable Docker daemon; skipped" >&2
  exit 77
fi
if [ -n "${COMPOSE:-}" ]; then
  read -r -a dc <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  dc=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  dc=(docker-compose)
else
  echo "smoke: no Docker Compose v2; skipped" >&2
  exit 77
fi

random_hex() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
export HARMONIA_API_KEYS="${HARMONIA_API_KEYS:-smoke-$(random_hex)}"
export REDIS_PASSWORD="${REDIS_PASSWORD:-$(random_hex)}"
export HARMONIA_PORT="${HARMONIA_PORT:-18000}"    # not 8000: leave a local `harmonia up` alone
export MUSICGEN_PORT="${MUSICGEN_PORT:-18001}"
key="${HARMONIA_API_KEYS%%,*}"
project="harmonia-smoke-$$"
files=(-f "$here/docker-compose.clean.yml")
if [ -n "${SMOKE_GPU:-}" ]; then files+=(-f "$here/docker-compose.gpu.yml"); fi
dc+=("${files[@]}" -p "$project")
work="$(mktemp -d)"

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "smoke: FAILED (exit $status); last logs:" >&2
    "${dc[@]}" logs --no-color --tail=100 >&2 || true
  fi
  "${dc[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

services=(redis orchestrator jen1)
if [ -n "${SMOKE_MUSICGEN:-}" ]; then
  services+=(musicgen)
  if [ -z "${MUSICGEN_MODEL:-}" ]; then
    export MUSICGEN_MODEL=/models/tiny-musicgen
    "${dc[@]}" build musicgen
    "${dc[@]}" run --rm --no-deps musicgen make-tiny musicgen "$MUSICGEN_MODEL" >/dev/null
  fi
fi
echo "smoke: building and starting ${services[*]}"
"${dc[@]}" up -d --build --wait --wait-timeout "${SMOKE_WAIT_S:-900}" "${services[@]}"

base="http://127.0.0.1:$HARMONIA_PORT"
auth=(-H "Authorization: Bearer $key")
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

check_wav() {  # check_wav FILE: 16-bit PCM, at least 1 s, not silence
  python3 - "$1" <<'PY'
import array, sys, wave
with wave.open(sys.argv[1]) as w:
    frames, rate, width = w.getnframes(), w.getframerate(), w.getsampwidth()
    data = w.readframes(frames)
if width != 2:
    sys.exit(f"{sys.argv[1]}: expected 16-bit PCM, got {8 * width}-bit")
samples = array.array("h", data)
seconds = frames / rate
peak = max((abs(s) for s in samples), default=0)
rms = (sum(s * s for s in samples) / max(len(samples), 1)) ** 0.5
print(f"  {sys.argv[1]}: {seconds:.2f} s at {rate} Hz, peak {peak}, rms {rms:.0f}")
if seconds < 1.0:
    sys.exit("too short")
if peak < 300 or rms < 30:
    sys.exit("silent")
PY
}

echo "smoke: a request without the API key is refused"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/job" -H 'Content-Type: application/json' \
  -d '{"model":"jen1","mode":"async","payload":{"instructions":"render violin"}}')
[ "$code" = 401 ] || { echo "expected 401 without a key, got $code" >&2; exit 1; }

echo "smoke: the original curl examples"
# curl -X POST localhost:8000/job -H 'Content-Type: application/json' -d '{...}'
id=$(curl -fsS -X POST "$base/job" "${auth[@]}" -H 'Content-Type: application/json' \
  -d '{"model":"jen1","mode":"async","payload":{"instructions":"render violin"}}' | json "['job_id']")
echo "  job $id"
# curl localhost:8000/job/<id>   (until it has finished)
status=queued
for _ in $(seq 1 240); do
  status=$(curl -fsS "$base/job/$id" "${auth[@]}" | json "['status']")
  case "$status" in
    succeeded) break ;;
    failed | canceled)
      curl -fsS "$base/job/$id" "${auth[@]}" >&2
      exit 1
      ;;
  esac
  sleep 1
done
[ "$status" = succeeded ] || { echo "job $id still $status after 240 s" >&2; exit 1; }
# curl -o violin.wav localhost:8000/v1/jobs/<id>/artifacts/audio.wav
curl -fsS -o "$work/violin.wav" "$base/v1/jobs/$id/artifacts/audio.wav" "${auth[@]}"
check_wav "$work/violin.wav"

echo "smoke: harmonia submit ... --wait -o piano.wav (the CLI inside the gateway image)"
"${dc[@]}" exec -T orchestrator harmonia submit jen1 \
  --instructions "render a slow piano piece in D minor, 20 seconds" --wait -o /tmp/piano.wav \
  --url http://127.0.0.1:8000 --api-key "$key" >/dev/null
"${dc[@]}" cp orchestrator:/tmp/piano.wav "$work/piano.wav"
check_wav "$work/piano.wav"

if [ -n "${SMOKE_MUSICGEN:-}" ]; then
  echo "smoke: MusicGen service POST /generate"
  curl -fsS -o "$work/musicgen.wav" "http://127.0.0.1:$MUSICGEN_PORT/generate" \
    -H 'Content-Type: application/json' -d '{"text": "a calm violin melody", "duration_s": 2, "seed": 1}'
  check_wav "$work/musicgen.wav"
fi

echo "smoke: OK"
