// tests/consoled/test-browser.js — the web console in a real browser: starts
// a real bursar-consoled (temp state dir, a user and its token), drives
// Debian's /usr/bin/chromium headless through playwright-core, signs in with
// the token, uploads a bundle through the file input, sees it in the list,
// sees an upload error sentence and the jobs error while admitd is down,
// checks the token survives a reload, then starts real ledgerd, admitd and
// noded behind it and checks the Nodes panel: an operator sees the node with
// its class and the class's rate, a user never sees the panel. Saves a
// screenshot to $BUILD/test-logs/console.png. Prints PASS/FAIL/SKIP lines
// for tests/run.
"use strict";

const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");
const { execFileSync, spawn } = require("child_process");

const ROOT = path.resolve(__dirname, "../..");
const BUILD = path.resolve(ROOT, process.env.BUILD || "build");
const CONSOLED = path.join(BUILD, "bin/bursar-consoled");
const LEDGERD = path.join(BUILD, "bin/bursar-ledgerd");
const ADMITD = path.join(BUILD, "bin/bursar-admitd");
const NODED = path.join(BUILD, "bin/bursar-noded");
const TRAINER = path.join(BUILD, "bin/bursar-train");
const CHROMIUM = "/usr/bin/chromium";
const PW = path.join(ROOT, "tests/browser/node_modules/playwright-core");
const TIMEOUT_MS = 15000;

let failed = 0;
const peers = []; // noded, admitd, ledgerd (newest first): started once the console is up
function pass(name) {
  console.log("PASS " + name);
}
function fail(name, why) {
  failed++;
  console.log("FAIL " + name + ": " + String(why).split("\n")[0]);
}

// Runs one step; a failing step is reported and the later ones still run.
async function step(name, fn) {
  try {
    await fn();
    pass(name);
    return true;
  } catch (e) {
    fail(name, e.message || e);
    return false;
  }
}

function waitForFile(p, ms) {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (fs.existsSync(p) && fs.statSync(p).size > 0) return resolve(fs.readFileSync(p, "utf8").trim());
      if (Date.now() > end) return reject(new Error("timed out waiting for " + p));
      setTimeout(tick, 50);
    };
    tick();
  });
}

// GET path from a daemon's Unix socket; resolves to the parsed JSON or null.
function getUnix(sock, p) {
  return new Promise((resolve) => {
    const req = http.get({ socketPath: sock, path: p }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => {
        try {
          resolve(res.statusCode === 200 ? JSON.parse(body) : null);
        } catch (e) {
          resolve(null);
        }
      });
    });
    req.on("error", () => resolve(null));
  });
}

// Polls fn (async, truthy when done) every 100 ms for up to ms.
async function waitFor(what, fn, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("timed out waiting for " + what);
}

function makeBundle(dir) {
  const b = path.join(dir, "src/tiny-gpt");
  fs.mkdirSync(path.join(b, "data"), { recursive: true });
  fs.writeFileSync(path.join(b, "config.json"), JSON.stringify({
    model_type: "gpt2", n_layer: 2, n_head: 2, n_embd: 32, vocab_size: 256, n_positions: 64,
  }));
  fs.writeFileSync(path.join(b, "data/a.txt"), "the quick brown fox jumps over the lazy dog\n".repeat(50));
  const out = path.join(dir, "tiny-gpt.tar.gz");
  execFileSync("tar", ["-C", path.join(dir, "src"), "-czf", out, "tiny-gpt"]);
  const bad = path.join(dir, "notes.tar");
  fs.writeFileSync(bad, "this is not a tar archive\n");
  return { good: out, bad };
}

async function main() {
  if (!fs.existsSync(CHROMIUM)) {
    console.log("SKIP console_browser: " + CHROMIUM + " is not installed");
    return 0;
  }
  if (!fs.existsSync(PW)) {
    console.log("SKIP console_browser: tests/browser/node_modules is missing (make -C tests/browser deps)");
    return 0;
  }
  for (const bin of [CONSOLED, LEDGERD, ADMITD, NODED, TRAINER]) {
    if (!fs.existsSync(bin)) {
      fail("console_browser", bin + " is not built (run make)");
      return 1;
    }
  }
  const { chromium } = require(PW);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "test-consoled-browser-"));
  const state = path.join(tmp, "state");
  let daemon = null;
  let browser = null;
  try {
    const token = execFileSync(CONSOLED, ["adduser", "--state", state, "--tenant", "acme",
                                          "--user", "alice"]).toString().trim();
    const files = makeBundle(tmp);
    const portFile = path.join(tmp, "port");
    const log = fs.openSync(path.join(tmp, "consoled.log"), "w");
    const admitdSock = path.join(tmp, "admitd.sock");
    const ledgerdSock = path.join(tmp, "ledgerd.sock");
    // admitd and ledgerd are not running yet: the jobs panel must say so
    daemon = spawn(CONSOLED, ["--state", state, "--listen", "127.0.0.1:0", "--port-file", portFile,
                              "--admitd", "unix:" + admitdSock, "--ledgerd", "unix:" + ledgerdSock],
                   { stdio: ["ignore", log, log] });
    const url = "http://127.0.0.1:" + (await waitForFile(portFile, 5000)) + "/";

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    const page = await browser.newPage({ viewport: { width: 1300, height: 800 } });
    page.setDefaultTimeout(TIMEOUT_MS);
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));

    await step("browser_page_loads", async () => {
      await page.goto(url);
      await page.waitForSelector("#token");
      if ((await page.title()) !== "bursar console") throw new Error("title is " + (await page.title()));
    });
    await step("browser_sign_in", async () => {
      await page.fill("#token", token);
      await page.click("#save-token");
      await page.waitForFunction(() => document.getElementById("whoami").textContent.includes("alice @ acme"));
    });
    await step("browser_upload_bundle", async () => {
      await page.setInputFiles("#file", files.good);
      await page.click("#upload");
      await page.waitForFunction(() => document.getElementById("upload-msg").textContent.startsWith("uploaded"));
    });
    await step("browser_bundle_listed", async () => {
      const row = page.locator("#bundles tbody tr", { hasText: "tiny-gpt" });
      await row.first().waitFor();
      const text = await row.first().textContent();
      if (!/b-[0-9a-f]{16}/.test(text)) throw new Error("row lacks a bundle id: " + text);
      if (!(await row.first().locator("button", { hasText: "Train" }).count())) throw new Error("no Train button");
      const ids = fs.readdirSync(path.join(state, "bundles")).filter((n) => n.startsWith("b-"));
      if (ids.length !== 1) throw new Error("want 1 bundle on disk, got " + ids.length);
    });
    await step("browser_upload_error_shown", async () => {
      await page.setInputFiles("#file", files.bad);
      await page.click("#upload");
      await page.waitForFunction(() => document.getElementById("upload-msg").textContent.includes("not a tar archive"));
      const cls = await page.getAttribute("#upload-msg", "class");
      if (cls !== "error") throw new Error("message class is " + cls);
    });
    await step("browser_jobs_error_shown", async () => {
      await page.waitForFunction(() => document.getElementById("jobs-msg").textContent.includes("admission service unavailable"));
    });
    await step("browser_token_persisted", async () => {
      await page.reload();
      await page.waitForFunction(() => document.getElementById("whoami").textContent.includes("alice @ acme"));
      if ((await page.inputValue("#token")) !== token) throw new Error("token field is empty after reload");
    });
    await step("browser_nodes_hidden_for_user", async () => {
      if (!(await page.locator("#nodes-section").isHidden())) throw new Error("a user sees the Nodes panel");
      if (await page.locator("#nodes tbody tr").count()) throw new Error("a user's page lists nodes");
    });
    const peersUp = await step("browser_cluster_starts", async () => {
      const start = (bin, name, args) => {
        fs.mkdirSync(path.join(tmp, name));
        const fd = fs.openSync(path.join(tmp, name + ".log"), "w");
        peers.unshift(spawn(bin, ["--state", path.join(tmp, name)].concat(args),
                            { stdio: ["ignore", fd, fd] }));
      };
      start(LEDGERD, "ledgerd", ["--listen", "unix:" + ledgerdSock]);
      await waitFor("ledgerd", () => getUnix(ledgerdSock, "/v1/health"), 20000);
      start(ADMITD, "admitd", ["--listen", "unix:" + admitdSock, "--ledgerd", "unix:" + ledgerdSock]);
      await waitFor("admitd", () => getUnix(admitdSock, "/v1/health"), 20000);
      start(NODED, "noded", ["--admitd", "unix:" + admitdSock, "--ledgerd", "unix:" + ledgerdSock,
                             "--trainer", TRAINER, "--slots", "2", "--node-id", "node-local"]);
      await waitFor("node-local to register", async () => {
        const t = await getUnix(admitdSock, "/v1/nodes");
        return t && t.nodes.some((n) => n.id === "node-local" && !n.down);
      }, 60000);
    });
    if (peersUp) {
      const opToken = execFileSync(CONSOLED, ["adduser", "--state", state, "--tenant", "ops",
                                              "--user", "root", "--role", "operator"]).toString().trim();
      await step("browser_nodes_operator", async () => {
        await page.fill("#token", opToken);
        await page.click("#save-token");
        await page.waitForFunction(() => document.getElementById("whoami").textContent.includes("root @ ops (operator)"));
        await page.locator("#nodes-section").waitFor({ state: "visible" });
        const row = page.locator("#nodes tbody tr", { hasText: "node-local" });
        await row.first().waitFor();
        const cells = await row.first().locator("td").allTextContents();
        if (cells[0] !== "node-local" || cells[1] !== "cpu" || cells[3] !== "cpu")
          throw new Error("node row is " + JSON.stringify(cells));
        if (!/^\$0\.7200\/rank-h$/.test(cells[2])) throw new Error("cpu rate cell is '" + cells[2] + "'");
        if (!/^[0-2]\/2$/.test(cells[4])) throw new Error("slots cell is '" + cells[4] + "'");
        if (!/^(up|probing)$/.test(cells[8])) throw new Error("state cell is '" + cells[8] + "'");
        await page.waitForFunction(() => /^cpu: 2 slots, [0-2] in use$/.test(document.getElementById("nodes-totals").textContent));
      });
      await step("browser_nodes_reprobe", async () => {
        await page.locator("#nodes tbody tr", { hasText: "node-local" }).locator("button", { hasText: "Re-measure" }).click();
        await page.waitForFunction(() => document.getElementById("nodes-msg").textContent.includes("node node-local will measure itself again"));
      });
      await step("browser_screenshot", async () => {
        const dir = path.join(BUILD, "test-logs");
        fs.mkdirSync(dir, { recursive: true });
        await page.screenshot({ path: path.join(dir, "console.png"), fullPage: true });
      });
      await step("browser_nodes_gone_for_user", async () => {
        await page.fill("#token", token);
        await page.click("#save-token");
        await page.waitForFunction(() => document.getElementById("whoami").textContent === "alice @ acme");
        if (!(await page.locator("#nodes-section").isHidden())) throw new Error("the Nodes panel stays after signing in as a user");
        if (await page.locator("#nodes tbody tr").count()) throw new Error("the operator's node rows stay on a user's page");
      });
    }
    await step("browser_no_page_errors", async () => {
      if (pageErrors.length) throw new Error(pageErrors.join("; "));
    });
  } catch (e) {
    fail("console_browser", e.stack || e);
  } finally {
    if (browser) await browser.close().catch(() => {});
    for (const p of peers) { // noded, admitd, ledgerd
      p.kill("SIGTERM");
      await new Promise((r) => (p.exitCode !== null ? r() : p.once("exit", r)));
    }
    if (daemon) {
      daemon.kill("SIGTERM");
      await new Promise((r) => (daemon.exitCode !== null ? r() : daemon.once("exit", r)));
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return failed ? 1 : 0;
}

const guard = setTimeout(() => {
  console.log("FAIL console_browser: timed out after 150s");
  for (const p of peers) p.kill("SIGKILL");
  process.exit(1);
}, 150000);
main().then((rc) => {
  clearTimeout(guard);
  process.exit(rc);
});
