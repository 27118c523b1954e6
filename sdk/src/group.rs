//! A consumer that is a member of a consumer group: the broker coordinates membership with
//! Kafka's classic group protocol, and this client speaks Kafka's consumer protocol (range
//! assignor, subscription and assignment encoded as Kafka encodes them), so Weir and Kafka
//! consumers can share one group.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::batch::ConsumedRecord;
use crate::client::{Admin, Client};
use crate::consumer::{Consumer, ConsumerConfig, OffsetReset};
use crate::consumer_protocol::{decode_assignment, read_version};
use crate::error::{ClientError, ErrorCode};
use crate::wire::*;

pub const RANGE_ASSIGNOR: &str = "range";

#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    pub group_id: String,
    pub client_id: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// Where a partition without a committed offset starts.
    pub offset_reset: OffsetReset,
    pub consumer: ConsumerConfig,
}

impl GroupConsumerConfig {
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            client_id: "weir-rust".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            offset_reset: OffsetReset::Earliest,
            consumer: ConsumerConfig::default(),
        }
    }
}

pub struct GroupConsumer {
    client: Client,
    admin: Admin,
    config: GroupConsumerConfig,
    topics: Vec<String>,
    member_id: String,
    generation_id: i32,
    assignment: Vec<(String, u32)>,
    consumer: Consumer,
    rejoin: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl GroupConsumer {
    pub fn new(client: Client, config: GroupConsumerConfig) -> Self {
        let consumer = Consumer::new(client.clone(), config.consumer.clone());
        Self {
            admin: Admin::new(client.clone()),
            client,
            config,
            topics: Vec::new(),
            member_id: String::new(),
            generation_id: -1,
            assignment: Vec::new(),
            consumer,
            rejoin: Arc::new(AtomicBool::new(false)),
            heartbeat: None,
        }
    }

    /// Joins the group for these topics and waits for this member's assignment.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        self.topics = topics.iter().map(|t| t.to_string()).collect();
        self.join().await
    }

    /// The partitions this member owns in the current generation.
    pub fn assignment(&self) -> &[(String, u32)] {
        &self.assignment
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    /// Fetches records of the assigned partitions; rejoins first when the group rebalanced.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        if self.rejoin.load(Ordering::Acquire) {
            self.join().await?;
        }
        if self.assignment.is_empty() {
            tokio::time::sleep(max_wait.min(self.config.heartbeat_interval)).await;
            return Ok(Vec::new());
        }
        self.consumer.poll(max_wait).await
    }

    /// Commits the positions of every assigned partition for this generation.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let offsets = self
            .consumer
            .assignment()
            .map(|(topic, partition, offset)| PartitionOffset { topic: topic.to_owned(), partition, offset })
            .collect();
        let request = OffsetCommitRequest {
            group_id: self.config.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            offsets,
        };
        let outcome: Result<(Empty, Bytes), ClientError> =
            self.client.call(FrameKind::OffsetCommit, &request, Bytes::new()).await;
        if let Err(e) = &outcome {
            if needs_rejoin(e) {
                self.rejoin.store(true, Ordering::Release);
            }
        }
        outcome.map(|_| ())
    }

    /// Leaves the group, so the others rebalance at once instead of after the session timeout.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stop_heartbeat();
        let request = GroupMemberRequest {
            group_id: self.config.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
        };
        let _: (Empty, Bytes) = self.client.call(FrameKind::LeaveGroup, &request, Bytes::new()).await?;
        Ok(())
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    async fn join(&mut self) -> Result<(), ClientError> {
        self.stop_heartbeat();
        self.rejoin.store(false, Ordering::Release);
        let subscription = encode_subscription(&self.topics);
        // Bounded: each attempt waits at most a rebalance timeout on the broker.
        for _ in 0..20 {
            let request = JoinGroupRequest {
                group_id: self.config.group_id.clone(),
                member_id: self.member_id.clone(),
                client_id: self.config.client_id.clone(),
                session_timeout_ms: self.config.session_timeout.as_millis() as i32,
                rebalance_timeout_ms: self.config.rebalance_timeout.as_millis() as i32,
                protocol_type: "consumer".into(),
                protocols: vec![GroupProtocol { name: RANGE_ASSIGNOR.into(), metadata: subscription.to_vec() }],
            };
            let joined: JoinGroupResponse = match self.client.call(FrameKind::JoinGroup, &request, Bytes::new()).await {
                Ok((j, _)) => j,
                Err(e) if code_of(&e) == Some(ErrorCode::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Err(e) if needs_rejoin(&e) => continue,
                Err(e) => return Err(e),
            };
            self.member_id = joined.member_id.clone();
            self.generation_id = joined.generation_id;
            let assignments = if joined.leader == joined.member_id { self.assign(&joined).await? } else { Vec::new() };
            let sync = SyncGroupRequest {
                group_id: self.config.group_id.clone(),
                generation_id: joined.generation_id,
                member_id: joined.member_id.clone(),
                assignments,
            };
            let assignment: SyncGroupResponse = match self.client.call(FrameKind::SyncGroup, &sync, Bytes::new()).await
            {
                Ok((s, _)) => s,
                Err(e) if needs_rejoin(&e) => continue,
                Err(e) => return Err(e),
            };
            self.assignment = decode_assignment(&assignment.assignment).map_err(ClientError::Invalid)?;
            tracing::info!(group = %self.config.group_id, member = %self.member_id, generation = self.generation_id, partitions = ?self.assignment, "joined group");
            self.start_positions().await?;
            self.start_heartbeat();
            return Ok(());
        }
        Err(ClientError::Invalid(format!("could not join group {:?}: it kept rebalancing", self.config.group_id)))
    }

    /// The leader's range assignment: per topic, members in member-id order take consecutive
    /// partition ranges, the first ones one extra (Kafka's RangeAssignor).
    async fn assign(&self, joined: &JoinGroupResponse) -> Result<Vec<GroupMember>, ClientError> {
        let mut subscribers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for member in &joined.members {
            for topic in decode_subscription(&member.metadata)? {
                subscribers.entry(topic).or_default().push(member.member_id.clone());
            }
        }
        let mut assigned: BTreeMap<String, BTreeMap<String, Vec<i32>>> =
            joined.members.iter().map(|m| (m.member_id.clone(), BTreeMap::new())).collect();
        for (topic, mut members) in subscribers {
            let partitions = match self.admin.describe_topic(&topic).await {
                Ok(d) => d.partitions.len(),
                Err(ClientError::Broker(e)) if e.code == ErrorCode::UnknownTopic => continue,
                Err(e) => return Err(e),
            };
            members.sort();
            for (member, range) in members.iter().zip(range_split(partitions, members.len())) {
                assigned
                    .get_mut(member)
                    .expect("member known")
                    .insert(topic.clone(), range.map(|p| p as i32).collect());
            }
        }
        Ok(assigned
            .into_iter()
            .map(|(member_id, topics)| GroupMember { member_id, metadata: encode_assignment(&topics).to_vec() })
            .collect())
    }

    async fn start_positions(&mut self) -> Result<(), ClientError> {
        self.consumer = Consumer::new(self.client.clone(), self.config.consumer.clone());
        if self.assignment.is_empty() {
            return Ok(());
        }
        let request =
            OffsetFetchRequest { group_id: self.config.group_id.clone(), partitions: self.assignment.clone() };
        let (committed, _): (OffsetFetchResponse, Bytes) =
            self.client.call(FrameKind::OffsetFetch, &request, Bytes::new()).await?;
        let spec = match self.config.offset_reset {
            OffsetReset::Latest => OffsetSpec::Latest,
            _ => OffsetSpec::Earliest,
        };
        for (topic, partition) in &self.assignment {
            match committed.offsets.iter().find(|o| o.topic == *topic && o.partition == *partition) {
                Some(o) => self.consumer.seek(topic, *partition, o.offset),
                None => self.consumer.assign(topic, vec![*partition], spec).await?,
            }
        }
        Ok(())
    }

    fn start_heartbeat(&mut self) {
        let (client, rejoin, every) = (self.client.clone(), self.rejoin.clone(), self.config.heartbeat_interval);
        let request = GroupMemberRequest {
            group_id: self.config.group_id.clone(),
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
        };
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let outcome: Result<(Empty, Bytes), ClientError> =
                    client.call(FrameKind::Heartbeat, &request, Bytes::new()).await;
                match outcome {
                    Ok(_) => {}
                    Err(e) if needs_rejoin(&e) => {
                        rejoin.store(true, Ordering::Release);
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "heartbeat failed; retrying"),
                }
            }
        }));
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

fn code_of(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Broker(w) => Some(w.code),
        _ => None,
    }
}

fn needs_rejoin(e: &ClientError) -> bool {
    matches!(
        code_of(e),
        Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId)
    )
}

/// Splits `partitions` into `members` consecutive ranges, the first `partitions % members` one
/// longer.
pub fn range_split(partitions: usize, members: usize) -> Vec<std::ops::Range<usize>> {
    let (each, extra) = (partitions / members.max(1), partitions % members.max(1));
    (0..members)
        .map(|i| {
            let start = each * i + i.min(extra);
            start..start + each + usize::from(i < extra)
        })
        .collect()
}

// Kafka's consumer protocol: an i16 version, then the message at that version.

fn with_version(version: i16, encode: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    encode(&mut buf);
    buf.freeze()
}

fn encode_subscription(topics: &[String]) -> Bytes {
    let subscription = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| StrBytes::from_string(t.clone())).collect());
    with_version(0, |buf| subscription.encode(buf, 0).expect("subscription v0 encodes"))
}

fn decode_subscription(bytes: &[u8]) -> Result<Vec<String>, ClientError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = read_version::<ConsumerProtocolSubscription>(&mut buf).map_err(ClientError::Invalid)?;
    let s = ConsumerProtocolSubscription::decode(&mut buf, version)
        .map_err(|e| ClientError::Invalid(format!("member subscription: {e}")))?;
    Ok(s.topics.iter().map(|t| t.as_str().to_owned()).collect())
}

fn encode_assignment(topics: &BTreeMap<String, Vec<i32>>) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        topics
            .iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    with_version(0, |buf| assignment.encode(buf, 0).expect("assignment v0 encodes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_split_matches_kafka() {
        assert_eq!(range_split(4, 2), vec![0..2, 2..4]);
        assert_eq!(range_split(5, 2), vec![0..3, 3..5]);
        assert_eq!(range_split(2, 3), vec![0..1, 1..2, 2..2]);
    }

    #[test]
    fn consumer_protocol_round_trips() {
        let topics = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(decode_subscription(&encode_subscription(&topics)).unwrap(), topics);
        let assigned = BTreeMap::from([("a".to_owned(), vec![0, 2])]);
        assert_eq!(
            decode_assignment(&encode_assignment(&assigned)).unwrap(),
            vec![("a".to_owned(), 0), ("a".to_owned(), 2)]
        );
        assert!(decode_assignment(&[0xff]).is_err());
    }
}
