//! The health of the parts of a process that run in the background (the Kafka clients): what
//! `/ready` reports besides the stores it checks itself.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// What the background parts of a process report about the systems they use. Several workers
/// may report on one component (the relay and two consumers on `kafka`): the component is ready
/// when every one of them is.
#[derive(Clone, Debug, Default)]
pub struct Components {
    states: Arc<RwLock<ReportedStates>>,
}

/// What each reporter found of each component: by (component, reporter).
type ReportedStates = BTreeMap<(&'static str, String), Result<(), String>>;

impl Components {
    /// Records what `reporter` finds of component `name`: `Ok` when it works, else why not.
    pub fn set(&self, name: &'static str, reporter: &str, state: Result<(), String>) {
        let mut states = match self.states.write() {
            Ok(states) => states,
            Err(poisoned) => poisoned.into_inner(),
        };
        states.insert((name, reporter.to_owned()), state);
    }

    /// Every component's state, by name: the failures of its reporters, if any.
    pub fn snapshot(&self) -> Vec<(&'static str, Result<(), String>)> {
        let states = match self.states.read() {
            Ok(states) => states,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut merged: BTreeMap<&'static str, Result<(), String>> = BTreeMap::new();
        for ((name, reporter), state) in states.iter() {
            let entry = merged.entry(name).or_insert(Ok(()));
            if let Err(error) = state {
                let failure = format!("{reporter}: {error}");
                *entry = match entry {
                    Err(earlier) => Err(format!("{earlier}; {failure}")),
                    Ok(()) => Err(failure),
                };
            }
        }
        merged.into_iter().collect()
    }
}

#[cfg(feature = "kafka")]
impl kafka::Health for Components {
    fn report(&self, reporter: &str, state: Result<(), String>) {
        self.set(kafka::COMPONENT, reporter, state);
    }
}

#[cfg(test)]
mod tests {
    use super::Components;

    #[test]
    fn a_component_is_ready_only_when_every_reporter_finds_it_working() {
        let components = Components::default();
        components.set("kafka", "kafka_relay", Err("broker unreachable".to_owned()));
        components.set("kafka", "mercato-projector", Ok(()));
        assert_eq!(
            components.snapshot(),
            [("kafka", Err("kafka_relay: broker unreachable".to_owned()))]
        );
        components.set("kafka", "kafka_relay", Ok(()));
        assert_eq!(components.snapshot(), [("kafka", Ok(()))]);
    }
}
