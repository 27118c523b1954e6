// Weir's console: one page, routed by the URL's hash, that does everything through /api/v1.
// Text from the broker (topic names, keys, values, headers, errors) is only ever set with
// textContent or as attribute values, never parsed as HTML.
"use strict";

const main = document.getElementById("main");
let cleanup = [];

// ---- helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code;
    this.field = e.field;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { "x-weir-console": "1" } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch("/api/v1" + path, opts);
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function errorBox(err) {
  const field = err.field ? ` (${err.field})` : "";
  return h("div", { class: "error", role: "alert" }, `${err.message}${field}`);
}

// Shows an error next to what caused it: replaces the contents of `slot`.
function show(slot, node) {
  slot.replaceChildren(...(node ? [node] : []));
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtNum(n) {
  return typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 1 }) : "";
}

function fmtTime(ms) {
  return ms >= 0 ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";
}

function page(title, ...children) {
  main.replaceChildren(h("h1", {}, title), ...children);
}

function emptyState(text) {
  return h("div", { class: "empty" }, text);
}

// A table with sortable columns. cols: [{ label, key, num, render }]
function table(cols, rows, opts = {}) {
  let sortKey = opts.sortKey || null;
  let desc = false;
  const wrap = h("div", { class: "table-wrap" });
  const draw = () => {
    const sorted = [...rows];
    if (sortKey) {
      const col = cols.find((c) => c.key === sortKey);
      const val = col.sortValue || ((r) => r[sortKey]);
      sorted.sort((a, b) => {
        const x = val(a), y = val(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (desc ? -1 : 1);
      });
    }
    const head = h("tr", {}, cols.map((c) => h("th", {
      class: [c.num ? "num" : "", c.key ? "sortable" : ""].join(" ").trim(),
      onclick: c.key ? () => { desc = sortKey === c.key ? !desc : false; sortKey = c.key; draw(); } : null,
    }, c.label, sortKey === c.key ? (desc ? " ▼" : " ▲") : "")));
    const body = sorted.map((r) => h("tr", {}, cols.map((c) => h("td", { class: c.num ? "num" : "" },
      c.render ? c.render(r) : String(r[c.key] ?? "")))));
    wrap.replaceChildren(h("table", opts.id ? { id: opts.id } : {}, h("thead", {}, head), h("tbody", {}, body)));
  };
  draw();
  return wrap;
}

// ---- pages -----------------------------------------------------------------------------

async function overviewPage() {
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const brokers = h("div");
  const slot = h("div");
  page("Overview", slot, cards, h("h2", {}, "Brokers"), brokers);
  const card = (label, value, id) => h("div", { class: "card" }, h("div", { class: "label" }, label),
    h("div", { class: "value", id }, value));
  const render = (o) => {
    const c = o.cluster;
    cards.replaceChildren(
      card("Topics", fmtNum(o.topics), "ov-topics"),
      card("Partitions", fmtNum(o.partitions), "ov-partitions"),
      card("Under-replicated", fmtNum(c.under_replicated_partitions || 0), "ov-under"),
      card("Offline", fmtNum(c.offline_partitions || 0), "ov-offline"),
      card("Produce", `${fmtBytes(o.rate.bytes_per_sec)}/s`, "ov-produce"),
      card("Produce records", `${fmtNum(o.rate.records_per_sec)}/s`, "ov-produce-records"),
      card("Consume", `${fmtBytes(o.rate.fetch_bytes_per_sec)}/s`, "ov-consume"),
      card("Log on disk", fmtBytes(o.log_bytes), "ov-disk"),
      card("Controller leader", c.controller_leader ?? "none", "ov-controller"),
    );
    const list = c.brokers && c.brokers.length ? c.brokers
      : [{ node_id: o.node_id, fenced: false, quic_addr: "", kafka_addr: "", epoch: 0 }];
    brokers.replaceChildren(table([
      { label: "Node", key: "node_id", num: true },
      { label: "State", render: (b) => (b.fenced ? "fenced" : "live") },
      { label: "Native (QUIC)", key: "quic_addr" },
      { label: "Kafka", key: "kafka_addr" },
      { label: "Controller", render: (b) => (b.node_id === c.controller_leader ? "leader" : (c.voters || []).some((v) => v.node_id === b.node_id) ? "voter" : "") },
    ], list));
  };
  try { render(await api("GET", "/overview")); } catch (e) { show(slot, errorBox(e)); }
  const events = new EventSource("/api/v1/events");
  events.addEventListener("overview", (ev) => { try { render(JSON.parse(ev.data)); } catch (_) { /* a torn event */ } });
  cleanup.push(() => events.close());
}

async function topicsPage(params) {
  const slot = h("div");
  const list = h("div", { id: "topics-list" });
  const search = h("input", { type: "search", placeholder: "Search topics", id: "topic-search", value: params.get("search") || "" });
  const createSlot = h("div");
  const name = h("input", { name: "name", id: "new-topic-name", required: true, placeholder: "orders" });
  const partitions = h("input", { name: "partitions", id: "new-topic-partitions", type: "number", min: 1, value: 1 });
  const configs = h("textarea", { name: "configs", id: "new-topic-configs", placeholder: "retention.ms=604800000\nmax.message.bytes=1048576" });
  const create = h("form", { class: "inline", id: "create-topic", onsubmit: async (ev) => {
    ev.preventDefault();
    const cfg = {};
    for (const line of configs.value.split("\n")) {
      const t = line.trim();
      if (!t) continue;
      const i = t.indexOf("=");
      if (i < 0) { show(createSlot, errorBox({ message: `config line "${t}" is not name=value`, field: "configs" })); return; }
      cfg[t.slice(0, i).trim()] = t.slice(i + 1).trim();
    }
    try {
      await api("POST", "/topics", { name: name.value, partitions: Number(partitions.value), configs: cfg });
      show(createSlot, h("div", { class: "ok" }, `Created topic ${name.value}`));
      name.value = "";
      load();
    } catch (e) { show(createSlot, errorBox(e)); }
  } }, h("label", {}, "Name", name), h("label", {}, "Partitions", partitions),
  h("label", { class: "grow" }, "Configs (name=value per line)", configs), h("button", { type: "submit" }, "Create topic"));
  let offset = 0;
  const pageSize = 50;
  const load = async () => {
    try {
      const q = new URLSearchParams({ search: search.value, offset, limit: pageSize });
      const res = await api("GET", `/topics?${q}`);
      show(slot, null);
      if (!res.total) { list.replaceChildren(emptyState(search.value ? "No topic matches." : "No topics yet: create one above.")); return; }
      list.replaceChildren(table([
        { label: "Name", key: "name", render: (t) => h("a", { href: `#/topics/${encodeURIComponent(t.name)}` }, t.name) },
        { label: "Partitions", key: "partitions", num: true },
        { label: "Replication", key: "replication_factor", num: true },
        { label: "Records", key: "records", num: true, render: (t) => fmtNum(t.records) },
        { label: "Size", key: "size_bytes", num: true, render: (t) => fmtBytes(t.size_bytes) },
        { label: "Produce/s", key: "produce_bytes_per_sec", num: true, render: (t) => `${fmtBytes(t.produce_bytes_per_sec)}/s` },
      ], res.topics, { sortKey: "name", id: "topics-table" }),
      h("div", { class: "pager" },
        h("button", { class: "secondary", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - pageSize); load(); } }, "Previous"),
        `${offset + 1}–${Math.min(offset + pageSize, res.total)} of ${res.total}`,
        h("button", { class: "secondary", disabled: offset + pageSize >= res.total, onclick: () => { offset += pageSize; load(); } }, "Next")));
    } catch (e) { show(slot, errorBox(e)); }
  };
  search.addEventListener("input", () => { offset = 0; load(); });
  page("Topics", h("h2", {}, "Create a topic"), create, createSlot, h("div", { class: "toolbar" }, search), slot, list);
  await load();
}

function payloadView(p, mode) {
  if (!p) return h("span", { class: "pill" }, "null");
  if (mode === "hex") {
    const bytes = atob(p.base64);
    let out = "";
    for (let i = 0; i < bytes.length; i++) out += bytes.charCodeAt(i).toString(16).padStart(2, "0") + (i % 16 === 15 ? "\n" : " ");
    return h("pre", {}, out.trim());
  }
  if (mode === "schema" && p.decoded !== null && p.decoded !== undefined) {
    return h("div", {}, h("span", { class: "pill" }, `schema ${p.schema_id}`), h("pre", {}, JSON.stringify(p.decoded, null, 2)));
  }
  if (mode !== "text" && p.decoded !== null && p.decoded !== undefined) {
    return h("div", {}, h("span", { class: "pill" }, `schema ${p.schema_id}`), h("pre", {}, JSON.stringify(p.decoded, null, 2)));
  }
  if (p.text === null || p.text === undefined) {
    return h("div", {}, h("span", { class: "pill" }, "binary"), h("pre", {}, p.base64));
  }
  if (mode !== "text") {
    try { return h("pre", {}, JSON.stringify(JSON.parse(p.text), null, 2)); } catch (_) { /* not JSON */ }
  }
  return h("pre", {}, p.text + (p.truncated ? " …" : ""));
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function messagesTab(topic, detail) {
  const wrap = h("div", { id: "messages" });
  const partition = h("select", { id: "browse-partition" }, h("option", { value: "" }, "All partitions"),
    detail.partitions.map((p) => h("option", { value: p.partition }, `Partition ${p.partition}`)));
  const start = h("select", { id: "browse-start" }, ["oldest", "newest", "offset", "timestamp"].map((s) => h("option", { value: s }, s)));
  const at = h("input", { id: "browse-at", placeholder: "offset or time (ms / ISO)", size: 18 });
  const limit = h("input", { id: "browse-limit", type: "number", min: 1, max: 500, value: 50, size: 5 });
  const key = h("input", { id: "filter-key", placeholder: "key contains" });
  const value = h("input", { id: "filter-value", placeholder: "value contains" });
  const header = h("input", { id: "filter-header", placeholder: "header contains" });
  const module = h("input", { id: "browse-module", placeholder: "consume-time module" });
  const mode = h("select", { id: "browse-format" }, ["auto", "text", "json", "hex", "schema"].map((s) => h("option", { value: s }, s)));
  const status = h("div", { id: "browse-status", class: "pager" });
  const slot = h("div");
  const results = h("div", { id: "browse-results" });
  let shown = [];
  const render = () => {
    if (!shown.length) { results.replaceChildren(emptyState("No records match.")); return; }
    results.replaceChildren(table([
      { label: "Partition", key: "partition", num: true },
      { label: "Offset", key: "offset", num: true },
      { label: "Timestamp", key: "timestamp", render: (r) => fmtTime(r.timestamp) },
      { label: "Key", render: (r) => payloadView(r.key, mode.value) },
      { label: "Value", render: (r) => h("div", { class: "record-value" }, payloadView(r.value, mode.value)) },
      { label: "Headers", render: (r) => h("div", {}, r.headers.map((x) => h("div", { class: "mono" }, `${x.key}: ${x.value ? (x.value.text ?? x.value.base64) : "null"}`))) },
      { label: "", render: (r) => h("button", { class: "secondary", onclick: () => republish(r) }, "Republish") },
    ], shown, { id: "records-table" }));
  };
  mode.addEventListener("change", render);
  const browse = async () => {
    const q = new URLSearchParams({ start: start.value, limit: limit.value });
    if (partition.value !== "") q.set("partition", partition.value);
    if (start.value === "offset") q.set("offset", at.value);
    if (start.value === "timestamp") q.set("timestamp", /^\d+$/.test(at.value) ? at.value : String(Date.parse(at.value)));
    for (const [k, el] of [["key", key], ["value", value], ["header", header], ["module", module]]) if (el.value) q.set(k, el.value);
    try {
      const res = await api("GET", `/topics/${encodeURIComponent(topic)}/messages?${q}`);
      show(slot, null);
      shown = res.records;
      status.replaceChildren(`${shown.length} shown, ${fmtNum(res.scanned_records)} read (${fmtBytes(res.scanned_bytes)}), stopped at: ${res.stopped}`);
      render();
    } catch (e) { show(slot, errorBox(e)); }
  };
  const republish = async (r) => {
    const to = prompt("Republish to which topic?", topic);
    if (!to) return;
    try {
      const out = await api("POST", `/topics/${encodeURIComponent(to)}/messages`, {
        encoding: "base64", key: r.key ? r.key.base64 : null, value: r.value ? r.value.base64 : null,
        headers: r.headers.map((x) => ({ key: x.key, value: x.value ? x.value.base64 : null })),
      });
      show(slot, h("div", { class: "ok" }, `Republished to ${to} partition ${out.partition} offset ${out.offset}`));
    } catch (e) { show(slot, errorBox(e)); }
  };
  const exportAs = (kind) => {
    if (kind === "json") { download(`${topic}.json`, "application/json", JSON.stringify(shown, null, 2)); return; }
    const cell = (s) => `"${String(s ?? "").replaceAll('"', '""')}"`;
    const lines = ["partition,offset,timestamp,key,value"].concat(shown.map((r) => [r.partition, r.offset, r.timestamp,
      cell(r.key && (r.key.text ?? r.key.base64)), cell(r.value && (r.value.text ?? r.value.base64))].join(",")));
    download(`${topic}.csv`, "text/csv", lines.join("\n"));
  };
  // Produce
  const pSlot = h("div", { id: "produce-status" });
  const pPartition = h("input", { id: "produce-partition", type: "number", min: 0, placeholder: "any", size: 5 });
  const pKey = h("input", { id: "produce-key", placeholder: "key" });
  const pValue = h("textarea", { id: "produce-value", placeholder: "value" });
  const pHeaders = h("input", { id: "produce-headers", placeholder: "name=value, name=value" });
  const produce = h("form", { class: "inline", id: "produce-form", onsubmit: async (ev) => {
    ev.preventDefault();
    const headers = pHeaders.value.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
      const i = s.indexOf("=");
      return i < 0 ? { key: s, value: null } : { key: s.slice(0, i), value: s.slice(i + 1) };
    });
    try {
      const out = await api("POST", `/topics/${encodeURIComponent(topic)}/messages`, {
        partition: pPartition.value === "" ? null : Number(pPartition.value),
        key: pKey.value === "" ? null : pKey.value, value: pValue.value, headers,
      });
      show(pSlot, h("div", { class: "ok" }, `Produced to partition ${out.partition} at offset ${out.offset}`));
    } catch (e) { show(pSlot, errorBox(e)); }
  } }, h("label", {}, "Partition", pPartition), h("label", {}, "Key", pKey), h("label", {}, "Headers", pHeaders),
  h("label", { class: "grow" }, "Value", pValue), h("button", { type: "submit" }, "Produce"));
  const file = h("input", { type: "file", id: "produce-file", accept: ".txt,.json,.ndjson,.jsonl" });
  const fromFile = h("button", { class: "secondary", onclick: async () => {
    const f = file.files[0];
    if (!f) { show(pSlot, errorBox({ message: "choose a file first", field: "file" })); return; }
    const lines = (await f.text()).split("\n").filter((l) => l.length);
    let n = 0;
    try {
      for (const line of lines) {
        await api("POST", `/topics/${encodeURIComponent(topic)}/messages`, { value: line });
        n++;
      }
      show(pSlot, h("div", { class: "ok" }, `Produced ${n} records from ${f.name}`));
    } catch (e) { show(pSlot, h("div", {}, `${n} records produced before: `, errorBox(e))); }
  } }, "Produce each line");
  wrap.append(
    h("div", { class: "toolbar" }, h("label", {}, "Partition", partition), h("label", {}, "Start", start), h("label", {}, "At", at),
      h("label", {}, "Records", limit), h("label", {}, "Key", key), h("label", {}, "Value", value), h("label", {}, "Header", header),
      h("label", {}, "Module", module), h("label", {}, "Show as", mode),
      h("button", { id: "browse-button", onclick: browse }, "Browse"),
      h("button", { class: "secondary", onclick: () => exportAs("json") }, "Export JSON"),
      h("button", { class: "secondary", onclick: () => exportAs("csv") }, "Export CSV")),
    slot, status, results,
    h("h2", {}, "Produce a record"), produce, h("div", { class: "toolbar" }, h("label", {}, "One record per line of a file", file), fromFile), pSlot);
  browse();
  return wrap;
}

async function topicPage(name) {
  let detail;
  try { detail = await api("GET", `/topics/${encodeURIComponent(name)}`); } catch (e) { page(name, errorBox(e)); return; }
  const body = h("div");
  const tabs = h("div", { class: "tabs" });
  const tab = (label, build) => h("button", { "data-tab": label, onclick: (ev) => {
    for (const b of tabs.children) b.classList.toggle("active", b === ev.currentTarget);
    body.replaceChildren(build());
  } }, label);
  const partitionsTab = () => table([
    { label: "Partition", key: "partition", num: true },
    { label: "Leader", key: "leader", num: true },
    { label: "Replicas", render: (p) => p.replicas.join(", ") },
    { label: "ISR", render: (p) => p.isr.join(", ") },
    { label: "Log start", key: "log_start_offset", num: true },
    { label: "High watermark", key: "high_watermark", num: true },
    { label: "Size", key: "size_bytes", num: true, render: (p) => fmtBytes(p.size_bytes) },
  ], detail.partitions, { id: "partitions-table" });
  const configsTab = () => {
    const slot = h("div");
    const inputs = {};
    const rows = detail.configs.map((c) => {
      inputs[c.name] = h("input", { value: c.value, "data-config": c.name });
      return c;
    });
    const save = h("button", { onclick: async () => {
      const set = {};
      for (const c of detail.configs) if (inputs[c.name].value !== c.value) set[c.name] = inputs[c.name].value;
      try {
        detail = await api("PATCH", `/topics/${encodeURIComponent(name)}/configs`, { set });
        show(slot, h("div", { class: "ok" }, "Saved"));
      } catch (e) { show(slot, errorBox(e)); }
    } }, "Save configs");
    return h("div", {}, table([
      { label: "Config", key: "name" },
      { label: "Value", render: (c) => inputs[c.name] },
      { label: "", render: (c) => (c.is_default ? "default" : "set") },
    ], rows), h("div", { class: "toolbar" }, save), slot);
  };
  const dangerTab = () => {
    const slot = h("div");
    const confirm = h("input", { id: "delete-confirm", placeholder: `type ${name} to confirm` });
    const purgePartition = h("input", { type: "number", min: 0, value: 0, size: 5 });
    const purgeOffset = h("input", { type: "number", value: -1, size: 10 });
    return h("div", {},
      h("h2", {}, "Purge records"),
      h("div", { class: "toolbar" }, h("label", {}, "Partition", purgePartition), h("label", {}, "Before offset (-1: all)", purgeOffset),
        h("button", { class: "danger", onclick: async () => {
          try {
            const out = await api("POST", `/topics/${encodeURIComponent(name)}/purge`, { partition: Number(purgePartition.value), offset: Number(purgeOffset.value) });
            show(slot, h("div", { class: "ok" }, `Partition ${out.partition} now starts at ${out.log_start_offset}`));
          } catch (e) { show(slot, errorBox(e)); }
        } }, "Purge")),
      h("h2", {}, "Delete the topic"),
      h("div", { class: "toolbar" }, confirm, h("button", { class: "danger", id: "delete-topic", onclick: async () => {
        try {
          await api("DELETE", `/topics/${encodeURIComponent(name)}?confirm=${encodeURIComponent(confirm.value)}`);
          location.hash = "#/topics";
        } catch (e) { show(slot, errorBox(e)); }
      } }, "Delete")), slot);
  };
  tabs.append(tab("Messages", () => messagesTab(name, detail)), tab("Partitions", partitionsTab), tab("Configs", configsTab), tab("Delete", dangerTab));
  page(`Topic ${name}`, tabs, body);
  tabs.firstChild.click();
}

async function groupsPage() {
  const slot = h("div");
  page("Consumer groups", slot);
  try {
    const groups = await api("GET", "/groups");
    if (!groups.length) { slot.replaceChildren(emptyState("No consumer groups yet.")); return; }
    slot.replaceChildren(table([
      { label: "Group", key: "group_id", render: (g) => h("a", { href: `#/groups/${encodeURIComponent(g.group_id)}` }, g.group_id) },
      { label: "State", key: "state" },
      { label: "Members", key: "members", num: true },
      { label: "Lag", key: "total_lag", num: true, render: (g) => fmtNum(g.total_lag) },
    ], groups, { sortKey: "group_id", id: "groups-table" }));
  } catch (e) { show(slot, errorBox(e)); }
}

async function groupPage(id) {
  const slot = h("div");
  const figures = h("div", { id: "group-figures" });
  const actions = h("div");
  page(`Group ${id}`, slot, figures, actions);
  let topics = [];
  // The figures refresh every 2 s while the page is shown; the forms below stay as typed.
  const load = async () => {
    let g;
    try { g = await api("GET", `/groups/${encodeURIComponent(id)}`); } catch (e) { show(slot, errorBox(e)); return null; }
    show(slot, null);
    topics = [...new Set(g.offsets.map((o) => o.topic))];
    figures.replaceChildren(
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "label" }, "State"), h("div", { class: "value", id: "group-state" }, g.state)),
        h("div", { class: "card" }, h("div", { class: "label" }, "Members"), h("div", { class: "value", id: "group-members" }, g.members.length)),
        h("div", { class: "card" }, h("div", { class: "label" }, "Total lag"), h("div", { class: "value", id: "group-lag" }, fmtNum(g.total_lag))),
        h("div", { class: "card" }, h("div", { class: "label" }, "Protocol"), h("div", { class: "value" }, g.protocol || "—"))),
      h("h2", {}, "Members"),
      g.members.length ? table([
        { label: "Member", key: "member_id" }, { label: "Client", key: "client_id" }, { label: "Host", key: "client_host" },
        { label: "Assignment", render: (m) => m.assignment.map((a) => `${a.topic}:${a.partition}`).join(", ") },
      ], g.members) : emptyState("No members: the group is empty."),
      h("h2", {}, "Offsets and lag"),
      g.offsets.length ? table([
        { label: "Topic", key: "topic" }, { label: "Partition", key: "partition", num: true },
        { label: "Committed", key: "committed", num: true }, { label: "High watermark", key: "high_watermark", num: true },
        { label: "Lag", key: "lag", num: true },
      ], g.offsets, { id: "offsets-table" }) : emptyState("No committed offsets."));
    return g;
  };
  const g = await load();
  const timer = setInterval(load, 2000);
  cleanup.push(() => clearInterval(timer));
  const resetSlot = h("div", { id: "reset-status" });
  const topic = h("input", { id: "reset-topic", value: topics[0] || "", placeholder: "topic" });
  const to = h("select", { id: "reset-to" }, ["earliest", "latest", "timestamp", "offset"].map((s) => h("option", { value: s }, s)));
  const at = h("input", { id: "reset-at", placeholder: "time (ms / ISO) or partition:offset,..." });
  const reset = async (dryRun) => {
    const body = { topic: topic.value, to: to.value, dry_run: dryRun };
    if (to.value === "timestamp") body.timestamp = /^\d+$/.test(at.value) ? Number(at.value) : Date.parse(at.value);
    if (to.value === "offset") {
      body.offsets = {};
      for (const pair of at.value.split(",").map((s) => s.trim()).filter(Boolean)) {
        const [p, o] = pair.split(":");
        body.offsets[p] = Number(o);
      }
    }
    try {
      const plan = await api("POST", `/groups/${encodeURIComponent(id)}/reset-offsets`, body);
      show(resetSlot, h("div", {}, h("div", { class: "ok" }, dryRun ? "Would reset:" : "Reset:"),
        table([{ label: "Topic", key: "topic" }, { label: "Partition", key: "partition", num: true },
          { label: "From", key: "from", num: true }, { label: "To", key: "to", num: true }], plan.offsets, { id: "reset-plan" })));
      if (!dryRun) load();
    } catch (e) { show(resetSlot, errorBox(e)); }
  };
  actions.replaceChildren(
    h("h2", {}, "Reset offsets"),
    h("p", { class: "label" }, "Offsets can be reset only while the group has no members, as in Kafka."),
    h("div", { class: "toolbar" }, h("label", {}, "Topic", topic), h("label", {}, "To", to), h("label", {}, "At", at),
      h("button", { class: "secondary", id: "reset-dry-run", onclick: () => reset(true) }, "Dry run"),
      h("button", { id: "reset-apply", onclick: () => reset(false) }, "Reset")),
    resetSlot,
    h("h2", {}, "Delete the group"),
    h("button", { class: "danger", disabled: !g, onclick: async () => {
      try { await api("DELETE", `/groups/${encodeURIComponent(id)}`); location.hash = "#/groups"; } catch (e) { show(resetSlot, errorBox(e)); }
    } }, "Delete group"));
}

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(",", 2)[1] || "");
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function modulesPage() {
  const slot = h("div");
  const list = h("div", { id: "modules-list" });
  const deploySlot = h("div", { id: "deploy-status" });
  const file = h("input", { type: "file", id: "module-file", accept: ".wasm" });
  const drop = h("div", { class: "drop", id: "module-drop" }, "Drop a .wasm component here, or choose one: ", file);
  let chosen = null;
  const inspected = h("div", { id: "module-inspection" });
  const choose = async (f) => {
    chosen = f;
    drop.firstChild.textContent = `Chosen: ${f.name} (${fmtBytes(f.size)}) `;
    try {
      const c = await api("POST", "/modules/inspect", { component_base64: await readBase64(f) });
      if (c.kinds.length) kind.value = c.kinds[0].kind;
      inspected.replaceChildren(h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "label" }, "Kind"), h("div", { class: "value small", id: "module-kinds" },
          c.kinds.length ? c.kinds.map((k) => `${k.kind} (weir:plugin@${k.contract})`).join(", ") : "none")),
        h("div", { class: "card" }, h("div", { class: "label" }, "Size"), h("div", { class: "value" }, fmtBytes(c.size_bytes))),
        h("div", { class: "card" }, h("div", { class: "label" }, "SHA-256"), h("div", { class: "mono" }, c.sha256))),
      c.refusal ? h("div", { class: "error", id: "module-refusal" }, `The broker would refuse it: ${c.refusal}`)
        : h("div", { class: "ok" }, "The broker would accept it."),
      table([{ label: "Import", key: "name" }, { label: "", render: (i) => (i.granted ? "granted" : "not granted") }], c.imports, { id: "module-imports" }));
    } catch (e) {
      inspected.replaceChildren(errorBox(e));
    }
  };
  file.addEventListener("change", () => file.files[0] && choose(file.files[0]));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); if (ev.dataTransfer.files[0]) choose(ev.dataTransfer.files[0]); });
  const name = h("input", { id: "module-name", placeholder: "name" });
  const kind = h("select", { id: "module-kind" }, ["transform", "partitioner", "validator"].map((k) => h("option", { value: k }, k)));
  const inputs = h("input", { id: "module-inputs", placeholder: "input topics, comma-separated" });
  const output = h("input", { id: "module-output", placeholder: "output topic" });
  const topic = h("input", { id: "module-topic", placeholder: "topic (partitioner, validator)" });
  const params = h("input", { id: "module-params", placeholder: "name=value, ..." });
  const deadline = h("input", { id: "module-deadline", type: "number", min: 1, placeholder: "broker's", size: 8 });
  const memory = h("input", { id: "module-memory", type: "number", min: 1, placeholder: "broker's", size: 8 });
  const deadLetter = h("input", { id: "module-dlq", placeholder: "NAME.dlq" });
  const deploy = h("button", { id: "module-deploy", onclick: async () => {
    if (!chosen) { show(deploySlot, errorBox({ message: "choose a .wasm component first", field: "component" })); return; }
    const p = {};
    for (const pair of params.value.split(",").map((s) => s.trim()).filter(Boolean)) {
      const i = pair.indexOf("=");
      if (i > 0) p[pair.slice(0, i)] = pair.slice(i + 1);
    }
    const split = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
    try {
      const d = await api("POST", "/modules", {
        name: name.value, kind: kind.value, inputs: split(inputs.value), output: output.value || null,
        topic: topic.value || null, params: p, component_base64: await readBase64(chosen),
        deadline_ms: deadline.value ? Number(deadline.value) : null,
        memory_bytes: memory.value ? Number(memory.value) * 1048576 : null,
        dead_letter_topic: deadLetter.value || null,
      });
      show(deploySlot, h("div", { class: "ok" }, `Deployed ${d.name} version ${d.active_version}`));
      load();
    } catch (e) { show(deploySlot, errorBox(e)); }
  } }, "Deploy");
  // Try it: run the chosen component over records without deploying it.
  const tryInput = h("textarea", { id: "try-input", placeholder: "one record per line: value, or key|value" });
  const tryTopic = h("input", { id: "try-topic", placeholder: "or read from topic" });
  const tryPartition = h("input", { id: "try-partition", type: "number", min: 0, value: 0, size: 4 });
  const tryOffset = h("input", { id: "try-offset", type: "number", min: 0, value: 0, size: 8 });
  const tryCount = h("input", { id: "try-count", type: "number", min: 1, max: 100, value: 10, size: 4 });
  const tryResults = h("div", { id: "try-results" });
  const paramsOf = () => {
    const p = {};
    for (const pair of params.value.split(",").map((x) => x.trim()).filter(Boolean)) {
      const i = pair.indexOf("=");
      if (i > 0) p[pair.slice(0, i)] = pair.slice(i + 1);
    }
    return p;
  };
  const tryIt = h("button", { id: "try-button", class: "secondary", onclick: async () => {
    if (!chosen) { show(tryResults, errorBox({ message: "choose a .wasm component first", field: "component" })); return; }
    const body = { component_base64: await readBase64(chosen), kind: kind.value, params: paramsOf() };
    if (tryTopic.value) {
      body.from = { topic: tryTopic.value, partition: Number(tryPartition.value), offset: Number(tryOffset.value), count: Number(tryCount.value) };
    } else {
      body.records = tryInput.value.split("\n").filter((l) => l.length).map((l) => {
        const i = l.indexOf("|");
        return i < 0 ? { value: l } : { key: l.slice(0, i), value: l.slice(i + 1) };
      });
    }
    try {
      const res = await api("POST", "/modules/try", body);
      const text = (p) => (p ? (p.text ?? p.base64) : "null");
      tryResults.replaceChildren(table([
        { label: "Input key", render: (r) => text(r.input.key) },
        { label: "Input value", render: (r) => h("pre", {}, text(r.input.value)) },
        { label: res.kind === "transform" ? "Outputs" : res.kind === "partitioner" ? "Partition" : "Verdict", render: (r) => {
          if (res.kind === "partitioner") return String(r.partition);
          if (r.error !== null && r.error !== undefined) return h("span", { class: "error" }, r.error);
          if (res.kind === "validator") return h("span", { class: "ok" }, "accepted");
          if (!r.outputs.length) return h("span", { class: "pill" }, "dropped");
          return h("div", {}, r.outputs.map((o) => h("pre", { class: "try-output" }, `${o.topic ? `→ ${o.topic}: ` : ""}${o.key ? `${text(o.key)} | ` : ""}${text(o.value)}`)));
        } },
      ], res.results, { id: "try-table" }));
    } catch (e) { show(tryResults, errorBox(e)); }
  } }, "Try it");
  const tryPanel = h("div", {}, h("h2", {}, "Try it (nothing is deployed)"), tryInput,
    h("div", { class: "toolbar" }, h("label", {}, "Topic", tryTopic), h("label", {}, "Partition", tryPartition),
      h("label", {}, "Offset", tryOffset), h("label", {}, "Records", tryCount), tryIt), tryResults);
  const load = async () => {
    try {
      const res = await api("GET", "/modules");
      if (!res.modules.length) { list.replaceChildren(emptyState("No modules deployed yet.")); return; }
      const act = (m, action) => async () => {
        try { await api("POST", `/modules/${encodeURIComponent(m.name)}/actions`, { action }); load(); } catch (e) { show(slot, errorBox(e)); }
      };
      list.replaceChildren(table([
        { label: "Name", key: "name", render: (m) => h("a", { href: `#/modules/${encodeURIComponent(m.name)}` }, m.name) },
        { label: "Kind", key: "kind" },
        { label: "Version", key: "active_version", num: true },
        { label: "State", render: (m) => (m.paused ? `paused: ${m.paused}` : "running") },
        { label: "In", num: true, render: (m) => fmtNum(m.metrics.records_in) },
        { label: "Out", num: true, render: (m) => fmtNum(m.metrics.records_out) },
        { label: "Rejected", num: true, render: (m) => fmtNum(m.metrics.records_rejected) },
        { label: "Dead-lettered", num: true, render: (m) => fmtNum(m.metrics.records_dead_lettered) },
        { label: "p99 call", num: true, render: (m) => `${m.metrics.call_latency_us_p99} µs` },
        { label: "Memory", num: true, render: (m) => fmtBytes(m.metrics.memory_high_water_bytes) },
        { label: "Last error", render: (m) => m.metrics.last_error || "" },
        { label: "", render: (m) => h("div", {}, m.paused ? h("button", { class: "secondary", onclick: act(m, "resume") }, "Resume")
          : h("button", { class: "secondary", onclick: act(m, "pause") }, "Pause"),
        m.versions.length > 1 ? h("button", { class: "secondary", onclick: act(m, "rollback") }, "Roll back") : null,
        h("button", { class: "danger", onclick: act(m, "remove") }, "Remove")) },
      ], res.modules, { sortKey: "name", id: "modules-table" }));
    } catch (e) { show(slot, errorBox(e)); }
  };
  page("Wasm modules", h("h2", {}, "Upload and deploy"), drop,
    h("div", { class: "toolbar" }, h("label", {}, "Name", name), h("label", {}, "Kind", kind), h("label", {}, "Inputs", inputs),
      h("label", {}, "Output", output), h("label", {}, "Topic", topic), h("label", {}, "Params", params),
      h("label", {}, "Deadline (ms)", deadline), h("label", {}, "Memory (MiB)", memory), h("label", {}, "Dead-letter topic", deadLetter), deploy),
    inspected, deploySlot, tryPanel, h("h2", {}, "Deployments"), slot, list);
  await load();
}

const LEVELS = ["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"];

// A line diff (longest common subsequence) of two texts: [kind, line] with kind " ", "-" or "+".
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  if (n * m > 4e6) return [["-", a], ["+", b]];
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", x[i++]]);
    else out.push(["+", y[j++]]);
  }
  while (i < n) out.push(["-", x[i++]]);
  while (j < m) out.push(["+", y[j++]]);
  return out;
}

function pretty(schema) {
  try { return JSON.stringify(JSON.parse(schema), null, 2); } catch (_) { return schema; }
}

// A form that checks a schema against a subject's level, shows the result, then registers it.
function registerForm(subjectInput, onRegistered, note) {
  const slot = h("div", { id: "schema-status" }, note ? h("div", { class: "ok" }, note) : null);
  const type = h("select", { id: "schema-type" }, ["AVRO", "JSON"].map((t) => h("option", { value: t }, t)));
  const text = h("textarea", { id: "schema-text", placeholder: '{"type": "record", "name": "Order", "fields": [...]}' });
  const subject = () => (typeof subjectInput === "string" ? subjectInput : subjectInput.value);
  const check = async () => {
    const res = await api("POST", `/schemas/${encodeURIComponent(subject())}/check`, { schema: text.value, schema_type: type.value });
    show(slot, res.compatible
      ? h("div", { class: "ok", id: "schema-check" }, `Compatible (${res.compatibility})`)
      : h("div", { class: "error", id: "schema-check" }, `Not compatible (${res.compatibility}): ${res.problems.join("; ")}`));
    return res.compatible;
  };
  return h("div", {},
    h("div", { class: "toolbar" }, typeof subjectInput === "string" ? null : h("label", {}, "Subject", subjectInput), h("label", {}, "Type", type)),
    text,
    h("div", { class: "toolbar" },
      h("button", { class: "secondary", id: "schema-check-button", onclick: async () => { try { await check(); } catch (e) { show(slot, errorBox(e)); } } }, "Check compatibility"),
      h("button", { id: "schema-register", onclick: async () => {
        try {
          if (!(await check())) return;
          const out = await api("POST", `/schemas/${encodeURIComponent(subject())}`, { schema: text.value, schema_type: type.value });
          const done = `Registered as id ${out.id}, version ${out.version}`;
          slot.append(h("div", { class: "ok" }, done));
          onRegistered(subject(), done);
        } catch (e) { show(slot, errorBox(e)); }
      } }, "Register")),
    slot);
}

function levelPicker(current, path, id) {
  const slot = h("span");
  const select = h("select", { id }, LEVELS.map((l) => h("option", { value: l, selected: l === current }, l)));
  select.addEventListener("change", async () => {
    try { await api("PUT", path, { compatibility: select.value }); show(slot, h("span", { class: "ok" }, " saved")); }
    catch (e) { show(slot, errorBox(e)); }
  });
  return h("span", {}, select, slot);
}

async function schemasPage() {
  const slot = h("div");
  const list = h("div", { id: "subjects-list" });
  page("Schemas", slot, list);
  try {
    const res = await api("GET", "/schemas");
    const subject = h("input", { id: "new-subject", placeholder: "orders-value" });
    list.replaceChildren(
      h("div", { class: "toolbar" }, h("label", {}, "Global compatibility", levelPicker(res.compatibility, "/schema-compatibility", "global-level"))),
      res.subjects.length ? table([
        { label: "Subject", key: "subject", render: (x) => h("a", { href: `#/schemas/${encodeURIComponent(x.subject)}` }, x.subject) },
        { label: "Type", key: "schema_type" },
        { label: "Versions", render: (x) => x.versions.join(", ") },
        { label: "Latest id", key: "latest_id", num: true },
        { label: "Compatibility", key: "compatibility" },
      ], res.subjects, { sortKey: "subject", id: "subjects-table" }) : emptyState("No schemas registered yet."),
      h("h2", {}, "Register a schema"),
      registerForm(subject, (name) => { location.hash = `#/schemas/${encodeURIComponent(name)}`; }));
  } catch (e) { show(slot, errorBox(e)); }
}

async function subjectPage(name, note) {
  const slot = h("div");
  const content = h("div");
  page(`Subject ${name}`, slot, content);
  let d;
  try { d = await api("GET", `/schemas/${encodeURIComponent(name)}`); } catch (e) { show(slot, errorBox(e)); return; }
  const versions = d.versions;
  const pick = (id, v) => h("select", { id }, versions.map((x) => h("option", { value: x.version, selected: x.version === v }, `version ${x.version} (id ${x.id})`)));
  const left = pick("diff-from", versions[Math.max(0, versions.length - 2)].version);
  const right = pick("diff-to", versions[versions.length - 1].version);
  const diff = h("pre", { id: "schema-diff" });
  const drawDiff = () => {
    const a = versions.find((x) => String(x.version) === left.value);
    const b = versions.find((x) => String(x.version) === right.value);
    diff.replaceChildren(...diffLines(pretty(a.schema), pretty(b.schema)).map(([k, line]) =>
      h("div", { class: k === "+" ? "ok" : k === "-" ? "error" : "" }, `${k} ${line}`)));
  };
  left.addEventListener("change", drawDiff);
  right.addEventListener("change", drawDiff);
  content.replaceChildren(
    h("div", { class: "toolbar" }, h("label", {}, "Compatibility", levelPicker(d.compatibility, `/schemas/${encodeURIComponent(name)}/compatibility`, "subject-level"))),
    table([{ label: "Version", key: "version", num: true }, { label: "Id", key: "id", num: true }, { label: "Type", key: "schema_type" },
      { label: "Schema", render: (x) => h("pre", {}, pretty(x.schema)) }], versions, { id: "versions-table" }),
    h("h2", {}, "Compare versions"), h("div", { class: "toolbar" }, left, right), diff,
    h("h2", {}, "Register a new version"), registerForm(name, (_, done) => subjectPage(name, done), note));
  drawDiff();
}

async function clusterPage() {
  const slot = h("div");
  const content = h("div", { id: "cluster" });
  page("Cluster", slot, content);
  const load = async () => {
    let c;
    try { c = await api("GET", "/cluster"); } catch (e) { show(slot, errorBox(e)); return; }
    show(slot, null);
    const s = c.status;
    const voters = (s.voters || []).map((v) => ({ ...v, role: v.node_id === s.controller_leader ? "leader" : "voter" }))
      .concat((s.learners || []).map((v) => ({ ...v, role: "learner" })));
    const registered = new Map((s.brokers || []).map((b) => [b.node_id, b]));
    content.replaceChildren(
      h("div", { class: "cards" },
        h("div", { class: "card" }, h("div", { class: "label" }, "Controller leader"), h("div", { class: "value", id: "cluster-leader" }, s.controller_leader ?? "none")),
        h("div", { class: "card" }, h("div", { class: "label" }, "Term"), h("div", { class: "value" }, s.controller_term)),
        h("div", { class: "card" }, h("div", { class: "label" }, "Offline partitions"), h("div", { class: "value" }, s.offline_partitions || 0)),
        h("div", { class: "card" }, h("div", { class: "label" }, "Under-replicated"), h("div", { class: "value" }, s.under_replicated_partitions || 0)),
        h("div", { class: "card" }, h("div", { class: "label" }, "Reassigning"), h("div", { class: "value" }, s.reassigning_partitions || 0))),
      h("h2", {}, "Controller"),
      table([{ label: "Node", key: "node_id", num: true }, { label: "Role", key: "role" }, { label: "Cluster address", key: "cluster_addr" }], voters, { id: "voters-table" }),
      h("h2", {}, "Brokers"),
      c.brokers.length ? table([
        { label: "Node", key: "node_id", num: true },
        { label: "State", render: (b) => (registered.has(b.node_id) ? (registered.get(b.node_id).fenced ? "fenced" : "live") : "this node") },
        { label: "Leads", key: "leader_of", num: true },
        { label: "Replicas", key: "replica_of", num: true },
        { label: "In sync", key: "in_sync_of", num: true },
        { label: "Kafka", render: (b) => (registered.get(b.node_id) || {}).kafka_addr || "" },
      ], c.brokers, { id: "brokers-table" }) : emptyState("No partitions yet."),
      h("h2", {}, "Offline and under-replicated partitions"),
      (s.offline || []).length + (s.under_replicated || []).length
        ? h("pre", {}, [...(s.offline || []).map((p) => `offline ${p}`), ...(s.under_replicated || []).map((p) => `under-replicated ${p}`)].join("\n"))
        : emptyState("Every partition has a leader and its whole ISR."),
      h("h2", {}, "Reassignments in progress"),
      c.reassignments.length ? table([
        { label: "Topic", key: "topic" }, { label: "Partition", key: "partition", num: true },
        { label: "Replicas", render: (m) => m.replicas.join(", ") }, { label: "Adding", render: (m) => m.adding.join(", ") },
        { label: "Removing", render: (m) => m.removing.join(", ") },
      ], c.reassignments) : emptyState("No reassignment under way."));
  };
  await load();
  const timer = setInterval(load, 2000);
  cleanup.push(() => clearInterval(timer));
}

/** A source's or sink's grants (secrets by name only: the broker never sends their values) and
 * each source task's position; nothing for other modules. */
function connectorSections(m) {
  const active = m.versions.find((v) => v.version === m.active_version);
  const c = active && active.connector;
  if (!c) return [];
  const grants = [
    { what: "Directory (seen as /data)", value: c.dir ? `${c.dir} (${c.dir_writable ? "read-write" : "read-only"})` : "none" },
    { what: "Secrets", value: c.secret_names.length ? c.secret_names.join(", ") : "none" },
    { what: "HTTP to", value: (c.http_allow || []).length ? c.http_allow.join(", ") : "none" },
    { what: "Pipeline", value: (c.transforms || []).length ? c.transforms.join(" → ") : "none" },
    { what: "Tasks", value: String(c.tasks_max) },
  ];
  if (m.kind === "source") grants.push({ what: "Per poll", value: `${c.batch_records} records, ${c.poll_interval_ms} ms after an empty one` });
  const positions = Object.entries(m.metrics.positions || {});
  return [
    h("h2", {}, "Connector"),
    table([{ label: "Grant", key: "what" }, { label: "", key: "value" }], grants, { id: "connector-grants" }),
    ...(m.kind === "source"
      ? [h("h2", {}, "Task positions"), positions.length
        ? table([{ label: "Task", key: "task" }, { label: "Position", render: (p) => h("span", { class: "mono" }, p.position) }],
          positions.map(([task, position]) => ({ task, position })), { id: "connector-positions" })
        : emptyState("No position stored yet.")]
      : []),
  ];
}

async function modulePage(name) {
  const slot = h("div");
  const content = h("div", { id: "module-detail" });
  page(`Module ${name}`, slot, content);
  const load = async () => {
    let m;
    try { m = await api("GET", `/modules/${encodeURIComponent(name)}`); } catch (e) { show(slot, errorBox(e)); return; }
    show(slot, null);
    const x = m.metrics;
    const card = (label, value) => h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
    content.replaceChildren(
      h("div", { class: "cards" }, card("State", m.paused ? `paused: ${m.paused}` : "running"), card("Kind", m.kind),
        card("Active version", m.active_version), card("Records in", fmtNum(x.records_in)), card("Records out", fmtNum(x.records_out)),
        card("Rejected", fmtNum(x.records_rejected)), card("Dead-lettered", fmtNum(x.records_dead_lettered)),
        card("Batches failed", `${fmtNum(x.batches_failed)} of ${fmtNum(x.batches)}`),
        card("Call p50 / p99", `${x.call_latency_us_p50} / ${x.call_latency_us_p99} µs`), card("Memory high-water", fmtBytes(x.memory_high_water_bytes))),
      h("div", {}, x.last_error ? h("div", { class: "error", id: "module-last-error" }, `Last error: ${x.last_error}`) : null),
      h("h2", {}, "Versions"),
      table([
        { label: "Version", key: "version", num: true },
        { label: "SHA-256", render: (v) => h("span", { class: "mono" }, v.sha256.slice(0, 16)) },
        { label: "Size", num: true, render: (v) => fmtBytes(v.size_bytes) },
        { label: "Deployed", render: (v) => fmtTime(v.deployed_at_ms) },
        { label: "Inputs → output", render: (v) => `${(v.inputs || []).join(", ")}${v.output ? ` → ${v.output}` : ""}${v.topic ? `topic ${v.topic}` : ""}` },
        { label: "Params", render: (v) => Object.entries(v.params || {}).map(([k, val]) => `${k}=${val}`).join(", ") },
        { label: "Limits", render: (v) => `${v.deadline_ms} ms, ${fmtBytes(v.memory_bytes)}` },
        { label: "", render: (v) => (v.version === m.active_version ? h("span", { class: "pill" }, "active") : "") },
      ], m.versions, { id: "versions-table" }),
      h("h2", {}, "Counters"),
      Object.keys(x.counters).length ? table([{ label: "Counter", key: "name" }, { label: "Value", key: "value", num: true }],
        Object.entries(x.counters).map(([k, v]) => ({ name: k, value: v })), { id: "counters-table" }) : emptyState("The module counted nothing."),
      ...connectorSections(m),
      h("h2", {}, "Progress"),
      Object.keys(x.progress).length ? table([{ label: "Input", key: "input" }, { label: "Next offset", key: "next", num: true },
        { label: "Lag", num: true, render: (r) => (x.lag && r.input in x.lag ? fmtNum(x.lag[r.input]) : "") }],
        Object.entries(x.progress).map(([k, v]) => ({ input: k, next: v })), { id: "progress-table" }) : emptyState("No progress stored."),
      h("h2", {}, "Recent log lines"),
      (x.recent_logs || []).length
        ? h("pre", { id: "module-logs" }, x.recent_logs.map((l) => l.replace(/^(\d+) /, (_, ms) => `${fmtTime(Number(ms))} `)).join("\n"))
        : emptyState("The module logged nothing."));
  };
  await load();
  const timer = setInterval(load, 2000);
  cleanup.push(() => clearInterval(timer));
}

// ---- routing ---------------------------------------------------------------------------

async function route() {
  for (const f of cleanup) f();
  cleanup = [];
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const section = parts[0] || "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === section);
  if (section === "overview") return overviewPage();
  if (section === "topics") return parts[1] ? topicPage(parts[1]) : topicsPage(params);
  if (section === "groups") return parts[1] ? groupPage(parts[1]) : groupsPage();
  if (section === "modules") return parts[1] ? modulePage(parts[1]) : modulesPage();
  if (section === "cluster") return clusterPage();
  if (section === "schemas") return parts[1] ? subjectPage(parts[1], null) : schemasPage();
  page("Not found", emptyState(`No page ${path}`));
}

window.addEventListener("hashchange", route);
route();
