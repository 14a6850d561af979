//! Path, query and text helpers the routes of every API use.

use std::collections::HashMap;

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

/// Query parameter `name` as a whole number in `range`, `default` when it is not given; 422
/// naming it otherwise.
pub fn count_param(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, Problem> {
    let Some(text) = params.get(name) else {
        return Ok(default);
    };
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|value| range.contains(value))
        .ok_or_else(|| {
            Problem::invalid(
                name,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// 400 for a query parameter the route does not take, naming the ones it does.
pub fn known_params(params: &HashMap<String, String>, known: &[&str]) -> Result<(), Problem> {
    let mut unknown: Vec<&str> = params
        .keys()
        .map(String::as_str)
        .filter(|name| !known.contains(name))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(Problem::bad_request(format!(
        "unknown query parameter {}: this route takes {}",
        unknown
            .iter()
            .map(|name| format!("`{}`", truncate(name, 40)))
            .collect::<Vec<_>>()
            .join(", "),
        known
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
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
