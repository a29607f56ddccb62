// The dashboard in a real browser (Debian's chromium, driven by playwright-core), run by
// tests/dashboard.rs against a real `kafkabox serve`:
//   node dashboard.js BOOTSTRAP HTTP_BASE TOKEN FLAG_FILE SCREENSHOT
// Produces events with kafkajs (3 valid from source "pos" for customer D-7, 1 invalid), opens
// the page, enters the token, asserts that the source, its counts, the rejected event and the
// customer's profile and timeline are visible, makes the handler's downstream work again
// (removes FLAG_FILE), replays a dead letter from the page and sees it marked replayed, and
// saves a screenshot. Exits non-zero on any failure.
"use strict";
const fs = require("fs");
const { Kafka, logLevel } = require("kafkajs");
const { chromium } = require("playwright-core");

const [bootstrap, base, token, flag, screenshot] = process.argv.slice(2);
const CHROMIUM = process.env.KB_CHROMIUM || "/usr/bin/chromium";

function assert(cond, what) {
  if (!cond) throw new Error("assertion failed: " + what);
}

async function produce() {
  const kafka = new Kafka({ clientId: "dashboard-test", brokers: [bootstrap], logLevel: logLevel.ERROR });
  const producer = kafka.producer();
  await producer.connect();
  const messages = [0, 1, 2].map((i) => ({
    key: "D-7",
    value: JSON.stringify({
      source: "pos", customer_id: "D-7", event_type: "bundle_purchase",
      timestamp: `2024-02-01T09:0${i}:00Z`, value: 5 * (i + 1),
    }),
  }));
  messages.push({ value: JSON.stringify({ source: "pos", event_type: "bundle_purchase" }) });
  await producer.send({ topic: "customer-events", acks: -1, messages });
  await producer.disconnect();
}

async function main() {
  await produce();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1600 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(base + "/");
    // The token prompt appears (http.token is set); enter it.
    await page.locator("#auth").waitFor({ state: "visible", timeout: 15000 });
    await page.fill("#token", token);
    await page.click("#token-save");

    // Sources with their counts and the last rejection.
    const row = page.locator('#sources tr[data-source="pos"]');
    await row.waitFor({ timeout: 30000 });
    await page.waitForFunction(() => {
      const r = document.querySelector('#sources tr[data-source="pos"]');
      return r && r.querySelector(".received").textContent === "4";
    }, null, { timeout: 30000 });
    const cells = await row.locator("td").allTextContents();
    assert(cells[1] === "4" && cells[2] === "3" && cells[3] === "1", "pos counts 4/3/1, got " + cells.join("|"));
    assert(cells[5].includes("customer_id"), "the last rejection names the missing field: " + cells[5]);
    // The chart has a line for the source.
    await page.locator("#chart polyline").first().waitFor({ timeout: 10000 });
    assert((await page.locator("#chart .legend").textContent()).includes("pos"), "chart legend names pos");
    // Recent events and topics.
    await page.waitForFunction(() => document.querySelector("#events tbody").textContent.includes("bundle_purchase"), null, { timeout: 15000 });
    assert((await page.locator("#topics tbody").textContent()).includes("customer-events.dlq"), "topics list the dead-letter topic");
    assert(/\d+(\.\d)? (B|KiB|MiB)/.test(await page.locator("#topics td.size").first().textContent()), "topic sizes are shown");
    // The dead letters: the rejected event (contract) and the handler's refusals.
    await page.waitForFunction(() => document.querySelectorAll("#dlq button.replay").length >= 3, null, { timeout: 30000 });
    const dlqText = await page.locator("#dlq tbody").textContent();
    assert(dlqText.includes("contract") && dlqText.includes("customer_id"), "the contract violation is listed");
    assert(dlqText.includes("downstream is down"), "the handler's refusal reason is listed");

    // Customer search: profile and timeline.
    await page.fill("#q", "d-7");
    await page.click('#search button[type="submit"]');
    await page.waitForFunction(() => {
      const e = document.querySelector("#profile-events");
      return e && e.textContent === "3";
    }, null, { timeout: 15000 });
    assert((await page.locator("#timeline tr").count()) === 3, "three events in the timeline");
    assert((await page.locator("#profile").textContent()).includes("bundle_purchase"), "the profile shows the event type");

    // The downstream works again: replay one dead letter from the page.
    fs.unlinkSync(flag);
    const button = page.locator("#dlq button.replay").first();
    const offset = await button.getAttribute("data-o");
    await button.click();
    await page.waitForFunction(() => document.querySelector("#dlq-result").textContent.includes("replayed"), null, { timeout: 15000 });
    await page.waitForFunction((o) => {
      const r = document.querySelector(`#dlq tr[data-offset="${o}"]`);
      return r && r.textContent.includes("replayed");
    }, offset, { timeout: 15000 });
    await page.screenshot({ path: screenshot, fullPage: true });
    assert(errors.length === 0, "no script errors on the page: " + errors.join("; "));
    console.log(JSON.stringify({ replayed_offset: Number(offset) }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
