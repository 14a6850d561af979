//! The message both adapters send: checked addresses and text, then lettre's builder.
//!
//! lettre encodes what needs encoding (non-ASCII names and subjects as RFC 2047 words, bodies
//! as quoted-printable or base64, lines folded) but cannot write a header with a line break in
//! a display name (it panics), so names and subjects with control characters are refused
//! here, before anything is built.

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use uuid::Uuid;

use crate::{Mail, MailError, Recipient};

/// The sender setting as a mailbox: `shop@example.com` or `mercato <shop@example.com>`.
pub(crate) fn sender_mailbox(from: &str) -> Result<Mailbox, MailError> {
    let invalid = |reason: String| MailError::InvalidSender {
        address: from.to_owned(),
        reason,
    };
    let trimmed = from.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    if let Some(reason) = control_character_in(trimmed) {
        return Err(invalid(reason));
    }
    let mailbox: Mailbox = trimmed
        .parse()
        .map_err(|error| invalid(format!("{error}")))?;
    if let Some(reason) = mailbox.name.as_deref().and_then(control_character_in) {
        return Err(invalid(reason));
    }
    Ok(mailbox)
}

/// The recipient as a mailbox: its address checked, its name free of control characters.
pub(crate) fn recipient_mailbox(recipient: &Recipient) -> Result<Mailbox, MailError> {
    let invalid = |reason: String| MailError::InvalidRecipient {
        address: recipient.address.clone(),
        reason,
    };
    let address: lettre::Address = recipient
        .address
        .trim()
        .parse()
        .map_err(|error| invalid(format!("not a mail address ({error})")))?;
    let name = match recipient.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => {
            if let Some(reason) = control_character_in(name) {
                return Err(invalid(format!("the display name {reason}")));
            }
            Some(name.to_owned())
        }
        _ => None,
    };
    Ok(Mailbox::new(name, address))
}

/// A mail ready to go: who it is from and to, and its bytes as a file holds them and SMTP
/// carries them (RFC 5322, CRLF line ends, ending with one CRLF).
#[derive(Debug)]
pub(crate) struct OutgoingMessage {
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

impl OutgoingMessage {
    /// The bytes to hand to lettre's SMTP client, which ends the data with `CRLF . CRLF`
    /// whether or not the message already ends with a CRLF: without the message's own final
    /// CRLF, the server receives exactly [`OutgoingMessage::bytes`].
    pub fn smtp_data(&self) -> &[u8] {
        self.bytes.strip_suffix(b"\r\n").unwrap_or(&self.bytes)
    }
}

/// The message of `mail` from `from`, with a Date and a fresh Message-ID on the sender's domain.
pub(crate) fn build_message(from: &Mailbox, mail: &Mail) -> Result<OutgoingMessage, MailError> {
    let message = build_lettre_message(from, mail)?;
    let mut bytes = message.formatted();
    // lettre ends every part with a CRLF of its own, which in a multipart message belongs to
    // the next boundary but in a single-part one becomes part of the body: a text that ends
    // with its own line break would gain a blank line.
    if mail.html.is_none() && bytes.ends_with(b"\r\n\r\n") {
        bytes.truncate(bytes.len() - 2);
    }
    Ok(OutgoingMessage {
        envelope: message.envelope().clone(),
        bytes,
    })
}

fn build_lettre_message(from: &Mailbox, mail: &Mail) -> Result<Message, MailError> {
    let to = recipient_mailbox(&mail.to)?;
    if let Some(reason) = control_character_in(&mail.subject) {
        return Err(MailError::InvalidMail(format!("the subject {reason}")));
    }
    let local = match &mail.message_id {
        Some(local)
            if !local.is_empty()
                && local.len() <= 128
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) =>
        {
            local.clone()
        }
        Some(local) => {
            return Err(MailError::InvalidMail(format!(
                "the Message-ID part {local:?} must be 1 to 128 letters, digits, '.', '-' or '_'"
            )));
        }
        None => Uuid::new_v4().simple().to_string(),
    };
    let message_id = format!("<{local}@{}>", from.email.domain());
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.as_str())
        .message_id(Some(message_id))
        .date_now();
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text.clone());
    let built = match &mail.html {
        None => builder.singlepart(text),
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
    };
    built.map_err(|error| MailError::InvalidMail(error.to_string()))
}

/// Why `text` cannot stand in a header, if it cannot: a control character (a line break would
/// end the header).
fn control_character_in(text: &str) -> Option<String> {
    text.chars()
        .find(|character| character.is_control())
        .map(|character| format!("contains the control character {character:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(mail: &Mail) -> String {
        let from = sender_mailbox("mercato <shop@mercato.example>").expect("a sender");
        let message = build_message(&from, mail).expect("a message");
        String::from_utf8(message.bytes).expect("an ASCII message")
    }

    #[test]
    fn a_text_that_ends_with_a_line_break_gains_no_blank_line() {
        for (text, ending) in [
            ("Hello\n", "\r\n\r\nHello\r\n"),
            ("Hello\n\n", "\r\n\r\nHello\r\n\r\n"),
            ("Hello", "\r\n\r\nHello\r\n"),
            ("", "7bit\r\n\r\n"),
        ] {
            let message = formatted(&Mail::text(Recipient::new("zoe@example.com"), "Hi", text));
            assert!(message.ends_with(ending), "{text:?}: {message:?}");
        }
    }

    #[test]
    fn the_smtp_data_leaves_the_final_line_end_to_the_data_terminator() {
        let from = sender_mailbox("shop@example.com").expect("a sender");
        for html in [None, Some("<p>Hello</p>".to_owned())] {
            let mut mail = Mail::text(Recipient::new("zoe@example.com"), "Hi", "Hello\n");
            mail.html = html;
            let message = build_message(&from, &mail).expect("a message");
            assert!(message.bytes.ends_with(b"\r\n"));
            let mut carried = message.smtp_data().to_vec();
            carried.extend_from_slice(b"\r\n");
            assert_eq!(carried, message.bytes);
        }
    }

    #[test]
    fn the_envelope_goes_from_the_sender_to_the_recipient_address() {
        let from = sender_mailbox("mercato <shop@example.com>").expect("a sender");
        let mail = Mail::text(Recipient::named("Zoë", "zoe@example.com"), "Hi", "Hello");
        let message = build_message(&from, &mail).expect("a message");
        assert_eq!(
            message.envelope.from().map(ToString::to_string).as_deref(),
            Some("shop@example.com")
        );
        let to: Vec<String> = message
            .envelope
            .to()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(to, vec!["zoe@example.com".to_owned()]);
    }

    #[test]
    fn a_sender_may_be_an_address_or_a_name_and_an_address() {
        let bare = sender_mailbox("shop@example.com").expect("a bare address");
        assert_eq!(bare.email.to_string(), "shop@example.com");
        assert_eq!(bare.name, None);
        let named = sender_mailbox(" mercato <shop@example.com> ").expect("a named address");
        assert_eq!(named.name.as_deref(), Some("mercato"));
        assert_eq!(named.email.domain(), "example.com");
    }

    #[test]
    fn a_sender_that_is_not_an_address_is_refused_naming_the_setting() {
        for from in [
            "",
            "shop",
            "shop@",
            "a b@example.com",
            "x@example.com, y@example.com",
        ] {
            let error = sender_mailbox(from).expect_err(from);
            assert!(matches!(error, MailError::InvalidSender { .. }), "{error}");
            assert!(error.to_string().contains("MAIL_FROM"), "{error}");
        }
    }

    #[test]
    fn a_recipient_that_is_not_an_address_is_refused_naming_the_address() {
        for address in [
            "",
            "zoe",
            "zoe@",
            "@example.com",
            "zoe@exa mple.com",
            "Zoë <zoe@example.com>",
        ] {
            let error = recipient_mailbox(&Recipient::new(address)).expect_err(address);
            match &error {
                MailError::InvalidRecipient { address: named, .. } => assert_eq!(named, address),
                other => panic!("{address:?}: {other}"),
            }
        }
    }

    #[test]
    fn a_display_name_or_subject_with_a_line_break_is_refused_before_anything_is_built() {
        let recipient = Recipient::named("Zoë\r\nBcc: someone@example.com", "zoe@example.com");
        let error = recipient_mailbox(&recipient).expect_err("a line break in the name");
        assert!(error.to_string().contains("control character"), "{error}");
        let from = sender_mailbox("shop@example.com").expect("a sender");
        let mail = Mail::text(
            Recipient::new("zoe@example.com"),
            "Hello\nBcc: someone@example.com",
            "text",
        );
        let error = build_message(&from, &mail).expect_err("a line break in the subject");
        assert!(matches!(error, MailError::InvalidMail(_)), "{error}");
    }

    #[test]
    fn a_message_has_a_date_a_message_id_on_the_senders_domain_and_a_text_part() {
        let message = formatted(&Mail::text(
            Recipient::new("zoe@example.com"),
            "Welcome",
            "Hello",
        ));
        assert!(message.contains("\r\nDate: "), "{message}");
        let message_id = message
            .lines()
            .find_map(|line| line.strip_prefix("Message-ID: <"))
            .expect("a Message-ID header");
        assert!(message_id.ends_with("@mercato.example>"), "{message}");
        assert!(
            message.contains("Content-Type: text/plain; charset=utf-8"),
            "{message}"
        );
        assert!(message.contains("MIME-Version: 1.0"), "{message}");
    }

    #[test]
    fn every_message_gets_its_own_message_id() {
        let mail = Mail::text(Recipient::new("zoe@example.com"), "Welcome", "Hello");
        let message_id = |message: &str| {
            message
                .lines()
                .find(|line| line.starts_with("Message-ID:"))
                .map(str::to_owned)
        };
        let first = message_id(&formatted(&mail));
        assert!(first.is_some());
        assert_ne!(first, message_id(&formatted(&mail)));
    }

    #[test]
    fn a_mail_may_name_its_message_id_and_a_bad_one_is_refused() {
        let mail = Mail::text(Recipient::new("zoe@example.com"), "Welcome", "Hello")
            .with_message_id("n-0123abcd");
        let message = formatted(&mail);
        assert!(
            message.contains("Message-ID: <n-0123abcd@mercato.example>"),
            "{message}"
        );
        let bad = Mail::text(Recipient::new("zoe@example.com"), "Welcome", "Hello")
            .with_message_id("a>b");
        let from = sender_mailbox("shop@mercato.example").expect("a sender");
        assert!(matches!(
            build_message(&from, &bad),
            Err(MailError::InvalidMail(_))
        ));
    }
}
