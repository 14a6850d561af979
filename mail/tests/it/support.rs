//! Reading a sent mail back: decoded headers and MIME parts, as a mail program would see them.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// An address as a header names it: the display name and the address.
pub type NamedAddress = (Option<String>, String);

/// What a mail program reads from a message.
#[derive(Debug)]
pub struct ReadMail {
    pub from: Vec<NamedAddress>,
    pub to: Vec<NamedAddress>,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// The Date header as seconds since 1970.
    pub date: Option<i64>,
    /// The top-level `type/subtype`.
    pub content_type: String,
    /// Each part that is not a container, as `type/subtype` and its decoded text with the
    /// wire's CRLF line ends read as LF.
    pub parts: Vec<(String, String)>,
}

/// Parses a raw message; panics when it is not one.
pub fn read_mail(raw: &[u8]) -> ReadMail {
    let message = MessageParser::default()
        .parse(raw)
        .unwrap_or_else(|| panic!("not a message: {}", String::from_utf8_lossy(raw)));
    let addresses = |address: Option<&mail_parser::Address>| -> Vec<NamedAddress> {
        address
            .map(|address| {
                address
                    .iter()
                    .map(|addr| {
                        (
                            addr.name().map(str::to_owned),
                            addr.address().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let content_type = |part: &mail_parser::MessagePart| {
        part.content_type()
            .map(|content_type| {
                format!(
                    "{}/{}",
                    content_type.ctype(),
                    content_type.subtype().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "text/plain".to_owned())
    };
    let parts = message
        .parts
        .iter()
        .filter_map(|part| match &part.body {
            PartType::Text(text) | PartType::Html(text) => {
                Some((content_type(part), text.replace("\r\n", "\n")))
            }
            PartType::Multipart(_) => None,
            other => panic!("an unexpected part: {other:?}"),
        })
        .collect();
    ReadMail {
        from: addresses(message.from()),
        to: addresses(message.to()),
        subject: message.subject().map(str::to_owned),
        message_id: message.message_id().map(str::to_owned),
        date: message.date().map(mail_parser::DateTime::to_timestamp),
        content_type: content_type(message.root_part()),
        parts,
    }
}
