/* airflow-mlops Models pages: vanilla JS, no dependencies, no network beyond this origin.
 *
 * The server renders a shell whose <body data-*> says which page this is and where things are:
 * data-base (the plugin, ".../mlops"), data-airflow (Airflow's own base path), data-model, ...
 * Everything is built with DOM calls and text nodes (never parsed HTML strings), so registry
 * values cannot inject markup. Charts are inline SVG drawn here.
 */
(function () {
  "use strict";

  const body = document.body;
  const BASE = body.dataset.base || "/mlops";
  const AIRFLOW = body.dataset.airflow || "";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const app = document.getElementById("app");

  // ------------------------------------------------------------------ DOM helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) el.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  const fmt = (v, digits = 4) => (typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "—");
  const pct = (v) => (typeof v === "number" && isFinite(v) ? `${(v * 100).toFixed(1)} %` : "—");
  const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "—");
  const badge = (text, cls) => h("span", { class: `badge ${cls || text}` }, text);
  const empty = (...text) => h("div", { class: "empty" }, ...text);
  const modelHref = (name, query) => `${BASE}/ui/models/${encodeURIComponent(name)}${query || ""}`;
  const runHref = (dag, run) =>
    `${AIRFLOW}/dags/${encodeURIComponent(dag)}/runs/${encodeURIComponent(run)}`;
  const docHref = (name, version, doc) =>
    `${BASE}/ui/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}/${doc}`;

  async function api(path) {
    const response = await fetch(`${BASE}/api${path}`, {
      credentials: "same-origin", headers: { Accept: "application/json" },
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${response.status}: ${data.detail || response.statusText}`);
    return data;
  }
  function fail(error) {
    app.replaceChildren(h("div", { class: "error", role: "alert" }, String(error.message || error)));
  }

  // ------------------------------------------------------------------ charts
  /* points: [{x: number, y: number|null, label: string, cls: string}]; threshold: [{x, y}] or null. */
  function lineChart(id, title, points, threshold, xLabels) {
    const W = 560, H = 240, L = 48, R = 12, T = 14, B = 36;
    const shown = points.filter((p) => typeof p.y === "number" && isFinite(p.y));
    const limits = (threshold || []).filter((p) => typeof p.y === "number");
    if (!shown.length) return null;
    const ys = shown.map((p) => p.y).concat(limits.map((p) => p.y));
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-9) { lo -= 0.05; hi += 0.05; }
    const pad = (hi - lo) * 0.1; lo = Math.max(0, lo - pad); hi += pad;
    const xs = points.map((p) => p.x);
    const x0 = Math.min(...xs), x1 = Math.max(...xs) === x0 ? x0 + 1 : Math.max(...xs);
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const Y = (y) => T + (1 - (y - lo) / (hi - lo)) * (H - T - B);
    const svg = s("svg", { id, class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
    svg.append(s("title", {}, title));
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: Y(v), y2: Y(v) }),
        s("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end" }, v.toFixed(2)));
    }
    (xLabels || []).forEach(([x, text]) => svg.append(s("text", { x: X(x), y: H - B + 16,
      "text-anchor": xLabels.length > 1 && x === x1 ? "end" : xLabels.length > 1 && x === x0 ? "start" : "middle" },
    text)));
    if (limits.length) {
      svg.append(s("polyline", { class: "threshold",
        points: limits.map((p) => `${X(p.x)},${Y(p.y)}`).join(" ") }, s("title", {}, "threshold")));
    }
    svg.append(s("polyline", { class: "series", points: shown.map((p) => `${X(p.x)},${Y(p.y)}`).join(" ") }));
    shown.forEach((p) => svg.append(s("circle", { class: `point ${p.cls || ""}`, cx: X(p.x), cy: Y(p.y), r: 4.5,
      "data-value": p.y }, s("title", {}, p.label))));
    return svg;
  }

  /* Global importance of one version (explanations/global_importance.json): one bar per feature, most important
   * first, its spread (std over the permutation repeats) as a whisker; negative importances drawn left of 0. */
  function importanceChart(found) {
    const features = (found.features || []).filter((f) => typeof f.importance === "number").slice(0, 15);
    if (!features.length) return null;
    const W = 560, L = 150, R = 56, T = 8, ROW = 22, H = T + ROW * features.length + 8;
    const hi = Math.max(1e-12, ...features.map((f) => f.importance + (f.std || 0)));
    const lo = Math.min(0, ...features.map((f) => f.importance - (f.std || 0)));
    const X = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
    const title = `Importance: drop in ${found.scoring} when a feature is shuffled (${found.rows} held-out rows)`;
    const svg = s("svg", { id: "importance-chart", class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": title }, s("title", {}, title), s("line", { class: "axis", x1: X(0), x2: X(0), y1: T,
      y2: H - 8 }));
    features.forEach((f, i) => {
      const y = T + i * ROW, left = Math.min(X(0), X(f.importance));
      svg.append(s("text", { x: L - 6, y: y + 15, "text-anchor": "end" }, f.feature),
        s("rect", { class: "bar", x: left, y: y + 4, width: Math.max(1, Math.abs(X(f.importance) - X(0))),
          height: ROW - 8, "data-feature": f.feature, "data-value": f.importance },
        s("title", {}, `#${f.rank} ${f.feature}: ${fmt(f.importance)} ± ${fmt(f.std)}`)),
        s("line", { class: "whisker", x1: X(f.importance - (f.std || 0)), x2: X(f.importance + (f.std || 0)),
          y1: y + ROW / 2, y2: y + ROW / 2 }),
        s("text", { x: W - R + 4, y: y + 15 }, fmt(f.importance, 3)));
    });
    return svg;
  }

  function importancePanel(detail) {
    const found = detail.explanations;
    const panel = h("div", { class: "panel", id: "importance" }, h("h3", {}, `Feature importance — v${detail.version}`));
    if (!found) {
      return append(panel, [empty("No global importance was logged for this version (trained before explanations ",
        "were, or the training job could not compute them: see its log).")]);
    }
    return append(panel, [importanceChart(found), h("p", { class: "small muted" },
      `${found.method} importance, ${found.scoring} scorer, seed ${found.seed}, ${found.repeats} repeats on `,
      `${found.rows} of ${found.held_out_rows} held-out rows. Per prediction: POST /predict?explain=true.`)]);
  }

  function timeLabels(points) {
    if (!points.length) return [];
    const first = points[0], last = points[points.length - 1];
    const day = (x) => new Date(x).toISOString().slice(0, 10);
    return first.x === last.x ? [[first.x, day(first.x)]] : [[first.x, day(first.x)], [last.x, day(last.x)]];
  }

  function driftChart(records) {
    const points = records.map((r) => ({ x: Date.parse(r.time), y: r.value, cls: r.status,
      label: `${when(r.time)}: drift share ${pct(r.value)} (threshold ${pct(r.threshold)}), ${r.status}` +
        (r.model_version ? `, champion v${r.model_version}` : "") }));
    const limits = records.map((r) => ({ x: Date.parse(r.time), y: r.threshold }));
    return lineChart("drift-chart", "Drift share of the champion's input columns vs threshold", points, limits,
      timeLabels(points));
  }

  function metricChart(model) {
    const rows = [...model.versions].reverse();
    const points = rows.map((v) => ({ x: Number(v.version), y: v.verdict ? v.verdict.value : null,
      cls: v.aliases.includes("champion") ? "champion" : "",
      label: `v${v.version}: ${model.primary_metric} ${fmt(v.verdict && v.verdict.value)}` }));
    return lineChart("metric-chart", `Held-out ${model.primary_metric} per version (${direction(model)})`, points, null,
      rows.map((v) => [Number(v.version), `v${v.version}`]));
  }

  function performanceChart(records) {
    const points = records.map((r) => ({ x: Date.parse(r.time), y: r.value, cls: r.status,
      label: `${when(r.time)}: ${fmt(r.value)} (limit ${fmt(r.threshold)}), ${r.status}` }));
    const limits = records.map((r) => ({ x: Date.parse(r.time), y: r.threshold }));
    return lineChart("performance-chart", "Live performance on labelled predictions", points, limits,
      timeLabels(points));
  }

  // ------------------------------------------------------------------ Models page
  function direction(model) { return model.lower_is_better ? "lower is better" : "higher is better"; }
  function versionCell(v, metric) {
    if (!v) return h("span", { class: "muted" }, "none");
    return h("span", {}, h("strong", {}, `v${v.version}`), " ",
      h("span", { class: "muted small" }, `${metric} ${fmt(v.verdict && v.verdict.value)}`));
  }
  function driftCell(d) {
    if (!d) return h("span", { class: "muted" }, "no check yet");
    return h("span", {}, pct(d.value), " ", badge(d.status), h("div", { class: "muted small" },
      `threshold ${pct(d.threshold)} · ${when(d.time)}`));
  }
  function retrainCell(v) {
    if (!v) return h("span", { class: "muted" }, "never trained");
    const why = v.trigger ? `${v.trigger.replace("_", " ")} run` : "run";
    const verdict = v.verdict ? badge(v.verdict.verdict) : null;
    const because = v.retrain_reason ? h("div", { class: "small retrain-reason" }, `because ${v.retrain_reason}`) : null;
    const reason = v.verdict && v.verdict.reasons ? h("div", { class: "muted small" }, v.verdict.reasons) : null;
    return h("span", {}, `v${v.version} · ${when(v.created)} · ${why} `, verdict, because, reason);
  }

  async function modelsPage() {
    const { models } = await api("/models");
    const rows = models.map((m) => h("tr", { "data-model": m.name },
      h("td", {}, h("a", { href: modelHref(m.name) }, m.name), h("div", { class: "muted small" }, m.description)),
      h("td", { class: "champion" }, versionCell(m.champion, m.primary_metric)),
      h("td", {}, versionCell(m.challenger, m.primary_metric)),
      h("td", {}, m.primary_metric, h("div", { class: "muted small" }, `${m.task} · ${direction(m)}`)),
      h("td", {}, driftCell(m.last_drift)),
      h("td", {}, retrainCell(m.last_retrain))));
    app.replaceChildren(h("h1", {}, "Models"),
      h("p", { class: "muted" }, "Every model spec, its registry state and its latest monitoring check."),
      models.length ? h("table", { id: "models" }, h("thead", {}, h("tr", {}, ["Model", "Champion", "Challenger",
        "Primary metric", "Last drift share", "Last retrain (and why)"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))
        : empty("No model you may read: add a spec to the models directory, or ask for read access to its ",
          h("code", {}, "<model>__train"), " DAG."));
  }

  // ------------------------------------------------------------------ model page
  function auditList(events) {
    if (!events.length) return null;
    return h("ul", { class: "events" }, events.map((e) => h("li", {}, badge(e.action, e.action === "promote" ||
      e.action === "approve" ? "ok" : "hold"), `${when(e.at)} by ${e.actor}`,
      e.previous ? ` (previous champion v${e.previous})` : "", e.reason ? ` — ${e.reason}` : "",
      e.dag_id && e.run_id ? [" · ", h("a", { href: runHref(e.dag_id, e.run_id), target: "_top" },
        "DAG run")] : null)));
  }

  function timeline(model, audit, selected) {
    if (!model.versions.length) {
      return empty("No version registered yet: trigger the ", h("code", {}, model.dags.train),
        " DAG (or wait for its schedule/asset) to train, evaluate and register one.");
    }
    return h("ol", { class: "timeline", id: "versions" }, model.versions.map((v) => {
      const run = v.airflow.dag_id && v.airflow.run_id
        ? h("a", { href: runHref(v.airflow.dag_id, v.airflow.run_id), target: "_top" },
          `${v.airflow.dag_id} · ${v.airflow.run_id}`)
        : h("span", { class: "muted" }, "no Airflow run recorded");
      const cls = [v.aliases.includes("champion") ? "champion" : "", v.version === selected ? "selected" : ""];
      return h("li", { class: cls.join(" "), "data-version": v.version },
        h("strong", {}, h("a", { href: modelHref(model.name, `?version=${v.version}`) }, `v${v.version}`)), " ",
        v.aliases.map((a) => badge(a)), v.verdict ? badge(v.verdict.verdict) : null,
        h("span", { class: "muted" }, ` ${when(v.created)} · ${model.primary_metric} ${fmt(v.verdict &&
          v.verdict.value)}`, v.verdict && v.verdict.gain !== null ? ` (gain ${fmt(v.verdict.gain)})` : ""),
        h("div", { class: "small" }, "Produced by ", run, v.trigger ? ` (${v.trigger.replace("_", " ")})` : "",
          " · ", h("a", { href: docHref(model.name, v.version, "evaluation"), target: "_blank" },
            "evaluation report"), " · ",
          h("a", { href: docHref(model.name, v.version, "model_card"), target: "_blank" }, "model card")),
        v.retrain_reason ? h("div", { class: "small retrain-reason" }, `Retrained because ${v.retrain_reason}`) : null,
        auditList(audit.filter((e) => e.version === v.version)));
    }));
  }

  function cards(model) {
    const card = (label, value, sub) => h("div", { class: "card" }, h("div", { class: "label" }, label),
      h("div", { class: "value" }, value), sub ? h("div", { class: "muted small" }, sub) : null);
    const c = model.champion, d = model.checks.drift, p = model.checks.performance;
    return h("div", { class: "cards" },
      card("Champion", h("span", { id: "champion-version" }, c ? `v${c.version}` : "none"),
        c ? `${model.primary_metric} ${fmt(c.verdict && c.verdict.value)}` : "nothing promoted yet"),
      card("Challenger", model.challenger ? `v${model.challenger.version}` : "none"),
      card("Last drift share", d ? pct(d.value) : "—", d ? `${d.status} · ${when(d.time)}` : "no check yet"),
      card("Live performance", p ? fmt(p.value) : "—", p ? `${p.status} · ${when(p.time)}` : "no labels yet"),
      card("Versions", String(model.version_count)));
  }

  function chartPanel(title, id, chart, emptyText) {
    return h("div", { class: "panel", id }, h("h3", {}, title), chart || empty(emptyText));
  }

  function cardPanel(detail) {
    const panel = h("div", { class: "panel", id: "model-card" }, h("h3", {}, `Model card — v${detail.version}`));
    const card = detail.model_card, ev = detail.evaluation;
    if (!card && !ev) {
      return append(panel, [empty("No model card or evaluation report was logged for this version (the tasks ",
        "that write them did not run or failed).")]);
    }
    if (card) {
      append(panel, [h("p", {}, card.model && card.model.description),
        card.intended_use ? h("p", {}, h("strong", {}, "Intended use: "), card.intended_use) : null,
        card.limitations ? h("p", {}, h("strong", {}, "Limitations: "), card.limitations) : null,
        (card.caveats || []).length ? h("ul", {}, card.caveats.map((t) => h("li", {}, t))) : null]);
    }
    if (ev && ev.challenger) {
      const champ = (ev.champion && ev.champion.metrics) || {};
      append(panel, [h("table", {}, h("tr", {}, h("th", {}, "metric"), h("th", {}, `v${detail.version}`),
        h("th", {}, ev.champion ? `champion v${ev.champion.version || "?"}` : "champion")),
      Object.entries(ev.challenger.metrics || {}).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, fmt(v)),
        h("td", {}, fmt(champ[k]))))), classRecall(ev), ev.summary ? h("p", { class: "small muted" }, ev.summary) : null]);
    } else {
      append(panel, [empty("No evaluation report was logged for this version.")]);
    }
    return panel;
  }

  // multiclass: recall of each class (the report's `classes`), challenger beside the champion it was compared with
  function classRecall(ev) {
    const table = ev.task === "multiclass" && ev.classes;
    if (!table || !table.labels) return null;
    const recall = table.recall || {}, ours = recall.challenger || {}, theirs = recall.champion || {};
    return h("table", { id: "class-recall" }, h("tr", {}, ["class", "rows", "recall", "champion recall"].map((t) =>
      h("th", {}, t))), table.labels.map((label) => h("tr", {}, h("td", {}, String(label)),
      h("td", {}, String((table.counts || {})[label] ?? "")), h("td", {}, fmt(ours[label])),
      h("td", {}, fmt(theirs[label])))));
  }

  function rollbackPanel(model) {
    const current = model.champion && model.champion.version;
    const former = [...new Set(model.audit.filter((e) => e.action === "promote" || e.action === "rollback")
      .map((e) => e.version))].filter((v) => v !== current);
    const panel = h("div", { class: "panel", id: "rollback" }, h("h3", {}, "Roll back the champion"));
    if (!former.length) return append(panel, [empty("No former champion to roll back to.")]);
    const target = h("select", { "aria-label": "target version" }, former.reverse().map((v) =>
      h("option", { value: v }, `v${v}`)));
    const reason = h("input", { "aria-label": "reason", placeholder: "reason (kept in the audit trail)", size: 40 });
    const out = h("span", { class: "small" });
    const button = h("button", { type: "button", onclick: async () => {
      button.disabled = true;
      out.replaceChildren("Triggering…");
      try {
        const run = await triggerRollback(model.dags.rollback, target.value, reason.value);
        out.replaceChildren("Started ", h("a", { href: runHref(run.dag_id, run.dag_run_id), target: "_top" },
          run.dag_run_id));
      } catch (error) {
        out.replaceChildren(h("span", { class: "error" }, String(error.message)));
      } finally { button.disabled = false; }
    } }, "Trigger rollback");
    return append(panel, [h("p", { class: "muted small" }, "Triggers the ", h("code", {}, model.dags.rollback),
      " DAG through Airflow's REST API with your session: Airflow checks that you may trigger it."),
    h("div", { class: "actions" }, target, reason, button, out)]);
  }

  async function triggerRollback(dagId, target, reason) {
    const response = await fetch(`${AIRFLOW}/api/v2/dags/${encodeURIComponent(dagId)}/dagRuns`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ logical_date: null, conf: { target, reason } }),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || data);
      throw new Error(`${response.status}: ${detail}`);
    }
    return data;
  }

  async function modelPage() {
    const name = body.dataset.model;
    const query = new URLSearchParams(location.search);
    const [model, drift, perf] = await Promise.all([api(`/models/${encodeURIComponent(name)}`),
      api(`/models/${encodeURIComponent(name)}/monitoring?kind=drift`),
      api(`/models/${encodeURIComponent(name)}/monitoring?kind=performance`)]);
    const byRun = model.versions.find((v) => v.mlflow_run_id === query.get("mlflow_run"));
    const selected = query.get("version") || (byRun && byRun.version) ||
      (model.champion && model.champion.version) || (model.versions[0] && model.versions[0].version);
    const detail = selected
      ? await api(`/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(selected)}`) : null;
    app.replaceChildren(
      h("p", { class: "small" }, h("a", { href: `${BASE}/ui/models` }, "← Models")),
      h("h1", {}, model.name), h("p", { class: "muted" }, model.description, " · owner ", model.owner),
      model.experiment ? h("p", {}, badge(model.experiment.status, model.experiment.status === "promoted" ? "ok"
        : "hold"), ` ${model.experiment.type === "ab" ? "A/B test" : "bandit"} ${model.experiment.id}: `,
        h("a", { href: `${modelHref(model.name)}/experiment`, target: "_blank" }, "experiment readout")) : "",  // replaceChildren would write a null as the text "null"
      cards(model),
      h("div", { class: "grid" },
        chartPanel("Drift share over time", "drift", driftChart(drift.records),
          "No drift check recorded yet: the monitoring DAG writes one point per run."),
        chartPanel(`${model.primary_metric} per version`, "metrics", metricChart(model),
          "No evaluated version yet."),
        perf.records.length ? chartPanel("Live performance", "performance", performanceChart(perf.records)) : null),
      h("div", { class: "grid" },
        h("div", {}, h("h2", {}, "Versions and audit trail"), timeline(model, model.audit, selected)),
        h("div", {}, detail ? cardPanel(detail) : null, detail ? importancePanel(detail) : null,
          rollbackPanel(model))));
    if (location.hash === "#drift") document.getElementById("drift").scrollIntoView();
  }

  // ------------------------------------------------------------------ DAG-run page
  async function runPage() {
    const { dagId, runId } = body.dataset;
    const run = await api(`/runs/${encodeURIComponent(dagId)}/${encodeURIComponent(runId)}`);
    const sections = [];
    if (run.validation.length) {
      sections.push(h("h2", {}, "Data validation"), h("ul", {}, run.validation.map((p) =>
        h("li", {}, h("a", { href: p.url, target: "_blank" }, `${p.task_id}: validation report`)))));
    }
    if (run.checks.length) {
      sections.push(h("h2", {}, "Monitoring checks"), h("ul", {}, run.checks.map((c) => h("li", {}, badge(c.status),
        `${c.kind}: ${fmt(c.value)} (threshold ${fmt(c.threshold)}) `, c.report_url
          ? h("a", { href: c.report_url, target: "_blank" }, `${c.kind} report`)
          : h("span", { class: "muted" }, "no report saved")))));
    }
    if (run.versions.length) {
      sections.push(h("h2", {}, "Model versions"), h("ul", {}, run.versions.map((v) => h("li", {},
        h("a", { href: modelHref(run.model, `?version=${v.version}`), target: "_top" }, `${run.model} v${v.version}`),
        " ", v.aliases.map((a) => badge(a)), " · ",
        h("a", { href: docHref(run.model, v.version, "evaluation"), target: "_blank" }, "evaluation report"), " · ",
        h("a", { href: docHref(run.model, v.version, "model_card"), target: "_blank" }, "model card")))));
    }
    app.replaceChildren(h("h1", {}, "MLOps reports"), h("p", { class: "muted" }, `${dagId} · ${runId}`),
      sections.length ? h("div", {}, sections)
        : empty("This run produced no MLOps report: no validation page, monitoring check or model version."));
  }

  function messagePage() {
    app.replaceChildren(h("h1", {}, body.dataset.heading), h("div", { class: "empty" }, body.dataset.message));
  }

  const pages = { models: modelsPage, model: modelPage, run: runPage };
  if (body.dataset.page === "message") messagePage();
  else (pages[body.dataset.page] || (() => Promise.reject(new Error("unknown page"))))().catch(fail);
})();
