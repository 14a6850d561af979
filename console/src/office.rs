//! The back office, for staff by role: products (list, create, edit, restock) for the catalog
//! role; orders (open, ship, cancel, refund) and parked checkout sagas (run again) for support;
//! projections (lag, parks, rebuilds; clear a park) for admins. Each page and button is shown by
//! the permission table's rule of the API route it calls, and the API checks the caller again.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use http_common::openapi::Method;
use minijinja::{Value, context};
use serde_json::json;

use crate::ConsoleState;
use crate::api::Call;
use crate::pages::{
    Form, Visit, after_write, failure, message, page, param, percent_encode, read_at, redirect,
    refusal,
};

/// Products per page of the list.
const PAGE_SIZE: u64 = 25;

/// `/office`: what the account may do here.
pub async fn home(State(state): State<ConsoleState>, Visit(visitor): Visit) -> Response {
    let any = [
        (Method::Post, "/products"),
        (Method::Post, "/orders/{order_id}/refunds"),
        (Method::Get, "/sagas"),
        (Method::Get, "/projections"),
        (Method::Get, "/users"),
        (Method::Get, "/notifications"),
        (Method::Get, "/webhooks"),
        (Method::Get, "/dead-letters"),
    ]
    .into_iter()
    .any(|(method, path)| state.may(&visitor, method, path));
    if !any {
        // Neither: log in, or be told the account may not.
        if let Some(refused) = refusal(&state, &visitor, Method::Post, "/products", "/office") {
            return refused;
        }
    }
    page(&state, &visitor, StatusCode::OK, "office.html", context! {})
}

/// A price typed in a form (`24.50`), as the API takes it; `None` when it is not a number.
fn price(text: &str) -> Option<serde_json::Value> {
    let text = text.trim().replace(',', ".");
    let valid = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.matches('.').count() <= 1;
    if !valid {
        return None;
    }
    serde_json::from_str::<serde_json::Number>(&text)
        .ok()
        .map(serde_json::Value::Number)
}

fn whole_number(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// `/office/products`: the catalogue, a page at a time, by search words.
pub async fn products(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Post,
        "/products",
        "/office/products",
    ) {
        return refused;
    }
    let q = param(&params, "q").to_owned();
    let page_number = params
        .get("page")
        .and_then(|page| page.parse::<u64>().ok())
        .filter(|page| (1..=400).contains(page))
        .unwrap_or(1);
    let mut target = format!(
        "/search?limit={PAGE_SIZE}&offset={}",
        (page_number - 1) * PAGE_SIZE
    );
    if !q.is_empty() {
        target.push_str(&format!("&q={}", percent_encode(&q)));
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "The catalogue cannot be shown");
    }
    let total = answer.body["total"].as_u64().unwrap_or(0);
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let link = |number: u64| format!("/office/products?page={number}&q={}", percent_encode(&q));
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_products.html",
        context! {
            q => q, total => total,
            hits => Value::from_serialize(&answer.body["hits"]),
            previous => (page_number > 1).then(|| link(page_number - 1)),
            next => (page_number < pages).then(|| link(page_number + 1)),
        },
    )
}

/// `/office/products/new`.
pub async fn new_product(State(state): State<ConsoleState>, Visit(visitor): Visit) -> Response {
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Post,
        "/products",
        "/office/products/new",
    ) {
        return refused;
    }
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_product.html",
        context! {
            product => None::<Value>,
            entered => Value::from_serialize(json!({})),
            attempt => uuid::Uuid::new_v4().to_string(),
        },
    )
}

/// The product fields of a form, or what to fix.
fn product_fields(form: &Form, creating: bool) -> Result<serde_json::Value, String> {
    let mut fields = json!({
        "name": form.text("name"),
        "description": form.text("description"),
    });
    let category = form.text("category");
    fields["category"] = if category.is_empty() {
        serde_json::Value::Null
    } else {
        json!(category)
    };
    fields["price"] =
        price(form.text("price")).ok_or("The price must be a number such as 24.50.")?;
    if creating {
        fields["stock_qty"] =
            json!(whole_number(form.text("stock_qty")).ok_or("The stock must be a whole number.")?);
    }
    Ok(fields)
}

/// `POST /office/products/new`: creates the product.
pub async fn create_product(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let entered = json!({
        "name": form.text("name"), "description": form.text("description"),
        "price": form.text("price"), "stock_qty": form.text("stock_qty"),
        "category": form.text("category"),
    });
    let answer = match product_fields(&form, true) {
        Ok(fields) => {
            visitor
                .call(&state.api, form.idempotent(Call::post("/products", fields)))
                .await
        }
        Err(problem) => {
            return page(
                &state,
                &visitor,
                StatusCode::UNPROCESSABLE_ENTITY,
                "office_product.html",
                context! { product => None::<Value>, entered => Value::from_serialize(&entered), error => problem },
            );
        }
    };
    if answer.status.is_client_error() {
        return page(
            &state,
            &visitor,
            answer.status,
            "office_product.html",
            context! { product => None::<Value>, entered => Value::from_serialize(&entered), error => answer.problem() },
        );
    }
    if !answer.ok() {
        return failure(
            &state,
            &visitor,
            &answer,
            "The product could not be created",
        );
    }
    let product_id = answer.body["product_id"].as_str().unwrap_or_default();
    after_write(
        &visitor,
        &answer,
        &format!("/office/products/{}?saved=1", percent_encode(product_id)),
    )
}

/// `/office/products/{id}`: the product's form, and its stock.
pub async fn product(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(product_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/office/products/{}", percent_encode(&product_id));
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Put,
        "/products/{product_id}",
        &here,
    ) {
        return refused;
    }
    let target = read_at(
        format!("/products/{}", percent_encode(&product_id)),
        &params,
    );
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This product cannot be shown");
    }
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_product.html",
        context! {
            product => Value::from_serialize(&answer.body),
            entered => Value::from_serialize(&answer.body),
            saved => params.contains_key("saved"),
        },
    )
}

/// `POST /office/products/{id}`: changes the product's name, description, price or category.
pub async fn update_product(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(product_id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let answer = match product_fields(&form, false) {
        Ok(fields) => {
            visitor
                .call(
                    &state.api,
                    Call {
                        method: http::Method::PUT,
                        ..Call::post(format!("/products/{}", percent_encode(&product_id)), fields)
                    },
                )
                .await
        }
        Err(problem) => {
            return message(
                &state,
                &visitor,
                StatusCode::UNPROCESSABLE_ENTITY,
                "The product was not changed",
                &problem,
            );
        }
    };
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "The product was not changed");
    }
    after_write(
        &visitor,
        &answer,
        &format!("/office/products/{}?saved=1", percent_encode(&product_id)),
    )
}

/// `POST /office/products/{id}/stock`: adds (or, negative, removes) units.
pub async fn restock(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(product_id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let Some(delta) = whole_number(form.text("delta")) else {
        return message(
            &state,
            &visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            "The stock was not changed",
            "The change must be a whole number: 10 adds ten units, -2 removes two.",
        );
    };
    let call = form.idempotent(Call::post(
        format!("/products/{}/stock", percent_encode(&product_id)),
        json!({ "delta": delta }),
    ));
    let answer = visitor.call(&state.api, call).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "The stock was not changed");
    }
    after_write(
        &visitor,
        &answer,
        &format!("/office/products/{}?saved=1", percent_encode(&product_id)),
    )
}

/// How many units of each of `order`'s lines no shipment holds yet, line by line.
fn left_to_ship(order: &serde_json::Value) -> Vec<(String, i64)> {
    let mut shipped: HashMap<&str, i64> = HashMap::new();
    for shipment in order["shipments"].as_array().into_iter().flatten() {
        for line in shipment["lines"].as_array().into_iter().flatten() {
            *shipped
                .entry(line["product_id"].as_str().unwrap_or_default())
                .or_default() += line["quantity"].as_i64().unwrap_or(0);
        }
    }
    order["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let product_id = line["product_id"].as_str().unwrap_or_default();
            let left = line["quantity"].as_i64().unwrap_or(0)
                - shipped.get(product_id).copied().unwrap_or(0);
            (product_id.to_owned(), left.max(0))
        })
        .collect()
}

/// `/office/orders?order_id=`: opens an order by its id.
pub async fn find_order(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Post,
        "/orders/{order_id}/refunds",
        "/office/orders",
    ) {
        return refused;
    }
    match params.get("order_id").map(|id| id.trim()) {
        Some(id) if uuid::Uuid::parse_str(id).is_ok() => {
            redirect(&visitor, &format!("/office/orders/{id}"))
        }
        Some(id) if !id.is_empty() => message(
            &state,
            &visitor,
            StatusCode::BAD_REQUEST,
            "That is not an order id",
            "An order id looks like 3f2b8c1e-5d4a-4c8e-9a7b-1c2d3e4f5a6b.",
        ),
        _ => order_list(&state, &mut visitor, &params).await,
    }
}

/// Orders per page of the list.
const ORDERS_PAGE: u32 = 25;

/// The orders by status and customer, newest first, a page at a time.
async fn order_list(
    state: &ConsoleState,
    visitor: &mut crate::visitor::Visitor,
    params: &HashMap<String, String>,
) -> Response {
    let text = |name: &str| param(params, name).to_owned();
    let (status, customer_id, before) = (text("status"), text("customer_id"), text("before"));
    let mut query = String::new();
    for (name, value) in [("status", &status), ("customer_id", &customer_id)] {
        if !value.is_empty() {
            query.push_str(&format!("&{name}={}", percent_encode(value)));
        }
    }
    let mut target = format!("/orders?limit={ORDERS_PAGE}{query}");
    if !before.is_empty() {
        target.push_str(&format!("&before={}", percent_encode(&before)));
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if answer.status.is_client_error() {
        return page(
            state,
            visitor,
            answer.status,
            "office_orders.html",
            context! { status => status, customer_id => customer_id, error => answer.problem() },
        );
    }
    if !answer.ok() {
        return failure(state, visitor, &answer, "The orders cannot be shown");
    }
    let next = answer.body["next_before"]
        .as_i64()
        .map(|before| format!("/office/orders?before={before}{query}"));
    page(
        state,
        visitor,
        StatusCode::OK,
        "office_orders.html",
        context! {
            status => status, customer_id => customer_id,
            orders => Value::from_serialize(&answer.body["orders"]),
            next => next,
            first => (!before.is_empty()).then(|| format!("/office/orders?{}", query.trim_start_matches('&'))),
        },
    )
}

/// `/office/orders/{id}`: the order, and what support may do with it.
pub async fn order(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(order_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let here = format!("/office/orders/{}", percent_encode(&order_id));
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Post,
        "/orders/{order_id}/refunds",
        &here,
    ) {
        return refused;
    }
    if uuid::Uuid::parse_str(&order_id).is_err() {
        return message(
            &state,
            &visitor,
            StatusCode::NOT_FOUND,
            "No such order",
            "This address names no order.",
        );
    }
    let target = read_at(format!("/orders/{order_id}"), &params);
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This order cannot be shown");
    }
    let mut order = answer.body;
    let left = left_to_ship(&order);
    let unshipped = left.iter().any(|(_, units)| *units > 0);
    for (line, (_, units)) in order["lines"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(left)
    {
        line["unshipped"] = json!(units);
    }
    crate::shop::name_lines(&state, &mut visitor, &mut order["lines"]).await;
    // What is left to refund: the total less what was refunded.
    let refundable = (order["total"].as_f64().unwrap_or(0.0)
        - order["refunded_total"].as_f64().unwrap_or(0.0))
    .max(0.0);
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_order.html",
        context! {
            order => Value::from_serialize(&order),
            can_ship => unshipped && order["status"] == "CONFIRMED"
                && state.may(&visitor, Method::Post, "/orders/{order_id}/shipments"),
            can_cancel => order["status"] == "PENDING"
                && state.may(&visitor, Method::Post, "/orders/{order_id}/cancel"),
            can_refund => order["status"] == "CONFIRMED" && refundable > 0.0,
            refundable => refundable,
            history => state.may(&visitor, Method::Get, "/streams/{stream_type}/{stream_id}/events"),
            attempt => uuid::Uuid::new_v4().to_string(),
            done => done_of(&params),
        },
    )
}

/// What a page's `done` says was done: an id or a word the console itself put in the address
/// after a form (a link made elsewhere cannot make a page say something else).
fn done_of(params: &HashMap<String, String>) -> Option<String> {
    params
        .get("done")
        .filter(|done| {
            (1..=64).contains(&done.len())
                && done
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
        .cloned()
}

/// Answers after an order form: back to the order, or what went wrong.
fn after_order_form(
    state: &ConsoleState,
    visitor: &crate::visitor::Visitor,
    order_id: &str,
    answer: &crate::api::Answer,
    what: &str,
    done: &str,
) -> Response {
    if !answer.ok() {
        return failure(state, visitor, answer, what);
    }
    after_write(
        visitor,
        answer,
        &format!("/office/orders/{}?done={done}", percent_encode(order_id)),
    )
}

/// `POST /office/orders/{id}/ship`: ships every unshipped unit, with the carrier's tracking.
pub async fn ship(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(order_id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let order = visitor
        .call(
            &state.api,
            Call::get(format!("/orders/{}", percent_encode(&order_id))),
        )
        .await;
    if !order.ok() {
        return failure(&state, &visitor, &order, "The order was not shipped");
    }
    let lines: Vec<serde_json::Value> = left_to_ship(&order.body)
        .into_iter()
        .filter(|(_, units)| *units > 0)
        .map(|(product_id, units)| json!({ "product_id": product_id, "quantity": units }))
        .collect();
    let call = form.idempotent(Call::post(
        format!("/orders/{}/shipments", percent_encode(&order_id)),
        json!({
            "carrier": form.text("carrier"),
            "tracking_number": form.text("tracking_number"),
            "lines": lines,
        }),
    ));
    let answer = visitor.call(&state.api, call).await;
    after_order_form(
        &state,
        &visitor,
        &order_id,
        &answer,
        "The order was not shipped",
        "shipped",
    )
}

/// `POST /office/orders/{id}/cancel`.
pub async fn cancel(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(order_id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let reason = form.text("reason");
    let body = if reason.is_empty() {
        json!({})
    } else {
        json!({ "reason": reason })
    };
    let answer = visitor
        .call(
            &state.api,
            Call::post(
                format!("/orders/{}/cancel", percent_encode(&order_id)),
                body,
            ),
        )
        .await;
    after_order_form(
        &state,
        &visitor,
        &order_id,
        &answer,
        "The order was not cancelled",
        "cancelled",
    )
}

/// `POST /office/orders/{id}/refund`: refunds an amount (the form offers what is left).
pub async fn refund(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(order_id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let Some(amount) = price(form.text("amount")) else {
        return message(
            &state,
            &visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing was refunded",
            "The amount must be a number such as 12.50.",
        );
    };
    let mut body = json!({ "amount": amount });
    if !form.text("reason").is_empty() {
        body["reason"] = json!(form.text("reason"));
    }
    let call = form.idempotent(Call::post(
        format!("/orders/{}/refunds", percent_encode(&order_id)),
        body,
    ));
    let answer = visitor.call(&state.api, call).await;
    after_order_form(
        &state,
        &visitor,
        &order_id,
        &answer,
        "Nothing was refunded",
        "refunded",
    )
}

/// `/office/sagas`: how many checkout sagas are in each state, and the parked ones.
pub async fn sagas(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    Overview {
        route: "/sagas",
        here: "/office/sagas",
        template: "office_sagas.html",
        failed: "The sagas cannot be shown",
    }
    .answer(&state, visitor, &params)
    .await
}

/// `/office/projections`: every projection's checkpoint, lag, park and rebuild.
pub async fn projections(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    Overview {
        route: "/projections",
        here: "/office/projections",
        template: "office_projections.html",
        failed: "The projections cannot be shown",
    }
    .answer(&state, visitor, &params)
    .await
}

/// A page that shows what one operational read of the API answers.
struct Overview {
    route: &'static str,
    here: &'static str,
    template: &'static str,
    failed: &'static str,
}

impl Overview {
    async fn answer(
        self,
        state: &ConsoleState,
        mut visitor: crate::visitor::Visitor,
        params: &HashMap<String, String>,
    ) -> Response {
        if let Some(refused) = refusal(state, &visitor, Method::Get, self.route, self.here) {
            return refused;
        }
        let answer = visitor.call(&state.api, Call::get(self.route)).await;
        if !answer.ok() {
            return failure(state, &visitor, &answer, self.failed);
        }
        page(
            state,
            &visitor,
            StatusCode::OK,
            self.template,
            context! {
                overview => Value::from_serialize(&answer.body),
                done => done_of(params),
            },
        )
    }
}

/// `POST /office/sagas/{order_id}/retry`: runs a parked saga again.
pub async fn retry_saga(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path(order_id): Path<String>,
    form: Form,
) -> Response {
    let call = Call::post(
        format!("/sagas/{}/retry", percent_encode(&order_id)),
        json!({}),
    );
    let back = format!("/office/sagas?done={}", percent_encode(&order_id));
    form_action(
        &state,
        visitor,
        &form,
        call,
        "The saga was not run again",
        &back,
    )
    .await
}

/// `POST /office/projections/{name}/retry`: clears a projection's park.
pub async fn retry_projection(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path(name): Path<String>,
    form: Form,
) -> Response {
    let call = Call::post(
        format!("/projections/{}/retry", percent_encode(&name)),
        json!({}),
    );
    let back = format!("/office/projections?done={}", percent_encode(&name));
    form_action(
        &state,
        visitor,
        &form,
        call,
        "The projection was not retried",
        &back,
    )
    .await
}

/// A form whose work is one API write: refused when it does not come from the visitor's own
/// page; else `call` is made and, when it worked, the visitor is sent to `back`, which reads at
/// the write's position.
async fn form_action(
    state: &ConsoleState,
    mut visitor: crate::visitor::Visitor,
    form: &Form,
    call: Call,
    failed: &str,
    back: &str,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let answer = visitor.call(&state.api, call).await;
    if !answer.ok() {
        return failure(state, &visitor, &answer, failed);
    }
    after_write(&visitor, &answer, back)
}

/// Accounts per page of the list.
const ACCOUNTS_PAGE: usize = 25;

/// `/office/accounts`: the accounts, newest first, customers or staff (admins).
pub async fn accounts(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&state, &visitor, Method::Get, "/users", "/office/accounts") {
        return refused;
    }
    let kind = param(&params, "kind").to_owned();
    let offset = params
        .get("offset")
        .and_then(|offset| offset.trim().parse::<usize>().ok())
        .filter(|offset| *offset <= 10_000)
        .unwrap_or(0);
    let mut target = read_at(
        format!("/users?limit={ACCOUNTS_PAGE}&offset={offset}"),
        &params,
    );
    if !kind.is_empty() {
        target.push_str(&format!("&kind={}", percent_encode(&kind)));
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "The accounts cannot be shown");
    }
    let link = |offset: usize| {
        format!(
            "/office/accounts?offset={offset}&kind={}",
            percent_encode(&kind)
        )
    };
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_accounts.html",
        context! {
            kind => kind.clone(),
            accounts => Value::from_serialize(&answer.body["accounts"]),
            next => answer.body["next_offset"].as_u64().map(|next| link(usize::try_from(next).unwrap_or(0))),
            previous => (offset > 0).then(|| link(offset.saturating_sub(ACCOUNTS_PAGE))),
            done => done_of(&params),
            may_deactivate => state.may(&visitor, Method::Post, "/users/{user_id}/deactivate"),
        },
    )
}

/// `POST /office/accounts/{user_id}/deactivate`: the account can no longer log in.
pub async fn deactivate(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path(user_id): Path<String>,
    form: Form,
) -> Response {
    let call = Call::post(
        format!("/users/{}/deactivate", percent_encode(&user_id)),
        json!({}),
    );
    let back = format!("/office/accounts?done={}", percent_encode(&user_id));
    form_action(
        &state,
        visitor,
        &form,
        call,
        "The account was not deactivated",
        &back,
    )
    .await
}

/// `/office/notifications`: the recorded messages by status, with parked ones to send again and
/// any to send once more (support).
pub async fn notifications(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Get,
        "/notifications",
        "/office/notifications",
    ) {
        return refused;
    }
    let status = param(&params, "status").to_owned();
    let mut target = "/notifications?limit=100".to_owned();
    if !status.is_empty() {
        target.push_str(&format!("&status={}", percent_encode(&status)));
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "The messages cannot be shown");
    }
    // Each resend button its own attempt: a form sent twice resends once.
    let notifications: Vec<serde_json::Value> = answer.body["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|message| {
            let mut message = message.clone();
            message["attempt"] = json!(uuid::Uuid::new_v4().to_string());
            message
        })
        .collect();
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_notifications.html",
        context! {
            status => status,
            notifications => Value::from_serialize(notifications),
            done => done_of(&params),
            may_retry => state.may(&visitor, Method::Post, "/notifications/{key}/retry"),
            may_resend => state.may(&visitor, Method::Post, "/notifications/{key}/resend"),
        },
    )
}

/// `POST /office/notifications/{key}/{action}`: `retry` sends a parked message again, `resend`
/// sends any message once more.
pub async fn notification_action(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Path((key, action)): Path<(String, String)>,
    form: Form,
) -> Response {
    let (failed, done) = match action.as_str() {
        "retry" => ("The message was not sent again", "retried"),
        "resend" => ("The message was not sent once more", "resent"),
        _ => {
            return message(
                &state,
                &visitor,
                StatusCode::NOT_FOUND,
                "No such action",
                "A message can be retried or resent.",
            );
        }
    };
    let call = Call::post(
        format!("/notifications/{}/{action}", percent_encode(&key)),
        json!({}),
    );
    let call = if action == "resend" {
        form.idempotent(call)
    } else {
        call
    };
    let back = format!("/office/notifications?done={done}");
    form_action(&state, visitor, &form, call, failed, &back).await
}

/// `/office/webhooks`: the webhook endpoints, whether each is failing or disabled (admins).
pub async fn webhooks(State(state): State<ConsoleState>, Visit(mut visitor): Visit) -> Response {
    if let Some(refused) = refusal(
        &state,
        &visitor,
        Method::Get,
        "/webhooks",
        "/office/webhooks",
    ) {
        return refused;
    }
    let answer = visitor.call(&state.api, Call::get("/webhooks")).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "The webhooks cannot be shown");
    }
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "office_webhooks.html",
        context! { webhooks => Value::from_serialize(&answer.body["webhooks"]) },
    )
}

/// `/office/dead-letters`: the messages Kafka consumers could not process (admins).
pub async fn dead_letters(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    Overview {
        route: "/dead-letters",
        here: "/office/dead-letters",
        template: "office_dead_letters.html",
        failed: "The dead letters cannot be shown",
    }
    .answer(&state, visitor, &params)
    .await
}

/// `POST /office/dead-letters/replay`: sends the dead letters back to their topics.
pub async fn replay_dead_letters(
    State(state): State<ConsoleState>,
    Visit(visitor): Visit,
    form: Form,
) -> Response {
    let call = Call::post("/dead-letters/replay", json!({}));
    form_action(
        &state,
        visitor,
        &form,
        call,
        "The dead letters were not sent back",
        "/office/dead-letters?done=replayed",
    )
    .await
}
