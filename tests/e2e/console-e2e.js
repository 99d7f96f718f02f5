// tests/e2e/console-e2e.js — driven by test-console-e2e.sh against a whole
// running stack: in Debian's Chromium, sign in, upload the bundle through the
// page, press Train, watch live progress appear in the jobs table, wait for
// the job to succeed, open its bill and check the metered total the page
// shows is the ledger's. Screenshots go to $BUILD/test-logs/.
"use strict";

const path = require("path");
const fs = require("fs");

const ROOT = path.resolve(__dirname, "../..");
const BUILD = path.resolve(ROOT, process.env.BUILD || "build");
const { URL, TOKEN, BUNDLE } = process.env;
const shots = path.join(BUILD, "test-logs");

let failed = 0;
async function step(name, fn) {
  try {
    await fn();
    console.log("PASS " + name);
    return true;
  } catch (e) {
    failed++;
    console.log("FAIL " + name + ": " + String(e.message || e).split("\n")[0]);
    return false;
  }
}

(async () => {
  const { chromium } = require(path.join(ROOT, "tests/browser/node_modules/playwright-core"));
  fs.mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(20000);
  let jobId = null;
  try {
    await page.goto(URL + "/");
    await page.fill("#token", TOKEN);
    await page.click("#save-token");
    const ok = await step("console-upload-and-train", async () => {
      await page.setInputFiles("#file", BUNDLE);
      await page.click("#upload");
      const train = page.locator("#bundles tbody tr button", { hasText: "Train" }).first();
      await train.waitFor();
      await train.click();
      const row = page.locator("#jobs tbody tr").first();
      await row.waitFor();
      jobId = await row.getAttribute("data-id");
      if (!/^j-/.test(jobId || "")) throw new Error("no job row after Train: " + jobId);
    });
    if (!ok) return;
    const row = page.locator(`#jobs tbody tr[data-id="${jobId}"]`);
    await step("console-live-progress", async () => {
      // The step cell fills in as the job trains ("12/120"), without a reload.
      await page.waitForFunction((id) => {
        const tr = document.querySelector(`#jobs tbody tr[data-id="${id}"]`);
        const m = tr && tr.children[4].textContent.match(/^(\d+)\/(\d+)$/);
        return m && Number(m[1]) > 0 && Number(m[1]) < Number(m[2]);
      }, jobId, { timeout: 120000 });
      await page.screenshot({ path: path.join(shots, "console-running.png"), fullPage: true });
    });
    await step("console-job-succeeds", async () => {
      await page.waitForFunction((id) => {
        const tr = document.querySelector(`#jobs tbody tr[data-id="${id}"]`);
        return tr && /succeeded|failed|cancelled/.test(tr.children[2].textContent);
      }, jobId, { timeout: 240000 });
      const state = await row.locator("td").nth(2).textContent();
      if (state !== "succeeded") throw new Error("job ended " + state);
    });
    await step("console-bill-matches-ledger", async () => {
      // The last meter records land within a few seconds of the end.
      await page.waitForTimeout(3000);
      await row.locator("button", { hasText: "Bill" }).click();
      await page.locator("#bill-items tbody tr").first().waitFor();
      const r = await page.evaluate(async (id) => {
        const t = localStorage.getItem("bursar-token") || document.getElementById("token").value;
        const resp = await fetch("/api/v1/jobs/" + id + "/bill", { headers: { Authorization: "Bearer " + t } });
        return resp.json();
      }, jobId);
      const shown = await page.locator("#bill-summary div").nth(1).textContent();
      const kinds = await page.locator("#bill-items tbody tr td:first-child").allTextContents();
      await page.screenshot({ path: path.join(shots, "console-bill.png"), fullPage: true });
      if (!(r.metered && r.metered.amount > 0)) throw new Error("bill has no metered amount");
      const digits = shown.replace(/[^0-9.]/g, " ").trim().split(/\s+/)[0];
      if (Math.abs(Number(digits) - r.metered.amount) > 0.005 * r.metered.amount + 1e-6)
        throw new Error(`page shows "${shown}", ledger says ${r.metered.amount}`);
      if (!kinds.includes("compute")) throw new Error("line items lack compute: " + kinds);
    });
  } finally {
    await browser.close();
    process.exit(failed ? 1 : 0);
  }
})().catch((e) => {
  console.log("FAIL console-e2e: " + e.message);
  process.exit(1);
});
