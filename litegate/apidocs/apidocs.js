// litegate's offline API reference: renders /openapi.json (paths, methods, parameters,
// request and response schemas) with DOM calls only — no CDN, no innerHTML, no eval.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];
const MAX_DEPTH = 6; // schemas are expanded this deep (refs can recurse)

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function resolve(doc, schema) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/components/schemas/")) {
    const name = schema.$ref.slice("#/components/schemas/".length);
    return [name, (doc.components.schemas || {})[name] || {}];
  }
  return [null, schema || {}];
}

function typeLabel(doc, schema) {
  const [name, s] = resolve(doc, schema);
  if (name) return name;
  if (s.anyOf || s.oneOf) return (s.anyOf || s.oneOf).map((x) => typeLabel(doc, x)).join(" | ");
  if (s.allOf) return s.allOf.map((x) => typeLabel(doc, x)).join(" & ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((x) => JSON.stringify(x)).join(" | ");
  const type = Array.isArray(s.type) ? s.type.join(" | ") : s.type || "any";
  if (type === "array" && s.items) return typeLabel(doc, s.items) + "[]";
  return s.format ? `${type} (${s.format})` : type;
}

function schemaTree(doc, schema, depth, seen) {
  const [name, s] = resolve(doc, schema);
  if (depth > MAX_DEPTH || (name && seen.has(name))) return null;
  const next = name ? new Set([...seen, name]) : seen;
  const parts = [...(s.allOf || []), ...(s.anyOf || []), ...(s.oneOf || [])];
  const list = el("ul", { class: "schema" });
  for (const part of parts) {
    const sub = schemaTree(doc, part, depth + 1, next);
    if (sub && sub.childNodes.length) list.append(...sub.childNodes);
  }
  const target = s.type === "array" && s.items ? resolve(doc, s.items)[1] : s;
  const required = new Set(target.required || []);
  for (const [prop, propSchema] of Object.entries(target.properties || {})) {
    const item = el("li", {}, el("code", {}, prop), required.has(prop) ? el("span", { class: "req" }, " *") : null,
      el("span", { class: "muted" }, ": " + typeLabel(doc, propSchema)));
    if (propSchema.description) item.append(el("span", { class: "muted" }, " — " + propSchema.description));
    const sub = schemaTree(doc, propSchema, depth + 1, next);
    if (sub && sub.childNodes.length) item.append(sub);
    list.append(item);
  }
  return list;
}

function schemaBlock(doc, content) {
  const box = el("div", {});
  for (const [mediaType, media] of Object.entries(content || {})) {
    box.append(el("div", {}, el("code", {}, mediaType), " ",
      el("span", { class: "muted" }, typeLabel(doc, media.schema || {}))));
    const tree = schemaTree(doc, media.schema || {}, 0, new Set());
    if (tree && tree.childNodes.length) box.append(tree);
  }
  return box;
}

function authLabel(doc, op) {
  const security = op.security !== undefined ? op.security : doc.security || [];
  if (!security.length) return "No credentials.";
  const names = security.flatMap((req) => Object.keys(req));
  const words = { bearer: "API key (Authorization: Bearer)", apiKey: "API key (X-API-Key)",
                  adminToken: "admin token (Authorization: Bearer lga-…)" };
  return "Needs " + names.map((n) => words[n] || n).join(" or ") + ".";
}

function operation(doc, path, method, op) {
  const body = el("div", { class: "body" }, el("p", { class: "auth" }, authLabel(doc, op)));
  const params = op.parameters || [];
  if (params.length) {
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
      el("th", {}, "type"), el("th", {}, "description")));
    for (const p of params) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "req" }, " *") : null),
        el("td", {}, p.in), el("td", { class: "schema" }, typeLabel(doc, p.schema || {})),
        el("td", {}, p.description || "")));
    }
    body.append(el("h4", {}, "Parameters"), table);
  }
  if (op.requestBody) {
    body.append(el("h4", {}, "Request body" + (op.requestBody.required ? "" : " (optional)")),
      schemaBlock(doc, op.requestBody.content));
  }
  const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "meaning"), el("th", {}, "body")));
  for (const [status, response] of Object.entries(op.responses || {})) {
    responses.append(el("tr", { "data-status": status }, el("td", {}, status),
      el("td", {}, response.description || ""), el("td", {}, schemaBlock(doc, response.content))));
  }
  body.append(el("h4", {}, "Responses"), responses);
  const details = el("details", { class: "op", "data-search": `${method} ${path} ${op.summary || ""}`.toLowerCase() },
    el("summary", {}, el("span", { class: `method ${method}` }, method), el("span", { class: "path" }, path),
      el("span", { class: "summary" }, op.summary || "")),
    body);
  return details;
}

function groupOf(path, op) {
  if (op.tags && op.tags.length) return op.tags[0];
  if (path.startsWith("/v1")) return "OpenAI-compatible (/v1)";
  if (path.startsWith("/v2")) return "Open Inference Protocol v2 (/v2)";
  return "Health";
}

function render(doc) {
  document.getElementById("title").textContent = `${doc.info.title} API reference`;
  document.getElementById("description").textContent = doc.info.description || "";
  document.getElementById("version").textContent = doc.openapi;
  const groups = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const group = groupOf(path, item[method]);
      if (!groups.has(group)) groups.set(group, []);
      groups.get(group).push(operation(doc, path, method, item[method]));
    }
  }
  const main = document.getElementById("operations");
  main.replaceChildren();
  for (const [group, ops] of groups) {
    const section = el("section", { "data-group": group }, el("h2", {}, group));
    section.append(...ops);
    main.append(section);
  }
  document.getElementById("filter").addEventListener("input", (event) => {
    const needle = event.target.value.trim().toLowerCase();
    for (const section of main.querySelectorAll("section")) {
      let shown = 0;
      for (const op of section.querySelectorAll("details.op")) {
        const match = !needle || op.dataset.search.includes(needle);
        op.hidden = !match;
        shown += match ? 1 : 0;
      }
      section.hidden = shown === 0;
    }
  });
  document.body.dataset.rendered = String(main.querySelectorAll("details.op").length);
}

// The page names its document (/openapi.json, or /litegate/openapi.json when mounted).
const DOCUMENT_URL = document.getElementById("openapi").getAttribute("href");
document.getElementById("openapi").textContent = DOCUMENT_URL;
fetch(DOCUMENT_URL, { headers: { Accept: "application/json" } })
  .then((r) => { if (!r.ok) throw new Error(`${DOCUMENT_URL} answered ${r.status}`); return r.json(); })
  .then(render)
  .catch((err) => { document.getElementById("status").textContent = `Could not load the document: ${err.message}`; });
