// The dashboard's forwarding section in a real browser (Debian's chromium via playwright-core),
// run by tests/forward.rs against an edge `kafkabox serve --upstream`:
//   node forward_dashboard.js HTTP_BASE UPSTREAM [disk]
// Asserts that the section shows the cluster, the records forwarded, the failed attempts with
// the last failure, and one row per partition; with `disk`, only that it names the cluster and
// warns that records wait while the disk runs low. Prints one JSON line. Exits non-zero on
// failure.
"use strict";
const { chromium } = require("playwright-core");

const [base, upstream, mode] = process.argv.slice(2);
const CHROMIUM = process.env.KB_CHROMIUM || "/usr/bin/chromium";

function assert(cond, what) {
  if (!cond) throw new Error("assertion failed: " + what);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(base + "/");
    await page.locator("#forward").waitFor({ state: "visible", timeout: 30000 });
    if (mode === "disk") {
      await page.waitForFunction(() => document.querySelector("#forward-disk").textContent.includes("records wait to be forwarded"), null, { timeout: 30000 });
      const summary = await page.locator("#forward-summary").textContent();
      const disk = await page.locator("#forward-disk").textContent();
      assert(summary.includes("to " + upstream), "names the cluster: " + summary);
      assert(/^disk: [1-9]\d* records wait to be forwarded/.test(disk), "warns: " + disk);
      assert(errors.length === 0, "page errors: " + errors.join("; "));
      console.log(JSON.stringify({ summary, disk }));
      return;
    }
    await page.waitForFunction(() => document.querySelectorAll("#forward tbody tr").length === 3, null, { timeout: 30000 });
    const summary = await page.locator("#forward-summary").textContent();
    const failure = await page.locator("#forward-error").textContent();
    const rows = await page.locator("#forward tbody tr").allTextContents();
    assert(summary.includes("to " + upstream), "names the cluster: " + summary);
    assert(/[1-9]\d* records/.test(summary), "counts records: " + summary);
    assert(/[1-9]\d* failed attempts/.test(summary), "counts failures: " + summary);
    assert(failure.startsWith("last failure"), "shows the last failure: " + failure);
    assert(rows.every((r) => r.includes("edge-data")), "rows per partition: " + rows.join("|"));
    assert(errors.length === 0, "page errors: " + errors.join("; "));
    console.log(JSON.stringify({ summary, failure, rows: rows.length }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
