//! An order after checkout as the API shows it (addresses, payment method, fulfilment status,
//! shipments, returns, payments and refunds), and its receipt, as JSON or as a printable page.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http_common::params::{count_param, known_params, truncate};
use http_common::{Problem, RequestContext};
use identity::Opened;
use projections::order_details::{CountRow, OrderPart, PaymentPart};
use projections::queries::{OrderFilter, OrderRow};
use projections::sql_models::OrdersProjection;
use serde_json::{Value, json};

use crate::{QueryState, db_problem, may_read_order, money_raw, order_json, wait_for};

/// An address as the order shows it: opened with its person's key, `null` when none was given,
/// `"erased"` once the person is erased.
async fn opened_address(
    state: &QueryState,
    person: &str,
    field: &str,
    sealed: Option<&domain::Sealed>,
) -> Result<Value, Problem> {
    let Some(sealed) = sealed else {
        return Ok(Value::Null);
    };
    let opened = state
        .identity
        .person_keys
        .open(person, field, sealed)
        .await
        .map_err(|error| Problem::unavailable_logged("the key store is unavailable", &error))?;
    Ok(match opened {
        Opened::Plain(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
        Opened::Erased => Value::String("erased".to_owned()),
    })
}

fn counts_json(lines: &[CountRow]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| json!({ "product_id": line.product_id, "quantity": line.quantity }))
        .collect()
}

/// Order `order_id` (text from the path), once the orders read model has the position the
/// request waits for, if the caller may read it (its customer, its guest with the order's
/// token, or support); 404 otherwise, so that ids cannot be probed.
pub(crate) async fn readable_order(
    state: &QueryState,
    context: &RequestContext,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    order_id: &str,
) -> Result<(uuid::Uuid, OrderRow), Problem> {
    let order_id = uuid::Uuid::parse_str(order_id).map_err(|_| {
        Problem::not_found(format!(
            "no order has id {:?}: order ids are UUIDs made by the server",
            truncate(order_id, 80)
        ))
    })?;
    wait_for(state, OrdersProjection::NAME, headers, params).await?;
    let Some(row) = state
        .queries
        .order(&order_id.to_string())
        .await
        .map_err(|error| db_problem(&error))?
        .filter(|row| may_read_order(state, context, headers, &row.order_id, &row.customer_id))
    else {
        return Err(Problem::not_found(format!(
            "no order has id {order_id} (or it is not yours: a guest sends the order's X-Order-Token)"
        )));
    };
    Ok((order_id, row))
}

/// What an order's payments add up to, in minor units.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PaidTotals {
    pub paid_minor: i64,
    pub refunded_minor: i64,
}

/// Adds what the order shows after checkout to `answer` (an order as [`order_json`] makes it),
/// and answers what its payments add up to.
pub(crate) async fn add_details(
    state: &QueryState,
    row: &OrderRow,
    answer: &mut Value,
) -> Result<PaidTotals, Problem> {
    let (order, payment) =
        projections::order_details::load(state.queries.db().pool(), &row.order_id)
            .await
            .map_err(|error| db_problem(&error))?
            .unwrap_or_default();
    let person = identity::person_keys::order_person(&row.customer_id, &row.order_id);
    let shipping = opened_address(
        state,
        &person,
        "shipping_address",
        order.shipping_address.as_ref(),
    )
    .await?;
    let billing = opened_address(
        state,
        &person,
        "billing_address",
        order.billing_address.as_ref(),
    )
    .await?;
    let totals = PaidTotals {
        paid_minor: payment.payments.iter().map(|paid| paid.amount_minor).sum(),
        refunded_minor: payment.refunded_minor,
    };
    let Some(object) = answer.as_object_mut() else {
        return Ok(totals);
    };
    let OrderPart {
        payment_method,
        shipments,
        returns,
        fulfilment_status,
        ..
    } = order;
    let PaymentPart {
        payments,
        refunds,
        refunded_minor,
    } = payment;
    let details = json!({
        "shipping_address": shipping,
        "billing_address": billing,
        "payment_method": if payment_method.is_empty() { "card".to_owned() } else { payment_method },
        "fulfilment_status": if fulfilment_status.is_empty() { "UNFULFILLED".to_owned() } else { fulfilment_status },
        "shipments": shipments.iter().map(|shipment| json!({
            "shipment_id": shipment.shipment_id,
            "lines": counts_json(&shipment.lines),
            "carrier": shipment.carrier,
            "tracking_number": shipment.tracking_number,
            "shipped_at": shipment.shipped_at,
            "delivered_at": shipment.delivered_at,
        })).collect::<Vec<_>>(),
        "returns": returns.iter().map(|returned| json!({
            "return_id": returned.return_id,
            "lines": counts_json(&returned.lines),
            "restock": returned.restock,
            "received_at": returned.received_at,
        })).collect::<Vec<_>>(),
        "payments": payments.iter().map(|paid| json!({
            "charge_id": paid.charge_id,
            "amount": money_raw(paid.amount_minor),
            "paid_at": paid.paid_at,
        })).collect::<Vec<_>>(),
        "refunds": refunds.iter().map(|refund| json!({
            "refund_id": refund.refund_id,
            "amount": money_raw(refund.amount_minor),
            "reason": refund.reason,
            "status": refund.status,
            "failure": refund.failure,
            "requested_at": refund.requested_at,
            "refunded_at": refund.refunded_at,
        })).collect::<Vec<_>>(),
        "refunded_total": money_raw(refunded_minor),
    });
    if let Value::Object(details) = details {
        object.extend(details);
    }
    Ok(totals)
}

/// `GET /orders/{id}/receipt`: the order's lines, amounts, payments and refunds, for its
/// customer (or guest) and support staff; a printable HTML page with `Accept: text/html`.
#[tracing::instrument(skip_all, fields(order_id = %order_id))]
pub(crate) async fn get_receipt(
    State(state): State<QueryState>,
    Extension(context): Extension<RequestContext>,
    Path(order_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (_, row) = readable_order(&state, &context, &headers, &params, &order_id).await?;
    let mut receipt = order_json(&row);
    let totals = add_details(&state, &row, &mut receipt).await?;
    // Each line with its product's name and amount.
    let mut lines = Vec::with_capacity(row.lines.len());
    for line in &row.lines {
        let name = state
            .queries
            .product(&line.product_id)
            .await
            .map_err(|error| db_problem(&error))?
            .map(|product| product.name);
        lines.push(json!({
            "product_id": line.product_id,
            "name": name,
            "quantity": line.quantity,
            "unit_price": money_raw(line.unit_price_minor),
            "amount": money_raw(line.unit_price_minor.saturating_mul(i64::from(line.quantity))),
        }));
    }
    if let Some(object) = receipt.as_object_mut() {
        object.insert("lines".to_owned(), Value::Array(lines));
        object.insert("paid_total".to_owned(), json!(money_raw(totals.paid_minor)));
        object.insert(
            "net_total".to_owned(),
            json!(money_raw(totals.paid_minor - totals.refunded_minor)),
        );
    }
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        let mut response = receipt_html(&receipt).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(response);
    }
    Ok(Json(receipt).into_response())
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A value as text: a string without its quotes, anything else as JSON writes it.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn address_html(value: &Value) -> String {
    match value {
        Value::Object(address) => [
            "name",
            "line1",
            "line2",
            "postal_code",
            "city",
            "country",
            "phone",
        ]
        .iter()
        .filter_map(|field| address.get(*field).map(text))
        .filter(|line| !line.is_empty())
        .map(|line| escape(&line))
        .collect::<Vec<_>>()
        .join("<br>"),
        Value::Null => "&mdash;".to_owned(),
        other => escape(&text(other)).replace('\n', "<br>"),
    }
}

/// The receipt as a printable page (every value escaped).
fn receipt_html(receipt: &Value) -> String {
    let mut rows = String::new();
    for line in receipt["lines"].as_array().into_iter().flatten() {
        let name = match &line["name"] {
            Value::String(name) => name.clone(),
            _ => text(&line["product_id"]),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>\n",
            escape(&name),
            escape(&text(&line["quantity"])),
            escape(&text(&line["unit_price"])),
            escape(&text(&line["amount"])),
        ));
    }
    let mut money_rows = String::new();
    for paid in receipt["payments"].as_array().into_iter().flatten() {
        money_rows.push_str(&format!(
            "<tr><td>Payment {}</td><td>{}</td><td class=n>{}</td></tr>\n",
            escape(&text(&paid["charge_id"])),
            escape(&text(&paid["paid_at"])),
            escape(&text(&paid["amount"])),
        ));
    }
    for refund in receipt["refunds"].as_array().into_iter().flatten() {
        money_rows.push_str(&format!(
            "<tr><td>Refund ({})</td><td>{}</td><td class=n>-{}</td></tr>\n",
            escape(&text(&refund["status"]).to_lowercase()),
            escape(&text(&refund["requested_at"])),
            escape(&text(&refund["amount"])),
        ));
    }
    format!(
        "<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Receipt {order_id}</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}table{{width:100%;border-collapse:collapse}}
td,th{{border-bottom:1px solid #ccc;padding:.3em;text-align:left}}.n{{text-align:right}}
@media print{{body{{margin:0}}}}</style></head>
<body><h1>Receipt</h1>
<p>Order <code>{order_id}</code><br>Placed {created_at}<br>Status {status}, {fulfilment}<br>Paid by {method}</p>
<table><tr><th>Shipping address</th><th>Billing address</th></tr>
<tr><td>{shipping}</td><td>{billing}</td></tr></table>
<h2>Items</h2>
<table><tr><th>Item</th><th class=n>Quantity</th><th class=n>Unit price</th><th class=n>Amount</th></tr>
{rows}<tr><th colspan=3>Total</th><th class=n>{total}</th></tr></table>
<h2>Payments and refunds</h2>
<table>{money_rows}<tr><th colspan=2>Paid</th><th class=n>{paid}</th></tr>
<tr><th colspan=2>Refunded</th><th class=n>{refunded}</th></tr>
<tr><th colspan=2>Net</th><th class=n>{net}</th></tr></table>
</body></html>
",
        order_id = escape(&text(&receipt["order_id"])),
        created_at = escape(&text(&receipt["created_at"])),
        status = escape(&text(&receipt["status"])),
        fulfilment = escape(&text(&receipt["fulfilment_status"])),
        method = escape(&text(&receipt["payment_method"]).replace('_', " ")),
        shipping = address_html(&receipt["shipping_address"]),
        billing = address_html(&receipt["billing_address"]),
        total = escape(&text(&receipt["total"])),
        paid = escape(&text(&receipt["paid_total"])),
        refunded = escape(&text(&receipt["refunded_total"])),
        net = escape(&text(&receipt["net_total"])),
    )
}

/// The statuses an order listing may filter by.
const ORDER_STATUSES: &[&str] = &["PENDING", "CONFIRMED", "CANCELLED"];

/// `GET /orders`: the orders, newest first, by status and customer (support staff).
pub(crate) async fn list_orders(
    State(state): State<QueryState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    known_params(
        &params,
        &["status", "customer_id", "before", "limit", "min_position"],
    )?;
    // Given, a filter must name something: an empty one is a mistake, not "any".
    let text = |name: &str| params.get(name).map(|value| value.trim());
    let status = match text("status") {
        None => None,
        Some(status) => Some(
            ORDER_STATUSES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(status))
                .ok_or_else(|| {
                    Problem::invalid(
                        "status",
                        format!(
                            "{:?} is none of {}",
                            truncate(status, 40),
                            ORDER_STATUSES.join(", ")
                        ),
                    )
                })?
                .to_string(),
        ),
    };
    let customer_id = match text("customer_id") {
        None => None,
        Some(id) => Some(
            domain::CustomerId::parse(id)
                .map_err(|error| Problem::invalid(error.field, &error.message))?
                .as_str()
                .to_owned(),
        ),
    };
    let before_position = match text("before") {
        None => None,
        Some(before) => Some(
            before
                .parse::<i64>()
                .ok()
                .filter(|before| *before >= 0)
                .ok_or_else(|| {
                    Problem::invalid(
                        "before",
                        "must be a log position (a whole number): the next_before of the page before",
                    )
                })?,
        ),
    };
    let limit = count_param(&params, "limit", 25, 1..=100)?;
    wait_for(&state, OrdersProjection::NAME, &headers, &params).await?;
    let filter = OrderFilter {
        status,
        customer_id,
        before_position,
    };
    let rows = state
        .queries
        .orders(&filter, limit)
        .await
        .map_err(|error| db_problem(&error))?;
    let next_before = (rows.len() == limit)
        .then(|| rows.last().map(|row| row.created_position))
        .flatten();
    let orders: Vec<Value> = rows.iter().map(order_json).collect();
    Ok(Json(json!({ "orders": orders, "next_before": next_before })).into_response())
}
