// The survey page: sign in with a member token, count down to the opening on
// the server's clock, answer, submit, then follow the entry live
// (pending -> won | lost -> sent | failed) by polling with backoff.
// Plain JS, no build step; every refusal of the API has its own message.
(function () {
  "use strict";

  var T = {
    en: {
      title: "Survey & coffee gift", signin: "Sign in", token_label: "Member token", event_label: "Event",
      signin_button: "Sign in", event: "Event", questions: "Questions", submit: "Submit", signout: "Sign out",
      status: "Status", step_pending: "Received", step_decided: "Won or not", step_dispatched: "Gift sent",
      lang: "한국어",
      q_satisfaction: "How satisfied are you with the product? (1–5)", q_recommend: "Would you recommend it? (yes/no)",
      q_q1: "Question 1", q_q2: "Question 2",
      upcoming: "Not open yet. Opens in", open: "Open now — answer and submit.", sold_out: "All gifts are gone.",
      closed: "The event has ended.", loading: "Loading the event…", unknown_event: "No such event.",
      sending: "Sending your answers…",
      pending: "Received. Waiting for the draw…", won: "You won a coffee gift! Sending it…",
      lost: "Sorry — all gifts were taken before your entry.", sent: "Your gift was sent by SMS.",
      failed: "We could not send your gift. Its unit went back to the next in line.",
      too_early: "Not open yet. We will try again at the opening.",
      pre_queue: "You are in the pre-queue ({waiting} waiting). Your place in line is {how} at the opening.",
      drawn: "drawn at random", kept: "kept in arrival order",
      waiting: "You are in line: position {position} ({waiting} waiting). Retrying in {secs} s.",
      already_entered: "You have already entered. Your entry:",
      not_eligible: "This event is for members who bought the product.",
      overloaded: "Very busy right now — retrying in {secs} s.", rate_limited: "Too many tries — retrying in {secs} s.",
      entry_in_progress: "Your entry is being recorded — retrying in {secs} s.",
      unauthorized: "Your token was refused. Sign in again.", invalid: "Please check your answers: {field}.",
      required: "Please answer every question.", network: "No connection — retrying in {secs} s.",
      entry_id: "Entry id", error: "Something went wrong ({code}).",
      place: "You are #{ticket} in line; {for_sale} gifts."
    },
    ko: {
      title: "설문 참여 & 커피 쿠폰", signin: "로그인", token_label: "회원 토큰", event_label: "이벤트",
      signin_button: "로그인", event: "이벤트", questions: "설문", submit: "제출", signout: "로그아웃",
      status: "상태", step_pending: "접수", step_decided: "당첨 여부", step_dispatched: "쿠폰 발송",
      lang: "English",
      q_satisfaction: "제품에 얼마나 만족하시나요? (1–5)", q_recommend: "다른 분께 추천하시겠어요? (예/아니오)",
      q_q1: "질문 1", q_q2: "질문 2",
      upcoming: "아직 시작 전입니다. 시작까지", open: "진행 중 — 설문에 답하고 제출하세요.", sold_out: "준비된 쿠폰이 모두 소진되었습니다.",
      closed: "이벤트가 종료되었습니다.", loading: "이벤트 정보를 불러오는 중…", unknown_event: "없는 이벤트입니다.",
      sending: "답변을 보내는 중…",
      pending: "접수되었습니다. 당첨 결과를 기다리는 중…", won: "커피 쿠폰에 당첨되었습니다! 발송 중…",
      lost: "아쉽게도 참여 전에 쿠폰이 모두 소진되었습니다.", sent: "쿠폰이 문자로 발송되었습니다.",
      failed: "쿠폰을 보내지 못했습니다. 해당 쿠폰은 다음 순서의 참여자에게 돌아갑니다.",
      too_early: "아직 시작 전입니다. 시작 시각에 다시 시도합니다.",
      pre_queue: "사전 대기열에 있습니다 ({waiting}명 대기). 순서는 시작 시각에 {how} 정해집니다.",
      drawn: "무작위로", kept: "도착 순서대로",
      waiting: "대기 중: {position}번째 ({waiting}명 대기). {secs}초 후 다시 시도합니다.",
      already_entered: "이미 참여하셨습니다. 참여 내역:",
      not_eligible: "이 이벤트는 해당 제품을 구매한 회원만 참여할 수 있습니다.",
      overloaded: "접속이 많습니다 — {secs}초 후 다시 시도합니다.", rate_limited: "요청이 너무 많습니다 — {secs}초 후 다시 시도합니다.",
      entry_in_progress: "참여를 처리하는 중입니다 — {secs}초 후 다시 시도합니다.",
      unauthorized: "토큰이 거부되었습니다. 다시 로그인하세요.", invalid: "답변을 확인해 주세요: {field}.",
      required: "모든 질문에 답해 주세요.", network: "연결이 끊겼습니다 — {secs}초 후 다시 시도합니다.",
      entry_id: "참여 번호", error: "오류가 발생했습니다 ({code}).",
      place: "대기 순번 {ticket}번 / 쿠폰 {for_sale}개"
    }
  };

  var $ = function (id) { return document.getElementById(id); };
  var lang = localStorage.getItem("fc-lang") || document.documentElement.lang || "en";
  if (!T[lang]) lang = "en";
  var state = { token: sessionStorage.getItem("fc-token") || "", eventId: "", event: null, offset: 0,
                timer: null, retry: null, poll: null, entryId: null, last: null };

  function t(key, vars) {
    var s = (T[lang][key] !== undefined ? T[lang][key] : T.en[key]) || key;
    if (vars) Object.keys(vars).forEach(function (k) { s = s.split("{" + k + "}").join(String(vars[k])); });
    return s;
  }

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach(function (el) { el.textContent = t(el.getAttribute("data-i18n")); });
    $("lang-toggle").textContent = t("lang");
    if (state.event) { renderQuestions(true); renderEventState(); }
    if (state.last) show.apply(null, state.last);
  }

  // The one status line (aria-live): a state for styling and tests, a message.
  function show(kind, code, key, vars, extra) {
    state.last = [kind, code, key, vars, extra];
    var el = $("status");
    el.setAttribute("data-state", kind);
    el.setAttribute("data-code", code || "");
    el.textContent = t(key, vars) + (extra ? " " + extra : "");
  }

  function steps(status) {
    var ol = $("steps");
    ol.hidden = false;
    var order = { pending: 1, won: 2, lost: 2, sent: 3, failed: 3 };
    var n = order[status] || 0;
    ol.querySelectorAll("li").forEach(function (li, i) {
      li.className = i < n ? ((status === "lost" && i === 1) || (status === "failed" && i === 2) ? "bad" : "done") : "";
    });
  }

  function serverNow() { return Date.now() + state.offset; }

  function fmt(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    var two = function (x) { return (x < 10 ? "0" : "") + x; };
    return (h ? h + ":" + two(m) : String(m)) + ":" + two(sec);
  }

  function api(method, path, body) {
    var headers = { "Accept": "application/json" };
    if (state.token) headers["Authorization"] = "Bearer " + state.token;
    if (body) headers["Content-Type"] = "application/json";
    return fetch(path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined, cache: "no-store" })
      .then(function (r) {
        return r.text().then(function (text) {
          var json = {};
          try { json = text ? JSON.parse(text) : {}; } catch (e) { json = {}; }
          var ra = parseInt(r.headers.get("Retry-After") || "", 10);
          return { status: r.status, body: json, retryAfter: isNaN(ra) ? null : ra };
        });
      });
  }

  function loadEvent() {
    show("idle", "", "loading");
    var sent = Date.now();
    return api("GET", "/api/events/" + encodeURIComponent(state.eventId)).then(function (r) {
      if (r.status === 404) { show("refused", "not_found", "unknown_event"); return; }
      if (r.status !== 200) { show("refused", r.body.error, "error", { code: r.status }); return; }
      var arrived = Date.now();
      // The server's clock, corrected by half the round trip.
      state.offset = r.body.server_time_ms - Math.round((sent + arrived) / 2);
      // Reloaded at the opening: keep what the member typed (a queued retry sends it).
      var reload = !!state.event;
      state.event = r.body;
      $("event-name").textContent = state.eventId;
      renderQuestions(reload);
      renderEventState();
      if (!state.entryId) show("idle", "", r.body.status === "open" ? "open" : r.body.status === "upcoming" ? "upcoming" : r.body.status);
      tick();
    });
  }

  function renderQuestions(keep) {
    var box = $("questions");
    var old = {};
    if (keep) box.querySelectorAll("input").forEach(function (i) { old[i.name] = i.value; });
    box.innerHTML = "";
    (state.event.questions || []).forEach(function (q, i) {
      var id = "q-" + i;
      var label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = T[lang]["q_" + q] || T.en["q_" + q] || q;
      var input = document.createElement("input");
      input.id = id; input.name = q; input.required = true; input.maxLength = 500; input.autocomplete = "off";
      if (old[q]) input.value = old[q];
      box.appendChild(label); box.appendChild(input);
    });
  }

  function renderEventState() {
    var ev = state.event;
    var now = serverNow();
    var st = ev.status;
    if (st === "upcoming" && now >= ev.open_at_ms) st = "open";
    if (now >= ev.close_at_ms) st = "closed";
    $("event-state").textContent = st === "upcoming" ? t("upcoming") : t(st);
    $("event-state").setAttribute("data-status", st);
    $("countdown").textContent = st === "upcoming" ? fmt(ev.open_at_ms - now) : "";
    $("countdown").hidden = st !== "upcoming";
    return st;
  }

  function tick() {
    clearInterval(state.timer);
    state.timer = setInterval(function () {
      if (!state.event) return;
      var before = $("event-state").getAttribute("data-status");
      var st = renderEventState();
      // At the opening instant: ask the server again (status, questions).
      if (before === "upcoming" && st === "open") loadEvent();
    }, 250);
  }

  function answers() {
    var out = {}, missing = false;
    $("questions").querySelectorAll("input").forEach(function (i) {
      var v = i.value.trim();
      if (!v) { missing = true; i.setAttribute("aria-invalid", "true"); } else { i.removeAttribute("aria-invalid"); }
      out[i.name] = v;
    });
    return missing ? null : out;
  }

  function retryIn(secs, fn) {
    clearTimeout(state.retry);
    // A little jitter, so a crowd told the same Retry-After does not come back at once.
    state.retry = setTimeout(fn, secs * 1000 + Math.floor(Math.random() * 300));
  }

  function submit() {
    var body = answers();
    if (!body) { show("refused", "required", "required"); return; }
    $("submit").disabled = true;
    show("pending", "sending", "sending");
    api("POST", "/api/events/" + encodeURIComponent(state.eventId) + "/entries", { answers: body, client: { channel: "web" } })
      .then(onAnswer, function () { show("waiting", "network", "network", { secs: 3 }); retryIn(3, submit); });
  }

  function onAnswer(r) {
    var b = r.body, code = b.error, secs = Math.max(1, r.retryAfter || 1);
    if (r.status === 202) { track(b.entry_id); return; }
    if (r.status === 425) {
      if (b.line) show("waiting", "pre_queue", "pre_queue", { waiting: b.line.waiting, how: t(b.line.order === "fifo" ? "kept" : "drawn") });
      else show("waiting", "too_early", "too_early");
      retryIn(secs, submit); return;
    }
    if (r.status === 429 && code === "waiting") {
      show("waiting", "waiting", "waiting", { position: b.line.position, waiting: b.line.waiting, secs: secs });
      retryIn(secs, submit); return;
    }
    if (r.status === 429 || r.status === 503 || (r.status === 409 && code === "entry_in_progress")) {
      var key = code === "entry_in_progress" ? "entry_in_progress" : r.status === 429 ? "rate_limited" : "overloaded";
      show("waiting", code || "overloaded", key, { secs: secs });
      retryIn(secs, submit); return;
    }
    $("submit").disabled = false;
    if (r.status === 409 && code === "already_entered") {
      show("refused", "already_entered", "already_entered");
      if (b.entry_id) track(b.entry_id, "already_entered");
      return;
    }
    if (r.status === 410) { $("submit").disabled = true; show("refused", code, code === "sold_out" ? "sold_out" : "closed"); return; }
    if (r.status === 403) { $("submit").disabled = true; show("refused", "not_eligible", "not_eligible"); return; }
    if (r.status === 401) { show("refused", "unauthorized", "unauthorized"); signOut(true); return; }
    if (r.status === 422) { show("refused", "invalid", "invalid", { field: b.field || "" }); return; }
    show("refused", code || String(r.status), "error", { code: code || r.status });
  }

  // The entry's status, live: polled with backoff until it cannot change.
  function track(entryId, via) {
    state.entryId = entryId;
    $("submit").disabled = true;
    $("entry").textContent = t("entry_id") + ": " + entryId;
    var delay = 500;
    var prefix = via === "already_entered" ? t("already_entered") + " " : "";
    function poll() {
      api("GET", "/api/entries/" + encodeURIComponent(entryId)).then(function (r) {
        if (r.status === 200) {
          var s = r.body.status;
          steps(s);
          state.last = null;
          var el = $("status");
          el.setAttribute("data-state", s);
          el.setAttribute("data-code", via || "accepted");
          // The place in line, from the 202 on: never "won" before the stock stage decided.
          var place = r.body.ticket ? " " + t("place", { ticket: r.body.ticket, for_sale: r.body.for_sale }) : "";
          el.textContent = prefix + t(s) + place;
          if (s === "sent" || s === "failed" || s === "lost") return;
        } else if (r.status === 401) { show("refused", "unauthorized", "unauthorized"); return; }
        delay = Math.min(delay * 1.5, 8000);
        state.poll = setTimeout(poll, delay);
      }, function () { delay = Math.min(delay * 2, 8000); state.poll = setTimeout(poll, delay); });
    }
    poll();
  }

  function signOut(keepStatus) {
    sessionStorage.removeItem("fc-token");
    state.token = ""; state.event = null; state.entryId = null;
    clearInterval(state.timer); clearTimeout(state.retry); clearTimeout(state.poll);
    $("event").hidden = true; $("signin").hidden = false; $("steps").hidden = true; $("entry").textContent = "";
    if (!keepStatus) { state.last = null; $("status").textContent = ""; $("status").setAttribute("data-state", "idle"); }
    $("token").focus();
  }

  function start() {
    $("signin").hidden = true; $("event").hidden = false;
    $("submit").disabled = false;
    var url = new URL(location.href);
    url.searchParams.set("event", state.eventId);
    history.replaceState(null, "", url.toString());
    loadEvent().then(function () { var first = $("questions").querySelector("input"); if (first) first.focus(); });
  }

  $("lang-toggle").addEventListener("click", function () {
    lang = lang === "ko" ? "en" : "ko";
    localStorage.setItem("fc-lang", lang);
    applyLang();
  });
  $("signin-form").addEventListener("submit", function (e) {
    e.preventDefault();
    state.token = $("token").value.trim();
    state.eventId = $("event-id").value.trim();
    if (!state.token || !state.eventId) return;
    sessionStorage.setItem("fc-token", state.token);
    start();
  });
  $("survey").addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  $("signout").addEventListener("click", function () { signOut(false); });

  var params = new URLSearchParams(location.search);
  $("event-id").value = params.get("event") || "";
  applyLang();
  if (state.token && $("event-id").value) { sessionStorage.setItem("fc-token", state.token); state.eventId = $("event-id").value; start(); }
})();
