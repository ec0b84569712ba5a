// The gateway's HTTP API as seen from the console: every call carries the API key from this
// tab's sessionStorage (never localStorage or a cookie), and every failure becomes an ApiError
// with a sentence a person can read, plus the field it is about when the gateway names one.

import { createParser } from "./sse.js";

const KEY_NAME = "harmonia.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function setKey(value) {
  if (value) sessionStorage.setItem(KEY_NAME, value);
  else sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

const LEADS = {
  401: "Not authorized",
  403: "Forbidden",
  404: "Not found",
  409: "Conflict",
  413: "Too large",
  422: "Invalid input",
  429: "Too many requests",
  503: "Service unavailable",
};

/** The readable sentence for an error envelope (or its absence). */
export function describe(status, detail) {
  const lead = LEADS[status] || (status >= 500 ? "Gateway error" : `HTTP ${status}`);
  let text = detail ? `${lead}: ${detail}` : lead;
  if (status === 401) text += ". Enter a valid API key above.";
  return text;
}

function authHeaders(extra = {}) {
  const headers = new Headers(extra);
  const key = getKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page, an empty body): the status alone has to do
  }
  const err = body && body.error ? body.error : {};
  const retry = response.headers.get("Retry-After");
  let message = describe(response.status, err.message || "");
  if (response.status === 429 && retry && !/retry/i.test(message)) message += ` Try again in ${retry} s.`;
  return new ApiError(response.status, err.code || "http_error", message, err.field || null, retry);
}

async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network", `Cannot reach the gateway (${exc.message}).`);
  }
}

// JSON cannot carry integers beyond 2^53 as numbers; seeds may be that large, so BigInts are
// written as bare digits.
function toJson(value) {
  return JSON.stringify(value, (_, v) => (typeof v === "bigint" ? `\u0000big:${v}` : v)).replace(
    /"\\u0000big:(-?\d+)"/g,
    "$1",
  );
}

/** A JSON call; resolves to {status, data}, rejects with ApiError. */
export async function request(method, path, body, { signal } = {}) {
  const headers = authHeaders(body === undefined ? {} : { "Content-Type": "application/json" });
  const response = await send(path, {
    method,
    headers,
    body: body === undefined ? undefined : toJson(body),
    signal,
    cache: "no-store",
  });
  if (!response.ok) throw await errorFrom(response);
  const data = response.status === 204 ? null : await response.json();
  return { status: response.status, data };
}

export const api = {
  models: () => request("GET", "/v1/models"),
  submit: (body, opts) => request("POST", "/v1/jobs", body, opts),
  job: (id) => request("GET", `/v1/jobs/${encodeURIComponent(id)}`),
  cancel: (id) => request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`),
  jobs(params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) query.set(k, v);
    return request("GET", `/v1/jobs?${query}`);
  },
};

/** Fetch an artifact (or any authorized URL) as a Blob. */
export async function fetchBlob(url, { signal } = {}) {
  const response = await send(url, { headers: authHeaders(), signal });
  if (!response.ok) throw await errorFrom(response);
  return response.blob();
}

/**
 * Server-Sent Events over fetch(): EventSource cannot send an Authorization header. Yields
 * {id, event, data} with `data` parsed as JSON where it is JSON. Ends when the server closes.
 */
export async function* streamEvents(url, { signal, lastEventId } = {}) {
  const headers = authHeaders({ Accept: "text/event-stream" });
  if (lastEventId) headers.set("Last-Event-ID", lastEventId);
  const response = await send(url, { headers, signal, cache: "no-store" });
  if (!response.ok) throw await errorFrom(response);
  if (!response.body) throw new ApiError(0, "no_stream", "This browser cannot read event streams.");
  const queue = [];
  const parser = createParser((event) => queue.push(event));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(value);
      while (queue.length) yield parse(queue.shift());
    }
    parser.end();
    while (queue.length) yield parse(queue.shift());
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parse(event) {
  let data = event.data;
  try {
    data = JSON.parse(event.data);
  } catch {
    // keep plain text as it came
  }
  return { id: event.id, event: event.event, data };
}
