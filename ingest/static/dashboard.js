// The operations dashboard: the operator token in an Authorization header
// (kept in this tab's sessionStorage), the figures from a server-sent event
// stream read with fetch (EventSource cannot send headers), reconnecting
// with backoff.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var token = sessionStorage.getItem("fc-op-token") || "";
  var eventId = new URLSearchParams(location.search).get("event") || "";
  var controller = null, backoff = 1000;

  function headers() { return { "Authorization": "Bearer " + token, "Accept": "text/event-stream" }; }

  function rows(id, list) {
    var body = $(id).querySelector("tbody");
    body.innerHTML = "";
    list.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (c, i) {
        var td = document.createElement("td");
        td.textContent = c;
        if (i === 0) td.setAttribute("data-key", String(c));
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function render(s) {
    $("d-event").textContent = s.event_id;
    $("d-status").textContent = s.status;
    $("d-status").setAttribute("data-status", s.status);
    $("d-stock").textContent = s.stock_remaining;
    $("d-forsale").textContent = s.for_sale;
    $("d-decided").textContent = s.decisions_made;
    $("d-line").textContent = s.line.waiting;
    $("d-prequeue").textContent = s.line.pre_queue;
    $("d-passed").textContent = s.line.passed;
    $("d-sent").textContent = s.dispatch.sent;
    $("d-failed").textContent = s.dispatch.failed;
    rows("t-answers", Object.keys(s.answers).map(function (k) {
      return [k, (s.answers_per_sec[k] || 0).toFixed(1), s.answers[k]];
    }));
    rows("t-decisions", Object.keys(s.decisions).map(function (k) { return [k, s.decisions[k]]; }));
    rows("t-entries", Object.keys(s.entries).map(function (k) { return [k, s.entries[k]]; }));
    rows("t-dispatch", ["sent", "failed", "unknown", "retrying", "awaiting", "parked"].map(function (k) { return [k, s.dispatch[k]]; }));
    rows("t-dlq", Object.keys(s.dead_letters).map(function (k) { return [k, s.dead_letters[k]]; }));
    rows("t-lag", s.lag.map(function (l) { return [l.group, l.topic, l.partition, l.committed === null ? "–" : l.committed, l.end, l.lag]; }));
    $("d-errors").textContent = s.errors.join("; ");
    document.body.setAttribute("data-updated", String(s.at_ms));
  }

  function live(on, text) { $("live").textContent = text; $("live").className = on ? "live on" : "live"; }

  function connect() {
    if (controller) controller.abort();
    controller = new AbortController();
    live(false, "connecting…");
    fetch("/ops/api/events/" + encodeURIComponent(eventId) + "/stream", { headers: headers(), signal: controller.signal, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { showLogin("The operator token was refused."); return; }
        if (r.status === 404) { showLogin("No such event."); return; }
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        $("login").hidden = true; $("board").hidden = false;
        live(true, "live");
        backoff = 1000;
        var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) throw new Error("stream ended");
            buffer += decoder.decode(chunk.value, { stream: true });
            var at;
            while ((at = buffer.indexOf("\n\n")) >= 0) {
              var block = buffer.slice(0, at); buffer = buffer.slice(at + 2);
              var name = "message", data = [];
              block.split("\n").forEach(function (line) {
                if (line.indexOf("event:") === 0) name = line.slice(6).trim();
                else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
              });
              if (name === "snapshot" && data.length) render(JSON.parse(data.join("\n")));
            }
            return pump();
          });
        }
        return pump();
      })
      .catch(function (e) {
        if (e && e.name === "AbortError") return;
        live(false, "reconnecting in " + Math.round(backoff / 1000) + " s");
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, 15000);
      });
  }

  function showLogin(message) {
    live(false, "offline");
    $("login").hidden = false; $("board").hidden = true;
    $("login-error").textContent = message || "";
    $("op-token").focus();
  }

  function loadEvents() {
    fetch("/ops/api/events", { headers: headers() }).then(function (r) { return r.ok ? r.json() : { events: [] }; })
      .then(function (j) {
        var list = $("op-events"); list.innerHTML = "";
        j.events.forEach(function (e) { var o = document.createElement("option"); o.value = e.event_id; o.label = e.name + " (" + e.status + ")"; list.appendChild(o); });
      }, function () {});
  }

  $("login-form").addEventListener("submit", function (e) {
    e.preventDefault();
    token = $("op-token").value.trim();
    eventId = $("op-event").value.trim();
    sessionStorage.setItem("fc-op-token", token);
    history.replaceState(null, "", location.pathname + "?event=" + encodeURIComponent(eventId));
    connect();
  });
  $("op-token").addEventListener("change", function () { token = $("op-token").value.trim(); loadEvents(); });
  $("close-event").addEventListener("click", function () {
    if (!window.confirm("Close event " + eventId + " now? Members will be refused from then on.")) return;
    fetch("/ops/api/events/" + encodeURIComponent(eventId) + "/close", { method: "POST", headers: headers() })
      .then(function (r) { return r.json().catch(function () { return {}; }).then(function (body) {
        $("close-result").textContent = r.ok ? "Closed." : (body.message || "Not closed (HTTP " + r.status + ").");
      }); });
  });

  $("op-event").value = eventId;
  if (token && eventId) { $("op-token").value = token; connect(); } else { showLogin(""); }
})();
