// One job, opened: status, live progress over SSE (stage, percentage, elapsed), cancel, the
// audio with its waveform, every artifact as a download, and the result / job JSON.

import { api, ApiError, fetchBlob, getKey, streamEvents } from "./api.js";
import { decode, Waveform } from "./waveform.js";

const FINISHED = new Set(["succeeded", "failed", "canceled"]);
// audio/midi is a score, not sound: the browser cannot decode or play it
const playable = (contentType) => contentType.startsWith("audio/") && !contentType.includes("midi");
const $ = (id) => document.getElementById(id);

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export class JobView {
  constructor({ onFinished } = {}) {
    this.job = null;
    this.controller = null;
    this.timer = 0;
    this.objectUrls = [];
    this.onFinished = onFinished || (() => {});
    this.waveform = new Waveform($("waveform"), $("audio"));
    this.audioFor = null;
    this.skew = 0; // client clock minus server clock, learnt from event ids (Redis milliseconds)
    $("job-cancel").addEventListener("click", () => this.cancel());
    $("artifacts").addEventListener("click", (event) => this.download(event));
  }

  /** Show `job` (an API job object) and follow its events while it is unfinished. */
  open(job) {
    this.close();
    $("job-empty").hidden = true;
    $("job-view").hidden = false;
    $("events").replaceChildren();
    $("job-action-status").textContent = "";
    this.audioFor = null;
    this.waveform.set(null);
    $("audio").removeAttribute("src");
    $("player").hidden = true;
    this.render(job);
    this.controller = new AbortController();
    this.timer = setInterval(() => this.renderElapsed(), 250);
    if (!FINISHED.has(job.status)) this.follow(job.id, this.controller.signal);
    else this.finish(job, false);
  }

  close() {
    this.controller?.abort();
    this.controller = null;
    clearInterval(this.timer);
    for (const url of this.objectUrls) URL.revokeObjectURL(url);
    this.objectUrls = [];
  }

  render(job) {
    this.job = job;
    $("job-id").textContent = job.id;
    $("job-model").textContent = job.model;
    const badge = $("job-status");
    badge.textContent = job.status;
    badge.dataset.status = job.status;
    this.renderProgress(job.progress || { fraction: 0, message: "" });
    this.renderElapsed();
    $("job-cancel").disabled = FINISHED.has(job.status);
    const error = $("job-error");
    error.hidden = !job.error;
    error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
    $("job-result").textContent = job.result ? JSON.stringify(job.result, null, 2) : "(no result yet)";
    $("job-json").textContent = JSON.stringify(job, null, 2);
    this.renderArtifacts(job);
  }

  renderProgress({ fraction, message }) {
    const pct = Math.round((fraction || 0) * 100);
    $("job-progress").value = pct;
    $("job-progress-text").textContent = message ? `${pct}% · ${message}` : `${pct}%`;
  }

  renderElapsed() {
    const job = this.job;
    if (!job) return;
    const start = job.started_at || job.created_at;
    const end = job.finished_at || this.serverNow();
    const waited = job.started_at ? ` (queued ${(job.started_at - job.created_at).toFixed(1)} s)` : "";
    $("job-elapsed").textContent = start ? `Elapsed ${Math.max(0, end - start).toFixed(1)} s${waited}` : "";
    if (FINISHED.has(job.status)) clearInterval(this.timer);
  }

  renderArtifacts(job) {
    const list = $("artifacts");
    list.replaceChildren();
    if (!job.artifacts.length) {
      const li = document.createElement("li");
      li.className = "hint";
      li.textContent = FINISHED.has(job.status) ? "None." : "None yet.";
      list.append(li);
    }
    for (const artifact of job.artifacts) {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = artifact.url;
      link.download = artifact.name;
      link.dataset.artifact = artifact.name;
      link.textContent = `Download ${artifact.name}`;
      const meta = document.createElement("span");
      meta.className = "hint";
      meta.textContent = ` ${artifact.content_type}, ${size(artifact.size)}`;
      li.append(link, meta);
      if (playable(artifact.content_type)) {
        const play = document.createElement("button");
        play.type = "button";
        play.textContent = "Listen";
        play.dataset.listen = artifact.name;
        play.setAttribute("aria-label", `Listen to ${artifact.name}`);
        li.append(" ", play);
      }
      if (artifact.content_type === "application/json") li.append(this.jsonViewer(artifact));
      list.append(li);
    }
  }

  serverNow() {
    return Date.now() / 1000 - this.skew;
  }

  /** Server time of an event from its stream id ("<ms>-<seq>"), learning the clock skew. */
  eventTime(id) {
    const ms = Number.parseInt(String(id || "").split("-")[0], 10);
    if (!Number.isFinite(ms) || ms <= 0) return this.serverNow();
    this.skew = Date.now() / 1000 - ms / 1000;
    return ms / 1000;
  }

  /** A collapsed "View" that fetches and pretty-prints a JSON artifact when first opened. */
  jsonViewer(artifact) {
    const details = document.createElement("details");
    details.className = "artifact-json";
    const summary = document.createElement("summary");
    summary.textContent = `View ${artifact.name}`;
    const pre = document.createElement("pre");
    pre.tabIndex = 0;
    details.append(summary, pre);
    details.addEventListener("toggle", async () => {
      if (!details.open || pre.textContent) return;
      pre.textContent = "Loading…";
      try {
        const text = await (await fetchBlob(artifact.url)).text();
        pre.textContent = JSON.stringify(JSON.parse(text), null, 2);
      } catch (exc) {
        pre.textContent = exc.message;
      }
    });
    return details;
  }

  log(text, at = this.serverNow(), kind = "note") {
    const list = $("events");
    const li = document.createElement("li");
    li.dataset.kind = kind;
    const since = this.job?.created_at ? Math.max(0, at - this.job.created_at) : 0;
    li.textContent = `+${since.toFixed(1)} s  ${text}`;
    list.append(li);
    while (list.children.length > 200) list.firstElementChild.remove();
  }

  async follow(id, signal) {
    let lastId = null;
    let failures = 0;
    while (!signal.aborted) {
      try {
        let received = false;
        for await (const ev of streamEvents(`/v1/jobs/${encodeURIComponent(id)}/events`, {
          signal,
          lastEventId: lastId,
        })) {
          lastId = ev.id || lastId;
          received = true;
          failures = 0;
          if (this.handle(ev)) return this.refresh(id, signal);
        }
        // closed before the final state: reconnect from lastId; an empty stream counts as a failure
        if (!received) failures += 1;
        if (failures >= 3) return this.poll(id, signal);
      } catch (exc) {
        if (signal.aborted) return;
        if (exc instanceof ApiError && [401, 403, 404].includes(exc.status)) {
          $("job-action-status").textContent = exc.message;
          return;
        }
        failures += 1;
        // A proxy that buffers or drops streams: poll instead of retrying the stream forever.
        if (failures >= 3) return this.poll(id, signal);
      }
      await sleep(Math.min(5000, 500 * 2 ** failures), signal);
    }
  }

  async poll(id, signal) {
    this.log("live events unavailable; polling");
    while (!signal.aborted) {
      try {
        const { data } = await api.job(id);
        if (signal.aborted) return;
        this.render(data);
        if (FINISHED.has(data.status)) return this.finish(data);
      } catch (exc) {
        if (exc instanceof ApiError && exc.status && exc.status !== 503) {
          $("job-action-status").textContent = exc.message;
          return;
        }
      }
      await sleep(1000, signal);
    }
  }

  /** Apply one event; true once the job has finished. */
  handle({ id, event, data }) {
    const job = this.job;
    const at = this.eventTime(id);
    if (event === "progress") {
      job.progress = { fraction: data.fraction ?? 0, message: data.message ?? "" };
      this.renderProgress(job.progress);
      this.log(`${Math.round((data.fraction ?? 0) * 100)}% ${data.message ?? ""}`, at, "progress");
    } else if (event === "state") {
      job.status = data.status || job.status;
      if (data.status === "running" && !job.started_at) job.started_at = at;
      if (FINISHED.has(data.status)) job.finished_at = job.finished_at || at;
      $("job-status").textContent = job.status;
      $("job-status").dataset.status = job.status;
      $("job-cancel").disabled = FINISHED.has(job.status);
      this.log(`state ${job.status}${data.message ? `: ${data.message}` : ""}`, at, "state");
      return FINISHED.has(job.status);
    } else if (event === "log") {
      this.log(typeof data === "string" ? data : data.message || JSON.stringify(data), at, "log");
    } else {
      // engine events (a stage starting, a chunk): their label if they have one, else the JSON
      const text = typeof data === "string" ? data : data.label || data.stage || JSON.stringify(data);
      this.log(`${event}: ${String(text).slice(0, 200)}`, at, event);
    }
    return false;
  }

  async refresh(id, signal) {
    try {
      const { data } = await api.job(id);
      if (signal.aborted) return;
      this.render(data);
      this.finish(data);
    } catch (exc) {
      $("job-action-status").textContent = exc.message;
    }
  }

  finish(job, changed = true) {
    this.renderElapsed();
    const audio = job.artifacts.find((a) => playable(a.content_type));
    if (audio) this.listen(audio.name);
    if (changed) this.onFinished(job);
  }

  async listen(name) {
    const artifact = this.job.artifacts.find((a) => a.name === name);
    if (!artifact || this.audioFor === name) return;
    this.audioFor = name;
    const status = $("job-action-status");
    $("player").hidden = false;
    $("player-title").textContent = `Listen: ${name}`;
    try {
      // One authorized download feeds both the player and the waveform.
      const blob = await fetchBlob(artifact.url, { signal: this.controller?.signal });
      const url = URL.createObjectURL(blob);
      this.objectUrls.push(url);
      $("audio").src = url;
      this.waveform.set(await decode(await blob.arrayBuffer()), name);
    } catch (exc) {
      if (exc.name === "AbortError") return;
      status.textContent = exc instanceof ApiError ? exc.message : `Cannot decode ${name}: ${exc.message}`;
    }
  }

  async download(event) {
    const play = event.target.closest("button[data-listen]");
    if (play) return this.listen(play.dataset.listen);
    const link = event.target.closest("a[data-artifact]");
    // Without a key the plain link works; with one, the browser cannot add the header to a link.
    if (!link || !getKey()) return;
    event.preventDefault();
    try {
      const blob = await fetchBlob(link.getAttribute("href"));
      const url = URL.createObjectURL(blob);
      const temp = document.createElement("a");
      temp.href = url;
      temp.download = link.dataset.artifact;
      document.body.append(temp);
      temp.click();
      temp.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (exc) {
      $("job-action-status").textContent = exc.message;
    }
  }

  async cancel() {
    const job = this.job;
    if (!job) return;
    const status = $("job-action-status");
    status.textContent = "Canceling…";
    try {
      const { status: code, data } = await api.cancel(job.id);
      status.textContent = code === 202 ? "Cancel requested; the job stops at its next check." : "Canceled.";
      if (FINISHED.has(data.status)) {
        this.controller?.abort();
        this.render(data);
        this.finish(data);
      }
    } catch (exc) {
      status.textContent = exc.message;
    }
  }
}
