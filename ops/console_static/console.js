// lighter-hedge console: polls /api/state every second and puts its texts into the page (textContent
// only: nothing the server sends is parsed as HTML). Every text and every decision (state sentence,
// whether Resume is allowed, the preview's words) comes from the server (ops/console_view.py).
"use strict";

const HEADERS = {"X-Requested-With": "lighter-hedge-console"};
const POLL_MS = 1000;
const markets = new Map();   // market -> its <section>

function url(path) {
  return location.origin + path;   // never the document's URL: it may carry user:password@
}

async function post(path, body) {
  const response = await fetch(url(path), {
    method: "POST", cache: "no-store", credentials: "same-origin",
    headers: {...HEADERS, "Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  let answer;
  try {
    answer = await response.json();
  } catch (e) {
    answer = {ok: false, message: `HTTP ${response.status}`};
  }
  answer.status = response.status;
  return answer;
}

function text(root, selector, value) {
  const node = root.querySelector(selector);
  if (node.textContent !== value) node.textContent = value;
}

function showResult(section, answer) {
  const result = section.querySelector(".result");
  result.replaceChildren();
  result.className = "result " + (answer.ok ? "ok" : "error");
  const lines = answer.lines && answer.lines.length ? answer.lines : [answer.message || ""];
  for (const line of lines) {
    const p = document.createElement("p");
    p.textContent = line;
    result.appendChild(p);
  }
}

function setBusy(section, busy) {
  section.dataset.busy = busy ? "1" : "";
  for (const button of section.querySelectorAll("button")) {
    if (busy) button.disabled = true;
  }
  if (!busy) applyEnabled(section);
}

function applyEnabled(section) {
  const view = section.view;
  if (!view || section.dataset.busy) return;
  section.querySelector(".resume").disabled = !view.resume.enabled;
  section.querySelector(".flatten").disabled = false;
  for (const row of section.querySelectorAll("tbody tr[data-task-id]")) {
    for (const button of row.querySelectorAll("button")) button.disabled = false;
  }
}

function marketSection(name) {
  if (markets.has(name)) return markets.get(name);
  const section = document.getElementById("market-template").content.firstElementChild.cloneNode(true);
  section.id = "market-" + name;
  section.dataset.market = name;
  text(section, ".name", name);
  section.querySelector(".resume").addEventListener("click", async () => {
    setBusy(section, true);
    try {
      showResult(section, await post("/api/resume", {market: name}));
    } catch (e) {
      showResult(section, {ok: false, message: "resume: " + e.message});
    } finally {
      setBusy(section, false);
    }
  });
  section.querySelector(".flatten").addEventListener("click", async () => {
    if (!window.confirm(section.view.flatten_question)) return;
    setBusy(section, true);
    showResult(section, {ok: true, message: `flattening ${name}… (up to a minute)`});
    try {
      showResult(section, await post("/api/flatten", {market: name}));
    } catch (e) {
      showResult(section, {ok: false, message: "flatten: " + e.message});
    } finally {
      setBusy(section, false);
    }
  });
  document.getElementById("markets").appendChild(section);
  markets.set(name, section);
  return section;
}

function failedRow(section, market, failed) {
  const tbody = section.querySelector("table.failed tbody");
  let row = tbody.querySelector(`tr[data-task-id="${CSS.escape(failed.task_id)}"]`);
  if (row) return row;
  row = document.getElementById("failed-template").content.firstElementChild.cloneNode(true);
  row.dataset.taskId = failed.task_id;
  const input = row.querySelector(".bps");
  const preview = row.querySelector(".preview");
  input.addEventListener("input", () => { preview.hidden = true; });   // what is sent is what was previewed
  row.querySelector(".requeue").addEventListener("click", async () => {
    const bps = input.value.trim();
    const previewText = row.querySelector(".preview-text");
    const send = row.querySelector(".send");
    previewText.textContent = "pricing from the book…";
    preview.hidden = false;
    send.hidden = true;
    try {
      const answer = await post("/api/requeue/preview", {market, task_id: failed.task_id, max_slippage_bps: bps});
      if (answer.ok) {
        previewText.textContent = answer.text;
        previewText.className = "preview-text " + (answer.inside === false ? "error" : "ok");
        send.textContent = bps ? `Send requeue at ${bps} bps` : "Send requeue";
        send.hidden = false;
      } else {
        previewText.textContent = answer.message;
        previewText.className = "preview-text error";   // nothing to send: the preview said why
      }
      send.dataset.bps = bps;
    } catch (e) {
      previewText.textContent = "preview: " + e.message;
    }
  });
  row.querySelector(".cancel").addEventListener("click", () => { preview.hidden = true; });
  row.querySelector(".send").addEventListener("click", async () => {
    setBusy(section, true);
    try {
      const bps = row.querySelector(".send").dataset.bps || "";
      const answer = await post("/api/requeue", {market, task_id: failed.task_id, max_slippage_bps: bps});
      showResult(section, answer);
      if (answer.ok) preview.hidden = true;
    } catch (e) {
      showResult(section, {ok: false, message: "requeue: " + e.message});
    } finally {
      setBusy(section, false);
    }
  });
  tbody.appendChild(row);
  return row;
}

function renderMarket(view) {
  const section = marketSection(view.market);
  section.view = view;
  section.dataset.state = view.state;
  const badge = section.querySelector(".state");
  text(section, ".state", view.paused ? "PAUSED" : "RUNNING");
  badge.className = "badge state " + (view.paused ? "paused" : "running");
  text(section, ".sentence", view.sentence);
  text(section, ".a", view.a_position);
  text(section, ".b", view.b_position);
  text(section, ".net", view.net_exposure);
  text(section, ".unhedged", view.unhedged + (view.legs_in_doubt ? ` (${view.legs_in_doubt} leg(s) in doubt)` : ""));
  text(section, ".counts", `${view.fills} / ${view.hedges}`);

  const inflight = section.querySelector(".inflight");
  inflight.replaceChildren();
  for (const hedge of view.inflight) {
    const li = document.createElement("li");
    li.dataset.taskId = hedge.task_id;
    li.textContent = `${hedge.task_id}: in flight for ${hedge.age}`;
    inflight.appendChild(li);
  }
  if (!view.inflight.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none";
    inflight.appendChild(li);
  }

  const keep = new Set(view.failed.map(f => f.task_id));
  for (const row of section.querySelectorAll("table.failed tbody tr[data-task-id]")) {
    if (!keep.has(row.dataset.taskId)) row.remove();
  }
  for (const failed of view.failed) {
    const row = failedRow(section, view.market, failed);
    text(row, ".fill", failed.fill_id);
    text(row, ".side", failed.side);
    text(row, ".size", failed.size);
    text(row, ".price", failed.price);
    text(row, ".reason", failed.reason);
    text(row, ".attempts", failed.attempts);
    text(row, ".failed-at", failed.failed_at);
    row.querySelector(".bps").placeholder = view.default_max_slippage_bps;
  }
  section.querySelector("table.failed").hidden = !view.failed.length;
  section.querySelector(".none-failed").hidden = !!view.failed.length;
  text(section, ".resume-why", view.resume.enabled ? "" : `(${view.resume.why})`);
  section.querySelector(".resume").title = view.resume.why;
  applyEnabled(section);
}

function render(state) {
  text(document, "#mode", state.mode);
  document.getElementById("mode").className = "badge " + (state.mode === "live" ? "paused" : "");
  text(document, "#action", state.action);
  text(document, "#queue-length", state.queue.length);
  text(document, "#consumer", state.queue.text);
  document.getElementById("consumer").className = state.queue.present ? "ok" : "error";
  text(document, "#budget", state.budget);
  text(document, "#venue", state.venue);
  text(document, "#venue-error", state.venue_error);
  for (const view of state.markets) renderMarket(view);
}

function live(message, error) {
  const node = document.getElementById("live");
  node.textContent = message;
  node.className = "live " + (error ? "error" : "ok");
}

async function refresh() {
  try {
    const response = await fetch(url("/api/state"), {headers: HEADERS, cache: "no-store", credentials: "same-origin"});
    const state = await response.json();
    if (!response.ok) throw new Error(state.message || `HTTP ${response.status}`);
    render(state);
    document.body.dataset.updated = state.generated_at;
    live(`live · updated ${state.generated_at}`, false);
  } catch (e) {
    live(`not updating: ${e.message}`, true);
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

refresh();
