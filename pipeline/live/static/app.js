// callpulse supervisor dashboard: plain JS, no external code. Loads the state from the API, then follows
// the live feed (Server-Sent Events). Alerts arrive first on the feed; on reconnect, missed alerts are
// fetched with /api/alerts?since=<last seq>, so a dropped connection never hides an alert.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || sessionStorage.getItem("callpulse-token") || "";
if (token) sessionStorage.setItem("callpulse-token", token);
const headers = token ? { Authorization: "Bearer " + token } : {};

const state = { alerts: new Map(), lastSeq: 0, calls: new Map(), agents: [] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { ...headers, "Content-Type": "application/json" } });
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

function levelClass(v) { return v >= 0.55 ? "high" : v >= 0.35 ? "mid" : "low"; }
function bar(v) {
  const pct = Math.round(Math.max(0, Math.min(1, v || 0)) * 100);
  return el("div", { class: "bar " + levelClass(v || 0), role: "meter", "aria-valuenow": pct, "aria-valuemin": 0,
                     "aria-valuemax": 100 }, el("span", { style: "width:" + pct + "%" }));
}
function fmtTime(iso) { try { return new Date(iso).toLocaleTimeString(); } catch (e) { return iso || ""; } }

// --- alerts ------------------------------------------------------------------------------------
function addAlert(a) {
  if (a.seq && a.seq > state.lastSeq) state.lastSeq = a.seq;
  const prev = state.alerts.get(a.id);
  // One card per alert id: a "cleared" event updates the card of its "raised" event.
  const merged = prev ? { ...prev, ...a, state: a.state === "cleared" ? "cleared" : prev.state,
                          acked_at: a.acked_at || prev.acked_at, acked_by: a.acked_by || prev.acked_by } : a;
  state.alerts.set(a.id, merged);
}

async function ack(id, action, button) {
  button.disabled = true;
  try {
    const res = await api("/api/alerts/" + encodeURIComponent(id) + "/ack",
                          { method: "POST", body: JSON.stringify({ by: "dashboard", action }) });
    onAck(res);
  } catch (e) { button.disabled = false; console.error(e); }
}
function onAck(res) {
  const a = state.alerts.get(res.id);
  if (a) { a.acked_at = res.acked_at; a.acked_by = res.acked_by; renderAlerts(); }
}

function renderAlerts() {
  const list = document.getElementById("alerts");
  const items = [...state.alerts.values()].sort((x, y) => (y.seq || 0) - (x.seq || 0)).slice(0, 100);
  list.replaceChildren(...items.map((a) => {
    const takeover = a.action === "supervisor_takeover";
    const what = takeover ? "Take over: caller agitated" : "Recovery break recommended";
    const acked = !!a.acked_at;
    const controls = acked ? el("div", { class: "meta" }, "acknowledged " + fmtTime(a.acked_at) + " by " + a.acked_by)
      : el("div", {},
          takeover ? el("button", { class: "primary", "data-action": "takeover",
                                    onclick: (e) => ack(a.id, "takeover", e.target) }, "Take over") : null,
          el("button", { "data-action": "ack", onclick: (e) => ack(a.id, "ack", e.target) }, "Acknowledge"));
    return el("li", { class: "alert" + (takeover ? "" : " strain") + (acked ? " acked" : "") +
                             (a.state === "cleared" ? " cleared" : ""), "data-alert-id": a.id },
      el("div", { class: "what" }, what, a.state === "cleared" ? " (cleared)" : ""),
      el("div", { class: "meta" }, "call " + a.call_id + (a.agent_id ? " · agent " + a.agent_id : "") +
         " · level " + (a.level ?? 0).toFixed(2) + " · at " + (a.raised_at_s ?? 0).toFixed(0) + " s · " + fmtTime(a.created_at)),
      el("div", { class: "reasons" }, (a.reasons || []).join(" · ") || "—"),
      controls);
  }));
  document.getElementById("no-alerts").hidden = items.length > 0;
  renderCounts();
}

// --- calls -------------------------------------------------------------------------------------
function upsertCall(summary) {
  if (summary.state === "ended") state.calls.delete(summary.call_id);
  else state.calls.set(summary.call_id, { ...(state.calls.get(summary.call_id) || {}), ...summary });
}
function renderCalls() {
  const box = document.getElementById("calls");
  const calls = [...state.calls.values()].sort((a, b) =>
    ((b.level || {}).caller_agitation || 0) - ((a.level || {}).caller_agitation || 0));
  box.replaceChildren(...calls.map((c) => {
    const level = c.level || { caller_agitation: 0, agent_strain: 0, reasons: [] };
    const hot = (c.alerts || []).length > 0 || level.caller_agitation >= 0.55;
    return el("article", { class: "call" + (hot ? " hot" : ""), "data-call-id": c.call_id },
      el("div", { class: "head" }, el("span", { class: "id" }, c.call_id),
         el("span", { class: "agent" }, c.agent_id ? "agent " + c.agent_id : (c.source || ""))),
      el("div", { class: "label" }, el("span", {}, "caller agitation"),
         el("span", {}, level.caller_agitation.toFixed(2))),
      bar(level.caller_agitation),
      el("div", { class: "label" }, el("span", {}, "agent strain"), el("span", {}, level.agent_strain.toFixed(2))),
      bar(level.agent_strain),
      el("div", { class: "label" }, el("span", {}, (level.reasons || []).join(" · ")),
         el("span", { class: "age" }, Math.round(level.t_s || c.audio_s || 0) + " s")),
      el("ul", { class: "transcript" }, ...(c.transcript_tail || []).slice(-4).map((t) =>
        el("li", { class: t.speaker }, el("span", { class: "spk" }, t.speaker + ":"), t.text,
          t.emotion ? el("span", { class: "emo emo-" + t.emotion, title: "voice, this turn" }, t.emotion) : null))));
  }));
  document.getElementById("no-calls").hidden = calls.length > 0;
  renderCounts();
}

// --- agents ------------------------------------------------------------------------------------
async function setBreak(agentId, action, button) {
  button.disabled = true;
  try {
    await api("/api/agents/" + encodeURIComponent(agentId) + "/break", { method: "POST", body: JSON.stringify({ action }) });
    state.agents = await api("/api/agents");
    renderAgents();
  } catch (e) { button.disabled = false; console.error(e); }
}
function renderAgents() {
  const body = document.getElementById("agents");
  body.replaceChildren(...state.agents.map((a) => el("tr", { "data-agent-id": a.agent_id },
    el("td", {}, a.agent_id),
    el("td", {}, bar(a.strain), a.strain.toFixed(2)),
    el("td", {}, String(a.calls_since_break)),
    el("td", {}, String(a.talk_min)),
    el("td", {}, a.on_break ? el("span", { class: "tag brk" }, "on break")
               : a.break_recommended ? el("span", { class: "tag rec" }, "break recommended") : el("span", { class: "tag" }, "working")),
    el("td", {}, el("button", { onclick: (e) => setBreak(a.agent_id, a.on_break ? "end" : "start", e.target) },
                     a.on_break ? "End break" : "Start break")))));
  document.getElementById("no-agents").hidden = state.agents.length > 0;
}

function renderCounts() {
  const open = [...state.alerts.values()].filter((a) => !a.acked_at && a.state === "raised").length;
  document.getElementById("counts").textContent = state.calls.size + " live call(s) · " + open + " open alert(s)";
}

// --- the feed ----------------------------------------------------------------------------------
async function catchUp() {
  const alerts = await api("/api/alerts?since=" + state.lastSeq);
  alerts.forEach(addAlert);
  renderAlerts();
}

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/api/feed" + (token ? "?token=" + encodeURIComponent(token) : ""));
  source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn up"; catchUp().catch(console.error); });
  source.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn down"; });
  source.addEventListener("hello", (e) => {
    const d = JSON.parse(e.data);
    state.calls.clear();
    d.live.forEach(upsertCall);
    state.agents = d.agents;
    renderCalls(); renderAgents();
  });
  source.addEventListener("alert", (e) => { addAlert(JSON.parse(e.data)); renderAlerts(); renderCalls(); });
  source.addEventListener("ack", (e) => onAck(JSON.parse(e.data)));
  source.addEventListener("call", (e) => { upsertCall(JSON.parse(e.data)); renderCalls(); });
  source.addEventListener("level", (e) => {
    const d = JSON.parse(e.data);
    const c = state.calls.get(d.call_id);
    if (c) { c.level = d; renderCalls(); }
  });
  source.addEventListener("transcript", (e) => {
    const d = JSON.parse(e.data);
    const c = state.calls.get(d.call_id);
    if (c) { c.transcript_tail = d.tail; renderCalls(); }
  });
  source.addEventListener("agents", (e) => { state.agents = JSON.parse(e.data).agents; renderAgents(); });
}

async function start() {
  try {
    const [alerts, calls, agents] = await Promise.all([api("/api/alerts"), api("/api/calls"), api("/api/agents")]);
    alerts.forEach(addAlert);
    calls.live.forEach(upsertCall);
    state.agents = agents;
  } catch (e) {
    document.getElementById("conn").textContent = "not authorised: open this page with ?token=<token>";
    console.error(e);
  }
  renderAlerts(); renderCalls(); renderAgents();
  connect();
}
start();
