// The console's entry point: wires the API key, the model picker and its generated form, the
// submit action, the opened job and the job list. State lives in the page and in the URL hash
// (#job=<id>); the API key lives in this tab's sessionStorage only.

import { api, ApiError, getKey, setKey } from "./api.js";
import { buildPayloadForm, FieldError } from "./form.js";
import { JobList } from "./joblist.js";
import { JobView } from "./jobview.js";

const $ = (id) => document.getElementById(id);

const state = { models: [], form: null };

const jobView = new JobView({ onFinished: () => jobList.refresh() });
const jobList = new JobList({ onOpen: (id) => openJob(id), onError: (exc) => authProblem(exc) });

// ---- API key ---------------------------------------------------------------------------------

function authProblem(exc) {
  if (!(exc instanceof ApiError) || exc.status !== 401) return false;
  $("api-key-error").textContent = exc.message;
  $("api-key").setAttribute("aria-invalid", "true");
  return true;
}

function clearAuthProblem() {
  $("api-key-error").textContent = "";
  $("api-key").removeAttribute("aria-invalid");
}

$("api-key").value = getKey();
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setKey($("api-key").value.trim());
  clearAuthProblem();
  reloadAll();
});
$("key-forget").addEventListener("click", () => {
  setKey("");
  $("api-key").value = "";
  clearAuthProblem();
  reloadAll();
});

// ---- models and the payload form -------------------------------------------------------------

async function loadModels() {
  const status = $("models-status");
  status.textContent = "Loading models…";
  try {
    const { data } = await api.models();
    state.models = data.models;
    clearAuthProblem();
    status.textContent = "";
  } catch (exc) {
    state.models = [];
    status.textContent = exc.message;
    if (!authProblem(exc)) $("model-error").textContent = exc.message;
  }
  renderModels();
}

function renderModels() {
  const list = $("models");
  list.replaceChildren();
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren();
  for (const model of state.models) {
    const li = document.createElement("li");
    li.dataset.model = model.name;
    li.dataset.available = String(model.available);
    const name = document.createElement("strong");
    name.textContent = model.name;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.status = model.available ? "available" : "unavailable";
    badge.textContent = model.available ? "available" : "unavailable";
    const desc = document.createElement("p");
    desc.textContent = model.description;
    li.append(name, " ", badge, desc);
    if (!model.available) {
      const reason = document.createElement("p");
      reason.className = "reason";
      reason.textContent = `Why: ${model.reason}`;
      li.append(reason);
    } else if (model.note) {
      const note = document.createElement("p");
      note.className = "hint";
      note.textContent = model.note;
      li.append(note);
    }
    if (model.queue_depth != null) {
      const depth = document.createElement("p");
      depth.className = "hint";
      depth.textContent = `queue ${model.queue}: ${model.queue_depth} waiting`;
      li.append(depth);
    }
    list.append(li);

    const option = new Option(model.available ? model.name : `${model.name} (unavailable)`, model.name);
    option.disabled = !model.available;
    select.append(option);
  }
  const usable = state.models.filter((m) => m.available).map((m) => m.name);
  select.value = usable.includes(chosen) ? chosen : usable.includes("jen1") ? "jen1" : usable[0] || "";
  jobList.setModels(state.models.map((m) => m.name));
  modelChanged();
}

function modelChanged() {
  const model = state.models.find((m) => m.name === $("model").value);
  $("model-hint").textContent = model ? model.description : "";
  $("model-error").textContent = "";
  $("submit").disabled = !model;
  if (!model) {
    state.form = null;
    $("payload-fields").replaceChildren();
    $("advanced-fields").replaceChildren();
    return;
  }
  state.form = buildPayloadForm(model.input_schema, $("payload-fields"), $("advanced-fields"));
}

$("model").addEventListener("change", modelChanged);

// ---- submit ------------------------------------------------------------------------------------

const JOB_FIELDS = { model: "model", priority: "job-priority", timeout_s: "job-timeout_s" };

function clearErrors() {
  state.form?.clearErrors();
  for (const id of Object.values(JOB_FIELDS)) {
    $(`${id}-error`).textContent = "";
    $(id).removeAttribute("aria-invalid");
  }
}

/** Put a 422 (or a client-side FieldError) next to its field; false when no field matches. */
function showFieldError(field, fullMessage) {
  // next to the field, its name and the "Invalid input" lead are already obvious
  const message = fullMessage.replace(/^Invalid input: /, "").replace(`${field}: `, "");
  if (state.form?.showError(field, message)) {
    const name = field.split(".")[1] || "payload";
    state.form.focus(name);
    return true;
  }
  const id = JOB_FIELDS[field];
  if (!id) return false;
  $(`${id}-error`).textContent = message;
  $(id).setAttribute("aria-invalid", "true");
  if (id !== "model") $("advanced").open = true;
  $(id).focus();
  return true;
}

function numberField(id) {
  const input = $(id);
  if (input.validity.badInput) throw new FieldError(input.name, "not a number");
  return input.value.trim() === "" ? undefined : Number(input.value);
}

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const status = $("submit-status");
  // read from the fieldset, not the form: a model may have a payload field called "mode"
  const mode = document.querySelector("fieldset.mode input:checked").value;
  let body;
  try {
    body = { model: $("model").value, mode, payload: state.form.collect() };
    const priority = numberField("job-priority");
    const timeout = numberField("job-timeout_s");
    if (priority !== undefined) body.priority = priority;
    if (timeout !== undefined) body.timeout_s = timeout;
  } catch (exc) {
    if (!(exc instanceof FieldError)) throw exc;
    showFieldError(exc.field, exc.message);
    status.textContent = "Fix the marked field.";
    return;
  }
  $("submit").disabled = true;
  status.textContent = mode === "sync" ? "Running (sync): waiting for the result…" : "Submitting…";
  try {
    const { status: code, data } = await api.submit(body);
    status.textContent =
      code === 200
        ? `Job ${data.id} ${data.status}.`
        : mode === "sync"
          ? `Job ${data.id} is still running; following it.`
          : `Job ${data.id} accepted.`;
    showJob(data);
    revealJob();
    jobList.refresh();
  } catch (exc) {
    if (!(exc instanceof ApiError)) throw exc;
    authProblem(exc);
    const placed = exc.status === 422 && showFieldError(exc.field, exc.message);
    status.textContent = placed ? "The gateway rejected a field; see the message next to it." : exc.message;
  } finally {
    $("submit").disabled = false;
  }
});

// ---- opening jobs ------------------------------------------------------------------------------

function showJob(job) {
  jobView.open(job);
  history.replaceState(null, "", `#job=${encodeURIComponent(job.id)}`);
}

// After Submit (a long form leaves the page scrolled to its button) the job's title, progress and
// player come into view: the title goes to the top unless it already sits in the top third.
function revealJob() {
  const top = $("job-title").getBoundingClientRect().top;
  if (top < 0 || top > window.innerHeight / 3) $("job-title").scrollIntoView({ block: "start" });
}

async function openJob(id, { quiet = false } = {}) {
  const error = $("open-id-error");
  error.textContent = "";
  $("open-id").removeAttribute("aria-invalid");
  try {
    const { data } = await api.job(id);
    showJob(data);
    $("job-title").scrollIntoView({ block: "start" });
    if (!quiet) $("job-title").focus();
  } catch (exc) {
    if (!(exc instanceof ApiError)) throw exc;
    if (authProblem(exc)) return;
    error.textContent = exc.message;
    $("open-id").setAttribute("aria-invalid", "true");
  }
}

$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("open-id").value.trim();
  if (!id) {
    $("open-id-error").textContent = "Enter a job id.";
    return;
  }
  openJob(id);
});

function reloadAll() {
  loadModels();
  jobList.reset();
}

function linkedJob() {
  return new URLSearchParams(location.hash.slice(1)).get("job");
}

// a pasted or edited #job=<id> link opens that job (replaceState above does not fire this)
window.addEventListener("hashchange", () => {
  const id = linkedJob();
  if (id && id !== jobView.job?.id) openJob(id, { quiet: true });
});

reloadAll();
if (linkedJob()) openJob(linkedJob(), { quiet: true });
