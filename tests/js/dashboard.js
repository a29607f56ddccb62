// The dashboard in a real browser (Debian's chromium, driven by playwright-core), run by
// tests/dashboard.rs against a real `kafkabox serve`:
//   node dashboard.js BOOTSTRAP HTTP_BASE TOKEN FLAG_FILE SCREENSHOT
// Produces events with kafkajs (3 valid from source "pos" for customer D-7, 1 invalid, and one
// each for customers 1, 100 and 42 from "crm"), opens the page, enters the token, asserts that
// the source, its counts, the rejected event and the customer's profile and timeline are
// visible, that customer ids sort naturally, that the stuck webhook stage shows as a red banner
// and in the groups card, makes the handler's downstream work again (removes FLAG_FILE),
// replays a dead letter from the page and sees it marked replayed. Then, at 1,000 and 1,600 px
// wide: no table cell is narrower than the longest word it holds (cut cells keep a usable
// width and their full text on hover), nothing overflows the page, the chart has both axes;
// a screenshot of each (SCREENSHOT-1000.png, SCREENSHOT-1600.png). Exits non-zero on any
// failure.
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
  for (const id of ["1", "100", "42"]) {
    messages.push({ key: id, value: JSON.stringify({
      source: "crm", customer_id: id, event_type: "app_login", timestamp: "2024-02-01T10:00:00Z",
    }) });
  }
  await producer.send({ topic: "customer-events", acks: -1, messages });
  await producer.disconnect();
}

// Every visible table cell's content box against the widest word it holds (each text in its
// own font). Cut cells (class trunc: full text on hover) must keep at least 80 px.
function narrowCells() {
  const ctx = document.createElement("canvas").getContext("2d");
  const bad = [];
  for (const cell of document.querySelectorAll("main td, main th")) {
    if (!cell.getClientRects().length) continue;
    const cs = getComputedStyle(cell);
    const inner = cell.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    if (cell.classList.contains("trunc")) {
      if (inner < 80) bad.push(`a cut cell of ${Math.round(inner)} px: ${cell.textContent.slice(0, 60)}`);
      if (!cell.title && cell.textContent.trim()) bad.push(`a cut cell without its text on hover: ${cell.textContent.slice(0, 60)}`);
      continue;
    }
    let longest = 0;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const st = getComputedStyle(n.parentElement);
      ctx.font = `${st.fontStyle} ${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
      for (const w of n.textContent.split(/\s+/)) if (w) longest = Math.max(longest, ctx.measureText(w).width);
    }
    if (longest > inner + 1) bad.push(`a ${Math.round(inner)} px cell holds a ${Math.round(longest)} px word: ${cell.textContent.slice(0, 60)}`);
  }
  return bad;
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
    // Customer ids in natural order.
    await page.fill("#q", "");
    await page.click('#search button[type="submit"]');
    await page.waitForFunction(() => document.querySelectorAll("#found a.customer").length >= 4, null, { timeout: 15000 });
    const ids = await page.locator("#found a.customer").allTextContents();
    assert(ids.join(",") === "1,42,100,D-7", "customer ids sort naturally: " + ids.join(","));

    // An open transaction shows in its card, with its partition and age.
    const txnKafka = new Kafka({ clientId: "dashboard-txn", brokers: [bootstrap], logLevel: logLevel.ERROR });
    const txnProducer = txnKafka.producer({ transactionalId: "dash-txn", maxInFlightRequests: 1, idempotent: true });
    await txnProducer.connect();
    const txn = await txnProducer.transaction();
    await txn.send({ topic: "dash-orders", messages: [{ value: "held" }] });
    await page.waitForFunction(() => {
      const card = document.querySelector("#transactions");
      return card && card.style.display !== "none" && card.textContent.includes("dash-txn") && card.textContent.includes("dash-orders/0");
    }, null, { timeout: 15000 });

    // The webhook stage cannot reach its target: a red banner names it, and so does the
    // groups card.
    await page.waitForFunction(() => {
      const b = document.querySelector("#banner");
      return b && b.classList.contains("bad") && b.textContent.includes("stage webhook");
    }, null, { timeout: 30000 });
    assert(await page.locator("#banner").isVisible(), "the banner is visible");
    await page.locator('#lag tr.stage-problem').first().waitFor({ timeout: 15000 });
    assert((await page.locator('#lag tr[data-group="kafkabox.webhook"]').getAttribute("class")).includes("problem"), "the webhook stage's row is red");

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

    for (const width of [1000, 1600]) {
      await page.setViewportSize({ width, height: 1400 });
      // One refresh (every 3 s) draws the chart again at the new width.
      await page.waitForTimeout(3500);
      const bad = await page.evaluate(narrowCells);
      assert(bad.length === 0, `at ${width} px: ` + bad.join("; "));
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert(overflow <= 0, `at ${width} px the page is ${overflow} px wider than the window`);
      assert(await page.locator("#chart .x-tick").count() >= 2, "the chart has a time axis");
      assert(await page.locator("#chart .y-tick").count() >= 2, "the chart has a value axis");
      const chartBox = await page.locator("#chart svg").boundingBox();
      const cardBox = await page.locator("#chart").boundingBox();
      assert(chartBox.width >= cardBox.width - 40, `the chart fills its card (${chartBox.width} of ${cardBox.width} px)`);
      await page.screenshot({ path: screenshot.replace(/\.png$/, `-${width}.png`), fullPage: true });
    }
    // The open transaction is aborted: its card goes away.
    await txn.abort();
    await txnProducer.disconnect();
    await page.waitForFunction(() => document.querySelector("#transactions").style.display === "none", null, { timeout: 15000 });
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
