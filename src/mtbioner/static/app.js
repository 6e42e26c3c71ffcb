// MT-BioNER page: send the text to POST v1/tag, draw the entities over it.
// Filters (types, min score, overlaps) apply in the browser, so that they act at once.
"use strict";

const EXAMPLES = {
  chat:
    "I was diagnosed with breast cancer last year and my oncologist prescribed tamoxifen. Since then " +
    "I get migraines and nausea. Can I take ibuprofen, or could it cause kidney damage?",
  abstract:
    "Cisplatin-induced nephrotoxicity remains a major limitation of chemotherapy. In rats treated with " +
    "cisplatin, expression of the p53 gene and of tumor necrosis factor alpha was increased, and renal " +
    "failure developed within five days. Pretreatment with N-acetylcysteine reduced the kidney injury.",
};

// Fixed colours for the usual corpora's types; others take the next free colour.
const KNOWN = {
  chemical: "#86efac", chem: "#86efac", drug: "#86efac", disease: "#fca5a5", gene: "#93c5fd",
  protein: "#c4b5fd", dna: "#fcd34d", rna: "#fdba74", cell_line: "#67e8f9", cell_type: "#f9a8d4",
  species: "#bef264", anatomy: "#fbcfe8", cellline: "#67e8f9", celltype: "#f9a8d4",
};
const PALETTE = ["#a5b4fc", "#fde68a", "#99f6e4", "#fecdd3", "#d9f99d", "#e9d5ff", "#bae6fd", "#fed7aa"];

const state = { types: [], colours: {}, hidden: new Set(), text: "", entities: [] };
const $ = (id) => document.getElementById(id);

function colourTypes(types) {
  const used = new Set();
  let next = 0;
  for (const type of types) {
    let colour = KNOWN[type.toLowerCase()];
    if (!colour || used.has(colour)) {
      colour = PALETTE[next % PALETTE.length];
      next += 1;
    }
    used.add(colour);
    state.colours[type] = colour;
  }
}

async function loadModel() {
  try {
    const response = await fetch("v1/model");
    const info = await response.json();
    state.types = info.merged_types || info.entity_types;  // the page shows the merged answer (the default)
    colourTypes(state.types);
    const heads = Object.keys(info.corpora).join(", ");
    $("model-info").textContent = `${info.encoder.name} · heads: ${heads}`;
    renderLegend();
  } catch (error) {
    $("model-info").textContent = "model info unavailable";
  }
}

function visible() {
  const minScore = parseFloat($("min-score").value);
  let shown = state.entities.filter((e) => !state.hidden.has(e.type) && e.score >= minScore);
  if ($("flat").checked) shown = flatten(shown);
  return shown;
}

// Same rule as mtbioner.tagging.flatten: best score first, then longer, then earlier.
function flatten(entities) {
  const order = [...entities].sort(
    (a, b) => b.score - a.score || (b.end - b.start) - (a.end - a.start) || a.start - b.start,
  );
  const kept = [];
  for (const e of order) {
    if (kept.every((k) => !(e.start < k.end && k.start < e.end))) kept.push(e);
  }
  return kept.sort((a, b) => a.start - b.start || a.end - b.end);
}

function renderLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const counts = {};
  for (const e of state.entities) counts[e.type] = (counts[e.type] || 0) + 1;
  for (const type of state.types) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip" + (state.hidden.has(type) ? " off" : "");
    chip.dataset.type = type;
    chip.setAttribute("aria-pressed", String(!state.hidden.has(type)));
    chip.title = state.hidden.has(type) ? `show ${type}` : `hide ${type}`;
    chip.style.setProperty("--colour", state.colours[type]);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    const name = document.createElement("span");
    name.textContent = type;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = counts[type] || 0;
    chip.append(swatch, name, count);
    chip.addEventListener("click", () => {
      if (state.hidden.has(type)) state.hidden.delete(type);
      else state.hidden.add(type);
      renderLegend();
      renderText();
    });
    legend.append(chip);
  }
}

// Cut the text at every entity boundary; runs of pieces covered by the same entities
// become one <mark>, striped when entities of several types overlap there.
function renderText() {
  const output = $("output");
  output.replaceChildren();
  const text = state.text;
  const shown = visible();
  const cuts = new Set([0, text.length]);
  for (const e of shown) { cuts.add(e.start); cuts.add(e.end); }
  const points = [...cuts].sort((a, b) => a - b);
  let group = null;
  const flush = () => {
    if (!group) return;
    output.append(group.covering.length ? markFor(group) : document.createTextNode(text.slice(group.start, group.end)));
    group = null;
  };
  for (let i = 0; i + 1 < points.length; i += 1) {
    const [a, b] = [points[i], points[i + 1]];
    const covering = shown.filter((e) => e.start <= a && e.end >= b);
    const key = covering.map((e) => `${e.start}:${e.end}:${e.type}`).join("|");
    if (group && group.key === key) {
      group.end = b;
    } else {
      flush();
      group = { key, covering, start: a, end: b };
    }
  }
  flush();
  renderTable(shown);
}

function markFor(group) {
  const mark = document.createElement("mark");
  const types = [...new Set(group.covering.map((e) => e.type))];
  const colours = types.map((t) => state.colours[t]);
  mark.className = "entity";
  mark.dataset.types = types.join(" ");
  if (colours.length === 1) {
    mark.style.background = colours[0];
  } else {
    const stops = colours.flatMap((c, i) => [`${c} ${i * 8}px`, `${c} ${(i + 1) * 8}px`]);
    mark.style.background = `repeating-linear-gradient(135deg, ${stops.join(", ")})`;
  }
  mark.append(document.createTextNode(state.text.slice(group.start, group.end)));
  const ending = group.covering.filter((e) => e.end === group.end);
  for (const type of [...new Set(ending.map((e) => e.type))]) {
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = type;
    mark.append(label);
  }
  mark.tabIndex = 0;
  mark._entities = group.covering;
  mark.addEventListener("mouseenter", () => showTooltip(mark));
  mark.addEventListener("focus", () => showTooltip(mark));
  mark.addEventListener("mouseleave", hideTooltip);
  mark.addEventListener("blur", hideTooltip);
  return mark;
}

function showTooltip(mark) {
  const tip = $("tooltip");
  tip.replaceChildren();
  for (const e of mark._entities) {
    const row = document.createElement("div");
    row.className = "tip-row";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = state.colours[e.type];
    const body = document.createElement("span");
    body.innerHTML = "<b></b> <span class='tip-text'></span><br><span class='tip-meta'></span>";
    body.querySelector("b").textContent = e.type;
    body.querySelector(".tip-text").textContent = `“${e.text}”`;
    body.querySelector(".tip-meta").textContent = `corpus ${e.corpus.join(", ")} · score ${e.score.toFixed(3)}`;
    row.append(swatch, body);
    tip.append(row);
  }
  tip.hidden = false;
  const box = mark.getBoundingClientRect();
  const left = Math.min(box.left + window.scrollX, window.scrollX + document.documentElement.clientWidth - tip.offsetWidth - 8);
  tip.style.left = `${Math.max(8, left)}px`;
  tip.style.top = `${box.bottom + window.scrollY + 6}px`;
}

function hideTooltip() {
  $("tooltip").hidden = true;
}

function renderTable(shown) {
  const body = $("entities").querySelector("tbody");
  body.replaceChildren();
  for (const e of shown) {
    const row = document.createElement("tr");
    const cells = [e.text, e.type, e.corpus.join(", "), e.score.toFixed(3), `${e.start}–${e.end}`];
    for (const value of cells) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    row.cells[1].style.setProperty("--colour", state.colours[e.type]);
    row.cells[1].className = "type-cell";
    body.append(row);
  }
}

function setStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function describeError(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) return detail.map((d) => d.msg).join("; ");
  return `HTTP ${status}`;
}

async function tag() {
  const text = $("text").value;
  const button = $("tag");
  button.disabled = true;
  setStatus("tagging…");
  const started = performance.now();
  try {
    const response = await fetch("v1/tag", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      setStatus(`error: ${describeError(body, response.status)}`, true);
      return;
    }
    state.text = text;
    state.entities = body.entities;
    const ms = Math.round(performance.now() - started);
    const n = body.entities.length;
    setStatus(`${n} ${n === 1 ? "entity" : "entities"} · ${ms} ms`);
    renderLegend();
    renderText();
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
  } finally {
    button.disabled = false;
  }
}

function init() {
  $("text").value = EXAMPLES.chat;
  $("tag").addEventListener("click", tag);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) tag();
  });
  for (const button of document.querySelectorAll("[data-example]")) {
    button.addEventListener("click", () => {
      $("text").value = EXAMPLES[button.dataset.example];
      tag();
    });
  }
  $("min-score").addEventListener("input", () => {
    $("min-score-value").textContent = parseFloat($("min-score").value).toFixed(2);
    renderText();
  });
  $("flat").addEventListener("change", renderText);
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
