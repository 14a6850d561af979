//! `mercato dlq list|replay`: the messages Kafka consumers could not process, and sending them
//! back once their cause is fixed.

use server::{Config, Result};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print every dead letter: where it came from, why and how often it failed
    List {
        /// One topic's dead letters (`orders.events` or `orders.events.dlq`) [default: all]
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Send the dead letters not replayed yet back to their topics, once their cause is fixed:
    /// the consumers that failed them apply them again
    Replay {
        /// One topic's dead letters [default: all]
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
}

pub async fn run(config: Config, command: &Command) -> Result<()> {
    match command {
        Command::List { topic, json } => {
            let dead_letters = server::bus::dead_letters(&config, topic.as_deref()).await?;
            if !json {
                println!("DLQ\tOFFSET\tFROM\tEVENT\tSTREAM\tGROUP\tATTEMPTS\tFAILED_AT\tREASON");
            }
            for described in &dead_letters {
                if *json {
                    println!("{described}");
                } else {
                    println!("{}", table_line(described));
                }
            }
            eprintln!("{} dead letter(s)", dead_letters.len());
        }
        Command::Replay { topic } => {
            let replayed = server::bus::replay_dead_letters(&config, topic.as_deref()).await?;
            println!("{replayed} dead letter(s) replayed");
        }
    }
    Ok(())
}

/// One dead letter as a line of the table.
fn table_line(described: &serde_json::Value) -> String {
    let plain = |name: &str| match &described[name] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    format!(
        "{}/{}\t{}\t{}/{}/{}\t{}\t{}\t{}\t{}\t{}\t{}",
        plain("dlq_topic"),
        plain("dlq_partition"),
        plain("dlq_offset"),
        plain("topic"),
        plain("partition"),
        plain("offset"),
        plain("event_type"),
        plain("stream"),
        plain("group"),
        plain("attempts"),
        plain("failed_at"),
        plain("reason"),
    )
}
