//! Route documentation: each API registers a route together with its [`RouteDoc`] through a
//! [`DocumentedRouter`], so the router and the OpenAPI document come from one list and cannot
//! drift apart. [`document`] joins the parts of every API into the document `GET /openapi.json`
//! serves.

use axum::Router;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};
use serde_json::{Map, Value, json};

use crate::access::{Access, GuestToken};

/// The HTTP methods mercato's routes answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method's name as the OpenAPI document writes it (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }

    /// The method as HTTP names it.
    pub fn http(self) -> axum::http::Method {
        match self {
            Method::Get => axum::http::Method::GET,
            Method::Post => axum::http::Method::POST,
            Method::Put => axum::http::Method::PUT,
            Method::Patch => axum::http::Method::PATCH,
            Method::Delete => axum::http::Method::DELETE,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Patch => MethodFilter::PATCH,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// One documented route.
#[derive(Clone, Copy, Debug)]
pub struct RouteDoc {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    /// The request body's schema (a component name), if it takes one.
    pub body: Option<&'static str>,
    /// The success status and the answer's schema (a component name).
    pub success: (u16, &'static str),
    /// Query parameters: name and description.
    pub query: &'static [(&'static str, &'static str)],
    /// Whether `X-Min-Position` applies (read-your-writes).
    pub min_position: bool,
}

impl RouteDoc {
    /// A route without body, query parameters or `X-Min-Position`, answering 200 with `schema`.
    pub const fn get(path: &'static str, summary: &'static str, schema: &'static str) -> Self {
        RouteDoc {
            method: Method::Get,
            path,
            summary,
            body: None,
            success: (200, schema),
            query: &[],
            min_position: false,
        }
    }
}

/// One API's part of the OpenAPI document: its routes, and the schemas they name beyond the
/// shared ones (`Problem`, `Object`, `Text`; `Empty` names no schema: a 204).
#[derive(Clone, Debug, Default)]
pub struct ApiDoc {
    pub routes: Vec<RouteDoc>,
    pub schemas: Map<String, Value>,
    /// The roles whose processes serve these routes (`x-mercato-roles`); none said when empty.
    pub served_by: Vec<String>,
}

/// A router that keeps the documentation of every route it was given.
#[derive(Debug)]
pub struct DocumentedRouter<S = ()> {
    router: Router<S>,
    routes: Vec<RouteDoc>,
}

impl<S: Clone + Send + Sync + 'static> Default for DocumentedRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> DocumentedRouter<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            routes: Vec::new(),
        }
    }

    /// Serves `handler` at the method and path `doc` documents.
    pub fn route<H, T>(mut self, doc: RouteDoc, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self
            .router
            .route(doc.path, on(doc.method.filter(), handler));
        self.routes.push(doc);
        self
    }

    /// The routes, to be given their state.
    pub fn into_router(self) -> Router<S> {
        self.router
    }

    /// The documentation of the routes, with `schemas` for the components they name.
    pub fn into_doc(self, schemas: Map<String, Value>) -> ApiDoc {
        ApiDoc {
            routes: self.routes,
            schemas,
            served_by: Vec::new(),
        }
    }
}

const MIN_POSITION: (&str, &str) = (
    "min_position",
    "wait (at most 5 s, else 503) until the read model has processed this position",
);

/// A reference to component schema `name`.
pub fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": schema_ref("Problem") } }
    })
}

/// The schemas every part may name.
fn shared_schemas() -> Map<String, Value> {
    let schemas = json!({
        "Problem": { "type": "object", "required": ["type", "title", "status", "detail"], "properties": {
            "type": { "type": "string" }, "title": { "type": "string" }, "status": { "type": "integer" },
            "detail": { "type": "string", "description": "what to fix" },
            "field": { "type": "string", "description": "the input field at fault" } } },
        "Object": { "type": "object" },
        "Text": { "type": "string" }
    });
    match schemas {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A path parameter's schema, by the name every route gives it.
fn path_schema(name: &str) -> Value {
    match name {
        "product_id" | "order_id" | "user_id" => json!({ "type": "string", "format": "uuid" }),
        "cart_id" | "customer_id" => client_id_schema(),
        "stream_type" => json!({ "type": "string", "enum": domain::stream_types() }),
        _ => json!({ "type": "string", "minLength": 1 }),
    }
}

/// A query parameter's schema: a range its description starts with (`1 to 100, default 20`),
/// else what the parameter of that name takes on every route; and whether it is required.
fn query_schema(name: &str, description: &str) -> (Value, bool) {
    let range = description
        .split(',')
        .next()
        .and_then(|range| range.split_once(" to "))
        .and_then(|(low, high)| {
            Some((
                low.trim().parse::<u64>().ok()?,
                high.trim().parse::<u64>().ok()?,
            ))
        });
    if let Some((minimum, maximum)) = range {
        return (
            json!({ "type": "integer", "minimum": minimum, "maximum": maximum }),
            false,
        );
    }
    let schema = match name {
        "customer_id" => client_id_schema(),
        "after" | "after_version" => json!({ "type": "integer", "minimum": 0 }),
        "min_price" | "max_price" => {
            json!({ "type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,2})?$", "description": "a decimal number, at most two decimals" })
        }
        "correlation_id" => json!({ "type": "string", "pattern": "^[!-~]{1,128}$" }),
        "q" => json!({ "type": "string", "maxLength": 200 }),
        "category" => json!({ "type": "string", "maxLength": 100 }),
        _ => json!({ "type": "string" }),
    };
    (schema, description == "required")
}

/// The security schemes of the document: a bearer token (an access token or an API key), and
/// the tokens guests hold for a cart or an order.
fn security_schemes() -> Value {
    json!({
        "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT (EdDSA) or API key",
            "description": "an access token from POST /sessions (verify it with GET /.well-known/jwks.json), or an API key (mk_...)" },
        "cartToken": { "type": "apiKey", "in": "header", "name": GuestToken::Cart.header(),
            "description": "a guest's cart token, from the answer to the cart's first write" },
        "orderToken": { "type": "apiKey", "in": "header", "name": GuestToken::Order.header(),
            "description": "a guest's order token, from the checkout's answer" }
    })
}

/// An operation's security requirements under `access`: each alternative that admits a caller.
fn security(access: &Access) -> Value {
    let mut alternatives = Vec::new();
    if access.anyone {
        alternatives.push(json!({}));
    }
    if let Some(token) = access.guests {
        alternatives.push(json!({ token.scheme(): [] }));
        if token == GuestToken::Cart {
            // A cart's first write needs no token: it answers one.
            alternatives.push(json!({}));
        }
    }
    // Every route takes a bearer token: a route for anyone reads it too (a customer's own
    // recommendations, say), and one that does not hold is a 401 everywhere.
    alternatives.push(json!({ "bearer": [] }));
    Value::Array(alternatives)
}

/// What the permission table says of a route, for its operation in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRule {
    /// Who may call it.
    pub access: Access,
    /// Whether it creates something (it takes `Idempotency-Key`).
    pub creates: bool,
}

fn operation(route: &RouteDoc, rule: Option<&RouteRule>) -> Value {
    let access = rule.map(|rule| &rule.access);
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": path_schema(name) }))
        .collect();
    for (name, description) in route.query {
        let (schema, required) = query_schema(name, description);
        parameters.push(json!({ "name": name, "in": "query", "description": description, "required": required, "schema": schema }));
    }
    if route.min_position {
        let position = json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX });
        parameters.push(json!({ "name": MIN_POSITION.0, "in": "query", "description": MIN_POSITION.1, "schema": position }));
        parameters.push(json!({ "name": "X-Min-Position", "in": "header", "description": MIN_POSITION.1, "schema": position }));
    }
    let creates = rule.is_some_and(|rule| rule.creates);
    if creates {
        parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "description": "makes a retry safe (IETF draft-ietf-httpapi-idempotency-key-header): the same key and request within 24 hours answers the first answer again, with `Idempotent-Replayed: true`; the same key with another request is 422; while the first runs, 409",
            "schema": { "type": "string", "minLength": 1, "maxLength": 257, "pattern": "^([!#-\\[\\]-~]([ !#-\\[\\]-~]{0,253}[!#-\\[\\]-~])?|\"[ !#-\\[\\]-~]{1,255}\")$" }
        }));
    }
    let (status, schema) = route.success;
    let content_type = if schema == "Text" {
        "text/plain"
    } else {
        "application/json"
    };
    let mut responses = Map::new();
    // `Empty`: a 204 without a body.
    let success = if schema == "Empty" {
        json!({ "description": "success (no body)" })
    } else {
        json!({ "description": "success", "content": { content_type: { "schema": schema_ref(schema) } } })
    };
    responses.insert(status.to_string(), success);
    responses.insert("4XX".to_owned(), problem_response("what to fix in the request (400 malformed, 401 credentials missing or not valid, 403 not allowed, 404 unknown or not yours, 409 conflict or broken rule, 413 too large, 422 invalid field, 429 too many requests: see Retry-After)"));
    responses.insert(
        "503".to_owned(),
        problem_response(
            "overloaded, a dependency is unavailable, or a read model did not reach min_position in time: see Retry-After",
        ),
    );
    if let Some(access) = access {
        if !access.anyone {
            responses.insert(
                "401".to_owned(),
                problem_response("credentials are missing or do not hold (WWW-Authenticate: Bearer): log in, refresh the token, or use a valid API key"),
            );
            responses.insert(
                "403".to_owned(),
                problem_response("the credentials do not allow this route"),
            );
        }
        if access.guests.is_some() || access.customers || access.accounts {
            responses.insert(
                "404".to_owned(),
                problem_response("no such resource, or it is not yours"),
            );
        }
    }
    let mut operation =
        json!({ "summary": route.summary, "parameters": parameters, "responses": responses });
    if let (Some(access), Some(object)) = (access, operation.as_object_mut()) {
        object.insert("security".to_owned(), security(access));
        object.insert(
            "x-mercato-access".to_owned(),
            Value::String(access.describe()),
        );
    }
    if let (Some(body), Some(object)) = (route.body, operation.as_object_mut()) {
        object.insert(
            "requestBody".to_owned(),
            json!({ "required": true, "content": { "application/json": { "schema": schema_ref(body) } } }),
        );
    }
    operation
}

/// The OpenAPI 3.1 document of `parts`, in their order, each operation with who may call it
/// (`rule_of`: the permission table's rule of a method and path).
pub fn document(
    title: &str,
    version: &str,
    description: &str,
    parts: &[ApiDoc],
    rule_of: &dyn Fn(Method, &str) -> Option<RouteRule>,
) -> Value {
    let mut paths = Map::new();
    let mut schemas = shared_schemas();
    for part in parts {
        for route in &part.routes {
            let entry = paths
                .entry(route.path.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(methods) = entry.as_object_mut() {
                let rule = rule_of(route.method, route.path);
                let mut operation = operation(route, rule.as_ref());
                if let (false, Some(object)) =
                    (part.served_by.is_empty(), operation.as_object_mut())
                {
                    object.insert("x-mercato-roles".to_owned(), json!(part.served_by));
                }
                methods.insert(route.method.as_str().to_owned(), operation);
            }
        }
        for (name, schema) in &part.schemas {
            schemas.insert(name.clone(), schema.clone());
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": title, "version": version, "description": description },
        "paths": paths,
        "components": { "schemas": schemas, "securitySchemes": security_schemes() },
    })
}

/// The schema of a price: a JSON number in major units, more than zero, in cents.
pub fn money_schema() -> Value {
    json!({ "type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000, "multipleOf": 0.01,
        "description": "major units, at most two decimals (written as decimal text: 0.57, never 0.5700000000000001)" })
}

/// The schema of a sum of money an answer carries (a total), which may be zero.
pub fn amount_schema() -> Value {
    json!({ "type": "number", "minimum": 0, "multipleOf": 0.01, "description": "major units" })
}

/// The schema of a client-chosen id (`cart_id`, `customer_id`).
pub fn client_id_schema() -> Value {
    json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" })
}

/// The object of a `json!({...})` literal, for [`ApiDoc::schemas`].
pub fn schemas(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn ok() -> &'static str {
        "ok"
    }

    #[tokio::test]
    async fn a_documented_route_is_served_at_its_method_and_listed_in_the_document() {
        let routes = DocumentedRouter::<()>::new()
            .route(RouteDoc::get("/a/{id}", "read an a", "Object"), ok)
            .route(
                RouteDoc {
                    method: Method::Delete,
                    ..RouteDoc::get("/a/{id}", "delete an a", "Object")
                },
                ok,
            );
        let doc = DocumentedRouter::<()>::new()
            .route(RouteDoc::get("/a/{id}", "read an a", "Object"), ok)
            .into_doc(Map::new());
        let router = routes.into_router();
        let get = router
            .clone()
            .oneshot(Request::get("/a/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(get.status(), StatusCode::OK);
        let post = router
            .oneshot(Request::post("/a/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let document = document("t", "1", "d", &[doc], &|_, _| {
            Some(RouteRule {
                access: Access::ANYONE,
                creates: false,
            })
        });
        assert_eq!(
            document["paths"]["/a/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
        assert!(document["components"]["schemas"]["Problem"].is_object());
    }
}
