// Generation and media-transform pages, all built from the declarations in TASKS.
//
// Every run goes through the Queue* API and polls its status API, so long jobs show a
// progress bar and can be cancelled; the answer's results are shown as a gallery
// (thumbnails from aiport's /variants route), players or text. Recent results are kept
// in localStorage per page.

import {
  alertBox, artifactPath, clearErrors, confirmButton, copy, dateTime, duration, field, h, mediaKind, mount, say,
  showError, thumbnail,
} from "./dom.js";

const SIZES = [
  ["1024x1024", "Square 1024 × 1024"], ["1152x896", "Landscape 1152 × 896"], ["896x1152", "Portrait 896 × 1152"],
  ["1216x832", "Wide 1216 × 832"], ["832x1216", "Tall 832 × 1216"], ["768x768", "Square 768 × 768"],
  ["512x512", "Small 512 × 512"],
];
const POSITIONS = ["BottomRight", "BottomLeft", "TopRight", "TopLeft", "Center"].map((p) => [p, p]);
const opt = (values) => values.map((v) => [v, v]);

const prompt = { name: "PositivePrompt", label: "Prompt", type: "textarea", required: true, rows: 3 };
const negative = { name: "NegativePrompt", label: "Negative prompt", type: "textarea", rows: 2,
  hint: "What the image should not show." };
const denoise = { name: "Denoise", label: "Denoise", type: "number", min: 0, max: 1, step: 0.05,
  hint: "0 keeps the input, 1 ignores it." };
const batch = { name: "BatchSize", label: "Batch", type: "number", min: 1, max: 10, step: 1, value: "1",
  hint: "Images per run (1-10)." };
const width = (hint) => ({ name: "Width", label: "Width", type: "number", min: 1, step: 1, hint });
const height = (hint) => ({ name: "Height", label: "Height", type: "number", min: 1, step: 1, hint });
const cropBox = [
  { name: "X", label: "X", type: "number", min: 0, step: 1, required: true, value: "0" },
  { name: "Y", label: "Y", type: "number", min: 0, step: 1, required: true, value: "0" },
  { name: "Width", label: "Width", type: "number", min: 1, step: 1, required: true },
  { name: "Height", label: "Height", type: "number", min: 1, step: 1, required: true },
];
const watermark = [
  { name: "Position", label: "Position", type: "select", options: POSITIONS },
  { name: "Opacity", label: "Opacity", type: "number", min: 0, max: 1, step: 0.05, value: "0.7" },
  { name: "WatermarkScale", label: "Watermark scale", type: "number", min: 0.01, max: 1, step: 0.01,
    hint: "Watermark width as a share of the image's." },
];

/**
 * One page per task. api: the sync API name (the queued one is "Queue" + api);
 * status: the status API; model: the task whose ActiveMediaModels fill the model picker;
 * uploads: [{name, label, accept}]; output: images | media | text.
 */
export const TASKS = [
  { id: "text-to-image", title: "Text to image", group: "Image", api: "TextToImage", model: "TextToImage",
    intro: "Generate images from a prompt.", fields: [prompt, negative, "size", batch], output: "images",
    submit: "Generate" },
  { id: "image-to-image", title: "Image to image", group: "Image", api: "ImageToImage", model: "ImageToImage",
    intro: "Make new images from an image and a prompt.", uploads: [{ name: "Image", label: "Image", accept: "image/*" }],
    fields: [prompt, negative, denoise, batch], output: "images", submit: "Generate" },
  { id: "image-with-mask", title: "Image with mask", group: "Image", api: "ImageWithMask", model: "ImageWithMask",
    intro: "Repaint part of an image: paint over the area to change, or upload a mask (white = repaint).",
    uploads: [{ name: "Image", label: "Image", accept: "image/*" }], mask: true,
    fields: [prompt, negative, denoise], output: "images", submit: "Generate" },
  { id: "image-upscale", title: "Upscale", group: "Image", api: "ImageUpscale", model: "ImageUpscale",
    intro: "Upscale an image.", uploads: [{ name: "Image", label: "Image", accept: "image/*" }], fields: [],
    output: "images", submit: "Upscale" },
  { id: "image-to-text", title: "Image to text", group: "Text", api: "ImageToText", model: "ImageToText",
    status: "GetTextGenerationStatus", intro: "Describe an image, or ask a question about it.",
    uploads: [{ name: "Image", label: "Image", accept: "image/*" }],
    fields: [{ name: "Prompt", label: "Prompt", type: "textarea", rows: 2, hint: "Optional: what to ask about the image." }],
    output: "text", submit: "Describe" },
  { id: "speech-to-text", title: "Speech to text", group: "Text", api: "SpeechToText", model: "SpeechToText",
    status: "GetTextGenerationStatus", intro: "Transcribe speech from a file or from your microphone.",
    uploads: [{ name: "Audio", label: "Audio file", accept: "audio/*,video/webm,video/mp4" }], record: true,
    fields: [], output: "text", submit: "Transcribe" },
  { id: "text-to-speech", title: "Text to speech", group: "Audio", api: "TextToSpeech", model: "TextToSpeech",
    intro: "Speak a text.",
    fields: [{ name: "Text", label: "Text", type: "textarea", required: true, rows: 4 },
      { name: "Voice", label: "Voice", hint: "Optional: a voice name the model knows." }],
    output: "media", submit: "Speak" },
  { id: "convert-audio", title: "Convert audio", group: "Audio", api: "ConvertAudio", transform: true,
    intro: "Convert audio to another format.", uploads: [{ name: "Audio", label: "Audio", accept: "audio/*" }],
    fields: [{ name: "OutputFormat", label: "Output format", type: "select", required: true,
      options: opt(["mp3", "wav", "aac", "flac", "ogg", "m4a", "wma"]) }], output: "media", submit: "Convert" },
  { id: "scale-image", title: "Scale image", group: "Transform image", api: "ScaleImage", transform: true,
    intro: "Resize an image; give one side to keep its aspect ratio.",
    uploads: [{ name: "Image", label: "Image", accept: "image/*" }],
    fields: [width("Pixels."), height("Pixels.")], output: "media", submit: "Scale" },
  { id: "crop-image", title: "Crop image", group: "Transform image", api: "CropImage", transform: true,
    intro: "Cut a rectangle out of an image.", uploads: [{ name: "Image", label: "Image", accept: "image/*" }],
    fields: cropBox, output: "media", submit: "Crop" },
  { id: "watermark-image", title: "Watermark image", group: "Transform image", api: "WatermarkImage", transform: true,
    intro: "Put a watermark on an image.",
    uploads: [{ name: "Image", label: "Image", accept: "image/*" }, { name: "Watermark", label: "Watermark", accept: "image/*" }],
    fields: watermark, output: "media", submit: "Watermark" },
  { id: "convert-image", title: "Convert image", group: "Transform image", api: "ConvertImage", transform: true,
    intro: "Convert an image to another format.", uploads: [{ name: "Image", label: "Image", accept: "image/*" }],
    fields: [{ name: "OutputFormat", label: "Output format", type: "select", required: true,
      options: opt(["png", "jpg", "webp", "gif", "bmp", "tiff", "avif"]) }], output: "media", submit: "Convert" },
  { id: "scale-video", title: "Scale video", group: "Transform video", api: "ScaleVideo", transform: true,
    intro: "Resize a video; give one side to keep its aspect ratio.",
    uploads: [{ name: "Video", label: "Video", accept: "video/*" }],
    fields: [width("Up to 7680."), height("Up to 4320.")], output: "media", submit: "Scale" },
  { id: "crop-video", title: "Crop video", group: "Transform video", api: "CropVideo", transform: true,
    intro: "Cut a rectangle out of a video.", uploads: [{ name: "Video", label: "Video", accept: "video/*" }],
    fields: cropBox, output: "media", submit: "Crop" },
  { id: "watermark-video", title: "Watermark video", group: "Transform video", api: "WatermarkVideo", transform: true,
    intro: "Put a watermark on a video.",
    uploads: [{ name: "Video", label: "Video", accept: "video/*" }, { name: "Watermark", label: "Watermark", accept: "image/*" }],
    fields: watermark, output: "media", submit: "Watermark" },
  { id: "convert-video", title: "Convert video", group: "Transform video", api: "ConvertVideo", transform: true,
    intro: "Convert a video to another container and codec.", uploads: [{ name: "Video", label: "Video", accept: "video/*" }],
    fields: [{ name: "OutputFormat", label: "Output format", type: "select", required: true,
      options: opt(["mp4", "webm", "mov", "mkv", "avi", "wmv", "mpeg", "ogg"]) }], output: "media", submit: "Convert" },
  { id: "trim-video", title: "Trim video", group: "Transform video", api: "TrimVideo", transform: true,
    intro: "Cut a video to a time range.", uploads: [{ name: "Video", label: "Video", accept: "video/*" }],
    fields: [{ name: "StartTime", label: "Start", required: true, value: "0", hint: "Seconds or [h:]mm:ss[.fff]." },
      { name: "EndTime", label: "End", hint: "Optional; same format." }], output: "media", submit: "Trim" },
];

// ------------------------------------------------------------------ history

const MAX_HISTORY = 30;
const historyKey = (id) => `aiport.history.${id}`;

function loadHistory(id) {
  try { return JSON.parse(localStorage.getItem(historyKey(id)) || "[]"); } catch { return []; }
}

function saveHistory(id, items) {
  try { localStorage.setItem(historyKey(id), JSON.stringify(items.slice(0, MAX_HISTORY))); } catch { /* not kept */ }
}

// ------------------------------------------------------------------ inputs

/** A file input that previews what was chosen. `.file()` is the chosen (or recorded) file. */
function upload(spec) {
  const f = field({ name: spec.name, label: spec.label, type: "file", accept: spec.accept, required: true });
  const preview = h("div", { class: "input-preview" });
  let chosen = null;
  let url = null;
  f.set = (file) => {
    chosen = file;
    if (url) URL.revokeObjectURL(url);
    url = file ? URL.createObjectURL(file) : null;
    mount(preview, file ? previewOf(url, file.type || file.name, `Chosen ${spec.label.toLowerCase()}: ${file.name}`) : null);
    f.dispatchEvent(new CustomEvent("filechange", { detail: file }));
  };
  f.control.addEventListener("change", () => f.set(f.control.files[0] || null));
  f.append(preview);
  f.file = () => chosen;
  f.url = () => url;
  f.spec = spec;
  return f;
}

function previewOf(url, type, alt) {
  const kind = type.includes("/") ? type.split("/")[0] : mediaKind(type);
  if (kind === "image") return h("img", { src: url, alt });
  if (kind === "video") return h("video", { src: url, controls: true, "aria-label": alt });
  if (kind === "audio") return h("audio", { src: url, controls: true, "aria-label": alt });
  return h("p", { class: "muted small" }, alt);
}

/**
 * Paint a mask over the chosen image. The canvas has the image's own pixel size, so the
 * mask matches it exactly; painted pixels are white on black (white = repaint).
 */
function maskEditor(imageField) {
  const brush = field({ name: "brush", label: "Brush size", type: "range", min: 4, max: 160, step: 2, value: "40" });
  const maskFile = field({ name: "Mask", label: "Or upload a mask", type: "file", accept: "image/*",
    hint: "White marks the area to repaint, black what to keep." });
  const area = h("div", { class: "mask-editor", hidden: true });
  const clear = h("button", { type: "button", class: "btn small", onclick: () => reset() }, "Clear mask");
  const wrap = h("fieldset", {}, h("legend", {}, "Mask"),
    h("p", { class: "muted small", id: "mask-help" }, "Choose an image, then paint over the area to repaint."),
    area, h("div", { class: "row" }, brush, clear), maskFile);
  let canvas = null;
  let painted = false;

  imageField.addEventListener("filechange", () => {
    const url = imageField.url();
    mount(area);
    canvas = null;
    painted = false;
    area.hidden = !url;
    if (!url) return;
    const img = h("img", { src: url, alt: "The image to repaint" });
    img.addEventListener("load", () => {
      canvas = h("canvas", { width: img.naturalWidth, height: img.naturalHeight, role: "img",
        "aria-label": "Mask painting area", "aria-describedby": "mask-help" });
      area.append(canvas);
      reset();
      let drawing = false;
      const at = (e) => {
        const r = canvas.getBoundingClientRect();
        return [(e.clientX - r.left) * (canvas.width / r.width), (e.clientY - r.top) * (canvas.height / r.height)];
      };
      const paint = (e) => {
        const g = canvas.getContext("2d");
        const [x, y] = at(e);
        const radius = (Number(brush.control.value) / 2) * (canvas.width / canvas.getBoundingClientRect().width);
        g.fillStyle = "#ff2d6f"; // shown tinted over the image; sent as white (see mask())
        g.beginPath();
        g.arc(x, y, radius, 0, Math.PI * 2);
        g.fill();
        painted = true;
      };
      canvas.addEventListener("pointerdown", (e) => { drawing = true; canvas.setPointerCapture(e.pointerId); paint(e); });
      canvas.addEventListener("pointermove", (e) => { if (drawing) paint(e); });
      canvas.addEventListener("pointerup", () => { drawing = false; });
      canvas.addEventListener("pointercancel", () => { drawing = false; });
    });
    area.append(img);
  });
  maskFile.control.addEventListener("change", () => maskFile.control.setAttribute("aria-invalid", "false"));

  function reset() {
    if (!canvas) return;
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
  }

  /** The mask to send: an uploaded one, else the painted one, else null. */
  wrap.mask = async () => {
    const uploaded = maskFile.control.files[0];
    if (uploaded) return uploaded;
    if (!canvas || !painted) return null;
    // The strokes, turned white (keeping their soft edges), over black.
    const strokes = h("canvas", { width: canvas.width, height: canvas.height });
    const sg = strokes.getContext("2d");
    sg.drawImage(canvas, 0, 0);
    sg.globalCompositeOperation = "source-in";
    sg.fillStyle = "#fff";
    sg.fillRect(0, 0, strokes.width, strokes.height);
    const out = h("canvas", { width: canvas.width, height: canvas.height });
    const og = out.getContext("2d");
    og.fillStyle = "#000";
    og.fillRect(0, 0, out.width, out.height);
    og.drawImage(strokes, 0, 0);
    const blob = await new Promise((resolve) => out.toBlob(resolve, "image/png"));
    return new File([blob], "mask.png", { type: "image/png" });
  };
  return wrap;
}

/** Record from the microphone with MediaRecorder; the recording becomes the upload. */
function recorder(audioField) {
  const status = h("span", { class: "muted small", role: "status" });
  const start = h("button", { type: "button", class: "btn" }, "Record");
  const stopBtn = h("button", { type: "button", class: "btn", hidden: true }, "Stop recording");
  const wrap = h("fieldset", {}, h("legend", {}, "Or record"), h("div", { class: "recorder" }, start, stopBtn, status));
  let rec = null;
  let timer = null;
  if (!window.MediaRecorder || !navigator.mediaDevices?.getUserMedia) {
    start.disabled = true;
    status.textContent = "Recording is not available in this browser (it needs HTTPS or localhost).";
    return wrap;
  }
  start.addEventListener("click", async () => {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      rec = new MediaRecorder(stream);
      rec.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
      rec.addEventListener("stop", () => {
        stream.getTracks().forEach((t) => t.stop());
        clearInterval(timer);
        const type = rec.mimeType || "audio/webm";
        const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
        audioField.control.value = "";
        audioField.set(new File(chunks, `recording.${ext}`, { type }));
        status.textContent = "Recorded; it will be transcribed.";
        start.hidden = false;
        stopBtn.hidden = true;
        start.focus();
      });
      rec.start();
      const began = Date.now();
      status.textContent = "Recording… 0 s";
      timer = setInterval(() => { status.textContent = `Recording… ${Math.round((Date.now() - began) / 1000)} s`; }, 500);
      start.hidden = true;
      stopBtn.hidden = false;
      stopBtn.focus();
    } catch (err) {
      status.textContent = `The microphone could not be used: ${err.message}`;
    }
  });
  stopBtn.addEventListener("click", () => rec?.stop());
  return wrap;
}

// ------------------------------------------------------------------ results

/** Outputs: a gallery of thumbnails, or (`full`, for transforms) each file as it is. */
function outputView(api, item, onDelete, full = false) {
  if (item.texts) {
    return item.texts.map((text) => {
      const btn = h("button", { type: "button", class: "btn small", onclick: () => copy(btn, text) }, "Copy");
      return h("div", { class: "text-result" }, h("pre", {}, text), h("div", { class: "actions" }, btn));
    });
  }
  const images = full ? [] : item.outputs.filter((o) => mediaKind(o.fileName || o.url) === "image");
  const others = item.outputs.filter((o) => !images.includes(o));
  const del = (o) => confirmButton("Delete", "Delete this file from the server?", async () => {
    const path = artifactPath(o.url);
    if (path) await api.raw(`files/${path}`, { method: "DELETE" }).catch((err) => { if (err.status !== 404) throw err; });
    onDelete(o);
  });
  return [
    images.length ? h("ul", { class: "gallery" }, images.map((o, i) => h("li", {}, h("figure", {},
      h("a", { href: o.url, target: "_blank", rel: "noopener" },
        h("img", { src: thumbnail(o.url), alt: `Result ${i + 1}${item.summary ? ` for “${item.summary}”` : ""}`,
          loading: "lazy", width: 256, height: 256 })),
      h("figcaption", {}, h("a", { href: `${o.url}?download=true` }, "Download"), del(o)))))) : null,
    others.map((o) => h("figure", { class: "preview-item" },
      previewOf(o.url, o.fileName || o.url, `Result: ${o.fileName || "file"}`),
      h("figcaption", { class: "row small" },
        h("a", { href: o.url, target: "_blank", rel: "noopener", title: o.fileName || null }, "Open"),
        h("a", { href: `${o.url}?download=true` }, "Download"), del(o)))),
  ];
}

// ------------------------------------------------------------------ the page

export function taskPage(spec) {
  return (main, { api, mediaModels }) => {
    const queueApi = `Queue${spec.api}`;
    const statusApi = spec.status || "GetArtifactGenerationStatus";
    const box = alertBox();
    const uploads = (spec.uploads || []).map(upload);
    const fields = [];
    const controls = [];
    for (const f of spec.fields) {
      if (f === "size") {
        const size = field({ name: "size", label: "Size", type: "select", options: SIZES, value: "1024x1024" });
        size.dataset.size = "true";
        fields.push(size);
      } else {
        fields.push(field(f));
      }
    }
    let model = null;
    if (spec.model) {
      model = field({ name: "Model", label: "Model", type: "select", options: [["", "Automatic"]] });
      mediaModels(spec.model).then((models) => {
        model.control.append(...models.map((m) => h("option", { value: m.key }, m.key)));
      }, () => { /* the picker stays on Automatic; a run shows the real error */ });
    }
    const advanced = [
      spec.transform ? null : field({ name: "Seed", label: "Seed", type: "number", min: 0, step: 1 }),
      spec.transform ? null : field({ name: "Provider", label: "Provider", hint: "Force one provider by name." }),
      field({ name: "Tag", label: "Tag", hint: "Kept with the job, for your own grouping." }),
      field({ name: "RefId", label: "Ref id", hint: "Your unique id for this run." }),
    ].filter(Boolean);
    const mask = spec.mask ? maskEditor(uploads[0]) : null;
    const rec = spec.record ? recorder(uploads[0]) : null;
    const submit = h("button", { type: "submit", class: "btn primary" }, spec.submit || "Run");
    const cancel = h("button", { type: "button", class: "btn", hidden: true }, "Cancel job");
    const form = h("form", { class: "panel", novalidate: true, "aria-labelledby": `${spec.id}-title` },
      model, uploads, mask, rec, fields,
      h("details", { class: "advanced" }, h("summary", {}, "Advanced"), h("div", { class: "fields" }, advanced)),
      box, h("div", { class: "actions" }, submit, cancel));
    const progress = h("div", { class: "job", hidden: true });
    const latest = h("div", { class: "latest" });
    const historyList = h("ul", { class: "history", "aria-label": "Earlier results" });
    let history = loadHistory(spec.id);
    const clearAll = confirmButton("Clear history", "Forget every earlier result of this page?", () => {
      history = [];
      saveHistory(spec.id, history);
      renderHistory();
    }, { cls: "btn small" });
    const results = h("section", { class: "panel", "aria-labelledby": `${spec.id}-results` },
      h("div", { class: "row" }, h("h2", { id: `${spec.id}-results` }, "Results"), h("span", { class: "spacer" })),
      progress, latest, h("h3", { class: "small muted" }, "History"), historyList, clearAll);

    mount(main,
      h("div", { class: "page-head" }, h("h1", { id: `${spec.id}-title`, tabindex: "-1" }, spec.title),
        h("p", {}, spec.intro)),
      h("div", { class: "grid-2" }, form, results));

    let controller = null;
    let jobId = null;

    function renderHistory() {
      mount(historyList, history.length ? history.map((item) => h("li", {},
        h("div", { class: "what muted" }, `${dateTime(item.at)}${item.summary ? ` · ${item.summary}` : ""}`),
        outputView(api, item, (o) => forget(item, o)))) : h("li", { class: "muted small" }, "Nothing yet."));
      clearAll.hidden = !history.length;
    }

    function forget(item, output) {
      item.outputs = (item.outputs || []).filter((o) => o.url !== output.url);
      history = history.filter((i) => i.texts || i.outputs.length);
      saveHistory(spec.id, history);
      renderHistory();
      mount(latest);
    }

    function showProgress(status) {
      const p = typeof status.progress === "number" ? status.progress : null;
      const bar = h("progress", { max: 1, "aria-labelledby": `${spec.id}-progress` });
      if (p !== null) bar.value = p; // without a value the bar is indeterminate
      mount(progress, h("div", { class: "status" },
        h("span", { id: `${spec.id}-progress` }, `${status.jobState || "Queued"}: ${status.status || "waiting"}`),
        h("span", {}, p !== null ? `${Math.round(p * 100)}%` : "")), bar);
      progress.hidden = false;
    }

    async function run() {
      clearErrors(form);
      say(box, "");
      const data = new FormData();
      for (const f of fields) {
        const c = f.control;
        if (f.dataset.size) {
          const [w, hgt] = c.value.split("x");
          data.append("Width", w);
          data.append("Height", hgt);
        } else if (c.type === "checkbox") {
          data.append(c.name, c.checked ? "true" : "false");
        } else if (c.value !== "") {
          data.append(c.name, c.value);
        }
      }
      for (const f of [model, ...advanced]) if (f && f.control.value !== "") data.append(f.control.name, f.control.value);
      for (const u of uploads) if (u.file()) data.append(u.spec.name, u.file(), u.file().name);
      if (mask) {
        const m = await mask.mask();
        if (m) data.append("Mask", m, m.name);
      }
      const summary = (data.get("PositivePrompt") || data.get("Text") || data.get("Prompt") ||
        uploads.map((u) => u.file()?.name).filter(Boolean).join(", ") || "").toString().slice(0, 120);
      const inputs = uploads.filter((u) => u.file()).map((u) => ({ label: u.spec.label, url: u.url(), type: u.file().type }));

      controller = new AbortController();
      submit.disabled = true;
      cancel.hidden = false;
      mount(latest);
      showProgress({ jobState: "Queued", status: "sending" });
      const started = performance.now();
      try {
        const job = await api.call(queueApi, data, { signal: controller.signal });
        jobId = job.jobId;
        const status = await api.poll(statusApi, job.jobId, { signal: controller.signal, onUpdate: showProgress });
        if (status.jobState !== "Completed") throw new Error(`The job was ${status.jobState.toLowerCase()}.`);
        const item = { at: new Date().toISOString(), summary };
        if (spec.output === "text") item.texts = (status.results || []).map((r) => r.text ?? "");
        else item.outputs = status.results || [];
        progress.hidden = true;
        const took = status.duration ? duration(status.duration) : duration(performance.now() - started);
        mount(latest,
          h("p", { class: "alert ok", role: "status" }, `Done in ${took}.`),
          inputs.length
            ? h("div", { class: "preview" },
              inputs.map((i) => h("figure", {}, h("figcaption", {}, `Input: ${i.label}`), previewOf(i.url, i.type, `Input ${i.label}`))),
              h("figure", {}, h("figcaption", {}, "Output"), outputView(api, item, (o) => forget(item, o), spec.transform)))
            : outputView(api, item, (o) => forget(item, o)));
        history = [item, ...history];
        saveHistory(spec.id, history);
        renderHistory();
      } catch (err) {
        progress.hidden = true;
        if (err.name === "AbortError") say(box, "Cancelled.", "info");
        else showError(form, box, err);
      } finally {
        controller = null;
        jobId = null;
        submit.disabled = false;
        cancel.hidden = true;
      }
    }

    form.addEventListener("submit", (e) => { e.preventDefault(); if (!controller) run(); });
    cancel.addEventListener("click", async () => {
      const id = jobId;
      controller?.abort();
      if (id) await api.call("CancelJob", { JobId: id }).catch(() => { /* it may have just finished */ });
    });
    renderHistory();
    return () => controller?.abort();
  };
}
