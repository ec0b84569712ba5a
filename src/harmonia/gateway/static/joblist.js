// The caller's jobs, newest first, filtered by status and model, a page at a time. The API pages
// forward with `next_cursor`; going back re-reads the page from the cursor that opened it.

import { api } from "./api.js";

const PAGE_SIZE = 10;
const $ = (id) => document.getElementById(id);

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

export class JobList {
  constructor({ onOpen, onError }) {
    this.onOpen = onOpen;
    this.onError = onError;
    this.cursors = [null]; // cursors[i] opens page i
    this.page = 0;
    this.next = null;
    $("jobs-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      this.reset();
    });
    for (const id of ["filter-status", "filter-model"]) $(id).addEventListener("change", () => this.reset());
    $("jobs-older").addEventListener("click", () => this.go(this.page + 1));
    $("jobs-newer").addEventListener("click", () => this.go(this.page - 1));
    $("jobs-body").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-job]");
      if (button) this.onOpen(button.dataset.job);
    });
  }

  setModels(names) {
    const select = $("filter-model");
    const chosen = select.value;
    select.replaceChildren(new Option("any", ""));
    for (const name of names) select.append(new Option(name, name));
    select.value = names.includes(chosen) ? chosen : "";
  }

  reset() {
    this.cursors = [null];
    return this.go(0);
  }

  /** Reload the page shown now (after a submit or a finished job). */
  refresh() {
    return this.go(this.page);
  }

  async go(page) {
    if (page < 0 || page >= this.cursors.length) return;
    const status = $("jobs-status");
    status.textContent = "Loading…";
    try {
      const { data } = await api.jobs({
        status: $("filter-status").value,
        model: $("filter-model").value,
        limit: PAGE_SIZE,
        cursor: this.cursors[page],
      });
      this.page = page;
      this.cursors.length = page + 1;
      if (data.next_cursor) this.cursors.push(data.next_cursor);
      this.render(data.jobs);
      status.textContent = data.jobs.length ? "" : "No jobs match.";
    } catch (exc) {
      status.textContent = exc.message;
      this.onError(exc);
    }
  }

  render(jobs) {
    const body = $("jobs-body");
    body.replaceChildren();
    for (const job of jobs) {
      const row = body.insertRow();
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link";
      open.dataset.job = job.id;
      open.textContent = job.id;
      open.setAttribute("aria-label", `Open job ${job.id}`);
      row.insertCell().append(open);
      row.insertCell().textContent = job.model;
      const status = row.insertCell();
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.status = job.status;
      badge.textContent = job.status === "running"
        ? `running ${Math.round((job.progress?.fraction || 0) * 100)}%`
        : job.status;
      status.append(badge);
      row.insertCell().textContent = when(job.created_at);
    }
    $("jobs-page").textContent = `Page ${this.page + 1}`;
    $("jobs-newer").disabled = this.page === 0;
    $("jobs-older").disabled = this.page + 1 >= this.cursors.length;
  }
}
