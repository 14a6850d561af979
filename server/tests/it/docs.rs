//! The reference documents in `docs/reference/` are what the server generates from its own
//! OpenAPI document and table of settings: a change to either without the documents fails here.
//! `MERCATO_UPDATE_DOCS=1` rewrites them.

use std::path::PathBuf;

fn check(name: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/reference")
        .join(name);
    if std::env::var_os("MERCATO_UPDATE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "{} is not what the server generates: run `MERCATO_UPDATE_DOCS=1 cargo test -p server --all-features --test it docs` and commit it",
        path.display()
    );
}

#[test]
fn the_http_reference_is_generated_from_the_openapi_document() {
    let generated = server::reference::http_markdown();
    for route in server::documented_routes() {
        assert!(
            generated.contains(&format!(
                "## `{} {}`",
                route.method.as_str().to_uppercase(),
                route.path
            )),
            "{} {} is missing",
            route.method.as_str(),
            route.path
        );
    }
    check("http.md", &generated);
}

#[test]
fn the_configuration_reference_lists_every_setting() {
    let generated = server::reference::configuration_markdown();
    for variable in [
        "DATABASE_URL",
        "REDIS_URL",
        "KAFKA_BOOTSTRAP",
        "OPENSEARCH_URL",
    ] {
        assert!(generated.contains(variable), "{variable} is missing");
    }
    check("configuration.md", &generated);
}
