//! Path and text helpers the routes of both APIs use.

use uuid::Uuid;

use crate::problem::Problem;

/// A product id from a path: a UUID, else 404 (no product can have it).
pub fn product_id_of(text: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(text).map_err(|_| {
        Problem::not_found(format!(
            "no product has id {:?}: product ids are UUIDs made by the server",
            truncate(text, 80)
        ))
    })
}

/// At most `max_chars` characters of `text`, for echoing input in messages.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((index, _)) => format!("{}...", &text[..index]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_input_is_cut_at_a_character_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééééé", 2), "éé...");
    }

    #[test]
    fn a_product_id_that_is_no_uuid_is_a_404() {
        assert_eq!(product_id_of("nope").unwrap_err().status, 404);
        assert!(product_id_of("7f0c5a9e-2f7b-4c2e-9a39-0d0c1c7e5b11").is_ok());
    }
}
