"""Ask the MusicGen model service for a clip and save the WAV (a direct, synchronous call: no
gateway, no job). Start the service first:

    harmonia serve musicgen --model facebook/musicgen-small --port 8001
    python examples/musicgen_service.py --text "solo piano melody" -o piano.wav

The same call with curl:
    curl -X POST localhost:8001/generate -H 'Content-Type: application/json' \\
      -d '{"text":"solo piano melody"}' -o out.wav

Send `Accept: application/json` instead to get JSON with base64 audio and the metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("HARMONIA_MUSICGEN_URL", "http://localhost:8001"))
    parser.add_argument("--text", default="solo piano melody", help="what the music should be")
    parser.add_argument("--duration", type=float, help="seconds of audio (the service's default if unset)")
    parser.add_argument("--seed", type=int, help="same seed, same audio")
    parser.add_argument("-o", "--output", default="musicgen.wav", help="where to save the WAV")
    parser.add_argument("--timeout", type=float, default=600, help="generation can take a while on CPU")
    args = parser.parse_args()

    body: dict[str, Any] = {"text": args.text}
    if args.duration is not None:
        body["duration_s"] = args.duration
    if args.seed is not None:
        body["seed"] = args.seed
    try:
        response = httpx.post(f"{args.url.rstrip('/')}/generate", json=body, timeout=args.timeout)
    except httpx.TransportError as exc:
        sys.exit(f"error: cannot reach {args.url}: {exc}")
    if not response.is_success:
        try:
            error = response.json()["error"]
            message = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        sys.exit(f"error: HTTP {response.status_code} {message}")
    if not response.headers.get("content-type", "").startswith("audio/"):
        sys.exit(f"error: expected audio, got {response.headers.get('content-type')}")
    with open(args.output, "wb") as out:
        out.write(response.content)
    print(f"wrote {args.output} ({len(response.content)} bytes)")


if __name__ == "__main__":
    main()
