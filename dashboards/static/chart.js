// Live charts of one node: channels and anomaly scores, fed by server-sent events.
// Loaded only on the node page; without JavaScript the page shows tables instead.
(function () {
  "use strict";
  var MAX_POINTS = 600;
  var box = document.getElementById("chart-channels");
  var scoreBox = document.getElementById("chart-scores");
  var statusLine = document.getElementById("chart-status");
  if (!box || typeof uPlot === "undefined") { return; }
  var channels = JSON.parse(box.dataset.series || "[]");
  var palette = ["#0b5cad", "#b3261e", "#1f7a35", "#9a5b00", "#6a3fa0", "#007c89"];
  var dashes = [[], [6, 4], [2, 3], [10, 3, 2, 3]];  // not colour alone: each line its own dash
  var data = [[]].concat(channels.map(function () { return []; }));
  var scores = { t: [], gw: [], node: [] };
  var received = 0;

  function width(el) { return Math.max(280, el.clientWidth || 600); }
  function series(name, i) {
    return { label: name, stroke: palette[i % palette.length], dash: dashes[i % dashes.length], width: 2 };
  }
  // One small chart per channel: channels differ by orders of magnitude (flow ~100 l/min,
  // vibration ~0.5 mm/s), so a shared axis would flatten most of them.
  var plots = channels.map(function (name, i) {
    var holder = document.createElement("div");
    holder.className = "mini";
    box.appendChild(holder);
    return new uPlot({
      title: name, width: width(box), height: 140, series: [{}, series(name, i)],
      axes: [{}, { size: 60 }], legend: { show: false }
    }, [[], []], holder);
  });
  var plot = { setData: function (d) { plots.forEach(function (p, i) { p.setData([d[0], d[i + 1]]); }); },
               setSize: function (sz) { plots.forEach(function (p) { p.setSize({ width: sz.width, height: 140 }); }); } };
  var scorePlot = new uPlot({
    width: width(scoreBox), height: 200,
    series: [{}, series("gateway model", 0), series("node model", 1), { label: "threshold (1.0)", stroke: "#545b66", dash: [4, 4], width: 1 }],
    scales: { y: { range: function (u, lo, hi) { return [0, Math.max(1.5, hi)]; } } },
    legend: { live: false }
  }, [[], [], [], []], scoreBox);

  function trim(arrs) {
    var extra = arrs[0].length - MAX_POINTS;
    if (extra > 0) { arrs.forEach(function (a) { a.splice(0, extra); }); }
  }
  function addReadings(rows) {
    rows.forEach(function (row) {
      data[0].push(row[0] / 1000);
      channels.forEach(function (c, i) { var v = row[1][c]; data[i + 1].push(v === undefined ? null : v); });
    });
    trim(data);
    plot.setData(data);
  }
  function addScores(gw, node) {
    // One time axis for both sources: merge by time, null where a source has no point.
    var points = gw.map(function (p) { return [p[0], p[1], null]; }).concat(node.map(function (p) { return [p[0], null, p[1]]; }));
    points.sort(function (a, b) { return a[0] - b[0]; });
    points.forEach(function (p) { scores.t.push(p[0] / 1000); scores.gw.push(p[1]); scores.node.push(p[2]); });
    trim([scores.t, scores.gw, scores.node]);
    scorePlot.setData([scores.t, scores.gw, scores.node, scores.t.map(function () { return 1; })]);
  }
  function since() { return data[0].length ? Math.round(data[0][data[0].length - 1] * 1000) : 0; }

  fetch(box.dataset.initial, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (body) {
    addReadings(body.readings.map(function (r) { return [r.ts_ms, r.values]; }));
    addScores([], body.node_scores.map(function (s) { return [s.ts_ms, s.score]; }));
    var source = new EventSource(box.dataset.stream + "?since_ms=" + since());
    source.addEventListener("points", function (ev) {
      var msg = JSON.parse(ev.data);
      addReadings(msg.readings);
      addScores(msg.gateway, msg.node);
      received += msg.readings.length;
      box.dataset.updates = String((+box.dataset.updates || 0) + 1);
      statusLine.textContent = "Live: " + data[0].length + " readings shown, " + received + " new since the page opened.";
    });
    source.onerror = function () { statusLine.textContent = "Live updates paused; reconnecting…"; };
  });
  window.addEventListener("resize", function () {
    plot.setSize({ width: width(box) });
    scorePlot.setSize({ width: width(scoreBox), height: 200 });
  });
})();
