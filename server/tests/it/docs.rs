//! The reference documents in `docs/reference/` and the deployment's gateway route table are
//! what the server generates from its own routes, roles and table of settings: a change to
//! either without the files fails here. `MERCATO_UPDATE_DOCS=1` rewrites them.

use std::path::PathBuf;

/// Checks (or rewrites) the generated file at `name`, a path from the repository's root.
fn check(name: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
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
    check("docs/reference/http.md", &generated);
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
    check("docs/reference/configuration.md", &generated);
}

#[test]
fn the_gateway_sends_every_route_to_a_role_that_serves_it() {
    let generated = server::reference::gateway_routes();
    for (key, upstream) in [
        ("\"GET /search\" query-api;", "query-api"),
        ("\"POST /orders\" command-api;", "command-api"),
        ("\"GET /sagas\" command-api;", "command-api"),
        ("\"~^GET /products/[^/?]+$\" query-api;", "query-api"),
        ("\"~^PUT /products/[^/?]+$\" command-api;", "command-api"),
        ("\"GET /health\" query-api;", "query-api"),
    ] {
        assert!(generated.contains(key), "{key} ({upstream}) is missing");
    }
    assert!(generated.contains("default console;"));
    assert!(
        !generated.contains("/shop"),
        "the console's pages are the default"
    );
    check("deploy/helm/mercato/files/gateway/routes.conf", &generated);
}
