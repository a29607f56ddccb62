// Pages of other origins against a real `kafkabox serve`, in a real browser (Debian's chromium,
// driven by playwright-core), run by tests/http_origin.rs:
//   node cross_origin.js KAFKABOX_BASE OTHER_PAGE ALLOWED_PAGE DLQ_OFFSET
// OTHER_PAGE and ALLOWED_PAGE are the same page served on two other ports of 127.0.0.1 (two
// origins); only ALLOWED_PAGE's origin is in http.cors.allowed.origins. Each page's attack()
// tries a "simple" text/plain POST /api/topics (no preflight), a text/plain POST /api/dlq/skip, a
// JSON POST /api/topics (preflighted), a GET and a form POST to /api/dlq/skip; this prints one
// JSON line with what each page saw ({"other": ..., "allowed": ...}). The Rust test checks the
// box's side. Every wait is bounded; exits non-zero when the run itself fails.
"use strict";
const { chromium } = require("playwright-core");

const [base, otherPage, allowedPage, dlqOffset] = process.argv.slice(2);
const CHROMIUM = process.env.KB_CHROMIUM || "/usr/bin/chromium";

function deadline(ms, what) {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms));
}

// Opens `url` and runs its attack() on the box: topic `name`, the dead letter at DLQ_OFFSET.
async function fromPage(browser, url, name) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url, { timeout: 15000 });
    const seen = await Promise.race([
      page.evaluate(([kb, topic, offset]) => window.attack(kb, topic, offset), [base, name, Number(dlqOffset)]),
      deadline(60000, `the page at ${url}`),
    ]);
    seen.origin = await page.evaluate(() => location.origin);
    seen.page_errors = errors;
    return seen;
  } finally {
    await page.close();
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const other = await fromPage(browser, otherPage, "evil");
    const allowed = await fromPage(browser, allowedPage, "from-page");
    console.log(JSON.stringify({ other, allowed }));
  } finally {
    await browser.close();
  }
}

Promise.race([main(), deadline(180000, "the whole run")])
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
