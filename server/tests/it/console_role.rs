//! The console in a process of its own (role `console`): its pages call the API at
//! `MERCATO_API_URL` over HTTP, reading and writing as they do in role `all`; without the URL
//! the role does not start.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, TestData, eventually};
use server::{Error, Server, bind};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_role_serves_pages_over_the_api_at_its_url() {
    let Some(data) = TestData::new(Setup::Embedded, "console_role").await else {
        return;
    };
    let api = TestApp::start_role(&data, "all").await;
    let (product_id, _) = api
        .create_product("Remote lamp", "lit from afar", 14.0, 5, "Faraway")
        .await;
    eventually(Duration::from_secs(30), || async {
        let categories: Value = api.get("/categories").await.json().await.ok()?;
        (categories["categories"] == json!([{ "name": "Faraway", "products": 1 }])).then_some(())
    })
    .await
    .expect("the category is read");

    // Without the API's address the role does not start, and says what to set.
    let missing = data.config("console", &[]);
    let listener = bind(missing.listen).await.expect("bind");
    match Server::build(&missing, listener).await {
        Err(Error::Usage(message)) => assert!(message.contains("MERCATO_API_URL"), "{message}"),
        Err(other) => panic!("not a usage error: {other:?}"),
        Ok(_) => panic!("role console started without MERCATO_API_URL"),
    }
    let with_path = data.config("console", &["--api-url", "http://127.0.0.1:1/api"]);
    let listener = bind(with_path.listen).await.expect("bind");
    assert!(matches!(
        Server::build(&with_path, listener).await,
        Err(Error::Usage(_))
    ));

    let base = api.url("");
    let console = TestApp::start_with(&data, "console", &["--api-url", &base]).await;
    // The console process serves pages and its own probes, not the API.
    assert_eq!(
        console.get("/search?q=lamp").await.status(),
        StatusCode::NOT_FOUND
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let home = client
        .get(console.url("/"))
        .send()
        .await
        .expect("home page");
    assert_eq!(home.status(), StatusCode::OK);
    let form_token = set_cookie(&home, "mercato_form").expect("a form token");
    let page = home.text().await.expect("text");
    assert!(page.contains("Faraway"), "{page}");
    let product = client
        .get(console.url(&format!("/shop/products/{product_id}")))
        .send()
        .await
        .expect("product page");
    assert_eq!(product.status(), StatusCode::OK);
    assert!(product.text().await.expect("text").contains("14.00"));

    // A write goes through too: a guest's cart line, its token kept in a cookie.
    let cookie = format!("mercato_form={form_token}");
    let added = client
        .post(console.url("/shop/cart/items"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", form_token.as_str()),
            ("product_id", product_id.as_str()),
            ("quantity", "2"),
        ])
        .send()
        .await
        .expect("add to cart");
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let cart = set_cookie(&added, "mercato_cart").expect("a cart cookie");
    // The page it sends to reads at the write's position.
    let location = added.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let cart_page = client
        .get(console.url(&location))
        .header("cookie", format!("{cookie}; mercato_cart={cart}"))
        .send()
        .await
        .expect("cart page");
    assert_eq!(cart_page.status(), StatusCode::OK);
    let cart_page = cart_page.text().await.expect("text");
    assert!(
        cart_page.contains("Remote lamp") && cart_page.contains("28.00"),
        "{cart_page}"
    );

    // With the API gone, a page says the shop is unavailable and when to try again.
    api.stop().await;
    let down = client
        .get(console.url("/"))
        .send()
        .await
        .expect("home page");
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(down.headers().contains_key("retry-after"));
    console.stop().await;
}
