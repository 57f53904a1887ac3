// asap demo page: paint mode (label map -> photo) and sample mode (seed / truncation / mixing / directions).
// Plain browser JavaScript, no build step. The server does all model work; this file draws, sends and shows.
"use strict";

const $ = (id) => document.getElementById(id);

// What tests and measurements read: photos shown, last stroke-to-photo time, last server times, messages.
window.asapDemo = { ready: false, mode: null, sent: 0, photos: 0, lastLatencyMs: null, lastServer: null, lastSeq: 0,
                    messages: 0 };

function showMessage(text, kind = "error") {
  $("message-text").textContent = text;
  $("message").className = kind;
  $("message").hidden = false;
  if (kind === "error") window.asapDemo.messages += 1;
}

function clearMessage() { $("message").hidden = true; }

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `the server answered ${resp.status} ${resp.statusText}`;
}

// "queue;dur=0.1, generator;dur=480.2, ..." -> {queue: 0.1, generator: 480.2, ...} (milliseconds)
function parseServerTiming(header) {
  const out = {};
  for (const part of (header || "").split(",")) {
    const m = part.trim().match(/^([\w-]+);dur=([\d.]+)/);
    if (m) out[m[1]] = parseFloat(m[2]);
  }
  return out;
}

function describeServer(t) {
  const parts = [];
  for (const key of ["generator", "encode", "queue"]) {
    if (key in t) parts.push(`${key} ${t[key].toFixed(0)} ms`);
  }
  return `server ${(t.total || 0).toFixed(0)} ms (${parts.join(", ")})`;
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// Show an image blob in <img>, dropping answers older than the one on screen; returns true if shown.
function makePhotoView(img) {
  const view = { shown: 0, blob: null, url: null };
  view.show = async (seq, blob) => {
    if (seq < view.shown) return false;
    const url = URL.createObjectURL(blob);
    const probe = new Image();
    probe.src = url;
    try { await probe.decode(); } catch (e) { URL.revokeObjectURL(url); throw new Error("the photo could not be decoded"); }
    if (seq < view.shown) { URL.revokeObjectURL(url); return false; }
    img.src = url;
    if (view.url) URL.revokeObjectURL(view.url);
    Object.assign(view, { shown: seq, blob, url });
    return true;
  };
  return view;
}

// ------------------------------------------------------------------------------------------------ paint mode
function initPaint(info) {
  const W = info.width, H = info.height, N = W * H;
  const canvas = $("label-canvas"), ctx = canvas.getContext("2d");
  canvas.width = W; canvas.height = H;
  const image = ctx.createImageData(W, H);
  const colors = info.classes.map((c) => [1, 3, 5].map((i) => parseInt(c.color.slice(i, i + 2), 16)));
  const labels = new Uint16Array(N), inst = new Uint16Array(N);
  let row = 0;
  for (const [cls, rows] of info.start) { labels.fill(cls, row * W, (row + rows) * W); row += rows; }
  inst.set(labels);
  let nextInstance = info.first_instance_id;
  let current = info.brush_class, eraseTo = info.start[info.start.length - 1][0];
  const undo = [];
  const photo = makePhotoView($("photo"));
  const strokeEnds = new Map();   // request number -> time the stroke ended
  let seq = 0;

  if (!info.uses_instance) {
    $("instance-mode").disabled = true;
    $("instance-mode").parentElement.title = "this model does not use instance maps";
    $("upload-instance-button").hidden = true;
    $("download-instance").hidden = true;
  }

  // palette and eraser class
  const list = $("palette");
  for (const c of info.classes) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    li.dataset.search = `${c.id} ${c.name}`.toLowerCase();
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = c.color;
    li.append(sw, `${c.id} ${c.name}`);
    li.addEventListener("click", () => selectClass(c.id));
    list.appendChild(li);
    const opt = document.createElement("option");
    opt.value = c.id;
    opt.textContent = `${c.id} ${c.name}`;
    $("erase-class").appendChild(opt);
  }
  $("erase-class").value = eraseTo;
  $("erase-class").addEventListener("change", () => { eraseTo = parseInt($("erase-class").value, 10); });
  $("class-filter").addEventListener("input", () => {
    const q = $("class-filter").value.trim().toLowerCase();
    for (const li of list.children) li.hidden = q !== "" && !li.dataset.search.includes(q);
  });
  function selectClass(id) {
    current = id;
    for (const li of list.children) li.classList.toggle("selected", parseInt(li.dataset.id, 10) === id);
    $("current-class").textContent = `brush: ${id} ${info.classes[id].name}`;
  }
  selectClass(current);

  const tool = () => document.querySelector("input[name=tool]:checked").value;
  $("brush-size").addEventListener("input", () => { $("brush-size-value").textContent = $("brush-size").value; });

  function redraw() {
    const d = image.data, first = info.first_instance_id;
    for (let i = 0; i < N; i++) {
      const c = colors[labels[i]], o = 4 * i;
      d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = 255;
    }
    if (info.uses_instance) {   // outline painted objects (instance ids from first_instance_id on)
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const i = y * W + x, v = inst[i];
          const edge = (x + 1 < W && inst[i + 1] !== v) || (y + 1 < H && inst[i + W] !== v);
          if (edge && (v >= first || (x + 1 < W && inst[i + 1] >= first) || (y + 1 < H && inst[i + W] >= first))) {
            const o = 4 * i;
            d[o] = 255 - d[o]; d[o + 1] = 255 - d[o + 1]; d[o + 2] = 255 - d[o + 2];
          }
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  }

  function pushUndo() {
    undo.push({ labels: labels.slice(), inst: inst.slice(), nextInstance });
    if (undo.length > 50) undo.shift();
  }

  function stamp(cx, cy, cls, id) {
    const r = Math.max(0.5, parseInt($("brush-size").value, 10) / 2), r2 = r * r;
    const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(W - 1, Math.ceil(cx + r));
    const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(H - 1, Math.ceil(cy + r));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
        if (dx * dx + dy * dy <= r2) { labels[y * W + x] = cls; inst[y * W + x] = id; }
      }
    }
  }

  function line(ax, ay, bx, by, cls, id) {
    const r = Math.max(0.5, parseInt($("brush-size").value, 10) / 2);
    const steps = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / Math.max(0.5, r / 2)));
    for (let s = 1; s <= steps; s++) stamp(ax + (bx - ax) * s / steps, ay + (by - ay) * s / steps, cls, id);
  }

  // 4-connected flood fill of the region (same class and instance) under (x, y)
  function fill(x, y, cls, id) {
    const start = y * W + x, tl = labels[start], ti = inst[start];
    if (tl === cls && ti === id) return;
    const stack = new Int32Array(N);
    let sp = 0;
    const visit = (j) => {
      if (labels[j] === tl && inst[j] === ti) { labels[j] = cls; inst[j] = id; stack[sp++] = j; }
    };
    visit(start);
    while (sp > 0) {
      const i = stack[--sp], px = i % W;
      if (px > 0) visit(i - 1);
      if (px + 1 < W) visit(i + 1);
      if (i >= W) visit(i - W);
      if (i + W < N) visit(i + W);
    }
  }

  function at(e) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * W / r.width, (e.clientY - r.top) * H / r.height];
  }

  let stroke = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    const [x, y] = at(e);
    const t = tool();
    const cls = t === "eraser" ? eraseTo : current;
    const id = t !== "eraser" && $("instance-mode").checked ? nextInstance : cls;
    pushUndo();
    if (id >= info.first_instance_id) nextInstance += 1;
    if (t === "fill") {
      fill(Math.min(W - 1, Math.max(0, Math.floor(x))), Math.min(H - 1, Math.max(0, Math.floor(y))), cls, id);
      redraw();
      changed();
      return;
    }
    canvas.setPointerCapture(e.pointerId);
    stroke = { x, y, cls, id };
    stamp(x, y, cls, id);
    redraw();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!stroke) return;
    const [x, y] = at(e);
    line(stroke.x, stroke.y, x, y, stroke.cls, stroke.id);
    stroke.x = x; stroke.y = y;
    redraw();
  });
  const end = () => { if (stroke) { stroke = null; changed(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("lostpointercapture", end);

  function doUndo() {
    const last = undo.pop();
    if (!last) return;
    labels.set(last.labels); inst.set(last.inst); nextInstance = last.nextInstance;
    redraw();
    changed();
  }
  $("undo").addEventListener("click", doUndo);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z" && !(e.target instanceof HTMLInputElement)) { e.preventDefault(); doUndo(); }
  });

  function mapsBody() {
    if (!info.uses_instance) return labels.slice().buffer;
    const both = new Uint16Array(2 * N);   // little-endian like every browser's typed arrays on common CPUs
    both.set(labels); both.set(inst, N);
    return both.buffer;
  }

  // After every change: ask for the photo. Older answers are dropped; the server computes only the newest request.
  async function changed() {
    const mine = ++seq;
    window.asapDemo.sent = mine;
    strokeEnds.set(mine, performance.now());
    try {
      const resp = await fetch("/api/paint", { method: "POST", body: mapsBody(),
                                                headers: { "Content-Type": "application/octet-stream" } });
      if (resp.status === 204) return;        // replaced by a newer stroke before it was computed
      if (!resp.ok) { showMessage(await errorText(resp)); return; }
      const timing = parseServerTiming(resp.headers.get("Server-Timing"));
      if (!(await photo.show(mine, await resp.blob()))) return;
      const latency = performance.now() - strokeEnds.get(mine);
      for (const k of strokeEnds.keys()) if (k <= mine) strokeEnds.delete(k);
      Object.assign(window.asapDemo, { photos: window.asapDemo.photos + 1, lastLatencyMs: latency,
                                       lastServer: timing, lastSeq: mine });
      $("timing").textContent = `stroke → photo ${latency.toFixed(0)} ms · ${describeServer(timing)}`;
      $("download-photo").disabled = false;
    } catch (err) {
      showMessage(`request failed: ${err.message || err}`);
    }
  }

  async function upload(kind, input) {
    const file = input.files[0];
    input.value = "";
    if (!file) return;
    if (file.size > info.max_upload_bytes) {
      showMessage(`${file.name}: ${file.size.toLocaleString()} bytes is over the upload limit of ` +
                  `${info.max_upload_bytes.toLocaleString()} bytes`);
      return;
    }
    try {
      const resp = await fetch(`/api/upload?kind=${kind}&name=${encodeURIComponent(file.name)}`,
                               { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
      if (!resp.ok) { showMessage(await errorText(resp)); return; }
      const ids = new Uint16Array(await resp.arrayBuffer());
      if (ids.length !== N) { showMessage(`${file.name}: the server sent ${ids.length} ids, expected ${N}`); return; }
      pushUndo();
      if (kind === "label") { labels.set(ids); inst.set(ids); } else {
        inst.set(ids);
        let top = nextInstance - 1;
        for (let i = 0; i < N; i++) if (ids[i] > top) top = ids[i];
        nextInstance = Math.min(65535, top + 1);
      }
      clearMessage();
      redraw();
      changed();
    } catch (err) {
      showMessage(`upload failed: ${err.message || err}`);
    }
  }
  $("upload-label").addEventListener("change", () => upload("label", $("upload-label")));
  $("upload-instance").addEventListener("change", () => upload("instance", $("upload-instance")));

  async function download(endpoint, name) {
    try {
      const resp = await fetch(endpoint, { method: "POST", body: mapsBody(),
                                           headers: { "Content-Type": "application/octet-stream" } });
      if (!resp.ok) { showMessage(await errorText(resp)); return; }
      saveBlob(await resp.blob(), name);
    } catch (err) {
      showMessage(`download failed: ${err.message || err}`);
    }
  }
  $("download-label").addEventListener("click", () => download("/api/label-file", "label.png"));
  $("download-instance").addEventListener("click", () => download("/api/instance-file", "instance.png"));
  $("download-photo").addEventListener("click", () => { if (photo.blob) saveBlob(photo.blob, "photo.png"); });
  $("paint").hidden = false;
  redraw();
  changed();   // the photo of the starting map
}

// ------------------------------------------------------------------------------------------------ sample mode
function initSample(info) {
  const view = makePhotoView($("sample-photo"));
  const sent = new Map();
  let seq = 0;
  const times = { preview: null, full: null };
  $("mix-index").max = Math.max(1, info.num_ws - 1);
  $("mix-index").value = Math.max(1, Math.floor(info.num_ws / 2));
  $("mix-index-value").textContent = $("mix-index").value;
  if (info.sub_ratios.length) {
    $("ratio-box").hidden = false;
    for (const r of info.sub_ratios) {
      const opt = document.createElement("option");
      opt.value = r; opt.textContent = `${r}×`;
      $("ratio").appendChild(opt);
    }
    $("ratio").value = info.preview_ratio;
  }
  const sliders = {};
  for (const name of info.directions) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -1, max: 1, step: 0.05, value: 0 });
    const out = document.createElement("output");
    out.textContent = "0.00";
    label.append(`${name} `, input, out);
    input.addEventListener("input", () => { out.textContent = Number(input.value).toFixed(2); request(true); });
    input.addEventListener("change", () => request(false));
    $("directions").appendChild(label);
    sliders[name] = input;
  }

  function options(preview) {
    const edits = {};
    for (const [name, input] of Object.entries(sliders)) if (Number(input.value) !== 0) edits[name] = Number(input.value);
    const body = { seed: Math.max(0, parseInt($("seed").value, 10) || 0), psi: Number($("psi").value), edits,
                   preview: preview && info.sub_ratios.length > 0 };
    if (body.preview) body.ratio = Number($("ratio").value);
    if ($("mix").checked) {
      body.mix_seed = Math.max(0, parseInt($("mix-seed").value, 10) || 0);
      body.mix_index = parseInt($("mix-index").value, 10);
    }
    return body;
  }

  async function request(preview) {
    const mine = ++seq, body = options(preview);
    window.asapDemo.sent = mine;
    sent.set(mine, performance.now());
    try {
      const resp = await fetch("/api/sample", { method: "POST", body: JSON.stringify(body),
                                                 headers: { "Content-Type": "application/json" } });
      if (resp.status === 204) return;
      if (!resp.ok) { showMessage(await errorText(resp)); return; }
      const timing = parseServerTiming(resp.headers.get("Server-Timing"));
      if (!(await view.show(mine, await resp.blob()))) return;
      const latency = performance.now() - sent.get(mine);
      sent.delete(mine);
      const kind = body.preview ? "preview" : "full";
      times[kind] = `${kind}${body.preview ? ` (${body.ratio}×)` : ""} ${latency.toFixed(0)} ms, ${describeServer(timing)}`;
      Object.assign(window.asapDemo, { photos: window.asapDemo.photos + 1, lastLatencyMs: latency,
                                       lastServer: timing, lastSeq: mine });
      $("sample-timing").textContent = [times.preview, times.full].filter(Boolean).join(" · ");
      $("sample-caption").textContent = body.preview ? "preview (release the slider for the full image)" : "image";
      $("sample-download").disabled = false;
    } catch (err) {
      showMessage(`request failed: ${err.message || err}`);
    }
  }

  $("psi").addEventListener("input", () => { $("psi-value").textContent = Number($("psi").value).toFixed(2); request(true); });
  $("psi").addEventListener("change", () => request(false));
  $("mix-index").addEventListener("input", () => { $("mix-index-value").textContent = $("mix-index").value; request(true); });
  $("mix-index").addEventListener("change", () => request(false));
  for (const id of ["seed", "mix-seed", "mix", "ratio"]) $(id).addEventListener("change", () => request(false));
  $("seed-random").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 100000); request(false); });
  $("sample-download").addEventListener("click", () => { if (view.blob) saveBlob(view.blob, `seed${$("seed").value}.png`); });
  $("sample").hidden = false;
  request(false);
}

async function main() {
  $("message-close").addEventListener("click", clearMessage);
  try {
    const resp = await fetch("/api/info");
    if (!resp.ok) throw new Error(await errorText(resp));
    const info = await resp.json();
    $("model").textContent = `${info.mode} · ${info.model} · ${info.source} · ${info.device}`;
    window.asapDemo.mode = info.mode;
    if (info.mode === "paint") initPaint(info); else initSample(info);
    window.asapDemo.ready = true;
  } catch (err) {
    showMessage(`cannot start the demo: ${err.message || err}`);
  }
}

main();
