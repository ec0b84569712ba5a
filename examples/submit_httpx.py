"""Submit a jen1 job to the Harmonia gateway with httpx, follow its progress over Server-Sent
Events, and download the WAV it renders.

    python examples/submit_httpx.py --instructions "render violin" -o violin.wav
    python examples/submit_httpx.py --url http://gpu-box:8000 --api-key "$KEY" -o out.wav

Needs `httpx` and `httpx-sse` (both installed with harmonia). The same steps, with retries and
reconnects built in, are `harmonia.client.HarmoniaClient`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx
from httpx_sse import connect_sse

FINISHED = {"succeeded", "failed", "canceled"}


def check(response: httpx.Response) -> Any:
    """The JSON body, or exit with the gateway's error message ({"error": {code, message, field}})."""
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        message = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    sys.exit(f"error: HTTP {response.status_code} {message}")


def follow(client: httpx.Client, job_id: str) -> None:
    """Print progress until the job finishes. If the stream drops, reconnect with Last-Event-ID:
    the gateway replays what was missed."""
    last_id = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with connect_sse(client, "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None) as sse:
            if not sse.response.is_success:
                sse.response.read()
                check(sse.response)
            for event in sse.iter_sse():
                last_id = event.id or last_id
                data = json.loads(event.data) if event.data else {}
                if event.event == "progress":
                    print(f"  {data.get('fraction', 0):4.0%}  {data.get('message', '')}")
                elif event.event == "state":
                    print(f"  state: {data.get('status')}")
                    if data.get("status") in FINISHED:
                        return


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("HARMONIA_GATEWAY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("HARMONIA_API_KEY"))
    parser.add_argument("--instructions", default="render violin")
    parser.add_argument("-o", "--output", default="jen1.wav", help="where to save the WAV")
    args = parser.parse_args()

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=30) as client:
            body = {"model": "jen1", "mode": "async", "payload": {"instructions": args.instructions}}
            job = check(client.post("/v1/jobs", json=body))
            print(f"job {job['id']}: {job['status']}")

            follow(client, job["id"])
            job = check(client.get(f"/v1/jobs/{job['id']}"))
            if job["status"] != "succeeded":
                sys.exit(f"error: job {job['status']}: {(job.get('error') or {}).get('message', '')}")

            wav = next((a for a in job["artifacts"] if a["content_type"].startswith("audio/")), None)
            if wav is None:
                sys.exit(f"error: job {job['id']} produced no audio")
            with client.stream("GET", wav["url"]) as response, open(args.output, "wb") as out:
                if not response.is_success:
                    response.read()
                    check(response)
                for chunk in response.iter_bytes():
                    out.write(chunk)
    except httpx.TransportError as exc:
        sys.exit(f"error: cannot reach {args.url}: {exc}")
    print(
        f"wrote {args.output} ({wav['size']} bytes); what was rendered: {job['result'].get('interpretation')}"
    )


if __name__ == "__main__":
    main()
