//! Personal data: what a person tells the shop about themselves (email, name, phone, postal
//! addresses), the rules it must follow as plain text, and [`Sealed`], the form it takes in an
//! event. An event never holds personal data in the clear: the application seals each value under
//! a key of its person before the command reaches an aggregate, so erasing the person (destroying
//! the key) leaves every event in place and every copy of it unreadable. The domain checks the
//! plain text here, before sealing, and never opens a sealed value.

use serde::{Deserialize, Serialize};

use crate::ids::FieldError;
use crate::text::{TextRule, nfc};

/// A personal value sealed under its person's key: opaque text (the cipher, the nonce and the
/// ciphertext), written and read only by the application's key service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl Sealed {
    /// Wraps sealed text as the key service produced it.
    pub fn from_sealed_text(text: String) -> Sealed {
        Sealed(text)
    }

    /// The sealed text, for the key service to open.
    pub fn as_sealed_text(&self) -> &str {
        &self.0
    }
}

/// The longest email address accepted (RFC 5321's limit on a forward path).
pub const EMAIL_MAX_CHARS: usize = 254;
/// The longest name of a person accepted, in characters a person sees.
pub const PERSON_NAME_MAX_CHARS: usize = 200;
/// The most postal addresses a profile keeps.
pub const ADDRESSES_MAX: usize = 10;

/// A person's name: one line with something visible.
pub const PERSON_NAME_RULE: TextRule = TextRule {
    field: "name",
    max: PERSON_NAME_MAX_CHARS,
    multiline: false,
};

/// An email address as the shop keeps it: trimmed, with its domain in lower case, checked for the
/// shape `local@domain.tld` (no spaces, no control characters, a dot in the domain). The local
/// part keeps its case (RFC 5321 lets a mail server tell `Ann` from `ann`); accounts are looked up
/// by the address in lower case, so two spellings of one address are one account.
pub fn normalize_email(email: &str) -> Result<String, FieldError> {
    let field = "email";
    let email = email.trim();
    if email.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if email.chars().count() > EMAIL_MAX_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {EMAIL_MAX_CHARS} characters"),
        ));
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err(FieldError::new(
            field,
            "must be an email address such as ann@example.com",
        ));
    };
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',');
    if local.is_empty()
        || local.chars().count() > 64
        || local.chars().any(bad_char)
        || local.contains('@')
    {
        return Err(FieldError::new(
            field,
            "the part before @ must be 1 to 64 characters without spaces, commas or angle brackets",
        ));
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.chars().count() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    });
    if !domain.contains('.') || !labels_ok {
        return Err(FieldError::new(
            field,
            "the part after @ must be a domain name such as example.com",
        ));
    }
    Ok(format!(
        "{}@{}",
        nfc(local.to_owned()),
        domain.to_lowercase()
    ))
}

/// The form an email address is looked up by: the normalized address in lower case.
pub fn email_lookup_form(normalized_email: &str) -> String {
    normalized_email.to_lowercase()
}

/// Checks and normalizes a person's name (normal form C, one visible line).
pub fn normalize_person_name(name: &str) -> Result<String, FieldError> {
    let name = nfc(name.trim().to_owned());
    PERSON_NAME_RULE.check_required(&name)?;
    Ok(name)
}

/// Checks and normalizes a phone number: `+`, digits, spaces, dots, dashes and parentheses, with 5
/// to 20 digits; stored as given, trimmed.
pub fn normalize_phone(field: &'static str, phone: &str) -> Result<String, FieldError> {
    let phone = phone.trim();
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')');
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    if phone.chars().count() > 32 || !phone.chars().all(allowed) || !(5..=20).contains(&digits) {
        return Err(FieldError::new(
            field,
            "must be a phone number of 5 to 20 digits, such as +39 06 1234 5678 (digits, spaces, +, -, ., parentheses)",
        ));
    }
    Ok(phone.to_owned())
}

/// A postal address (CONTRACT.md: `{name, line1, line2?, city, postal_code, country, phone?}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

const fn line_rule(field: &'static str, max: usize) -> TextRule {
    TextRule {
        field,
        max,
        multiline: false,
    }
}

impl Address {
    /// Checks every field (naming it under `prefix`, such as `addresses[0]`) and returns the
    /// address in normal form C, the country in upper case.
    pub fn normalized(self, prefix: &str) -> Result<Address, FieldError> {
        let check = |rule: TextRule, text: String| -> Result<String, FieldError> {
            let text = nfc(text.trim().to_owned());
            rule.check_required(&text).map_err(|error| {
                FieldError::new(
                    error.field,
                    format!("{prefix}.{}: {}", error.field, error.message),
                )
            })?;
            Ok(text)
        };
        let name = check(line_rule("name", 200), self.name)?;
        let line1 = check(line_rule("line1", 200), self.line1)?;
        let line2 = match self.line2 {
            Some(line2) if !line2.trim().is_empty() => Some(check(line_rule("line2", 200), line2)?),
            _ => None,
        };
        let city = check(line_rule("city", 100), self.city)?;
        let postal_code = check(line_rule("postal_code", 20), self.postal_code)?;
        let country = self.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(FieldError::new(
                "country",
                format!(
                    "{prefix}.country: must be a two-letter ISO 3166-1 country code, such as IT"
                ),
            ));
        }
        let phone = match self.phone {
            Some(phone) => Some(normalize_phone("phone", &phone).map_err(|error| {
                FieldError::new("phone", format!("{prefix}.phone: {}", error.message))
            })?),
            None => None,
        };
        Ok(Address {
            name,
            line1,
            line2,
            city,
            postal_code,
            country,
            phone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_keeps_its_local_part_and_lowers_its_domain() {
        assert_eq!(
            normalize_email("  Ann.Lee@Example.COM ").as_deref(),
            Ok("Ann.Lee@example.com")
        );
        assert_eq!(
            email_lookup_form("Ann.Lee@example.com"),
            "ann.lee@example.com"
        );
        assert!(normalize_email("zoë@exämple.it").is_ok());
    }

    #[test]
    fn an_email_without_a_domain_or_with_spaces_is_refused_naming_the_email_field() {
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@localhost",
            "an n@example.com",
            "ann@exa mple.com",
            "ann@-example.com",
            "<ann>@example.com",
            "ann@example..com",
        ] {
            let error = normalize_email(bad).expect_err(bad);
            assert_eq!(error.field, "email", "{bad}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn a_phone_number_has_5_to_20_digits_and_punctuation_only() {
        assert_eq!(
            normalize_phone("phone", " +39 (06) 1234-5678 ").as_deref(),
            Ok("+39 (06) 1234-5678")
        );
        for bad in ["1234", "call me", "+39 06 1234 5678 ext 9", &"1".repeat(21)] {
            assert_eq!(normalize_phone("phone", bad).expect_err(bad).field, "phone");
        }
    }

    #[test]
    fn an_address_is_normalized_and_its_faults_name_the_field() {
        let address = Address {
            name: " Ann Lee ".to_owned(),
            line1: "Via Roma 1".to_owned(),
            line2: Some("  ".to_owned()),
            city: "Roma".to_owned(),
            postal_code: "00100".to_owned(),
            country: "it".to_owned(),
            phone: None,
        };
        let normalized = address.clone().normalized("addresses[0]").expect("valid");
        assert_eq!(normalized.name, "Ann Lee");
        assert_eq!(normalized.line2, None);
        assert_eq!(normalized.country, "IT");
        let error = Address {
            country: "Italy".to_owned(),
            ..address.clone()
        }
        .normalized("addresses[1]")
        .expect_err("country");
        assert_eq!(error.field, "country");
        assert!(error.message.contains("addresses[1].country"), "{error}");
        let error = Address {
            city: "\u{0}".to_owned(),
            ..address
        }
        .normalized("shipping_address")
        .expect_err("city");
        assert!(
            error.message.starts_with("shipping_address.city"),
            "{error}"
        );
    }
}
