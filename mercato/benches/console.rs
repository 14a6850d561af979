//! The web console's pages with 10,000 products, embedded: the storefront's home page and a
//! search page, each against the API calls it is made of, measured with wrk in the same run
//! (p50, p99 and throughput at 8 connections), and what each page weighs before images.
//!
//! Run with `just bench` or `cargo bench -p mercato --bench console`. BENCH_SECONDS (default 5)
//! sets each phase.

#[path = "../tests/it/common/mod.rs"]
mod common;
mod support;

use common::{Api, Server, ServerData, Setup};
use serde_json::{Value, json};
use support::{WrkResult, wrk};

/// Products in the catalogue, over this many categories.
const PRODUCTS: u64 = 10_000;
const CATEGORIES: u64 = 20;

fn line(label: &str, page: &WrkResult, baseline: &WrkResult, baseline_label: &str) {
    println!(
        "| {label} | {:.0}/s, p50 {}, p99 {} | {baseline_label}: {:.0}/s, p99 {} | {:.2}x |",
        page.requests_per_second,
        page.p50,
        page.p99,
        baseline.requests_per_second,
        baseline.p99,
        page.requests_per_second / baseline.requests_per_second.max(1.0),
    );
    assert_eq!(page.non_2xx, 0, "{label}: answers other than 2xx");
}

#[tokio::main]
async fn main() {
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let data = ServerData::new(Setup::Embedded, "bench_console")
        .await
        .expect("embedded");
    let server = Server::start(&data).await;
    let mut writers = Vec::new();
    for writer in 0..8_u64 {
        let api = Api::clone(&server);
        writers.push(tokio::spawn(async move {
            let words = [
                "trail", "espresso", "kettle", "lamp", "atlas", "tent", "keyboard", "tea",
            ];
            for index in 0..PRODUCTS / 8 {
                let word = words[((writer + index) % 8) as usize];
                let response = api
                    .request(reqwest::Method::POST, "/products")
                    .json(&json!({
                        "name": format!("{word} model {writer}-{index}"),
                        "description": format!("a {word} for every day"),
                        "price": 5 + (index % 300), "stock_qty": 10,
                        "category": format!("Aisle {}", (writer * 7 + index) % CATEGORIES),
                    }))
                    .send()
                    .await
                    .expect("post");
                assert_eq!(response.status(), 201);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    // Every product searchable and counted.
    let base = server.base.clone();
    loop {
        let found: Value = server
            .get("/search?limit=1")
            .await
            .json()
            .await
            .expect("search");
        let categories: Value = server
            .get("/categories")
            .await
            .json()
            .await
            .expect("categories");
        let counted: u64 = categories["categories"]
            .as_array()
            .map(|all| all.iter().filter_map(|c| c["products"].as_u64()).sum())
            .unwrap_or(0);
        if found["total"].as_u64() == Some(PRODUCTS) && counted == PRODUCTS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let client = reqwest::Client::new();
    let weight = |path: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let page = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("page");
            assert_eq!(page.status(), 200, "{path}");
            page.bytes().await.expect("body").len()
        }
    };
    let search_page = "/shop/search?q=lamp&category=Aisle%203";
    let home_bytes = weight("/").await;
    let search_bytes = weight(search_page).await;
    let css_bytes = weight("/assets/console.css").await;
    let icon_bytes = weight("/assets/icon.svg").await;

    // Warm once, then measure: each page, and the API calls it is made of.
    for path in ["/", search_page] {
        let _ = client.get(format!("{base}{path}")).send().await;
    }
    let home = wrk(&format!("{base}/"), 8, None).await;
    let categories = wrk(&format!("{base}/categories"), 8, None).await;
    let popular = wrk(&format!("{base}/recommendations?limit=8"), 8, None).await;
    let search = wrk(&format!("{base}{search_page}"), 8, None).await;
    let search_api = wrk(
        &format!("{base}/search?limit=20&offset=0&q=lamp&category=Aisle%203"),
        8,
        None,
    )
    .await;
    let categories_again = wrk(&format!("{base}/categories"), 8, None).await;
    let health = wrk(&format!("{base}/health"), 8, None).await;
    server.terminate().await;

    println!("| page | console | baseline | ratio |");
    println!("| --- | --- | --- | --- |");
    line("home page `/`", &home, &categories, "`GET /categories`");
    line(
        "home page `/`",
        &home,
        &popular,
        "`GET /recommendations?limit=8`",
    );
    line(
        "search page (words and a category)",
        &search,
        &search_api,
        "`GET /search`, same query",
    );
    line(
        "search page",
        &search,
        &categories_again,
        "`GET /categories` (it also calls it)",
    );
    line("home page `/`", &home, &health, "`GET /health`");
    println!(
        "weight before images: home {home_bytes} B, search {search_bytes} B, stylesheet {css_bytes} B, icon {icon_bytes} B: \
         home with its assets {:.1} kB, search {:.1} kB (target under 100 kB)",
        (home_bytes + css_bytes + icon_bytes) as f64 / 1000.0,
        (search_bytes + css_bytes + icon_bytes) as f64 / 1000.0,
    );
}
