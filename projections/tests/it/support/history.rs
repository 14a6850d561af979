//! A deterministic shop-like history for the projections' tests and benchmarks: products created
//! and changed, views, carts filled, emptied and checked out, orders with their stock
//! reservations and payments, confirmed or cancelled. Sessions run interleaved, so the streams'
//! events are mixed in the log as in a real shop. Payloads follow the domain's events (see
//! `schemas/golden/`).

#![allow(dead_code)]

use std::collections::VecDeque;

use eventstore::RecordedEvent;
use serde_json::{Value, json};
use uuid::Uuid;

/// A small deterministic random source (xorshift64*), so histories are reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn uuid(&mut self) -> Uuid {
        let bytes = ((u128::from(self.next()) << 64) | u128::from(self.next())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// The shape of a generated history.
#[derive(Clone, Debug)]
pub struct Shape {
    pub products: usize,
    pub customers: usize,
    /// How many checkout sessions run interleaved.
    pub concurrent_sessions: usize,
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            products: 2_000,
            customers: 20_000,
            concurrent_sessions: 64,
            seed: 7,
        }
    }
}

#[derive(Clone, Debug)]
struct Product {
    id: Uuid,
    name: String,
    description: String,
    price_minor: i64,
    stock_qty: u32,
    category: Option<String>,
    version: u64,
}

#[derive(Clone, Debug)]
struct Line {
    product: usize,
    quantity: u32,
    unit_price_minor: i64,
}

/// One step of a session, emitted when it is its turn (so product versions and prices are those
/// of that moment).
#[derive(Clone, Debug)]
enum Step {
    Add {
        cart: String,
        product: usize,
        quantity: u32,
    },
    Remove {
        cart: String,
        product: usize,
    },
    CheckOut {
        cart: String,
        order: Uuid,
        customer: String,
    },
    Reserve {
        order: Uuid,
        line: usize,
    },
    RequestPayment {
        order: Uuid,
    },
    Settle {
        order: Uuid,
    },
    FinishLine {
        order: Uuid,
        line: usize,
    },
}

#[derive(Clone, Debug, Default)]
struct Session {
    steps: VecDeque<Step>,
    cart_lines: Vec<Line>,
    order_lines: Vec<Line>,
    total_minor: i64,
    outcome: Outcome,
    cart_version: u64,
    order_version: u64,
    payment_version: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Outcome {
    #[default]
    Paid,
    Declined,
    TimedOut,
}

/// Builds histories event by event.
#[derive(Debug)]
pub struct Generator {
    shape: Shape,
    rng: Rng,
    products: Vec<Product>,
    events: Vec<RecordedEvent>,
    sessions: Vec<Session>,
    next_cart: u64,
    views_stream: String,
    views_version: u64,
    at: chrono::DateTime<chrono::Utc>,
}

const CATEGORIES: &[&str] = &["coffee", "tea", "kitchen", "books", "garden"];

impl Generator {
    pub fn new(shape: Shape) -> Self {
        let mut rng = Rng::new(shape.seed);
        let views_stream = rng.uuid().to_string();
        Generator {
            shape,
            rng,
            products: Vec::new(),
            events: Vec::new(),
            sessions: Vec::new(),
            next_cart: 0,
            views_stream,
            views_version: 0,
            at: chrono::DateTime::from_timestamp(1_760_000_000, 0).unwrap_or_default(),
        }
    }

    /// The log so far, positions 1, 2, 3, ...
    pub fn into_events(self) -> Vec<RecordedEvent> {
        self.events
    }

    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    fn emit(
        &mut self,
        stream_type: &str,
        stream_id: &str,
        version: u64,
        kind: &str,
        payload: Value,
    ) {
        self.at += chrono::Duration::milliseconds(1 + self.rng.below(20) as i64);
        let schema_version = if kind == "ProductUpdated" { 2 } else { 1 };
        let position = self.events.len() as u64 + 1;
        let event_id = self.rng.uuid();
        let envelope = json!({
            "event_id": event_id,
            "event_type": kind,
            "schema_version": schema_version,
            "stream_type": stream_type,
            "stream_id": stream_id,
            "stream_version": version,
            "position": position,
            "occurred_at": self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "metadata": {
                "correlation_id": event_id,
                "causation_id": event_id,
                "actor": "generator",
                "source": "test"
            },
            "payload": payload,
        });
        let event: RecordedEvent = match serde_json::from_value(envelope) {
            Ok(event) => event,
            Err(error) => panic!("a generated {kind} event does not parse: {error}"),
        };
        self.events.push(event);
    }

    fn product_updated(&mut self, index: usize) {
        let product = &mut self.products[index];
        product.version += 1;
        let product = product.clone();
        self.emit(
            "product",
            &product.id.to_string(),
            product.version,
            "ProductUpdated",
            json!({
                "product_id": product.id,
                "name": product.name,
                "description": product.description,
                "price_minor": product.price_minor,
                "stock_qty": product.stock_qty,
                "category": product.category,
                "version": product.version,
            }),
        );
    }

    fn product_event(&mut self, index: usize, kind: &str, payload: Value) {
        let product = &mut self.products[index];
        product.version += 1;
        let (id, version) = (product.id.to_string(), product.version);
        self.emit("product", &id, version, kind, payload);
    }

    /// Creates a product (`ProductCreated` then `ProductUpdated`); returns its index.
    pub fn create_product(&mut self) -> usize {
        let index = self.products.len();
        let id = self.rng.uuid();
        let category = if self.rng.chance(80) {
            Some(CATEGORIES[self.rng.below(CATEGORIES.len() as u64) as usize].to_owned())
        } else {
            None
        };
        let product = Product {
            id,
            name: format!("Product {index}"),
            description: format!("A fine thing, number {index}, for everyday use."),
            price_minor: 100 + self.rng.below(50_000) as i64,
            stock_qty: 1_000_000,
            category,
            version: 0,
        };
        self.products.push(product.clone());
        self.product_event(
            index,
            "ProductCreated",
            json!({
                "product_id": id,
                "name": product.name,
                "description": product.description,
                "price_minor": product.price_minor,
                "stock_qty": product.stock_qty,
                "category": product.category,
            }),
        );
        self.product_updated(index);
        index
    }

    /// Changes a product's price (`ProductDetailsChanged` then `ProductUpdated`).
    pub fn change_product(&mut self, index: usize) {
        let price = 100 + self.rng.below(50_000) as i64;
        self.products[index].price_minor = price;
        let product = self.products[index].clone();
        self.product_event(
            index,
            "ProductDetailsChanged",
            json!({
                "name": product.name,
                "description": product.description,
                "price_minor": price,
                "category": product.category,
            }),
        );
        self.product_updated(index);
    }

    /// A view of a product by a customer.
    pub fn view(&mut self, index: usize) {
        self.views_version += 1;
        let customer = self.customer();
        let (stream, version, product_id) = (
            self.views_stream.clone(),
            self.views_version,
            self.products[index].id,
        );
        self.emit(
            "product_views",
            &stream,
            version,
            "ProductViewed",
            json!({"product_id": product_id, "customer_id": customer}),
        );
    }

    fn customer(&mut self) -> String {
        format!("customer-{}", self.rng.below(self.shape.customers as u64))
    }

    fn popular_product(&mut self) -> usize {
        // Skewed: a few products get most of the traffic.
        let n = self.products.len() as u64;
        let a = self.rng.below(n);
        let b = self.rng.below(n);
        a.min(b) as usize
    }

    fn new_session(&mut self) -> Session {
        self.next_cart += 1;
        let cart = format!("cart-{}-{}", self.shape.seed, self.next_cart);
        let mut session = Session::default();
        let items = 1 + self.rng.below(4);
        let mut chosen = Vec::new();
        for _ in 0..items {
            let product = self.popular_product();
            let quantity = 1 + self.rng.below(3) as u32;
            chosen.push(product);
            session.steps.push_back(Step::Add {
                cart: cart.clone(),
                product,
                quantity,
            });
            if self.rng.chance(10) {
                // The same product again: its line grows.
                session.steps.push_back(Step::Add {
                    cart: cart.clone(),
                    product,
                    quantity: 1,
                });
            }
        }
        if self.rng.chance(15) {
            let product = chosen[self.rng.below(chosen.len() as u64) as usize];
            session.steps.push_back(Step::Remove {
                cart: cart.clone(),
                product,
            });
        }
        if self.rng.chance(20) {
            return session; // abandoned cart
        }
        let order = self.rng.uuid();
        let customer = self.customer();
        session.steps.push_back(Step::CheckOut {
            cart,
            order,
            customer,
        });
        session.outcome = match self.rng.below(100) {
            0..80 => Outcome::Paid,
            80..95 => Outcome::Declined,
            _ => Outcome::TimedOut,
        };
        session
    }

    /// Adds events until the log holds at least `n` events.
    pub fn run_until(&mut self, n: usize) {
        while self.products.len() < self.shape.products {
            self.create_product();
        }
        while self.events.len() < n {
            let roll = self.rng.below(100);
            if roll < 10 {
                let product = self.popular_product();
                self.view(product);
            } else if roll < 11 {
                let product = self.rng.below(self.products.len() as u64) as usize;
                self.change_product(product);
            } else {
                self.step_a_session();
            }
        }
    }

    fn step_a_session(&mut self) {
        if self.sessions.len() < self.shape.concurrent_sessions {
            let session = self.new_session();
            self.sessions.push(session);
        }
        let index = self.rng.below(self.sessions.len() as u64) as usize;
        let mut session = self.sessions.swap_remove(index);
        if let Some(step) = session.steps.pop_front() {
            self.run_step(&mut session, step);
        }
        if !session.steps.is_empty() {
            self.sessions.push(session);
        }
    }

    fn run_step(&mut self, session: &mut Session, step: Step) {
        match step {
            Step::Add {
                cart,
                product,
                quantity,
            } => {
                let unit_price_minor = self.products[product].price_minor;
                let line_quantity =
                    match session.cart_lines.iter_mut().find(|l| l.product == product) {
                        Some(line) => {
                            line.quantity += quantity;
                            line.unit_price_minor = unit_price_minor;
                            line.quantity
                        }
                        None => {
                            session.cart_lines.push(Line {
                                product,
                                quantity,
                                unit_price_minor,
                            });
                            quantity
                        }
                    };
                session.cart_version += 1;
                let product_id = self.products[product].id;
                self.emit(
                    "cart",
                    &cart,
                    session.cart_version,
                    "CartItemAdded",
                    json!({
                        "product_id": product_id,
                        "quantity": quantity,
                        "line_quantity": line_quantity,
                        "unit_price_minor": unit_price_minor,
                    }),
                );
            }
            Step::Remove { cart, product } => {
                session.cart_lines.retain(|line| line.product != product);
                session.cart_version += 1;
                let product_id = self.products[product].id;
                self.emit(
                    "cart",
                    &cart,
                    session.cart_version,
                    "CartItemRemoved",
                    json!({"product_id": product_id}),
                );
            }
            Step::CheckOut {
                cart,
                order,
                customer,
            } => {
                if session.cart_lines.is_empty() {
                    return;
                }
                session.cart_version += 1;
                self.emit(
                    "cart",
                    &cart,
                    session.cart_version,
                    "CartCheckedOut",
                    json!({"order_id": order, "customer_id": customer}),
                );
                session.order_lines = session.cart_lines.clone();
                session.total_minor = session
                    .order_lines
                    .iter()
                    .map(|line| line.unit_price_minor * i64::from(line.quantity))
                    .sum();
                let lines: Vec<Value> = session
                    .order_lines
                    .iter()
                    .map(|line| {
                        json!({
                            "product_id": self.products[line.product].id,
                            "quantity": line.quantity,
                            "unit_price_minor": line.unit_price_minor,
                        })
                    })
                    .collect();
                session.order_version += 1;
                self.emit(
                    "order",
                    &order.to_string(),
                    session.order_version,
                    "OrderCreated",
                    json!({
                        "order_id": order,
                        "customer_id": customer,
                        "lines": lines,
                        "total_minor": session.total_minor,
                        "payment_token": "tok_visa",
                        "cart_id": cart,
                    }),
                );
                for line in 0..session.order_lines.len() {
                    session.steps.push_back(Step::Reserve { order, line });
                }
                session.steps.push_back(Step::RequestPayment { order });
                session.steps.push_back(Step::Settle { order });
                for line in 0..session.order_lines.len() {
                    session.steps.push_back(Step::FinishLine { order, line });
                }
            }
            Step::Reserve { order, line } => {
                let Line {
                    product, quantity, ..
                } = session.order_lines[line];
                self.products[product].stock_qty -= quantity;
                self.product_event(
                    product,
                    "StockReserved",
                    json!({"order_id": order, "quantity": quantity}),
                );
                self.product_updated(product);
            }
            Step::RequestPayment { order } => {
                session.payment_version += 1;
                self.emit(
                    "payment",
                    &order.to_string(),
                    session.payment_version,
                    "PaymentRequested",
                    json!({
                        "order_id": order,
                        "amount_minor": session.total_minor,
                        "payment_token": "tok_visa",
                    }),
                );
            }
            Step::Settle { order } => {
                session.payment_version += 1;
                let (kind, payload) = match session.outcome {
                    Outcome::Paid => (
                        "PaymentSucceeded",
                        json!({
                            "order_id": order,
                            "amount_minor": session.total_minor,
                            "charge_id": format!("ch_{}", self.rng.below(1 << 40)),
                        }),
                    ),
                    Outcome::Declined => (
                        "PaymentFailed",
                        json!({"order_id": order, "reason": "card_declined"}),
                    ),
                    Outcome::TimedOut => ("PaymentTimedOut", json!({"order_id": order})),
                };
                self.emit(
                    "payment",
                    &order.to_string(),
                    session.payment_version,
                    kind,
                    payload,
                );
                session.order_version += 1;
                let stream = order.to_string();
                match session.outcome {
                    Outcome::Paid => self.emit(
                        "order",
                        &stream,
                        session.order_version,
                        "OrderConfirmed",
                        json!({"order_id": order}),
                    ),
                    Outcome::Declined | Outcome::TimedOut => {
                        let reason = if session.outcome == Outcome::Declined {
                            "payment_declined"
                        } else {
                            "payment_timeout"
                        };
                        self.emit(
                            "order",
                            &stream,
                            session.order_version,
                            "OrderCancelled",
                            json!({"order_id": order, "reason": reason, "detail": "generated"}),
                        );
                    }
                }
            }
            Step::FinishLine { order, line } => {
                let Line {
                    product, quantity, ..
                } = session.order_lines[line];
                let kind = if session.outcome == Outcome::Paid {
                    "StockCommitted"
                } else {
                    self.products[product].stock_qty += quantity;
                    "StockReleased"
                };
                self.product_event(
                    product,
                    kind,
                    json!({"order_id": order, "quantity": quantity}),
                );
                self.product_updated(product);
            }
        }
    }
}

/// A history of at least `n` events of shape `shape`.
pub fn shop_history(shape: Shape, n: usize) -> Vec<RecordedEvent> {
    let mut generator = Generator::new(shape);
    generator.run_until(n);
    generator.into_events()
}
