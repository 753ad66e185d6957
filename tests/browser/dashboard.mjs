// The dashboard in Debian's headless Chromium, driven by playwright-core, against a running
// `spooler serve` (started by the Rust test `dashboard_browser`, which passes what it set up in
// the environment). Each step waits on what the page shows, with a timeout; screenshots go to
// SPOOLER_SHOTS. Exits 0 when every step passed, 1 naming the step that did not.
//
//   SPOOLER_URL, SPOOLER_TOKEN   the server and its token
//   FAILED_JOB, ATTEMPTS         a failed job and how many attempts it failed
//   WORKER_PID                   the only worker's process, stopped half way through
//   SEEDED_COMPLETED             jobs that completed in the half hour before the server started
//   SPOOLER_SHOTS                where screenshots go
//   CHROMIUM                     the browser (default /usr/bin/chromium)
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const url = process.env.SPOOLER_URL;
const token = process.env.SPOOLER_TOKEN;
const failedJob = process.env.FAILED_JOB;
const attempts = Number(process.env.ATTEMPTS);
const workerPid = Number(process.env.WORKER_PID);
const shots = process.env.SPOOLER_SHOTS;
const TIMEOUT = 20000;
mkdirSync(shots, { recursive: true });

async function api(path, init = {}) {
  const r = await fetch(url + path, {
    ...init,
    headers: { authorization: `Bearer ${token}`, ...(init.headers || {}) },
    signal: AbortSignal.timeout(TIMEOUT),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const found = await check();
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`timed out after ${TIMEOUT} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let step = "launch";
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const requests = [];
  page.on("request", (r) => { if (r.url().startsWith(url)) requests.push(r.url()); });

  step = "log in";
  await page.goto(url + "/");
  await page.waitForURL(/\/login$/);
  await page.fill("input[name=token]", "wrong");
  await page.click("button[type=submit]");
  await page.waitForSelector("text=That token is not this server's.");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("table.queues");

  step = "queue counts equal GET /v1/queues";
  const { queues } = await api("/v1/queues");
  for (const q of queues) {
    for (const [state, count] of Object.entries(q.counts)) {
      const cell = await page.textContent(`tr[data-queue="${q.name}"] td[data-state="${state}"]`);
      if (Number(cell.trim()) !== count) throw new Error(`${q.name} ${state}: page ${cell}, API ${count}`);
    }
  }
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  step = "a failed job shows every attempt";
  await page.click('nav a:has-text("Failed")');
  await page.waitForSelector("table.groups");
  await page.click('a:has-text("the full list")');
  await page.waitForSelector(`a[href="jobs/${failedJob}"]`);
  await page.screenshot({ path: `${shots}/failed.png`, fullPage: true });
  await page.click(`a[href="jobs/${failedJob}"]`);
  await page.waitForSelector("table.attempts");
  const rows = await page.locator("table.attempts tbody tr").count();
  if (rows !== attempts) throw new Error(`job ${failedJob} shows ${rows} attempts, not ${attempts}`);
  await page.screenshot({ path: `${shots}/job.png`, fullPage: true });

  step = "failures are grouped by kind and first error line";
  await page.goto(url + "/failed");
  await page.waitForSelector("table.groups");
  const groups = await page.locator("table.groups tbody tr").count();
  if (groups !== Number(process.env.GROUPS)) {
    const listed = (await api("/v1/jobs")).jobs.map((j) => `${j.id} ${j.kind} ${j.state}`);
    throw new Error(`${groups} groups, not ${process.env.GROUPS}: ${await page.innerText("table.groups")}; the API lists ${listed}`);
  }
  const biggest = await page.textContent("table.groups tbody tr:first-child td.num");
  if (biggest.trim() !== process.env.BIGGEST_GROUP) throw new Error(`the biggest group has ${biggest} jobs`);
  await page.screenshot({ path: `${shots}/failed-groups.png`, fullPage: true });

  step = "a hidden tab makes no requests";
  await page.goto(url + "/");
  await page.selectOption("#refresh", "2");
  const before = requests.length;
  await until("a refresh while visible", async () => requests.length > before);
  await page.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  const hiddenFrom = requests.length;
  await new Promise((r) => setTimeout(r, 5000)); // an absence is watched over a span: 2.5 refresh intervals
  if (requests.length !== hiddenFrom) throw new Error(`${requests.length - hiddenFrom} requests while hidden`);
  await page.selectOption("#refresh", "0");

  step = "stopping every worker shows the no-live-worker badge";
  process.kill(workerPid, "SIGTERM");
  await until("no live worker in GET /v1/workers", async () => (await api("/v1/workers")).workers.length === 0);
  await api("/v1/jobs", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ kind: "noop", queue: "mail" }),
  });
  await until("the badge on mail", async () => {
    await page.goto(url + "/");
    return (await page.locator('tr[data-queue="mail"] .badge.warn').count()) === 1;
  });

  step = "retry the failed job and see its state change";
  await page.goto(`${url}/jobs/${failedJob}`);
  await page.click('form[action$="/retry"] button');
  await page.waitForSelector("text=Retried");
  const badge = await page.textContent("h1 .badge");
  if (badge.trim() !== "available") throw new Error(`after retry the job is ${badge}`);
  const job = await api(`/v1/jobs/${failedJob}`);
  if (job.state !== "available") throw new Error(`the API says ${job.state}`);

  step = "bulk retry by filter, with progress";
  await page.goto(url + "/jobs?queue=mail&state=failed");
  await page.click('form[action="operations/new"]:has(input[value="retry"]) button');
  await page.waitForSelector("strong.matched");
  const matched = Number((await page.textContent("strong.matched")).trim());
  const failedNow = (await api("/v1/jobs?queue=mail&state=failed&limit=1000")).jobs.length;
  if (matched !== failedNow) throw new Error(`the page says ${matched} match, the API lists ${failedNow}`);
  await page.click('form[action="operations"] button');
  await page.waitForURL(/\/operations\/\d+$/);
  await until("the operation to complete", async () => {
    await page.reload();
    return (await page.textContent("h1 .badge")).trim() === "completed";
  });
  const affected = Number((await page.textContent("dd.affected")).trim());
  if (affected !== matched) throw new Error(`affected ${affected} of ${matched}`);
  await page.screenshot({ path: `${shots}/operation.png`, fullPage: true });
  if ((await api("/v1/jobs?queue=mail&state=failed")).jobs.length !== 0) throw new Error("failed jobs remain");

  step = "pause and resume a queue";
  await page.goto(url + "/queues/mail");
  await page.click('form[action$="/pause"] button');
  await page.waitForSelector("h1 .badge.paused");
  if (!(await api("/v1/queues")).queues.find((q) => q.name === "mail").paused) throw new Error("not paused");
  await page.click('form[action$="/resume"] button');
  await page.waitForSelector("text=Resumed.");
  if ((await api("/v1/queues")).queues.find((q) => q.name === "mail").paused) throw new Error("still paused");

  step = "charts";
  const seeded = Number(process.env.SEEDED_COMPLETED);
  const sum = (stats, f) => stats.points.reduce((n, p) => n + p[f], 0);
  // The leader rolls the history up as soon as it leads.
  const stats = await until(`${seeded} completed jobs in GET /v1/stats`, async () => {
    const s = await api("/v1/stats?queue=history");
    return sum(s, "completed") >= seeded && s;
  });
  await page.goto(url + "/stats?queue=history");
  await page.waitForSelector("figure.chart svg rect.completed");
  if ((await page.$$("figure.chart rect.completed")).length < 19) throw new Error("fewer bars than the 20 minutes with jobs");
  const latency = await page.textContent("table.latency tbody");
  if (!latency.includes("history") || !latency.includes(String(seeded))) throw new Error(`latency table: ${latency}`);
  const line = await page.textContent("main p.muted");
  if (!line.startsWith(`${sum(stats, "completed")} completed · ${sum(stats, "failed")} failed`)) {
    throw new Error(`the chart says "${line}", the API ${sum(stats, "completed")} completed, ${sum(stats, "failed")} failed`);
  }
  await page.screenshot({ path: `${shots}/charts.png`, fullPage: true });

  step = "log out";
  await page.click('form[action="logout"] button');
  await page.waitForURL(/\/login$/);
  await page.goto(url + "/jobs");
  await page.waitForURL(/\/login$/);

  console.log(JSON.stringify({ ok: true, requests: requests.length, shots }));
} catch (e) {
  console.error(`step "${step}" failed: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
