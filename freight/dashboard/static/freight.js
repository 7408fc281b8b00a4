// Freight's dashboard: times in the viewer's zone, parts of pages kept current by the server's
// event streams, a deploy's page following its state and log. No libraries, nothing fetched
// from elsewhere.
"use strict";

// A session that ran out: log in again (and come back) rather than show a page that silently
// stops changing.
function loggedOut(response) {
  return response.status === 401 || (response.redirected && new URL(response.url).pathname === "/login");
}
function toLogin() {
  const here = window.location.pathname + window.location.search;
  window.location.href = here === "/" ? "/login" : `/login?next=${encodeURIComponent(here)}`;
}

// Times: written by the server in UTC; shown in the viewer's zone, UTC on hover. Ages ("5 min
// ago") stay current.
const LOCAL = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
function age(seconds) {
  const [value, unit] = seconds < 90 ? [seconds, "s"] : seconds < 5400 ? [seconds / 60, "min"]
    : seconds < 129600 ? [seconds / 3600, "h"] : [seconds / 86400, "d"];
  return `${Math.max(0, Math.round(value))} ${unit} ago`;
}
function showTimes(root) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    const when = Date.parse(element.getAttribute("datetime"));
    if (Number.isNaN(when)) continue;
    const utc = new Date(when).toISOString().slice(0, 19).replace("T", " ") + " UTC";
    element.title = element.hasAttribute("data-age") ? `${LOCAL.format(when)} (${utc})` : utc;
    element.textContent = element.hasAttribute("data-age") ? age((Date.now() - when) / 1000) : LOCAL.format(when);
  }
}
// Older parts (workers) carry data-date: the same, as ages.
function showAges(root) {
  for (const element of root.querySelectorAll("[data-date]")) {
    const when = Date.parse(element.dataset.date);
    if (Number.isNaN(when)) continue;
    element.textContent = age((Date.now() - when) / 1000);
    element.title = new Date(when).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }
}
function seconds(value) {
  if (value === null || value === undefined || value === "") return "-";
  if (Number(value) < 1) return "<1 s";
  const s = Math.round(Number(value));
  return s < 90 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}
// Running deploys: elapsed time and progress move on between updates.
function tick(root) {
  for (const element of root.querySelectorAll(".elapsed[data-started]")) {
    const started = Date.parse(element.dataset.started);
    if (Number.isNaN(started)) continue;
    const elapsed = (Date.now() - started) / 1000;
    const estimate = Number(element.dataset.estimate || 0);
    element.textContent = seconds(elapsed) + (estimate ? ` of ~${seconds(estimate)}` : "");
    const bar = element.parentElement.querySelector("progress");
    if (bar && estimate) bar.value = Math.min(99, Math.floor((100 * elapsed) / estimate));
  }
  showTimes(root);
}
function refreshShown(root) { showTimes(root); showAges(root); }
refreshShown(document);
setInterval(() => { tick(document); showAges(document); }, 1000);

// A notice that says what a form just did ("Queued …#1") belongs to that moment: a reload
// must not say it again.
const params = new URLSearchParams(window.location.search);
if (params.has("notice") || params.has("error")) {
  params.delete("notice"); params.delete("error");
  const query = params.toString();
  history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : "") + window.location.hash);
}

// Parts fed by an event stream: <div data-stream="/events" data-part="/partials/overview"
// data-version="ID">. The stream sends the part itself after each change it shows (rendered
// once on the server for every page that sees it alike), and at once if the page, made at
// change ID, missed one before its stream began.
for (const part of document.querySelectorAll("[data-stream][data-part]")) {
  const events = new EventSource(`${part.dataset.stream}?since=${encodeURIComponent(part.dataset.version || "")}`);
  events.addEventListener("part", (event) => {
    part.innerHTML = JSON.parse(event.data).html;
    refreshShown(part);
    part.dataset.updated = String(Date.now());
  });
  events.addEventListener("hello", () => { part.dataset.connected = "yes"; });
  events.onerror = async () => {
    part.dataset.connected = "no";
    // The browser reconnects by itself, except when refused: a session that ended, or a
    // proxy's error page while the API restarts (then the page starts over).
    if (events.readyState === EventSource.CLOSED) {
      const response = await fetch(part.dataset.part, { credentials: "same-origin" }).catch(() => null);
      if (response && loggedOut(response)) toLogin(); else setTimeout(() => window.location.reload(), 2000);
    }
  };
}

// ANSI colours (SGR) in log text, as HTML; everything else escaped.
const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}
function ansiToHtml(text, state) {
  let html = "";
  for (const piece of text.split(/(\x1b\[[0-9;]*m)/)) {
    const sgr = piece.match(/^\x1b\[([0-9;]*)m$/);
    if (!sgr) {
      if (!piece) continue;
      const classes = [];
      if (state.bold) classes.push("ansi-bold");
      if (state.fg) classes.push(`ansi-${state.fg}`);
      html += classes.length ? `<span class="${classes.join(" ")}">${escapeHtml(piece)}</span>` : escapeHtml(piece);
      continue;
    }
    for (const code of (sgr[1] || "0").split(";").map(Number)) {
      if (code === 0) { state.bold = false; state.fg = null; }
      else if (code === 1) state.bold = true;
      else if (code === 22) state.bold = false;
      else if (code >= 30 && code <= 37) state.fg = COLOURS[code - 30];
      else if (code >= 90 && code <= 97) state.fg = `bright-${COLOURS[code - 90]}`;
      else if (code === 39) state.fg = null;
    }
  }
  return html;
}

// The deploy page: its state and log from its event stream. The stream resumes at the log
// offset it had reached (the browser sends it back), so no line is lost or shown twice.
const deployCard = document.getElementById("deploy");
if (deployCard) {
  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const ansi = { bold: false, fg: null };
  const firstStatus = $("status").className;
  const opened = Date.now();
  const FINAL = ["finished", "failed", "cancelled"];
  // What a form said when this page opened ("Queued …", "Cancel … asked") belongs to that
  // moment: it leaves once the deploy moved on or ended, after a few seconds to be read.
  const pastNotice = () => {
    const notice = $("notice");
    if (notice) setTimeout(() => notice.remove(), Math.max(0, opened + 3000 - Date.now()));
  };
  let lineStart = true;
  const reveal = (element, shown) => { element.hidden = !shown; element.previousElementSibling.hidden = !shown; };
  const setTime = (element, iso) => {
    if (!iso) return;
    element.innerHTML = `<time datetime="${escapeHtml(iso)}"></time>`;
    showTimes(element);
  };
  const clock = (iso) => {
    const when = new Date(Date.parse(iso));
    return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour12: false });
  };
  const appendLog = (chunks) => {
    let html = "";
    for (const chunk of chunks) {
      const stamp = `<span class="ts" title="${escapeHtml(chunk.date || "")} UTC">${clock(chunk.date)} </span>`;
      const lines = chunk.text.split("\n");
      lines.forEach((line, index) => {
        const last = index === lines.length - 1;
        if (lineStart && (line || !last)) html += stamp;
        html += ansiToHtml(line, ansi);
        if (!last) { html += "\n"; lineStart = true; } else if (line) lineStart = false;
      });
    }
    if (!html) return;
    const atBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
    log.insertAdjacentHTML("beforeend", html);
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  };
  const title = document.title;
  const show = (deploy) => {
    const status = $("status");
    status.textContent = deploy.statusText;
    // The tab says how it goes, for whoever watches another tab.
    document.title = `[${deploy.statusText}] ${title}`;
    status.className = `status ${deploy.status}`;
    if (status.className !== firstStatus || FINAL.includes(deploy.status)) pastNotice();
    $("duration").textContent = seconds(deploy.duration);
    $("estimate").textContent = deploy.estimatedDuration && !deploy.dateFinished ? `usually ~${seconds(deploy.estimatedDuration)}` : "";
    setTime($("started"), deploy.dateStarted);
    setTime($("finished"), deploy.dateFinished);
    $("reason").textContent = deploy.reason || "";
    reveal($("reason"), Boolean(deploy.reason));
    $("waiting").textContent = deploy.waitingFor || "";
    reveal($("waiting"), Boolean(deploy.waitingFor));
    if (deploy.flowRunId) {
      $("prefect").querySelector("a").href = deployCard.dataset.prefect + deploy.flowRunId;
      reveal($("prefect"), true);
    }
    const running = deploy.status === "pending" || deploy.status === "in_progress";
    for (const id of ["redeploy", "rollback"]) { if ($(id)) $(id).hidden = running; }
    if ($("cancel")) $("cancel").hidden = !running;
    const steps = $("steps");
    steps.innerHTML = deploy.steps.map((step) =>
      `<li class="step ${escapeHtml(step.state)}" data-step="${escapeHtml(step.name)}"><span class="name">${escapeHtml(step.name)}</span> `
      + `<span class="state">${escapeHtml(step.state)}</span> <span class="took">${step.duration === null ? "" : seconds(step.duration)}</span></li>`).join("");
    appendLog(deploy.log.chunks);
    deployCard.dataset.offset = String(deploy.log.nextOffset);
  };
  const events = new EventSource(`${deployCard.dataset.stream}?offset=0`);
  events.addEventListener("deploy", (event) => show(JSON.parse(event.data)));
  events.addEventListener("end", () => { events.close(); deployCard.dataset.ended = "yes"; });
  events.onerror = async () => {
    // The browser reconnects by itself, except when refused: a session that ended, or a
    // proxy's error page while the API restarts (then the page starts over).
    if (events.readyState === EventSource.CLOSED && deployCard.dataset.ended !== "yes") {
      const response = await fetch(`/api/0/deploys/${deployCard.dataset.deploy}/`, { credentials: "same-origin" }).catch(() => null);
      if (response && loggedOut(response)) toLogin(); else setTimeout(() => window.location.reload(), 2000);
    }
  };
  $("log-times").addEventListener("change", (event) => log.classList.toggle("with-times", event.target.checked));
}
