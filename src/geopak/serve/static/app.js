// GEOPAK page: upload photos, ask /api/predict, draw the answer on an SVG map drawn here (no map library,
// no network beyond this server). Equirectangular projection over Pakistan's bounding box.
"use strict";

(function () {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const BBOX = { latMin: 23.0, latMax: 37.5, lonMin: 60.5, lonMax: 78.0 }; // Pakistan, GB reaches 77.8E
  const STANDARD_PARALLEL = ((BBOX.latMin + BBOX.latMax) / 2) * (Math.PI / 180);
  const K = Math.cos(STANDARD_PARALLEL); // x scale of the equirectangular projection
  const SCALE = 40; // SVG units per degree of latitude
  const WIDTH = (BBOX.lonMax - BBOX.lonMin) * K * SCALE;
  const HEIGHT = (BBOX.latMax - BBOX.latMin) * SCALE;
  const KM_PER_DEG = 111.195; // mean Earth radius 6371.0088 km
  const PROVINCE_COLOURS = {
    "Sindh": "#f1dcae",
    "Punjab": "#cfe3b4",
    "Khyber Pakhtunkhwa": "#b8dad1",
    "Islamabad Capital Territory": "#f0a995",
    "Gilgit-Baltistan": "#d8cdea",
    "Balochistan": "#efd6c3",
    "Azad Kashmir": "#c4d7ef",
  };
  const LABELS = {
    "Khyber Pakhtunkhwa": "KP",
    "Islamabad Capital Territory": "ICT",
    "Azad Kashmir": "AJK",
  };

  const $ = (id) => document.getElementById(id);
  const state = { info: null, results: [], selected: -1, cellsLoaded: false };

  // ------------------------------------------------------------------ helpers
  function project(lon, lat) {
    return [(lon - BBOX.lonMin) * K * SCALE, (BBOX.latMax - lat) * SCALE];
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }

  function svgTitle(el, text) {
    const t = document.createElementNS(SVG_NS, "title");
    t.textContent = text;
    el.appendChild(t);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function fmt(x, digits) {
    return Number.isFinite(x) ? x.toFixed(digits) : "n/a";
  }

  function fmtLatLon(lat, lon) {
    const ns = lat >= 0 ? "N" : "S";
    const ew = lon >= 0 ? "E" : "W";
    return `${fmt(Math.abs(lat), 4)}° ${ns}, ${fmt(Math.abs(lon), 4)}° ${ew}`;
  }

  function pct(p) {
    return Number.isFinite(p) ? `${(100 * p).toFixed(1)}%` : "n/a";
  }

  function setStatus(text, busy) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("busy", Boolean(busy));
  }

  function showError(text) {
    const el = $("error");
    el.textContent = text;
    el.hidden = !text;
  }

  async function errorDetail(resp) {
    try {
      const body = await resp.json();
      if (typeof body.detail === "string") return body.detail;
      return JSON.stringify(body.detail || body);
    } catch (_) {
      return `${resp.status} ${resp.statusText}`;
    }
  }

  // ------------------------------------------------------------------ base map
  function ringPath(ring) {
    let d = "";
    ring.forEach(([lon, lat], i) => {
      const [x, y] = project(lon, lat);
      d += `${i === 0 ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    return d + "Z";
  }

  function geometryPath(geom) {
    const polys = geom.type === "Polygon" ? [geom.coordinates] : geom.type === "MultiPolygon" ? geom.coordinates : [];
    return polys.map((rings) => rings.map(ringPath).join("")).join("");
  }

  function drawFrame() {
    const map = $("map");
    map.setAttribute("viewBox", `0 0 ${WIDTH.toFixed(1)} ${HEIGHT.toFixed(1)}`);
    for (const id of ["map-sea", "map-clip-rect"]) {
      const r = $(id);
      r.setAttribute("x", 0);
      r.setAttribute("y", 0);
      r.setAttribute("width", WIDTH.toFixed(1));
      r.setAttribute("height", HEIGHT.toFixed(1));
    }
    const g = $("layer-graticule");
    clear(g);
    for (let lon = Math.ceil(BBOX.lonMin / 2) * 2; lon < BBOX.lonMax; lon += 2) {
      const [x] = project(lon, BBOX.latMin);
      svg("line", { x1: x, y1: 0, x2: x, y2: HEIGHT }, g);
      svg("text", { x: x + 2, y: HEIGHT - 4 }, g).textContent = `${lon}°E`;
    }
    for (let lat = Math.ceil(BBOX.latMin / 2) * 2; lat < BBOX.latMax; lat += 2) {
      const [, y] = project(BBOX.lonMin, lat);
      svg("line", { x1: 0, y1: y, x2: WIDTH, y2: y }, g);
      svg("text", { x: 3, y: y - 3 }, g).textContent = `${lat}°N`;
    }
  }

  async function loadProvinces() {
    const note = $("map-note");
    let resp;
    try {
      resp = await fetch("/api/provinces.geojson");
    } catch (e) {
      note.textContent = `Province outlines unavailable: ${e}`;
      return;
    }
    if (!resp.ok) {
      note.textContent = `Province outlines unavailable: ${await errorDetail(resp)}`;
      return;
    }
    const fc = await resp.json();
    const g = $("layer-provinces");
    const labels = $("layer-labels");
    clear(g);
    clear(labels);
    for (const f of fc.features) {
      const name = f.properties.name;
      const path = svg("path", {
        d: geometryPath(f.geometry),
        fill: PROVINCE_COLOURS[name] || "#dddddd",
        "fill-rule": "evenodd",
        "data-province": name,
        role: "img",
        "aria-label": name,
      }, g);
      svgTitle(path, name);
      if (Array.isArray(f.properties.label)) {
        const [x, y] = project(f.properties.label[0], f.properties.label[1]);
        svg("text", { x, y }, labels).textContent = LABELS[name] || name;
      }
    }
    note.textContent = "";
    highlightProvince();
  }

  async function loadInfo() {
    try {
      const resp = await fetch("/api/info");
      if (!resp.ok) return;
      state.info = await resp.json();
      const m = state.info.model || {};
      const parts = [`geopak ${state.info.version}`];
      if (state.info.n_cells) parts.push(`${state.info.n_cells} geocells`);
      const ckpt = m.checkpoint_path || m.checkpoint;
      if (ckpt) parts.push(String(ckpt).split(/[\\/]/).filter(Boolean).pop());
      $("model-info").textContent = parts.join(" · ");
      if (!state.info.n_cells) {
        $("toggle-cells").disabled = true;
        $("toggle-cells").parentElement.title = "This model has no cell table";
      }
    } catch (_) {
      /* the page still works without the info line */
    }
  }

  async function toggleCells() {
    const g = $("layer-cells");
    const on = $("toggle-cells").checked;
    g.style.display = on ? "" : "none";
    if (!on || state.cellsLoaded) return;
    const resp = await fetch("/api/cells");
    if (!resp.ok) {
      $("map-note").textContent = await errorDetail(resp);
      return;
    }
    const cells = await resp.json();
    clear(g);
    for (let i = 0; i < cells.n_cells; i++) {
      const [x, y] = project(cells.lon[i], cells.lat[i]);
      const c = svg("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 1.6 }, g);
      svgTitle(c, `cell ${cells.cell_id[i]} (${cells.province[i]}), radius ${fmt(cells.radius_km[i], 1)} km`);
    }
    state.cellsLoaded = true;
  }

  // ------------------------------------------------------------------ prediction layers
  function highlightProvince() {
    const current = state.results[state.selected];
    const name = current ? current.prediction.province : null;
    const layer = $("layer-provinces");
    for (const path of layer.querySelectorAll("path")) {
      const hit = path.getAttribute("data-province") === name;
      path.classList.toggle("predicted", hit);
      if (hit) layer.appendChild(path); // on top, so its outline is not hidden by neighbours
    }
  }

  function drawPrediction(pred) {
    const radiusLayer = $("layer-radius");
    const hypLayer = $("layer-hypotheses");
    const markerLayer = $("layer-marker");
    clear(radiusLayer);
    clear(hypLayer);
    clear(markerLayer);
    if (!pred) return;

    const [px, py] = project(pred.lon, pred.lat);
    if (Number.isFinite(pred.radius_km) && pred.radius_km > 0) {
      const ry = (pred.radius_km / KM_PER_DEG) * SCALE;
      const rx = (ry * K) / Math.max(Math.cos((pred.lat * Math.PI) / 180), 1e-3);
      const e = svg("ellipse", { id: "uncertainty-radius", cx: px, cy: py, rx, ry }, radiusLayer);
      svgTitle(e, `Uncertainty radius: ${fmt(pred.radius_km, 1)} km`);
    }

    const hyps = (pred.hypotheses || []).filter((h) => Number.isFinite(h.lat) && Number.isFinite(h.lon));
    hyps.sort((a, b) => b.p - a.p); // largest first, so small circles stay visible on top
    for (const h of hyps) {
      const [x, y] = project(h.lon, h.lat);
      const r = 2.5 + 18 * Math.sqrt(Math.max(h.p, 0));
      const c = svg("circle", { class: "hypothesis", cx: x, cy: y, r, "data-p": h.p }, hypLayer);
      svgTitle(c, `Hypothesis: ${h.province || "?"}, cell ${h.cell_id}, p = ${pct(h.p)} (${fmtLatLon(h.lat, h.lon)})`);
    }

    const marker = svg("g", {
      id: "prediction-marker",
      class: "marker",
      role: "img",
      "aria-label": `Predicted location ${fmtLatLon(pred.lat, pred.lon)} in ${pred.province}`,
      transform: `translate(${px.toFixed(2)},${py.toFixed(2)})`,
    }, markerLayer);
    svgTitle(marker, `Prediction: ${pred.province}, ${fmtLatLon(pred.lat, pred.lon)}`);
    svg("circle", { class: "halo", r: 9 }, marker);
    svg("line", { x1: -14, y1: 0, x2: -6, y2: 0 }, marker);
    svg("line", { x1: 6, y1: 0, x2: 14, y2: 0 }, marker);
    svg("line", { x1: 0, y1: -14, x2: 0, y2: -6 }, marker);
    svg("line", { x1: 0, y1: 6, x2: 0, y2: 14 }, marker);
    svg("circle", { class: "dot", r: 5 }, marker);
  }

  // ------------------------------------------------------------------ result panel
  function renderBars(probs, top) {
    const list = $("province-bars");
    clear(list);
    const entries = Object.entries(probs || {}).sort((a, b) => b[1] - a[1]);
    for (const [name, p] of entries) {
      const li = document.createElement("li");
      li.className = "bar-row" + (name === top ? " top" : "");
      li.setAttribute("data-province", name);
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = name;
      label.title = name;
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("role", "meter");
      track.setAttribute("aria-label", `${name} probability`);
      track.setAttribute("aria-valuemin", "0");
      track.setAttribute("aria-valuemax", "100");
      track.setAttribute("aria-valuenow", (100 * p).toFixed(1));
      track.setAttribute("aria-valuetext", pct(p));
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      track.appendChild(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = pct(p);
      li.append(label, track, value);
      list.appendChild(li);
    }
  }

  function renderHypotheses(hyps) {
    const body = $("hypotheses-body");
    clear(body);
    const sorted = [...(hyps || [])].sort((a, b) => b.p - a.p).slice(0, 10);
    for (const h of sorted) {
      const tr = document.createElement("tr");
      for (const text of [pct(h.p), h.province || "?", fmtLatLon(h.lat, h.lon), String(h.cell_id)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function renderResult() {
    const current = state.results[state.selected];
    $("result-empty").hidden = Boolean(current);
    $("result-body").hidden = !current;
    for (const btn of $("image-list").querySelectorAll("button")) {
      btn.setAttribute("aria-pressed", String(Number(btn.dataset.index) === state.selected));
    }
    if (!current) {
      drawPrediction(null);
      highlightProvince();
      return;
    }
    const p = current.prediction;
    $("result-file").textContent = current.name;
    $("result-province").textContent = p.province;
    $("result-latlon").textContent = fmtLatLon(p.lat, p.lon);
    $("result-confidence").textContent = pct(p.confidence);
    $("result-radius").textContent = Number.isFinite(p.radius_km) ? `${fmt(p.radius_km, 1)} km` : "n/a";
    renderBars(p.province_probs, p.province);
    renderHypotheses(p.hypotheses);
    drawPrediction(p);
    highlightProvince();
  }

  function addToList(entry, index) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "image-item";
    btn.dataset.index = String(index);
    btn.setAttribute("aria-pressed", "false");
    btn.setAttribute("aria-label", `Show the prediction for ${entry.name}`);
    const img = document.createElement("img");
    img.src = entry.url;
    img.alt = "";
    const text = document.createElement("span");
    text.className = "name";
    text.textContent = entry.name;
    const sub = document.createElement("span");
    sub.className = "sub";
    sub.textContent = `${entry.prediction.province} · ${pct(entry.prediction.confidence)}`;
    text.appendChild(sub);
    btn.append(img, text);
    btn.addEventListener("click", () => {
      state.selected = index;
      renderResult();
    });
    li.appendChild(btn);
    $("image-list").prepend(li);
  }

  // ------------------------------------------------------------------ upload
  async function upload(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    showError("");
    const info = state.info || {};
    if (info.max_files && files.length > info.max_files) {
      showError(`Too many photos: at most ${info.max_files} at once (got ${files.length}).`);
      return;
    }
    if (info.max_file_bytes) {
      const big = files.find((f) => f.size > info.max_file_bytes);
      if (big) {
        const mib = (info.max_file_bytes / 1048576).toFixed(0);
        showError(`${big.name} is larger than the ${mib} MiB limit; resize or recompress it.`);
        return;
      }
    }
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    setStatus(`Locating ${files.length} photo${files.length > 1 ? "s" : ""}…`, true);
    let resp;
    try {
      resp = await fetch("/api/predict", { method: "POST", body: form });
    } catch (e) {
      setStatus("");
      showError(`Could not reach the GEOPAK server: ${e}`);
      return;
    }
    if (!resp.ok) {
      setStatus("");
      showError(await errorDetail(resp));
      return;
    }
    const body = await resp.json();
    const first = state.results.length;
    body.predictions.forEach((prediction, i) => {
      const entry = { name: prediction.filename || files[i].name, url: URL.createObjectURL(files[i]), prediction };
      state.results.push(entry);
      addToList(entry, first + i);
    });
    state.selected = first;
    const n = body.predictions.length;
    setStatus(`Located ${n} photo${n > 1 ? "s" : ""} in ${fmt(body.elapsed_ms, 0)} ms.`, false);
    renderResult();
    $("result").scrollIntoView({ block: "nearest" });
  }

  function setupUpload() {
    const input = $("file-input");
    input.addEventListener("change", () => {
      upload(input.files).finally(() => {
        input.value = "";
      });
    });
    const zone = $("dropzone");
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => {
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
        zone.classList.add("dragover");
      });
    }
    for (const type of ["dragleave", "dragend"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragover"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragover");
      upload(e.dataTransfer ? e.dataTransfer.files : []);
    });
    // A file dropped beside the zone must not navigate away from the page.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
  }

  document.addEventListener("DOMContentLoaded", () => {
    drawFrame();
    setupUpload();
    $("toggle-cells").addEventListener("change", toggleCells);
    $("layer-cells").style.display = "none";
    loadInfo();
    loadProvinces();
    document.body.dataset.ready = "true";
  });
})();
