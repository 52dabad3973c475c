// cubeqa dashboard: draws the charts the server computed (plotly.js) and keeps a running batch's page live
// by polling its progress (every second) and charts (every 5 s) until every job is final.
(function () {
  "use strict";
  var PLOT_CONFIG = { displayModeBar: false, responsive: true };

  function chartPoints(spec) {
    return spec.data.reduce(function (n, trace) { return n + trace.y.length; }, 0);
  }

  function draw(charts) {
    if (typeof Plotly === "undefined") { return; }
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var spec = charts[el.dataset.chart];
      if (!spec) {
        if (el.data) { Plotly.purge(el); }
        el.textContent = "No data yet.";
        el.classList.add("empty");
        el.dataset.points = "0";
        return;
      }
      if (el.classList.contains("empty")) { el.textContent = ""; el.classList.remove("empty"); }
      Plotly.react(el, spec.data, spec.layout, PLOT_CONFIG);
      el.dataset.points = String(chartPoints(spec));
    });
  }

  function percent(part, whole) { return whole ? (100 * part / whole) + "%" : "0%"; }
  function fixed(value, digits) { return value === null || value === undefined ? "–" : value.toFixed(digits); }

  function showProgress(root, p) {
    var set = function (field, value) {
      root.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) { el.textContent = value; });
    };
    set("final", p.final);
    set("done", p.counts.done);
    set("failed", p.counts.failed);
    set("queued", p.counts.queued);
    set("running", p.counts.running);
    set("paused", p.counts.paused);
    set("cancelled", p.counts.cancelled);
    set("pending", p.counts.queued + " / " + p.counts.running + " / " + p.counts.paused);
    Object.keys(p.quality_texts || {}).forEach(function (key) { set("q-" + key, p.quality_texts[key]); });
    set("rate", fixed(p.jobs_per_second, 1));
    if (p.finished_at) { set("finished", p.finished_at.replace("T", " ").slice(0, 19) + " UTC"); }
    root.querySelectorAll(".bar").forEach(function (bar) {
      if (!bar.querySelector(".ok")) { return; }
      bar.setAttribute("aria-valuenow", p.final);
      bar.querySelector(".ok").style.width = percent(p.counts.done, p.total);
      bar.querySelector(".bad").style.width = percent(p.counts.failed, p.total);
    });
  }

  function fetchJson(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok) { throw new Error(url + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function refreshCharts(batchId) {
    return fetchJson("/dashboard/batches/" + batchId + "/charts.json").then(function (view) {
      draw(view.charts);
      // The numbers beside the charts, formatted by the server: [data-text="KEY"] shows view.texts[KEY].
      Object.keys(view.texts).forEach(function (key) {
        document.querySelectorAll('[data-text="' + key + '"]').forEach(function (el) { el.textContent = view.texts[key]; });
      });
    });
  }

  // Re-renders the job table (same filters and page) from the server's page, so statuses move live too.
  function refreshJobs() {
    return fetch(location.href, { credentials: "same-origin", cache: "no-store" }).then(function (r) { return r.text(); }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("jobs-section");
      var current = document.getElementById("jobs-section");
      if (fresh && current && !current.contains(document.activeElement)) { current.replaceWith(fresh); }
    });
  }

  // Polls one batch until it is final; `root` holds its [data-field] elements and progress bar.
  function follow(source, withCharts, root) {
    var batchId = source.dataset.batch;
    root = root || source;
    var ticks = 0;
    var timer = setInterval(function () {
      ticks += 1;
      fetchJson("/dashboard/batches/" + batchId + "/progress.json").then(function (p) {
        showProgress(root, p);
        var done = !p.running;
        if (withCharts && (done || ticks % 5 === 0)) { refreshCharts(batchId); refreshJobs(); }
        if (done) { clearInterval(timer); source.removeAttribute("data-live"); }
      }).catch(function (err) { console.warn(String(err)); });
    }, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var data = document.getElementById("charts-data");
    if (data) { draw(JSON.parse(data.textContent)); }
    var progress = document.getElementById("progress");
    // The whole page is the root: the header's finish time is outside the progress card.
    if (progress && progress.dataset.live) { follow(progress, true, document); }
    document.querySelectorAll("#batches tr[data-live]").forEach(function (row) { follow(row, false); });
  });
})();
