//! The cluster metadata state machine: topics, their partitions and configs.
//!
//! Pure: `apply` takes a command and returns what changed, with no I/O, so the controller can run
//! it from its replicated log and unit tests can check every rule directly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_registry::state::{Plan, RegistryCommand, RegistryLimits, RegistryOutcome, RegistryState};
use weir_registry::RegistryError;
use weir_sdk::wire::TopicConfig;
use weir_sdk::{ErrorCode, WireError};

use crate::deployments::{self, Deployment, ModuleCommand};
pub use crate::topic::{unknown_topic, validate_topic_name, Topic, TOPIC_NAME_BYTES_LIMIT};

#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    CreateTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
    },
    DeleteTopic {
        name: String,
    },
    AlterTopic {
        name: String,
        partitions: u32,
        config: TopicConfig,
    },
    /// A schema registry change; see `weir_registry::state`.
    Registry(RegistryCommand),
    /// A module deployment change; see `deployments.rs`.
    Module(ModuleCommand),
    /// Takes the next `count` producer ids for a broker to hand out to idempotent producers,
    /// so ids stay unique across brokers and restarts. `at_least` skips ids below it (ids a
    /// broker finds in use in its storage).
    AllocateProducerIds {
        count: u32,
        #[serde(default)]
        at_least: i64,
    },
}

/// What applying a command changed.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    TopicCreated(Topic),
    TopicDeleted(Topic),
    TopicAltered {
        before: Topic,
        after: Topic,
    },
    Registry(RegistryOutcome),
    /// The deployment after the change (as it was, for a removal).
    Module(Deployment),
    /// Producer ids `first .. first + count` belong to the proposer.
    ProducerIds {
        first: i64,
        count: u32,
    },
}

/// The broker's configured limits. They are checked when a command is proposed
/// ([`State::check_limits`]), never when a committed command is applied: applying an entry
/// depends only on the log, so a restart with lower limits replays the same state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub partitions_per_topic_max: u32,
    pub topics_max: usize,
    pub message_bytes_max: u32,
    /// Versions a registry subject may hold, soft-deleted ones included.
    pub schema_versions_per_subject_max: usize,
    /// Schemas (distinct ids) the registry may hold.
    pub schemas_max: usize,
}

impl Limits {
    pub fn registry(&self) -> RegistryLimits {
        RegistryLimits { versions_per_subject_max: self.schema_versions_per_subject_max, schemas_max: self.schemas_max }
    }
}

/// A command with its costly part worked out by [`State::prepare`].
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A registry command planned against the state (or refused).
    Registry(Result<Plan, RegistryError>),
    Command(Command),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub topics: BTreeMap<String, Topic>,
    pub next_topic_id: u64,
    /// Schemas, subjects and compatibility settings of the schema registry.
    #[serde(default)]
    pub registry: RegistryState,
    /// Module deployments by name.
    #[serde(default)]
    pub modules: BTreeMap<String, Deployment>,
    /// The first producer id not yet handed out in a block; ids are never reused.
    #[serde(default = "first_producer_id")]
    pub next_producer_id: i64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            topics: BTreeMap::new(),
            next_topic_id: 0,
            registry: RegistryState::default(),
            modules: BTreeMap::new(),
            next_producer_id: first_producer_id(),
        }
    }
}

// The controller checks registry commands before it proposes them, so this error is reached
// only if replay differs from the first check.
fn registry_error(e: RegistryError) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, format!("schema registry: {e}"))
}

/// Producer ids below this are never handed out (earlier versions started here too).
pub const FIRST_PRODUCER_ID: i64 = 1000;

fn first_producer_id() -> i64 {
    FIRST_PRODUCER_ID
}

/// Largest block of producer ids one command may take.
pub const PRODUCER_ID_BLOCK_MAX: u32 = 1_000_000;

impl State {
    /// Checks a command against the broker's configured limits, before it is proposed. A
    /// command that passes here and [`State::apply`] on a copy of the state is committed.
    pub fn check_limits(&self, command: &Command, limits: &Limits) -> Result<(), WireError> {
        match command {
            Command::CreateTopic { name, partitions, config } => {
                validate_partitions(*partitions, limits)?;
                validate_config_limits(config, limits)?;
                if !self.topics.contains_key(name) && self.topics.len() >= limits.topics_max {
                    return Err(WireError::new(
                        ErrorCode::LimitReached,
                        format!("the broker holds max.topics = {} topics", limits.topics_max),
                    ));
                }
                Ok(())
            }
            Command::AlterTopic { partitions, config, .. } => {
                validate_partitions(*partitions, limits)?;
                validate_config_limits(config, limits)
            }
            Command::DeleteTopic { .. }
            | Command::Registry(_)
            | Command::Module(_)
            | Command::AllocateProducerIds { .. } => Ok(()),
        }
    }

    /// Works out the costly part of a command reading the state only: a schema registration's
    /// reference resolution, parsing and compatibility checks. The state machine holds its
    /// read lock for this and its write lock only for [`State::apply_prepared`], so readers
    /// (produce, fetch) never wait behind a registration's work.
    pub fn prepare(&self, command: Command) -> Prepared {
        match command {
            Command::Registry(command) => Prepared::Registry(self.registry.plan(command)),
            command => Prepared::Command(command),
        }
    }

    /// Applies a prepared command to the state it was prepared against; the same as
    /// [`State::apply`] of the command.
    pub fn apply_prepared(&mut self, prepared: Prepared) -> Result<Event, WireError> {
        match prepared {
            Prepared::Registry(plan) => {
                plan.and_then(|plan| self.registry.commit(plan)).map(Event::Registry).map_err(registry_error)
            }
            Prepared::Command(command) => self.apply(command),
        }
    }

    /// Applies a committed command. Depends only on the state and the command (never on
    /// configuration), so replaying the same log always rebuilds the same state.
    pub fn apply(&mut self, command: Command) -> Result<Event, WireError> {
        match command {
            Command::CreateTopic { name, partitions, config } => {
                validate_topic_name(&name)?;
                if partitions == 0 {
                    return Err(WireError::new(ErrorCode::InvalidPartitions, "a topic needs at least one partition"));
                }
                validate_config(&config)?;
                if self.topics.contains_key(&name) {
                    return Err(WireError::new(
                        ErrorCode::TopicAlreadyExists,
                        format!("topic {name:?} already exists"),
                    ));
                }
                self.next_topic_id += 1;
                let topic = Topic { id: self.next_topic_id, name: name.clone(), partitions, config };
                self.topics.insert(name, topic.clone());
                Ok(Event::TopicCreated(topic))
            }
            Command::DeleteTopic { name } => {
                let topic = self.topics.remove(&name).ok_or_else(|| unknown_topic(&name))?;
                Ok(Event::TopicDeleted(topic))
            }
            Command::AlterTopic { name, partitions, config } => {
                let topic = self.topics.get_mut(&name).ok_or_else(|| unknown_topic(&name))?;
                if partitions < topic.partitions {
                    return Err(WireError::new(
                        ErrorCode::InvalidPartitions,
                        format!(
                            "partitions can only grow: topic {name:?} has {}, asked for {partitions}",
                            topic.partitions
                        ),
                    ));
                }
                validate_config(&config)?;
                let before = topic.clone();
                topic.partitions = partitions;
                topic.config = config;
                Ok(Event::TopicAltered { before, after: topic.clone() })
            }
            // The controller dry-runs registry commands and proposes only those that apply, so
            // this error is reached only if replay differs from the first apply.
            Command::Registry(command) => self.registry.apply(command).map(Event::Registry).map_err(registry_error),
            Command::Module(command) => deployments::apply(&mut self.modules, &self.topics, command).map(Event::Module),
            Command::AllocateProducerIds { count, at_least } => {
                if count == 0 || count > PRODUCER_ID_BLOCK_MAX {
                    return Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("a producer id block holds 1 to {PRODUCER_ID_BLOCK_MAX} ids, not {count}"),
                    ));
                }
                let first = self.next_producer_id.max(at_least);
                let next = first
                    .checked_add(i64::from(count))
                    .ok_or_else(|| WireError::new(ErrorCode::LimitReached, "producer ids are exhausted"))?;
                self.next_producer_id = next;
                Ok(Event::ProducerIds { first, count })
            }
        }
    }

    pub fn topic(&self, name: &str) -> Result<&Topic, WireError> {
        self.topics.get(name).ok_or_else(|| unknown_topic(name))
    }
}

fn validate_partitions(partitions: u32, limits: &Limits) -> Result<(), WireError> {
    if partitions == 0 || partitions > limits.partitions_per_topic_max {
        return Err(WireError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "partitions = {partitions} is out of range: a topic has 1 to max.partitions.per.topic = {}",
                limits.partitions_per_topic_max
            ),
        ));
    }
    Ok(())
}

/// The broker's limit on a topic's config, checked when a command is proposed.
fn validate_config_limits(config: &TopicConfig, limits: &Limits) -> Result<(), WireError> {
    if config.max_message_bytes > limits.message_bytes_max {
        return Err(WireError::new(
            ErrorCode::InvalidConfig,
            format!(
                "max.message.bytes = {} is out of range: 64 to the broker's message.bytes.max = {}",
                config.max_message_bytes, limits.message_bytes_max
            ),
        ));
    }
    Ok(())
}

/// Rules of a topic config that hold whatever the broker's configuration.
fn validate_config(config: &TopicConfig) -> Result<(), WireError> {
    let invalid = |message: String| Err(WireError::new(ErrorCode::InvalidConfig, message));
    if config.max_message_bytes < 64 {
        return invalid(format!("max.message.bytes = {} is out of range: at least 64", config.max_message_bytes));
    }
    if let weir_sdk::FlushMode::IntervalMs(ms) = config.flush {
        if ms == 0 || ms > 3_600_000 {
            return invalid(format!("flush.interval.ms = {ms} is out of range: 1 to 3600000"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        partitions_per_topic_max: 1000,
        topics_max: 3,
        message_bytes_max: 8 << 20,
        schema_versions_per_subject_max: 1000,
        schemas_max: 1000,
    };

    fn create(name: &str, partitions: u32) -> Command {
        Command::CreateTopic { name: name.into(), partitions, config: TopicConfig::default() }
    }

    /// As the controller does: limits when proposed, then the rules of the state.
    fn check(state: &mut State, command: Command, expected: Result<(), ErrorCode>) {
        let got = state
            .check_limits(&command, &LIMITS)
            .and_then(|()| state.apply(command.clone()))
            .map(|_| ())
            .map_err(|e| e.code);
        assert_eq!(got, expected, "{command:?}");
    }

    #[test]
    fn topic_rules() {
        let mut s = State::default();
        check(&mut s, create("orders", 8), Ok(()));
        check(&mut s, create("orders", 8), Err(ErrorCode::TopicAlreadyExists));
        check(&mut s, create("", 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create(&"x".repeat(250), 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create("bad name", 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create("..", 1), Err(ErrorCode::InvalidTopicName));
        check(&mut s, create("zero", 0), Err(ErrorCode::InvalidPartitions));
        check(&mut s, create("absurd", 1_000_000), Err(ErrorCode::InvalidPartitions));
        let tiny = TopicConfig { max_message_bytes: 1, ..TopicConfig::default() };
        check(
            &mut s,
            Command::CreateTopic { name: "tiny".into(), partitions: 1, config: tiny },
            Err(ErrorCode::InvalidConfig),
        );
        check(
            &mut s,
            Command::AlterTopic { name: "orders".into(), partitions: 4, config: TopicConfig::default() },
            Err(ErrorCode::InvalidPartitions),
        );
        check(
            &mut s,
            Command::AlterTopic { name: "orders".into(), partitions: 12, config: TopicConfig::default() },
            Ok(()),
        );
        check(&mut s, Command::DeleteTopic { name: "nope".into() }, Err(ErrorCode::UnknownTopic));
        check(&mut s, create("a", 1), Ok(()));
        check(&mut s, create("b", 1), Ok(()));
        check(&mut s, create("c", 1), Err(ErrorCode::LimitReached));
        check(&mut s, Command::DeleteTopic { name: "orders".into() }, Ok(()));
        check(&mut s, create("orders", 1), Ok(()));
        assert_eq!(s.topic("orders").unwrap().id, 4, "ids are never reused");
    }

    /// Replaying one committed log into fresh state machines gives the same state, whatever
    /// limits the broker runs with now: a restart with lower limits keeps every topic's id.
    #[test]
    fn replay_depends_only_on_the_log() {
        let big = TopicConfig { max_message_bytes: 4 << 20, ..TopicConfig::default() };
        let log = vec![
            create("a", 8),
            Command::CreateTopic { name: "big".into(), partitions: 2, config: big },
            create("b", 1),
            Command::DeleteTopic { name: "a".into() },
            Command::AllocateProducerIds { count: 1000, at_least: 0 },
            create("c", 600),
            Command::AllocateProducerIds { count: 10, at_least: 5000 },
        ];
        let mut first = State::default();
        for command in &log {
            first.check_limits(command, &LIMITS).unwrap();
            first.apply(command.clone()).unwrap();
        }
        // The same entries, replayed as a restart with far lower limits would.
        let lower = Limits {
            partitions_per_topic_max: 4,
            topics_max: 1,
            message_bytes_max: 1 << 20,
            schema_versions_per_subject_max: 1,
            schemas_max: 1,
        };
        let mut replayed = State::default();
        for command in &log {
            replayed.apply(command.clone()).expect("a committed entry applies on replay");
        }
        assert_eq!(replayed, first);
        assert_eq!(replayed.topic("c").unwrap().id, 4);
        assert_eq!(replayed.topic("big").unwrap().id, 2);
        assert_eq!(replayed.next_producer_id, 5010);
        // The lower limits hold for what is proposed next.
        let err = replayed.check_limits(&create("d", 1), &lower).unwrap_err();
        assert_eq!(err.code, ErrorCode::LimitReached);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut s = State::default();
        let Event::ProducerIds { first: a, count } =
            s.apply(Command::AllocateProducerIds { count: 100, at_least: 0 }).unwrap()
        else {
            panic!("a block")
        };
        assert_eq!((a, count), (1000, 100));
        let Event::ProducerIds { first: b, .. } =
            s.apply(Command::AllocateProducerIds { count: 5, at_least: 0 }).unwrap()
        else {
            panic!("a block")
        };
        assert_eq!(b, 1100);
        let Event::ProducerIds { first: c, .. } =
            s.apply(Command::AllocateProducerIds { count: 5, at_least: 7000 }).unwrap()
        else {
            panic!("a block")
        };
        assert_eq!(c, 7000, "ids found in use are skipped");
        assert!(s.apply(Command::AllocateProducerIds { count: 0, at_least: 0 }).is_err());
    }
}
