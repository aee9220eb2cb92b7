// Chat: streamed answers from POST v1/chat/completions, or a queued job when asked.
//
// Conversations are kept in localStorage (this browser only) so the history survives a
// reload; "Clear history" removes them.

import { alertBox, confirmButton, duration, field, h, mount, say, showError } from "./dom.js";

const STORE = "aiport.chats";
const MODEL = "aiport.chatModel";
const MAX_CONVERSATIONS = 50;

function load() {
  try { return JSON.parse(localStorage.getItem(STORE) || "[]"); } catch { return []; }
}

function save(conversations) {
  try {
    localStorage.setItem(STORE, JSON.stringify(conversations.slice(0, MAX_CONVERSATIONS)));
  } catch {
    // Storage full or disabled: the conversation still works, it is just not kept.
  }
}

function newConversation() {
  return { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: "New chat", messages: [] };
}

export function chatPage(main, { api }) {
  let conversations = load();
  let current = newConversation();
  let controller = null;

  const box = alertBox();
  const model = field({ name: "model", label: "Model", type: "select", options: [["", "Loading models…"]] });
  const system = field({ name: "system", label: "System prompt", type: "textarea", rows: 2,
    hint: "Sent first in every request of this conversation." });
  const temperature = field({ name: "temperature", label: "Temperature", type: "number", min: 0, max: 2, step: 0.1 });
  const maxTokens = field({ name: "max_tokens", label: "Max tokens", type: "number", min: 1, step: 1 });
  const queued = field({ name: "queued", label: "Run as a background job (queued, not streamed)", type: "checkbox" });
  const log = h("div", { class: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const input = field({ name: "messages", label: "Message", type: "textarea", rows: 2,
    hint: "Enter sends; Shift+Enter starts a new line." });
  const send = h("button", { type: "submit", class: "btn primary" }, "Send");
  const stop = h("button", { type: "button", class: "btn", hidden: true, onclick: () => controller?.abort() }, "Stop");
  const composer = h("form", { class: "composer", novalidate: true }, input, send, stop);
  const list = h("ul", { "aria-label": "Saved conversations" });
  const side = h("aside", { class: "chat-list panel", "aria-label": "Conversations" },
    h("button", { type: "button", class: "btn primary", onclick: () => open(newConversation()) }, "New chat"),
    h("h2", { class: "small muted" }, "History"), list,
    confirmButton("Clear history", "Delete every saved conversation?", () => {
      conversations = [];
      save(conversations);
      open(newConversation());
    }, { cls: "btn small" }));

  mount(main,
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "Chat"),
      h("p", {}, "Talk to any chat model this server routes to; answers stream in as they are written.")),
    h("div", { class: "chat" }, side,
      h("section", { class: "chat-main panel", "aria-label": "Chat" },
        h("div", { class: "fields" }, model),
        h("details", { class: "advanced" }, h("summary", {}, "Options"), system,
          h("div", { class: "fields" }, temperature, maxTokens), queued),
        box, log, composer)));

  input.control.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  composer.addEventListener("submit", (e) => { e.preventDefault(); ask(); });
  model.control.addEventListener("change", () => localStorage.setItem(MODEL, model.control.value));

  api.call("ActiveAiModels", undefined, { method: "GET" }).then((r) => {
    const models = r.results || [];
    mount(model.control, models.length
      ? models.map((m) => h("option", { value: m }, m))
      : h("option", { value: "" }, "No chat models are configured"));
    const saved = localStorage.getItem(MODEL);
    if (saved && models.includes(saved)) model.control.value = saved;
  }, (err) => showError(main, box, err));

  function renderList() {
    mount(list, conversations.map((c) => h("li", {}, h("button", {
      type: "button", "aria-current": c.id === current.id ? "true" : null, title: c.title,
      onclick: () => open(c),
    }, c.title))));
  }

  function open(conversation) {
    controller?.abort();
    current = conversation;
    system.control.value = current.system || "";
    if (current.model && [...model.control.options].some((o) => o.value === current.model)) {
      model.control.value = current.model;
    }
    mount(log, current.messages.length ? null : h("p", { class: "empty" }, "Ask anything to start."));
    for (const m of current.messages) log.append(bubble(m.role, m.content, m.meta));
    say(box, "");
    renderList();
    log.scrollTop = log.scrollHeight;
    input.control.focus();
  }

  function bubble(role, text, meta) {
    const body = h("span", { class: "body" }, text);
    const el = h("div", { class: `msg ${role}` },
      h("span", { class: "visually-hidden" }, role === "user" ? "You: " : role === "assistant" ? "Assistant: " : ""),
      body, meta ? h("span", { class: "meta" }, meta) : null);
    el.body = body;
    return el;
  }

  function remember(conv) {
    if (conv === current) {
      conv.model = model.control.value;
      conv.system = system.control.value;
    }
    if (conv.title === "New chat" && conv.messages.length) {
      const first = conv.messages.find((m) => m.role === "user")?.content || "";
      conv.title = first.length > 48 ? `${first.slice(0, 47)}…` : first || "Chat";
    }
    conversations = [conv, ...conversations.filter((c) => c.id !== conv.id)];
    save(conversations);
    renderList();
  }

  function requestBody() {
    const messages = [];
    if (system.control.value.trim()) messages.push({ role: "system", content: system.control.value.trim() });
    for (const m of current.messages) messages.push({ role: m.role, content: m.content });
    const body = { model: model.control.value, messages };
    if (temperature.control.value !== "") body.temperature = Number(temperature.control.value);
    if (maxTokens.control.value !== "") body.max_tokens = Number(maxTokens.control.value);
    return body;
  }

  async function ask() {
    const text = input.control.value.trim();
    if (!text || controller) return;
    if (!model.control.value) { say(box, "Choose a model first."); model.control.focus(); return; }
    say(box, "");
    log.querySelector(".empty")?.remove();
    // The conversation this answer belongs to, even if another one is opened meanwhile.
    const conv = current;
    conv.messages.push({ role: "user", content: text });
    log.append(bubble("user", text));
    input.control.value = "";
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    log.append(answer);
    log.scrollTop = log.scrollHeight;
    controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    // aria-busy keeps screen readers from announcing every streamed word; the whole
    // answer is announced once it is complete.
    log.setAttribute("aria-busy", "true");
    const started = performance.now();
    let content = "";
    let provider = "";
    let usage = null;
    try {
      const body = requestBody();
      if (queued.control.checked) {
        answer.body.textContent = "Queued…";
        const job = await api.call("QueueOpenAiChatCompletion", { Request: body }, { signal: controller.signal });
        const status = await api.poll("GetOpenAiChatStatus", job.id, {
          signal: controller.signal,
          onUpdate: (s) => { if (s.jobState !== "Completed") answer.body.textContent = `${s.status || s.jobState}…`; },
        });
        if (status.jobState !== "Completed") throw new Error(`The job ended as ${status.jobState}.`);
        content = status.result?.choices?.[0]?.message?.content ?? "";
        usage = status.result?.usage;
        provider = status.result?.provider || "";
        answer.body.textContent = content;
      } else {
        body.stream = true;
        body.stream_options = { include_usage: true };
        const events = api.stream("v1/chat/completions", body, {
          signal: controller.signal,
          onResponse: (r) => { provider = r.headers.get("X-Aiport-Provider") || ""; },
        });
        for await (const chunk of events) {
          const delta = chunk.choices?.[0]?.delta?.content;
          if (delta) {
            content += delta;
            answer.body.textContent = content;
            log.scrollTop = log.scrollHeight;
          }
          if (chunk.usage) usage = chunk.usage;
        }
      }
      const meta = [provider && `via ${provider}`, body.model,
        usage && `${usage.prompt_tokens ?? "?"} + ${usage.completion_tokens ?? "?"} tokens`,
        duration(performance.now() - started)].filter(Boolean).join(" · ");
      answer.append(h("span", { class: "meta" }, meta));
      conv.messages.push({ role: "assistant", content, meta });
    } catch (err) {
      const stopped = err.name === "AbortError";
      if (content) {
        // Keep what arrived: it is part of the conversation the user saw.
        conv.messages.push({ role: "assistant", content, meta: stopped ? "stopped" : "interrupted" });
        answer.append(h("span", { class: "meta" }, stopped ? "stopped" : "interrupted"));
      } else {
        answer.remove();
      }
      if (!stopped) {
        log.append(bubble("error", err.message));
        showError(main, box, err);
      }
    } finally {
      answer.classList.remove("streaming");
      log.removeAttribute("aria-busy");
      controller = null;
      send.disabled = false;
      stop.hidden = true;
      remember(conv);
      input.control.focus();
    }
  }

  open(current);
  return () => controller?.abort();
}
