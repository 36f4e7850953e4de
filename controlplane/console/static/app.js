// cloudsteer console script: small helpers shared by the pages. Every
// change goes to the admin API with the session cookie and the CSRF token.
"use strict";
const cs = {
  csrf: () => document.body.dataset.csrf || "",
  async api(method, path, body) {
    const opts = { method, headers: { "X-CSRF-Token": cs.csrf() }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch("/api/v1" + path, opts);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const err = new Error((data && data.error) || res.statusText);
      err.status = res.status;
      err.code = data && data.code;
      throw err;
    }
    return data;
  },
};
window.cs = cs;
