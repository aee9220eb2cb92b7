// DOM helpers shared by the feature pages and the admin console.
//
// Everything is built with createElement and textContent (never innerHTML with data),
// so text from models, users or upstream errors cannot inject markup.

/**
 * h("button", {class: "btn", onclick: fn}, "Save") -> element.
 * Attributes: `class`, `for`, `on<event>` handlers, `dataset`, `style`, boolean DOM
 * properties (`disabled`, `checked`, `hidden`...) and plain attributes.
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "for") el.htmlFor = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    // Set as defaults too, so form.reset() returns to them.
    else if (key === "value" && el.tagName === "INPUT") { el.defaultValue = value; el.value = value; }
    else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked") { el.defaultChecked = true; el.checked = true; }
    else if (value === true && key in el) el[key] = true;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function nextId(prefix = "f") { uid += 1; return `${prefix}-${uid}`; }

/**
 * A labelled form control with a hint and a slot for its error, linked by aria-describedby.
 * spec: {name, label, type: text|password|number|textarea|select|checkbox|file|date, value,
 *        options: [[value, label]], hint, required, min, max, step, accept, placeholder, rows}
 */
export function field(spec) {
  const id = spec.id || nextId(spec.name || "f");
  const hintId = `${id}-hint`;
  const errId = `${id}-err`;
  const common = {
    id, name: spec.name, required: !!spec.required, "aria-describedby": `${spec.hint ? hintId + " " : ""}${errId}`,
    dataset: { field: (spec.name || "").toLowerCase() },
  };
  let control;
  if (spec.type === "textarea") {
    control = h("textarea", { ...common, rows: spec.rows || 3, placeholder: spec.placeholder, maxlength: spec.maxlength });
    if (spec.value !== undefined) control.value = spec.value;
  } else if (spec.type === "select") {
    control = h("select", common, (spec.options || []).map(([v, l]) => h("option", { value: v }, l ?? v)));
    if (spec.value !== undefined) control.value = spec.value;
  } else if (spec.type === "checkbox") {
    control = h("input", { ...common, type: "checkbox", checked: !!spec.value });
  } else {
    control = h("input", {
      ...common, type: spec.type || "text", min: spec.min, max: spec.max, step: spec.step, accept: spec.accept,
      placeholder: spec.placeholder, autocomplete: spec.autocomplete || (spec.type === "password" ? "off" : undefined),
      capture: spec.capture, value: spec.value,
    });
  }
  const label = h("label", { for: id }, spec.label, spec.required ? h("span", { "aria-hidden": "true" }, " *") : null);
  const hint = spec.hint ? h("span", { class: "hint", id: hintId }, spec.hint) : null;
  const error = h("span", { class: "field-error", id: errId, hidden: true });
  const wrap = spec.type === "checkbox"
    ? h("div", { class: "field check" }, control, label, hint, error)
    : h("div", { class: "field" }, label, control, hint, error);
  wrap.control = control;
  return wrap;
}

/** An alert region for a form's overall error or success message (announced when it changes). */
export function alertBox() {
  return h("div", { class: "alert", role: "alert", "aria-live": "assertive" });
}

/** Show a message (kind: error | ok | info) in an alert box, or clear it with "". */
export function say(box, message, kind = "error") {
  box.className = `alert ${message ? kind : ""}`;
  box.textContent = message || "";
}

/** Clear every field error in `root`. */
export function clearErrors(root) {
  for (const el of root.querySelectorAll(".field-error")) { el.textContent = ""; el.hidden = true; }
  for (const el of root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/**
 * Show an ApiError: its message in `box`, and each field error next to its field
 * (matched by name, case-insensitively, as aiport matches property names). The first
 * invalid field gets the focus so keyboard and screen-reader users land on it.
 */
export function showError(root, box, err) {
  clearErrors(root);
  if (err && err.name === "AbortError") return;
  say(box, (err && err.message) || String(err), "error");
  let first = null;
  for (const fe of (err && err.fieldErrors) || []) {
    const name = String(fe.fieldName || "").toLowerCase();
    const control = root.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!control) continue;
    control.setAttribute("aria-invalid", "true");
    const slot = control.closest(".field")?.querySelector(".field-error");
    if (slot) { slot.textContent = fe.message || fe.errorCode; slot.hidden = false; }
    first = first || control;
  }
  if (first) first.focus();
}

/** XSD duration (PT1M2.5S) or milliseconds to a short human string. */
export function duration(value) {
  if (value === null || value === undefined || value === "") return "";
  let seconds;
  if (typeof value === "number") seconds = value / 1000;
  else {
    const m = /^P(?:(\d+)D)?T?(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?$/.exec(value);
    if (!m) return String(value);
    seconds = (+m[1] || 0) * 86400 + (+m[2] || 0) * 3600 + (+m[3] || 0) * 60 + (+m[4] || 0);
  }
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function dateTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}

export function number(value, digits = 0) {
  if (value === null || value === undefined) return "";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}

/** The skip link jumps to <main> by script: with a <base href>, "#main" would leave the page. */
export function wireSkipLink(main) {
  const link = document.querySelector(".skip-link");
  if (link) link.addEventListener("click", (e) => { e.preventDefault(); main.focus(); main.scrollIntoView(); });
}

/** Copy text, with a visible confirmation on the button. */
export async function copy(button, text) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select and copy";
  }
  setTimeout(() => { button.textContent = label; }, 1500);
}

/**
 * A button that asks for confirmation in place (no blocking dialogs): the first press
 * swaps it for "Confirm" / "Keep" buttons.
 */
export function confirmButton(label, question, action, { cls = "btn small danger" } = {}) {
  const wrap = h("span", { class: "confirm" });
  const start = h("button", { type: "button", class: cls, onclick: () => ask() }, label);
  // While a question is open, live tables hold still (see isAsking) so it is not redrawn away.
  const done = () => { delete wrap.dataset.asking; mount(wrap, start); };
  function ask() {
    wrap.dataset.asking = "true";
    const yes = h("button", { type: "button", class: "btn small danger", onclick: async () => {
      yes.disabled = true;
      try { await action(); } finally { done(); }
    } }, `Yes, ${label.toLowerCase()}`);
    const no = h("button", { type: "button", class: "btn small", onclick: () => { done(); start.focus(); } },
      "Cancel");
    mount(wrap, h("span", { class: "visually-hidden", role: "status" }, question), yes, " ", no);
    yes.focus();
  }
  wrap.append(start);
  return wrap;
}

/**
 * Run `tick()` every `ms` while `isActive()`; pauses while the tab is hidden.
 * Returns a stop function. Errors are passed to `onError` and polling goes on.
 */
export function every(ms, tick, { onError, isActive = () => true } = {}) {
  let timer = null;
  let stopped = false;
  async function run() {
    if (stopped) return;
    if (!document.hidden && isActive()) {
      try { await tick(); } catch (err) { if (onError) onError(err); }
    }
    if (!stopped) timer = setTimeout(run, ms);
  }
  run();
  return () => { stopped = true; clearTimeout(timer); };
}

/** The stored artifact path of an artifact URL (".../artifacts/2026/01/02/0/abc.png" -> "2026/01/02/0/abc.png"). */
export function artifactPath(url) {
  const i = String(url).indexOf("/artifacts/");
  return i >= 0 ? String(url).slice(i + "/artifacts/".length).split("?")[0] : null;
}

/** A thumbnail URL made by aiport's /variants route (resized once, then cached). */
export function thumbnail(url, width = 256) {
  const i = String(url).indexOf("/artifacts/");
  return i >= 0 ? `${url.slice(0, i)}/variants/width=${width}/${url.slice(i + "/artifacts/".length)}` : url;
}

/** What an output file is, from its name. */
export function mediaKind(name) {
  const ext = String(name).split("?")[0].split(".").pop().toLowerCase();
  if (["png", "jpg", "jpeg", "gif", "webp", "bmp", "avif", "tiff", "tif", "svg"].includes(ext)) return "image";
  if (["mp4", "webm", "mov", "mkv", "avi", "wmv", "mpeg", "mpg", "ogv"].includes(ext)) return "video";
  if (["mp3", "wav", "aac", "flac", "ogg", "oga", "m4a", "wma", "opus"].includes(ext)) return "audio";
  return "file";
}

/** Whether a confirmation is open inside `root`. */
export function isAsking(root) {
  return !!root.querySelector("[data-asking]");
}

/**
 * Redraw `container` with `render()` and give the focus back to the control that had it
 * (matched by its data-key), so live refreshes do not throw keyboard users out.
 */
export function redraw(container, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : null;
  mount(container, render());
  if (key) container.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}
