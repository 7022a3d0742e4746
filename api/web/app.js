// The inuse web page: plain JavaScript, no external assets. Every element
// is built with createElement and textContent, so that names and paths
// from images can never inject markup, and the page runs under a strict
// Content-Security-Policy (no inline script or style).
"use strict";

const KEY = "inuse.admin";
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class AuthError extends Error {}

async function api(path, opts = {}) {
  const secret = sessionStorage.getItem(KEY);
  if (!secret) throw new AuthError("not logged in");
  const headers = { Authorization: "Bearer " + secret };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method: opts.method || "GET", headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (resp.status === 401) {
    sessionStorage.removeItem(KEY);
    throw new AuthError("the credential was refused");
  }
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({ error: resp.statusText }));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

// all fetches every page of a paginated list.
async function all(path) {
  const items = [];
  const sep = path.includes("?") ? "&" : "?";
  for (let offset = 0; ; ) {
    const page = await api(`${path}${sep}limit=1000&offset=${offset}`);
    items.push(...page.items);
    offset += page.items.length;
    if (page.items.length === 0 || offset >= page.total) return items;
  }
}

const SEVERITIES = ["critical", "high", "medium", "low", "negligible", "unknown"];
const sevRank = (s) => { const i = SEVERITIES.indexOf((s || "").toLowerCase()); return i < 0 ? SEVERITIES.length : i; };
const short = (d) => d.replace(/^(sha256:)([0-9a-f]{12}).*$/, "$1$2");
const date = (s) => (s ? new Date(s).toISOString().slice(0, 10) : "");
const when = (s) => (s ? new Date(s).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "never");
const pct = (x) => (Math.round(x * 10) / 10).toFixed(1) + " %";

function badge(text, cls) { return el("span", { class: "badge " + (cls || "") }, text); }
function sevBadge(s) { return badge(s || "Unknown", "sev-" + (s || "unknown").toLowerCase()); }
function verdictBadge(v) {
  if (v === "in_use") return badge("In use", "inuse");
  if (v === "not_observed") return badge("Not observed", "notobserved");
  return badge("Unknown", "unknown");
}
function stateBadge(s) { return badge(s, "state-" + s); }
// reachNote says when a verdict was found at function level: which
// vulnerable function ran, or that none did though the package runs.
function reachNote(v) {
  if (v.reachability === "function_executed" && v.functions && v.functions.length) {
    const f = v.functions[0];
    return el("div", { class: "muted mono reach", title: `first seen ${when(f.first_seen)} in ${f.binary}` }, "ran: " + f.symbol);
  }
  if (v.reachability === "function_not_observed") {
    return el("div", { class: "muted reach", title: (v.symbols || []).join(", ") }, "no vulnerable function ran");
  }
  return "";
}

function bar(share) {
  const fill = el("span");
  fill.style.width = Math.max(0, Math.min(100, share)) + "%";
  return el("span", { class: "bar" }, fill);
}

function setView(...nodes) {
  const v = $("#view");
  v.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

// ---- images ----

async function showImages() {
  setView(el("h1", {}, "Images"), el("p", { class: "muted" }, "Loading…"));
  const images = await all("/api/v1/images");
  const rows = images.map((im) => {
    const r = im.report;
    const v = r ? r.vulnerabilities : null;
    return el("tr", { class: "clickable", "data-digest": im.digest, onclick: () => { location.hash = "#/image/" + encodeURIComponent(im.digest); } },
      el("td", {}, el("div", {}, im.names.join(", ") || "(unnamed)"), el("div", { class: "mono muted" }, short(im.digest))),
      el("td", {}, stateBadge(im.learning_state)),
      el("td", {}, im.confidence),
      el("td", { class: "vulns" }, v ? String(v.total) : "–"),
      el("td", { class: "inuse-count" }, v ? String(v.in_use) : "–"),
      el("td", { class: "share" }, r ? [bar(r.in_use_percent), pct(r.in_use_percent)] : el("span", { class: "muted" }, im.report_status)),
      el("td", { class: "muted" }, when(im.last_seen)));
  });
  setView(
    el("h1", {}, "Images"),
    el("p", { class: "muted" }, `${images.length} profiled image${images.length === 1 ? "" : "s"}. The share is of vulnerabilities in a package the image actually loaded.`),
    el("table", { id: "images" },
      el("thead", {}, el("tr", {}, ["Image", "Learning", "Confidence", "Vulnerabilities", "In use", "Share in use", "Last seen"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No image profiled yet.")))));
}

// ---- one image ----

async function showImage(digest) {
  setView(el("h1", {}, "Image"), el("p", { class: "muted" }, "Loading…"));
  const im = await api("/api/v1/images/" + encodeURIComponent(digest));
  let vulns = [];
  let note = null;
  if (im.report_status === "ready") vulns = await all(`/api/v1/images/${encodeURIComponent(im.digest)}/vulnerabilities`);
  else note = el("p", { class: "card" }, `No verdicts yet: the report is ${im.report_status}${im.report_error ? " (" + im.report_error + ")" : ""}.`);

  const state = { severity: "", inUseOnly: false, verdict: "", asc: false };
  const tbody = el("tbody");
  const count = el("span", { class: "muted" });
  const sevHead = el("th", { class: "sortable", id: "sort-severity", title: "sort by severity" });
  function render() {
    let list = vulns.filter((v) =>
      (!state.severity || v.severity.toLowerCase() === state.severity) &&
      (!state.inUseOnly || v.verdict === "in_use") &&
      (!state.verdict || v.verdict === state.verdict));
    list = list.slice().sort((a, b) => (state.asc ? -1 : 1) * (sevRank(a.severity) - sevRank(b.severity)) ||
      (a.verdict === "in_use" ? -1 : 0) - (b.verdict === "in_use" ? -1 : 0) || a.id.localeCompare(b.id));
    sevHead.textContent = "Severity " + (state.asc ? "▲" : "▼");
    count.textContent = `${list.length} of ${vulns.length}`;
    tbody.replaceChildren(...list.map((v) => el("tr", { "data-vuln": v.id, "data-verdict": v.verdict },
      el("td", { class: "mono" }, v.urls && v.urls.length ? el("a", { href: v.urls[0], rel: "noreferrer noopener", target: "_blank" }, v.id) : v.id),
      el("td", {}, sevBadge(v.severity)),
      el("td", {}, v.package_name, el("div", { class: "muted mono" }, v.package_version)),
      el("td", {}, v.package_type),
      el("td", { class: "inuse-col", "data-reachability": v.reachability || "package" }, verdictBadge(v.verdict), reachNote(v)),
      el("td", { class: "muted" }, v.fixed_in && v.fixed_in.length ? v.fixed_in.join(", ") : v.fix_state || ""))));
    if (!list.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No vulnerability matches these filters.")));
  }
  sevHead.addEventListener("click", () => { state.asc = !state.asc; render(); });
  const sevSelect = el("select", { id: "filter-severity", onchange: (e) => { state.severity = e.target.value; render(); } },
    el("option", { value: "" }, "all severities"), SEVERITIES.map((s) => el("option", { value: s }, s)));
  const verdictSelect = el("select", { id: "filter-verdict", onchange: (e) => { state.verdict = e.target.value; render(); } },
    el("option", { value: "" }, "all verdicts"), el("option", { value: "in_use" }, "in use"),
    el("option", { value: "not_observed" }, "not observed"), el("option", { value: "unknown" }, "unknown"));
  const inUseBox = el("input", { type: "checkbox", id: "filter-inuse", onchange: (e) => { state.inUseOnly = e.target.checked; render(); } });
  render();

  const r = im.report;
  const summary = r ? el("div", { class: "card summary" },
    el("div", {}, el("b", {}, String(r.vulnerabilities.total)), "vulnerabilities"),
    el("div", {}, el("b", { id: "summary-inuse" }, String(r.vulnerabilities.in_use)), "in use"),
    el("div", {}, el("b", {}, pct(r.in_use_percent)), "share in use"),
    el("div", {}, el("b", {}, `${r.packages_in_use} / ${r.packages}`), "packages in use"),
    el("div", {}, el("b", {}, r.distro.id ? `${r.distro.id} ${r.distro.version}` : "–"), "distribution")) : null;

  const workloads = im.workloads.map((w) => [w.namespace, w.workload_kind, w.workload_name, w.container].filter(Boolean).join(" / "));
  setView(
    el("p", {}, el("a", { href: "#/images" }, "← Images")),
    el("h1", {}, im.names.join(", ") || short(im.digest)),
    el("div", { class: "card grid" },
      el("span", { class: "muted" }, "Digest"), el("span", { class: "mono" }, im.digest),
      el("span", { class: "muted" }, "Learning"), el("span", {}, stateBadge(im.learning_state)),
      el("span", { class: "muted" }, "Confidence"), el("span", {}, im.confidence),
      el("span", { class: "muted" }, "Observed"), el("span", {}, `${when(im.meta.first_seen)} – ${when(im.meta.last_seen)}`),
      el("span", { class: "muted" }, "Runs in"), el("span", {}, workloads.join("; ") || "–"),
      el("span", { class: "muted" }, "Nodes"), el("span", {}, im.nodes.join(", ") || "–"),
      el("span", { class: "muted" }, "Events"), el("span", {}, `${im.meta.events} (lost ${im.meta.losses})`)),
    summary, note,
    el("h2", {}, "Vulnerabilities"),
    el("div", { class: "filters" },
      el("label", {}, "Severity", sevSelect),
      el("label", {}, "Verdict", verdictSelect),
      el("label", {}, inUseBox, "In use only"), count),
    el("table", { id: "vulns" },
      el("thead", {}, el("tr", {}, el("th", {}, "Vulnerability"), sevHead, el("th", {}, "Package"), el("th", {}, "Type"), el("th", {}, "In Use"), el("th", {}, "Fix"))),
      tbody),
    el("h2", {}, "Runtime profile"),
    sectionsView(im));
}

function sectionsView(im) {
  const box = el("div", { id: "sections" });
  const list = el("div");
  const buttons = Object.entries(im.sections).map(([name, n]) => {
    const b = el("button", { "data-section": name, onclick: () => load(name, b) }, `${name} (${n})`);
    return b;
  });
  async function load(name, btn, offset = 0) {
    for (const b of buttons) b.classList.toggle("active", b === btn);
    const page = await api(`/api/v1/images/${encodeURIComponent(im.digest)}/sections/${encodeURIComponent(name)}?limit=200&offset=${offset}`);
    const rows = page.items.map((e) => el("tr", {}, el("td", { class: "mono" }, e.value), el("td", { class: "muted" }, when(e.first_seen))));
    const table = offset ? list.querySelector("tbody") : null;
    if (table) table.append(...rows);
    else list.replaceChildren(el("table", { id: "section-entries" },
      el("thead", {}, el("tr", {}, el("th", {}, name), el("th", {}, "First seen"))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 2, class: "muted" }, "Empty.")))));
    list.querySelector(".more")?.remove();
    if (page.offset + page.items.length < page.total)
      list.append(el("p", { class: "more" }, el("button", { class: "secondary", onclick: () => load(name, btn, page.offset + page.items.length) }, "More")));
  }
  box.append(el("div", { class: "sections" }, buttons), list);
  const first = buttons.find((b) => !b.textContent.endsWith("(0)"));
  if (first) first.click();
  return box;
}

// ---- tokens ----

const EXPIRIES = [["1mo", "1 month"], ["3mo", "3 months"], ["6mo", "6 months"], ["1y", "1 year"]];
const expirySelect = (id) => el("select", { id }, EXPIRIES.map(([v, t]) => el("option", { value: v, selected: v === "3mo" }, t)));

async function showTokens(created) {
  const { items, tls } = await api("/api/v1/tokens");
  const name = el("input", { type: "text", id: "token-name", placeholder: "what it is for, e.g. sysdig scraper", maxlength: 100, required: true });
  const exp = expirySelect("token-expires");
  const error = el("p", { class: "error", hidden: true });
  const form = el("form", { class: "inline", id: "token-form" }, name, exp, el("button", { type: "submit" }, "Create token"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const tok = await api("/api/v1/tokens", { method: "POST", body: { name: name.value, expires: exp.value } });
      await showTokens(tok);
    } catch (err) { if (err instanceof AuthError) return route(); error.textContent = err.message; error.hidden = false; }
  });
  let secretBox = null;
  if (created) {
    const code = el("code", { id: "token-secret" }, created.secret);
    const copy = el("button", { id: "copy-secret", class: "secondary" }, "Copy");
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(created.secret); }
      catch { const r = document.createRange(); r.selectNodeContents(code); getSelection().removeAllRanges(); getSelection().addRange(r); document.execCommand("copy"); }
      copy.textContent = "Copied";
    });
    secretBox = el("div", { class: "secret", id: "secret-box" },
      el("div", {}, el("b", {}, `Secret of “${created.name}”`), el("div", { class: "muted" }, "Copy it now: it is shown only this once.")), code, copy);
  }
  const now = Date.now();
  const rows = items.map((t) => {
    const actions = el("td", { class: "actions" });
    const renewSel = expirySelect("renew-" + t.id);
    const renew = el("button", { class: "secondary", "data-renew": t.id }, "Renew");
    renew.addEventListener("click", async () => { await api(`/api/v1/tokens/${t.id}/renew`, { method: "POST", body: { expires: renewSel.value } }); showTokens(); });
    const del = el("button", { class: "danger", "data-delete": t.id }, "Delete");
    del.addEventListener("click", () => {
      actions.replaceChildren(el("span", {}, `Delete “${t.name}”? Tools using it lose access at once.`),
        el("button", { class: "danger", "data-confirm-delete": t.id, onclick: async () => { await api(`/api/v1/tokens/${t.id}`, { method: "DELETE" }); showTokens(); } }, "Yes, delete"),
        el("button", { class: "secondary", onclick: () => showTokens() }, "Cancel"));
    });
    actions.append(renewSel, renew, del);
    const expired = new Date(t.expires).getTime() <= now;
    return el("tr", { "data-token": t.id },
      el("td", {}, t.name), el("td", { class: "mono muted" }, t.id), el("td", {}, date(t.created)),
      el("td", { class: "expires" }, date(t.expires), expired ? [" ", badge("expired", "inuse")] : null),
      el("td", { class: "muted" }, when(t.last_used)), actions);
  });
  setView(
    el("h1", {}, "Integration tokens"),
    el("p", { class: "muted" }, "Read-only tokens for vulnerability tools, e.g. a scraper of /api/scanning/eveintegration/v2/runtimeimages. Only a hash of each secret is stored."),
    el("p", { id: "endpoint" }, "Endpoint for Snyk or Docker Scout (host:port, no scheme): ", el("code", {}, location.host),
      tls ? [el("br"), "Certificate SHA-256 fingerprint (pin or compare it if the certificate is self-signed): ", el("code", { id: "tls-fingerprint" }, tls.sha256)]
        : [el("br"), el("span", { class: "muted" }, "Served over plain HTTP: integrations that call https:// need serve --tls self-signed or --tls-cert.")]),
    el("div", { class: "card" }, form, error, secretBox),
    el("table", { id: "tokens" },
      el("thead", {}, el("tr", {}, ["Name", "ID", "Created", "Expires", "Last used", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No token yet.")))));
}

// ---- routing and login ----

function showLogin(message) {
  $("#login").hidden = false;
  $("#view").replaceChildren();
  $("#logout").hidden = true;
  const e = $("#login-error");
  e.hidden = !message;
  e.textContent = message || "";
  $("#login-secret").focus();
}

async function route() {
  const hash = location.hash || "#/images";
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", hash.startsWith(a.getAttribute("href")) || (a.id === "nav-images" && hash.startsWith("#/image/")));
  if (!sessionStorage.getItem(KEY)) return showLogin();
  $("#login").hidden = true;
  $("#logout").hidden = false;
  try {
    if (hash.startsWith("#/image/")) await showImage(decodeURIComponent(hash.slice("#/image/".length)));
    else if (hash.startsWith("#/tokens")) await showTokens();
    else await showImages();
  } catch (err) {
    if (err instanceof AuthError) return showLogin(err.message);
    setView(el("p", { class: "error", id: "view-error" }, err.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("#login-secret").value.trim());
    $("#login-secret").value = "";
    route();
  });
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); route(); });
  window.addEventListener("hashchange", route);
  route();
});
