// Talking to aiport: one small client for JSON, multipart, server-sent events and job polling.
//
// Every URL is relative to the page's <base href>, which the server sets to the app's root,
// so the UI works wherever aiport is mounted (/, /ai/, behind a proxy).

/** An error answer from aiport, read from its responseStatus envelope. */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    const rs = (body && body.responseStatus) || {};
    const message = rs.message || (body && body.error && body.error.message) || fallback || `HTTP ${status}`;
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.errorCode = rs.errorCode || (body && body.error && body.error.code) || "";
    /** [{fieldName, errorCode, message}] */
    this.fieldErrors = Array.isArray(rs.errors) ? rs.errors : [];
    this.body = body;
  }
}

/** The absolute URL of an aiport path ("api/ActiveAiModels", "v1/chat/completions"). */
export function appUrl(path, query) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((item) => url.searchParams.append(k, item));
    else url.searchParams.set(k, String(v));
  }
  return url.toString();
}

async function readError(response) {
  let body = null;
  const text = await response.text().catch(() => "");
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  const fallback = response.status === 0 ? "aiport could not be reached." :
    `${response.status} ${response.statusText || "error"}` + (text && !body ? `: ${text.slice(0, 200)}` : "");
  return new ApiError(response.status, body, fallback);
}

/**
 * A client that sends `Authorization: Bearer <token>` when `getToken()` gives one.
 * Methods throw ApiError for error answers and for network failures (status 0).
 */
export function createClient(getToken) {
  function headers(extra) {
    const h = { Accept: "application/json", ...(extra || {}) };
    const token = getToken();
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  async function raw(path, { method = "GET", query, json, form, signal, token } = {}) {
    const init = { method, signal, headers: headers() };
    if (token !== undefined) {
      // A credential being checked (sign-in) rather than the stored one.
      if (token) init.headers.Authorization = `Bearer ${token}`; else delete init.headers.Authorization;
    }
    if (form) init.body = form; // the browser sets the multipart boundary
    else if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(appUrl(path, query), init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, null, "aiport could not be reached: " + err.message);
    }
    if (!response.ok) throw await readError(response);
    return response;
  }

  /** Call an AI Server-style API by name: GET with a query, or POST with JSON / FormData. */
  async function call(name, data, { method, signal, token } = {}) {
    const verb = method || (data === undefined ? "GET" : "POST");
    const opts = { method: verb, signal, token };
    if (verb === "GET" || verb === "DELETE") opts.query = data;
    else if (data instanceof FormData) opts.form = data;
    else opts.json = data || {};
    const response = await raw(`api/${name}`, opts);
    return response.status === 204 ? null : response.json();
  }

  /**
   * POST a body to an OpenAI-style streaming route and yield each server-sent event's JSON.
   * `onResponse(response)` sees the headers first (X-Aiport-Provider).
   */
  async function* stream(path, body, { signal, onResponse } = {}) {
    const response = await raw(path, { method: "POST", json: body, signal });
    if (onResponse) onResponse(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        // Events end with a blank line; a chunk may hold several events or part of one.
        while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;
          if (data === "[DONE]") return;
          const parsed = JSON.parse(data);
          if (parsed.error) throw new ApiError(502, { error: parsed.error, responseStatus: parsed.responseStatus });
          yield parsed;
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /**
   * Poll a job's status API until it is finished; `onUpdate(status)` sees every answer.
   * A failed job answers with an error, which is thrown as ApiError.
   */
  async function poll(statusApi, jobId, { onUpdate, signal, interval = 600 } = {}) {
    for (;;) {
      const status = await call(statusApi, { JobId: jobId }, { method: "GET", signal });
      if (onUpdate) onUpdate(status);
      const state = status.jobState;
      if (state === "Completed" || state === "Failed" || state === "Cancelled") return status;
      await sleep(interval, signal);
    }
  }

  return { raw, call, stream, poll };
}

/** Resolves after `ms`, or rejects with an AbortError when `signal` aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) { reject(new DOMException("Aborted", "AbortError")); return; }
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        reject(new DOMException("Aborted", "AbortError"));
      }, { once: true });
    }
  });
}

/** A credential kept in this tab's session only (cleared when the tab closes). */
export function sessionSecret(name) {
  return {
    get: () => sessionStorage.getItem(name) || "",
    set: (value) => sessionStorage.setItem(name, value),
    clear: () => sessionStorage.removeItem(name),
  };
}
