//! The OTLP export: over gRPC or HTTP (protobuf), in batches on a thread of the SDK's own, so
//! that no request ever waits for it; what is still buffered is flushed at shutdown.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::registry::LookupSpan;

/// How spans reach the collector (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `grpc`: OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// `http/protobuf`: OTLP over HTTP, protobuf bodies posted to `{endpoint}/v1/traces` (port
    /// 4318 by convention): the default, as the OpenTelemetry specification says.
    HttpProtobuf,
}

impl Protocol {
    /// The protocol a value of `OTEL_EXPORTER_OTLP_PROTOCOL` names.
    pub fn parse(text: &str) -> Result<Protocol, ExportError> {
        match text.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "" | "http/protobuf" => Ok(Protocol::HttpProtobuf),
            other => Err(ExportError::Protocol(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// What the export needs besides the standard variables the SDK reads itself
/// (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its argument).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base address.
    pub endpoint: String,
    pub protocol: Protocol,
    /// The process's role, a resource attribute of its own (`mercato.role`).
    pub role: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL is {0:?}; use grpc or http/protobuf (http/json is not supported)"
    )]
    Protocol(String),
    #[error(
        "OTEL_TRACES_SAMPLER is {0:?}; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Sampler(String),
    #[error(
        "OTEL_TRACES_SAMPLER_ARG is {0:?}; the sampling ratio is a number between 0 and 1 (0.1 samples a tenth of the traces)"
    )]
    SamplerArgument(String),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?} is not a usable address: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// The running export. Dropping it without [`Export::shutdown`] loses what is buffered.
#[derive(Debug)]
pub struct Export {
    provider: SdkTracerProvider,
}

/// How long the flush at shutdown may take.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

impl Export {
    /// Starts exporting as `settings` say; must run inside the tokio runtime the process keeps
    /// until [`Export::shutdown`] (the exporters' connections live on it).
    pub fn start(settings: &Settings) -> Result<Export, ExportError> {
        let endpoint = settings.endpoint.trim_end_matches('/').to_owned();
        let invalid = |reason: String| ExportError::Endpoint {
            endpoint: settings.endpoint.clone(),
            reason,
        };
        let parsed: http::Uri = endpoint
            .parse()
            .map_err(|error: http::uri::InvalidUri| invalid(error.to_string()))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(invalid(
                "it needs http:// or https:// and a host".to_owned(),
            ));
        }
        let sampler = crate::sampler_from(
            std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
            std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
        )?;
        let exporter = match settings.protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(TokioClient::new())
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        }
        .map_err(|error| invalid(error.to_string()))?;
        let mut resource = Resource::builder();
        let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
                .is_ok_and(|attributes| attributes.contains("service.name="));
        if !named {
            resource = resource.with_service_name("mercato");
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "mercato.role",
                settings.role.clone(),
            ))
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        // The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on, by default); the
        // same one decides before a request's span is made (crate::begin), and the ids let a
        // root start with the trace id it was decided on.
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .with_sampler(sampler.clone())
            .with_id_generator(crate::sampling::HeadIds::default())
            .build();
        crate::sampling::install(Some(sampler));
        super::ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Export { provider })
    }

    /// The layer that turns this process's spans into exported ones: mercato's own spans from
    /// `info`, none of its libraries' (the exporter's own HTTP and gRPC calls among them), and
    /// none of an unsampled trace's work ([`crate::Work`]).
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        use tracing_subscriber::filter::{LevelFilter, Targets};
        let libraries = [
            "h2",
            "hyper",
            "hyper_util",
            "tonic",
            "tower",
            "reqwest",
            "sqlx",
            "opentelemetry",
            "opentelemetry_sdk",
            "opentelemetry_otlp",
            "tantivy",
            "rdkafka",
            "lettre",
            "redis",
        ];
        let targets = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_targets(libraries.map(|library| (library, LevelFilter::OFF)));
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("mercato"))
            .with_level(true)
            .with_threads(false)
            .with_location(false)
            // A span's start and end time say how long it took; busy and idle time would cost
            // two clock reads at every poll.
            .with_tracked_inactivity(false)
            // The cheap check first: in unsampled work, nothing else is asked.
            .with_filter(crate::scope::sampled_only().and(targets))
    }

    /// Exports what is buffered and stops (waits at most a few seconds).
    pub async fn shutdown(self) {
        super::ENABLED.store(false, std::sync::atomic::Ordering::Relaxed);
        crate::sampling::install(None);
        let provider = self.provider;
        let flushed = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown_with_timeout(SHUTDOWN_WAIT)
        })
        .await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "the last spans were not all exported");
        }
    }
}

/// The HTTP exporter's client: reqwest on the process's runtime, called from the SDK's export
/// thread (which is not a runtime thread).
#[derive(Debug)]
struct TokioClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl TokioClient {
    fn new() -> TokioClient {
        TokioClient {
            client: reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .unwrap_or_default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        let answered = self
            .runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let mut answer = http::Response::builder().status(response.status());
                if let Some(headers) = answer.headers_mut() {
                    *headers = response.headers().clone();
                }
                let body = response.bytes().await?;
                Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
            })
            .await??;
        Ok(answered)
    }
}
