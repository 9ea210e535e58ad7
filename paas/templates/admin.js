// drove's dashboard: live blocks over server-sent events, and forms sent without a reload.
// No framework; served from /admin/static under a CSP that allows only this origin.
"use strict";

// Puts fresh HTML in an element, keeping which <details> were open or closed.
function swap(el, html) {
  const open = {};
  el.querySelectorAll("details[id]").forEach((d) => { open[d.id] = d.open; });
  el.innerHTML = html;
  el.querySelectorAll("details[id]").forEach((d) => {
    if (d.id in open) d.open = open[d.id];
  });
}

// One event stream per visible tab: browsers allow six HTTP/1.1 connections per host, so a
// hidden tab (or a page left for another) gives its stream back, and takes a fresh one (which
// starts with every block) when shown again.
function live() {
  const page = document.body.dataset.livePage;
  if (!page) return;
  const app = document.body.dataset.liveApp || "";
  const status = document.getElementById("live-status");
  const url = "/admin/live?page=" + encodeURIComponent(page) + "&app=" + encodeURIComponent(app);
  let source = null;
  const open = () => {
    if (source) return;
    source = new EventSource(url);
    source.onopen = () => { if (status) status.className = "live on"; };
    source.onerror = () => { if (status) status.className = "live off"; };
    source.addEventListener("fragment", (e) => {
      const f = JSON.parse(e.data);
      // Blocks and their elements share ids, but for the instances list (the control's field
      // is "instances").
      const el = document.getElementById(f.id === "instances" ? "instances-list" : f.id);
      if (el) swap(el, f.html);
    });
    source.addEventListener("gone", (e) => {
      close();
      show(false, e.data);
    });
  };
  const close = () => {
    if (source) source.close();
    source = null;
    if (status) status.className = "live";
  };
  document.addEventListener("visibilitychange", () => (document.hidden ? close() : open()));
  window.addEventListener("pagehide", close);
  window.addEventListener("pageshow", () => { if (!document.hidden) open(); });
  if (!document.hidden) open();
}

function show(ok, message) {
  const r = document.getElementById("result");
  if (!r) return;
  r.textContent = message;
  r.className = "result " + (ok ? "ok" : "err");
}

// Forms marked data-control post in the background and show the API's answer.
function controls() {
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-control")) return;
    e.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    show(true, "working…");
    try {
      const resp = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
      });
      const raw = await resp.text();
      let body;
      try { body = JSON.parse(raw); } catch (_) { body = { ok: false, message: raw.trim() || resp.statusText }; }
      show(resp.ok && body.ok, body.message || resp.statusText);
      if (body.target && body.html) {
        const el = document.getElementById(body.target);
        if (el) el.innerHTML = body.html;
      }
    } catch (err) {
      show(false, "the PaaS did not answer: " + err);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { live(); controls(); });
