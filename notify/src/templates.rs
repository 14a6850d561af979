//! The messages' words: MiniJinja templates in files, one set per language.
//!
//! A message `NAME` in language `LANG` is up to four files under `templates/LANG/`:
//! `NAME.subject.txt` (one line), `NAME.txt` (the plain-text body), `NAME.html` (the HTML body,
//! escaped as HTML, usually extending `LANG/_layout.html`) and, for what is also sent as a text
//! message, `NAME.sms.txt`. The built-in files are compiled in; a directory given in
//! configuration (`MERCATO_TEMPLATES_DIR`) holds files of the same names that replace them, or
//! add a language. A language without a file of its own falls back to English.
//!
//! Undefined variables are errors (`UndefinedBehavior::Strict`): the template tests render
//! every message of every language with its sample variables ([`sample`]), so a template that
//! names a variable its message does not have fails there, and [`Templates::check`] runs the same
//! at start for an override directory, before anything is sent.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde_json::json;

/// The language every message exists in, and the one used when the person has none.
pub const DEFAULT_LANGUAGE: &str = "en";

/// The languages with built-in templates.
pub const LANGUAGES: &[&str] = &["de", "en"];

/// Every message there is, by template name.
pub const MESSAGES: &[&str] = &[
    "verify_email",
    "password_reset",
    "order_received",
    "order_confirmed",
    "order_cancelled",
    "order_shipped",
    "order_delivered",
    "refund_issued",
    "payment_receipt",
    "webhook_disabled",
];

/// The built-in template files, by their name under `templates/`.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "de/_layout.html",
        include_str!("../templates/de/_layout.html"),
    ),
    (
        "de/order_cancelled.html",
        include_str!("../templates/de/order_cancelled.html"),
    ),
    (
        "de/order_cancelled.subject.txt",
        include_str!("../templates/de/order_cancelled.subject.txt"),
    ),
    (
        "de/order_cancelled.txt",
        include_str!("../templates/de/order_cancelled.txt"),
    ),
    (
        "de/order_confirmed.html",
        include_str!("../templates/de/order_confirmed.html"),
    ),
    (
        "de/order_confirmed.subject.txt",
        include_str!("../templates/de/order_confirmed.subject.txt"),
    ),
    (
        "de/order_confirmed.txt",
        include_str!("../templates/de/order_confirmed.txt"),
    ),
    (
        "de/order_delivered.html",
        include_str!("../templates/de/order_delivered.html"),
    ),
    (
        "de/order_delivered.sms.txt",
        include_str!("../templates/de/order_delivered.sms.txt"),
    ),
    (
        "de/order_delivered.subject.txt",
        include_str!("../templates/de/order_delivered.subject.txt"),
    ),
    (
        "de/order_delivered.txt",
        include_str!("../templates/de/order_delivered.txt"),
    ),
    (
        "de/order_received.html",
        include_str!("../templates/de/order_received.html"),
    ),
    (
        "de/order_received.subject.txt",
        include_str!("../templates/de/order_received.subject.txt"),
    ),
    (
        "de/order_received.txt",
        include_str!("../templates/de/order_received.txt"),
    ),
    (
        "de/order_shipped.html",
        include_str!("../templates/de/order_shipped.html"),
    ),
    (
        "de/order_shipped.sms.txt",
        include_str!("../templates/de/order_shipped.sms.txt"),
    ),
    (
        "de/order_shipped.subject.txt",
        include_str!("../templates/de/order_shipped.subject.txt"),
    ),
    (
        "de/order_shipped.txt",
        include_str!("../templates/de/order_shipped.txt"),
    ),
    (
        "de/password_reset.html",
        include_str!("../templates/de/password_reset.html"),
    ),
    (
        "de/password_reset.subject.txt",
        include_str!("../templates/de/password_reset.subject.txt"),
    ),
    (
        "de/password_reset.txt",
        include_str!("../templates/de/password_reset.txt"),
    ),
    (
        "de/payment_receipt.html",
        include_str!("../templates/de/payment_receipt.html"),
    ),
    (
        "de/payment_receipt.subject.txt",
        include_str!("../templates/de/payment_receipt.subject.txt"),
    ),
    (
        "de/payment_receipt.txt",
        include_str!("../templates/de/payment_receipt.txt"),
    ),
    (
        "de/refund_issued.html",
        include_str!("../templates/de/refund_issued.html"),
    ),
    (
        "de/refund_issued.subject.txt",
        include_str!("../templates/de/refund_issued.subject.txt"),
    ),
    (
        "de/refund_issued.txt",
        include_str!("../templates/de/refund_issued.txt"),
    ),
    (
        "de/verify_email.html",
        include_str!("../templates/de/verify_email.html"),
    ),
    (
        "de/verify_email.subject.txt",
        include_str!("../templates/de/verify_email.subject.txt"),
    ),
    (
        "de/verify_email.txt",
        include_str!("../templates/de/verify_email.txt"),
    ),
    (
        "de/webhook_disabled.html",
        include_str!("../templates/de/webhook_disabled.html"),
    ),
    (
        "de/webhook_disabled.subject.txt",
        include_str!("../templates/de/webhook_disabled.subject.txt"),
    ),
    (
        "de/webhook_disabled.txt",
        include_str!("../templates/de/webhook_disabled.txt"),
    ),
    (
        "en/_layout.html",
        include_str!("../templates/en/_layout.html"),
    ),
    (
        "en/order_cancelled.html",
        include_str!("../templates/en/order_cancelled.html"),
    ),
    (
        "en/order_cancelled.subject.txt",
        include_str!("../templates/en/order_cancelled.subject.txt"),
    ),
    (
        "en/order_cancelled.txt",
        include_str!("../templates/en/order_cancelled.txt"),
    ),
    (
        "en/order_confirmed.html",
        include_str!("../templates/en/order_confirmed.html"),
    ),
    (
        "en/order_confirmed.subject.txt",
        include_str!("../templates/en/order_confirmed.subject.txt"),
    ),
    (
        "en/order_confirmed.txt",
        include_str!("../templates/en/order_confirmed.txt"),
    ),
    (
        "en/order_delivered.html",
        include_str!("../templates/en/order_delivered.html"),
    ),
    (
        "en/order_delivered.sms.txt",
        include_str!("../templates/en/order_delivered.sms.txt"),
    ),
    (
        "en/order_delivered.subject.txt",
        include_str!("../templates/en/order_delivered.subject.txt"),
    ),
    (
        "en/order_delivered.txt",
        include_str!("../templates/en/order_delivered.txt"),
    ),
    (
        "en/order_received.html",
        include_str!("../templates/en/order_received.html"),
    ),
    (
        "en/order_received.subject.txt",
        include_str!("../templates/en/order_received.subject.txt"),
    ),
    (
        "en/order_received.txt",
        include_str!("../templates/en/order_received.txt"),
    ),
    (
        "en/order_shipped.html",
        include_str!("../templates/en/order_shipped.html"),
    ),
    (
        "en/order_shipped.sms.txt",
        include_str!("../templates/en/order_shipped.sms.txt"),
    ),
    (
        "en/order_shipped.subject.txt",
        include_str!("../templates/en/order_shipped.subject.txt"),
    ),
    (
        "en/order_shipped.txt",
        include_str!("../templates/en/order_shipped.txt"),
    ),
    (
        "en/password_reset.html",
        include_str!("../templates/en/password_reset.html"),
    ),
    (
        "en/password_reset.subject.txt",
        include_str!("../templates/en/password_reset.subject.txt"),
    ),
    (
        "en/password_reset.txt",
        include_str!("../templates/en/password_reset.txt"),
    ),
    (
        "en/payment_receipt.html",
        include_str!("../templates/en/payment_receipt.html"),
    ),
    (
        "en/payment_receipt.subject.txt",
        include_str!("../templates/en/payment_receipt.subject.txt"),
    ),
    (
        "en/payment_receipt.txt",
        include_str!("../templates/en/payment_receipt.txt"),
    ),
    (
        "en/refund_issued.html",
        include_str!("../templates/en/refund_issued.html"),
    ),
    (
        "en/refund_issued.subject.txt",
        include_str!("../templates/en/refund_issued.subject.txt"),
    ),
    (
        "en/refund_issued.txt",
        include_str!("../templates/en/refund_issued.txt"),
    ),
    (
        "en/verify_email.html",
        include_str!("../templates/en/verify_email.html"),
    ),
    (
        "en/verify_email.subject.txt",
        include_str!("../templates/en/verify_email.subject.txt"),
    ),
    (
        "en/verify_email.txt",
        include_str!("../templates/en/verify_email.txt"),
    ),
    (
        "en/webhook_disabled.html",
        include_str!("../templates/en/webhook_disabled.html"),
    ),
    (
        "en/webhook_disabled.subject.txt",
        include_str!("../templates/en/webhook_disabled.subject.txt"),
    ),
    (
        "en/webhook_disabled.txt",
        include_str!("../templates/en/webhook_disabled.txt"),
    ),
];

/// A message rendered for one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The text message, for a message that has one.
    pub sms: Option<String>,
}

/// Bodies left out: a verification or reset message carries a one-time link.
impl std::fmt::Debug for Rendered {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Rendered")
            .field("subject", &self.subject)
            .field("text_bytes", &self.text.len())
            .field("html_bytes", &self.html.len())
            .field("sms", &self.sms.is_some())
            .finish()
    }
}

/// Why a message could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("there is no message {0:?}")]
    UnknownMessage(String),
    #[error("template {name} cannot be rendered: {detail}")]
    Render { name: String, detail: String },
    #[error("cannot read the templates directory {path}: {detail}")]
    Directory { path: String, detail: String },
}

/// The templates of every message and language, built-in and overridden.
#[derive(Debug)]
pub struct Templates {
    environment: Environment<'static>,
}

impl Templates {
    /// The built-in templates only.
    pub fn built_in() -> Templates {
        Self::with_files(
            BUILT_IN
                .iter()
                .map(|(name, source)| ((*name).to_owned(), (*source).to_owned())),
        )
    }

    /// The built-in templates with the files of `dir` (`LANG/NAME.*`) replacing or adding to
    /// them. Each file found is rendered with its message's sample at once ([`Templates::check`]).
    pub fn load(dir: Option<&Path>) -> Result<Templates, TemplateError> {
        let mut files: BTreeMap<String, String> = BUILT_IN
            .iter()
            .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
            .collect();
        if let Some(dir) = dir {
            let directory_error = |detail: String| TemplateError::Directory {
                path: dir.display().to_string(),
                detail,
            };
            let languages =
                std::fs::read_dir(dir).map_err(|error| directory_error(error.to_string()))?;
            for language in languages {
                let language = language.map_err(|error| directory_error(error.to_string()))?;
                if !language.path().is_dir() {
                    continue;
                }
                let lang = language.file_name().to_string_lossy().into_owned();
                let entries = std::fs::read_dir(language.path())
                    .map_err(|error| directory_error(error.to_string()))?;
                for entry in entries {
                    let entry = entry.map_err(|error| directory_error(error.to_string()))?;
                    let file = entry.file_name().to_string_lossy().into_owned();
                    if !(file.ends_with(".txt") || file.ends_with(".html")) {
                        continue;
                    }
                    let source = std::fs::read_to_string(entry.path()).map_err(|error| {
                        directory_error(format!("{}: {error}", entry.path().display()))
                    })?;
                    files.insert(format!("{lang}/{file}"), source);
                }
            }
        }
        let templates = Self::with_files(files.into_iter());
        templates.check()?;
        Ok(templates)
    }

    fn with_files(files: impl Iterator<Item = (String, String)>) -> Templates {
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        // Line endings as written; a final newline of a file is not part of the message.
        environment.set_keep_trailing_newline(false);
        for (name, source) in files {
            // A syntax error shows when the template is rendered (check at start, or a test).
            if let Err(error) = environment.add_template_owned(name.clone(), source) {
                tracing::warn!(template = %name, %error, "a notification template does not parse");
            }
        }
        Templates { environment }
    }

    /// The languages that have at least one message.
    pub fn languages(&self) -> Vec<String> {
        let mut languages: Vec<String> = self
            .environment
            .templates()
            .filter_map(|(name, _)| name.split_once('/').map(|(lang, _)| lang.to_owned()))
            .collect();
        languages.dedup();
        languages.sort();
        languages.dedup();
        languages
    }

    /// Renders every message of every language with its sample: the first that fails, named.
    pub fn check(&self) -> Result<(), TemplateError> {
        for language in self.languages() {
            for message in MESSAGES {
                self.render(message, &language, &sample(message, &language))?;
            }
        }
        Ok(())
    }

    /// The file of `message` and `part` in `language`, or in English.
    fn file(&self, language: &str, message: &str, part: &str) -> Option<String> {
        [language, DEFAULT_LANGUAGE]
            .into_iter()
            .map(|lang| format!("{lang}/{message}{part}"))
            .find(|name| self.environment.get_template(name).is_ok())
    }

    fn render_file(&self, name: &str, context: &Value) -> Result<String, TemplateError> {
        let template = self
            .environment
            .get_template(name)
            .map_err(|error| render_error(name, &error))?;
        let rendered = template
            .render(context)
            .map_err(|error| render_error(name, &error))?;
        Ok(rendered.trim_end().to_owned())
    }

    /// Renders `message` in `language` (English where that language lacks it) with `variables`
    /// (a JSON object). The subject is one line; the HTML gets the subject as `subject`.
    pub fn render(
        &self,
        message: &str,
        language: &str,
        variables: &serde_json::Value,
    ) -> Result<Rendered, TemplateError> {
        if !MESSAGES.contains(&message) {
            return Err(TemplateError::UnknownMessage(message.to_owned()));
        }
        let mut variables = variables.clone();
        let missing = |part: &str| TemplateError::Render {
            name: format!("{language}/{message}{part}"),
            detail: "the file is missing (in this language and in English)".to_owned(),
        };
        let subject_file = self
            .file(language, message, ".subject.txt")
            .ok_or_else(|| missing(".subject.txt"))?;
        let subject = self.render_file(&subject_file, &Value::from_serialize(&variables))?;
        if subject.contains(['\r', '\n']) {
            return Err(TemplateError::Render {
                name: subject_file,
                detail: "a subject is one line".to_owned(),
            });
        }
        if let Some(object) = variables.as_object_mut() {
            object.insert("subject".to_owned(), json!(subject));
        }
        let context = Value::from_serialize(&variables);
        let text_file = self
            .file(language, message, ".txt")
            .ok_or_else(|| missing(".txt"))?;
        let html_file = self
            .file(language, message, ".html")
            .ok_or_else(|| missing(".html"))?;
        let sms = match self.file(language, message, ".sms.txt") {
            Some(file) => Some(self.render_file(&file, &context)?),
            None => None,
        };
        Ok(Rendered {
            text: self.render_file(&text_file, &context)?,
            html: self.render_file(&html_file, &context)?,
            subject,
            sms,
        })
    }
}

fn render_error(name: &str, error: &minijinja::Error) -> TemplateError {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    TemplateError::Render {
        name: name.to_owned(),
        detail,
    }
}

/// A cancellation's reason in words, in `language` (English where there are none).
pub fn reason_words(reason: &str, language: &str) -> String {
    let words = match (language, reason) {
        ("de", "out_of_stock") => "ein Artikel ist nicht mehr vorrätig",
        ("de", "payment_declined") => "die Zahlung wurde abgelehnt",
        ("de", "payment_timeout") => "die Zahlung kam nicht rechtzeitig an",
        ("de", "customer_request") => "auf Ihren Wunsch",
        ("de", "staff_request") => "durch unseren Kundendienst",
        (_, "out_of_stock") => "an item is out of stock",
        (_, "payment_declined") => "the payment was declined",
        (_, "payment_timeout") => "the payment did not arrive in time",
        (_, "customer_request") => "as you asked",
        (_, "staff_request") => "by our customer service",
        (_, other) => other,
    };
    words.to_owned()
}

/// How long a one-time link works, in words, in `language`: whole days when it is days, else
/// minutes.
pub fn valid_for(minutes: u64, language: &str) -> String {
    let days = minutes / (24 * 60);
    let whole_days = minutes.is_multiple_of(24 * 60) && days > 0;
    match (language, whole_days) {
        ("de", true) => format!("{days} {}", if days == 1 { "Tag" } else { "Tage" }),
        ("de", false) => format!("{minutes} Minuten"),
        (_, true) => format!("{days} {}", if days == 1 { "day" } else { "days" }),
        (_, false) => format!("{minutes} minutes"),
    }
}

/// The variables every message gets besides its own.
pub fn common(
    shop_name: &str,
    shop_url: &str,
    name: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut common = serde_json::Map::new();
    common.insert("shop_name".to_owned(), json!(shop_name));
    common.insert("shop_url".to_owned(), json!(shop_url));
    common.insert("name".to_owned(), json!(name));
    common
}

/// The variables of `message` as the notifier gives them, with sample values: what the
/// template tests render each template with, and what an override is checked against.
pub fn sample(message: &str, language: &str) -> serde_json::Value {
    let mut variables = common("mercato", "https://shop.example", "Zoë Ünal");
    let order = json!({
        "order_id": "0193b8f0-7c1e-7a8e-9f00-000000000001",
        "order_number": "0193B8F0",
        "order_url": "https://shop.example/shop/orders/0193b8f0-7c1e-7a8e-9f00-000000000001",
    });
    let own = match message {
        "verify_email" => json!({
            "link": "https://shop.example/verify-email?token=sample-token",
            "token": "sample-token",
            "valid_for": valid_for(7 * 24 * 60, language),
        }),
        "password_reset" => json!({
            "link": "https://shop.example/reset-password?token=sample-token",
            "token": "sample-token",
            "valid_for": valid_for(30, language),
        }),
        "order_received" => json!({
            "lines": [{"product_id": "0193b8f0-0000-7000-8000-00000000000a", "quantity": 2,
                       "unit_price": "9.99", "line_total": "19.98"}],
            "total": "19.98",
            "payment_method": "card",
        }),
        "order_confirmed" => json!({ "total": "19.98" }),
        "order_cancelled" => json!({
            "reason": "customer_request",
            "reason_words": reason_words("customer_request", language),
            "refunded": true,
        }),
        "order_shipped" => json!({
            "carrier": "DHL", "tracking_number": "JD014600003828", "items": 2,
        }),
        "order_delivered" => json!({}),
        "refund_issued" => json!({ "amount": "5.00", "refund_id": "refund-1" }),
        "payment_receipt" => json!({
            "amount": "19.98",
            "charge_id": "ch_sample",
            "receipt_url": "https://shop.example/shop/orders/0193b8f0-7c1e-7a8e-9f00-000000000001#payments",
        }),
        "webhook_disabled" => json!({
            "webhook_id": "0193b8f0-0000-7000-8000-0000000000ff",
            "url": "https://erp.example/hooks",
            "reason": "every delivery failed for 3 days; the last answer was HTTP 500",
            "position": 1234,
        }),
        _ => json!({}),
    };
    if (message.starts_with("order_") || matches!(message, "refund_issued" | "payment_receipt"))
        && let Some(order) = order.as_object()
    {
        variables.extend(order.clone());
    }
    if let Some(own) = own.as_object() {
        variables.extend(own.clone());
    }
    serde_json::Value::Object(variables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_renders_in_every_language_with_its_variables() {
        let templates = Templates::built_in();
        assert_eq!(templates.languages(), LANGUAGES);
        for language in LANGUAGES {
            for message in MESSAGES {
                let rendered = templates
                    .render(message, language, &sample(message, language))
                    .unwrap_or_else(|error| panic!("{language}/{message}: {error}"));
                assert!(!rendered.subject.is_empty(), "{language}/{message}");
                assert!(
                    rendered.text.contains("Zoë Ünal"),
                    "{language}/{message}: {}",
                    rendered.text
                );
                assert!(
                    rendered.html.contains("<!DOCTYPE html>"),
                    "{language}/{message}"
                );
                assert!(
                    rendered.html.contains(&format!("lang=\"{language}\"")),
                    "{language}/{message}"
                );
                assert!(!rendered.text.contains("{{"), "{language}/{message}");
            }
        }
    }

    #[test]
    fn a_template_naming_a_variable_its_message_lacks_fails() {
        for language in LANGUAGES {
            for message in MESSAGES {
                let templates = Templates::built_in();
                let sample = sample(message, language);
                // Each variable the message is given is needed by at least one of its parts:
                // without it, rendering fails instead of sending a message with a hole.
                for variable in sample
                    .as_object()
                    .into_iter()
                    .flat_map(|object| object.keys())
                {
                    let mut without = sample.clone();
                    if let Some(object) = without.as_object_mut() {
                        object.remove(variable);
                    }
                    let result = templates.render(message, language, &without);
                    // Given to every message of an order, shown where it helps.
                    let optional = matches!(variable.as_str(), "order_id" | "reason")
                        || (*message == "payment_receipt" && variable == "order_url");
                    if optional {
                        continue;
                    }
                    assert!(
                        result.is_err(),
                        "{language}/{message} rendered without {variable}"
                    );
                }
            }
        }
    }

    #[test]
    fn html_escapes_values_and_text_keeps_them() {
        let templates = Templates::built_in();
        let mut variables = sample("order_shipped", "en");
        variables["carrier"] = json!("<script>alert(1)</script>");
        let rendered = templates
            .render("order_shipped", "en", &variables)
            .expect("renders");
        assert!(
            rendered.html.contains("&lt;script&gt;"),
            "{}",
            rendered.html
        );
        assert!(!rendered.html.contains("<script>"));
        assert!(rendered.text.contains("<script>alert(1)</script>"));
        assert!(
            rendered
                .sms
                .expect("shipped has a text message")
                .contains("<script>")
        );
    }

    #[test]
    fn a_language_without_templates_falls_back_to_english() {
        let templates = Templates::built_in();
        let english = templates
            .render("order_confirmed", "en", &sample("order_confirmed", "en"))
            .expect("renders");
        let fallback = templates
            .render("order_confirmed", "fr", &sample("order_confirmed", "fr"))
            .expect("renders");
        assert_eq!(english, fallback);
        let german = templates
            .render("order_confirmed", "de", &sample("order_confirmed", "de"))
            .expect("renders");
        assert!(german.subject.contains("bestätigt"), "{}", german.subject);
    }

    #[test]
    fn an_override_directory_replaces_a_file_and_is_checked_at_load() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir_all(dir.path().join("en")).expect("language directory");
        std::fs::write(
            dir.path().join("en/order_confirmed.subject.txt"),
            "Order {{ order_number }} paid: {{ total }}",
        )
        .expect("override");
        let templates = Templates::load(Some(dir.path())).expect("loads");
        let rendered = templates
            .render("order_confirmed", "en", &sample("order_confirmed", "en"))
            .expect("renders");
        assert_eq!(rendered.subject, "Order 0193B8F0 paid: 19.98");

        std::fs::write(
            dir.path().join("en/order_confirmed.txt"),
            "Hello {{ nickname }}",
        )
        .expect("override");
        let error =
            Templates::load(Some(dir.path())).expect_err("an unknown variable fails the load");
        assert!(
            error.to_string().contains("en/order_confirmed.txt"),
            "{error}"
        );
    }
}
