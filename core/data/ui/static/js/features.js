// The feature pages at "/": chat, image generation, speech and media transforms.
//
// Pages are routed by the URL hash (#/chat), so the server serves one document at "/"
// and claims no other top-level paths. The API key lives in sessionStorage: it is gone
// when the tab closes and other tabs cannot read it.

import { ApiError, createClient, sessionSecret } from "./api.js";
import { chatPage } from "./chat.js";
import { h, mount } from "./dom.js";
import { TASKS, taskPage } from "./media.js";
import { createShell, signInForm } from "./shell.js";

const key = sessionSecret("aiport.apiKey");
const api = createClient(key.get);

const PAGES = [
  { id: "chat", title: "Chat", group: "Text", render: chatPage },
  ...TASKS.map((spec) => ({ id: spec.id, title: spec.title, group: spec.group, render: taskPage(spec) })),
];
const GROUPS = [...new Set(PAGES.map((p) => p.group))].map((label) => ({
  label, items: PAGES.filter((p) => p.group === label).map((p) => ({ id: p.id, title: p.title, href: `#/${p.id}` })),
}));

const shell = createShell({ product: "", groups: GROUPS, links: [{ label: "Admin console", href: "admin" }] });
let keysRequired = true;
let cleanup = null;
let firstRender = true;
const modelCache = new Map();

const ctx = {
  api,
  /** Media model ids for a task ([{key, value}]), asked once per page load. */
  mediaModels(task) {
    if (!modelCache.has(task)) {
      modelCache.set(task, api.call("ActiveMediaModels", { Task: task }, { method: "GET" })
        .then((r) => r.results || [], (err) => { modelCache.delete(task); throw err; }));
    }
    return modelCache.get(task);
  },
};

function currentPage() {
  const id = location.hash.replace(/^#\/?/, "");
  return PAGES.find((p) => p.id === id) || PAGES[0];
}

function render() {
  if (cleanup) { cleanup(); cleanup = null; }
  const page = currentPage();
  shell.setCurrent(page.id);
  shell.showNav(true);
  document.title = `${page.title} · aiport`;
  mount(shell.main);
  cleanup = page.render(shell.main, ctx) || null;
  // Moving the focus to the new heading tells screen readers the page changed.
  if (!firstRender) shell.main.querySelector("h1")?.focus();
  firstRender = false;
}

function updateWho() {
  const signedIn = !!key.get();
  shell.who.textContent = signedIn ? "Signed in with an API key" : keysRequired ? "" : "Not signed in (keys are optional)";
  shell.signOut.hidden = !signedIn;
  shell.signIn.hidden = signedIn || keysRequired;
}

function showSignIn(message) {
  if (cleanup) { cleanup(); cleanup = null; }
  shell.showNav(false);
  document.title = "Sign in · aiport";
  signInForm(shell.main, {
    heading: "Sign in",
    intro: keysRequired
      ? "This aiport server needs an API key. Your key is kept in this browser tab only."
      : "Signing in is optional here: without a key you use aiport anonymously.",
    label: "API key",
    hint: "Ask the administrator of this aiport server for a key.",
    message,
    async check(value) {
      await probe(value);
      key.set(value);
      updateWho();
      render();
    },
    skip: keysRequired ? null : () => { updateWho(); render(); },
  });
}

/** Whether a credential ("" for none) may use the feature APIs. A key restricted to
 * other APIs (403) is still a valid key. */
async function probe(token) {
  try {
    await api.call("ActiveAiModels", undefined, { token });
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return;
    throw err;
  }
}

async function start() {
  shell.signIn.addEventListener("click", () => showSignIn());
  shell.signOut.addEventListener("click", () => {
    key.clear();
    modelCache.clear();
    updateWho();
    if (keysRequired) showSignIn("You are signed out."); else render();
  });
  window.addEventListener("hashchange", () => { if (!keysRequired || key.get()) render(); });
  try {
    await probe("");
    keysRequired = false;
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) {
      mount(shell.main, h("div", { class: "alert error", role: "alert" }, `aiport did not answer: ${err.message}`));
      return;
    }
  }
  const stored = key.get();
  if (stored) {
    try {
      await probe(stored);
    } catch {
      key.clear();
      updateWho();
      showSignIn("The key saved in this tab is no longer accepted; sign in again.");
      return;
    }
  }
  updateWho();
  if (keysRequired && !key.get()) showSignIn(); else render();
}

start();
