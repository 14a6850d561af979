//! The storefront: the home page, search, a product, the cart and its checkout, an order, and
//! the visitor's orders.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::{Value, context};
use serde_json::json;

use crate::ConsoleState;
use crate::api::{Answer, Call};
use crate::pages::{
    Form, Visit, after_write, failure, message, page, param, percent_encode, read_at, redirect,
};
use crate::visitor::{CartCookie, Visitor};

/// Hits per search page.
const PAGE_SIZE: u64 = 20;
/// The last search page the API's window reaches (offset + limit at most 10,000).
const LAST_PAGE: u64 = 10_000 / PAGE_SIZE;

/// Popular products, for the visitor when they are a customer.
async fn recommendations(state: &ConsoleState, visitor: &mut Visitor, limit: u32) -> Vec<Value> {
    let customer = visitor
        .me
        .as_ref()
        .filter(|me| me["kind"] == "customer")
        .and_then(|me| me["user_id"].as_str())
        .map(str::to_owned);
    let target = match customer {
        Some(customer) => format!("/recommendations?limit={limit}&customer_id={customer}"),
        None => format!("/recommendations?limit={limit}"),
    };
    let answer = visitor.call(&state.api, Call::get(target)).await;
    answer.body["items"]
        .as_array()
        .map(|items| items.iter().map(Value::from_serialize).collect())
        .unwrap_or_default()
}

/// `/`: search, the categories, and what is popular.
pub async fn home(State(state): State<ConsoleState>, Visit(mut visitor): Visit) -> Response {
    let categories = visitor.call(&state.api, Call::get("/categories")).await;
    if !categories.ok() {
        return failure(
            &state,
            &visitor,
            &categories,
            "The shop cannot be shown right now",
        );
    }
    let popular = recommendations(&state, &mut visitor, 8).await;
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "home.html",
        context! {
            categories => Value::from_serialize(&categories.body["categories"]),
            popular => popular,
        },
    )
}

/// `/shop/search`: words, a category and a price range, a page at a time.
pub async fn search(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let text = |name: &str| param(&params, name).to_owned();
    let (q, category, min_price, max_price) = (
        text("q"),
        text("category"),
        text("min_price"),
        text("max_price"),
    );
    let page_number = match params.get("page").map(|page| page.trim()) {
        None | Some("") => 1,
        Some(page) => match page.parse::<u64>() {
            Ok(number) if (1..=LAST_PAGE).contains(&number) => number,
            _ => {
                return message(
                    &state,
                    &visitor,
                    StatusCode::BAD_REQUEST,
                    "No such page of results",
                    &format!("The page must be a whole number from 1 to {LAST_PAGE}."),
                );
            }
        },
    };
    let mut target = format!(
        "/search?limit={PAGE_SIZE}&offset={}",
        (page_number - 1) * PAGE_SIZE
    );
    for (name, value) in [
        ("q", &q),
        ("category", &category),
        ("min_price", &min_price),
        ("max_price", &max_price),
    ] {
        if !value.is_empty() {
            target.push_str(&format!("&{name}={}", percent_encode(value)));
        }
    }
    let answer = visitor.call(&state.api, Call::get(target)).await;
    let categories = visitor.call(&state.api, Call::get("/categories")).await;
    let (status, error) = if answer.ok() {
        (StatusCode::OK, None)
    } else if answer.status.is_client_error() {
        (answer.status, Some(answer.problem()))
    } else {
        return failure(&state, &visitor, &answer, "Search is unavailable right now");
    };
    let total = answer.body["total"].as_u64().unwrap_or(0);
    let pages = total.div_ceil(PAGE_SIZE).clamp(1, LAST_PAGE);
    let link = |number: u64| {
        let mut link = format!("/shop/search?page={number}");
        for (name, value) in [
            ("q", &q),
            ("category", &category),
            ("min_price", &min_price),
            ("max_price", &max_price),
        ] {
            if !value.is_empty() {
                link.push_str(&format!("&{name}={}", percent_encode(value)));
            }
        }
        link
    };
    page(
        &state,
        &visitor,
        status,
        "search.html",
        context! {
            q => q, category => category, min_price => min_price, max_price => max_price,
            error => error,
            total => total,
            hits => Value::from_serialize(&answer.body["hits"]),
            page => page_number,
            pages => pages,
            previous => (page_number > 1).then(|| link(page_number - 1)),
            next => (page_number < pages).then(|| link(page_number + 1)),
            categories => Value::from_serialize(&categories.body["categories"]),
        },
    )
}

/// `/shop/products/{id}`: the product, its stock and price, a form to add it to the cart, and
/// what else is popular.
pub async fn product(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(product_id): Path<String>,
) -> Response {
    if uuid::Uuid::parse_str(&product_id).is_err() {
        return message(
            &state,
            &visitor,
            StatusCode::NOT_FOUND,
            "No such product",
            "This address names no product; search the shop instead.",
        );
    }
    let answer = visitor
        .call(&state.api, Call::get(format!("/products/{product_id}")))
        .await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This product cannot be shown");
    }
    let mut more = recommendations(&state, &mut visitor, 5).await;
    more.retain(|item| item.get_attr("product_id").ok() != Some(Value::from(product_id.as_str())));
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "product.html",
        context! {
            product => Value::from_serialize(&answer.body),
            more => more,
        },
    )
}

/// The visitor's cart as the API has it, with each line's product (`None` without a cart).
async fn load_cart(
    state: &ConsoleState,
    visitor: &mut Visitor,
    params: &HashMap<String, String>,
) -> Result<Option<serde_json::Value>, Answer> {
    let Some(cart) = visitor.own_cart().cloned() else {
        return Ok(None);
    };
    let call = cart.authorize(Call::get(read_at(
        format!("/carts/{}", cart.cart_id),
        params,
    )));
    let answer = visitor.call(&state.api, call).await;
    if answer.status == StatusCode::NOT_FOUND {
        // Checked out, or never written: a new cart next time.
        visitor.drop_cart();
        return Ok(None);
    }
    if !answer.ok() {
        return Err(answer);
    }
    let mut body = answer.body;
    name_lines(state, visitor, &mut body["lines"]).await;
    Ok(Some(body))
}

/// Gives each of `lines` (a cart's or an order's) its product's name and stock, as the API
/// shows the product now.
pub async fn name_lines(
    state: &ConsoleState,
    visitor: &mut Visitor,
    lines: &mut serde_json::Value,
) {
    for line in lines.as_array_mut().into_iter().flatten() {
        let product_id = percent_encode(line["product_id"].as_str().unwrap_or_default());
        let product = visitor
            .call(&state.api, Call::get(format!("/products/{product_id}")))
            .await;
        line["name"] = product.body["name"].clone();
        line["stock_qty"] = product.body["stock_qty"].clone();
    }
}

/// `/shop/cart`: the cart, and the checkout form.
pub async fn cart(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    cart_page(
        &state,
        &mut visitor,
        &params,
        StatusCode::OK,
        None,
        json!({}),
    )
    .await
}

async fn cart_page(
    state: &ConsoleState,
    visitor: &mut Visitor,
    params: &HashMap<String, String>,
    status: StatusCode,
    error: Option<String>,
    entered: serde_json::Value,
) -> Response {
    let cart = match load_cart(state, visitor, params).await {
        Ok(cart) => cart,
        Err(answer) => return failure(state, visitor, &answer, "Your cart cannot be shown"),
    };
    page(
        state,
        visitor,
        status,
        "cart.html",
        context! {
            cart => cart.as_ref().map(Value::from_serialize),
            payment_choices => Value::from_serialize(&state.payment_choices),
            attempt => uuid::Uuid::new_v4().to_string(),
            error => error,
            entered => Value::from_serialize(&entered),
        },
    )
}

/// The quantity a form asks for: a whole number from 1 to 999.
fn quantity(form: &Form) -> Option<u32> {
    form.text("quantity")
        .parse::<u32>()
        .ok()
        .filter(|quantity| (1..=999).contains(quantity))
}

/// `POST /shop/cart/items`: adds units of a product; the first line makes the cart.
pub async fn add_to_cart(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let product_id = form.text("product_id").to_owned();
    let Some(quantity) = quantity(&form) else {
        return message(
            &state,
            &visitor,
            StatusCode::UNPROCESSABLE_ENTITY,
            "That quantity cannot be added",
            "The quantity must be a whole number from 1 to 999.",
        );
    };
    let cart = visitor.own_cart().cloned().unwrap_or_else(|| CartCookie {
        cart_id: format!("web-{}", uuid::Uuid::new_v4().simple()),
        token: String::new(),
        owner: visitor.user_id().unwrap_or_default().to_owned(),
    });
    let call = cart.authorize(Call::post(
        format!("/carts/{}/items", cart.cart_id),
        json!({ "product_id": product_id, "quantity": quantity }),
    ));
    let answer = visitor.call(&state.api, call).await;
    if !answer.ok() {
        return failure(
            &state,
            &visitor,
            &answer,
            "That could not be added to your cart",
        );
    }
    let token = answer.body["cart_token"]
        .as_str()
        .map_or(cart.token.clone(), str::to_owned);
    visitor.keep_cart(CartCookie { token, ..cart });
    after_write(&visitor, &answer, "/shop/cart")
}

/// `POST /shop/cart/remove`: removes a line.
pub async fn remove_from_cart(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let Some(cart) = visitor.own_cart().cloned() else {
        return redirect(&visitor, "/shop/cart");
    };
    let product_id = percent_encode(form.text("product_id"));
    let call = cart.authorize(Call::delete(format!(
        "/carts/{}/items/{product_id}",
        cart.cart_id
    )));
    let answer = visitor.call(&state.api, call).await;
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "That line could not be removed");
    }
    after_write(&visitor, &answer, "/shop/cart")
}

/// `POST /shop/checkout`: places the cart's order with the address and payment chosen. The form's
/// `attempt` is the request's `Idempotency-Key`, so sending the form twice places one order.
pub async fn check_out(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    form: Form,
) -> Response {
    if let Some(refused) = form.refusal(&visitor) {
        return refused;
    }
    let Some(cart) = visitor.own_cart().cloned() else {
        return message(
            &state,
            &visitor,
            StatusCode::CONFLICT,
            "Your cart is empty",
            "Add something to your cart before checking out.",
        );
    };
    let entered = json!({
        "name": form.text("name"), "line1": form.text("line1"), "line2": form.text("line2"),
        "city": form.text("city"), "postal_code": form.text("postal_code"),
        "country": form.text("country"), "payment": form.text("payment"),
    });
    let mut address = json!({
        "name": form.text("name"), "line1": form.text("line1"), "city": form.text("city"),
        "postal_code": form.text("postal_code"), "country": form.text("country").to_uppercase(),
    });
    if !form.text("line2").is_empty() {
        address["line2"] = json!(form.text("line2"));
    }
    let payment = form.text("payment");
    let body = if payment == "bank_transfer" {
        json!({ "payment_method": "bank_transfer", "shipping_address": address })
    } else {
        json!({ "payment_token": payment, "shipping_address": address })
    };
    let call = cart.authorize(form.idempotent(Call::post(
        format!("/carts/{}/checkout", cart.cart_id),
        body,
    )));
    let answer = visitor.call(&state.api, call).await;
    if answer.status.is_client_error() {
        let problem = answer.problem();
        return cart_page(
            &state,
            &mut visitor,
            &HashMap::new(),
            answer.status,
            Some(problem),
            entered,
        )
        .await;
    }
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "Your order could not be placed");
    }
    let order_id = answer.body["order_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(token) = answer.body["order_token"].as_str() {
        visitor.keep_guest_order(&order_id, token);
    }
    visitor.drop_cart();
    after_write(
        &visitor,
        &answer,
        &format!("/shop/orders/{}", percent_encode(&order_id)),
    )
}

/// `/shop/orders/{id}`: an order's state, lines, shipments, payments and refunds. While it is
/// pending the page reloads itself every two seconds.
pub async fn order(
    State(state): State<ConsoleState>,
    Visit(mut visitor): Visit,
    Path(order_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if uuid::Uuid::parse_str(&order_id).is_err() {
        return message(
            &state,
            &visitor,
            StatusCode::NOT_FOUND,
            "No such order",
            "This address names no order.",
        );
    }
    let mut call = Call::get(read_at(format!("/orders/{order_id}"), &params));
    if let Some(token) = visitor.guest_order_token(&order_id) {
        call = call.header("x-order-token", token.to_owned());
    }
    let answer = visitor.call(&state.api, call).await;
    // Not logged in and not a guest order of this browser: it may be the order of an account
    // (a mail's link), which the API shows no one else.
    let anonymous = visitor.session.is_none() && visitor.guest_order_token(&order_id).is_none();
    if anonymous
        && matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND
        )
    {
        return redirect(
            &visitor,
            &format!(
                "/account/login?next={}",
                percent_encode(&format!("/shop/orders/{order_id}"))
            ),
        );
    }
    if !answer.ok() {
        return failure(&state, &visitor, &answer, "This order cannot be shown");
    }
    let mut order = answer.body;
    name_lines(&state, &mut visitor, &mut order["lines"]).await;
    let pending = order["status"] == "PENDING";
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "order.html",
        context! { order => Value::from_serialize(&order), refresh => pending },
    )
}

/// `/shop/orders`: a customer's orders, or the ones a guest placed in this browser.
pub async fn my_orders(State(state): State<ConsoleState>, Visit(mut visitor): Visit) -> Response {
    let customer = visitor
        .me
        .as_ref()
        .filter(|me| me["kind"] == "customer")
        .and_then(|me| me["user_id"].as_str())
        .map(str::to_owned);
    let orders = match customer {
        Some(customer) => {
            let answer = visitor
                .call(
                    &state.api,
                    Call::get(format!("/customers/{customer}/orders")),
                )
                .await;
            if !answer.ok() {
                return failure(&state, &visitor, &answer, "Your orders cannot be shown");
            }
            answer.body["orders"].clone()
        }
        None => {
            let mut orders = Vec::new();
            for (order_id, token) in visitor.guest_orders.clone() {
                let answer = visitor
                    .call(
                        &state.api,
                        Call::get(format!("/orders/{order_id}")).header("x-order-token", token),
                    )
                    .await;
                if answer.ok() {
                    orders.push(answer.body);
                }
            }
            serde_json::Value::Array(orders)
        }
    };
    page(
        &state,
        &visitor,
        StatusCode::OK,
        "orders.html",
        context! { orders => Value::from_serialize(&orders) },
    )
}
