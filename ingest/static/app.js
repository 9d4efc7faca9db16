// The survey page. Before sign-in it shows the event: its name and gift, the
// units left and the countdown to the opening on the server's clock. The
// member's token comes from the shop's login, never typed: in the URL
// fragment (`#token=…`, which never reaches a server) or posted by the host
// app into the page (`{type: "firstcome:token", token}`, same origin only).
// Then the questions as controls (a 1–5 scale, yes/no), submit, and the entry
// followed live (pending -> won | lost -> sent | failed | refused) with the member's
// place in line and the signed receipt of the 202.
// Plain JS, no build step; every refusal of the API has its own message.
(function () {
  "use strict";

  var T = {
    en: {
      skip: "Skip to the event", brand: "Survey reward", kicker: "First come, first served", gift: "Gift",
      units_left: "Gifts left", opens: "Opens", signin: "Sign in to take part",
      signin_help: "Open this page from the shop's app or website after signing in there: you arrive here signed in.",
      questions: "Your answers", submit: "Submit", signout: "Sign out", status: "Your entry",
      step_pending: "Received", step_decided: "Won or not", step_dispatched: "Gift sent",
      lang: "한국어", signed_in_as: "Signed in as member {member}.",
      receipt: "Your receipt", receipt_save: "Save the receipt",
      receipt_help: "Signed by the event's operator: it proves your entry was accepted and its place in line. Keep it if your gift does not arrive.",
      q_satisfaction: "How satisfied are you with the product?", q_satisfaction_hint: "1 = not at all, 5 = very",
      q_recommend: "Would you recommend it to a friend?", yes: "Yes", no: "No",
      upcoming: "Not open yet. Opens in", upcoming_status: "Not open yet: answer now, and submit at the opening.", open: "Open now — answer and submit.", sold_out: "All gifts are gone.",
      closed: "The event has ended.", loading: "Loading the event…", unknown_event: "No such event.",
      no_event: "No event in the link: open the page from the shop's event banner.",
      sending: "Sending your answers…",
      pending: "Received. Waiting for the draw…", won: "You won a coffee gift! Sending it…",
      lost: "Sorry — all gifts were taken before your entry.", sent: "Your gift was sent by SMS.",
      failed: "We could not send your gift. Its unit went back to the next in line.",
      refused: "We are sorry: your win could not be paid, the gifts ran out. This is our error, not yours; keep your receipt.",
      too_early: "Not open yet. We will try again at the opening.",
      pre_queue: "You are in the pre-queue ({waiting} waiting). Your place in line is {how} at the opening.",
      drawn: "drawn at random", kept: "kept in arrival order",
      waiting: "You are in line: position {position} ({waiting} waiting). Retrying in {secs} s.",
      already_entered: "You have already entered. Your entry:",
      not_eligible: "This event is for members who bought the product.",
      overloaded: "Very busy right now — retrying in {secs} s.", rate_limited: "Too many tries — retrying in {secs} s.",
      entry_in_progress: "Your entry is being recorded — retrying in {secs} s.",
      unauthorized: "Your sign-in has expired. Sign in at the shop again.", invalid: "Please check your answers: {field}.",
      required: "Please answer every question.", network: "No connection — retrying in {secs} s.",
      entry_id: "Entry id", error: "Something went wrong ({code}).",
      place: "You are #{ticket} in line; {for_sale} gifts."
    },
    ko: {
      skip: "이벤트로 건너뛰기", brand: "설문 참여 보상", kicker: "선착순", gift: "경품",
      units_left: "남은 쿠폰", opens: "시작", signin: "참여하려면 로그인하세요",
      signin_help: "쇼핑몰 앱이나 웹사이트에서 로그인한 뒤 이 페이지를 열면 로그인된 상태로 이동합니다.",
      questions: "설문 답변", submit: "제출", signout: "로그아웃", status: "참여 현황",
      step_pending: "접수", step_decided: "당첨 여부", step_dispatched: "쿠폰 발송",
      lang: "English", signed_in_as: "회원 {member}(으)로 로그인했습니다.",
      receipt: "참여 영수증", receipt_save: "영수증 저장",
      receipt_help: "이벤트 운영자가 서명한 영수증으로, 참여가 접수되었고 몇 번째인지 증명합니다. 쿠폰을 받지 못하면 보관해 두세요.",
      q_satisfaction: "제품에 얼마나 만족하시나요?", q_satisfaction_hint: "1 = 전혀 아니다, 5 = 매우 그렇다",
      q_recommend: "친구에게 추천하시겠어요?", yes: "예", no: "아니오",
      upcoming: "아직 시작 전입니다. 시작까지", upcoming_status: "아직 시작 전입니다. 미리 답하고 시작 시각에 제출하세요.", open: "진행 중 — 설문에 답하고 제출하세요.", sold_out: "준비된 쿠폰이 모두 소진되었습니다.",
      closed: "이벤트가 종료되었습니다.", loading: "이벤트 정보를 불러오는 중…", unknown_event: "없는 이벤트입니다.",
      no_event: "링크에 이벤트가 없습니다. 쇼핑몰의 이벤트 배너에서 페이지를 여세요.",
      sending: "답변을 보내는 중…",
      pending: "접수되었습니다. 당첨 결과를 기다리는 중…", won: "커피 쿠폰에 당첨되었습니다! 발송 중…",
      lost: "아쉽게도 참여 전에 쿠폰이 모두 소진되었습니다.", sent: "쿠폰이 문자로 발송되었습니다.",
      failed: "쿠폰을 보내지 못했습니다. 해당 쿠폰은 다음 순서의 참여자에게 돌아갑니다.",
      refused: "죄송합니다. 쿠폰이 모두 소진되어 당첨 쿠폰을 지급하지 못했습니다. 저희의 오류입니다. 영수증을 보관해 주세요.",
      too_early: "아직 시작 전입니다. 시작 시각에 다시 시도합니다.",
      pre_queue: "사전 대기열에 있습니다 ({waiting}명 대기). 순서는 시작 시각에 {how} 정해집니다.",
      drawn: "무작위로", kept: "도착 순서대로",
      waiting: "대기 중: {position}번째 ({waiting}명 대기). {secs}초 후 다시 시도합니다.",
      already_entered: "이미 참여하셨습니다. 참여 내역:",
      not_eligible: "이 이벤트는 해당 제품을 구매한 회원만 참여할 수 있습니다.",
      overloaded: "접속이 많습니다 — {secs}초 후 다시 시도합니다.", rate_limited: "요청이 너무 많습니다 — {secs}초 후 다시 시도합니다.",
      entry_in_progress: "참여를 처리하는 중입니다 — {secs}초 후 다시 시도합니다.",
      unauthorized: "로그인이 만료되었습니다. 쇼핑몰에서 다시 로그인하세요.", invalid: "답변을 확인해 주세요: {field}.",
      required: "모든 질문에 답해 주세요.", network: "연결이 끊겼습니다 — {secs}초 후 다시 시도합니다.",
      entry_id: "참여 번호", error: "오류가 발생했습니다 ({code}).",
      place: "대기 순번 {ticket}번 / 쿠폰 {for_sale}개"
    }
  };

  // How each known question is asked; any other question id gets a text field.
  var KINDS = {
    satisfaction: { values: ["1", "2", "3", "4", "5"], hint: "q_satisfaction_hint" },
    recommend: { values: ["yes", "no"], labels: { yes: "yes", no: "no" } }
  };

  var $ = function (id) { return document.getElementById(id); };
  var lang = localStorage.getItem("fc-lang") || document.documentElement.lang || "en";
  if (!T[lang]) lang = "en";
  var state = { token: sessionStorage.getItem("fc-token") || "", eventId: "", event: null, offset: 0,
                timer: null, refresh: null, retry: null, poll: null, entryId: null, last: null };

  function t(key, vars) {
    var s = (T[lang][key] !== undefined ? T[lang][key] : T.en[key]);
    if (s === undefined) s = key;
    if (vars) Object.keys(vars).forEach(function (k) { s = s.split("{" + k + "}").join(String(vars[k])); });
    return s;
  }

  function number(n) { return Number(n).toLocaleString(lang === "ko" ? "ko-KR" : "en-US"); }

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach(function (el) { el.textContent = t(el.getAttribute("data-i18n")); });
    document.querySelectorAll("[data-i18n-label]").forEach(function (el) {
      el.setAttribute("aria-label", t(el.getAttribute("data-i18n-label")));
    });
    var toggle = $("lang-toggle");
    toggle.textContent = t("lang");
    // The button is named in the language it switches to, and says so.
    toggle.setAttribute("lang", lang === "ko" ? "en" : "ko");
    if (state.event) { renderEvent(); renderQuestions(true); }
    renderWho();
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
    var order = { pending: 1, won: 2, lost: 2, sent: 3, failed: 3, refused: 3 };
    var n = order[status] || 0;
    ol.querySelectorAll("li").forEach(function (li, i) {
      li.className = i < n ? ((status === "lost" && i === 1) || ((status === "failed" || status === "refused") && i === 2) ? "bad" : "done") : "";
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

  // --- the member's token: from the shop's login, never typed ---------------

  function setToken(token) {
    token = String(token || "").trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem("fc-token", token);
    renderSignedIn();
  }

  // `#token=…` (or `#access_token=…`): read once, then removed from the
  // address bar so it is not bookmarked, shared or kept in the history.
  function tokenFromFragment() {
    var hash = location.hash.replace(/^#/, "");
    if (!hash) return;
    var params = new URLSearchParams(hash);
    var token = params.get("token") || params.get("access_token");
    if (!token) return;
    history.replaceState(null, "", location.pathname + location.search);
    setToken(token);
  }

  // A login that lands on the page already open changes only the fragment.
  window.addEventListener("hashchange", tokenFromFragment);

  // The host app (a WebView) posts the token into the page itself. Only a
  // message from this page's own origin is taken: another site's window could
  // otherwise sign the member in under someone else's account.
  window.addEventListener("message", function (e) {
    if (e.origin !== location.origin) return;
    var data = e.data;
    if (!data || data.type !== "firstcome:token" || typeof data.token !== "string") return;
    setToken(data.token);
  });

  // The member id the token names (shown, never trusted: ingest verifies it).
  function memberOf(token) {
    try {
      var part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var claims = JSON.parse(decodeURIComponent(Array.prototype.map.call(atob(part), function (c) {
        return "%" + ("00" + c.charCodeAt(0).toString(16)).slice(-2);
      }).join("")));
      return typeof claims.sub === "string" ? claims.sub : null;
    } catch (e) { return null; }
  }

  function renderWho() {
    var member = state.token ? memberOf(state.token) : null;
    $("who").textContent = member ? t("signed_in_as", { member: member }) : "";
  }

  function renderSignedIn() {
    var signedIn = !!state.token;
    $("signin").hidden = signedIn || !state.eventId;
    $("survey-section").hidden = !signedIn || !state.event;
    renderWho();
  }

  // --- the event, before and after sign-in ----------------------------------

  function loadEvent(quiet) {
    if (!quiet) show("idle", "", "loading");
    var sent = Date.now();
    return api("GET", "/api/events/" + encodeURIComponent(state.eventId)).then(function (r) {
      if (r.status === 404) { $("event-name").textContent = t("unknown_event"); show("refused", "not_found", "unknown_event"); return; }
      if (r.status !== 200) { if (!quiet) show("refused", r.body.error, "error", { code: r.status }); return; }
      var arrived = Date.now();
      // The server's clock, corrected by half the round trip.
      state.offset = r.body.server_time_ms - Math.round((sent + arrived) / 2);
      // Reloaded at the opening or by the refresh: keep what the member chose.
      var reload = !!state.event;
      var questionsChanged = !reload || JSON.stringify(state.event.questions) !== JSON.stringify(r.body.questions);
      state.event = r.body;
      renderEvent();
      if (questionsChanged) renderQuestions(reload);
      renderSignedIn();
      if (!state.entryId) {
        var st = $("event-state").getAttribute("data-status");
        var over = st === "sold_out" || st === "closed";
        var wasOver = state.last && state.last[0] === "refused" && (state.last[1] === "sold_out" || state.last[1] === "closed");
        // Ingest would answer 410: say so before the member answers anything.
        if (over) { $("submit").disabled = true; show("refused", st, st); }
        // A returned unit reopens a sold-out event.
        else if (!quiet || wasOver) { $("submit").disabled = false; show("idle", "", st === "upcoming" ? "upcoming_status" : st); }
      }
      tick();
    }, function () { if (!quiet) show("waiting", "network", "network", { secs: 3 }); });
  }

  function renderEvent() {
    var ev = state.event;
    $("event-name").textContent = ev.name || ev.event_id;
    $("gift").hidden = !ev.gift;
    $("gift-name").textContent = ev.gift || "";
    $("units-left").textContent = ev.units_left === null || ev.units_left === undefined ? "–" : number(ev.units_left);
    $("opens-at").textContent = new Date(ev.open_at_ms).toLocaleString(lang === "ko" ? "ko-KR" : "en-GB",
      { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    renderEventState();
  }

  function renderEventState() {
    var ev = state.event;
    var now = serverNow();
    var st = ev.status;
    if (st === "upcoming" && now >= ev.open_at_ms) st = "open";
    if (now >= ev.close_at_ms) st = "closed";
    $("event-state").textContent = t(st);
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
      if (before === "upcoming" && st === "open") loadEvent(true);
    }, 250);
    // The units left, every few seconds while they can change (the server
    // reads them at most once a second for everyone).
    clearInterval(state.refresh);
    state.refresh = setInterval(function () {
      if (state.event && $("event-state").getAttribute("data-status") !== "closed") loadEvent(true);
    }, 5000);
  }

  // --- the questions as controls ---------------------------------------------

  function currentAnswers() {
    var out = {};
    $("questions").querySelectorAll("input").forEach(function (i) {
      if (i.type === "radio") { if (i.checked) out[i.name] = i.value; } else if (i.value) { out[i.name] = i.value; }
    });
    return out;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function label(q) { var key = "q_" + q; return t(key) === key ? q : t(key); }

  function renderQuestions(keep) {
    var box = $("questions");
    var old = keep ? currentAnswers() : {};
    box.innerHTML = "";
    (state.event.questions || []).forEach(function (q, i) {
      var id = "q-" + i;
      var kind = KINDS[q];
      if (!kind) {
        var wrap = el("div", { "class": "text-answer" });
        wrap.appendChild(el("label", { "for": id }, label(q)));
        var input = el("input", { id: id, name: q, type: "text", maxlength: "500", autocomplete: "off", required: "" });
        if (old[q]) input.value = old[q];
        wrap.appendChild(input);
        box.appendChild(wrap);
        return;
      }
      // A radio group: the fieldset's legend names it, arrow keys move in it.
      var set = el("fieldset", { id: id, "data-question": q });
      var legend = el("legend", { id: id + "-legend" }, label(q));
      if (kind.hint) legend.appendChild(el("span", { "class": "hint" }, t(kind.hint)));
      set.appendChild(legend);
      var choices = el("div", { "class": "choices" });
      kind.values.forEach(function (v) {
        var choice = el("div", { "class": "choice" });
        var radio = el("input", { type: "radio", id: id + "-" + v, name: q, value: v, required: "" });
        if (old[q] === v) radio.checked = true;
        choice.appendChild(radio);
        choice.appendChild(el("label", { "for": id + "-" + v }, kind.labels ? t(kind.labels[v]) : v));
        choices.appendChild(choice);
      });
      set.appendChild(choices);
      box.appendChild(set);
    });
  }

  // The answers, or null with the first unanswered question marked and focused.
  function answers() {
    var given = currentAnswers(), first = null;
    (state.event.questions || []).forEach(function (q, i) {
      var node = $("q-" + i);
      var missing = !given[q] || !String(given[q]).trim();
      if (missing) { node.setAttribute("aria-invalid", "true"); if (!first) first = node; } else { node.removeAttribute("aria-invalid"); }
    });
    if (!first) { $("form-error").textContent = ""; return given; }
    $("form-error").textContent = t("required");
    var focusable = first.tagName === "FIELDSET" ? first.querySelector("input") : first;
    if (focusable) focusable.focus();
    return null;
  }

  // --- submit and follow the entry -------------------------------------------

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
    if (r.status === 202) { keepReceipt(b.entry_id, b.receipt); track(b.entry_id); return; }
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

  // The receipt of the 202, kept for the tab's life (a reload still shows it).
  function keepReceipt(entryId, receipt) {
    if (receipt) sessionStorage.setItem("fc-receipt:" + entryId, JSON.stringify(receipt));
  }

  function renderReceipt(entryId) {
    var kept = sessionStorage.getItem("fc-receipt:" + entryId);
    $("receipt-box").hidden = !kept;
    if (!kept) return;
    var pretty = JSON.stringify(JSON.parse(kept), null, 2);
    $("receipt").textContent = pretty;
    var save = $("receipt-save");
    if (save.href.indexOf("blob:") === 0) URL.revokeObjectURL(save.href);
    save.href = URL.createObjectURL(new Blob([pretty], { type: "application/json" }));
    save.setAttribute("download", "firstcome-receipt-" + entryId + ".json");
  }

  // The entry's status, live: polled with backoff until it cannot change.
  function track(entryId, via) {
    state.entryId = entryId;
    $("submit").disabled = true;
    $("entry").textContent = t("entry_id") + ": " + entryId;
    renderReceipt(entryId);
    var delay = 500;
    var prefix = via === "already_entered" ? t("already_entered") + " " : "";
    function poll() {
      api("GET", "/api/entries/" + encodeURIComponent(entryId)).then(function (r) {
        if (r.status === 200) {
          var s = r.body.status;
          steps(s);
          state.last = null;
          var status = $("status");
          status.setAttribute("data-state", s);
          status.setAttribute("data-code", via || "accepted");
          // The place in line, from the 202 on: never "won" before the stock stage decided.
          var place = r.body.ticket ? " " + t("place", { ticket: number(r.body.ticket), for_sale: number(r.body.for_sale) }) : "";
          status.textContent = prefix + t(s) + place;
          if (s === "sent" || s === "failed" || s === "refused" || s === "lost") return;
        } else if (r.status === 401) { show("refused", "unauthorized", "unauthorized"); return; }
        delay = Math.min(delay * 1.5, 8000);
        state.poll = setTimeout(poll, delay);
      }, function () { delay = Math.min(delay * 2, 8000); state.poll = setTimeout(poll, delay); });
    }
    poll();
  }

  function signOut(keepStatus) {
    sessionStorage.removeItem("fc-token");
    state.token = ""; state.entryId = null;
    clearTimeout(state.retry); clearTimeout(state.poll);
    $("steps").hidden = true; $("entry").textContent = ""; $("receipt-box").hidden = true;
    $("submit").disabled = false;
    if (!keepStatus) { state.last = null; $("status").textContent = ""; $("status").setAttribute("data-state", "idle"); }
    renderSignedIn();
    $("main").focus();
  }

  $("lang-toggle").addEventListener("click", function () {
    lang = lang === "ko" ? "en" : "ko";
    localStorage.setItem("fc-lang", lang);
    applyLang();
  });
  $("survey").addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  $("signout").addEventListener("click", function () { signOut(false); });

  state.eventId = new URLSearchParams(location.search).get("event") || "";
  tokenFromFragment();
  applyLang();
  $("event-name").textContent = t("loading");
  if (!state.eventId) { $("event-name").textContent = t("no_event"); renderSignedIn(); return; }
  renderSignedIn();
  loadEvent(false);
})();
