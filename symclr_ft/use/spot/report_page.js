// report.html's review: count thresholds moved by the person, boxes and counts redrawn at once.
// Inlined into the page by report.py (no network, no library). It reads the detections that
// the page embeds (#spot-data), counts a detection when its score is at least its class's
// threshold (report.count_detections's rule), matches the counted ones to the ground truth
// as report.match_to_truth does, and saves the thresholds in the file format that
// `symclr-spot --thresholds` reads (symclr_ft/use/spot/thresholds.py).
// A URL hash moves the sliders as a person would: report.html#count_score=0.8&class.valve=0.6
(function () {
  "use strict";
  const MATCH_IOU = 0.5;
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("spot-data").textContent);
  const state = { global: data.count_score, classes: Object.assign({}, data.class_count_scores) };
  const classOf = new Map(data.classes.map((c) => [c.id, c]));
  const hasTruth = data.drawings.some((d) => d.truth !== null);

  function threshold(cat) {
    const c = classOf.get(cat);
    return c && Object.prototype.hasOwnProperty.call(state.classes, c.name) ? state.classes[c.name] : state.global;
  }

  function iou(a, b) { // [x, y, w, h] boxes
    const w = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
    const h = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
    if (w <= 0 || h <= 0) return 0;
    return (w * h) / (a[2] * a[3] + b[2] * b[3] - w * h);
  }

  // Greedy by score, same class, IoU >= 0.5: which rows are true, which truth boxes were found.
  function matchToTruth(rows, truth) {
    const found = truth.map(() => false);
    const ok = rows.map(() => false);
    const order = rows.map((_, i) => i).sort((i, j) => rows[j].score - rows[i].score);
    for (const i of order) {
      let best = MATCH_IOU, bestJ = -1;
      truth.forEach((t, j) => {
        if (!found[j] && t.cat === rows[i].cat) {
          const v = iou(rows[i].box, t.box);
          if (v >= best) { best = v; bestJ = j; }
        }
      });
      if (bestJ >= 0) found[bestJ] = ok[i] = true;
    }
    return { ok, found };
  }

  // ------------------------------------------------------------------ the drawings

  function svgEl(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  }

  function line(x0, y0, x1, y1, colour) {
    return svgEl("line", { x1: x0, y1: y0, x2: x1, y2: y1, stroke: colour, "stroke-width": 2,
      "vector-effect": "non-scaling-stroke" });
  }

  // Boxes over one figure's plain drawing, made once: later only shown or hidden.
  function buildSheet(d) {
    const fig = document.getElementById("fig-" + d.figure);
    const img = fig.querySelector("img");
    const svg = svgEl("svg", { viewBox: `0 0 ${d.width} ${d.height}`, preserveAspectRatio: "none",
      class: "boxes" });
    const f = d.factor;
    d.rows = d.dets.map(([cat, score, x, y, w, h]) => {
      const X0 = x / f, Y0 = y / f, X1 = (x + w) / f, Y1 = (y + h) / f;
      const g = svgEl("g", {});
      g.appendChild(svgEl("rect", { x: X0, y: Y0, width: X1 - X0, height: Y1 - Y0, fill: "none",
        stroke: classOf.has(cat) ? classOf.get(cat).colour : "#888", "stroke-width": 3,
        "vector-effect": "non-scaling-stroke" }));
      const cross = svgEl("g", { class: "false" });
      cross.appendChild(line(X0, Y0, X1, Y1, data.false_colour));
      cross.appendChild(line(X0, Y1, X1, Y0, data.false_colour));
      g.appendChild(cross);
      svg.appendChild(g);
      return { cat, score, box: [x, y, w, h], el: g, cross };
    });
    d.truthRows = (d.truth || []).map(([cat, x, y, w, h]) => {
      const pad = 2;
      const el = svgEl("rect", { x: x / f - pad, y: y / f - pad, width: w / f + 2 * pad, height: h / f + 2 * pad,
        fill: "none", stroke: data.miss_colour, "stroke-width": 2, "vector-effect": "non-scaling-stroke" });
      svg.appendChild(el);
      return { cat, box: [x, y, w, h], el };
    });
    img.src = d.image; // the drawing without baked-in boxes (the static page shows those)
    img.parentNode.appendChild(svg);
    d.caption = fig.querySelector(".tally");
    d.why = fig.querySelector(".why");
  }

  // Counted detections (per drawing, per class) and the tallies against the ground truth.
  function recount() {
    const perClass = new Map(), truthPerClass = new Map();
    let total = 0;
    for (const d of data.drawings) {
      d.counts = new Map();
      d.truthCounts = new Map();
      const counted = [];
      for (const [cat, score] of d.dets) {
        if (score >= threshold(cat)) {
          d.counts.set(cat, (d.counts.get(cat) || 0) + 1);
          perClass.set(cat, (perClass.get(cat) || 0) + 1);
          total += 1;
        }
      }
      for (const [cat] of d.truth || []) {
        d.truthCounts.set(cat, (d.truthCounts.get(cat) || 0) + 1);
        truthPerClass.set(cat, (truthPerClass.get(cat) || 0) + 1);
      }
      if (d.rows) {
        for (const r of d.rows) if (r.score >= threshold(r.cat)) counted.push(r);
        const truth = d.truthRows;
        const m = d.truth !== null ? matchToTruth(counted, truth) : { ok: counted.map(() => true), found: [] };
        const shown = new Set(counted);
        for (const r of d.rows) r.el.style.display = shown.has(r) ? "" : "none";
        counted.forEach((r, i) => { r.cross.style.display = m.ok[i] ? "none" : ""; });
        truth.forEach((t, j) => { t.el.style.display = m.found[j] ? "none" : ""; });
        const right = m.ok.filter(Boolean).length;
        let text = `${right} found`;
        if (d.truth !== null) {
          text += `, ${counted.length - right} false (magenta cross), ` +
            `${m.found.filter((x) => !x).length} missed (white box)`;
        }
        d.caption.textContent = text;
        if (d.why) d.why.style.display = counted.length ? "none" : "";
      }
    }
    return { total, perClass, truthPerClass };
  }

  // ------------------------------------------------------------------ the counts table

  function cell(tag, text, cls) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;
    if (cls) el.className = cls;
    return el;
  }

  function swatch(c) {
    const sw = cell("span", undefined, "sw");
    sw.style.background = c.colour;
    return sw;
  }

  // Columns: every class with a detection at any threshold or a true box, so that they stay
  // put while a slider moves.
  function renderTable() {
    const table = document.getElementById("counts");
    const used = data.classes.filter((c) => data.drawings.some((d) =>
      d.dets.some((r) => r[0] === c.id) || (d.truth || []).some((t) => t[0] === c.id)));
    const head = document.createElement("tr");
    head.appendChild(cell("th", "drawing"));
    for (const c of used) {
      const th = cell("th", c.name);
      th.insertBefore(swatch(c), th.firstChild);
      head.appendChild(th);
    }
    const rows = [head];
    for (const d of data.drawings) {
      const tr = document.createElement("tr");
      tr.appendChild(cell("th", d.file));
      for (const c of used) {
        const n = d.counts.get(c.id) || 0;
        if (d.truth === null) { tr.appendChild(cell("td", String(n))); continue; }
        const t = d.truthCounts.get(c.id) || 0;
        tr.appendChild(cell("td", `${n} / ${t}`, n !== t ? "off" : ""));
      }
      rows.push(tr);
    }
    table.replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ the sliders

  function fmt(v) { return v.toFixed(2); }

  const globalSlider = document.getElementById("t-global");
  const sliders = new Map(); // class name -> {input, output, count, row}

  function buildSliders() {
    const min = String(data.slider_min);
    globalSlider.min = min;
    globalSlider.value = String(state.global);
    globalSlider.addEventListener("input", () => { state.global = parseFloat(globalSlider.value); update(); });
    const body = document.getElementById("class-sliders");
    for (const c of data.classes) {
      const tr = document.createElement("tr");
      const name = cell("th", c.name);
      name.insertBefore(swatch(c), name.firstChild);
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min, max: "1", step: "0.01" });
      input.dataset.class = c.name;
      input.setAttribute("aria-label", `count threshold of ${c.name}`);
      input.addEventListener("input", () => { state.classes[c.name] = parseFloat(input.value); update(); });
      const output = cell("output");
      const count = cell("td", "", "n");
      const reset = cell("button", "global", "reset");
      reset.type = "button";
      reset.title = "count this class from the global threshold again";
      reset.addEventListener("click", () => { delete state.classes[c.name]; update(); });
      const sliderCell = cell("td");
      sliderCell.append(input, " ", output);
      const resetCell = cell("td");
      resetCell.appendChild(reset);
      tr.append(name, sliderCell, count, resetCell);
      body.appendChild(tr);
      sliders.set(c.name, { input, output, count, reset, row: tr });
    }
  }

  function thresholdsText() {
    const names = Object.keys(state.classes).sort();
    const classes = {};
    for (const n of names) classes[n] = state.classes[n];
    const scales = data.box_scales || {};  // calibration's box scales: kept as the run had them
    const out = Object.keys(scales).length ? { count_score: state.global, classes, box_scales: scales }
      : { count_score: state.global, classes };
    return JSON.stringify(out, null, 2) + "\n";
  }

  function save() {
    const blob = new Blob([thresholdsText()], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = data.thresholds_file;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function update() {
    const { total, perClass, truthPerClass } = recount();
    document.getElementById("total").textContent = String(total);
    document.getElementById("v-global").textContent = fmt(state.global);
    const own = Object.keys(state.classes).length;
    document.getElementById("rule").textContent = `score \u2265 ${state.global.toFixed(3)}` +
      (own ? `, ${own} class${own > 1 ? "es with their" : " with its"} own threshold` : "");
    for (const c of data.classes) {
      const s = sliders.get(c.name);
      const t = threshold(c.id);
      if (document.activeElement !== s.input) s.input.value = String(t);
      s.output.textContent = fmt(t);
      const isOwn = Object.prototype.hasOwnProperty.call(state.classes, c.name);
      s.row.classList.toggle("own", isOwn);
      s.reset.disabled = !isOwn;
      const n = perClass.get(c.id) || 0;
      s.count.textContent = hasTruth ? `${n} / ${truthPerClass.get(c.id) || 0}` : String(n);
    }
    renderTable();
    document.getElementById("thresholds-json").textContent = thresholdsText();
  }

  // report.html#count_score=0.8&class.valve=0.6: the sliders moved as by hand, in that order.
  function applyHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    for (const [key, value] of params) {
      const input = key === "count_score" ? globalSlider
        : key.startsWith("class.") && sliders.has(key.slice(6)) ? sliders.get(key.slice(6)).input : null;
      if (!input) continue;
      input.value = value;
      input.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  for (const d of data.drawings) if (d.figure !== null) buildSheet(d);
  buildSliders();
  document.getElementById("save").addEventListener("click", save);
  document.getElementById("command").textContent = data.command;
  document.getElementById("review").hidden = false;
  update();
  applyHash();
  window.addEventListener("hashchange", applyHash);
})();
