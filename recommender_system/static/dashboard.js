/* The built-in dashboard page: reads the /ui/api and /dashboard JSON routes, saves through /store_object. */
(function () {
  "use strict";

  const context = JSON.parse(document.getElementById("rs-context").textContent);
  const state = { charts: {}, config: null, models: [], cascades: {}, loaded: 0, errors: [] };
  window.rsDashboard = state;

  const HEADERS = { "X-RS-UI": "1" };
  const PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  ];
  const CHARTS = [
    { key: "predictions", title: "predictions", scale: (v) => v },
    { key: "hitRate", title: "%", scale: (v) => (v === null ? null : v * 100) },
    { key: "futureHitRate", title: "%", scale: (v) => (v === null ? null : v * 100) },
    { key: "coverage", title: "%", scale: (v) => (v === null ? null : v * 100) },
    { key: "latency", title: "ms", scale: (v) => (v === null ? null : v * 1000) },
  ];

  // ------------------------------------------------------------------------------------------------ helpers
  async function api(path, options) {
    const init = Object.assign({ credentials: "same-origin" }, options || {});
    init.headers = Object.assign({}, HEADERS, (options && options.headers) || {});
    const response = await fetch(path, init);
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error ? body.error : response.status + " " + response.statusText;
      const details = body && body.details && body.details.length
        ? " (" + body.details.map((d) => (d.field ? d.field + ": " : "") + d.message).join("; ") + ")"
        : "";
      throw new Error(message + details);
    }
    return body;
  }

  function postJson(path, body) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  function el(tag, attributes, children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([name, value]) => {
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value === true ? "" : value);
    });
    (children || []).forEach((child) => node.append(child));
    return node;
  }

  const percent = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(2) + " %");
  const seconds = (v) => (v === null || v === undefined ? "–" : v < 1 ? (v * 1000).toFixed(1) + " ms" : v.toFixed(2) + " s");
  const number = (v, digits) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const pair = (stat, format) => format(stat.avg) + " / " + format(stat.max);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

  function metricsText(metrics) {
    const entries = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number" || typeof v === "string");
    if (!entries.length) return "–";
    return entries.map(([k, v]) => k + " " + (typeof v === "number" ? Number(v).toPrecision(4) : v)).join(", ");
  }

  function setStatus(id, message, isError) {
    const node = document.getElementById(id);
    node.textContent = message;
    node.classList.toggle("error", Boolean(isError));
  }

  function fail(error) {
    state.errors.push(String(error));
    setStatus("global-status", String(error.message || error), true);
  }

  // ------------------------------------------------------------------------------------------------ window
  function localInput(date) {
    const pad = (n) => String(n).padStart(2, "0");
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + "T" +
      pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  function initWindow() {
    const to = new Date(Date.now() + 60 * 1000);
    const from = new Date(to.getTime() - 7 * 24 * 3600 * 1000);
    document.getElementById("date-from").value = localInput(from);
    document.getElementById("date-to").value = localInput(to);
  }

  function windowParams() {
    const from = new Date(document.getElementById("date-from").value);
    const to = new Date(document.getElementById("date-to").value);
    return { date_from: from.toISOString(), date_to: to.toISOString() };
  }

  // ------------------------------------------------------------------------------------------------ performance
  function bucketLabel(iso, bucket) {
    const date = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    const day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
    return bucket === "day" ? day : day + " " + pad(date.getHours()) + ":00";
  }

  function drawCharts(series) {
    const labels = series.buckets.map((iso) => bucketLabel(iso, series.bucket));
    const names = Object.keys(series.series);
    CHARTS.forEach((spec) => {
      const datasets = names.map((name, index) => ({
        label: name,
        data: series.series[name][spec.key].map(spec.scale),
        borderColor: name === "all" ? "#222" : PALETTE[index % PALETTE.length],
        backgroundColor: name === "all" ? "#222" : PALETTE[index % PALETTE.length],
        borderWidth: name === "all" ? 2.5 : 1.5,
        pointRadius: labels.length > 60 ? 0 : 2,
        spanGaps: true,
        tension: 0.2,
      }));
      const existing = state.charts[spec.key];
      if (existing) {
        existing.data.labels = labels;
        existing.data.datasets = datasets;
        existing.update();
        return;
      }
      state.charts[spec.key] = new window.Chart(document.getElementById("chart-" + spec.key), {
        type: "line",
        data: { labels: labels, datasets: datasets },
        options: {
          animation: false,
          responsive: true,
          maintainAspectRatio: false,
          interaction: { mode: "index", intersect: false },
          scales: { y: { beginAtZero: true, title: { display: true, text: spec.title } }, x: { ticks: { maxTicksLimit: 12 } } },
          plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        },
      });
    });
  }

  function drawPerformanceTable(body) {
    const rows = [["all", body.performance.general]].concat(
      body.models.map((m) => [m.name, body.performance.modelSpecific[m.name]])
    );
    const tbody = document.querySelector("#perf-table tbody");
    tbody.replaceChildren(...rows.map(([name, perf]) => el("tr", {}, [
      el("td", { text: name }),
      el("td", { text: String(perf.data.predictions) }),
      el("td", { text: percent(perf.data.hitRate) }),
      el("td", { text: percent(perf.data.futureHitRate) }),
      el("td", { text: percent(perf.data.coverage) }),
      el("td", { text: pair(perf.data.retrievalDuration, seconds) }),
      el("td", { text: pair(perf.data.scoringDuration, seconds) }),
      el("td", { text: pair(perf.data.orderingDuration, seconds) }),
    ])));
  }

  async function loadPerformance() {
    const dates = windowParams();
    const query = new URLSearchParams(Object.assign({}, dates, {
      bucket: document.getElementById("bucket").value,
      group_by: document.getElementById("group-by").value,
    }));
    const page = document.getElementById("page-filter").value;
    if (page) query.set("page", page);
    const [series, performance] = await Promise.all([
      api("/ui/api/timeseries?" + query.toString()),
      api("/dashboard/performance?" + new URLSearchParams(dates).toString()),
    ]);
    state.series = series;
    drawCharts(series);
    drawPerformanceTable(performance);
  }

  // ------------------------------------------------------------------------------------------------ training
  async function loadTraining() {
    const dates = new URLSearchParams(windowParams()).toString();
    const [training, runs] = await Promise.all([api("/dashboard/training?" + dates), api("/ui/api/runs?limit=50")]);
    const rows = [["all", training.training.general]].concat(
      training.models.filter((m) => m.canBeTrained).map((m) => [m.name, training.training.modelSpecific[m.name]])
    );
    document.querySelector("#training-table tbody").replaceChildren(...rows.map(([name, figures]) => {
      const d = figures.data;
      return el("tr", {}, [
        el("td", { text: name }),
        el("td", { text: String(d.trainings.started) }),
        el("td", { text: String(d.trainings.completed) }),
        el("td", { text: String(d.trainings.failed) }),
        el("td", { text: String(d.trainings.running) }),
        el("td", { text: pair(d.duration, (v) => (v === null ? "–" : v.toFixed(2) + " s")) }),
        el("td", { text: pair(d.peakMemory, (v) => (v === null ? "–" : v.toFixed(1) + " MB")) }),
        el("td", { text: pair(d.peakMemoryPercentage, (v) => (v === null ? "–" : v.toFixed(2) + " %")) }),
      ]);
    }));
    const runRows = runs.runs.map((run) => el("tr", { className: "status-" + run.status }, [
      el("td", { text: run.modelName }),
      el("td", { text: run.status }),
      el("td", { text: when(run.startedAt) }),
      el("td", { text: run.duration === null ? "–" : run.duration.toFixed(2) + " s" }),
      el("td", {
        text: (run.peakMemoryMb === null ? "–" : run.peakMemoryMb.toFixed(1) + " MB") +
          (run.peakMemoryPercentage === null ? "" : " (" + run.peakMemoryPercentage.toFixed(2) + " %)"),
      }),
      el("td", { text: run.version || "–" }),
      el("td", { text: metricsText(run.metrics) }),
      el("td", { text: run.error ? run.error.split("\n")[0] : "" }),
    ]));
    document.querySelector("#runs-table tbody").replaceChildren(
      ...(runRows.length ? runRows : [el("tr", {}, [el("td", { colspan: "8", text: "No training run yet." })])])
    );
  }

  async function scheduleTraining(event) {
    event.preventDefault();
    const name = document.getElementById("schedule-model").value;
    try {
      await postJson("/store_object", { _model_class: "TrainerQueueItem", model_name: name });
      setStatus("schedule-status", "Training of " + name + " scheduled.", false);
    } catch (error) {
      setStatus("schedule-status", String(error.message || error), true);
    }
  }

  // ------------------------------------------------------------------------------------------------ versions
  async function loadVersions() {
    const body = await api("/ui/api/versions");
    const rows = body.versions.map((v) => el("tr", { className: v.current ? "current" : "" }, [
      el("td", { text: v.modelName }),
      el("td", { text: v.version }),
      el("td", { text: when(v.createdAt) }),
      el("td", { text: metricsText(v.metrics) }),
      el("td", {}, [v.current
        ? el("span", { className: "badge", text: "served" })
        : el("button", {
          type: "button",
          text: "Serve this version",
          "data-model": v.modelName,
          "data-version": v.version,
          onclick: () => rollback(v.modelName, v.version),
        })]),
    ]));
    document.querySelector("#versions-table tbody").replaceChildren(
      ...(rows.length ? rows : [el("tr", {}, [el("td", { colspan: "5", text: "No trained version yet." })])])
    );
  }

  async function rollback(model, version) {
    try {
      const body = await postJson("/ui/api/rollback", { model_name: model, version: version });
      setStatus("versions-status", body.modelName + " now serves " + body.version + ".", false);
      await Promise.all([loadVersions(), loadConfiguration()]);
    } catch (error) {
      setStatus("versions-status", String(error.message || error), true);
    }
  }

  // ------------------------------------------------------------------------------------------------ configuration
  function drawModels() {
    const tbody = document.querySelector("#models-table tbody");
    tbody.replaceChildren(...state.models.map((m) => el("tr", {}, [
      el("td", {}, [el("label", { className: "switch" }, [
        el("input", {
          type: "checkbox",
          name: "enabled-" + m.name,
          "data-model": m.name,
          checked: !m.disabled,
          disabled: m.name === "dummy",
        }),
        el("span", { text: m.name === "dummy" ? "always" : "" }),
      ])]),
      el("td", { text: m.title + " (" + m.name + ")" }),
      el("td", { text: m.description, className: "muted" }),
      el("td", { text: m.canBeTrained ? (m.isTrained ? "yes" : "no") : "no training needed" }),
      el("td", { text: m.canBeTrained ? (m.isReadyForTraining ? "yes" : "not enough data") : "–" }),
    ])));
  }

  function cascadeEntries(spec) {
    const configured = state.config[spec.key] || [];
    const included = configured.filter((name) => spec.models.includes(name));
    const excluded = spec.models.filter((name) => !included.includes(name));
    return included.map((name) => ({ name: name, on: true })).concat(excluded.map((name) => ({ name: name, on: false })));
  }

  function drawCascade(spec) {
    const entries = state.cascades[spec.key];
    const list = el("ol", { className: "cascade", "data-cascade": spec.key });
    entries.forEach((entry, index) => {
      const move = (delta) => {
        const target = index + delta;
        if (target < 0 || target >= entries.length) return;
        [entries[index], entries[target]] = [entries[target], entries[index]];
        drawCascade(spec);
      };
      list.append(el("li", { className: entry.on ? "" : "off" }, [
        el("label", {}, [
          el("input", {
            type: "checkbox",
            checked: entry.on,
            "data-model": entry.name,
            onchange: (event) => { entry.on = event.target.checked; drawCascade(spec); },
          }),
          " " + entry.name,
        ]),
        el("button", { type: "button", className: "small", text: "↑", title: "earlier", onclick: () => move(-1) }),
        el("button", { type: "button", className: "small", text: "↓", title: "later", onclick: () => move(1) }),
      ]));
    });
    const box = document.getElementById("cascade-" + spec.key);
    box.replaceChildren(el("h4", { text: spec.title }), list);
  }

  async function loadConfiguration() {
    const body = await api("/dashboard/configuration");
    state.config = body.config;
    state.models = body.models;
    document.getElementById("retrieval-size").value = body.config.retrievalSize;
    document.getElementById("ordering-size").value = body.config.orderingSize;
    drawModels();
    const holder = document.getElementById("cascades");
    holder.replaceChildren(...context.cascades.map((spec) => el("div", { id: "cascade-" + spec.key, className: "cascade-box" })));
    context.cascades.forEach((spec) => {
      state.cascades[spec.key] = cascadeEntries(spec);
      drawCascade(spec);
    });
  }

  async function saveConfiguration(event) {
    event.preventDefault();
    const body = Object.assign({}, state.config, { _model_class: "Config" });
    body.retrievalSize = Number(document.getElementById("retrieval-size").value);
    body.orderingSize = Number(document.getElementById("ordering-size").value);
    const disabled = {};
    document.querySelectorAll("#models-table input[data-model]").forEach((input) => {
      if (input.dataset.model !== "dummy") disabled[input.dataset.model] = !input.checked;
    });
    body.models_disabled = disabled;
    context.cascades.forEach((spec) => {
      body[spec.key] = state.cascades[spec.key].filter((entry) => entry.on).map((entry) => entry.name);
    });
    try {
      await postJson("/store_object", body);
      setStatus("config-status", "Saved. Predictions use it within seconds.", false);
      await loadConfiguration();
    } catch (error) {
      setStatus("config-status", String(error.message || error), true);
    }
  }

  // ------------------------------------------------------------------------------------------------ start
  async function loadAll() {
    const results = await Promise.allSettled([loadPerformance(), loadTraining(), loadVersions(), loadConfiguration()]);
    results.filter((r) => r.status === "rejected").forEach((r) => fail(r.reason));
    if (results.every((r) => r.status === "fulfilled")) setStatus("global-status", "", false);
    state.loaded += 1;
  }

  document.addEventListener("DOMContentLoaded", () => {
    initWindow();
    document.getElementById("window-form").addEventListener("submit", (event) => {
      event.preventDefault();
      Promise.all([loadPerformance(), loadTraining()]).catch(fail);
    });
    document.getElementById("schedule-form").addEventListener("submit", scheduleTraining);
    document.getElementById("config-form").addEventListener("submit", saveConfiguration);
    loadAll();
  });
})();
