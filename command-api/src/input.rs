//! The request bodies of the command routes. Unknown fields are refused; money arrives as a JSON
//! number in major units and is read from its decimal text, never through a binary float.

use domain::Money;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use http_common::Problem;

/// A price: a JSON number with at most two decimals, greater than zero is checked by the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price(pub Money);

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text = raw.get().trim();
        if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            return Err(serde::de::Error::custom(
                "must be a JSON number in major units, such as 12.34",
            ));
        }
        Money::parse_decimal(text)
            .map(Price)
            .map_err(serde::de::Error::custom)
    }
}

/// A count (a quantity, a stock level, a delta): a JSON number with no fractional part. JSON
/// Schema counts `3.0` (and `3e0`) as the integer 3, so they are read as 3; `3.5` is refused.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_i64() {
        return Ok(whole);
    }
    // Beyond 2^53 a double no longer holds every whole number; every count is far below.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match number.as_f64() {
        Some(value) if value.fract() == 0.0 && value.abs() <= EXACT => Ok(value as i64),
        _ => Err(serde::de::Error::custom(format!(
            "must be a whole number (an integer), not {number}"
        ))),
    }
}

/// Deserializes a present field as `Some(value)` (so `null` is `Some(None)`), for fields where
/// absent and `null` mean different things.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    pub name: String,
    pub description: String,
    pub price: Price,
    #[serde(deserialize_with = "whole_number")]
    pub stock_qty: i64,
    #[serde(default)]
    pub category: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    /// Absent: unchanged; `null` is refused (a product always has a name, a description and a
    /// price), as for the fields below.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub price: Option<Price>,
    /// Absent: unchanged; `null`: cleared; a string: set.
    #[serde(default, deserialize_with = "present")]
    pub category: Option<Option<String>>,
}

impl UpdateProduct {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.price.is_none()
            && self.category.is_none()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustStock {
    #[serde(deserialize_with = "whole_number")]
    pub delta: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCartItem {
    pub product_id: Uuid,
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
}

/// The longest shipping address accepted, in characters.
pub const SHIPPING_ADDRESS_MAX_CHARS: usize = 1_000;

/// A shipping address, when given: lines of visible text, in normal form C.
const SHIPPING_ADDRESS_RULE: domain::text::TextRule = domain::text::TextRule {
    field: "shipping_address",
    max: SHIPPING_ADDRESS_MAX_CHARS,
    multiline: true,
};

/// An address on an order: `{name, line1, line2?, city, postal_code, country, phone?}`, or, as
/// checkout took it before, lines of free text.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AddressInput {
    Structured(domain::Address),
    Text(String),
}

impl AddressInput {
    /// The address checked and normalized, as the JSON text that is sealed into the order:
    /// an object, or a string for the free-text form.
    pub fn sealed_text(self, field: &'static str) -> Result<String, Problem> {
        let value = match self {
            AddressInput::Structured(address) => {
                let address = address
                    .normalized(field)
                    .map_err(|error| Problem::invalid(field, &error.message))?;
                serde_json::to_value(address)
            }
            AddressInput::Text(text) => {
                let text = domain::text::nfc(text);
                SHIPPING_ADDRESS_RULE
                    .check_required(&text)
                    .map_err(|error| Problem::invalid(field, &error.message))?;
                serde_json::to_value(text)
            }
        };
        value
            .map(|value| value.to_string())
            .map_err(|error| Problem::invalid(field, error.to_string()))
    }
}

/// How an order is paid, and with what: a card needs its token, a bank transfer none.
pub fn payment_of(
    method: Option<domain::PaymentMethod>,
    token: Option<&str>,
) -> Result<(domain::PaymentMethod, Option<&str>), Problem> {
    let method = method.unwrap_or_default();
    match (method, token) {
        (domain::PaymentMethod::Card, Some(token)) => {
            domain::payment::validate_payment_token(token)
                .map_err(|error| Problem::invalid(error.field, &error.message))?;
            Ok((method, Some(token)))
        }
        (domain::PaymentMethod::Card, None) => Err(Problem::invalid(
            "payment_token",
            "a card payment needs a payment_token from the gateway, such as tok_visa (or pay by \"payment_method\": \"bank_transfer\")",
        )),
        (domain::PaymentMethod::BankTransfer, None) => Ok((method, None)),
        (domain::PaymentMethod::BankTransfer, Some(_)) => Err(Problem::invalid(
            "payment_token",
            "a bank transfer takes no payment_token: leave it out",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    /// The caller's own id, or left out (a guest has none).
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub payment_token: Option<String>,
    #[serde(default)]
    pub payment_method: Option<domain::PaymentMethod>,
    #[serde(default)]
    pub shipping_address: Option<AddressInput>,
    #[serde(default)]
    pub billing_address: Option<AddressInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLineInput {
    pub product_id: Uuid,
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// A customer's own id, or left out; required when support staff order for a customer.
    #[serde(default)]
    pub customer_id: Option<String>,
    pub lines: Vec<OrderLineInput>,
    #[serde(default)]
    pub payment_token: Option<String>,
    #[serde(default)]
    pub payment_method: Option<domain::PaymentMethod>,
    #[serde(default)]
    pub shipping_address: Option<AddressInput>,
    #[serde(default)]
    pub billing_address: Option<AddressInput>,
}

/// `POST /orders/{id}/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /orders/{id}/shipments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ship {
    pub lines: Vec<OrderLineInput>,
    pub carrier: String,
    pub tracking_number: String,
}

/// `POST /orders/{id}/refunds`: an amount, or lines whose price is refunded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    #[serde(default)]
    pub amount: Option<Price>,
    #[serde(default)]
    pub lines: Option<Vec<OrderLineInput>>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /orders/{id}/returns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Return {
    pub lines: Vec<OrderLineInput>,
    pub restock: bool,
}

/// `POST /orders/{id}/payments`: a payment received another way (a bank transfer).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPayment {
    pub amount: Price,
    pub reference: String,
}

/// Lines of a shipment, a return or a refund: 1 to 100, each quantity 1 to 999.
pub fn item_counts(lines: &[OrderLineInput]) -> Result<Vec<domain::order::ItemCount>, Problem> {
    if lines.is_empty() || lines.len() > domain::cart::LINES_MAX {
        return Err(Problem::invalid(
            "lines",
            format!("must hold 1 to {} lines", domain::cart::LINES_MAX),
        ));
    }
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            if !(1..=i64::from(domain::cart::LINE_QUANTITY_MAX)).contains(&line.quantity) {
                return Err(Problem::invalid(
                    &format!("lines[{index}].quantity"),
                    format!("must be between 1 and {}", domain::cart::LINE_QUANTITY_MAX),
                ));
            }
            Ok(domain::order::ItemCount {
                product_id: line.product_id,
                quantity: line.quantity as u32,
            })
        })
        .collect()
}

/// `POST /users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub email: String,
    pub password: String,
    pub name: String,
}

/// `POST /users/verify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    pub token: String,
}

/// `POST /sessions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: String,
}

/// `POST /sessions/refresh`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    pub refresh_token: String,
}

/// `PATCH /users/me`: absent leaves a value, `null` clears the phone or the addresses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeProfile {
    #[serde(default, deserialize_with = "present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub addresses: Option<Option<Vec<domain::Address>>>,
    #[serde(default, deserialize_with = "present")]
    pub language: Option<Option<String>>,
}

/// `POST /users/me/password`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// `POST /password-resets`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestReset {
    pub email: String,
}

/// `POST /password-resets/complete`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteReset {
    pub token: String,
    pub new_password: String,
}

/// Bodies that carry a password or a token print none of it.
macro_rules! redacted_debug {
    ($($type:ident),*) => {
        $(impl std::fmt::Debug for $type {
            fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.debug_struct(stringify!($type)).finish_non_exhaustive()
            }
        })*
    };
}

redacted_debug!(
    Checkout,
    PlaceOrder,
    Register,
    VerifyEmail,
    Login,
    Refresh,
    ChangePassword,
    RequestReset,
    CompleteReset
);

#[cfg(test)]
mod tests {
    use super::*;
    use http_common::problem::parse_json;

    #[test]
    fn prices_are_exact_decimal_numbers_with_at_most_two_decimals() {
        let body: CreateProduct =
            parse_json(br#"{"name":"a","description":"b","price":12.34,"stock_qty":1}"#).unwrap();
        assert_eq!(body.price.0, Money::from_minor(1234));
        for bad in [r#""12.34""#, "12.345", "1e400", "true", "null"] {
            let text = format!(r#"{{"name":"a","description":"b","price":{bad},"stock_qty":1}}"#);
            let problem = parse_json::<CreateProduct>(text.as_bytes()).unwrap_err();
            assert_eq!(
                problem.field.as_deref(),
                Some("price"),
                "{bad}: {problem:?}"
            );
        }
    }

    #[test]
    fn counts_are_whole_numbers_however_they_are_written() {
        for (text, expected) in [
            ("3", 3),
            ("3.0", 3),
            ("3e0", 3),
            ("-2.0", -2),
            ("1.5e1", 15),
        ] {
            let body: AdjustStock = parse_json(format!(r#"{{"delta":{text}}}"#).as_bytes())
                .unwrap_or_else(|problem| panic!("{text}: {problem:?}"));
            assert_eq!(body.delta, expected, "{text}");
        }
        for bad in ["3.5", "1e300", r#""3""#, "null", "true"] {
            let problem =
                parse_json::<AdjustStock>(format!(r#"{{"delta":{bad}}}"#).as_bytes()).unwrap_err();
            assert_eq!(
                problem.field.as_deref(),
                Some("delta"),
                "{bad}: {problem:?}"
            );
        }
        let problem = parse_json::<AdjustStock>(br#"{"delta":3.5}"#).unwrap_err();
        assert!(problem.detail.contains("whole number"), "{problem:?}");
    }

    #[test]
    fn an_update_tells_a_cleared_category_from_an_absent_one() {
        let cleared: UpdateProduct = parse_json(br#"{"category":null}"#).unwrap();
        assert_eq!(cleared.category, Some(None));
        let absent: UpdateProduct = parse_json(br#"{"name":"x"}"#).unwrap();
        assert_eq!(absent.category, None);
        assert!(parse_json::<UpdateProduct>(b"{}").unwrap().is_empty());
        for field in ["name", "description", "price"] {
            let problem = parse_json::<UpdateProduct>(format!(r#"{{"{field}":null}}"#).as_bytes())
                .unwrap_err();
            assert_eq!(problem.field.as_deref(), Some(field), "{problem:?}");
        }
    }
}
