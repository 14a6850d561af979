// Browser tests of the storefront, in Debian's Chromium driven by Playwright.
//
//   node storefront.mjs <scenario> <base url> <screenshot dir> [arguments]
//
// Scenarios:
//   guest <product name>               a guest searches, adds the product to a cart, checks out
//                                      with the approved test card and waits for CONFIRMED
//   customer <product name>            a new customer registers, orders and lists their orders
//   shipment <email> <password> <order id>
//                                      the customer logs in again and sees the order's shipment
//   office <email> <password> <order id>
//                                      staff create a product, find it in the storefront's
//                                      search, ship the order and refund part of it, find it
//                                      among the confirmed orders, see no saga parked and
//                                      send a sent message once more
//   audit <email> <password> <order id>
//                                      an auditor opens the order's history, the timeline of
//                                      one of its correlation ids and its CloudEvents export,
//                                      the payment's state before the refund and now, and
//                                      verifies the whole log
//   refused <email> <password>         a customer sees no back-office or audit link, and typing
//                                      their addresses is refused
//   admin <email> <password> <customer email>
//                                      an admin sees the projections, finds the customer's
//                                      account and deactivates it
//
// Every page load must be free of console errors (a Content-Security-Policy violation is one),
// page errors and failed requests. The last line printed is the scenario's result as JSON.
// CHROMIUM (default /usr/bin/chromium) names the browser.

import { chromium } from "playwright-core";

const [scenario, base, shots, ...rest] = process.argv.slice(2);
const problems = [];
// Answers a scenario expects to be refused (a customer typing back-office addresses).
const expectedRefusals = new Set();

function watch(page, label) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    // Chromium logs the refusal of a page the scenario expects to be refused.
    const at = message.location()?.url;
    const expected = at && expectedRefusals.has(new URL(at).pathname) && message.text().includes("status of 403");
    if (!expected) problems.push(`${label}: console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`${label}: page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    const reason = request.failure()?.errorText;
    // A navigation cancels what the page it leaves still loads: not a failure of the page.
    if (reason !== "net::ERR_ABORTED") problems.push(`${label}: request failed: ${request.url()} ${reason}`);
  });
  page.on("response", (response) => {
    const path = new URL(response.url()).pathname;
    if (response.status() >= 400 && !(response.status() === 403 && expectedRefusals.has(path))) {
      problems.push(`${label}: ${response.status()} for ${response.url()}`);
    }
  });
}

async function shoot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

async function confirmed(page) {
  for (let attempt = 0; attempt < 60; attempt++) {
    const status = (await page.locator("#order-status").textContent()).trim();
    if (status === "CONFIRMED") return status;
    check(status === "PENDING", `the order ended ${status}`);
    // The page reloads itself every two seconds while the order is pending.
    await page.waitForEvent("load", { timeout: 10_000 });
  }
  throw new Error("the order was not CONFIRMED within two minutes");
}

async function logIn(page, email, password) {
  await page.goto("/account/login");
  await page.getByLabel("Email", { exact: true }).fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.waitForURL((url) => url.pathname === "/");
}

async function addToCartFromSearch(page, productName) {
  await page.getByLabel("Search the shop").fill(productName);
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.waitForURL(/\/shop\/search/);
  check(await page.getByRole("status").textContent().then((text) => /found/.test(text)), "no result count");
  await page.getByRole("link", { name: productName }).first().click();
  await page.waitForURL(/\/shop\/products\//);
  await page.getByLabel("Quantity").fill("2");
  await page.getByRole("button", { name: "Add to cart" }).click();
  await page.waitForURL(/\/shop\/cart/);
  check(
    await page.getByRole("link", { name: productName }).count() === 1,
    "the product is not in the cart",
  );
}

async function checkOut(page) {
  await page.getByLabel("Name").fill("Gwen Guest");
  await page.getByLabel("Street and number").fill("1 Harbour Road");
  await page.getByLabel("City").fill("Hamburg");
  await page.getByLabel("Postal code").fill("20095");
  await page.getByLabel("Country (two letters, as DE or US)").fill("DE");
  await page.getByLabel("Card, approved (test)").check();
  await page.getByRole("button", { name: "Place the order" }).click();
  await page.waitForURL(/\/shop\/orders\/[0-9a-f-]{36}/);
  return page.url().match(/orders\/([0-9a-f-]{36})/)[1];
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
let result = {};
try {
  const desktop = await browser.newContext({ baseURL: base, viewport: { width: 1280, height: 860 } });
  const page = await desktop.newPage();
  watch(page, scenario);
  if (scenario === "guest") {
    const [productName] = rest;
    await page.goto("/");
    check((await page.title()).includes("Welcome"), `home title: ${await page.title()}`);
    await shoot(page, "home-desktop");
    await addToCartFromSearch(page, productName);
    await shoot(page, "cart-desktop");
    const orderId = await checkOut(page);
    await confirmed(page);
    await shoot(page, "order-desktop");
    // The same pages at a phone's width.
    const phone = await browser.newContext({ baseURL: base, viewport: { width: 390, height: 844 }, isMobile: true });
    const small = await phone.newPage();
    watch(small, `${scenario} (phone)`);
    await small.goto("/");
    await shoot(small, "home-phone");
    await small.goto(`/shop/search?q=${encodeURIComponent(productName)}`);
    await shoot(small, "search-phone");
    await small.getByRole("link", { name: productName }).first().click();
    await small.waitForURL(/\/shop\/products\//);
    await shoot(small, "product-phone");
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    const narrow = await small.evaluate(() => document.documentElement.scrollWidth);
    check(narrow <= 390, `the product page is ${narrow} px wide on a 390 px phone (desktop ${wide})`);
    await page.goto(`/shop/search?q=${encodeURIComponent(productName)}`);
    await shoot(page, "search-desktop");
    result = { order_id: orderId };
  } else if (scenario === "customer") {
    const [productName] = rest;
    const email = `browser-${Date.now()}@example.com`;
    const password = "a long browser passphrase 7";
    await page.goto("/account/register");
    await page.getByLabel("Name", { exact: true }).fill("Casey Customer");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password (12 characters or more)").fill(password);
    await page.getByLabel("The same password again").fill(password);
    await page.getByRole("button", { name: "Register" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    check(await page.getByRole("button", { name: "Log out" }).count() === 1, "not logged in after registering");
    await addToCartFromSearch(page, productName);
    const orderId = await checkOut(page);
    await confirmed(page);
    await page.getByRole("link", { name: "Orders", exact: true }).click();
    await page.waitForURL(/\/shop\/orders$/);
    check(await page.getByRole("link", { name: orderId.slice(0, 8) }).count() === 1, "the order is not in my orders");
    await shoot(page, "orders-desktop");
    // Logging out ends the session: the account's orders are no longer shown.
    await page.getByRole("button", { name: "Log out" }).click();
    await page.waitForURL((url) => url.pathname === "/");
    await page.goto(`/shop/orders/${orderId}`);
    await page.waitForURL(/\/account\/login/);
    result = { order_id: orderId, email, password };
  } else if (scenario === "shipment") {
    const [email, password, orderId] = rest;
    await page.goto(`/shop/orders/${orderId}`);
    await page.waitForURL(/\/account\/login/);
    await page.getByLabel("Email", { exact: true }).fill(email);
    await page.getByLabel("Password", { exact: true }).fill(password);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.waitForURL(new RegExp(`/shop/orders/${orderId}`));
    const shipments = await page.locator(".shipments li").allTextContents();
    check(shipments.length === 1, `shipments shown: ${JSON.stringify(shipments)}`);
    await shoot(page, "shipment-desktop");
    result = { shipments };
  } else if (scenario === "office") {
    const [email, password, orderId] = rest;
    await logIn(page, email, password);
    await page.getByRole("link", { name: "Back office" }).click();
    await page.waitForURL(/\/office$/);
    await shoot(page, "office-desktop");
    await page.getByRole("link", { name: "New product" }).click();
    await page.getByLabel("Name").fill("Harbour buoy");
    await page.getByLabel("Description").fill("Floats, and is seen from afar");
    await page.getByLabel("Price").fill("42.50");
    await page.getByLabel("Category").fill("Outdoor");
    await page.getByLabel("Units in stock").fill("7");
    await page.getByRole("button", { name: "Create the product" }).click();
    await page.waitForURL(/\/office\/products\/[0-9a-f-]{36}/);
    check(await page.getByRole("status").textContent() === "Saved.", "the product was not saved");
    // The storefront's search finds it once the search index has applied it.
    let found = 0;
    for (let attempt = 0; attempt < 20 && found === 0; attempt++) {
      await page.goto("/shop/search?q=buoy");
      found = await page.getByRole("link", { name: "Harbour buoy" }).count();
      if (found === 0) await page.waitForTimeout(500);
    }
    check(found === 1, "the new product is not found by the storefront's search");
    await page.goto("/office");
    await page.getByLabel("Order id").fill(orderId);
    await page.getByRole("button", { name: "Open the order" }).click();
    await page.waitForURL(new RegExp(`/office/orders/${orderId}`));
    await page.getByLabel("Carrier").fill("DHL");
    await page.getByLabel("Tracking number").fill("JD014600003SE");
    await page.getByRole("button", { name: "Ship" }).click();
    await page.waitForURL(/done=shipped/);
    check((await page.locator(".shipments li").allTextContents()).length === 1, "no shipment shown");
    await page.getByLabel("Amount").fill("5.00");
    await page.getByLabel("Reason").fill("scratched");
    await page.getByRole("button", { name: "Refund" }).click();
    await page.waitForURL(/done=refunded/);
    let refunds = [];
    for (let attempt = 0; attempt < 20 && refunds.length === 0; attempt++) {
      await page.goto(`/office/orders/${orderId}`);
      refunds = await page.locator(".refunds li").allTextContents();
      if (refunds.length === 0) await page.waitForTimeout(500);
    }
    check(refunds.length === 1 && refunds[0].includes("5.00"), `refunds shown: ${JSON.stringify(refunds)}`);
    await shoot(page, "office-order-desktop");
    // The order is found among the confirmed ones, and the sagas page shows no parked saga.
    await page.goto("/office/orders");
    await page.getByLabel("Status").selectOption("CONFIRMED");
    await page.getByRole("button", { name: "Find orders" }).click();
    check(await page.getByRole("link", { name: orderId }).count() === 1, "the order is not among the confirmed ones");
    await shoot(page, "office-orders-desktop");
    await page.goto("/office");
    await page.getByRole("link", { name: "Checkout sagas" }).click();
    const sagas = await page.locator(".facts").textContent();
    check(/Parked\s*0/.test(sagas), `the sagas: ${sagas}`);
    // The messages the shop sent; one is sent once more.
    await page.goto("/office");
    await page.getByRole("link", { name: "Notifications" }).click();
    await page.getByLabel("Status").selectOption("sent");
    await page.getByRole("button", { name: "Show" }).click();
    const sent = await page.locator("tbody tr").count();
    check(sent >= 1, "no sent message is listed");
    await shoot(page, "office-notifications-desktop");
    await page.locator("tbody tr").first().getByRole("button", { name: "Resend" }).click();
    await page.waitForURL(/done=resent/);
    const notice = await page.getByRole("status").textContent();
    check(notice.includes("once more"), `after the resend: ${notice}`);
    result = { refunds, sagas, sent };
  } else if (scenario === "audit") {
    const [email, password, orderId] = rest;
    await logIn(page, email, password);
    await page.getByRole("link", { name: "Audit" }).click();
    await page.getByLabel("Stream id").fill(orderId);
    await page.getByRole("button", { name: "Open its history" }).click();
    await page.waitForURL(new RegExp(`/audit/streams/order/${orderId}`));
    const types = await page.locator(".event-type").allTextContents();
    check(types.length >= 3, `the order's history: ${JSON.stringify(types)}`);
    await shoot(page, "audit-stream-desktop");
    await page.locator(".event").first().getByRole("link").first().click();
    await page.waitForURL(/\/audit\/correlations\//);
    const caused = await page.locator(".event-type").allTextContents();
    check(caused.length >= 1, "the correlation's timeline is empty");
    await shoot(page, "audit-timeline-desktop");
    // The timeline as CloudEvents, as the export link downloads it.
    const exported = await page.request.get(await page.getByRole("link", { name: "Export as CloudEvents" }).getAttribute("href"));
    check(exported.status() === 200, `the export answered ${exported.status()}`);
    const cloudEvents = await exported.json();
    check(cloudEvents.length === caused.length && cloudEvents.every((event) => event.specversion === "1.0"),
      `the export: ${JSON.stringify(cloudEvents).slice(0, 400)}`);
    // The payment (its stream has the order's id) as it stood before the refund, and now.
    await page.goto(`/audit/streams/payment/${orderId}`);
    const refund = page.locator(".event").filter({ has: page.locator(".event-type", { hasText: /^RefundRequested$/ }) });
    check(await refund.count() === 1, "no RefundRequested in the payment's history");
    await refund.getByRole("link", { name: "before this event" }).click();
    await page.waitForURL(/\/state\?at=\d+/);
    const before = await page.locator("pre.state").textContent();
    check(before.includes('"refunds": {}'), `the state before the refund: ${before}`);
    await shoot(page, "audit-state-desktop");
    await page.getByRole("link", { name: "Its history" }).click();
    await page.getByRole("link", { name: "Its state now" }).click();
    const now = await page.locator("pre.state").textContent();
    check(!now.includes('"refunds": {}'), `the state now: ${now}`);
    // The whole log verifies.
    await page.goto("/audit");
    await page.getByRole("link", { name: "Verify the history" }).click();
    await page.getByRole("button", { name: "Verify" }).click();
    const verdict = await page.locator("#result-heading").textContent();
    check(verdict.startsWith("Verified"), `the verification: ${verdict}`);
    await shoot(page, "audit-verify-desktop");
    result = { history: types, caused, before: JSON.parse(before), now: JSON.parse(now), verdict };
  } else if (scenario === "admin") {
    const [email, password, customerEmail] = rest;
    await logIn(page, email, password);
    await page.getByRole("link", { name: "Back office" }).click();
    await page.getByRole("link", { name: "Projections" }).click();
    const projections = await page.locator("tbody th[scope=row]").allTextContents();
    check(projections.includes("products") && projections.includes("orders"), `projections: ${JSON.stringify(projections)}`);
    await shoot(page, "office-projections-desktop");
    await page.goto("/office");
    await page.getByRole("link", { name: "Dead letters" }).click();
    const deadLetters = await page.locator("main p").first().textContent();
    check(deadLetters.includes("without Kafka"), `the dead letters page: ${deadLetters}`);
    await page.goto("/office");
    await page.getByRole("link", { name: "Accounts" }).click();
    await page.getByLabel("Kind").selectOption("customer");
    await page.getByRole("button", { name: "Show" }).click();
    const row = page.locator("tbody tr").filter({ hasText: customerEmail });
    check(await row.count() === 1, `the customer's account is not listed`);
    await shoot(page, "office-accounts-desktop");
    await row.getByRole("button", { name: "Deactivate" }).click();
    await page.waitForURL(/done=/);
    const status = await page.locator("tbody tr").filter({ hasText: customerEmail }).locator("td").nth(4).textContent();
    check(status.startsWith("deactivated"), `the account's status: ${status}`);
    result = { projections, status };
  } else if (scenario === "refused") {
    const [email, password] = rest;
    await logIn(page, email, password);
    check(await page.getByRole("link", { name: "Back office" }).count() === 0, "a customer sees the back office");
    check(await page.getByRole("link", { name: "Audit" }).count() === 0, "a customer sees the audit");
    for (const path of ["/office", "/office/products", "/office/products/new", "/office/orders", "/office/sagas",
      "/office/projections", "/office/accounts", "/office/notifications", "/office/webhooks",
      "/office/dead-letters", "/audit",
      "/audit/verification"]) {
      expectedRefusals.add(path);
      const response = await page.goto(path);
      check(response.status() === 403, `${path} answered ${response.status()} to a customer`);
      check((await page.locator("h1").textContent()).includes("may not"), `${path} did not say why`);
    }
    result = { refused: [...expectedRefusals] };
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
} catch (error) {
  problems.push(`${scenario}: ${error.stack || error}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ...result, problems }));
process.exit(problems.length === 0 ? 0 : 1);
