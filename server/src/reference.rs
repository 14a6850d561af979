//! The reference documents of mercato's outside surface, generated from what the server itself
//! serves and reads: the HTTP API from the OpenAPI document, the configuration from the table
//! of settings. `docs/reference/` holds them; a test keeps the files equal to what is generated
//! here (`MERCATO_UPDATE_DOCS=1 cargo test -p server --test it docs` rewrites them).

use std::fmt::Write;

use clap::Args;
use serde_json::Value;

use crate::config::Settings;
use crate::ops::{openapi_document, parts};

/// `docs/reference/http.md`: every route, its parameters, body and answers.
pub fn http_markdown() -> String {
    let document = openapi_document();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HTTP API\n\n<!-- Generated from GET /openapi.json (server/src/reference.rs); do not edit. -->\n\n{}\n",
        document["info"]["description"].as_str().unwrap_or_default()
    );
    out.push_str(
        "Every error is a problem body (`application/problem+json`, RFC 9457) whose `detail` says \
         what to fix and whose `field` names the input at fault. Writes answer with \
         `X-Event-Position`; a read given that position in `X-Min-Position` (or \
         `?min_position=`) waits until its read model has applied it. Callers prove who they \
         are with `Authorization: Bearer <token>` (an access token from `POST /sessions`, or an \
         API key); each route says who may call it (`server::policy`, the permission table).\n",
    );
    let schemas = &document["components"]["schemas"];
    if let Some(paths) = document["paths"].as_object() {
        for (path, methods) in paths {
            let Some(methods) = methods.as_object() else {
                continue;
            };
            for (method, operation) in methods {
                let _ = writeln!(
                    out,
                    "\n## `{} {path}`\n\n{}\n",
                    method.to_uppercase(),
                    operation["summary"].as_str().unwrap_or_default()
                );
                if let Some(access) = operation["x-mercato-access"].as_str() {
                    let _ = writeln!(out, "Who may call it: {access}.\n");
                }
                if let Some(roles) = operation["x-mercato-roles"].as_array() {
                    let roles: Vec<String> = roles
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|role| format!("`{role}`"))
                        .collect();
                    let _ = writeln!(out, "Served by the roles {}.\n", roles.join(", "));
                }
                parameters(&mut out, &operation["parameters"]);
                if let Some(body) =
                    operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                {
                    let name = component_name(body);
                    let _ = writeln!(out, "Body: `{name}`, a JSON object.\n");
                    properties(&mut out, &schemas[name]);
                }
                answers(&mut out, &operation["responses"]);
            }
        }
    }
    out
}

fn component_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn parameters(out: &mut String, parameters: &Value) {
    let Some(parameters) = parameters.as_array().filter(|list| !list.is_empty()) else {
        return;
    };
    out.push_str("| Parameter | In | Description |\n| --- | --- | --- |\n");
    for parameter in parameters {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            parameter["name"].as_str().unwrap_or_default(),
            parameter["in"].as_str().unwrap_or_default(),
            cell(parameter["description"].as_str().unwrap_or_default())
        );
    }
    out.push('\n');
}

/// The JSON type a schema names, in words.
fn type_name(schema: &Value) -> String {
    match &schema["type"] {
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "object".to_owned(),
    }
}

fn properties(out: &mut String, schema: &Value) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| Field | Type | Required | Rules |\n| --- | --- | --- | --- |\n");
    for (name, property) in properties {
        // `anyOf` (a value or null): the types of its alternatives, the rules of the first one
        // that is not null, and the description of the whole.
        let alternatives = property["anyOf"].as_array();
        let kind = match alternatives {
            Some(alternatives) => alternatives
                .iter()
                .map(type_name)
                .collect::<Vec<_>>()
                .join(" or "),
            None => type_name(property),
        };
        let ruled = alternatives
            .and_then(|alternatives| alternatives.iter().find(|one| one["type"] != "null"))
            .unwrap_or(property);
        let mut rules = Vec::new();
        for (key, label) in [
            ("minimum", "at least"),
            ("exclusiveMinimum", "more than"),
            ("maximum", "at most"),
            ("multipleOf", "a multiple of"),
            ("minLength", "at least characters:"),
            ("maxLength", "at most characters:"),
            ("pattern", "pattern"),
            ("format", "format"),
        ] {
            if let Some(value) = ruled.get(key) {
                rules.push(format!("{label} `{}`", value.to_string().trim_matches('"')));
            }
        }
        if let Some(description) = property["description"].as_str() {
            rules.push(description.to_owned());
        }
        let _ = writeln!(
            out,
            "| `{name}` | {kind} | {} | {} |",
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                "no"
            },
            cell(&rules.join("; "))
        );
    }
    out.push('\n');
}

fn answers(out: &mut String, responses: &Value) {
    let Some(responses) = responses.as_object() else {
        return;
    };
    out.push_str("| Answer | Body | When |\n| --- | --- | --- |\n");
    for (status, response) in responses {
        let schema = response["content"]
            .as_object()
            .and_then(|content| content.values().next())
            .and_then(|media| media["schema"]["$ref"].as_str())
            .map_or("", component_name);
        let _ = writeln!(
            out,
            "| {status} | `{schema}` | {} |",
            cell(response["description"].as_str().unwrap_or_default())
        );
    }
}

/// `docs/reference/configuration.md`: every setting, its flag, variable and file key.
pub fn configuration_markdown() -> String {
    let command = Settings::augment_args(clap::Command::new("mercato"));
    let mut out = String::from(
        "# Configuration\n\n<!-- Generated from the table of settings (server/src/config.rs, server/src/reference.rs); do not edit. -->\n\n\
         A value is taken from the flag, then the environment variable, then the config file \
         (`--config FILE`, TOML, the key below), then the default. It is checked the same way \
         wherever it comes from. `mercato config` prints the configuration a process would run \
         with as a config file (passwords masked). `--listen` and `--role` are flags of \
         `mercato serve` and `mercato config` only.\n\n\
         | File key | Flag | Environment | Meaning |\n| --- | --- | --- | --- |\n",
    );
    for argument in command.get_arguments() {
        let key = argument.get_id().as_str();
        let flag = argument
            .get_long()
            .map_or_else(|| "(serve's flag)".to_owned(), |long| format!("`--{long}`"));
        let environment = argument
            .get_env()
            .map_or_else(String::new, |name| format!("`{}`", name.to_string_lossy()));
        let help = argument
            .get_long_help()
            .or_else(|| argument.get_help())
            .map(|help| help.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{key}` | {flag} | {environment} | {} |",
            cell(&help)
        );
    }
    out
}

/// The gateway's route table (`deploy/helm/mercato/files/gateway/routes.conf`): an nginx `map`
/// from a request's method and path to the role that serves it, for a deployment that runs
/// each role as its own process behind one address. Read off the same parts as the OpenAPI
/// document, so a route cannot be served by one role and sent to another.
///
/// The map's key is `"$mercato_method $mercato_path"` (HEAD counted as GET, the path without
/// its query string, as the client sent it); its value names an nginx upstream:
/// `command-api`, `query-api`, or `console` for every other path (the console's pages). A
/// route every role serves (`/health`, `/openapi.json`, ...) goes to `query-api`.
pub fn gateway_routes() -> String {
    let mut exact = Vec::new();
    let mut patterns = Vec::new();
    for part in parts() {
        let serves = |role: &str| part.served_by.iter().any(|served| served == role);
        let upstream = if serves("command-api") && !serves("query-api") {
            "command-api"
        } else if serves("query-api") {
            "query-api"
        } else {
            continue;
        };
        for route in &part.routes {
            let method = route.method.as_str().to_uppercase();
            if route.path.contains('{') {
                // A path parameter is one segment: anything but '/' and the query's '?'.
                let pattern: String = route
                    .path
                    .split('/')
                    .map(|segment| {
                        if segment.starts_with('{') {
                            "[^/?]+".to_owned()
                        } else {
                            regex_escape(segment)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                patterns.push(format!("    \"~^{method} {pattern}$\" {upstream};"));
            } else {
                exact.push(format!("    \"{method} {}\" {upstream};", route.path));
            }
        }
    }
    exact.sort();
    exact.dedup();
    patterns.sort();
    patterns.dedup();
    format!(
        "# Generated from the routes and the roles table (server/src/reference.rs); do not edit.\n\
         # `MERCATO_UPDATE_DOCS=1 cargo test -p server --all-features --test it docs` rewrites it.\n\
         # Which role serves a request, by method and path; any other path is the console's.\n\
         # nginx tries the exact keys first, then the patterns in order.\n\
         map \"$mercato_method $mercato_path\" $mercato_upstream {{\n    default console;\n{}\n{}\n}}\n",
        exact.join("\n"),
        patterns.join("\n")
    )
}

/// `text` with the characters a PCRE pattern gives a meaning to escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if ".^$*+?()[]{}|\\".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}
