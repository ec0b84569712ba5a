"""Submit a jen1 job to the Harmonia gateway with `requests`, poll its status until it finishes,
and download the WAV it renders.

    python examples/submit_requests.py --instructions "render a slow piano piece in D minor" -o piano.wav

Polling is the simplest way to follow a job; `submit_httpx.py` shows the push alternative (SSE).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import requests

FINISHED = {"succeeded", "failed", "canceled"}


def check(response: requests.Response) -> Any:
    """The JSON body, or exit with the gateway's error message ({"error": {code, message, field}})."""
    if response.ok:
        return response.json()
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    sys.exit(f"error: HTTP {response.status_code} {message}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("HARMONIA_GATEWAY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("HARMONIA_API_KEY"))
    parser.add_argument("--instructions", default="render violin")
    parser.add_argument("-o", "--output", default="jen1.wav", help="where to save the WAV")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args()

    base = args.url.rstrip("/")
    session = requests.Session()
    if args.api_key:
        session.headers["Authorization"] = f"Bearer {args.api_key}"
    try:
        body = {"model": "jen1", "mode": "async", "payload": {"instructions": args.instructions}}
        job = check(session.post(f"{base}/v1/jobs", json=body, timeout=30))
        print(f"job {job['id']}: {job['status']}")

        deadline = time.monotonic() + args.timeout
        seen = None
        while job["status"] not in FINISHED:
            if time.monotonic() > deadline:
                sys.exit(f"error: job {job['id']} still {job['status']} after {args.timeout:g} s")
            time.sleep(0.25)
            job = check(session.get(f"{base}/v1/jobs/{job['id']}", timeout=30))
            progress = (job["status"], job["progress"]["fraction"], job["progress"]["message"])
            if progress != seen:
                print(f"  {progress[0]:<9} {progress[1]:4.0%}  {progress[2]}")
                seen = progress
        if job["status"] != "succeeded":
            sys.exit(f"error: job {job['status']}: {(job.get('error') or {}).get('message', '')}")

        wav = next((a for a in job["artifacts"] if a["content_type"].startswith("audio/")), None)
        if wav is None:
            sys.exit(f"error: job {job['id']} produced no audio")
        with session.get(base + wav["url"], stream=True, timeout=30) as response:
            if not response.ok:
                check(response)
            with open(args.output, "wb") as out:
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    out.write(chunk)
    except requests.ConnectionError as exc:
        sys.exit(f"error: cannot reach {args.url}: {exc}")
    print(
        f"wrote {args.output} ({wav['size']} bytes); what was rendered: {job['result'].get('interpretation')}"
    )


if __name__ == "__main__":
    main()
