// driver.mjs drives one headless chromium page with playwright-core for
// cloudsteer's Go browser tests (package lab/browser). It speaks JSON lines:
// each line on stdin is a command {"id": n, "cmd": "goto", ...}, each line on
// stdout an answer {"id": n, "ok": true, "value": ...} or {"id": n, "ok":
// false, "error": "<Playwright's message>"}. Once the browser is up it writes
// {"id": 0, "ok": true, "value": {"version": ...}} (or ok false and exits).
// It exits after "close", or when stdin ends.
//
// Options (flags, or the environment variable in brackets):
//   --executable-path PATH   the browser [CLOUDSTEER_CHROMIUM]; /usr/bin/chromium
//   --locale TAG             en-US, ja-JP, ... (also the Accept-Language header)
//   --viewport WxH           e.g. 1280x800 or 375x812
//   --mobile                 a phone: touch and the mobile meta viewport
//   --spki-pin BASE64        accept a server certificate whose SPKI has this
//                            SHA-256 (repeatable); nothing else is ignored
//   --timeout MS             default timeout of each command (10000)
//
// Nothing a command carries (passwords, codes, cookies) is ever written to
// stderr: only Playwright's errors and the browser's own messages are.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import tls from 'node:tls';

function parseArgs(argv) {
  const o = {
    executablePath: process.env.CLOUDSTEER_CHROMIUM || '/usr/bin/chromium',
    locale: '',
    viewport: { width: 1280, height: 800 },
    mobile: false,
    pins: [],
    timeout: 10000,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`flag ${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--executable-path': o.executablePath = next(); break;
      case '--locale': o.locale = next(); break;
      case '--viewport': {
        const m = /^(\d+)x(\d+)$/.exec(next());
        if (!m) throw new Error('--viewport wants WxH');
        o.viewport = { width: Number(m[1]), height: Number(m[2]) };
        break;
      }
      case '--mobile': o.mobile = true; break;
      case '--spki-pin': {
        const p = next();
        if (!/^[A-Za-z0-9+/]{43}=$/.test(p)) throw new Error('--spki-pin wants the base64 SHA-256 of an SPKI');
        o.pins.push(p);
        break;
      }
      case '--timeout': o.timeout = Number(next()); break;
      default: throw new Error(`unknown flag ${a}`);
    }
  }
  return o;
}

// Flags that keep chromium from reaching anything the page did not ask for
// (the machine's network is closed; the lab allows only its own hosts).
const quietFlags = [
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-domain-reliability',
  '--disable-client-side-phishing-detection',
  '--no-proxy-server',
  '--no-pings',
  '--disable-crash-reporter',
  '--disable-breakpad',
];

const MAX_EVENTS = 500;

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  pins = opts.pins;
  const args = [...quietFlags];
  if (opts.pins.length) args.push(`--ignore-certificate-errors-spki-list=${opts.pins.join(',')}`);
  let browser, context, page;
  const consoleErrors = [];
  const requests = [];
  const failed = [];
  const push = (list, v) => { list.push(v); if (list.length > MAX_EVENTS) list.shift(); };
  try {
    browser = await chromium.launch({
      executablePath: opts.executablePath,
      headless: true,
      chromiumSandbox: false, // --no-sandbox: the tests run as root
      args,
      timeout: 30000,
    });
    const ctxOpts = { viewport: opts.viewport, isMobile: opts.mobile, hasTouch: opts.mobile };
    if (opts.locale) ctxOpts.locale = opts.locale;
    context = await browser.newContext(ctxOpts);
    context.setDefaultTimeout(opts.timeout);
    page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') push(consoleErrors, m.text()); });
    page.on('pageerror', (e) => push(consoleErrors, `page error: ${e.message}`));
    page.on('request', (r) => push(requests, { method: r.method(), url: r.url() }));
    page.on('response', (r) => {
      if (r.status() >= 400) push(failed, { method: r.request().method(), url: r.url(), type: r.request().resourceType(), status: r.status() });
    });
    page.on('requestfailed', (r) => push(failed, { method: r.method(), url: r.url(), type: r.resourceType(), status: 0, error: r.failure()?.errorText || '' }));
  } catch (e) {
    send({ id: 0, ok: false, error: `launch ${opts.executablePath}: ${errText(e)}` });
    process.exit(1);
  }
  send({ id: 0, ok: true, value: { version: browser.version() } });

  const loc = (c) => {
    if (typeof c.selector !== 'string' || c.selector === '') throw new Error('selector: empty');
    return page.locator(c.selector);
  };
  const to = (c) => (c.timeout > 0 ? { timeout: c.timeout } : {});
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));

  const commands = {
    async goto(c) {
      const resp = await page.goto(c.url, { waitUntil: c.waitUntil || 'load', ...to(c) });
      return { status: resp ? resp.status() : 0, url: page.url() };
    },
    async reload(c) {
      const resp = await page.reload({ waitUntil: c.waitUntil || 'load', ...to(c) });
      return { status: resp ? resp.status() : 0, url: page.url() };
    },
    async fill(c) { await loc(c).fill(String(c.value ?? ''), to(c)); return null; },
    async click(c) { await loc(c).click(to(c)); return null; },
    async check(c) { await loc(c).check(to(c)); return null; },
    async uncheck(c) { await loc(c).uncheck(to(c)); return null; },
    async selectOption(c) { return await loc(c).selectOption(c.values ?? [], to(c)); },
    async setInputFiles(c) { await loc(c).setInputFiles(c.files ?? [], to(c)); return null; },
    async press(c) { await loc(c).press(c.key, to(c)); return null; },
    async focus(c) { await loc(c).focus(to(c)); return null; },
    async text(c) { return await loc(c).innerText(to(c)); },
    async texts(c) { return await loc(c).allInnerTexts(); },
    async count(c) { return await loc(c).count(); },
    async attr(c) { return await loc(c).getAttribute(c.name, to(c)); },
    async inputValue(c) { return await loc(c).inputValue(to(c)); },
    async isChecked(c) { return await loc(c).isChecked(to(c)); },
    async isVisible(c) { return await loc(c).isVisible(); },
    async waitFor(c) { await loc(c).first().waitFor({ state: c.state || 'visible', ...to(c) }); return null; },
    // waitForText waits until an element matching selector has text that
    // contains c.text (case-sensitive), and returns that element's text.
    async waitForText(c) {
      const deadline = Date.now() + (c.timeout > 0 ? c.timeout : opts.timeout);
      let last = [];
      for (;;) {
        last = await loc(c).allInnerTexts();
        const hit = last.find((t) => t.includes(c.text));
        if (hit !== undefined) return hit;
        if (Date.now() > deadline) {
          throw new Error(`waitForText: no ${c.selector} contains ${JSON.stringify(c.text)} after ${c.timeout || opts.timeout}ms; texts: ${JSON.stringify(last).slice(0, 500)}`);
        }
        await wait(100);
      }
    },
    // waitForURL polls the page's URL until it contains c.contains, then
    // waits for the page's load state; its error says where the page is.
    async waitForURL(c) {
      const limit = c.timeout > 0 ? c.timeout : opts.timeout;
      const deadline = Date.now() + limit;
      while (!page.url().includes(c.contains)) {
        if (Date.now() > deadline) {
          throw new Error(`waitForURL: the page is at ${page.url()}, not at a URL containing ${JSON.stringify(c.contains)}, after ${limit}ms`);
        }
        await wait(50);
      }
      await page.waitForLoadState(c.waitUntil || 'load', { timeout: Math.max(deadline - Date.now(), 1000) });
      return page.url();
    },
    // layout measures the page (fixed code, not a script the caller
    // sends): a page wider than its viewport scrolls sideways on a phone.
    async layout() {
      return await page.evaluate(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        innerWidth: window.innerWidth,
      }));
    },
    // focused describes the element that has the keyboard focus.
    async focused() {
      return await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return { tag: '', dataTest: '', text: '' };
        return { tag: el.tagName.toLowerCase(), dataTest: el.getAttribute('data-test') || '', text: (el.innerText || el.value || '').slice(0, 200) };
      });
    },
    async url() { return page.url(); },
    async title() { return await page.title(); },
    async content() { return await page.content(); },
    async screenshot(c) {
      if (!c.path) throw new Error('screenshot: empty path');
      await page.screenshot({ path: c.path, fullPage: !!c.fullPage, animations: 'disabled', ...to(c) });
      return c.path;
    },
    async setExtraHeaders(c) { await context.setExtraHTTPHeaders(c.headers || {}); return null; },
    async setViewport(c) { await page.setViewportSize({ width: c.width, height: c.height }); return null; },
    // request sends an HTTP request with the page's cookies (the context's
    // request API, no page script) and returns status, headers and body.
    // That API runs in Node, not in chromium, so the SPKI pins are checked
    // here: before each hop a TLS handshake with the server checks its key,
    // and only a pinned server's certificate errors are ignored, for that
    // hop alone. Redirects (up to maxRedirects) are followed hop by hop.
    async request(c) {
      let url = c.url;
      let method = c.method || 'GET';
      let form = c.form;
      let data = c.body;
      for (let hop = 0; ; hop++) {
        const o = { method, headers: c.headers || {}, maxRedirects: 0, failOnStatusCode: false, ...to(c) };
        if (form) o.form = form;
        else if (data !== undefined && data !== '') o.data = data;
        if (await pinned(url, c.timeout || opts.timeout)) o.ignoreHTTPSErrors = true;
        const r = await context.request.fetch(url, o);
        const loc = r.headers()['location'];
        if (r.status() >= 300 && r.status() < 400 && loc && hop < (c.maxRedirects || 0)) {
          url = new URL(loc, url).href;
          if (r.status() === 303 || ((r.status() === 301 || r.status() === 302) && method === 'POST')) {
            method = 'GET'; form = undefined; data = undefined;
          }
          continue;
        }
        const body = (await r.body()).toString('utf8');
        return { status: r.status(), headers: r.headers(), body, url };
      }
    },
    // cookies returns the context's cookies (with their flags) for urls.
    async cookies(c) { return await context.cookies(c.urls || []); },
    async clearCookies() { await context.clearCookies(); return null; },
    async consoleErrors() { return consoleErrors.splice(0); },
    async requests() { return requests.splice(0); },
    async failedRequests() { return failed.splice(0); },
    async close() { await browser.close(); return null; },
  };

  let closing = false;
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    if (!line.trim()) return;
    // Commands run one after the other, in the order they came.
    chain = chain.then(async () => {
      let c;
      try {
        c = JSON.parse(line);
      } catch (e) {
        send({ id: -1, ok: false, error: `bad command line: ${e.message}` });
        return;
      }
      const fn = Object.hasOwn(commands, c.cmd) ? commands[c.cmd] : undefined;
      if (!fn) {
        send({ id: c.id, ok: false, error: `unknown command ${JSON.stringify(c.cmd)}` });
        return;
      }
      try {
        const value = await fn(c);
        send({ id: c.id, ok: true, value: value ?? null });
      } catch (e) {
        send({ id: c.id, ok: false, error: errText(e) });
      }
      if (c.cmd === 'close') { closing = true; process.exit(0); }
    });
  });
  rl.on('close', () => {
    chain.then(async () => {
      if (!closing) await browser.close().catch(() => {});
      process.exit(0);
    });
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => { browser.close().catch(() => {}).finally(() => process.exit(1)); });
  }
}

// pinned reports whether url is https and its server's public key is one of
// the pinned ones (a TLS handshake, SNI and ALPN as for the request). A
// server whose chain is trusted needs no exception: false.
let pins = [];
async function pinned(url, timeout) {
  const u = new URL(url);
  if (u.protocol !== 'https:' || pins.length === 0) return false;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || 443);
  return await new Promise((resolve, reject) => {
    const s = tls.connect({
      host, port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'],
      servername: isIP(host) ? undefined : host,
    }, () => {
      try {
        const der = s.getPeerX509Certificate().publicKey.export({ type: 'spki', format: 'der' });
        const hash = createHash('sha256').update(der).digest('base64');
        resolve(!s.authorized && pins.includes(hash));
      } catch (e) {
        reject(e);
      } finally {
        s.destroy();
      }
    });
    s.setTimeout(timeout, () => { s.destroy(); reject(new Error(`TLS handshake with ${u.host}: timeout`)); });
    s.on('error', (e) => reject(new Error(`TLS handshake with ${u.host}: ${e.message}`)));
  });
}

// errText is an error's message without the terminal colours Playwright
// puts in its call logs.
function errText(e) {
  return String(e && e.message ? e.message : e).replace(/\u001b\[[0-9;]*m/g, '');
}

function send(msg) {
  process.stdout.write(JSON.stringify(msg) + '\n');
}

main().catch((e) => {
  send({ id: 0, ok: false, error: errText(e) });
  process.exit(1);
});
