//! The web console, served by `mercato serve` at `/`: its pages, their security headers and
//! forms, and, in Debian's Chromium driven by Playwright (`console/browser`): a guest and a
//! customer shopping from search to a confirmed order, staff creating a product and shipping and
//! refunding the customer's order, an auditor reading its history, and the customer refused the
//! back office; with screenshots of the main pages at a desktop's and a phone's width.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE};
use serde_json::{Value, json};

use crate::common::{Server, ServerData, Setup, eventually};

/// The value of `name` among `response`'s `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| {
            let (pair, _) = cookie.split_once(';')?;
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
}

fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_their_policy_and_forms_need_their_token() {
    let data = ServerData::new(Setup::Embedded, "console_pages")
        .await
        .expect("embedded");
    let server = Server::start(&data).await;
    let (product_id, _) = server
        .create_product("Console kettle", "boils a page", 31.5, 4, "Kitchen")
        .await;
    let client = browser_client();
    let base = &server.base;
    // The categories come from the products read model: wait until it has the product.
    eventually(Duration::from_secs(30), || async {
        let categories: Value = server.get("/categories").await.json().await.ok()?;
        (categories["categories"] == json!([{ "name": "Kitchen", "products": 1 }])).then_some(())
    })
    .await
    .expect("GET /categories names the new product's category");
    // The counts are cached until the catalogue changes: a repeated read is a hit (once the
    // projections have finished with the product: a batch still applying it drops the counts
    // once more), and the next product is counted.
    eventually(Duration::from_secs(10), || async {
        let again = server.get("/categories").await;
        (again.headers()["x-cache"] == "hit").then_some(())
    })
    .await
    .expect("a repeated GET /categories is answered from the cache");
    server
        .create_product("Console teapot", "pours a page", 12.0, 2, "Kitchen")
        .await;
    eventually(Duration::from_secs(30), || async {
        let categories: Value = server.get("/categories").await.json().await.ok()?;
        (categories["categories"] == json!([{ "name": "Kitchen", "products": 2 }])).then_some(())
    })
    .await
    .expect("a new product is counted: the cached counts are dropped");

    let home = client.get(format!("{base}/")).send().await.expect("home");
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(
        home.headers()[CONTENT_SECURITY_POLICY],
        console::CONTENT_SECURITY_POLICY
    );
    assert!(
        home.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    let form_token = set_cookie(&home, "mercato_form").expect("a form token cookie");
    let page = home.text().await.expect("text");
    assert!(
        page.contains("Kitchen"),
        "the category is on the home page:\n{page}"
    );
    assert!(!page.contains("<script"), "no script on the page");

    let css = client
        .get(format!("{base}/assets/console.css"))
        .send()
        .await
        .expect("css");
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");

    // The product page, and a search with what to fix.
    let product = client
        .get(format!("{base}/shop/products/{product_id}"))
        .send()
        .await
        .expect("product");
    assert_eq!(product.status(), StatusCode::OK);
    assert!(product.text().await.expect("text").contains("31.50"));
    let not_a_product = client
        .get(format!("{base}/shop/products/not-a-product"))
        .send()
        .await
        .expect("unknown");
    assert_eq!(not_a_product.status(), StatusCode::NOT_FOUND);
    let bad_page = client
        .get(format!("{base}/shop/search?page=0"))
        .send()
        .await
        .expect("page 0");
    assert_eq!(bad_page.status(), StatusCode::BAD_REQUEST);
    assert!(
        bad_page
            .text()
            .await
            .expect("text")
            .contains("whole number from 1")
    );
    let bad_price = client
        .get(format!("{base}/shop/search?min_price=cheap"))
        .send()
        .await
        .expect("bad price");
    assert_eq!(bad_price.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_price.text().await.expect("text").contains("min_price"));

    // A form without the visitor's token, or from another site, is refused and changes nothing.
    let cookie = format!("mercato_form={form_token}");
    let add = |token: &str, origin: Option<&str>| {
        let mut request = client
            .post(format!("{base}/shop/cart/items"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", token),
                ("product_id", product_id.as_str()),
                ("quantity", "1"),
            ]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let forged = add("0123456789abcdef0123456789abcdef", None)
        .await
        .expect("forged");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(set_cookie(&forged, "mercato_cart"), None);
    let elsewhere = add(&form_token, Some("https://evil.example"))
        .await
        .expect("cross-site");
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    // With the token the line is added (a guest's cart, its token kept in a cookie).
    let added = add(&form_token, None).await.expect("add");
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let cart = set_cookie(&added, "mercato_cart").expect("a cart cookie");
    assert!(cart.starts_with("web-"), "{cart}");
    let location = added.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let cart_page = client
        .get(format!("{base}{location}"))
        .header("cookie", format!("{cookie}; mercato_cart={cart}"))
        .send()
        .await
        .expect("cart page");
    assert_eq!(cart_page.status(), StatusCode::OK);
    let cart_page = cart_page.text().await.expect("text");
    assert!(
        cart_page.contains("Console kettle") && cart_page.contains("31.50"),
        "{cart_page}"
    );

    // A quantity the API would refuse is explained.
    let zero = client
        .post(format!("{base}/shop/cart/items"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", form_token.as_str()),
            ("product_id", &product_id),
            ("quantity", "0"),
        ])
        .send()
        .await
        .expect("zero");
    assert_eq!(zero.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(zero.text().await.expect("text").contains("from 1 to 999"));
    server.terminate().await;
}

/// Where the browser tests live, and whether they can run here: Debian's Chromium, Node.js,
/// and playwright-core installed by `scripts/test-setup`.
fn browser_tests(test_name: &str) -> Option<PathBuf> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../console/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let missing = if !Path::new(&chromium).exists() {
        Some("Debian's chromium is not installed (scripts/test-setup installs it)")
    } else if !directory.join("node_modules/playwright-core").exists() {
        Some("playwright-core is not installed in console/browser (scripts/test-setup installs it)")
    } else if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        Some("node is not installed")
    } else {
        None
    };
    match missing {
        Some(reason) => {
            mail::testing::skip_or_fail(test_name, reason);
            None
        }
        None => Some(directory),
    }
}

/// Runs browser scenario `scenario`; answers its result.
async fn scenario(directory: &Path, base: &str, shots: &Path, arguments: &[&str]) -> Value {
    let output = tokio::process::Command::new("node")
        .arg(directory.join("storefront.mjs"))
        .arg(arguments[0])
        .arg(base)
        .arg(shots)
        .args(&arguments[1..])
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or(Value::Null);
    assert!(
        output.status.success() && result["problems"] == json!([]),
        "browser scenario {arguments:?} failed:\n{stdout}\n{stderr}"
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_and_a_customer_shop_in_chromium() {
    let test_name = "console_browser";
    let Some(directory) = browser_tests(test_name) else {
        return;
    };
    let data = ServerData::new(Setup::Embedded, test_name)
        .await
        .expect("embedded");
    // Staff (catalog and support) and an auditor, made as an operator makes them.
    let staff_password = "a long back office passphrase 9";
    for (email, role) in [
        ("ops@example.com", "staff"),
        ("books@example.com", "auditor"),
        ("boss@example.com", "admin"),
    ] {
        let (code, _, stderr) = crate::accounts::run_with_input(
            &data,
            &["users", "add", "--email", email, "--role", role],
            &format!("{staff_password}\n"),
        )
        .await;
        assert_eq!(code, 0, "{stderr}");
    }
    let server = Server::start(&data).await;
    server
        .create_product(
            "Harbour lamp",
            "a lamp for a long night",
            24.0,
            50,
            "Lighting",
        )
        .await;
    server
        .create_product("Harbour rope", "ten metres of rope", 9.5, 50, "Outdoor")
        .await;
    // Screenshots go where the build's output goes (target/console-screenshots).
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    // The search index follows the log: wait until the products are found.
    eventually(Duration::from_secs(30), || async {
        let found: Value = server.get("/search?q=harbour").await.json().await.ok()?;
        (found["total"] == 2).then_some(())
    })
    .await;

    let guest = scenario(&directory, &server.base, &shots, &["guest", "Harbour lamp"]).await;
    let order_id = guest["order_id"]
        .as_str()
        .expect("the guest's order")
        .to_owned();
    let order: Value = server
        .get(&format!("/orders/{order_id}"))
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["lines"][0]["quantity"], 2, "{order}");
    assert_eq!(order["shipping_address"]["city"], "Hamburg", "{order}");

    let customer = scenario(
        &directory,
        &server.base,
        &shots,
        &["customer", "Harbour rope"],
    )
    .await;
    let order_id = customer["order_id"]
        .as_str()
        .expect("the customer's order")
        .to_owned();
    // Staff ship the customer's order and refund part of it, in the back office.
    let office = scenario(
        &directory,
        &server.base,
        &shots,
        &["office", "ops@example.com", staff_password, &order_id],
    )
    .await;
    assert!(
        office["refunds"][0].as_str().unwrap_or("").contains("5.00"),
        "{office}"
    );
    let refunded = eventually(Duration::from_secs(30), || async {
        let order: Value = server
            .get(&format!("/orders/{order_id}"))
            .await
            .json()
            .await
            .ok()?;
        (order["refunded_total"].as_f64() == Some(5.0)).then_some(order)
    })
    .await
    .expect("the refund of 5.00 is recorded")
    .0;
    assert_eq!(
        refunded["shipments"][0]["tracking_number"], "JD014600003SE",
        "{refunded}"
    );
    let email = customer["email"].as_str().expect("email");
    let password = customer["password"].as_str().expect("password");
    let seen = scenario(
        &directory,
        &server.base,
        &shots,
        &["shipment", email, password, &order_id],
    )
    .await;
    assert!(
        seen["shipments"][0]
            .as_str()
            .unwrap_or("")
            .contains("JD014600003SE"),
        "{seen}"
    );
    // An auditor reads the order's history and what one of its requests caused.
    let audit = scenario(
        &directory,
        &server.base,
        &shots,
        &["audit", "books@example.com", staff_password, &order_id],
    )
    .await;
    let history = audit["history"].to_string();
    assert!(
        history.contains("OrderConfirmed") && history.contains("ShipmentCreated"),
        "{history}"
    );
    // The payment before the refund had none; now it has the one of 5.00.
    assert_eq!(audit["before"]["refunds"], serde_json::json!({}), "{audit}");
    let refunds = audit["now"]["refunds"].as_object().expect("refunds");
    assert_eq!(refunds.len(), 1, "{audit}");
    assert!(
        audit["verdict"]
            .as_str()
            .is_some_and(|verdict| verdict.starts_with("Verified")),
        "{audit}"
    );
    assert!(
        office["sagas"]
            .as_str()
            .is_some_and(|sagas| sagas.contains("Running")),
        "{office}"
    );
    // The customer has no way into either.
    scenario(
        &directory,
        &server.base,
        &shots,
        &["refused", email, password],
    )
    .await;
    // An admin sees the projections and deactivates the customer, who can then not log in.
    let admin = scenario(
        &directory,
        &server.base,
        &shots,
        &["admin", "boss@example.com", staff_password, email],
    )
    .await;
    assert!(
        admin["status"]
            .as_str()
            .is_some_and(|status| status.starts_with("deactivated")),
        "{admin}"
    );
    let login = server
        .anonymous()
        .post("/sessions", json!({ "email": email, "password": password }))
        .await;
    assert!(login.status().is_client_error(), "{}", login.status());
    server.terminate().await;
}
