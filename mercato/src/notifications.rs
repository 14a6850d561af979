//! `mercato notifications list|retry|resend`: the notification outbox.

use server::{Config, Error, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The recorded messages, newest first: key, status, template, channel, recipient, attempts
    /// and the last error
    List {
        /// Only messages in this status: pending, sent, parked, skipped or erased
        #[arg(long)]
        status: Option<String>,
        /// Only the messages about this order
        #[arg(long, value_name = "ORDER_ID")]
        order: Option<uuid::Uuid>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send parked messages again once their cause is fixed: one (by key), or all of them
    Retry {
        #[arg(value_name = "KEY")]
        key: Option<String>,
    },
    /// Send a message once more, as a new message (a customer lost it)
    Resend {
        #[arg(value_name = "KEY")]
        key: String,
    },
}

const STATUSES: &[&str] = &["pending", "sent", "parked", "skipped", "erased"];

pub async fn run(config: Config, command: &Command) -> Result<()> {
    server::require_store(&config).await?;
    let db = server::open_read_db(&config).await?;
    let failure = |error: notify::NotifyError| {
        Error::runtime(
            format!(
                "cannot read the notification outbox of {} (check DATABASE_URL)",
                config.database_url.redacted()
            ),
            error,
        )
    };
    notify::outbox::ensure_schema(&db).await.map_err(failure)?;
    match command {
        Command::List {
            status,
            order,
            limit,
        } => {
            if let Some(status) = status
                && !STATUSES.contains(&status.as_str())
            {
                return Err(Error::Usage(format!(
                    "--status {status:?} is not a status: give one of {}",
                    STATUSES.join(", ")
                )));
            }
            let filter = notify::outbox::Filter {
                status: status.clone(),
                order_id: order.map(|order| order.to_string()),
                recipient: None,
                limit: (*limit).clamp(1, 10_000),
            };
            let messages = notify::outbox::list(&db, &filter).await.map_err(failure)?;
            println!("key\tstatus\ttemplate\tchannel\trecipient\tattempts\tlast_error");
            // As the staff route shows them: the recipient shown as erased once the person is.
            let shown = notify::routes::views(&db, &messages)
                .await
                .map_err(failure)?;
            for view in shown {
                let text = |field: &str| match &view[field] {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    text("key"),
                    text("status"),
                    text("template"),
                    text("channel"),
                    text("recipient"),
                    text("attempts"),
                    text("last_error")
                );
            }
        }
        Command::Retry { key } => {
            let retried = notify::outbox::retry_parked(&db, key.as_deref())
                .await
                .map_err(failure)?;
            println!("{retried} parked message(s) will be sent again");
        }
        Command::Resend { key } => match notify::outbox::resend(&db, key).await.map_err(failure)? {
            Some(new_key) => println!("message {key} will be sent again as {new_key}"),
            None => {
                return Err(Error::Usage(format!(
                    "no message has the key {key:?}: `mercato notifications list` shows them"
                )));
            }
        },
    }
    Ok(())
}
