// The page frame both UIs share: top bar, side navigation, <main>, and the sign-in form.

import { alertBox, field, h, mount, say, wireSkipLink } from "./dom.js";

const STATIC = new URL("../", import.meta.url).href;

// The server writes a relative <base href> ("../" on /admin/jobs). Pin it to the absolute
// URL it means now: history.pushState changes the document's URL, and a relative base
// would then point somewhere else.
const base = document.querySelector("base");
if (base) base.setAttribute("href", base.href);

/**
 * Build the frame inside #app.
 * groups: [{label, items: [{id, title, href}]}]; links go through `navigate(href, event)`.
 */
export function createShell({ product, home = "./", groups, links = [], navigate }) {
  const app = document.getElementById("app");
  const who = h("span", { class: "who", role: "status" });
  const signOut = h("button", { type: "button", class: "btn small", hidden: true }, "Sign out");
  const signIn = h("button", { type: "button", class: "btn small", hidden: true }, "Sign in");
  const topbar = h("header", { class: "topbar" },
    h("a", { class: "brand", href: home },
      h("img", { src: `${STATIC}favicon.svg`, alt: "" }), "aiport", product ? h("small", {}, product) : null),
    h("span", { class: "spacer" }),
    links.map((l) => h("a", { href: l.href, class: "btn small" }, l.label)),
    who, signIn, signOut);
  const nav = h("nav", { class: "sidebar", "aria-label": product ? `${product} pages` : "Pages" });
  const main = h("main", { id: "main", tabindex: "-1" });
  const anchors = new Map();
  for (const group of groups) {
    if (group.label) nav.append(h("h2", {}, group.label));
    nav.append(h("ul", {}, group.items.map((item) => {
      const a = h("a", { href: item.href }, item.title);
      if (navigate) a.addEventListener("click", (e) => navigate(item.href, e));
      anchors.set(item.id, a);
      return h("li", {}, a);
    })));
  }
  mount(app, topbar, nav, main);
  app.className = "shell";
  wireSkipLink(main);
  return {
    main, nav, who, signIn, signOut,
    setCurrent(id) {
      for (const [key, a] of anchors) {
        if (key === id) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
      }
    },
    showNav(visible) { nav.hidden = !visible; app.classList.toggle("no-nav", !visible); },
  };
}

/**
 * The sign-in form. `check(secret)` resolves when the secret works and rejects with an
 * ApiError otherwise; `skip` (optional) offers to go on without signing in.
 */
export function signInForm(main, { heading, intro, label, hint, check, skip, message }) {
  const secret = field({ name: "secret", label, type: "password", hint, required: true, autocomplete: "off" });
  const box = alertBox();
  const submit = h("button", { type: "submit", class: "btn primary" }, "Sign in");
  const form = h("form", { class: "panel", novalidate: true }, h("h1", { tabindex: "-1" }, heading),
    h("p", { class: "muted" }, intro), box, secret,
    h("div", { class: "actions" }, submit,
      skip ? h("button", { type: "button", class: "btn", onclick: skip }, "Continue without a key") : null));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = secret.control.value.trim();
    if (!value) {
      say(box, `Enter the ${label.toLowerCase()}.`);
      secret.control.setAttribute("aria-invalid", "true");
      secret.control.focus();
      return;
    }
    submit.disabled = true;
    say(box, "");
    try {
      await check(value);
    } catch (err) {
      say(box, err.status === 401 ? `That ${label.toLowerCase()} was not accepted: ${err.message}` : err.message);
      secret.control.setAttribute("aria-invalid", "true");
      secret.control.focus();
    } finally {
      submit.disabled = false;
    }
  });
  mount(main, h("div", { class: "signin" }, form));
  if (message) say(box, message, "info");
  secret.control.focus();
}
