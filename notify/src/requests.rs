//! Messages other services ask for (the Kafka topic `notifications.commands`): a JSON request
//! names a message template, the account it goes to and the template's variables; it is
//! recorded in the outbox like a message an event called for, keyed by the request's own id, so
//! a request delivered twice is one message.
//!
//! ```json
//! {"request_id": "erp-4711", "template": "order_shipped", "user_id": "…",
//!  "order_id": "…", "channel": "email", "variables": {"carrier": "DHL", "tracking_number": "JD01", "items": 2}}
//! ```
//!
//! Verification and reset messages carry tokens only mercato issues for its own flows, and an
//! admin's alert is mercato's own: neither may be asked for. A variable the template needs and
//! the request lacks parks the message with the template's error, when it is sent.

use projections::readdb::ReadDb;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::NotifyError;
use crate::outbox::{self, Channel, NewMessage};
use crate::templates::MESSAGES;

/// The messages no request may ask for.
const NOT_REQUESTABLE: &[&str] = &["verify_email", "password_reset", "webhook_disabled"];
/// The most variables a request may give, and the longest text of one.
const VARIABLES_MAX: usize = 32;
const VALUE_MAX_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    request_id: String,
    template: String,
    user_id: Uuid,
    #[serde(default)]
    order_id: Option<Uuid>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    variables: Map<String, Value>,
}

/// The message a request asks for, or what is wrong with the request.
pub fn parse(payload: &[u8]) -> Result<NewMessage, String> {
    let request: Request = serde_json::from_slice(payload)
        .map_err(|error| format!("the request is not a notification request: {error}"))?;
    let id_ok = (1..=128).contains(&request.request_id.len())
        && request.request_id.chars().all(|c| c.is_ascii_graphic());
    if !id_ok {
        return Err("request_id must be 1 to 128 printable ASCII characters".to_owned());
    }
    let Some(template) = MESSAGES
        .iter()
        .find(|name| **name == request.template && !NOT_REQUESTABLE.contains(name))
    else {
        let allowed: Vec<&str> = MESSAGES
            .iter()
            .filter(|name| !NOT_REQUESTABLE.contains(name))
            .copied()
            .collect();
        return Err(format!(
            "template {:?} cannot be asked for; give one of {}",
            request.template,
            allowed.join(", ")
        ));
    };
    let channel = match request.channel.as_deref() {
        None | Some("email") => Channel::Email,
        Some("sms") => Channel::Sms,
        Some(other) => return Err(format!("channel {other:?} is neither email nor sms")),
    };
    if request.variables.len() > VARIABLES_MAX {
        return Err(format!("give at most {VARIABLES_MAX} variables"));
    }
    for (name, value) in &request.variables {
        let name_ok = (1..=40).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !name_ok {
            return Err(format!(
                "variable name {name:?} must be 1 to 40 of a-z and _"
            ));
        }
        let value_ok = match value {
            Value::String(text) => text.chars().count() <= VALUE_MAX_CHARS,
            Value::Number(_) | Value::Bool(_) => true,
            _ => false,
        };
        if !value_ok {
            return Err(format!(
                "variable {name} must be a number, true or false, or a text of at most {VALUE_MAX_CHARS} characters"
            ));
        }
    }
    let mut variables = request.variables;
    if let Some(order_id) = request.order_id {
        let order_id = order_id.to_string();
        variables.insert(
            "order_number".to_owned(),
            Value::from(crate::intake::order_number(&order_id)),
        );
        variables.insert("order_id".to_owned(), Value::from(order_id));
    }
    Ok(NewMessage {
        event_id: format!("request:{}", request.request_id),
        position: 0,
        template,
        channel,
        recipient: crate::intake::user_recipient(&request.user_id.to_string()),
        order_id: request.order_id.map(|order_id| order_id.to_string()),
        correlation_id: format!("request:{}", request.request_id),
        variables: Value::Object(variables),
        trace_context: None,
    })
}

/// Records the message `payload` asks for (in the outbox [`crate::prepare`] made):
/// `Ok(Err(reason))` for a request that is wrong, `Err` when it cannot be recorded now.
pub async fn record(db: &ReadDb, payload: &[u8]) -> Result<Result<bool, String>, NotifyError> {
    let message = match parse(payload) {
        Ok(message) => message,
        Err(reason) => return Ok(Err(reason)),
    };
    Ok(Ok(outbox::insert(db.pool(), &message).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_a_message_keyed_by_its_id() {
        let user = Uuid::from_u128(7);
        let order = Uuid::from_u128(0x0193_b8f0_0000_7000_8000_0000_0000_0001);
        let payload = serde_json::json!({ "request_id": "erp-4711", "template": "order_shipped",
            "user_id": user, "order_id": order, "channel": "sms",
            "variables": { "carrier": "DHL", "tracking_number": "JD01", "items": 2 } });
        let message = parse(payload.to_string().as_bytes()).expect("a valid request");
        assert_eq!(message.channel, Channel::Sms);
        assert_eq!(message.recipient, format!("user:{user}"));
        assert_eq!(message.variables["order_number"], "0193B8F0");
        let again = parse(payload.to_string().as_bytes()).expect("a valid request");
        assert_eq!(message.key(), again.key());
    }

    #[test]
    fn a_wrong_request_says_what_is_wrong() {
        let user = Uuid::from_u128(7);
        for (payload, expected) in [
            (
                serde_json::json!({ "template": "order_shipped" }),
                "not a notification request",
            ),
            (
                serde_json::json!({ "request_id": "r1", "template": "password_reset", "user_id": user }),
                "cannot be asked for",
            ),
            (
                serde_json::json!({ "request_id": "r1", "template": "order_shipped", "user_id": user, "channel": "fax" }),
                "neither email nor sms",
            ),
            (
                serde_json::json!({ "request_id": "r1", "template": "order_shipped", "user_id": user, "variables": { "Bad-Name": 1 } }),
                "variable name",
            ),
            (
                serde_json::json!({ "request_id": "r1", "template": "order_shipped", "user_id": user, "variables": { "lines": [] } }),
                "must be a number",
            ),
            (
                serde_json::json!({ "request_id": "", "template": "order_shipped", "user_id": user }),
                "request_id",
            ),
        ] {
            let error = parse(payload.to_string().as_bytes()).expect_err("refused");
            assert!(error.contains(expected), "{payload}: {error}");
        }
        assert!(parse(b"not json").is_err());
    }
}
