//! The registry's state and the commands that change it. Pure and deterministic, so the
//! controller can replicate commands through Raft and every node applies them the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compat::{check_compatibility, Compatibility};
use crate::schema::{inline_avro_references, ParsedSchema, SchemaReference, SchemaType};
use crate::RegistryError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSchema {
    pub schema_type: SchemaType,
    /// The schema text as first registered.
    pub schema: String,
    /// The schema re-serialized from its parsed form (references written out): what
    /// de-duplication compares, with the references.
    pub canonical: String,
    /// Named types this schema takes from other subjects' versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
}

/// How deep references may nest (a reference to a schema with references, ...).
pub const REFERENCE_DEPTH_MAX: usize = 32;
/// Longest subject name a new subject or subject setting may have.
pub const SUBJECT_BYTES_MAX: usize = 1024;
/// How many distinct schemas one schema's references may bring in, counted transitively.
pub const REFERENCES_RESOLVED_MAX: usize = 1_000;
/// Largest schema text with its references written out, in bytes (the API's body limit).
pub const RESOLVED_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A reference list names each type once and each subject version once, as Confluent requires.
fn check_distinct(references: &[SchemaReference]) -> Result<(), RegistryError> {
    if references.len() > REFERENCES_RESOLVED_MAX {
        return Err(RegistryError::InvalidSchema(format!(
            "Invalid schema: {} references; at most {REFERENCES_RESOLVED_MAX} are allowed",
            references.len()
        )));
    }
    let mut names = std::collections::HashSet::new();
    let mut versions = std::collections::HashSet::new();
    for r in references {
        if !names.insert(r.name.as_str()) {
            return Err(RegistryError::InvalidSchema(format!(
                "Invalid schema: reference name {:?} appears more than once",
                r.name
            )));
        }
        if !versions.insert((r.subject.as_str(), r.version)) {
            return Err(RegistryError::InvalidSchema(format!(
                "Invalid schema: subject {} version {} is referenced more than once",
                r.subject, r.version
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub version: u32,
    pub id: u32,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryState {
    pub schemas: BTreeMap<u32, StoredSchema>,
    pub subjects: BTreeMap<String, Vec<SubjectVersion>>,
    pub next_id: u32,
    pub global_compatibility: Option<Compatibility>,
    pub subject_compatibility: BTreeMap<String, Compatibility>,
    pub global_mode: Option<Mode>,
    pub subject_mode: BTreeMap<String, Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "READWRITE")]
    ReadWrite,
    #[serde(rename = "READONLY")]
    ReadOnly,
    #[serde(rename = "IMPORT")]
    Import,
}

impl std::str::FromStr for Mode {
    type Err = RegistryError;
    fn from_str(s: &str) -> Result<Self, RegistryError> {
        match s {
            "READWRITE" => Ok(Self::ReadWrite),
            "READONLY" => Ok(Self::ReadOnly),
            "IMPORT" => Ok(Self::Import),
            other => Err(RegistryError::InvalidMode(format!(
                "Invalid mode {other:?}: expected READWRITE, READONLY or IMPORT"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryCommand {
    Register {
        subject: String,
        schema_type: SchemaType,
        schema: String,
        #[serde(default)]
        references: Vec<SchemaReference>,
    },
    DeleteVersion {
        subject: String,
        version: u32,
        permanent: bool,
    },
    DeleteSubject {
        subject: String,
        permanent: bool,
    },
    SetCompatibility {
        subject: Option<String>,
        level: Compatibility,
    },
    DeleteCompatibility {
        subject: String,
    },
    SetMode {
        subject: Option<String>,
        mode: Mode,
    },
}

/// A command worked out by [`RegistryState::plan`], for [`RegistryState::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The schema is already this live version of the subject: nothing changes.
    Existing { id: u32, version: u32 },
    /// A new version of `subject` holding schema `id`; with `schema` when the id is new.
    NewVersion { subject: String, id: u32, schema: Option<StoredSchema> },
    /// Any other command: checked and applied at commit, in time linear in the state.
    Other(RegistryCommand),
}

/// What the broker lets the registry hold, checked when a command is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    pub versions_per_subject_max: usize,
    pub schemas_max: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self { versions_per_subject_max: 1_000, schemas_max: 100_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryOutcome {
    Registered { id: u32, version: u32 },
    DeletedVersions(Vec<u32>),
    Compatibility(Compatibility),
    Mode(Mode),
}

impl RegistryState {
    pub fn compatibility(&self, subject: &str) -> Compatibility {
        self.subject_compatibility
            .get(subject)
            .copied()
            .or(self.global_compatibility)
            .unwrap_or(Compatibility::Backward)
    }

    pub fn mode(&self, subject: Option<&str>) -> Mode {
        subject.and_then(|s| self.subject_mode.get(s).copied()).or(self.global_mode).unwrap_or(Mode::ReadWrite)
    }

    /// Live (not soft-deleted) versions of a subject, oldest first.
    pub fn live_versions(&self, subject: &str) -> Vec<SubjectVersion> {
        self.subjects.get(subject).map(|v| v.iter().filter(|v| !v.deleted).copied().collect()).unwrap_or_default()
    }

    pub fn subject_exists(&self, subject: &str, include_deleted: bool) -> bool {
        self.subjects.get(subject).is_some_and(|v| include_deleted || v.iter().any(|v| !v.deleted))
    }

    /// The id already given to a schema with this canonical form and references, if any.
    pub fn id_of(&self, schema_type: SchemaType, canonical: &str, references: &[SchemaReference]) -> Option<u32> {
        self.schemas
            .iter()
            .find(|(_, s)| s.schema_type == schema_type && s.canonical == canonical && s.references == references)
            .map(|(id, _)| *id)
    }

    /// The live version of `subject` holding this canonical schema.
    pub fn find_in_subject(
        &self,
        subject: &str,
        schema_type: SchemaType,
        canonical: &str,
        references: &[SchemaReference],
    ) -> Option<SubjectVersion> {
        let id = self.id_of(schema_type, canonical, references)?;
        self.live_versions(subject).into_iter().find(|v| v.id == id)
    }

    /// The schema text with its references written out (Avro), so it stands on its own.
    ///
    /// Every schema the references bring in, transitively, is looked up once (a diamond of
    /// references costs its distinct schemas, not its paths) and written out once. A reference
    /// list may not name one type or one subject version twice; at most
    /// [`REFERENCES_RESOLVED_MAX`] schemas, [`REFERENCE_DEPTH_MAX`] levels and
    /// [`RESOLVED_BYTES_MAX`] bytes of schema text are resolved.
    pub fn resolve(
        &self,
        schema_type: SchemaType,
        text: &str,
        references: &[SchemaReference],
    ) -> Result<String, RegistryError> {
        if references.is_empty() {
            return Ok(text.to_owned());
        }
        if schema_type != SchemaType::Avro {
            return Err(RegistryError::InvalidSchema(
                "Invalid schema: this registry supports references between AVRO schemas only".into(),
            ));
        }
        check_distinct(references)?;
        let mut seen = std::collections::HashSet::new();
        let mut definitions = Vec::new();
        let mut bytes = text.len();
        let mut level: Vec<&SchemaReference> = references.iter().collect();
        let mut depth = 0;
        while !level.is_empty() {
            if depth >= REFERENCE_DEPTH_MAX {
                return Err(RegistryError::InvalidSchema(format!(
                    "Invalid schema: references nest deeper than {REFERENCE_DEPTH_MAX} levels"
                )));
            }
            let mut next = Vec::new();
            for r in level {
                if !seen.insert((r.subject.as_str(), r.version)) {
                    continue;
                }
                if seen.len() > REFERENCES_RESOLVED_MAX {
                    return Err(RegistryError::InvalidSchema(format!(
                        "Invalid schema: its references bring in more than {REFERENCES_RESOLVED_MAX} schemas"
                    )));
                }
                let stored = self.version_schema(&r.subject, r.version).map_err(|_| {
                    RegistryError::InvalidSchema(format!(
                        "Invalid schema: reference {:?} names subject {} version {}, which is not registered",
                        r.name, r.subject, r.version
                    ))
                })?;
                if stored.schema_type != SchemaType::Avro {
                    return Err(RegistryError::InvalidSchema(format!(
                        "Invalid schema: reference {:?} names subject {} version {}, which is not an AVRO schema",
                        r.name, r.subject, r.version
                    )));
                }
                bytes += stored.schema.len();
                if bytes > RESOLVED_BYTES_MAX {
                    return Err(RegistryError::InvalidSchema(format!(
                        "Invalid schema: with its references written out it exceeds {RESOLVED_BYTES_MAX} bytes"
                    )));
                }
                definitions.push(stored.schema.as_str());
                next.extend(stored.references.iter());
            }
            level = next;
            depth += 1;
        }
        inline_avro_references(text, &definitions, RESOLVED_BYTES_MAX)
    }

    /// A stored schema parsed with its references.
    pub fn parse_stored(&self, stored: &StoredSchema) -> Result<ParsedSchema, RegistryError> {
        ParsedSchema::parse(stored.schema_type, &self.resolve(stored.schema_type, &stored.schema, &stored.references)?)
    }

    /// A live schema version that references `subject` (at `version`, or at any version).
    pub fn referenced_by(&self, subject: &str, version: Option<u32>) -> Option<(String, u32)> {
        self.subjects.iter().find_map(|(s, versions)| {
            versions.iter().filter(|v| !v.deleted).find_map(|v| {
                let stored = self.schemas.get(&v.id)?;
                stored
                    .references
                    .iter()
                    .any(|r| r.subject == subject && version.is_none_or(|version| r.version == version))
                    .then(|| (s.clone(), v.version))
            })
        })
    }

    /// Checks a candidate against the subject's versions as its compatibility level says.
    pub fn check(
        &self,
        subject: &str,
        candidate: &ParsedSchema,
        against: Option<u32>,
    ) -> Result<Vec<String>, RegistryError> {
        let live = self.live_versions(subject);
        let level = self.compatibility(subject);
        let existing: Vec<&StoredSchema> = match against {
            Some(version) => vec![self.version_schema(subject, version)?],
            None => {
                let chosen: Vec<SubjectVersion> =
                    if level.is_transitive() { live } else { live.last().copied().into_iter().collect() };
                chosen.iter().filter_map(|v| self.schemas.get(&v.id)).collect()
            }
        };
        let mut problems = Vec::new();
        for stored in existing {
            let previous = self.parse_stored(stored)?;
            problems.extend(check_compatibility(level, candidate, &previous));
        }
        Ok(problems)
    }

    pub fn version_schema(&self, subject: &str, version: u32) -> Result<&StoredSchema, RegistryError> {
        let versions = self
            .subjects
            .get(subject)
            .filter(|v| v.iter().any(|v| !v.deleted))
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let v = versions
            .iter()
            .find(|v| v.version == version && !v.deleted)
            .ok_or(RegistryError::VersionNotFound(version))?;
        self.schemas.get(&v.id).ok_or(RegistryError::SchemaNotFound(v.id))
    }

    /// Applies a command: [`RegistryState::plan`] then [`RegistryState::commit`].
    pub fn apply(&mut self, command: RegistryCommand) -> Result<RegistryOutcome, RegistryError> {
        let plan = self.plan(command)?;
        self.commit(plan)
    }

    /// Works a command out against the state without changing it: resolving references,
    /// parsing and compatibility checks happen here, so a caller may hold only a read lock
    /// while they run.
    pub fn plan(&self, command: RegistryCommand) -> Result<Plan, RegistryError> {
        let RegistryCommand::Register { subject, schema_type, schema, references } = command else {
            self.check_other(&command)?;
            return Ok(Plan::Other(command));
        };
        if self.mode(Some(&subject)) == Mode::ReadOnly {
            return Err(RegistryError::OperationNotPermitted(format!("Subject {subject} is in read-only mode")));
        }
        let parsed = ParsedSchema::parse(schema_type, &self.resolve(schema_type, &schema, &references)?)?;
        if let Some(existing) = self.find_in_subject(&subject, schema_type, &parsed.canonical, &references) {
            return Ok(Plan::Existing { id: existing.id, version: existing.version });
        }
        let problems = self.check(&subject, &parsed, None)?;
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible(problems));
        }
        Ok(match self.id_of(schema_type, &parsed.canonical, &references) {
            Some(id) => Plan::NewVersion { subject, id, schema: None },
            None => Plan::NewVersion {
                subject,
                id: self.next_id + 1,
                schema: Some(StoredSchema { schema_type, schema, canonical: parsed.canonical, references }),
            },
        })
    }

    /// The broker's limits on what a plan would add: versions per subject (soft-deleted ones
    /// count until permanently deleted) and schemas in all.
    pub fn check_limits(&self, plan: &Plan, limits: &RegistryLimits) -> Result<(), RegistryError> {
        // A subject a command would add: by name, bounded in length and, with the subjects that
        // hold only a compatibility or mode setting, in number (schemas.max bounds both).
        let new_subject = match plan {
            Plan::NewVersion { subject, .. } if !self.subjects.contains_key(subject) => Some(subject),
            Plan::Other(RegistryCommand::SetCompatibility { subject: Some(s), .. })
                if !self.subject_compatibility.contains_key(s) =>
            {
                Some(s)
            }
            Plan::Other(RegistryCommand::SetMode { subject: Some(s), .. }) if !self.subject_mode.contains_key(s) => {
                Some(s)
            }
            _ => None,
        };
        if let Some(subject) = new_subject {
            if subject.len() > SUBJECT_BYTES_MAX {
                return Err(RegistryError::LimitReached(format!(
                    "A subject name is at most {SUBJECT_BYTES_MAX} bytes; this one has {}",
                    subject.len()
                )));
            }
            let held = self.subjects.len() + self.subject_compatibility.len() + self.subject_mode.len();
            if held >= limits.schemas_max {
                return Err(RegistryError::LimitReached(format!(
                    "The registry holds {held} subjects and subject settings; schemas.max ({}) bounds them too",
                    limits.schemas_max
                )));
            }
        }
        let Plan::NewVersion { subject, schema, .. } = plan else {
            return Ok(());
        };
        let versions = self.subjects.get(subject).map_or(0, Vec::len);
        if versions >= limits.versions_per_subject_max {
            return Err(RegistryError::LimitReached(format!(
                "Subject {subject} holds {versions} versions (soft-deleted ones count until permanently deleted); schema.versions.per.subject.max is {}",
                limits.versions_per_subject_max
            )));
        }
        if schema.is_some() && self.schemas.len() >= limits.schemas_max {
            return Err(RegistryError::LimitReached(format!(
                "The registry holds {} schemas; schemas.max is {}",
                self.schemas.len(),
                limits.schemas_max
            )));
        }
        Ok(())
    }

    /// Commits a plan made against this very state (nothing applied in between).
    pub fn commit(&mut self, plan: Plan) -> Result<RegistryOutcome, RegistryError> {
        let command = match plan {
            Plan::Existing { id, version } => return Ok(RegistryOutcome::Registered { id, version }),
            Plan::NewVersion { subject, id, schema } => {
                if let Some(schema) = schema {
                    if id != self.next_id + 1 {
                        return Err(RegistryError::Store(format!(
                            "a registration planned schema id {id} but the next id is {}",
                            self.next_id + 1
                        )));
                    }
                    self.next_id = id;
                    self.schemas.insert(id, schema);
                } else if !self.schemas.contains_key(&id) {
                    return Err(RegistryError::SchemaNotFound(id));
                }
                let versions = self.subjects.entry(subject).or_default();
                let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
                versions.push(SubjectVersion { version, id, deleted: false });
                return Ok(RegistryOutcome::Registered { id, version });
            }
            Plan::Other(command) => command,
        };
        self.check_other(&command)?;
        match command {
            RegistryCommand::Register { .. } => {
                Err(RegistryError::Store("a registration reached commit without a plan".into()))
            }
            RegistryCommand::DeleteVersion { subject, version, permanent } => {
                let versions =
                    self.subjects.get_mut(&subject).ok_or(RegistryError::SubjectNotFound(subject.clone()))?;
                let position = versions
                    .iter()
                    .position(|v| v.version == version)
                    .ok_or(RegistryError::VersionNotFound(version))?;
                if permanent {
                    versions.remove(position);
                    if versions.is_empty() {
                        self.subjects.remove(&subject);
                    }
                } else {
                    versions[position].deleted = true;
                }
                Ok(RegistryOutcome::DeletedVersions(vec![version]))
            }
            RegistryCommand::DeleteSubject { subject, permanent } => {
                let versions =
                    self.subjects.get_mut(&subject).ok_or(RegistryError::SubjectNotFound(subject.clone()))?;
                let deleted: Vec<u32> = if permanent {
                    let deleted = versions.iter().map(|v| v.version).collect();
                    self.subjects.remove(&subject);
                    self.subject_compatibility.remove(&subject);
                    self.subject_mode.remove(&subject);
                    deleted
                } else {
                    let deleted = versions.iter().filter(|v| !v.deleted).map(|v| v.version).collect();
                    versions.iter_mut().for_each(|v| v.deleted = true);
                    deleted
                };
                Ok(RegistryOutcome::DeletedVersions(deleted))
            }
            RegistryCommand::SetCompatibility { subject, level } => {
                match subject {
                    Some(s) => {
                        self.subject_compatibility.insert(s, level);
                    }
                    None => self.global_compatibility = Some(level),
                }
                Ok(RegistryOutcome::Compatibility(level))
            }
            RegistryCommand::DeleteCompatibility { subject } => {
                let level = self
                    .subject_compatibility
                    .remove(&subject)
                    .ok_or_else(|| RegistryError::SubjectNotFound(subject.clone()))?;
                Ok(RegistryOutcome::Compatibility(level))
            }
            RegistryCommand::SetMode { subject, mode } => {
                match subject {
                    Some(s) => {
                        self.subject_mode.insert(s, mode);
                    }
                    None => self.global_mode = Some(mode),
                }
                Ok(RegistryOutcome::Mode(mode))
            }
        }
    }

    /// Whether a command other than a registration applies to this state, and if not why;
    /// reads only, in time linear in the state.
    fn check_other(&self, command: &RegistryCommand) -> Result<(), RegistryError> {
        match command {
            RegistryCommand::DeleteVersion { subject, version, permanent } => {
                let versions =
                    self.subjects.get(subject).ok_or_else(|| RegistryError::SubjectNotFound(subject.clone()))?;
                let found =
                    versions.iter().find(|v| v.version == *version).ok_or(RegistryError::VersionNotFound(*version))?;
                match (permanent, found.deleted) {
                    (true, false) => Err(RegistryError::VersionNotSoftDeleted(subject.clone(), *version)),
                    (false, true) => Err(RegistryError::VersionSoftDeleted(subject.clone(), *version)),
                    (true, true) => Ok(()),
                    (false, false) => match self.referenced_by(subject, Some(*version)) {
                        Some((by, by_version)) => Err(RegistryError::ReferenceExists(format!(
                            "One or more references exist to the schema {{subject={subject},version={version}}}: {by} version {by_version}"
                        ))),
                        None => Ok(()),
                    },
                }
            }
            RegistryCommand::DeleteSubject { subject, permanent } => {
                let versions =
                    self.subjects.get(subject).ok_or_else(|| RegistryError::SubjectNotFound(subject.clone()))?;
                let all_deleted = versions.iter().all(|v| v.deleted);
                match (permanent, all_deleted) {
                    (true, false) => Err(RegistryError::SubjectNotSoftDeleted(subject.clone())),
                    (false, true) => Err(RegistryError::SubjectSoftDeleted(subject.clone())),
                    (true, true) => Ok(()),
                    (false, false) => match self.referenced_by(subject, None) {
                        Some((by, by_version)) => Err(RegistryError::ReferenceExists(format!(
                            "One or more references exist to the schema {{subject={subject}}}: {by} version {by_version}"
                        ))),
                        None => Ok(()),
                    },
                }
            }
            RegistryCommand::DeleteCompatibility { subject } if !self.subject_compatibility.contains_key(subject) => {
                Err(RegistryError::SubjectNotFound(subject.clone()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"User","namespace":"weir.test","fields":[{fields}]}}"#)
    }

    const NAME: &str = r#"{"name":"name","type":"string"}"#;
    const AGE_DEFAULT: &str = r#"{"name":"age","type":"int","default":0}"#;
    const AGE: &str = r#"{"name":"age","type":"int"}"#;

    fn a() -> String {
        record(NAME)
    }
    fn b() -> String {
        record(&format!("{NAME},{AGE_DEFAULT}"))
    }
    fn c() -> String {
        record(&format!("{NAME},{AGE}"))
    }
    fn name_int() -> String {
        record(r#"{"name":"name","type":"int"}"#)
    }
    fn int_n() -> String {
        record(r#"{"name":"n","type":"int"}"#)
    }
    fn long_n() -> String {
        record(r#"{"name":"n","type":"long"}"#)
    }
    fn enum2() -> String {
        r#"{"type":"enum","name":"Color","symbols":["RED","GREEN"]}"#.into()
    }
    fn enum3() -> String {
        r#"{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}"#.into()
    }
    fn aliased() -> String {
        r#"{"type":"record","name":"User","namespace":"weir.test","fields":[{"name":"full_name","type":"string","aliases":["name"]}]}"#.into()
    }
    fn union_name() -> String {
        record(r#"{"name":"name","type":["null","string"],"default":null}"#)
    }

    /// Registers `versions` in order under `level` and checks whether the last one is accepted.
    fn check(level: &str, versions: &[String], compatible: bool) {
        let mut state = RegistryState::default();
        state
            .apply(RegistryCommand::SetCompatibility { subject: Some("s".into()), level: level.parse().unwrap() })
            .unwrap();
        let (last, earlier) = versions.split_last().unwrap();
        for schema in earlier {
            // Earlier versions go in under NONE, so the case tests only the last step.
            let saved = state.subject_compatibility.insert("s".into(), Compatibility::None);
            register_schema(&mut state, "s", SchemaType::Avro, schema.clone()).unwrap();
            state.subject_compatibility.insert("s".into(), saved.unwrap());
        }
        let outcome = register_schema(&mut state, "s", SchemaType::Avro, last.clone());
        match (compatible, &outcome) {
            (true, Ok(_)) => {}
            (false, Err(RegistryError::Incompatible(_))) => {}
            _ => panic!("{level}: {versions:?} expected compatible={compatible}, got {outcome:?}"),
        }
    }

    #[test]
    fn avro_compatibility_table() {
        check("NONE", &[a(), name_int()], true);
        check("BACKWARD", &[a(), b()], true); // new field with a default
        check("BACKWARD", &[a(), c()], false); // new field without a default
        check("BACKWARD", &[b(), a()], true); // removed field
        check("BACKWARD", &[a(), name_int()], false); // type change
        check("BACKWARD", &[int_n(), long_n()], true); // int promotes to long
        check("BACKWARD", &[long_n(), int_n()], false);
        check("BACKWARD", &[enum2(), enum3()], true); // reader knows more symbols
        check("BACKWARD", &[a(), union_name()], true); // string widened to a union
        check("BACKWARD", &[a(), aliased()], true); // renamed, with the old name as alias
        check("FORWARD", &[a(), c()], true); // old readers ignore the new field
        check("FORWARD", &[c(), a()], false); // old reader needs the removed field
        check("FORWARD", &[b(), a()], true); // old reader has a default for it
        check("FORWARD", &[int_n(), long_n()], false);
        check("FORWARD", &[enum2(), enum3()], false); // old reader meets an unknown symbol
        check("FULL", &[a(), b()], true);
        check("FULL", &[a(), c()], false);
        check("FULL", &[b(), a()], true);
        // Transitive: the newest must fit every version, not only the latest.
        check("BACKWARD", &[a(), b(), c()], true); // c reads b's data: age present
        check("BACKWARD_TRANSITIVE", &[a(), b(), c()], false); // c cannot read a's data
        check("FORWARD", &[c(), b(), a()], true);
        check("FORWARD_TRANSITIVE", &[c(), b(), a()], false);
        check("FULL", &[a(), b(), c()], true); // only against b: both directions hold
        check("FULL_TRANSITIVE", &[a(), b(), c()], false); // c cannot read a's data
        check(
            "FULL_TRANSITIVE",
            &[
                a(),
                b(),
                record(&format!("{NAME},{AGE_DEFAULT},{}", r#"{"name":"email","type":"string","default":""}"#)),
            ],
            true,
        );
    }

    /// As `check`, for JSON Schema subjects.
    fn check_json(level: &str, versions: &[&str], compatible: bool) {
        let mut state = RegistryState::default();
        state
            .apply(RegistryCommand::SetCompatibility { subject: Some("j".into()), level: Compatibility::None })
            .unwrap();
        let (last, earlier) = versions.split_last().unwrap();
        for schema in earlier {
            register_schema(&mut state, "j", SchemaType::Json, schema.to_string()).unwrap();
        }
        state
            .apply(RegistryCommand::SetCompatibility { subject: Some("j".into()), level: level.parse().unwrap() })
            .unwrap();
        let outcome = register_schema(&mut state, "j", SchemaType::Json, last.to_string());
        match (compatible, &outcome) {
            (true, Ok(_)) => {}
            (false, Err(RegistryError::Incompatible(_))) => {}
            _ => panic!("{level}: {versions:?} expected compatible={compatible}, got {outcome:?}"),
        }
    }

    #[test]
    fn json_schema_compatibility_table() {
        let open = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
        let optional_added =
            r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"}},"required":["id"]}"#;
        let required_added = r#"{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"}},"required":["id","name"]}"#;
        let widened = r#"{"type":"object","properties":{"id":{"type":"number"}},"required":["id"]}"#;
        let retyped = r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}"#;
        let closed = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"],"additionalProperties":false}"#;
        let small_enum = r#"{"type":"string","enum":["a","b"]}"#;
        let big_enum = r#"{"type":"string","enum":["a","b","c"]}"#;
        check_json("BACKWARD", &[open, optional_added], true);
        check_json("BACKWARD", &[open, required_added], false);
        check_json("BACKWARD", &[open, widened], true);
        check_json("FORWARD", &[open, widened], false);
        check_json("BACKWARD", &[open, retyped], false);
        check_json("BACKWARD", &[open, closed], false);
        check_json("BACKWARD", &[small_enum, big_enum], true);
        check_json("FORWARD", &[small_enum, big_enum], false);
        check_json("FULL", &[open, optional_added], true);
        check_json("BACKWARD_TRANSITIVE", &[open, optional_added, required_added], false);
        check_json("NONE", &[open, retyped], true);
        let mut state = RegistryState::default();
        let bad = register_schema(&mut state, "j", SchemaType::Json, r#"{"type": 12}"#);
        assert!(matches!(bad, Err(RegistryError::InvalidSchema(_))), "{bad:?}");
    }

    #[test]
    fn ids_are_shared_across_subjects_and_deletes_follow_confluent_rules() {
        let mut s = RegistryState::default();
        let register = |s: &mut RegistryState, subject: &str, schema: String| {
            register_schema(s, subject, SchemaType::Avro, schema)
        };
        assert_eq!(register(&mut s, "x-value", a()), Ok(RegistryOutcome::Registered { id: 1, version: 1 }));
        // The same schema, written differently, under another subject keeps its id.
        let spaced = a().replace(',', " , ");
        assert_eq!(register(&mut s, "y-value", spaced), Ok(RegistryOutcome::Registered { id: 1, version: 1 }));
        assert_eq!(
            register(&mut s, "x-value", a()),
            Ok(RegistryOutcome::Registered { id: 1, version: 1 }),
            "re-registering is idempotent"
        );
        assert_eq!(register(&mut s, "x-value", b()), Ok(RegistryOutcome::Registered { id: 2, version: 2 }));
        assert!(matches!(register(&mut s, "x-value", "{not avro".into()), Err(RegistryError::InvalidSchema(_))));
        let hard = RegistryCommand::DeleteVersion { subject: "x-value".into(), version: 2, permanent: true };
        assert_eq!(s.apply(hard.clone()), Err(RegistryError::VersionNotSoftDeleted("x-value".into(), 2)));
        s.apply(RegistryCommand::DeleteVersion { subject: "x-value".into(), version: 2, permanent: false }).unwrap();
        assert_eq!(s.apply(hard), Ok(RegistryOutcome::DeletedVersions(vec![2])));
        assert_eq!(
            s.apply(RegistryCommand::DeleteSubject { subject: "y-value".into(), permanent: false }),
            Ok(RegistryOutcome::DeletedVersions(vec![1]))
        );
        assert!(!s.subject_exists("y-value", false));
        assert_eq!(
            s.apply(RegistryCommand::DeleteSubject { subject: "nope".into(), permanent: false }),
            Err(RegistryError::SubjectNotFound("nope".into()))
        );
    }

    fn register_schema(
        state: &mut RegistryState,
        subject: &str,
        schema_type: SchemaType,
        schema: impl Into<String>,
    ) -> Result<RegistryOutcome, RegistryError> {
        let schema = schema.into();
        state.apply(RegistryCommand::Register { subject: subject.into(), schema_type, schema, references: Vec::new() })
    }

    fn register_with(
        state: &mut RegistryState,
        subject: &str,
        schema: &str,
        references: Vec<SchemaReference>,
    ) -> Result<RegistryOutcome, RegistryError> {
        let schema = schema.into();
        state.apply(RegistryCommand::Register {
            subject: subject.into(),
            schema_type: SchemaType::Avro,
            schema,
            references,
        })
    }

    fn address_ref(version: u32) -> Vec<SchemaReference> {
        vec![SchemaReference { name: "weir.test.Address".into(), subject: "address".into(), version }]
    }

    const ADDRESS: &str =
        r#"{"type":"record","name":"Address","namespace":"weir.test","fields":[{"name":"city","type":"string"}]}"#;
    const USER: &str = r#"{"type":"record","name":"User","namespace":"weir.test","fields":[{"name":"home","type":"weir.test.Address"},{"name":"work","type":["null","Address"],"default":null}]}"#;

    #[test]
    fn avro_references_resolve_evolve_and_guard_deletion() {
        let mut state = RegistryState::default();
        assert_eq!(
            register_with(&mut state, "address", ADDRESS, vec![]),
            Ok(RegistryOutcome::Registered { id: 1, version: 1 })
        );
        assert!(matches!(register_with(&mut state, "user", USER, vec![]), Err(RegistryError::InvalidSchema(_))));
        let missing = register_with(&mut state, "user", USER, address_ref(9)).unwrap_err().to_string();
        assert!(missing.contains("names subject address version 9, which is not registered"), "{missing}");
        assert_eq!(
            register_with(&mut state, "user", USER, address_ref(1)),
            Ok(RegistryOutcome::Registered { id: 2, version: 1 })
        );
        assert_eq!(state.schemas[&2].references, address_ref(1));
        // The resolved schema has the referenced record in place, once.
        let resolved = state.parse_stored(&state.schemas[&2]).unwrap();
        assert_eq!(resolved.canonical.matches(r#""name":"Address""#).count(), 1, "{}", resolved.canonical);
        // Registering the same again finds it; the same text with other references is another schema.
        assert_eq!(
            register_with(&mut state, "user", USER, address_ref(1)),
            Ok(RegistryOutcome::Registered { id: 2, version: 1 })
        );
        // A referenced version cannot be deleted while a live schema uses it.
        let delete = RegistryCommand::DeleteVersion { subject: "address".into(), version: 1, permanent: false };
        assert!(matches!(state.apply(delete), Err(RegistryError::ReferenceExists(_))));
        let delete = RegistryCommand::DeleteSubject { subject: "address".into(), permanent: false };
        assert_eq!(state.apply(delete).unwrap_err().status_and_code(), (422, 42206));
        // Address v2 adds a field with a default: User may move to it (BACKWARD).
        let address2 = ADDRESS.replace(
            r#"{"name":"city","type":"string"}"#,
            r#"{"name":"city","type":"string"},{"name":"zip","type":"string","default":""}"#,
        );
        register_with(&mut state, "address", &address2, vec![]).unwrap();
        assert_eq!(
            register_with(&mut state, "user", USER, address_ref(2)),
            Ok(RegistryOutcome::Registered { id: 4, version: 2 })
        );
        // Address v3 (under NONE) adds a required field: a User on it is incompatible with User v2.
        state.subject_compatibility.insert("address".into(), Compatibility::None);
        let address3 = ADDRESS.replace(
            r#"{"name":"city","type":"string"}"#,
            r#"{"name":"city","type":"string"},{"name":"floor","type":"int"}"#,
        );
        register_with(&mut state, "address", &address3, vec![]).unwrap();
        assert!(matches!(register_with(&mut state, "user", USER, address_ref(3)), Err(RegistryError::Incompatible(_))));
    }

    fn reference(name: &str, subject: &str) -> SchemaReference {
        SchemaReference { name: name.into(), subject: subject.into(), version: 1 }
    }

    fn named(name: &str, fields: &[(&str, &str)]) -> String {
        let fields: Vec<String> = fields.iter().map(|(f, t)| format!(r#"{{"name":"{f}","type":"{t}"}}"#)).collect();
        format!(r#"{{"type":"record","name":"{name}","fields":[{}]}}"#, fields.join(","))
    }

    /// Level i's record has two fields whose types (Xi, Yi) each hold level i+1's record: a
    /// resolution that followed paths instead of schemas would do 2^levels lookups.
    fn diamonds(state: &mut RegistryState, levels: usize) -> Result<RegistryOutcome, RegistryError> {
        let mut last =
            register_with(state, &format!("s{levels}"), &named(&format!("S{levels}"), &[("n", "int")]), vec![])?;
        for i in (0..levels).rev() {
            let below = format!("S{}", i + 1);
            for side in ["X", "Y"] {
                register_with(
                    state,
                    &format!("{side}{i}"),
                    &named(&format!("{side}{i}"), &[("v", &below)]),
                    vec![reference(&below, &format!("s{}", i + 1))],
                )?;
            }
            last = register_with(
                state,
                &format!("s{i}"),
                &named(&format!("S{i}"), &[("x", &format!("X{i}")), ("y", &format!("Y{i}"))]),
                vec![reference(&format!("X{i}"), &format!("X{i}")), reference(&format!("Y{i}"), &format!("Y{i}"))],
            )?;
        }
        Ok(last)
    }

    #[test]
    fn references_resolve_each_schema_once_and_refuse_duplicates_and_excess() {
        let mut state = RegistryState::default();
        // 15 diamond levels: 2^15 paths to the bottom, 46 distinct schemas. Each is written
        // out once, so the top one parses (a named type may be defined only once in Avro).
        let top = diamonds(&mut state, 15).expect("a diamond of references registers");
        let RegistryOutcome::Registered { id, .. } = top else { panic!("{top:?}") };
        let resolved = state.parse_stored(&state.schemas[&id]).unwrap();
        assert_eq!(resolved.canonical.matches(r#""name":"S15""#).count(), 1);
        // The same reference twice, by name or by subject version, is refused.
        let twice = vec![reference("S1", "s1"), reference("S1", "s1")];
        let e = register_with(&mut state, "dup", &named("D", &[("a", "S1")]), twice).unwrap_err().to_string();
        assert!(e.contains("appears more than once"), "{e}");
        let twice = vec![reference("S1", "s1"), reference("Other", "s1")];
        let e = register_with(&mut state, "dup", &named("D", &[("a", "S1")]), twice).unwrap_err().to_string();
        assert!(e.contains("subject s1 version 1 is referenced more than once"), "{e}");
        // Text past the resolved-size limit is refused, naming the limit.
        let mut state = RegistryState::default();
        let big = format!(
            r#"{{"type":"record","name":"Big","fields":[{{"name":"a","type":"int","doc":"{}"}}]}}"#,
            "x".repeat(RESOLVED_BYTES_MAX / 2 + 1)
        );
        register_with(&mut state, "big", &big, vec![]).unwrap();
        let e = register_with(&mut state, "two", &big.replace("Big", "Big2"), vec![reference("Big", "big")])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("exceeds {RESOLVED_BYTES_MAX} bytes")), "{e}");
    }

    #[test]
    fn plans_commit_as_apply_does_and_limits_count_versions_and_schemas() {
        let mut applied = RegistryState::default();
        let mut committed = RegistryState::default();
        let commands = [a(), b(), a(), c()].map(|schema| RegistryCommand::Register {
            subject: "s".into(),
            schema_type: SchemaType::Avro,
            schema,
            references: vec![],
        });
        for command in commands {
            let outcome = applied.apply(command.clone());
            let plan = committed.plan(command);
            assert_eq!(plan.and_then(|p| committed.commit(p)), outcome);
        }
        assert_eq!(applied, committed);
        let limits = RegistryLimits { versions_per_subject_max: 2, schemas_max: 2 };
        let register = |schema: String, subject: &str| RegistryCommand::Register {
            subject: subject.into(),
            schema_type: SchemaType::Avro,
            schema,
            references: vec![],
        };
        // Re-registering an existing version is always allowed; a third version is not.
        let existing = applied.plan(register(a(), "s")).unwrap();
        assert_eq!(applied.check_limits(&existing, &limits), Ok(()));
        let third = applied.plan(register(union_name(), "s")).unwrap();
        let e = applied.check_limits(&third, &limits).unwrap_err();
        assert_eq!(e.status_and_code(), (422, 42290));
        assert!(e.to_string().contains("schema.versions.per.subject.max is 2"), "{e}");
        // An existing schema under a new subject adds no schema; a new one is past schemas.max.
        let roomy = RegistryLimits { schemas_max: 3, ..limits };
        assert_eq!(applied.check_limits(&applied.plan(register(a(), "t")).unwrap(), &roomy), Ok(()));
        let e = applied.check_limits(&applied.plan(register(int_n(), "t")).unwrap(), &limits).unwrap_err();
        assert!(e.to_string().contains("schemas.max is 2"), "{e}");
        // New subjects, and settings for subjects, are bounded in name length and in number.
        let e = applied.check_limits(&applied.plan(register(a(), &"x".repeat(2000))).unwrap(), &roomy).unwrap_err();
        assert!(e.to_string().contains("at most 1024 bytes"), "{e}");
        let setting = |s: &str| Plan::Other(RegistryCommand::SetMode { subject: Some(s.into()), mode: Mode::ReadOnly });
        assert_eq!(applied.check_limits(&setting("u"), &roomy), Ok(()));
        let tight = RegistryLimits { schemas_max: 1, ..limits };
        let e = applied.check_limits(&setting("u"), &tight).unwrap_err();
        assert!(e.to_string().contains("bounds them too"), "{e}");
    }
}
