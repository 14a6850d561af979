//! A running platform: [`Server::build`] opens what the configuration names and starts the
//! parts its role runs ([`crate::roles`]); [`Server::run_until`] serves HTTP until the shutdown
//! future completes, then drains requests and stops the projections at a checkpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use http_common::Problem;
use http_common::context::request_context;
use http_common::problem::BODY_LIMIT;
use projections::queries::Queries;
use projections::{Progress, Projection, run_projection};
use query_api::views::ViewRecorder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::health::Components;
use crate::ops::{self, OpsState};
use crate::platform::{Access, Platform};
use crate::roles::Plan;

/// How many events a projection takes per batch.
const PROJECTION_BATCH: usize = 500;
/// How long shutdown waits for projections to reach a checkpoint.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How many events one audit checkpoint covers (`mercato audit head` seals with the same).
pub const SEAL_EVERY: u64 = 10_000;

/// A platform built and running its background parts, ready to serve HTTP.
#[derive(Debug)]
pub struct Server {
    platform: Platform,
    role: Role,
    router: Router,
    listener: TcpListener,
    connections: Arc<crate::limits::Connections>,
    address: SocketAddr,
    shutdown: CancellationToken,
    workers: Vec<JoinHandle<()>>,
    views_task: Option<JoinHandle<()>>,
}

/// Binds `address` for [`Server::build`].
pub async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|error| {
        Error::runtime(
            format!("cannot listen on {address} (is another process using it? set --listen)"),
            error,
        )
    })
}

impl Server {
    /// Opens the platform `config` names, starts what its role runs in the background, and
    /// prepares the HTTP application on `listener`.
    pub async fn build(config: &Config, listener: TcpListener) -> Result<Server> {
        let plan = Plan::of(config);
        // A process that only notifies may wait for CPU: it yields to the roles answering
        // customers on the same host. First, before this process makes its other threads.
        if plan.parts.background_only() && config.notifier_nice() > 0 {
            match crate::priority::lower_to(config.notifier_nice()) {
                Ok(_) => tracing::info!(
                    niceness = config.notifier_nice(),
                    "the notifier runs at a lower scheduling priority (MERCATO_NOTIFIER_NICE)"
                ),
                Err(error) => {
                    tracing::warn!(%error, "cannot lower the notifier's scheduling priority")
                }
            }
        }
        let bus = Bus::new(config, &plan)?;
        let access = if plan.parts.projector {
            Access::Writer
        } else {
            Access::Reader
        };
        let platform = Platform::open(config, access).await?;
        let projections = platform.read_models.live_projections();
        let progress = Progress::default();
        let components = Components::default();
        let shutdown = CancellationToken::new();
        // What was started stops again if a later part fails to start.
        let started = shutdown.clone().drop_guard();
        if plan.parts.notifier {
            // Before anything is served or consumed: the outbox exists (for the requests that
            // Kafka brings too), the first notifier starts at the log's head, and a request
            // answered after this is one it sees.
            notify::prepare(platform.store.as_ref(), &platform.read_models.db)
                .await
                .map_err(|error| Error::runtime("cannot prepare the notifier's tables", error))?;
        }
        let mut workers = bus.start(&platform, &projections, &progress, &components, &shutdown)?;
        if plan.parts.projector {
            match bus.projector(&projections, &components, &shutdown) {
                Some(consumer) => workers.push(consumer),
                None => workers.extend(projections.iter().map(|projection| {
                    spawn_projection(&platform, projection, &progress, &shutdown)
                })),
            }
        } else if plan.polls_checkpoints {
            workers.push(tokio::spawn(ops::poll_checkpoints(
                platform.store.clone(),
                platform.read_models.db.clone(),
                projections.clone(),
                progress.clone(),
                shutdown.clone(),
            )));
        }
        if plan.parts.saga {
            let gateway = payment_gateway(config, &platform).await?;
            let mut options = sagas::SagaOptions {
                payment_timeout: config.payment_timeout(),
                bank_transfer_timeout: config.bank_transfer_timeout(),
                ..sagas::SagaOptions::default()
            };
            // With Kafka, every saga process takes its share of the partitions; the lease
            // holder runs the steps.
            let wake = Arc::new(tokio::sync::Notify::new());
            let intake: Arc<dyn Projection> = Arc::new(sagas::state::SagaIntake::new(
                platform.read_models.db.clone(),
                wake.clone(),
            ));
            if let Some(consumer) = bus.saga_intake(intake, &components, &shutdown) {
                options.external_intake = Some(wake);
                workers.push(consumer);
            }
            let (store, db, progress, shutdown) = (
                platform.store.clone(),
                platform.read_models.db.clone(),
                progress.clone(),
                shutdown.clone(),
            );
            let vault = platform.identity.vault.clone();
            workers.push(tokio::spawn(async move {
                if let Err(error) =
                    sagas::run_saga(store, db, gateway, vault, options, progress, shutdown).await
                {
                    tracing::error!(%error, "the checkout saga stopped");
                }
            }));
        }
        // Notifications and webhooks: the notifier runs them; the command API serves their routes.
        let notify = if plan.parts.notifier || plan.parts.command_api {
            Some(crate::platform::open_notify(config, &platform).await?)
        } else {
            None
        };
        if plan.parts.notifier
            && let Some(notify) = &notify
        {
            let options = notify::NotifierOptions {
                shop_name: config.shop_name.clone(),
                ..notify::NotifierOptions::default()
            };
            let (store, recipients, progress, stop) = (
                platform.store.clone(),
                notify.recipients.clone(),
                progress.clone(),
                shutdown.clone(),
            );
            workers.push(tokio::spawn(async move {
                if let Err(error) =
                    notify::run_notifier(store, recipients, options, progress, stop).await
                {
                    tracing::error!(%error, "the notifier stopped");
                }
            }));
            let deliverer = notify::webhooks::Deliverer {
                store: platform.store.clone(),
                endpoints: notify.endpoints.clone(),
                db: platform.read_models.db.clone(),
                guard: notify.guard.clone(),
                options: notify::webhooks::WebhookOptions {
                    timeout: config.webhook_timeout(),
                    disable_after: config.webhook_disable_after(),
                    ..notify::webhooks::WebhookOptions::default()
                },
            };
            let stop = shutdown.clone();
            workers.push(tokio::spawn(async move {
                if let Err(error) = notify::webhooks::run_webhooks(deliverer, stop).await {
                    tracing::error!(%error, "the webhook worker stopped");
                }
            }));
        }
        if plan.parts.command_api {
            workers.push(tokio::spawn(eventstore::audit::run_sealer(
                platform.store.clone(),
                SEAL_EVERY,
                Duration::from_secs(5),
                shutdown.clone().cancelled_owned(),
            )));
        }
        workers.push(tokio::spawn(ops::record_lag(
            platform.store.clone(),
            progress.clone(),
            shutdown.clone(),
        )));
        if plan.parts.query_api
            && let Some(cache) = &platform.read_models.cache
        {
            workers.push(tokio::spawn(ops::drop_cache_on_swaps(
                platform.read_models.db.clone(),
                platform.read_models.search_index(),
                cache.clone(),
                shutdown.clone(),
            )));
        }
        let (views, views_task) = if plan.parts.query_api {
            let (recorder, task) = ViewRecorder::start(platform.store.clone());
            (Some(recorder), Some(task))
        } else {
            (None, None)
        };
        crate::policy::check_coverage(&ops::documented_routes())
            .map_err(|faults| Error::Failed(format!("the server cannot start: {faults}")))?;
        if plan.parts.command_api && !platform.identity.admin_exists().await.unwrap_or(true) {
            tracing::warn!(
                "there is no admin account yet: create one with `mercato users add --email you@example.com --role admin` (the password is read from standard input)"
            );
        }
        if let Some(oidc) = &platform.identity.oidc
            && let Err(error) = oidc.check().await
        {
            tracing::warn!(%error, "the OIDC issuer cannot be read now; its tokens are refused until it can");
        }
        let guard = Arc::new(crate::policy::Guard {
            limits: Arc::new(crate::limits::Limits::new(config)),
            idempotency: platform.identity.idempotency.clone(),
        });
        if plan.parts.command_api {
            workers.push(tokio::spawn(forget_expired_keys(
                platform.identity.idempotency.clone(),
                shutdown.clone(),
            )));
        }
        workers.push(guard.limits.spawn_forgetting(shutdown.clone()));
        // The console of a process without the API's routes calls the API over HTTP.
        let remote_api = if plan.parts.console && !plan.parts.command_api {
            let url = config.api_url.as_deref().ok_or_else(|| {
                Error::Usage(
                    "role console calls the API at MERCATO_API_URL: set it to the address of the command and query routes, such as http://api:8080"
                        .to_owned(),
                )
            })?;
            Some(
                console::Api::remote(url)
                    .map_err(|error| Error::Usage(format!("MERCATO_API_URL: {error}")))?,
            )
        } else {
            None
        };
        let router = app(
            &platform,
            &plan,
            progress,
            components,
            RouteParts {
                views,
                notify: notify.as_ref(),
                remote_api,
            },
            guard,
            config,
        )
        // Outermost but for the panic catcher: who the client is, for everything after.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config.trusted_proxies.clone()),
            crate::limits::client_address,
        ));
        let connections = crate::limits::Connections::new(config);
        let address = listener
            .local_addr()
            .map_err(|error| Error::runtime("cannot read the listening address", error))?;
        started.disarm();
        Ok(Server {
            platform,
            role: config.role,
            router,
            listener,
            connections,
            address,
            shutdown,
            workers,
            views_task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// What the server runs.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Serves HTTP until `shutdown` completes; then drains the requests in flight, stops every
    /// background part at a checkpoint (waiting at most ten seconds) and appends the views it
    /// holds.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Server {
            platform,
            role,
            router,
            listener,
            connections,
            address,
            shutdown: stop,
            workers,
            views_task,
        } = self;
        tracing::info!(
            %address,
            ?role,
            store = %platform.store.backend(),
            cache = platform.read_models.cache.as_ref().map_or("none", |cache| cache.kind()),
            "mercato listening"
        );
        let served = crate::listen::serve(listener, router, connections, shutdown)
            .await
            .map_err(|error| Error::runtime("the HTTP server failed", error));
        tracing::info!("shutting down: stopping the projections at a checkpoint");
        stop.cancel();
        let stopped = tokio::time::timeout(STOP_WAIT, async {
            for worker in workers {
                let _ = worker.await;
            }
        })
        .await;
        if stopped.is_err() {
            tracing::warn!("projections did not stop within {STOP_WAIT:?}");
        }
        drop(platform);
        if let Some(task) = views_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        served
    }
}

/// A customer's orders waiting for payment, as the orders read model has them.
#[derive(Debug)]
struct OpenOrdersModel(Queries);

#[async_trait::async_trait]
impl command_api::caps::OpenOrders for OpenOrdersModel {
    async fn open_orders(
        &self,
        customer_id: &str,
    ) -> std::result::Result<command_api::caps::Open, String> {
        let (orders, units) = self
            .0
            .open_orders(customer_id)
            .await
            .map_err(|error| error.to_string())?;
        Ok(command_api::caps::Open { orders, units })
    }
}

/// The payment gateway of `config`: Stripe with `STRIPE_API_KEY`, else the built-in test
/// gateway on its ledger in the read-model database.
async fn payment_gateway(
    config: &Config,
    platform: &Platform,
) -> Result<Arc<dyn sagas::PaymentGateway>> {
    if let Some(api_key) = &config.stripe_api_key {
        let stripe = sagas::StripeGateway::new(sagas::StripeConfig {
            api_key: api_key.expose().to_owned(),
            api_base: config.stripe_api_base.clone(),
            currency: config.stripe_currency.clone(),
            request_timeout: sagas::stripe::DEFAULT_REQUEST_TIMEOUT,
        })
        .map_err(|error| Error::Usage(error.to_string()))?;
        tracing::info!(api_base = %config.stripe_api_base, "card payments go to Stripe");
        return Ok(Arc::new(stripe));
    }
    let gateway = sagas::TestGateway::open(
        platform.read_models.db.clone(),
        sagas::TestGatewayOptions {
            latency: config.test_gateway_latency.duration(),
            late_after: config.test_gateway_late_after.duration(),
        },
    )
    .await
    .map_err(|error| Error::runtime("cannot open the test payment gateway's ledger", error))?;
    Ok(Arc::new(gateway))
}

/// Stripe's webhooks, verified and recorded by the Stripe adapter (`sagas::stripe`).
#[derive(Debug)]
struct StripeWebhookPort(sagas::StripeWebhook);

#[async_trait::async_trait]
impl command_api::webhooks::PaymentWebhook for StripeWebhookPort {
    async fn receive(
        &self,
        signature: Option<&str>,
        payload: &[u8],
    ) -> std::result::Result<
        command_api::webhooks::WebhookAnswer,
        command_api::webhooks::WebhookRefusal,
    > {
        use command_api::webhooks::{WebhookAnswer, WebhookRefusal};
        use sagas::stripe::{WebhookError, WebhookReceipt};
        match self.0.receive(signature, payload).await {
            Ok(WebhookReceipt::Recorded {
                order_id,
                event_type,
                new,
            }) => Ok(WebhookAnswer {
                recorded: true,
                detail: if new {
                    format!("{event_type} recorded on the payment of order {order_id}")
                } else {
                    format!("{event_type} was already recorded on the payment of order {order_id}")
                },
            }),
            Ok(WebhookReceipt::Ignored { event_type, why }) => Ok(WebhookAnswer {
                recorded: false,
                detail: format!("{event_type} ignored: {why}"),
            }),
            Err(error @ (WebhookError::Signature(_) | WebhookError::Malformed(_))) => {
                Err(WebhookRefusal::BadRequest(error.to_string()))
            }
            Err(WebhookError::Unavailable(error)) => Err(WebhookRefusal::Unavailable(error)),
        }
    }
}

/// Deletes the idempotency records past their 24 hours, every hour, until `shutdown`.
async fn forget_expired_keys(records: identity::IdempotencyRecords, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match records.forget_expired().await {
            Ok(0) => {}
            Ok(forgotten) => {
                tracing::debug!(forgotten, "idempotency records past their time deleted")
            }
            Err(error) => {
                tracing::warn!(%error, "cannot delete the idempotency records past their time")
            }
        }
    }
}

/// A projection following the store's log (parked in the read-model database on an event it
/// cannot apply).
fn spawn_projection(
    platform: &Platform,
    projection: &Arc<dyn Projection>,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run_projection(
        platform.store.clone(),
        projection.clone(),
        platform.read_models.db.clone(),
        progress.clone(),
        shutdown.clone(),
        PROJECTION_BATCH,
    ))
}

/// What the role's routes use of the parts it started.
struct RouteParts<'a> {
    /// The recorder of product views (the query API).
    views: Option<ViewRecorder>,
    /// Notifications and webhooks (the command API serves their routes).
    notify: Option<&'a crate::platform::NotifyParts>,
    /// The API the console calls over HTTP, when this process does not serve it.
    remote_api: Option<console::Api>,
}

/// The HTTP application of a plan: the operational routes, and the API routes of its role.
fn app(
    platform: &Platform,
    plan: &Plan,
    progress: Progress,
    components: Components,
    parts: RouteParts<'_>,
    guard: Arc<crate::policy::Guard>,
    config: &Config,
) -> Router {
    let RouteParts {
        views,
        notify,
        remote_api,
    } = parts;
    let read_models = &platform.read_models;
    let mut router = ops::router(OpsState {
        store: platform.store.clone(),
        db: read_models.db.clone(),
        cache: read_models.cache.clone(),
        progress: progress.clone(),
        components,
        metrics: ops::prometheus(),
        signing: platform.identity.signing.clone(),
    });
    if plan.parts.command_api {
        router = router.merge(command_api::router(command_api::CommandState {
            store: platform.store.clone(),
            identity: Arc::new(platform.identity.clone()),
            caps: config.order_caps(),
            open_orders: Arc::new(OpenOrdersModel(Queries::new(
                read_models.db.clone(),
                read_models.redis.clone(),
            ))),
            payment_webhook: config.stripe_webhook_secret.as_ref().map(|secret| {
                Arc::new(StripeWebhookPort(sagas::StripeWebhook::new(
                    platform.store.clone(),
                    sagas::stripe::WebhookSecret::new(secret.expose()),
                ))) as Arc<dyn command_api::webhooks::PaymentWebhook>
            }),
        }));
    }
    if plan.parts.command_api {
        router = router.merge(crate::admin::router(crate::admin::AdminState {
            store: platform.store.clone(),
            read_models: read_models.clone(),
            config: Arc::new(config.clone()),
        }));
    }
    if plan.parts.command_api
        && let Some(notify) = notify
    {
        router = router.merge(notify::routes::router(notify::routes::NotifyState {
            store: platform.store.clone(),
            db: read_models.db.clone(),
            endpoints: notify.endpoints.clone(),
            guard: notify.guard.clone(),
        }));
    }
    if plan.parts.query_api {
        router = router.merge(query_api::router(query_api::QueryState {
            store: platform.store.clone(),
            head: query_api::LogHead::new(platform.store.clone()),
            queries: Queries::new(read_models.db.clone(), read_models.redis.clone()),
            search: read_models.search_index(),
            cache: read_models.cache.clone(),
            progress,
            views,
            identity: Arc::new(platform.identity.clone()),
        }));
    }
    let api = router
        // After routing: the permission table's rule of the matched route.
        .route_layer(axum::middleware::from_fn_with_state(
            guard,
            crate::policy::guard,
        ))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::map_response(
            http_common::problem::as_problem,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(platform.identity.authenticator.clone()),
            http_common::access::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(crate::policy::deadlines()),
            request_context,
        ))
        .layer(axum::middleware::from_fn(ops::record_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed to handle the request; it was logged, try again later",
                )
                .into_response()
            },
        ));
    if !plan.parts.console {
        return api;
    }
    // The console's pages call the API above in memory (role `all`), or the API at MERCATO_API_URL
    // over HTTP (role `console`), as any client would.
    let payment_choices = if config.stripe_api_key.is_none() {
        vec![
            (
                "Card, approved (test)".to_owned(),
                sagas::gateway::TOKEN_APPROVED.to_owned(),
            ),
            (
                "Card, declined (test)".to_owned(),
                sagas::gateway::TOKEN_DECLINED.to_owned(),
            ),
            ("Bank transfer".to_owned(), "bank_transfer".to_owned()),
        ]
    } else {
        // Card details go to Stripe from its own page, which the console does not embed.
        vec![("Bank transfer".to_owned(), "bank_transfer".to_owned())]
    };
    let pages = console::router(console::ConsoleState::new(
        remote_api.unwrap_or_else(|| console::Api::in_process(api.clone())),
        config.shop_name.clone(),
        payment_choices,
        crate::policy::access_of,
    ))
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(http_common::context::Deadlines::default()),
        request_context,
    ))
    .layer(axum::middleware::from_fn(ops::record_request));
    pages.merge(api)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
