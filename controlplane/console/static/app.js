// cloudsteer console script: small helpers shared by the pages and each
// page's behaviour. Every change goes to the admin API (or the console's
// own small endpoints) with the session cookie and the CSRF token; texts
// come from the page (data-* attributes rendered from the catalogs).
"use strict";
const $ = (sel, root) => (root || document).querySelector(sel);
const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
const cs = {
  csrf: () => document.body.dataset.csrf || "",
  // poll marks the requests a page makes by itself on a timer: they do not
  // keep the session alive (its idle timeout counts the admin's own use).
  poll: { "X-Cloudsteer-Poll": "1" },
  async send(url, opts) {
    opts.headers = Object.assign({ "X-CSRF-Token": cs.csrf() }, opts.headers || {});
    opts.credentials = "same-origin";
    let res;
    try { res = await fetch(url, opts); } catch (e) {
      const err = new Error(cs.msg("network")); err.status = 0; throw err;
    }
    if (res.redirected && new URL(res.url).pathname === "/login") {
      const err = new Error(cs.msg("session")); err.status = 401; throw err;
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok || data === null) {
      const err = new Error((data && data.error) || res.statusText);
      err.status = res.status;
      err.code = data && data.code;
      throw err;
    }
    return data;
  },
  // api calls the admin API (JSON body).
  api(method, path, body) {
    const opts = { method };
    if (body !== undefined) {
      opts.headers = { "Content-Type": "application/json" };
      opts.body = JSON.stringify(body);
    }
    return cs.send("/api/v1" + path, opts);
  },
  // form posts fields to one of the console's own endpoints.
  form(path, fields) {
    return cs.send(path, { method: "POST", body: new URLSearchParams(fields) });
  },
  // msg reads a common text of the page (#cs-msg data-*).
  msg(name) { const m = $("#cs-msg"); return (m && m.dataset[name]) || ""; },
  // why turns an error into a sentence for people.
  // why turns an error into a sentence for people: the page's own text
  // for the codes it knows (data-msg-<code> on the nearest element that
  // has one, or #cs-msg), followed by the gateway's detail.
  why(err, el) {
    if (err.status === 401) return cs.msg("session");
    if (err.code === "csrf") return cs.msg("csrf");
    if (err.status >= 500 && err.code === "internal") return cs.msg("internal");
    const key = "msg" + String(err.code || "").replace(/(^|_)(\w)/g, (m, a, b) => b.toUpperCase());
    let own = "";
    for (let n = el; n && !own; n = n.parentElement) own = (n.dataset && n.dataset[key]) || "";
    own = own || cs.msg(key.slice(3).replace(/^\w/, (c) => c.toLowerCase()));
    return own ? own + " (" + err.message + ")" : err.message;
  },
  say(el, text) { if (el) el.textContent = text || ""; },
  fmt(s, v) { return s.replace(/%[sdq]/, v); },
  // times shows every <time datetime> in the browser's zone and language.
  times(root) {
    const lang = document.body.dataset.lang || "en";
    $$("time[datetime]", root).forEach((t) => {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.title = t.getAttribute("datetime"); t.textContent = d.toLocaleString(lang); }
    });
  },
  // badge asks for the new-block count and shows it in the navigation.
  async badge() {
    const link = $('nav a[href="/events"]');
    if (!link) return;
    let b;
    try { b = await cs.send("/badge", { method: "GET", headers: cs.poll }); } catch (e) { return; }
    let span = $(".badge", link);
    if (!b.count) { if (span) span.remove(); return; }
    if (!span) {
      span = document.createElement("span");
      span.className = "badge"; span.dataset.test = "badge";
      link.append(" ", span);
    }
    span.textContent = String(b.count);
    span.setAttribute("aria-label", b.label);
  },
};
window.cs = cs;

const pages = {
  bypass() {
    const err = $("#bypass-error"), ok = $("#bypass-msg"), box = $("#bypass"), force = $("#bypass-force");
    let retry = null;
    const fail = (e) => { cs.say(ok, ""); cs.say(err, cs.why(e)); };
    // A CIDR too broad is refused until forced: ask first.
    const broad = (e) => e.status === 400 && /force/i.test(e.message);
    const ask = (e, again) => {
      cs.say(err, e.message);
      cs.say($("#bypass-force-text"), box.dataset.msgForce);
      retry = again; force.hidden = false; $("#bypass-force-yes").focus();
    };
    $("#bypass-force-yes").addEventListener("click", () => { force.hidden = true; const f = retry; retry = null; if (f) f(); });
    $("#bypass-force-no").addEventListener("click", () => { force.hidden = true; retry = null; cs.say(err, ""); location.reload(); });
    const add = async (f) => {
      const value = $("#bypass-value").value.trim(), comment = $("#bypass-comment").value.trim();
      cs.say(err, "");
      try {
        await cs.api("POST", "/bypass", { value, comment, force: f });
        location.reload();
      } catch (e) { if (!f && broad(e)) ask(e, () => add(true)); else fail(e); }
    };
    $("#bypass-add").addEventListener("submit", (ev) => { ev.preventDefault(); add(false); });
    const toggle = async (t, f) => {
      const on = t.checked, v = encodeURIComponent(t.dataset.value);
      // Busy, not disabled: disabling would take the keyboard focus away.
      t.setAttribute("aria-busy", "true"); cs.say(err, "");
      try {
        await cs.api("POST", "/bypass/" + v + (on ? "/enable" : "/disable"), f ? { force: true } : undefined);
        cs.say(ok, box.dataset.msgSaved);
      } catch (e) {
        t.checked = !on;
        if (on && !f && broad(e)) ask(e, () => { t.checked = true; toggle(t, true); }); else fail(e);
      } finally { t.removeAttribute("aria-busy"); }
    };
    $$(".bypass-toggle").forEach((t) => t.addEventListener("change", () => toggle(t, false)));
    $$(".bypass-toggle").forEach((t) => t.addEventListener("click", (ev) => { if (t.getAttribute("aria-busy")) ev.preventDefault(); }));
    $$(".bypass-comment").forEach((f) => f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      cs.say(err, "");
      try {
        await cs.api("PATCH", "/bypass/" + encodeURIComponent(f.dataset.value), { comment: f.elements.comment.value.trim() });
        cs.say(ok, box.dataset.msgSaved);
      } catch (e) { fail(e); }
    }));
    $$(".bypass-remove").forEach((b) => b.addEventListener("click", async () => {
      const v = b.dataset.value;
      cs.say(err, "");
      try {
        await cs.api("DELETE", "/bypass/" + encodeURIComponent(v));
        const row = b.closest("tr"); if (row) row.remove();
        cs.say(ok, cs.fmt(box.dataset.msgRemoved, v));
        $("#bypass-value").focus();
      } catch (e) { fail(e); }
    }));
  },

  pause() {
    const err = $("#pause-error"), code = $("#pause-code");
    $$(".pause-choice").forEach((b) => b.addEventListener("click", async () => {
      cs.say(err, "");
      const body = { duration: b.dataset.duration };
      if (code) body.code = code.value.trim();
      try { await cs.api("POST", "/pause", body); location.reload(); } catch (e) { cs.say(err, cs.why(e, err)); }
    }));
    const resume = $("#pause-resume");
    if (resume) resume.addEventListener("click", async () => {
      try { await cs.api("POST", "/resume"); location.reload(); } catch (e) { cs.say(err, cs.why(e, err)); }
    });
    // The countdown runs from the server's remaining time, so the
    // browser's clock does not matter.
    const left = $("#pause-remaining");
    if (left) {
      const [h, m, s] = left.textContent.trim().split(":").map(Number);
      const end = performance.now() + ((h * 60 + m) * 60 + s) * 1000;
      const pad = (n) => String(n).padStart(2, "0");
      const tick = () => {
        const t = Math.max(0, Math.ceil((end - performance.now()) / 1000));
        left.textContent = Math.floor(t / 3600) + ":" + pad(Math.floor(t / 60) % 60) + ":" + pad(t % 60);
        if (t === 0) { clearInterval(timer); setTimeout(() => location.reload(), 1500); }
      };
      const timer = setInterval(tick, 1000);
    }
  },

  events() {
    const tz = $("#events-tz");
    if (tz) tz.value = String(new Date().getTimezoneOffset());
    const table = $("#events"), live = $("#events-live");
    const seen = (id) => { if (id) cs.form("/events/seen", { id }).catch(() => {}); };
    const clients = $("#events-clients");
    if (clients) clients.addEventListener("submit", async (ev) => {
      const f = ev.target.closest(".client-form");
      if (!f) return;
      ev.preventDefault();
      const client = f.elements.client.value, name = f.elements.name.value.trim();
      try {
        const r = await cs.form("/clients", { client, name });
        $$(".cname").filter((s) => s.dataset.client === r.client).forEach((s) => { s.textContent = r.name; });
        $$(".client-form").filter((g) => g.elements.client.value === r.client).forEach((g) => { g.elements.name.value = r.name; });
        cs.say($(".error", f), "");
        cs.say(live, cs.msg("saved"));
      } catch (e) { cs.say($(".error", f), cs.why(e)); }
    });
    if (table.dataset.off) return;
    const poll = async () => {
      const q = table.dataset.query;
      let r;
      try { r = await cs.send("/api/v1/events?" + (q ? q + "&" : "") + "limit=1", { method: "GET", headers: cs.poll }); } catch (e) { return; }
      const top = r.events.length ? String(r.events[0].id) : "0";
      if (top === table.dataset.top) return;
      let html;
      try { html = await (await fetch(location.href, { credentials: "same-origin", headers: cs.poll })).text(); } catch (e) { return; }
      const doc = new DOMParser().parseFromString(html, "text/html");
      const body = $("#events-body", doc), fresh = $("#events", doc);
      if (!body || !fresh) return;
      const before = $$("[data-test=events-row]").length;
      $("#events-body").replaceWith(document.adoptNode(body));
      table.dataset.top = fresh.dataset.top;
      cs.times(table);
      const n = $$("[data-test=events-row]").length - before;
      if (n > 0) cs.say(live, cs.fmt(cs.msg("new"), n));
      seen(table.dataset.top);
    };
    setInterval(poll, 5000);
  },

  diagnostics() {
    const box = $("#diag"), live = $("#diag-live"), err = $("#diag-error"), run = $("#diag-run");
    run.addEventListener("click", async () => {
      if (run.getAttribute("aria-busy")) return;
      run.setAttribute("aria-busy", "true"); cs.say(err, ""); cs.say(live, box.dataset.msgRunning);
      try {
        const rep = await cs.api("POST", "/diagnose");
        (rep.checks || []).forEach((c) => {
          const li = $$("#diag-checks li").find((l) => l.dataset.name === c.name);
          if (!li) return;
          li.className = c.ok ? "ok" : "fail";
          li.dataset.ok = String(c.ok);
          cs.say($(".mark", li), c.ok ? "✓" : "✗");
          cs.say($(".result", li), c.ok ? box.dataset.msgPass : box.dataset.msgFail);
          cs.say($(".detail", li), c.detail);
        });
        const t = document.createElement("time");
        t.setAttribute("datetime", rep.time);
        t.textContent = rep.time;
        $("#diag-time").replaceChildren(t);
        cs.times($("#diag-time"));
        cs.say(live, box.dataset.msgDone);
      } catch (e) { cs.say(live, ""); cs.say(err, cs.why(e)); } finally { run.removeAttribute("aria-busy"); }
    });
  },

  settings() {
    const card = $("#settings-code-card"), msg = $("#settings-code-message"), shown = $("#settings-code");
    const copy = $("#settings-code-copy");
    if (copy) copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(shown.textContent.trim()); cs.say(msg, card.dataset.msgCopied); } catch (e) { cs.say(msg, e.message); }
    });
    $("#settings-code-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = $("#settings-code-new"), code = input.value.trim();
      if (!code) { cs.say(msg, card.dataset.msgEmpty); input.focus(); return; }
      msg.className = "";
      try {
        const a = await cs.api("POST", "/activate", { code });
        input.value = "";
        shown.textContent = a.entitlement_code;
        msg.className = "ok";
        cs.say(msg, (a.verified ? card.dataset.msgVerified : card.dataset.msgStored) + (a.message ? " " + a.message : ""));
      } catch (e) { msg.className = "error"; cs.say(msg, cs.why(e, msg)); }
    });
    const sw = $("#settings-require-code"), off = $("#settings-off"), pmsg = $("#settings-pause-message");
    const put = (on, code) => cs.api("PUT", "/settings", { require_code_to_pause: on, code: code || "" });
    sw.addEventListener("change", async () => {
      cs.say(pmsg, "");
      if (!sw.checked) { sw.checked = true; off.hidden = false; $("#settings-off-code").focus(); return; }
      try { await put(true); cs.say(pmsg, cs.msg("saved")); } catch (e) { sw.checked = false; cs.say(pmsg, cs.why(e, pmsg)); }
    });
    $("#settings-off-cancel").addEventListener("click", () => { off.hidden = true; sw.focus(); });
    $("#settings-off-confirm").addEventListener("click", async () => {
      const code = $("#settings-off-code");
      try {
        await put(false, code.value.trim());
        sw.checked = false; off.hidden = true; code.value = "";
        cs.say(pmsg, cs.msg("saved")); sw.focus();
      } catch (e) { cs.say(pmsg, cs.why(e, pmsg)); }
    });
  },
};

// The upgrade page sends the bundle as the raw body (streamed, not a
// form), then waits for the gateway to restart.
pages.upgrade = function () {
  const card = $("#upgrade-card");
  if (!card) return;
  const out = $("#upgrade-message");
  const busy = (on) => $$("#upgrade-card button").forEach((b) => { if (on) b.setAttribute("aria-busy", "true"); else b.removeAttribute("aria-busy"); });
  const go = async (send) => {
    if ($("#upgrade-card button[aria-busy]")) return;
    cs.say(out, card.dataset.msgSending); busy(true);
    try {
      const a = await send();
      cs.say(out, a.message);
      // The gateway reboots; come back once it answers again.
      setTimeout(() => location.reload(), 60000);
    } catch (e) { cs.say(out, cs.why(e, out)); }
    finally { busy(false); }
  };
  $("#upgrade-file-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = $("#upgrade-file").files[0];
    if (!f) { cs.say(out, card.dataset.msgNofile); return; }
    go(() => cs.send("/upgrade", { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: f }));
  });
  $("#upgrade-url-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(() => cs.form("/upgrade/url", { url: $("#upgrade-url").value.trim() }));
  });
};

document.addEventListener("DOMContentLoaded", () => {
  cs.times();
  const init = pages[document.body.dataset.page];
  if (init) init();
  // The Events page marks what it shows as seen (its poll); elsewhere the
  // badge follows new blocks.
  if ($('nav a[href="/events"]') && document.body.dataset.page !== "events") {
    cs.badge();
    setInterval(cs.badge, 15000);
  }
});
