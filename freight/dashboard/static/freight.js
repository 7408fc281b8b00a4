// Freight's dashboard: refresh parts of pages, and follow a deploy's log. No libraries.
"use strict";

const FINAL = ["finished", "failed", "cancelled"];

// A session that ran out: log in again rather than show a page that silently stops changing.
function loggedOut(response) {
  return response.status === 401 || (response.redirected && new URL(response.url).pathname === "/login");
}

// Dates as ages ("5 min ago"), kept current.
function showAges(root) {
  for (const element of root.querySelectorAll("[data-date]")) {
    const seconds = (Date.now() - Date.parse(element.dataset.date)) / 1000;
    if (Number.isNaN(seconds)) continue;
    const [value, unit] = seconds < 90 ? [seconds, "s"] : seconds < 5400 ? [seconds / 60, "min"]
      : seconds < 129600 ? [seconds / 3600, "h"] : [seconds / 86400, "d"];
    element.textContent = `${Math.max(0, Math.round(value))} ${unit} ago`;
    element.title = element.dataset.date;
  }
}
showAges(document);

// Parts of a page that refresh themselves: <div data-refresh="/partials/..." data-every="2000">
for (const part of document.querySelectorAll("[data-refresh]")) {
  const every = Number(part.dataset.every || 2000);
  const refresh = async () => {
    try {
      const response = await fetch(part.dataset.refresh, { credentials: "same-origin" });
      if (loggedOut(response)) { window.location.href = "/login"; return; }
      if (response.ok && !response.redirected) {
        part.innerHTML = await response.text();
        showAges(part);
      }
    } catch (error) {
      // A failed refresh keeps what is shown; the next one tries again.
    }
    setTimeout(refresh, every);
  };
  setTimeout(refresh, every);
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

// The deploy page: the log grows while the deploy runs, from the last offset read.
const deployCard = document.getElementById("deploy");
if (deployCard) {
  const id = deployCard.dataset.deploy;
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const duration = document.getElementById("duration");
  const reason = document.getElementById("reason");
  const waiting = document.getElementById("waiting");
  const prefect = document.getElementById("prefect");
  // Shown once known: a queued deploy gets its reason and its Prefect run later.
  const reveal = (element) => { element.hidden = false; element.previousElementSibling.hidden = false; };
  const ansi = { bold: false, fg: null };
  let offset = 0;
  const follow = async () => {
    let ended = false;
    try {
      const response = await fetch(`/api/0/deploys/${id}/`, { credentials: "same-origin" });
      if (loggedOut(response)) { window.location.href = "/login"; return; }
      const deploy = await response.json();
      ended = FINAL.includes(deploy.status);
      status.textContent = deploy.status;
      status.className = `status ${deploy.status}`;
      if (deploy.duration !== null) duration.textContent = `${Math.round(deploy.duration)} s`;
      if (deploy.reason) { reason.textContent = deploy.reason; reveal(reason); }
      // Why no worker starts it, while that lasts.
      waiting.textContent = deploy.waitingFor || "";
      waiting.hidden = waiting.previousElementSibling.hidden = !deploy.waitingFor;
      if (deploy.flowRunId && prefect.hidden) {
        prefect.querySelector("a").href = prefect.dataset.base + deploy.flowRunId;
        reveal(prefect);
      }
      if (ended) document.getElementById("cancel")?.remove();
      const page = await (await fetch(`/api/0/deploys/${id}/log/?offset=${offset}`, { credentials: "same-origin" })).json();
      if (page.chunks.length) {
        const atBottom = window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
        log.insertAdjacentHTML("beforeend", page.chunks.map((c) => ansiToHtml(c.text, ansi)).join(""));
        if (atBottom) window.scrollTo(0, document.body.scrollHeight);
      }
      offset = page.nextOffset;
      if (ended && !page.chunks.length) return;  // all of it is shown
    } catch (error) {
      // Offline for a moment: the next look resumes at the same offset.
    }
    setTimeout(follow, ended ? 300 : 700);
  };
  follow();
}
