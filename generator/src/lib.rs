//! A realistic synthetic shop history, appended straight to the store (`mercato generate`).
//!
//! Every event is decided by the domain's own aggregates (`Aggregate::handle`, which applies
//! what it emits), encoded by `schemas`, and stored with the metadata the real writers give it:
//! the command API for catalogue, cart and checkout requests, the checkout saga (its steps'
//! names, derived event ids, `saga_id` and `causation_id` come from [`sagas::steps`]) for
//! reservations, payments and the order's end, the
//! query API's view recorder for `ProductViewed`. Sessions run one after another on a simulated
//! clock, so `occurred_at` never goes backwards in the log.
//!
//! Every order ends `CONFIRMED` or `CANCELLED` with its stock committed or released, so a server
//! started on the store finds no saga with work left. Everything comes from one `StdRng` seeded
//! with the options' seed: the same seed on an empty store writes the same events.
//!
//! Batches of the options' batch size go to the store with `append_atomic` (stream version
//! checked on every request) from a writer task, while the next batch is generated.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::order::OrderLine;
use domain::views::ProductViewed;
use domain::{
    CancelReason, Cart, CartCommand, CartId, CartWriter, CustomerId, Money, Order, OrderCommand,
    Payment, PaymentCommand, Product, ProductCommand, ProductError, ProductViewEvent,
    VIEWS_STREAM_TYPE,
};
use eventstore::aggregate::derived_event_id;
use eventstore::{
    AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, Snapshot, StoreError,
};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sagas::steps::{self, SagaStep};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use uuid::Uuid;

/// The most events one `--batch` may hold (one append transaction).
const BATCH_MAX: usize = 100_000;
/// When the first generated event happens (a fixed time, so the same seed writes the same log).
const START_SECONDS: i64 = 1_748_764_800; // 2025-06-01T08:00:00Z
/// Views the query API's recorder appends at most in one request.
const VIEW_BATCH: usize = 256;
/// A view stream belongs to one server process; a new one starts after this many views.
const VIEWS_PER_PROCESS: u64 = 50_000;
/// Share of checkouts paid with each test-gateway token (the rest is `tok_visa`).
const DECLINED_SHARE: f64 = 0.04;
const TIMEOUT_SHARE: f64 = 0.01;
/// Share of shopping sessions that end in a checkout; the rest of the carts are abandoned.
const CHECKOUT_SHARE: f64 = 0.32;
/// Share of sessions that place an order directly (`POST /orders`, no cart).
const DIRECT_ORDER_SHARE: f64 = 0.05;
/// Share of sessions that are a catalogue change by an administrator.
const ADMIN_SHARE: f64 = 0.015;
/// Below this stock an administrator usually restocks after a sale.
const RESTOCK_BELOW: u32 = 8;
/// The Zipf exponent of product popularity.
const ZIPF_EXPONENT: f64 = 1.0;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// How many events to write (about: the last session is finished, so every order ends).
    pub events: u64,
    /// Seed of the random history: the same seed on an empty store writes the same events.
    pub seed: u64,
    /// Products in the catalogue; `None`: events / 500, between 10 and 5,000.
    pub products: Option<u32>,
    /// Add to a store that already holds events (new products, carts and orders only).
    pub append: bool,
    /// Events per atomic append.
    pub batch: usize,
    /// How long the saga waits for the payment gateway (the clock moves on by it for every
    /// `tok_timeout` order).
    pub payment_timeout: Duration,
}

impl GenerateOptions {
    /// How many products the catalogue gets.
    pub fn product_count(&self) -> u32 {
        self.products
            .unwrap_or_else(|| (self.events / 500).clamp(10, 5_000) as u32)
    }

    /// Checks the options can make a history; answers the number of products.
    pub fn check(&self) -> Result<u32, GenerateError> {
        if self.events == 0 {
            return Err(GenerateError::Usage(
                "--events must be at least 1; give the number of events to write".to_owned(),
            ));
        }
        if !(1..=BATCH_MAX).contains(&self.batch) {
            return Err(GenerateError::Usage(format!(
                "--batch must be between 1 and {BATCH_MAX} events"
            )));
        }
        let n_products = self.product_count();
        if n_products == 0 {
            return Err(GenerateError::Usage(
                "--products must be at least 1: orders need something to buy".to_owned(),
            ));
        }
        Ok(n_products)
    }
}

/// Why no history, or not all of it, was written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The options or the store do not allow it: the message says what to change.
    #[error("{0}")]
    Usage(String),
    /// The store failed while doing `what`.
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    /// The domain refused a command the generator's model of the shop expected to pass, or an
    /// event could not be encoded: a bug in the generator.
    #[error("{0}")]
    Model(String),
}

type Failure = GenerateError;

/// What a generation tells as it goes.
pub trait Observer: Send + Sync {
    /// The store is ready and the history starts: about `options.events` events over
    /// `n_products` products.
    fn started(&self, _options: &GenerateOptions, _n_products: u32) {}
    /// Every 100,000 events written: how many, and the seconds since the start.
    fn written(&self, _written: u64, _seconds: f64) {}
}

type OnWritten = Arc<dyn Observer>;

/// What was generated.
#[derive(Debug, Default)]
pub struct Stats {
    pub events: u64,
    /// New streams by stream type.
    pub streams: BTreeMap<&'static str, u64>,
    /// Events by event type.
    pub event_types: BTreeMap<String, u64>,
    /// Shopping and administration sessions.
    pub sessions: u64,
    pub orders_confirmed: u64,
    /// Cancelled orders by reason.
    pub orders_cancelled: BTreeMap<&'static str, u64>,
}

/// What [`generate`] did.
#[derive(Debug)]
pub struct Generated {
    pub stats: Stats,
    /// Seconds from the start until every event was written, and until the end.
    pub write_seconds: f64,
    pub seconds: f64,
}

/// Events waiting for the next append, and what has been generated so far.
#[derive(Debug)]
struct Out {
    batch: Vec<AppendRequest>,
    batch_events: usize,
    batch_size: usize,
    sender: mpsc::Sender<Vec<AppendRequest>>,
    stats: Stats,
    clock: DateTime<Utc>,
}

impl Out {
    /// Queues `events` for `stream_type/stream_id`, which is at `expected` before them. A
    /// request for the same stream as the previous one is merged into it.
    fn push(
        &mut self,
        stream_type: &'static str,
        stream_id: &str,
        expected: u64,
        events: Vec<NewEvent>,
    ) {
        if events.is_empty() {
            return;
        }
        if expected == 0 {
            *self.stats.streams.entry(stream_type).or_default() += 1;
        }
        self.stats.events += events.len() as u64;
        self.batch_events += events.len();
        for event in &events {
            *self
                .stats
                .event_types
                .entry(event.event_type.clone())
                .or_default() += 1;
        }
        if let Some(last) = self.batch.last_mut()
            && last.stream_type == stream_type
            && last.stream_id == stream_id
        {
            last.events.extend(events);
            return;
        }
        self.batch.push(AppendRequest::new(
            stream_type,
            stream_id,
            ExpectedVersion::Exact(expected),
            events,
        ));
    }

    /// Hands the batch to the writer once it is full. Called only between commands, so the
    /// requests of one command (a checkout's cart and order) always go in one transaction.
    async fn maybe_flush(&mut self) -> Result<(), Failure> {
        if self.batch_events >= self.batch_size {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_events = 0;
        let batch = std::mem::take(&mut self.batch);
        self.sender.send(batch).await.map_err(|_| {
            GenerateError::Model("the store writer stopped (see its error)".to_owned())
        })
    }

    /// Moves the simulated clock on by `millis`.
    fn tick(&mut self, millis: u64) {
        self.clock += chrono::Duration::milliseconds(millis as i64);
    }
}

/// How a command's event ids are made.
#[derive(Clone, Copy, Debug)]
enum Ids {
    /// Random (from the seeded generator), as the command API's `Uuid::new_v4`.
    Random,
    /// Derived from a cause, as the saga's commands: `derived_event_id(cause, ...)`.
    Caused(Uuid),
}

/// A product of the catalogue as its stream leaves it.
#[derive(Debug)]
struct SimProduct {
    id: Uuid,
    id_text: String,
    state: Product,
    version: u64,
}

/// An aggregate of a short-lived stream (cart, order, payment) as its stream leaves it.
#[derive(Debug, Default)]
struct Stream<A> {
    id: String,
    state: A,
    version: u64,
}

impl<A: Default> Stream<A> {
    fn new(id: String) -> Self {
        Stream {
            id,
            state: A::default(),
            version: 0,
        }
    }
}

fn random_uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

fn encode_events<E: DomainEvent>(
    events: &[E],
    ids: impl Fn(usize) -> Uuid,
    occurred_at: DateTime<Utc>,
    metadata: &EventMetadata,
) -> Result<Vec<NewEvent>, Failure> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let encoded = schemas::encode(event).map_err(|error| {
                GenerateError::Model(format!("cannot encode an event: {error}"))
            })?;
            Ok(NewEvent::from_encoded(
                encoded,
                ids(index),
                occurred_at,
                metadata.clone(),
            ))
        })
        .collect()
}

/// Runs `command` on the aggregate (which applies what it decides) and queues its events.
/// `Ok(Err(refusal))` is the aggregate's refusal; nothing is queued then.
#[allow(clippy::too_many_arguments)]
async fn exec<A>(
    out: &mut Out,
    rng: &mut StdRng,
    state: &mut A,
    version: &mut u64,
    stream_id: &str,
    command: A::Command,
    metadata: &EventMetadata,
    ids: Ids,
) -> Result<Result<Vec<Uuid>, A::Error>, Failure>
where
    A: Aggregate<Services = ()>,
{
    let sink = EventSink::default();
    if let Err(refusal) = state.handle(command, &(), &sink).await {
        return Ok(Err(refusal));
    }
    let events = sink.collect().await;
    let event_ids: Vec<Uuid> = match ids {
        Ids::Random => (0..events.len()).map(|_| random_uuid(rng)).collect(),
        Ids::Caused(cause) => (0..events.len())
            .map(|index| derived_event_id(cause, A::TYPE, stream_id, index))
            .collect(),
    };
    let encoded = encode_events(&events, |index| event_ids[index], out.clock, metadata)?;
    let expected = *version;
    *version += events.len() as u64;
    out.push(A::TYPE, stream_id, expected, encoded);
    Ok(Ok(event_ids))
}

/// A refusal the generator never expects: a bug in its model of the shop.
fn unexpected(what: &str, error: impl std::fmt::Display) -> Failure {
    GenerateError::Model(format!(
        "the generator's {what} was refused by the domain: {error}"
    ))
}

/// One checkout's identity, shared by every event the saga causes.
#[derive(Debug)]
struct SagaContext {
    order_id: Uuid,
    order_event_id: Uuid,
    metadata: EventMetadata,
}

impl SagaContext {
    fn new(order_id: Uuid, order_event_id: Uuid, correlation_id: &str) -> Self {
        SagaContext {
            order_id,
            order_event_id,
            metadata: steps::metadata(order_event_id, correlation_id),
        }
    }

    /// The saga's event ids for `step`, as `Checkout` derives them.
    fn ids(&self, step: SagaStep) -> Ids {
        Ids::Caused(step.cause(self.order_event_id))
    }
}

#[derive(Debug)]
struct Generator {
    rng: StdRng,
    out: Out,
    products: Vec<SimProduct>,
    /// Index in `products` of each product id.
    index_of: HashMap<Uuid, usize>,
    /// Cumulative Zipf weights by popularity rank.
    zipf: Vec<f64>,
    /// Product index of each popularity rank.
    by_rank: Vec<usize>,
    customers: u64,
    payment_timeout: Duration,
    views: Vec<(Uuid, Option<CustomerId>)>,
    view_stream: String,
    view_version: u64,
    n_categories: usize,
}

const CATEGORIES: &[&str] = &[
    "kitchen",
    "garden",
    "books",
    "toys",
    "electronics",
    "sports",
    "office",
    "bathroom",
    "outdoor",
    "music",
    "pets",
    "beauty",
];
const ADJECTIVES: &[&str] = &[
    "Classic", "Compact", "Deluxe", "Eco", "Everyday", "Pro", "Mini", "Premium", "Rustic", "Smart",
    "Travel", "Vintage",
];
const NOUNS: &[&str] = &[
    "Kettle",
    "Mug",
    "Lamp",
    "Backpack",
    "Notebook",
    "Headphones",
    "Blender",
    "Planter",
    "Towel",
    "Puzzle",
    "Speaker",
    "Bottle",
    "Chair",
    "Jacket",
    "Brush",
    "Clock",
];

fn admin_metadata(rng: &mut StdRng) -> EventMetadata {
    EventMetadata {
        correlation_id: random_uuid(rng).to_string(),
        causation_id: random_uuid(rng).to_string(),
        saga_id: None,
        // The catalogue is kept by an integration, with an API key of the catalog role.
        actor: "service:catalogue-import".to_owned(),
        source: "command-api".to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

fn customer_metadata(rng: &mut StdRng, customer: &CustomerId) -> EventMetadata {
    EventMetadata {
        correlation_id: random_uuid(rng).to_string(),
        causation_id: random_uuid(rng).to_string(),
        saga_id: None,
        actor: format!("user:{customer}"),
        source: "command-api".to_owned(),
        traceparent: None,
        tracestate: None,
    }
}

impl Generator {
    /// An exponentially distributed wait of `mean_ms` on average.
    fn wait(&mut self, mean_ms: f64) {
        let u: f64 = self.rng.random();
        let millis = -mean_ms * (1.0 - u).ln();
        self.out.tick(millis.min(mean_ms * 20.0) as u64 + 1);
    }

    /// A product index, popular ones more often (Zipf by rank).
    fn pick_product(&mut self) -> usize {
        let total = *self.zipf.last().unwrap_or(&1.0);
        let target = self.rng.random::<f64>() * total;
        let rank = self.zipf.partition_point(|&cumulative| cumulative < target);
        self.by_rank[rank.min(self.by_rank.len() - 1)]
    }

    fn pick_customer(&mut self) -> CustomerId {
        let number = self.rng.random_range(0..self.customers);
        CustomerId::parse(&format!("customer-{number:06}")).unwrap_or_else(|_| {
            CustomerId::parse("customer").unwrap_or_else(|_| unreachable!("a valid id"))
        })
    }

    async fn create_catalogue(&mut self, n_products: u32) -> Result<(), Failure> {
        for _ in 0..n_products {
            let id = random_uuid(&mut self.rng);
            let adjective = ADJECTIVES[self.rng.random_range(0..ADJECTIVES.len())];
            let noun = NOUNS[self.rng.random_range(0..NOUNS.len())];
            let category = CATEGORIES[self.rng.random_range(0..self.n_categories)];
            let name = format!("{adjective} {noun} {}", &id.simple().to_string()[..6]);
            let description = format!(
                "A {} {} for every day, from our {category} range.",
                adjective.to_lowercase(),
                noun.to_lowercase()
            );
            let price = Money::from_minor(self.rng.random_range(199..=19_999));
            let stock_qty = self.rng.random_range(20..=400);
            let mut product = SimProduct {
                id,
                id_text: id.to_string(),
                state: Product::default(),
                version: 0,
            };
            let metadata = admin_metadata(&mut self.rng);
            exec(
                &mut self.out,
                &mut self.rng,
                &mut product.state,
                &mut product.version,
                &product.id_text,
                ProductCommand::CreateProduct {
                    product_id: id,
                    name,
                    description,
                    price,
                    stock_qty,
                    category: Some(category.to_owned()),
                },
                &metadata,
                Ids::Random,
            )
            .await?
            .map_err(|error| unexpected("product creation", error))?;
            self.index_of.insert(id, self.products.len());
            self.products.push(product);
            self.wait(2_000.0);
            self.out.maybe_flush().await?;
        }
        Ok(())
    }

    /// Runs a product command of an administrator or the saga.
    async fn product_command(
        &mut self,
        index: usize,
        command: ProductCommand,
        metadata: &EventMetadata,
        ids: Ids,
    ) -> Result<Result<Vec<Uuid>, ProductError>, Failure> {
        let product = &mut self.products[index];
        exec(
            &mut self.out,
            &mut self.rng,
            &mut product.state,
            &mut product.version,
            &product.id_text,
            command,
            metadata,
            ids,
        )
        .await
    }

    /// Records a product view the way the query API does: gathered, appended in batches.
    async fn view(&mut self, index: usize, customer: &CustomerId) -> Result<(), Failure> {
        let customer = (self.rng.random::<f64>() < 0.7).then(|| customer.clone());
        self.views.push((self.products[index].id, customer));
        if self.views.len() >= VIEW_BATCH || self.rng.random::<f64>() < 0.02 {
            self.flush_views();
        }
        Ok(())
    }

    fn flush_views(&mut self) {
        if self.views.is_empty() {
            return;
        }
        if self.view_version >= VIEWS_PER_PROCESS {
            self.view_stream = random_uuid(&mut self.rng).to_string();
            self.view_version = 0;
        }
        let views = std::mem::take(&mut self.views);
        let mut events = Vec::with_capacity(views.len());
        for (product_id, customer_id) in views {
            // As the query API records it: a view names its customer when they asked.
            let actor = customer_id.as_ref().map_or_else(
                || "anonymous".to_owned(),
                |customer_id| format!("user:{customer_id}"),
            );
            let event = ProductViewEvent::ProductViewed(ProductViewed {
                product_id,
                customer_id,
            });
            let Ok(encoded) = schemas::encode(&event) else {
                continue;
            };
            events.push(NewEvent {
                event_id: random_uuid(&mut self.rng),
                event_type: encoded.event_type,
                schema_version: encoded.schema_version,
                occurred_at: self.out.clock,
                payload: encoded.payload,
                metadata: EventMetadata {
                    correlation_id: random_uuid(&mut self.rng).to_string(),
                    causation_id: String::new(),
                    saga_id: None,
                    actor,
                    source: "query-api".to_owned(),
                    traceparent: None,
                    tracestate: None,
                },
            });
        }
        let expected = self.view_version;
        self.view_version += events.len() as u64;
        let stream = self.view_stream.clone();
        self.out.push(VIEWS_STREAM_TYPE, &stream, expected, events);
    }

    /// A customer browses, fills a cart, maybe changes their mind, and checks out or leaves.
    async fn cart_session(&mut self) -> Result<(), Failure> {
        let customer = self.pick_customer();
        let cart_text = format!(
            "cart-{}",
            &random_uuid(&mut self.rng).simple().to_string()[..16]
        );
        let cart_id = CartId::parse(&cart_text).map_err(|error| unexpected("cart id", error))?;
        let mut cart = Stream::<Cart>::new(cart_text);
        let n_items = 1 + (self.rng.random::<f64>().powi(2) * 5.0) as usize;
        for _ in 0..n_items {
            for _ in 0..self.rng.random_range(0..=2) {
                let browsed = self.pick_product();
                self.view(browsed, &customer).await?;
                self.wait(8_000.0);
            }
            let index = self.pick_product();
            self.view(index, &customer).await?;
            self.wait(15_000.0);
            let quantity = match self.rng.random::<f64>() {
                x if x < 0.75 => 1,
                x if x < 0.93 => 2,
                _ => self.rng.random_range(3..=5),
            };
            let metadata = customer_metadata(&mut self.rng, &customer);
            let command = CartCommand::AddItem {
                product_id: self.products[index].id,
                quantity,
                unit_price: self.products[index].state.price,
                by: CartWriter::Customer(customer.clone()),
            };
            exec(
                &mut self.out,
                &mut self.rng,
                &mut cart.state,
                &mut cart.version,
                &cart.id,
                command,
                &metadata,
                Ids::Random,
            )
            .await?
            .map_err(|error| unexpected("cart item", error))?;
        }
        if self.rng.random::<f64>() < 0.15 {
            let lines: Vec<Uuid> = cart.state.lines.keys().copied().collect();
            let product_id = lines[self.rng.random_range(0..lines.len())];
            self.wait(20_000.0);
            let metadata = customer_metadata(&mut self.rng, &customer);
            exec(
                &mut self.out,
                &mut self.rng,
                &mut cart.state,
                &mut cart.version,
                &cart.id,
                CartCommand::RemoveItem {
                    product_id,
                    by: CartWriter::Customer(customer.clone()),
                },
                &metadata,
                Ids::Random,
            )
            .await?
            .map_err(|error| unexpected("cart removal", error))?;
        }
        if cart.state.lines.is_empty() || self.rng.random::<f64>() >= CHECKOUT_SHARE {
            return self.out.maybe_flush().await; // abandoned
        }
        self.wait(30_000.0);
        // POST /carts/{cart_id}/checkout: the cart and the order in one atomic append.
        let order_id = random_uuid(&mut self.rng);
        let metadata = customer_metadata(&mut self.rng, &customer);
        exec(
            &mut self.out,
            &mut self.rng,
            &mut cart.state,
            &mut cart.version,
            &cart.id,
            CartCommand::CheckOut {
                order_id,
                customer_id: customer.clone(),
                by: CartWriter::Customer(customer.clone()),
            },
            &metadata,
            Ids::Random,
        )
        .await?
        .map_err(|error| unexpected("checkout", error))?;
        let lines = OrderLine::of_cart(&cart.state);
        self.place_order(order_id, customer, lines, Some(cart_id), metadata)
            .await
    }

    /// `POST /orders`: a customer who knows what they want.
    async fn direct_order(&mut self) -> Result<(), Failure> {
        let customer = self.pick_customer();
        let n_lines = self.rng.random_range(1..=3);
        let mut lines: Vec<OrderLine> = Vec::with_capacity(n_lines);
        for _ in 0..n_lines {
            let index = self.pick_product();
            let product_id = self.products[index].id;
            if lines.iter().any(|line| line.product_id == product_id) {
                continue;
            }
            lines.push(OrderLine {
                product_id,
                quantity: self.rng.random_range(1..=2),
                unit_price: self.products[index].state.price,
            });
        }
        let order_id = random_uuid(&mut self.rng);
        let metadata = customer_metadata(&mut self.rng, &customer);
        self.place_order(order_id, customer, lines, None, metadata)
            .await
    }

    /// Creates the order (in the batch that holds its cart's checkout), then runs its saga to
    /// the end.
    async fn place_order(
        &mut self,
        order_id: Uuid,
        customer: CustomerId,
        lines: Vec<OrderLine>,
        cart_id: Option<CartId>,
        metadata: EventMetadata,
    ) -> Result<(), Failure> {
        let payment_token = match self.rng.random::<f64>() {
            x if x < DECLINED_SHARE => "tok_chargeDeclined",
            x if x < DECLINED_SHARE + TIMEOUT_SHARE => "tok_timeout",
            _ => "tok_visa",
        };
        let mut order = Stream::<Order>::new(order_id.to_string());
        let ids = exec(
            &mut self.out,
            &mut self.rng,
            &mut order.state,
            &mut order.version,
            &order.id,
            OrderCommand::CreateOrder {
                order_id,
                customer_id: customer,
                lines: lines.clone(),
                payment_ref: Some(identity::PaymentVault::reference(order_id)),
                cart_id,
                shipping_address: None,
                billing_address: None,
                payment_method: domain::PaymentMethod::Card,
            },
            &metadata,
            Ids::Random,
        )
        .await?
        .map_err(|error| unexpected("order", error))?;
        self.out.maybe_flush().await?;
        let saga = SagaContext::new(order_id, ids[0], &metadata.correlation_id);
        self.saga(&saga, &mut order, &lines, payment_token).await
    }

    /// The checkout saga as `sagas::checkout::Checkout::drive` runs it with the test gateway.
    async fn saga(
        &mut self,
        saga: &SagaContext,
        order: &mut Stream<Order>,
        lines: &[OrderLine],
        payment_token: &str,
    ) -> Result<(), Failure> {
        // The intake picks the order up, then the lines are reserved in order.
        self.wait(40.0);
        let indexes: Vec<usize> = lines
            .iter()
            .map(|line| self.index_of.get(&line.product_id).copied().unwrap_or(0))
            .collect();
        for (line_index, (line, &index)) in lines.iter().zip(&indexes).enumerate() {
            let command = ProductCommand::ReserveStock {
                order_id: saga.order_id,
                quantity: line.quantity,
            };
            let step = SagaStep::Reserve(line_index);
            match self
                .product_command(index, command, &saga.metadata, saga.ids(step))
                .await?
            {
                Ok(_) => self.wait(3.0),
                Err(ProductError::InsufficientStock {
                    name,
                    requested,
                    available,
                }) => {
                    let detail = sagas::steps::out_of_stock_detail(
                        line.product_id,
                        &name,
                        requested,
                        available,
                    );
                    self.cancel(saga, order, &indexes, CancelReason::OutOfStock, detail)
                        .await?;
                    // The shop notices and restocks the product.
                    if self.rng.random::<f64>() < 0.9 {
                        self.restock(index).await?;
                    }
                    return self.out.maybe_flush().await;
                }
                Err(error) => return Err(unexpected("reservation", error)),
            }
        }
        let mut payment = Stream::<Payment>::new(saga.order_id.to_string());
        self.saga_step(
            saga,
            &mut payment,
            SagaStep::RequestPayment,
            PaymentCommand::RequestPayment {
                order_id: saga.order_id,
                amount: order.state.total,
                payment_ref: identity::PaymentVault::reference(saga.order_id),
            },
        )
        .await?;
        match payment_token {
            "tok_visa" => {
                self.wait(400.0);
                let charge_id = format!("ch_{}", saga.order_id.simple());
                self.saga_step(
                    saga,
                    &mut payment,
                    SagaStep::PaymentResult,
                    PaymentCommand::RecordSuccess { charge_id },
                )
                .await?;
                self.saga_step(saga, order, SagaStep::Confirm, OrderCommand::ConfirmOrder)
                    .await?;
                for (line_index, &index) in indexes.iter().enumerate() {
                    self.wait(3.0);
                    let command = ProductCommand::CommitStock {
                        order_id: saga.order_id,
                    };
                    let step = SagaStep::Commit(line_index);
                    self.product_command(index, command, &saga.metadata, saga.ids(step))
                        .await?
                        .map_err(|error| unexpected("stock commit", error))?;
                }
                self.out.stats.orders_confirmed += 1;
            }
            "tok_chargeDeclined" => {
                self.wait(400.0);
                let reason = "card_declined".to_owned();
                self.saga_step(
                    saga,
                    &mut payment,
                    SagaStep::PaymentResult,
                    PaymentCommand::RecordFailure {
                        reason: reason.clone(),
                    },
                )
                .await?;
                let detail = format!("the payment was declined: {reason}");
                self.cancel(saga, order, &indexes, CancelReason::PaymentDeclined, detail)
                    .await?;
            }
            _ => {
                // The gateway never answers: the saga waits until the deadline.
                self.out.tick(self.payment_timeout.as_millis() as u64);
                self.saga_step(
                    saga,
                    &mut payment,
                    SagaStep::PaymentTimeout,
                    PaymentCommand::RecordTimeout,
                )
                .await?;
                let detail = format!(
                    "the payment gateway did not answer within {} s",
                    self.payment_timeout.as_secs_f64()
                );
                self.cancel(saga, order, &indexes, CancelReason::PaymentTimeout, detail)
                    .await?;
            }
        }
        // Low stock after a sale: the shop usually restocks.
        for &index in &indexes {
            if self.products[index].state.stock_qty < RESTOCK_BELOW
                && self.rng.random::<f64>() < 0.7
            {
                self.restock(index).await?;
            }
        }
        self.out.maybe_flush().await
    }

    /// Runs one step of the saga on `stream` (a payment or the order), with the saga's metadata
    /// and the step's derived event ids.
    async fn saga_step<A>(
        &mut self,
        saga: &SagaContext,
        stream: &mut Stream<A>,
        step: SagaStep,
        command: A::Command,
    ) -> Result<(), Failure>
    where
        A: Aggregate<Services = ()>,
    {
        exec(
            &mut self.out,
            &mut self.rng,
            &mut stream.state,
            &mut stream.version,
            &stream.id,
            command,
            &saga.metadata,
            saga.ids(step),
        )
        .await?
        .map_err(|error| unexpected(&format!("{} {}", A::TYPE, step.name()), error))?;
        self.wait(3.0);
        Ok(())
    }

    /// Cancels the order (the decision first), then releases every line's reservation.
    async fn cancel(
        &mut self,
        saga: &SagaContext,
        order: &mut Stream<Order>,
        indexes: &[usize],
        reason: CancelReason,
        detail: String,
    ) -> Result<(), Failure> {
        self.saga_step(
            saga,
            order,
            SagaStep::Cancel,
            OrderCommand::CancelOrder { reason, detail },
        )
        .await?;
        for (line_index, &index) in indexes.iter().enumerate() {
            let command = ProductCommand::ReleaseStock {
                order_id: saga.order_id,
            };
            let step = SagaStep::Release(line_index);
            self.product_command(index, command, &saga.metadata, saga.ids(step))
                .await?
                .map_err(|error| unexpected("stock release", error))?;
            self.wait(3.0);
        }
        *self
            .out
            .stats
            .orders_cancelled
            .entry(reason.as_str())
            .or_default() += 1;
        Ok(())
    }

    async fn restock(&mut self, index: usize) -> Result<(), Failure> {
        self.wait(60_000.0);
        let delta = self.rng.random_range(50..=300);
        let metadata = admin_metadata(&mut self.rng);
        self.product_command(
            index,
            ProductCommand::AdjustStock { delta },
            &metadata,
            Ids::Random,
        )
        .await?
        .map_err(|error| unexpected("restock", error))?;
        Ok(())
    }

    /// An administrator changes a price, a description or counts the stock again.
    async fn admin_session(&mut self) -> Result<(), Failure> {
        let index = self.rng.random_range(0..self.products.len());
        let metadata = admin_metadata(&mut self.rng);
        let roll: f64 = self.rng.random();
        let command = if roll < 0.6 {
            let price = self.products[index].state.price.minor();
            let percent = self.rng.random_range(80..=120_i64);
            let new_price = (price * percent / 100).max(99);
            ProductCommand::UpdateProduct {
                name: None,
                description: None,
                price: Some(Money::from_minor(new_price)),
                category: None,
            }
        } else if roll < 0.8 {
            let description = format!(
                "{} Now with {} more to love.",
                self.products[index].state.description,
                ["a new finish", "a longer warranty", "recycled packaging"]
                    [self.rng.random_range(0..3)]
            );
            ProductCommand::UpdateProduct {
                name: None,
                description: Some(description),
                price: None,
                category: None,
            }
        } else {
            // A stock count finds a few units more or fewer.
            let stock = i64::from(self.products[index].state.stock_qty);
            let delta = self.rng.random_range(-(stock.min(3))..=5);
            ProductCommand::AdjustStock { delta }
        };
        self.product_command(index, command, &metadata, Ids::Random)
            .await?
            .map_err(|error| unexpected("catalogue change", error))?;
        self.out.maybe_flush().await
    }

    async fn run(&mut self, target_events: u64) -> Result<(), Failure> {
        while self.out.stats.events < target_events {
            self.wait(4_000.0);
            self.out.stats.sessions += 1;
            let roll: f64 = self.rng.random();
            if roll < ADMIN_SHARE {
                self.admin_session().await?;
            } else if roll < ADMIN_SHARE + DIRECT_ORDER_SHARE {
                self.direct_order().await?;
            } else {
                self.cart_session().await?;
            }
        }
        self.flush_views();
        self.out.flush().await
    }
}

/// Cumulative Zipf weights of `n` ranks.
fn zipf_cumulative(n: usize) -> Vec<f64> {
    let mut total = 0.0;
    (1..=n)
        .map(|rank| {
            total += 1.0 / (rank as f64).powf(ZIPF_EXPONENT);
            total
        })
        .collect()
}

fn store_failure(what: &str, target: &str) -> impl Fn(StoreError) -> Failure {
    let what = format!("{what} {target}");
    move |source| GenerateError::Store {
        what: what.clone(),
        source,
    }
}

/// Writes a generated history into `store` (at `target`, passwords masked, for messages) as
/// `options` say.
pub async fn generate(
    store: Arc<dyn EventStore>,
    target: &str,
    options: &GenerateOptions,
    observer: Arc<dyn Observer>,
) -> Result<Generated, GenerateError> {
    let n_products = options.check()?;
    let head = store
        .head_position()
        .await
        .map_err(store_failure("cannot read the event store at", target))?;
    let mut start = Utc
        .timestamp_opt(START_SECONDS, 0)
        .single()
        .unwrap_or_else(Utc::now);
    let mut seed = options.seed;
    if head > 0 {
        if !options.append {
            return Err(GenerateError::Usage(format!(
                "the store at {target} already holds events (head position {head}): generate writes into an empty store; pass --append to add a history to it, or point DATABASE_URL or --data-dir at an empty store"
            )));
        }
        // New ids (another seed stream) and a clock that continues after the last event.
        seed ^= head.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if let Some(last) = store
            .read_all(head.saturating_sub(1), 1)
            .await
            .map_err(store_failure("cannot read the event store at", target))?
            .first()
        {
            start = start.max(last.occurred_at + chrono::Duration::minutes(1));
        }
    }
    observer.started(options, n_products);
    let started = Instant::now();
    let (sender, receiver) = mpsc::channel::<Vec<AppendRequest>>(4);
    let writer = tokio::spawn(write_batches(store.clone(), receiver, started, observer));
    let mut rng = StdRng::seed_from_u64(seed);
    let view_stream = random_uuid(&mut rng).to_string();
    let mut by_rank: Vec<usize> = (0..n_products as usize).collect();
    for i in (1..by_rank.len()).rev() {
        let j = rng.random_range(0..=i);
        by_rank.swap(i, j);
    }
    let mut generator = Generator {
        rng,
        out: Out {
            batch: Vec::new(),
            batch_events: 0,
            batch_size: options.batch,
            sender,
            stats: Stats::default(),
            clock: start,
        },
        products: Vec::with_capacity(n_products as usize),
        index_of: HashMap::new(),
        zipf: zipf_cumulative(n_products as usize),
        by_rank,
        customers: (options.events / 40).max(20),
        payment_timeout: options.payment_timeout,
        views: Vec::new(),
        view_stream,
        view_version: 0,
        n_categories: CATEGORIES
            .len()
            .min((n_products as usize).div_ceil(3))
            .max(1),
    };
    let generated = async {
        generator.create_catalogue(n_products).await?;
        generator.run(options.events).await
    }
    .await;
    let Generator { out, products, .. } = generator;
    let Out { stats, sender, .. } = out;
    drop(sender);
    let written = writer
        .await
        .map_err(|error| GenerateError::Model(format!("the store writer failed: {error}")))?;
    written.map_err(store_failure(
        "cannot append the generated events to",
        target,
    ))?;
    generated?;
    let write_seconds = started.elapsed().as_secs_f64();
    save_snapshots(store.as_ref(), &products)
        .await
        .map_err(store_failure("cannot save product snapshots in", target))?;
    Ok(Generated {
        stats,
        write_seconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Appends each batch in one transaction, in order, and reports progress to `on_written`.
async fn write_batches(
    store: Arc<dyn EventStore>,
    mut receiver: mpsc::Receiver<Vec<AppendRequest>>,
    started: Instant,
    on_written: OnWritten,
) -> Result<(), StoreError> {
    let mut written = 0_u64;
    let mut reported = 0_u64;
    while let Some(batch) = receiver.recv().await {
        let n_events: usize = batch.iter().map(|request| request.events.len()).sum();
        store.append_atomic(batch).await?;
        written += n_events as u64;
        if written >= reported + 100_000 {
            reported = written - written % 100_000;
            on_written.written(written, started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// Saves the snapshot the command path would have saved of every product stream that reached
/// a multiple of 100 events, so that a server loading a popular product reads few events.
async fn save_snapshots(store: &dyn EventStore, products: &[SimProduct]) -> Result<(), StoreError> {
    let snapshots: Vec<Snapshot> = products
        .iter()
        .filter(|product| product.version >= eventstore::aggregate::DEFAULT_SNAPSHOT_INTERVAL)
        .filter_map(|product| {
            let state = serde_json::to_string(&product.state).ok()?;
            Some(Snapshot {
                stream_type: Product::TYPE.to_owned(),
                stream_id: product.id_text.clone(),
                version: product.version,
                state: RawValue::from_string(state).ok()?,
            })
        })
        .collect();
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(snapshots)
        .map(|snapshot| store.save_snapshot(snapshot))
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_weights_favour_the_first_ranks() {
        let cumulative = zipf_cumulative(100);
        let total = cumulative[99];
        assert!(cumulative[0] / total > 0.15, "{}", cumulative[0] / total);
        assert!(cumulative[9] / total > 0.5);
        assert!(cumulative.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn the_saga_ids_match_the_checkout_saga() {
        let order_event_id = Uuid::from_u128(7);
        let saga = SagaContext::new(Uuid::from_u128(1), order_event_id, "c");
        let Ids::Caused(cause) = saga.ids(SagaStep::Confirm) else {
            panic!("saga ids are caused");
        };
        assert_eq!(cause, Uuid::new_v5(&order_event_id, b"confirm"));
        assert_eq!(
            saga.metadata.saga_id,
            Some(Uuid::new_v5(&order_event_id, b"checkout-saga").to_string())
        );
        assert_eq!(saga.metadata.causation_id, order_event_id.to_string());
    }
}
