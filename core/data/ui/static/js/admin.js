// The admin console at /admin: dashboard, providers, models, jobs, API keys, analytics.
//
// Pages have real paths (/admin/jobs) served by aiport for any /admin/... URL; links are
// ordinary <a href>s (middle-click and copy-link work) that the console follows with
// history.pushState. The admin secret is kept in sessionStorage for this tab only.

import { ApiError, createClient, sessionSecret } from "./api.js";
import { barChart, sparkline } from "./charts.js";
import {
  alertBox, confirmButton, copy, dateTime, duration, every, field, h, isAsking, mount, number, redraw, say,
  showError,
} from "./dom.js";
import { createShell, signInForm } from "./shell.js";

const secret = sessionSecret("aiport.adminSecret");
const api = createClient(secret.get);
const get = (name, query) => api.call(name, query, { method: "GET" });

const PAGES = [
  { id: "dashboard", path: "admin", title: "Dashboard", render: dashboard },
  { id: "providers", path: "admin/providers", title: "Providers", render: providers },
  { id: "models", path: "admin/models", title: "Models", render: models },
  { id: "jobs", path: "admin/jobs", title: "Jobs", render: jobs },
  { id: "keys", path: "admin/keys", title: "API keys", render: keys },
  { id: "analytics", path: "admin/analytics", title: "Analytics", render: analytics },
];

const shell = createShell({
  product: "admin",
  home: "admin",
  groups: [{ label: "Admin", items: PAGES.map((p) => ({ id: p.id, title: p.title, href: p.path })) }],
  links: [{ label: "Feature pages", href: "./" }],
  navigate,
});
let cleanup = null;
let firstRender = true;

function root() { return new URL("./", document.baseURI).href; }

function currentPage() {
  const rel = location.href.startsWith(root()) ? location.href.slice(root().length) : "admin";
  const path = rel.split(/[?#]/)[0].replace(/\/+$/, "");
  return PAGES.find((p) => p.path === path) || PAGES[0];
}

function navigate(href, event) {
  if (event && (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey)) return;
  event?.preventDefault();
  const url = new URL(href, document.baseURI).href;
  if (url !== location.href) history.pushState(null, "", url);
  render();
}

function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  const page = currentPage();
  shell.setCurrent(page.id);
  shell.showNav(true);
  document.title = `${page.title} · aiport admin`;
  mount(shell.main);
  cleanup = page.render(shell.main) || null;
  if (!firstRender) shell.main.querySelector("h1")?.focus();
  firstRender = false;
}

function head(title, intro, ...extra) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, title), intro ? h("p", {}, intro) : null, extra);
}

function liveToggle(checked = true) {
  return field({ name: "live", label: "Live updates", type: "checkbox", value: checked });
}

function badge(text, kind = "") { return h("span", { class: `badge ${kind}` }, text); }

function table(headers, rows, empty = "Nothing here yet.") {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.num ? "num" : null, scope: "col" }, x.label ?? x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, empty)))));
}

const num = (label) => ({ label, num: true });

// ------------------------------------------------------------------ dashboard

/** What the dashboard polls, and the UI's own pages and files: left out of the request rate. */
const CONSOLE_APIS = new Set(["AdminData", "GetWorkerStats", "Metrics"]);
const CONSOLE_ROUTES = /\/(admin(\/\{tail\})?|ui\/static\/\{path\}|metrics)?$/;

/** The total of aiport_requests_total from /metrics, or null when /metrics is not served. */
async function requestTotal() {
  let text;
  try {
    text = await (await api.raw("metrics")).text();
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 401 || err.status === 403)) return null;
    throw err;
  }
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith("aiport_requests_total{")) continue;
    const api = /api="((?:[^"\\]|\\.)*)"/.exec(line)?.[1] || "";
    if (CONSOLE_APIS.has(api) || (api.startsWith("/") && CONSOLE_ROUTES.test(api))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
  }
  return total;
}

function dashboard(main) {
  const live = liveToggle();
  const box = alertBox();
  const cards = h("div", { class: "cards", "aria-label": "Totals" });
  const workers = h("div");
  const updated = h("p", { class: "small muted" });
  mount(main, head("Dashboard", "Live totals, request rate and every queue.", live), box, cards,
    h("section", { class: "panel", "aria-labelledby": "workers-h" }, h("h2", { id: "workers-h" }, "Workers and queues"),
      workers, updated));
  const samples = [];
  let last = null;
  let source = "metrics";
  async function tick() {
    const [data, stats] = await Promise.all([get("AdminData"), get("GetWorkerStats")]);
    let total = source === "metrics" ? await requestTotal() : null;
    if (total === null) {
      // /metrics is off or closed: count what the queues received instead.
      source = "queues";
      total = stats.results.filter((w) => w.name !== "callbacks").reduce((a, w) => a + (w.received || 0), 0);
    }
    const now = performance.now();
    if (last) samples.push(Math.max(0, (total - last.total) / ((now - last.at) / 1000)));
    if (samples.length > 60) samples.shift();
    last = { total, at: now };
    const rate = samples.length ? samples[samples.length - 1] : 0;
    const labels = { AiProviders: "AI providers", MediaProviders: "Media providers", ApiKeys: "Active API keys",
      QueuedJobs: "Queued jobs", RunningJobs: "Running jobs" };
    mount(cards,
      data.pageStats.map((s) => h("div", { class: "card" },
        h("div", { class: "value" }, number(s.total)), h("div", { class: "label" }, labels[s.label] || s.label))),
      h("div", { class: "card" }, h("div", { class: "value" }, rate.toFixed(rate < 10 ? 2 : 1)),
        h("div", { class: "label" }, source === "metrics" ? "Requests / second" : "Jobs received / second"),
        sparkline(samples, "Request rate over the last two minutes")));
    mount(workers, table(
      ["Queue", num("Queued"), num("Running"), num("Received"), num("Completed"), num("Retries"), num("Failed"),
        "Longest running"],
      stats.results.map((w) => h("tr", {},
        h("th", { scope: "row" }, w.name),
        h("td", { class: "num" }, number(w.queued)),
        h("td", { class: "num" }, `${w.running}${w.concurrency ? ` / ${w.concurrency}` : ""}`),
        h("td", { class: "num" }, number(w.received)), h("td", { class: "num" }, number(w.completed)),
        h("td", { class: "num" }, number(w.retries)),
        h("td", { class: "num" }, w.failed ? badge(number(w.failed), "bad") : "0"),
        h("td", {}, w.runningJob ? `job ${w.runningJob} · ${duration(w.runningTime)}` : "—"))),
      "No queues yet."));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    say(box, "");
  }
  return every(2000, tick, { onError: (err) => say(box, err.message), isActive: () => live.control.checked });
}

// ------------------------------------------------------------------ providers

const AI_TYPES = ["OpenAI", "Ollama", "Anthropic", "GoogleCloud", "GroqCloud", "Mistral", "OpenRouter", "Custom"];
const MEDIA_TYPES = ["ComfyUI", "Replicate", "OpenAI"];

function providerStatus(p) {
  if (!p.enabled) return badge("Disabled", "warn");
  if (!p.active) return badge("Not running", "bad");
  if (p.online === false) return badge("Offline", "bad");
  if (p.cooldownSeconds) return badge(`Cooling down ${Math.round(p.cooldownSeconds)} s`, "warn");
  return badge("Online", "ok");
}

function providers(main) {
  const box = alertBox();
  const status = h("p", { class: "alert info", role: "status" });
  const ai = h("div");
  const media = h("div");
  const form = providerForm(() => refresh());
  mount(main, head("Providers", "Every backend aiport routes to, with its health. Providers from the config file are read-only here."),
    box, status,
    h("section", { class: "panel", "aria-labelledby": "ai-h" }, h("h2", { id: "ai-h" }, "AI providers"), ai),
    h("section", { class: "panel", "aria-labelledby": "media-h" }, h("h2", { id: "media-h" }, "Media providers"), media),
    h("section", { class: "panel" }, h("details", {}, h("summary", {}, h("h2", { class: "inline" }, "Add a provider")), form)));

  async function act(message, work) {
    try {
      const result = await work();
      say(status, typeof message === "function" ? message(result) : message, "info");
      await refresh();
    } catch (err) {
      say(box, err.message);
    }
  }

  function rows(list, kind) {
    const kindName = kind === "chat" ? "Ai" : "Media";
    return list.map((p) => h("tr", {},
      h("th", { scope: "row" }, p.name, " ", badge(p.source, p.source === "runtime" ? "info" : "")),
      h("td", {}, p.aiTypeId || p.mediaTypeId || p.type, p.aiTypeId || p.mediaTypeId ? h("div", { class: "small muted" }, p.type) : null),
      h("td", {}, providerStatus(p)),
      h("td", { class: "num" }, p.active ? `${p.running ?? 0} / ${p.concurrency}` : "—"),
      h("td", { class: "num" }, p.priority),
      h("td", {}, p.models.length ? h("span", { title: p.models.map((m) => m.model).join(", ") },
        p.models.slice(0, 3).map((m) => m.model).join(", ") + (p.models.length > 3 ? ` +${p.models.length - 3}` : ""))
        : h("span", { class: "muted" }, "all it has")),
      h("td", { class: "small" }, p.lastError ? h("span", { class: "error-text" }, p.lastError) : "—"),
      h("td", {}, h("div", { class: "actions" },
        p.active ? h("button", { type: "button", class: "btn small", dataset: { key: `check:${p.name}` },
          onclick: () => act((r) => `${p.name} ${r.result ? "answered" : "did not answer"} the health check.`,
            () => api.call("CheckAiProviderStatus", { Provider: p.name })) }, "Check now") : null,
        p.active ? h("button", { type: "button", class: "btn small", dataset: { key: `online:${p.name}` },
          onclick: () => act((r) => r.result, () => api.call("ChangeAiProviderStatus", { Provider: p.name, Online: p.online === false })) },
        p.online === false ? "Bring online" : "Take offline") : null,
        p.readOnly ? null : h("button", { type: "button", class: "btn small", dataset: { key: `enable:${p.name}` },
          onclick: () => act(`${p.name} is ${p.enabled ? "disabled" : "enabled"}.`,
            () => api.call(`Update${kindName}Provider`, { Id: p.id, Enabled: !p.enabled })) }, p.enabled ? "Disable" : "Enable"),
        p.readOnly ? null : confirmButton("Delete", `Delete provider ${p.name}?`,
          () => act(`${p.name} was deleted.`, () => api.call(`Delete${kindName}Provider`, { Id: p.id })))))));
  }

  const headers = ["Name", "Type", "Status", num("Running"), num("Priority"), "Models", "Last error", "Actions"];
  async function refresh() {
    const [a, m] = await Promise.all([get("QueryAiProviders"), get("QueryMediaProviders")]);
    redraw(ai, () => table(headers, rows(a.results, "chat"), "No AI providers."));
    redraw(media, () => table(headers, rows(m.results, "media"), "No media providers."));
  }
  return every(5000, refresh, { onError: (err) => say(box, err.message), isActive: () => !isAsking(main) });
}

function providerForm(done) {
  const box = alertBox();
  const kind = field({ name: "kind", label: "Kind", type: "select", options: [["chat", "AI (chat)"], ["media", "Media"]] });
  const name = field({ name: "Name", label: "Name", required: true, hint: "Also the name of its queue." });
  const typeId = field({ name: "AiTypeId", label: "Type", type: "select", options: AI_TYPES.map((t) => [t, t]) });
  const type = field({ name: "Type", label: "aiport plugin type", hint: "Instead of Type: any provider type a plugin registered." });
  const baseUrl = field({ name: "ApiBaseUrl", label: "Base URL", placeholder: "https://…" });
  const apiKey = field({ name: "ApiKey", label: "API key", type: "password", hint: "Stored in aiport's database; never shown again." });
  const apiKeyVar = field({ name: "ApiKeyVar", label: "API key environment variable", hint: "Instead of the key itself." });
  const concurrency = field({ name: "Concurrency", label: "Concurrency", type: "number", min: 1, step: 1, value: "1" });
  const priority = field({ name: "Priority", label: "Priority", type: "number", step: 1, value: "0",
    hint: "Higher is tried first." });
  const modelsField = field({ name: "Models", label: "Models", type: "textarea", rows: 2,
    hint: "Model ids, separated by commas or new lines (required for AI providers; media: empty serves all)." });
  const enabled = field({ name: "Enabled", label: "Enabled", type: "checkbox", value: true });
  kind.control.addEventListener("change", () => {
    const chat = kind.control.value === "chat";
    mount(typeId.control, (chat ? AI_TYPES : MEDIA_TYPES).map((t) => h("option", { value: t }, t)));
    typeId.control.name = chat ? "AiTypeId" : "MediaTypeId";
    typeId.control.dataset.field = typeId.control.name.toLowerCase();
  });
  const form = h("form", { novalidate: true }, box, h("div", { class: "fields" }, kind, name, typeId),
    h("div", { class: "fields" }, baseUrl, concurrency, priority), h("div", { class: "fields" }, apiKey, apiKeyVar),
    modelsField, enabled, h("details", { class: "advanced" }, h("summary", {}, "Advanced"), type),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Add provider")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { Name: name.control.value.trim(), Enabled: enabled.control.checked };
    if (type.control.value.trim()) body.Type = type.control.value.trim();
    else body[typeId.control.name] = typeId.control.value;
    for (const f of [baseUrl, apiKey, apiKeyVar]) if (f.control.value.trim()) body[f.control.name] = f.control.value.trim();
    for (const f of [concurrency, priority]) if (f.control.value !== "") body[f.control.name] = Number(f.control.value);
    const list = modelsField.control.value.split(/[\s,]+/).filter(Boolean);
    if (list.length) body.Models = list;
    try {
      await api.call(kind.control.value === "chat" ? "CreateAiProvider" : "CreateMediaProvider", body);
      say(box, `Provider ${body.Name} was added.`, "ok");
      form.reset();
      kind.control.dispatchEvent(new Event("change")); // the type list follows the kind again
      done();
    } catch (err) {
      showError(form, box, err);
    }
  });
  return form;
}

// ------------------------------------------------------------------ models

const MEDIA_TASKS = ["TextToImage", "ImageToImage", "ImageWithMask", "ImageUpscale", "ImageToText", "TextToSpeech",
  "SpeechToText"];

function models(main) {
  const box = alertBox();
  const chat = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const media = h("div");
  mount(main, head("Models", "The model ids clients can ask for, and who serves them."), box,
    h("section", { class: "panel", "aria-labelledby": "chat-models-h" }, h("h2", { id: "chat-models-h" }, "Chat models"), chat),
    h("section", { class: "panel", "aria-labelledby": "media-models-h" }, h("h2", { id: "media-models-h" }, "Media models"), media));
  (async () => {
    const [active, aiProviders, ...perTask] = await Promise.all([get("ActiveAiModels"), get("QueryAiProviders"),
      ...MEDIA_TASKS.map((t) => get("ActiveMediaModels", { Task: t }))]);
    mount(chat, table(["Model", "Providers"], active.results.map((m) => h("tr", {},
      h("th", { scope: "row", class: "mono" }, m),
      h("td", {}, aiProviders.results.filter((p) => p.models.some((x) => x.model === m)).map((p) => p.name).join(", ") || "—"))),
    "No chat models."));
    mount(media, table(["Task", "Model", "Provider's name"], MEDIA_TASKS.flatMap((task, i) => perTask[i].results.map((m) =>
      h("tr", {}, h("td", {}, task), h("th", { scope: "row", class: "mono" }, m.key), h("td", { class: "mono" }, m.value)))),
    "No media models."));
  })().catch((err) => say(box, err.message));
}

// ------------------------------------------------------------------ jobs

const STATES = ["Queued", "Started", "Executed", "Completed", "Failed", "Cancelled"];
const ACTIVE = ["Queued", "Started", "Executed"];

function stateBadge(state) {
  const kind = { Completed: "ok", Failed: "bad", Cancelled: "warn", Started: "info", Executed: "info" }[state] || "";
  return badge(state, kind);
}

function jobs(main) {
  const box = alertBox();
  const live = liveToggle();
  const stateF = field({ name: "States", label: "State", type: "select",
    options: [["", "Any"], ["active", "Active (queued or running)"], ...STATES.map((s) => [s, s])] });
  const providerF = field({ name: "Provider", label: "Provider / queue" });
  const apiF = field({ name: "Api", label: "API", placeholder: "TextToImage" });
  const tagF = field({ name: "Tag", label: "Tag" });
  const keyF = field({ name: "KeyId", label: "Key id", type: "number", min: 0, step: 1 });
  const jobF = field({ name: "JobId", label: "Job id", type: "number", min: 1, step: 1 });
  const filters = h("form", { class: "panel", novalidate: true, "aria-label": "Filter jobs" },
    h("div", { class: "fields" }, stateF, providerF, apiF, tagF, keyF, jobF),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Apply"),
      h("button", { type: "reset", class: "btn" }, "Reset")));
  const list = h("div");
  const pager = h("div", { class: "actions" });
  const status = h("p", { class: "alert info", role: "status" });
  mount(main, head("Jobs", "Active jobs and those finished in the last minutes, newest first.", live), filters, box, status,
    h("section", { class: "panel", "aria-label": "Jobs" }, list, pager));
  const take = 25;
  let skip = 0;
  const details = new Map(); // job id -> its detailed record (shown under its row)

  function query() {
    const q = { Skip: skip, Take: take };
    const state = stateF.control.value;
    if (state) q.States = state === "active" ? ACTIVE : [state];
    for (const f of [providerF, apiF, tagF]) if (f.control.value.trim()) q[f.control.name] = f.control.value.trim();
    for (const f of [keyF, jobF]) if (f.control.value !== "") q[f.control.name] = Number(f.control.value);
    return q;
  }

  async function act(message, work) {
    try { await work(); say(status, message, "info"); await refresh(); } catch (err) { say(box, err.message); }
  }

  async function toggle(id) {
    if (details.has(id)) details.delete(id);
    else details.set(id, await detail(id));
    await refresh();
  }

  function row(j) {
    const running = j.state === "Started" || j.state === "Executed";
    const open = details.has(j.id);
    const out = [h("tr", {},
      h("th", { scope: "row", class: "num" }, j.id),
      h("td", {}, j.api, j.tag ? h("div", { class: "small muted" }, `tag ${j.tag}`) : null),
      h("td", {}, j.provider || j.queue),
      h("td", {}, stateBadge(j.state)),
      h("td", {}, running && typeof j.progress === "number"
        ? h("progress", { max: 1, value: j.progress, "aria-label": `Job ${j.id} progress` }) : null,
      h("div", { class: "small" }, j.state === "Failed" && j.error ? (j.error.message || j.status) : j.status)),
      h("td", { class: "num" }, j.keyId || "—"),
      h("td", { class: "num" }, `${j.attempts} / ${j.maxAttempts}`),
      h("td", { class: "small" }, dateTime(j.createdDate)),
      h("td", { class: "num" }, duration(j.duration)),
      h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", class: "btn small", "aria-expanded": open ? "true" : "false",
          dataset: { key: `details:${j.id}` }, onclick: () => toggle(j.id).catch((err) => say(box, err.message)) },
        open ? "Hide" : "Details"),
        ACTIVE.includes(j.state) ? confirmButton("Cancel", `Cancel job ${j.id}?`,
          () => act(`Job ${j.id} was cancelled.`, () => api.call("AdminCancelJob", { JobId: j.id }))) : null,
        j.state === "Failed" || j.state === "Cancelled" ? h("button", { type: "button", class: "btn small",
          dataset: { key: `requeue:${j.id}` },
          onclick: () => act(`Job ${j.id} was queued again.`, () => api.call("RequeueJob", { JobId: j.id })) }, "Requeue") : null)))];
    if (open) {
      const d = details.get(j.id) || {};
      const shown = { refId: d.refId, replyTo: d.replyTo, error: d.error, request: d.request, response: d.response, outputs: d.outputs };
      out.push(h("tr", { class: "details" }, h("td", { colspan: 10 }, h("pre", {}, JSON.stringify(shown, null, 2)))));
    }
    return out;
  }

  async function detail(id) {
    return (await api.call("QueryJobs", { JobId: id, IncludeDetails: true })).results[0] || null;
  }

  async function refresh() {
    const r = await api.call("QueryJobs", query());
    // Open details follow the job live too.
    await Promise.all([...details.keys()].map(async (id) => details.set(id, await detail(id))));
    redraw(list, () => table(["Id", "API", "Provider", "State", "Status", num("Key"), num("Attempts"), "Created",
      num("Duration"), "Actions"], r.results.flatMap(row), "No jobs match."));
    mount(pager,
      h("button", { type: "button", class: "btn small", disabled: skip === 0,
        onclick: () => { skip = Math.max(0, skip - take); refresh(); } }, "Newer"),
      h("span", { class: "small muted" }, r.results.length ? `Jobs ${skip + 1}–${skip + r.results.length}` : ""),
      h("button", { type: "button", class: "btn small", disabled: !r.hasMore,
        onclick: () => { skip += take; refresh(); } }, "Older"));
  }

  filters.addEventListener("submit", (e) => { e.preventDefault(); skip = 0; refresh().catch((err) => showError(filters, box, err)); });
  filters.addEventListener("reset", () => setTimeout(() => { skip = 0; refresh().catch((err) => say(box, err.message)); }));
  return every(2000, refresh, { onError: (err) => say(box, err.message),
    isActive: () => live.control.checked && !isAsking(main) });
}

// ------------------------------------------------------------------ API keys

function keyStatus(k) {
  if (k.cancelledDate) return badge("Revoked", "bad");
  if (!k.active) return badge("Expired", "warn");
  return badge("Active", "ok");
}

function keys(main) {
  const box = alertBox();
  const status = h("p", { class: "alert info", role: "status" });
  const reveal = h("div");
  const list = h("div");
  const showRevoked = field({ name: "revoked", label: "Show revoked keys", type: "checkbox", value: true });
  const f = {
    name: field({ name: "Name", label: "Name", required: true, hint: "Who or what uses the key." }),
    admin: field({ name: "Scopes", label: "Admin scope (full access to the admin APIs)", type: "checkbox" }),
    restrict: field({ name: "RestrictTo", label: "Restrict to APIs", placeholder: "TextToImage, OpenAiChatCompletion",
      hint: "API names, comma-separated; empty allows every API." }),
    expires: field({ name: "ExpiresInDays", label: "Expires in (days)", type: "number", min: 1, step: 1 }),
    rpm: field({ name: "RequestsPerMinute", label: "Requests / minute", type: "number", min: 0, step: 1 }),
    conc: field({ name: "ConcurrentRequests", label: "Concurrent requests", type: "number", min: 0, step: 1 }),
    tpm: field({ name: "TokensPerMinute", label: "Tokens / minute", type: "number", min: 0, step: 1 }),
    notes: field({ name: "Notes", label: "Notes", type: "textarea", rows: 2 }),
  };
  const createBox = alertBox();
  const form = h("form", { class: "panel", novalidate: true, "aria-labelledby": "new-key-h" },
    h("h2", { id: "new-key-h" }, "Create a key"), createBox, h("div", { class: "fields" }, f.name, f.restrict),
    h("div", { class: "fields" }, f.expires, f.rpm, f.conc, f.tpm), f.notes, f.admin,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn primary" }, "Create key")));
  mount(main, head("API keys", "Keys for apps and people; a key's secret is shown once, when it is created."),
    box, status, reveal, form,
    h("section", { class: "panel", "aria-labelledby": "keys-h" },
      h("div", { class: "row" }, h("h2", { id: "keys-h" }, "Keys"), showRevoked), list));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { Name: f.name.control.value.trim() };
    if (f.admin.control.checked) body.Scopes = ["Admin"];
    const restrict = f.restrict.control.value.split(/[\s,]+/).filter(Boolean);
    if (restrict.length) body.RestrictTo = restrict;
    for (const x of [f.expires, f.rpm, f.conc, f.tpm]) if (x.control.value !== "") body[x.control.name] = Number(x.control.value);
    if (f.notes.control.value.trim()) body.Notes = f.notes.control.value.trim();
    try {
      const created = await api.call("CreateApiKey", body);
      say(createBox, "");
      form.reset();
      showSecret(created);
      await refresh();
    } catch (err) {
      showError(form, createBox, err);
    }
  });

  function showSecret(created) {
    const input = h("input", { type: "text", readonly: true, value: created.key, "aria-label": `Secret of key ${created.name}`,
      class: "mono", id: "new-key-secret" });
    const copyBtn = h("button", { type: "button", class: "btn", onclick: () => copy(copyBtn, created.key) }, "Copy");
    const doneBtn = h("button", { type: "button", class: "btn primary", onclick: () => { mount(reveal); f.name.control.focus(); } },
      "I have saved it");
    mount(reveal, h("section", { class: "secret-box", role: "alert", "aria-labelledby": "secret-h" },
      h("h2", { id: "secret-h" }, `Key “${created.name}” created`),
      h("p", {}, "Copy the key now: this is the only time aiport shows it."),
      h("div", { class: "row" }, h("div", { class: "grow" }, input), copyBtn, doneBtn)));
    input.focus();
    input.select();
  }

  function limits(k) {
    const parts = [k.requestsPerMinute && `${k.requestsPerMinute} rpm`, k.concurrentRequests && `${k.concurrentRequests} at once`,
      k.tokensPerMinute && `${k.tokensPerMinute} tpm`].filter(Boolean);
    return parts.join(", ") || "—";
  }

  async function refresh() {
    const r = await api.call("QueryApiKeys", { IncludeRevoked: showRevoked.control.checked, Take: 500 });
    redraw(list, () => table(["Id", "Name", "Key", "Scopes", "Restricted to", "Limits", "Created", "Expires", "Status", "Actions"],
      r.results.map((k) => h("tr", { dataset: { keyId: k.id } },
        h("td", { class: "num" }, k.id),
        h("th", { scope: "row" }, k.name, k.notes ? h("div", { class: "small muted" }, k.notes) : null),
        h("td", { class: "mono" }, k.visibleKey),
        h("td", {}, k.scopes.join(", ") || "—"),
        h("td", { class: "small" }, k.restrictTo.join(", ") || "any API"),
        h("td", { class: "small" }, limits(k)),
        h("td", { class: "small" }, dateTime(k.createdDate)),
        h("td", { class: "small" }, k.expiryDate ? dateTime(k.expiryDate) : "never"),
        h("td", {}, keyStatus(k)),
        h("td", {}, h("div", { class: "actions" },
          k.cancelledDate ? null : confirmButton("Revoke", `Revoke key ${k.name}? Apps using it stop working at once.`,
            () => act(`Key ${k.name} was revoked.`, () => api.call("RevokeApiKey", { Id: k.id }))),
          confirmButton("Delete", `Delete key ${k.name} for good?`,
            () => act(`Key ${k.name} was deleted.`, () => api.call("DeleteApiKey", { Id: k.id }))))))),
      "No keys yet. Create one with the form."));
  }

  async function act(message, work) {
    try { await work(); say(status, message, "info"); await refresh(); } catch (err) { say(box, err.message); }
  }

  showRevoked.control.addEventListener("change", () => refresh().catch((err) => say(box, err.message)));
  return every(10000, refresh, { onError: (err) => say(box, err.message), isActive: () => !isAsking(main) });
}

// ------------------------------------------------------------------ analytics

const DIMENSIONS = [
  ["providerStats", "provider"], ["modelStats", "model"], ["keyStats", "API key"], ["monthStats", "month"], ["apiStats", "API"],
];

function analytics(main) {
  const box = alertBox();
  const from = field({ name: "From", label: "From", type: "date" });
  const to = field({ name: "To", label: "To", type: "date" });
  const form = h("form", { class: "panel", novalidate: true, "aria-label": "Period" },
    h("div", { class: "fields" }, from, to, h("div", { class: "field btn-cell" },
      h("button", { type: "submit", class: "btn primary" }, "Show"))));
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Group by" });
  const panelEl = h("div", { role: "tabpanel", id: "analytics-panel", tabindex: "0" });
  mount(main, head("Analytics", "Requests, tokens and latency by provider, model, API key, month and API."), box, form,
    tabs, panelEl);
  let data = null;
  let selected = 0;
  const buttons = DIMENSIONS.map(([, label], i) => h("button", {
    type: "button", role: "tab", id: `tab-${i}`, "aria-controls": "analytics-panel",
    onclick: () => select(i),
    onkeydown: (e) => {
      // Arrow keys move between tabs, as in every tab list.
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) { e.preventDefault(); select((selected + step + DIMENSIONS.length) % DIMENSIONS.length, true); }
    },
  }, `By ${label}`));
  mount(tabs, buttons);

  function select(i, focus = false) {
    selected = i;
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", i === j ? "true" : "false");
      b.tabIndex = i === j ? 0 : -1;
    });
    panelEl.setAttribute("aria-labelledby", `tab-${i}`);
    if (focus) buttons[i].focus();
    draw();
  }

  function draw() {
    if (!data) return;
    const [key, label] = DIMENSIONS[selected];
    const stats = data[key] || [];
    const name = (s) => s.name || "(none)";
    mount(panelEl, h("div", { class: "charts" },
      barChart({ title: `Requests by ${label}`, series: ["Succeeded", "Failed"],
        rows: stats.map((s) => ({ label: name(s), values: [s.total - s.errors, s.errors] })) }),
      barChart({ title: `Tokens by ${label}`, series: ["Prompt", "Completion"],
        rows: stats.map((s) => ({ label: name(s), values: [s.totalPromptTokens, s.totalCompletionTokens] })) }),
      barChart({ title: `Average latency by ${label}`, series: ["Seconds per request"],
        format: (v) => `${v.toFixed(2)} s`,
        rows: stats.map((s) => ({ label: name(s), values: [s.total ? (s.totalMinutes * 60) / s.total : 0] })) }),
      barChart({ title: `Tokens per second by ${label}`, series: ["Tokens / s"],
        format: (v) => v.toFixed(1), rows: stats.map((s) => ({ label: name(s), values: [s.tokensPerSecond] })) })));
  }

  async function load() {
    const q = {};
    if (from.control.value) q.From = `${from.control.value}T00:00:00Z`;
    if (to.control.value) {
      const end = new Date(`${to.control.value}T00:00:00Z`);
      end.setUTCDate(end.getUTCDate() + 1); // the whole "to" day
      q.To = end.toISOString();
    }
    try {
      data = await api.call("GetSummaryStats", q);
      say(box, "");
      draw();
    } catch (err) {
      showError(form, box, err);
    }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  select(0);
  load();
}

// ------------------------------------------------------------------ start

function showSignIn(message) {
  if (cleanup) { cleanup(); cleanup = null; }
  shell.showNav(false);
  shell.signOut.hidden = true;
  shell.who.textContent = "";
  document.title = "Sign in · aiport admin";
  signInForm(shell.main, {
    heading: "Admin sign-in",
    intro: "Sign in with the admin secret (auth.admin_secret) or an API key with the Admin scope. It is kept in this browser tab only.",
    label: "Admin secret",
    message,
    async check(value) {
      await api.call("AdminData", undefined, { method: "GET", token: value });
      secret.set(value);
      signedIn();
    },
  });
}

function signedIn() {
  shell.who.textContent = "Signed in as admin";
  shell.signOut.hidden = false;
  render();
}

async function start() {
  shell.signOut.addEventListener("click", () => { secret.clear(); showSignIn("You are signed out."); });
  window.addEventListener("popstate", () => { if (secret.get()) render(); });
  if (!secret.get()) { showSignIn(); return; }
  try {
    await get("AdminData");
    signedIn();
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      secret.clear();
      showSignIn("The saved admin secret is no longer accepted; sign in again.");
    } else {
      mount(shell.main, h("div", { class: "alert error", role: "alert" }, `aiport did not answer: ${err.message}`));
    }
  }
}

start();
