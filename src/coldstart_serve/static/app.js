// The coldstart page: plain JavaScript over the service's JSON endpoints (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

async function call(url, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.headers);
  const response = await fetch(url, opts);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = text; }
  if (!response.ok) {
    const detail = body && body.detail !== undefined ? body.detail : body;
    throw new Error(response.status + ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)));
  }
  return body;
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function poster(itemId) {
  const img = el("img", {alt: "", loading: "lazy"});
  // fetch with the key, so posters show even when reads are protected
  fetch("/items/" + encodeURIComponent(itemId) + "/poster", {headers: headers()})
    .then((r) => (r.ok ? r.blob() : null))
    .then((blob) => { if (blob) img.src = URL.createObjectURL(blob); else img.classList.add("none"); })
    .catch(() => img.classList.add("none"));
  return img;
}

function card(entry) {
  const li = el("li");
  li.dataset.item = entry.item;
  if (info && info.posters || entry.kind === "new") li.appendChild(poster(entry.item));
  li.appendChild(el("div", {class: "title"}, entry.title || entry.item));
  const meta = el("div");
  meta.appendChild(el("span", {class: "kind " + entry.kind}, entry.kind));
  meta.appendChild(document.createTextNode(" " + entry.item + " · " + entry.score.toFixed(3)));
  li.appendChild(meta);
  return li;
}

function fill(list, entries) {
  list.replaceChildren(...entries.map(card));
}

async function showUser(event) {
  if (event) event.preventDefault();
  $("user-error").textContent = "";
  const user = $("user-id").value.trim();
  if (!user) return;
  const q = new URLSearchParams({k: $("k").value, candidates: $("candidates").value,
                                 exclude_seen: $("exclude-seen").checked});
  try {
    const [history, recs] = await Promise.all([
      call("/users/" + encodeURIComponent(user) + "?limit=20"),
      call("/users/" + encodeURIComponent(user) + "/recommendations?" + q)]);
    fill($("history"), history.history);
    fill($("recs"), recs.items);
    if (recs.fallback) $("user-error").textContent = "note: " + recs.fallback;
  } catch (e) {
    $("user-error").textContent = e.message;
  }
}

function buildFields() {
  const box = $("item-fields");
  box.replaceChildren();
  Object.entries(info.item_fields).forEach(([name, field]) => {
    if (name === "title" && field.kind === "text") return; // the title box above is the title content
    if (field.kind === "text") {
      const label = el("label", {}, name);
      label.appendChild(el("textarea", {"data-field": name, "data-kind": "text", maxlength: "20000"}));
      box.appendChild(label);
    } else if (field.kind === "labels" && field.vocabulary) {
      const fieldset = el("fieldset", {"data-field": name, "data-kind": "labels"});
      fieldset.appendChild(el("legend", {}, name));
      const checks = el("div", {class: "checks"});
      field.vocabulary.forEach((label) => {
        const l = el("label");
        l.appendChild(el("input", {type: "checkbox", value: label}));
        l.appendChild(document.createTextNode(label));
        checks.appendChild(l);
      });
      fieldset.appendChild(checks);
      box.appendChild(fieldset);
    } else if (field.kind === "labels") {
      const label = el("label", {}, name + " (comma-separated)");
      label.appendChild(el("input", {"data-field": name, "data-kind": "labels-text"}));
      box.appendChild(label);
    } else if (field.kind === "dense") {
      const label = el("label", {}, name);
      label.appendChild(el("input", {"data-field": name, "data-kind": "number", type: "number", step: "any"}));
      box.appendChild(label);
    }
  });
  const takesImage = Object.values(info.item_fields).some((f) => f.kind === "image");
  $("poster-label").firstChild.textContent = takesImage ? "Poster " : "Poster (shown only; this run's model reads no image) ";
}

function itemBody() {
  const body = {id: $("item-id").value.trim(), text: {}, labels: {}, numbers: {}};
  const title = $("item-title").value.trim();
  if (title) body.title = title;
  document.querySelectorAll("#item-fields [data-field]").forEach((node) => {
    const name = node.dataset.field;
    const kind = node.dataset.kind;
    if (kind === "text" && node.value.trim()) body.text[name] = node.value;
    if (kind === "labels") {
      const checked = [...node.querySelectorAll("input:checked")].map((c) => c.value);
      if (checked.length) body.labels[name] = checked;
    }
    if (kind === "labels-text" && node.value.trim()) {
      body.labels[name] = node.value.split(",").map((s) => s.trim()).filter(Boolean);
    }
    if (kind === "number" && node.value !== "") body.numbers[name] = Number(node.value);
  });
  return body;
}

async function addItem(event) {
  event.preventDefault();
  $("item-error").textContent = "";
  $("item-result").textContent = "";
  const body = itemBody();
  const form = new FormData();
  form.append("item", JSON.stringify(body));
  const file = $("poster").files[0];
  if (file) form.append("poster", file);
  try {
    const added = await call("/items", {method: "POST", body: form});
    let note = "added " + added.item + " in " + added.seconds + " s";
    const unknown = Object.entries(added.unknown_labels || {}).map(([k, v]) => k + ": " + v.join(", "));
    if (unknown.length) note += " (labels unknown to the model, ignored: " + unknown.join("; ") + ")";
    $("item-result").textContent = note;
    const audience = await call("/items/" + encodeURIComponent(added.item) + "/audience?k=10");
    $("audience").replaceChildren(...audience.users.map((u) => {
      const li = el("li", {}, u.user + " · " + u.score.toFixed(3));
      li.dataset.user = u.user;
      return li;
    }));
    const users = audience.users.slice(0, 4).map((u) => u.user);
    const current = $("user-id").value.trim();
    if (current && !users.includes(current)) users.push(current);
    if (users.length) {
      const ranks = await call("/items/" + encodeURIComponent(added.item) + "/rank?" +
                               users.map((u) => "users=" + encodeURIComponent(u)).join("&"));
      $("ranks").tBodies[0].replaceChildren(...ranks.ranks.map((r) => {
        const tr = el("tr");
        [r.user, r.rank === null ? "seen" : r.rank, r.of].forEach((v) => tr.appendChild(el("td", {}, String(v))));
        return tr;
      }));
    }
  } catch (e) {
    $("item-error").textContent = e.message;
  }
}

async function start() {
  try {
    info = await call("/info");
    $("run-summary").textContent = info.model + " on " + info.dataset + " · " + info.items + " items · " +
      info.users + " users · " + info.index + " index";
    buildFields();
    if (!info.accepts_items) $("item-error").textContent = info.model + " cannot embed new items";
    const users = await call("/users?limit=200");
    $("user-list").replaceChildren(...users.users.map((u) => el("option", {value: u})));
    if (!$("user-id").value && users.users.length) $("user-id").value = users.users[0];
    document.body.dataset.ready = "1";
  } catch (e) {
    $("run-summary").textContent = e.message;
  }
}

$("user-form").addEventListener("submit", showUser);
$("item-form").addEventListener("submit", addItem);
start();
