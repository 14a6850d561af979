//! Why an append was refused: the rules both adapters share for duplicates and conflicts.

use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{AppendRequest, AppendResult};

/// A stored event that has one of the ids an append carries.
#[derive(Clone, Debug)]
pub(crate) struct StoredId {
    pub event_id: Uuid,
    pub stream_type: String,
    pub stream_id: String,
    pub stream_version: u64,
    pub position: u64,
}

/// What to make of one request, given what the store holds.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Every event is already stored, as this request would have stored it: answer from there.
    Duplicate(AppendResult),
    /// The request must be refused with this error.
    Refused(StoreError),
    /// Nothing stands in the way (a concurrent writer has moved on): try again.
    Appendable,
}

/// Judges `request` against the stored events sharing its ids and the stream's current version.
pub(crate) fn judge(request: &AppendRequest, stored: &[StoredId], current_version: u64) -> Verdict {
    if !stored.is_empty() {
        return judge_stored(request, stored);
    }
    if !request.expected.is_satisfied_by(current_version) {
        return Verdict::Refused(request.conflict(current_version));
    }
    if request.events.is_empty() {
        // Nothing to write: it goes along with whatever the other requests turn out to be.
        return Verdict::Duplicate(AppendResult {
            positions: Vec::new(),
            stream_version: current_version,
            duplicate: true,
        });
    }
    Verdict::Appendable
}

fn judge_stored(request: &AppendRequest, stored: &[StoredId]) -> Verdict {
    let mut positions = Vec::with_capacity(request.events.len());
    let mut stream_version = 0;
    for event in &request.events {
        let same_event = stored.iter().find(|stored_event| {
            stored_event.event_id == event.event_id
                && stored_event.stream_type == request.stream_type
                && stored_event.stream_id == request.stream_id
        });
        match same_event {
            Some(stored_event) => {
                positions.push(stored_event.position);
                stream_version = stored_event.stream_version;
            }
            None => {
                // Partly stored, or stored elsewhere: name an id that is stored.
                let event_id = request
                    .events
                    .iter()
                    .map(|event| event.event_id)
                    .find(|event_id| stored.iter().any(|stored| stored.event_id == *event_id))
                    .unwrap_or(event.event_id);
                return Verdict::Refused(StoreError::EventIdReused { event_id });
            }
        }
    }
    Verdict::Duplicate(AppendResult {
        positions,
        stream_version,
        duplicate: true,
    })
}

/// What to do with a refused multi-stream append, from the verdicts of all its requests.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Every request was a duplicate.
    Duplicates(Vec<AppendResult>),
    Refused(StoreError),
    Retry,
}

pub(crate) fn decide(requests: &[AppendRequest], verdicts: Vec<Verdict>) -> Decision {
    let mut duplicates = Vec::with_capacity(verdicts.len());
    let mut first_duplicate_id = None;
    let mut any_appendable = false;
    for (request, verdict) in requests.iter().zip(verdicts) {
        match verdict {
            Verdict::Refused(error) => return Decision::Refused(error),
            Verdict::Duplicate(result) => {
                if first_duplicate_id.is_none() {
                    first_duplicate_id = request.events.first().map(|event| event.event_id);
                }
                duplicates.push(result);
            }
            Verdict::Appendable => any_appendable = true,
        }
    }
    match (any_appendable, first_duplicate_id) {
        (false, _) => Decision::Duplicates(duplicates),
        (true, None) => Decision::Retry,
        (true, Some(event_id)) => Decision::Refused(StoreError::EventIdReused { event_id }),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use schemas::{EventMetadata, NewEvent};
    use serde_json::value::RawValue;

    use super::*;
    use crate::store::ExpectedVersion;

    fn request(stream_id: &str, expected: ExpectedVersion, n_events: usize) -> AppendRequest {
        let events = (0..n_events)
            .map(|_| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: "Numbered".to_owned(),
                schema_version: 1,
                occurred_at: Utc::now(),
                payload: RawValue::from_string("{}".to_owned()).unwrap_or_default(),
                metadata: EventMetadata::default(),
            })
            .collect();
        AppendRequest::new("cart", stream_id, expected, events)
    }

    fn stored_as(request: &AppendRequest, first_version: u64) -> Vec<StoredId> {
        request
            .events
            .iter()
            .enumerate()
            .map(|(event_index, event)| StoredId {
                event_id: event.event_id,
                stream_type: request.stream_type.clone(),
                stream_id: request.stream_id.clone(),
                stream_version: first_version + event_index as u64,
                position: 100 + event_index as u64,
            })
            .collect()
    }

    #[test]
    fn a_request_whose_events_are_all_stored_is_a_duplicate_with_the_stored_positions() {
        let request = request("c-1", ExpectedVersion::Exact(0), 2);
        let stored = stored_as(&request, 1);
        match judge(&request, &stored, 7) {
            Verdict::Duplicate(result) => {
                assert_eq!(result.positions, vec![100, 101]);
                assert_eq!(result.stream_version, 2);
                assert!(result.duplicate);
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[test]
    fn a_request_partly_stored_or_stored_elsewhere_reuses_event_ids() {
        let request_one = request("c-1", ExpectedVersion::Any, 2);
        let partly = stored_as(&request_one, 1)[..1].to_vec();
        assert!(matches!(
            judge(&request_one, &partly, 1),
            Verdict::Refused(StoreError::EventIdReused { .. })
        ));
        let mut elsewhere = stored_as(&request_one, 1);
        elsewhere[1].stream_id = "c-2".to_owned();
        assert!(matches!(
            judge(&request_one, &elsewhere, 2),
            Verdict::Refused(StoreError::EventIdReused { .. })
        ));
    }

    #[test]
    fn a_request_with_new_ids_conflicts_only_when_the_version_differs() {
        let exact = request("c-1", ExpectedVersion::Exact(3), 1);
        assert!(matches!(
            judge(&exact, &[], 4),
            Verdict::Refused(StoreError::Conflict { actual: 4, .. })
        ));
        assert!(matches!(judge(&exact, &[], 3), Verdict::Appendable));
        let any = request("c-1", ExpectedVersion::Any, 1);
        assert!(matches!(judge(&any, &[], 9), Verdict::Appendable));
    }

    #[test]
    fn a_multi_stream_append_mixing_duplicates_and_new_requests_is_refused() {
        let stored_request = request("c-1", ExpectedVersion::Exact(0), 1);
        let new_request = request("o-1", ExpectedVersion::Exact(0), 1);
        let verdicts = vec![
            judge(&stored_request, &stored_as(&stored_request, 1), 1),
            judge(&new_request, &[], 0),
        ];
        let requests = [stored_request.clone(), new_request.clone()];
        assert!(matches!(
            decide(&requests, verdicts),
            Decision::Refused(StoreError::EventIdReused { .. })
        ));
        let verdicts = vec![
            judge(&stored_request, &stored_as(&stored_request, 1), 1),
            judge(&new_request, &stored_as(&new_request, 1), 1),
        ];
        assert!(matches!(
            decide(&requests, verdicts),
            Decision::Duplicates(results) if results.len() == 2
        ));
        let verdicts = vec![judge(&stored_request, &[], 0), judge(&new_request, &[], 0)];
        assert!(matches!(decide(&requests, verdicts), Decision::Retry));
    }
}
