// wanflash playground: builds a videoInference task from the form, prices it with
// /playground/estimate (the server's own planner and price table), and runs it over the
// /v1 WebSocket like any Runware client: authentication, imageUpload, videoInference, then
// getResponse polls until the results (or an error) arrive. No framework, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "wanflash.apiKey";
const POLL_MS = 400;

const state = {
  config: null,
  image: null, // {kind: "file", dataURL, name, size: [w, h], uuid} | {kind: "url", url, size}
  taskUUID: null, // the id the next submit will use (shown in the JSON preview)
  touched: new Set(),
  submitted: false,
  busy: false,
  estimateSeq: 0,
};

function uuid4() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not (plain http on a LAN).
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function num(value) {
  // Blank -> omitted (the server's default applies); anything else is sent as a number so
  // the server's validation, not the page, decides what is acceptable.
  const v = String(value).trim();
  return v === "" ? undefined : Number(v);
}

// ------------------------------------------------------------------ the request

function buildTask(imageRef) {
  const c = state.config;
  const task = {
    taskType: "videoInference",
    taskUUID: state.taskUUID,
    model: c.model,
    positivePrompt: $("prompt").value,
  };
  const negative = $("negativePrompt").value;
  if (negative) task.negativePrompt = negative;
  const size = $("size").value;
  if (/^\d+x\d+$/.test(size)) {
    const [w, h] = size.split("x").map(Number);
    task.width = w;
    task.height = h;
  } else {
    task.resolution = size;
  }
  for (const name of ["duration", "seed", "numberResults", "outputQuality"]) {
    const v = num($(name).value);
    if (v !== undefined) task[name] = v;
  }
  task.outputFormat = $("outputFormat").value;
  task.includeCost = true;
  const mode = $("safetyMode").value;
  if (mode !== "none") task.safety = { checkContent: true, mode };
  const inputs = {};
  if (imageRef) inputs.frameImages = [{ image: imageRef, frame: "first" }];
  const track = $("audioInput").value.trim();
  if (track) inputs.audio = track;
  if (Object.keys(inputs).length) task.inputs = inputs;
  task.providerSettings = {
    alibaba: {
      audio: $("audio").checked,
      promptExtend: $("promptExtend").checked,
      shotType: $("shotType").value,
    },
  };
  return task;
}

function imageRefForPreview() {
  if (!state.image) return null;
  if (state.image.kind === "url") return state.image.url;
  return state.image.uuid || "<imageUUID: uploaded when you press Generate>";
}

function showJSON(task) {
  $("json").textContent = JSON.stringify([task], null, 2);
}

// ------------------------------------------------------------------ errors next to fields

function fieldFor(parameter) {
  if (!parameter) return null;
  const fields = Array.from(document.querySelectorAll(".field[data-param]"));
  const names = (f) => f.dataset.param.split(/\s+/);
  // Exact name first, then the longest declared prefix ("inputs.frameImages[0].image" -> inputs.frameImages).
  let best = fields.find((f) => names(f).includes(parameter));
  if (best) return best;
  let bestLen = 0;
  for (const f of fields) {
    for (const n of names(f)) {
      if ((parameter.startsWith(n + ".") || parameter.startsWith(n + "[")) && n.length > bestLen) {
        best = f;
        bestLen = n.length;
      }
    }
  }
  return best || null;
}

function clearErrors() {
  for (const f of document.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
  for (const e of document.querySelectorAll(".field .error")) e.textContent = "";
  $("formError").textContent = "";
}

function isTouched(field) {
  return state.submitted || field.dataset.param.split(/\s+/).some((n) => state.touched.has(n));
}

// errors: Runware error items ({code, message, parameter, ...}); onlyTouched hides errors on
// fields the user has not edited yet (the live estimate must not shout at an empty form).
function showErrors(errors, onlyTouched = false) {
  clearErrors();
  const general = [];
  for (const err of errors) {
    const field = fieldFor(err.parameter);
    const text = `${err.message}${err.code ? ` (${err.code})` : ""}`;
    if (!field) {
      if (!onlyTouched) general.push(text);
      continue;
    }
    if (onlyTouched && !isTouched(field)) continue;
    field.classList.add("invalid");
    const box = field.querySelector(".error");
    box.textContent = box.textContent ? `${box.textContent} ${text}` : text;
  }
  $("formError").textContent = general.join(" ");
}

// ------------------------------------------------------------------ cost estimate

let estimateTimer = null;

function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(estimate, 150);
  if (!state.busy) showJSON(buildTask(imageRefForPreview()));
}

async function estimate() {
  const seq = ++state.estimateSeq;
  const ref = state.image ? (state.image.kind === "url" ? state.image.url : "upload") : null;
  const body = { task: buildTask(ref), imageSize: state.image && state.image.size ? state.image.size : null };
  let reply;
  try {
    const r = await fetch("/playground/estimate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    reply = await r.json();
  } catch (e) {
    return; // the server is away; the submit will say so
  }
  if (seq !== state.estimateSeq) return; // a newer estimate is on its way
  if (reply.errors) {
    $("cost").textContent = "—";
    $("plan").textContent = "fix the marked fields";
    if (!state.busy) showErrors(reply.errors, true);
    return;
  }
  if (!state.busy) showErrors([], true);
  $("cost").textContent = `$${reply.cost.toFixed(4)}`;
  const audio = reply.audio ? "with audio" : "silent";
  const follows = reply.durationFollowsAudio ? " (follows the audio track)" : "";
  $("plan").textContent = `${reply.width}×${reply.height} · ${reply.duration} s${follows} · ` +
    `${reply.numFrames} frames at ${reply.fps} fps · ${audio} · ×${reply.numberResults}`;
}

// ------------------------------------------------------------------ the WebSocket client

class Client {
  constructor(url) {
    this.url = url;
    this.waiters = new Map(); // taskUUID -> {resolve, reject}
    this.ws = null;
  }

  open(apiKey) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let authed = false;
      ws.onopen = () => ws.send(JSON.stringify([{ taskType: "authentication", apiKey }]));
      ws.onerror = () => reject(new Error(`cannot connect to ${this.url}`));
      ws.onclose = () => {
        if (!authed) reject(new Error("the connection closed before authentication"));
        for (const w of this.waiters.values()) w.reject(new Error("the connection closed"));
        this.waiters.clear();
      };
      ws.onmessage = (ev) => {
        const frame = JSON.parse(ev.data);
        const items = frame.data || [];
        const errors = frame.errors || [];
        if (!authed) {
          if (items[0] && items[0].taskType === "authentication") {
            authed = true;
            resolve(this);
          } else if (errors.length) {
            reject({ errors });
          }
          return;
        }
        const tu = (items[0] && items[0].taskUUID) || (errors[0] && errors[0].taskUUID);
        const waiter = this.waiters.get(tu);
        if (!waiter) return;
        this.waiters.delete(tu);
        if (errors.length) waiter.reject({ errors });
        else waiter.resolve(items);
      };
    });
  }

  request(task) {
    return new Promise((resolve, reject) => {
      this.waiters.set(task.taskUUID, { resolve, reject });
      this.ws.send(JSON.stringify([task]));
    });
  }

  close() {
    if (this.ws) this.ws.close();
  }
}

function wsURL() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1`;
}

// ------------------------------------------------------------------ progress and results

function showProgress(item, started) {
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  if (!item.stage) {
    $("status").textContent = `queued · ${secs} s`;
    $("progress").removeAttribute("value");
    $("stage").textContent = "waiting for the worker";
    return;
  }
  $("status").textContent = `${item.stage} · ${secs} s`;
  $("progress").value = item.progress || 0;
  const steps = item.progressTotal ? `step ${item.progressStep}/${item.progressTotal}` : "";
  $("stage").textContent = `${item.stage} ${steps} (${item.progress}%)`;
}


function showResults(items, task) {
  const box = $("results");
  box.textContent = "";
  items.forEach((item, i) => {
    const card = document.createElement("div");
    card.className = "card result";
    const title = document.createElement("h2");
    title.textContent = items.length > 1 ? `Result ${i + 1} of ${items.length}` : "Result";
    const video = document.createElement("video");
    video.controls = true;
    video.muted = true; // muted autoplay is allowed everywhere
    video.autoplay = true;
    video.loop = true;
    video.playsInline = true;
    video.src = item.videoURL;
    const dl = document.createElement("dl");
    const nsfw = item.NSFWContent === undefined ? "not checked" : item.NSFWContent ? "yes" : "no";
    const rows = [
      ["seed", String(item.seed)],
      ["cost", item.cost !== undefined ? `$${item.cost}` : "—"],
      ["NSFW", nsfw],
      ["videoUUID", item.videoUUID],
    ];
    if (item.extendedPrompt !== undefined) {
      rows.push(["prompt used", `${item.extendedPrompt}${item.promptExtended ? " (extended)" : ""}`]);
    }
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.field = k;
      dl.append(dt, dd);
    }
    const a = document.createElement("a");
    a.href = item.videoURL;
    a.download = `wanflash-${item.seed}${(state.config.formats[task.outputFormat] || { suffix: ".mp4" }).suffix}`;
    a.textContent = "Download";
    a.className = "download";
    card.append(title, video, dl, a);
    box.append(card);
  });
}

// ------------------------------------------------------------------ submit

async function submit(ev) {
  ev.preventDefault();
  if (state.busy) return;
  state.submitted = true;
  clearErrors();
  const apiKey = $("apiKey").value.trim();
  if (!apiKey) {
    showErrors([{ parameter: "apiKey", message: "Paste an API key first." }]);
    return;
  }
  localStorage.setItem(KEY_STORE, apiKey);
  state.busy = true;
  $("submit").disabled = true;
  $("progressCard").hidden = false;
  $("status").textContent = "connecting";
  $("progress").value = 0;
  $("stage").textContent = "";
  $("results").textContent = "";
  const client = new Client(wsURL());
  const started = performance.now();
  try {
    await client.open(apiKey);
    let ref = null;
    if (state.image && state.image.kind === "file") {
      if (!state.image.uuid) {
        $("status").textContent = "uploading the image";
        const up = await client.request({ taskType: "imageUpload", taskUUID: uuid4(), image: state.image.dataURL });
        state.image.uuid = up[0].imageUUID;
      }
      ref = state.image.uuid;
    } else if (state.image) {
      ref = state.image.url;
    }
    const task = buildTask(ref);
    showJSON(task);
    $("status").textContent = "submitting";
    await client.request(task);
    for (;;) {
      const items = await client.request({ taskType: "getResponse", taskUUID: task.taskUUID });
      if (items.length && items.every((it) => it.status === "success")) {
        $("status").textContent = `done in ${((performance.now() - started) / 1000).toFixed(1)} s`;
        $("progress").value = 100;
        $("stage").textContent = "";
        showResults(items, task);
        break;
      }
      showProgress(items[0] || {}, started);
      await sleep(POLL_MS);
    }
  } catch (e) {
    $("status").textContent = "failed";
    if (e && e.errors) showErrors(e.errors);
    else $("formError").textContent = String(e && e.message ? e.message : e);
  } finally {
    client.close();
    state.busy = false;
    $("submit").disabled = false;
    state.taskUUID = uuid4(); // a taskUUID is used once
  }
}

// ------------------------------------------------------------------ image input

function setImage(image) {
  state.image = image;
  state.touched.add("inputs.frameImages");
  const preview = $("preview");
  if (!image) {
    preview.hidden = true;
    $("previewImg").removeAttribute("src");
    scheduleEstimate();
    return;
  }
  const img = $("previewImg");
  img.onload = () => {
    image.size = [img.naturalWidth, img.naturalHeight];
    $("imageInfo").textContent = `${image.name || image.url} · ${img.naturalWidth}×${img.naturalHeight}`;
    scheduleEstimate();
  };
  img.onerror = () => {
    image.size = null;
    $("imageInfo").textContent = `${image.name || image.url} · preview unavailable`;
    scheduleEstimate();
  };
  img.src = image.kind === "file" ? image.dataURL : image.url;
  preview.hidden = false;
  scheduleEstimate();
}

function readFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    $("imageUrl").value = "";
    setImage({ kind: "file", dataURL: reader.result, name: file.name, size: null, uuid: null });
  };
  reader.readAsDataURL(file);
}

function wireImageInput() {
  const drop = $("drop");
  $("pick").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => readFile($("file").files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    readFile(e.dataTransfer.files[0]);
  });
  $("imageUrl").addEventListener("change", () => {
    const url = $("imageUrl").value.trim();
    setImage(url ? { kind: "url", url, size: null } : null);
  });
  $("clearImage").addEventListener("click", () => {
    $("imageUrl").value = "";
    $("file").value = "";
    setImage(null);
  });
}

// ------------------------------------------------------------------ set-up from /playground/config.json

function fillSelect(select, options, selected) {
  select.textContent = "";
  for (const group of options) {
    const parent = group.label ? document.createElement("optgroup") : select;
    if (group.label) parent.label = group.label;
    for (const [value, text] of group.items) {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = text;
      if (value === selected) o.selected = true;
      parent.append(o);
    }
    if (group.label) select.append(parent);
  }
}

function setLimits(input, limits) {
  if (limits.minimum !== undefined) input.min = limits.minimum;
  if (limits.maximum !== undefined) input.max = limits.maximum;
}

async function init() {
  const c = await (await fetch("/playground/config.json")).json();
  state.config = c;
  state.taskUUID = uuid4();
  // Before any worker has published (a fresh `wanflash api`), there is no profile to name yet.
  $("model").textContent = c.profile
    ? `${c.model} · profile ${c.profile} · ${c.fps} fps`
    : `${c.model} · no worker has published yet: start a worker`;
  const L = c.limits;
  const D = c.defaults;
  const sizeGroups = [{
    label: "Resolution (aspect ratio from the image)",
    items: L.resolution.enum.map((r) => [r, r]),
  }];
  for (const [cls, sizes] of Object.entries(c.sizes)) {
    sizeGroups.push({ label: `${cls} sizes`, items: sizes.map(([w, h]) => [`${w}x${h}`, `${w} × ${h}`]) });
  }
  fillSelect($("size"), sizeGroups, L.resolution.enum[0]);
  fillSelect($("outputFormat"), [{ items: L.outputFormat.enum.map((f) => [f, f]) }], D.outputFormat);
  fillSelect($("shotType"), [{ items: L.shotType.enum.map((s) => [s, s]) }], D.shotType);
  fillSelect($("safetyMode"), [{ items: L.safetyMode.enum.map((m) => [m, m === "none" ? "off" : m]) }], D.safetyMode);
  for (const name of ["duration", "numberResults", "seed", "outputQuality"]) setLimits($(name), L[name]);
  $("duration").value = D.duration;
  $("numberResults").value = D.numberResults;
  $("outputQuality").value = D.outputQuality;
  $("audio").checked = D.audio;
  $("promptExtend").checked = D.promptExtend;
  $("promptMax").textContent = L.positivePrompt.maxLength;
  $("apiKey").value = localStorage.getItem(KEY_STORE) || "";

  const form = $("form");
  form.addEventListener("submit", submit);
  form.addEventListener("input", (e) => {
    const field = e.target.closest(".field[data-param]");
    if (field) for (const n of field.dataset.param.split(/\s+/)) state.touched.add(n);
    if (e.target.id === "prompt") $("promptCount").textContent = e.target.value.length;
    if (e.target.id !== "apiKey") scheduleEstimate();
  });
  form.addEventListener("change", () => scheduleEstimate());
  wireImageInput();
  $("copy").addEventListener("click", async () => {
    const text = $("json").textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      // No clipboard API outside secure contexts: select the text for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents($("json"));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    $("copy").textContent = "Copied";
    setTimeout(() => ($("copy").textContent = "Copy JSON"), 1200);
  });
  scheduleEstimate();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  init().catch((e) => {
    $("model").textContent = `cannot load /playground/config.json: ${e}`;
  });
});
