"""RemoteView's front end, inline (anywidget's ``_esm`` and ``_css``: no build step).

Two ways to the frames.  Live: a websocket of the Jupyter server to the render server
(``/paraconnect/api/servers/<id>/view``, jupyter/_view.py), speaking the render protocol itself,
on the scene the kernel's view shares (``scene``); so the view turns while the kernel is busy.
Otherwise (no server id, or no such route): through the kernel, one request in flight.
Below the picture, compact controls built from the view's state.
"""

ESM = r"""
// Two ways to the frames.  Live: a websocket of the Jupyter server to the render server
// (/paraconnect/api/servers/<id>/view), speaking the render protocol itself; the view turns
// even while the kernel is busy.  Otherwise (no server id, or no such route): through the
// kernel, one request in flight.
const enc = new TextEncoder(), dec = new TextDecoder();
function frameOf(header) {
  const h = enc.encode(JSON.stringify(header));
  const buf = new Uint8Array(8 + h.length);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, h.length); dv.setUint32(4, 0);
  buf.set(h, 8);
  return buf;
}
function parse(data) {
  const dv = new DataView(data);
  const hlen = dv.getUint32(0), plen = dv.getUint32(4);
  const header = JSON.parse(dec.decode(new Uint8Array(data, 8, hlen)));
  return [header, new Uint8Array(data, 8 + hlen, plen)];
}
function pageConfig() {
  const el = document.getElementById("jupyter-config-data");
  try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
}
function viewURL(id) {
  const c = pageConfig();
  if (!c.baseUrl) return null;
  let base = c.wsUrl || "";
  if (!base) {
    const u = new URL(c.baseUrl, window.location.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    base = u.href;
  }
  if (!base.endsWith("/")) base += "/";
  let url = base + "paraconnect/api/servers/" + encodeURIComponent(id) + "/view";
  if (c.token) url += "?token=" + encodeURIComponent(c.token);
  return url;
}
function download(bytes, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "paraconnect-remoteview";
  const img = document.createElement("img");
  img.draggable = false;
  const bar = document.createElement("div");
  bar.className = "paraconnect-remoteview-bar";
  const save = document.createElement("button");
  save.textContent = "save PNG";
  const status = document.createElement("span");
  bar.append(save, status);
  // Compact controls, built from the view's state (what the render server says it shows):
  // the same operations as view.color_by(), .representation, .slice(), .time, .camera().
  const controls = document.createElement("div");
  controls.className = "paraconnect-remoteview-controls";
  root.append(img, controls, bar);
  el.append(root);
  // What a test or benchmark reads: one entry a frame shown.
  const stats = { frames: [], live: false, inputs: [], sent: [] };
  root.paraconnectStats = stats;
  const size = () => {
    img.style.width = model.get("width") + "px";
    img.style.height = model.get("height") + "px";
  };
  size();

  let ws = null, shownURL = null, saveId = 1000, pendingMove = null, retries = 0;
  // After a drag, the id of the request that ends it: frames showing older requests are
  // acknowledged but not shown, so the picture never steps back after the release.
  let stillId = null, inputId = 1 << 20, wheelEnd = null;
  let shownN = 0;
  function showFrame(h, bytes) {
    arrived(h.input);
    const stale = () => (stillId !== null && (h.input == null || h.input < stillId))
      || h.n < shownN;
    const ack = () => { if (ws && ws.readyState === 1) ws.send(frameOf({ op: "ack", n: h.n })); };
    if (stale()) { ack(); return; }
    const url = URL.createObjectURL(new Blob([bytes], { type: "image/" + h.format }));
    // Decoded aside (off the page's thread), then shown only if it is still worth showing:
    // after a release, a picture older than the still never appears.
    const next = new Image();
    next.src = url;
    next.decode().catch(() => null).then(() => {
      if (stale()) { URL.revokeObjectURL(url); ack(); return; }
      shownN = h.n;
      img.src = url;
      if (shownURL) URL.revokeObjectURL(shownURL);
      shownURL = url;
      stats.frames.push({ n: h.n, t: performance.now(), bytes: bytes.length,
                          quality: h.quality, w: h.w, h: h.h,
                          input: h.input, still: stillId !== null && h.input === stillId });
      ack();
      status.textContent = `frame ${h.n}: ${h.w}x${h.h} ${h.format} q${h.quality}, ` +
        `${Math.round(bytes.length / 1024)} KiB, render ${Math.round(h.render_ms)} ms (live)`;
    });
  }
  function goLive() {
    const id = model.get("server_id"), scene = model.get("scene");
    const url = id && scene ? viewURL(id) : null;
    if (!url) return false;
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send(frameOf({ op: "hello", v: 1, scene }));
      startStream();
      stats.live = true;
      retries = 0;
      model.send({ type: "live" });
    };
    ws.onmessage = (e) => {
      const [h, payload] = parse(e.data);
      if (h.op === "ok" && h.state) { state = h.state; drawControls(); }
      if (h.op === "ok" && h.files) showFiles(h.files);
      if (h.op === "frame" && h.stream) showFrame(h, payload);
      else if (h.op === "frame") download(payload.slice(), "paraconnect-view.png");
      else if (h.op === "error") status.textContent = "error: " + h.message;
    };
    ws.onclose = () => {
      const was = stats.live;
      ws = null; stats.live = false;
      // Never live (the route refused): the kernel's path still works.
      if (!was) { model.send({ type: "not-live" }); showKernel(); return; }
      // Lost (the server restarted, or its job was resubmitted and phoned home again to the
      // same endpoint): try again a few times, then show why.
      status.textContent += " (the view's connection closed; reconnecting)";
      if (retries++ < 5) setTimeout(goLive, 1000 * retries);
    };
    return true;
  }
  const live = () => ws && ws.readyState === 1;
  // While dragging, frames at a fraction of each side (the page stretches them) and coarser
  // JPEG, so that a large view keeps up with the pointer; the still after is full size.
  // drag_scale 0 (validated by the kernel's trait): the render server's rule for the size.
  function startStream() {
    const scale = model.get("drag_scale") || "auto";
    ws.send(frameOf({ op: "stream", fps: 0, format: "jpeg", quality: 90, drag_quality: 60,
                      drag_scale: scale, window: 3, id: 1 }));
  }
  // Camera requests that no arrived frame shows yet: at most AHEAD, so the pointer never
  // outruns the chain (a 240 Hz display would send 240 a second, and the renderer would fall
  // behind); what moves meanwhile folds into one request, sent when a frame comes.
  // A request no frame answered within a second (the stream restarted, the request failed)
  // stops counting, so the drag never stalls on it.
  const AHEAD = 4, FORGET_MS = 1000;
  let ahead = [], scheduled = false;
  function sendMove(force) {
    scheduled = false;
    const now = performance.now();
    while (ahead.length && now - ahead[0][1] > FORGET_MS) ahead.shift();
    if (!pendingMove || !live() || (!force && ahead.length >= AHEAD)) return;
    const m = pendingMove; pendingMove = null;
    stats.sent.push(now);
    ws.send(frameOf({ op: "camera", ...m, id: ++inputId }));
    ahead.push([inputId, now]);
  }
  function arrived(input) {
    if (input == null) return;
    while (ahead.length && ahead[0][0] <= input) ahead.shift();
    sendMove();
  }
  // The drag (or the wheel) ended: its last move, then the request for the full-quality still,
  // whose id marks the frames worth showing from now on.
  function still() {
    sendMove(true);
    if (!live()) return;
    stats.lastMove = inputId;
    stillId = ++inputId;
    ws.send(frameOf({ op: "camera", interactive: false, id: stillId }));
  }
  function move(m) {
    stats.inputs.push(performance.now());
    if (!pendingMove) pendingMove = { interactive: true };
    if (!scheduled) { scheduled = true; requestAnimationFrame(() => sendMove()); }
    for (const k of ["azimuth", "elevation"]) {
      if (m[k]) pendingMove[k] = (pendingMove[k] || 0) + m[k];
    }
    if (m.zoom) pendingMove.zoom = (pendingMove.zoom || 1) * m.zoom;
    if (m.pan) {
      const p = pendingMove.pan || [0, 0];
      pendingMove.pan = [p[0] + m.pan[0], p[1] + m.pan[1]];
    }
  }

  // The kernel's path: one request in flight, cleared only by a new picture.
  let pending = false, dx = 0, dy = 0, wheel = 0, last = null;
  function flush() {
    if (pending || live()) return;
    if (dx || dy) { model.send({ type: "drag", dx, dy }); dx = dy = 0; pending = true; }
    else if (wheel) { model.send({ type: "wheel", delta: wheel }); wheel = 0; pending = true; }
  }
  function showKernel() {
    size();
    if (live()) return;
    if (model.get("src")) img.src = model.get("src");
    status.textContent = model.get("status");
  }
  img.addEventListener("pointerdown", (e) => {
    last = [e.clientX, e.clientY];
    stillId = null;
    ahead = [];
    stats.down = inputId;  // the drag's requests are the ones after this id
    try { img.setPointerCapture(e.pointerId); } catch (err) { /* a pointer no longer down */ }
  });
  img.addEventListener("pointermove", (e) => {
    if (!last) return;
    const mx = e.clientX - last[0], my = e.clientY - last[1];
    last = [e.clientX, e.clientY];
    // Shift-drag pans (the picture follows the pointer), a plain drag turns the camera.
    const h = model.get("height") || 1;
    if (live() && e.shiftKey) { move({ pan: [mx / h, -my / h] }); return; }
    if (live()) { move({ azimuth: -mx * 0.5, elevation: my * 0.5 }); return; }
    dx += mx; dy += my;
    flush();
  });
  img.addEventListener("pointerup", () => {
    stats.up = performance.now();
    last = null;
    if (live()) still();
  });
  img.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (live()) {
      // Wheel steps are a drag too: drag quality while they come, then the still.
      stillId = null;
      move({ zoom: Math.pow(1.1, -e.deltaY / 100) });
      clearTimeout(wheelEnd);
      wheelEnd = setTimeout(still, 250);
      return;
    }
    wheel += e.deltaY;
    flush();
  }, { passive: false });
  save.addEventListener("click", () => {
    if (live()) ws.send(frameOf({ op: "render", format: "png", id: ++saveId }));
    else model.send({ type: "save" });
  });
  model.on("msg:custom", (msg, buffers) => {
    if (msg.type !== "png" || !buffers.length) return;
    download(buffers[0], msg.filename || "paraconnect.png");
  });
  // --- controls ----------------------------------------------------------------------
  let state = model.get("view_state") || {}, playing = null;
  function op(header) {
    if (live()) { ws.send(frameOf({ ...header, id: ++inputId })); return; }
    const { op: name, ...fields } = header;
    model.send({ type: "op", op: name, fields });  // through the kernel
  }
  function labelled(text, input) {
    const l = document.createElement("label");
    l.append(text + " ", input);
    return l;
  }
  function select(name, options, value, onchange) {
    const s = document.createElement("select");
    s.name = name;
    for (const [v, text] of options) {
      const o = document.createElement("option");
      o.value = v; o.textContent = text; o.selected = v === value;
      s.append(o);
    }
    s.addEventListener("change", () => onchange(s.value));
    return labelled(name, s);
  }
  function button(text, title, onclick) {
    const b = document.createElement("button");
    b.textContent = text; b.title = title;
    b.addEventListener("click", onclick);
    return b;
  }
  function drawControls() {
    controls.replaceChildren();
    const arrays = state.arrays || [];
    if (arrays.length) {
      const key = (a) => a.association + ":" + a.name;
      const now = state.color && state.color.array
        ? state.color.association + ":" + state.color.array : "";
      const opts = [["", "solid colour"], ...arrays.map((a) => [key(a),
        a.name + (a.association === "cell" ? " (cells)" : "")])];
      controls.append(select("colour", opts, now, (v) => {
        if (!v) { op({ op: "color", array: null }); return; }
        const i = v.indexOf(":");
        op({ op: "color", association: v.slice(0, i), array: v.slice(i + 1) });
      }));
    }
    if (state.colormap && state.colormaps) {
      controls.append(select("map", state.colormaps.map((m) => [m, m]), state.colormap,
        (v) => op({ op: "display", colormap: v })));
    }
    if (state.representations) {
      controls.append(select("show", state.representations.map((r) => [r, r]),
        state.representation, (v) => op({ op: "display", representation: v })));
    }
    if (state.dataset) {
      // One checkbox a filter (the server keeps one of each, chained in the order added);
      // unticking one clears them all and adds the others back as they were.
      const filters = state.filters || [];
      const keep = ["origin", "normal", "invert", "array", "values", "range"];
      const arrays = state.arrays || [];
      const shown = state.color && arrays.find((a) => a.name === state.color.array);
      const lohi = shown && shown.range ? shown.range : null;
      const defaults = {
        slice: { normal: [0, 0, 1] },
        clip: { normal: [1, 0, 0] },
        contour: {},
        threshold: lohi ? { range: [lohi[0] + (lohi[1] - lohi[0]) / 2, lohi[1]] } : {},
      };
      for (const type of ["slice", "clip", "contour", "threshold"]) {
        if (type === "threshold" && !lohi) continue;
        const box = document.createElement("input");
        box.type = "checkbox"; box.name = type;
        box.checked = filters.some((f) => f.type === type);
        box.addEventListener("change", () => {
          if (box.checked) { op({ op: "filter", action: type, ...defaults[type] }); return; }
          op({ op: "filter", action: "clear" });
          for (const f of filters) {
            if (f.type === type) continue;
            const again = { op: "filter", action: f.type };
            for (const k of keep) if (f[k] !== undefined && f[k] !== null) again[k] = f[k];
            op(again);
          }
        });
        controls.append(labelled(type, box));
      }
      for (const [name, on] of [["scalar_bar", state.scalar_bar], ["axes", state.axes],
                                ["outline", state.outline]]) {
        const box = document.createElement("input");
        box.type = "checkbox"; box.name = name; box.checked = !!on;
        box.addEventListener("change", () => op({ op: "display", [name]: box.checked }));
        controls.append(labelled(name.replace("_", " "), box));
      }
    }
    const times = state.times || [];
    if (times.length > 1) {
      const t = document.createElement("input");
      t.type = "range"; t.name = "time"; t.min = 0; t.max = times.length - 1;
      t.value = state.time || 0;
      t.addEventListener("change", () => op({ op: "time", index: Number(t.value) }));
      const play = button(playing ? "pause" : "play", "step through the time steps", () => {
        if (playing) { clearInterval(playing); playing = null; drawControls(); return; }
        playing = setInterval(() => {
          const next = ((state.time || 0) + 1) % times.length;
          state.time = next;
          op({ op: "time", index: next });
        }, 500);
        drawControls();
      });
      controls.append(labelled(`time ${state.time || 0}/${times.length - 1}`, t), play);
    }
    for (const p of ["+x", "-x", "+y", "-y", "+z", "-z"]) {
      controls.append(button(p, `look along ${p}`, () => op({ op: "camera", preset: p })));
    }
    controls.append(button("reset", "reset the camera", () => op({ op: "camera", reset: true })));
  }
  // The file browser: the render server's data root, never outside it (the server's rule);
  // a directory opens, a file a reader knows is shown in this view.
  const browser = document.createElement("div");
  browser.className = "paraconnect-remoteview-files";
  const shown = (on) => { browser.style.display = on ? "" : "none"; };
  shown(false);
  root.insertBefore(browser, bar);
  function showFiles(listing) {
    browser.replaceChildren();
    const head = document.createElement("div");
    head.textContent = "data root/" + (listing.path || "");
    browser.append(head);
    const up = (listing.path || "").split("/").slice(0, -1).join("/");
    if (listing.path) browser.append(button("..", "the folder above", () => listFiles(up)));
    for (const e of listing.entries || []) {
      const item = button(e.kind === "dir" ? e.name + "/" : e.name,
        e.kind === "dir" ? "open this folder" : (e.reader ? "read with " + e.reader : "no reader"),
        () => {
          if (e.kind === "dir") { listFiles(e.path); return; }
          shown(false);
          op({ op: "load", path: e.path });
        });
      item.disabled = e.kind !== "dir" && !e.reader;
      item.className = "paraconnect-remoteview-file";
      browser.append(item);
    }
    shown(true);
  }
  function listFiles(path) { if (live()) op({ op: "files", path }); }
  const open = button("open…", "a file on the render server's host", () => {
    if (browser.style.display !== "none") { shown(false); return; }
    listFiles("");
  });
  bar.insertBefore(open, status);

  model.on("change:view_state", () => { state = model.get("view_state") || {}; drawControls(); });
  drawControls();

  model.on("change:src", () => { pending = false; showKernel(); flush(); });
  model.on("change:status", showKernel);
  for (const name of ["width", "height", "drag_scale"]) {
    model.on("change:" + name, () => { size(); if (live()) startStream(); });
  }
  if (!goLive()) showKernel();
  return () => {
    if (playing) clearInterval(playing);
    if (ws) ws.close();
    if (shownURL) URL.revokeObjectURL(shownURL);
  };
}
export default { render };
"""

CSS = """
.paraconnect-remoteview img { cursor: grab; touch-action: none; display: block; }
.paraconnect-remoteview-bar { display: flex; gap: 0.5em; align-items: center; margin-top: 4px; }
.paraconnect-remoteview-bar span { font-size: 85%; opacity: 0.8; }
.paraconnect-remoteview-controls { display: flex; flex-wrap: wrap; gap: 0.4em; align-items: center;
  margin-top: 4px; font-size: 85%; }
.paraconnect-remoteview-controls button { padding: 0 0.4em; }
.paraconnect-remoteview-files { display: flex; flex-wrap: wrap; gap: 0.3em; margin-top: 4px;
  font-size: 85%; max-height: 12em; overflow: auto; }
.paraconnect-remoteview-files > div { width: 100%; opacity: 0.8; }
"""

__all__ = ["CSS", "ESM"]
