//! Routing requests to each partition's leader in a cluster, as Kafka clients do: the router
//! learns the brokers (cluster status) and each partition's leader (topic descriptions) from
//! any broker it reaches, keeps one connection per broker it talks to, and learns again when
//! a request to a leader fails retriably (the leader moved, stopped or was fenced) or its view
//! of a topic is older than [`METADATA_MAX_AGE`].
//!
//! A broker that does not lead a partition forwards requests for it to the leader, so a stale
//! view costs a hop, never a wrong answer. On a single node (no registered brokers), with a
//! pinned certificate (which names one broker's certificate only) or where a leader cannot be
//! reached, requests go to the bootstrap broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{Admin, Client, TlsTrust};
use crate::error::ClientError;

/// How long a topic's leaders are used before they are learned again (Kafka's
/// `metadata.max.age.ms` is 5 minutes; leaders move on failures, which refresh at once).
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(30);

/// The least time between two refreshes of one topic, so a burst of failures asks once.
const REFRESH_BACKOFF: Duration = Duration::from_millis(100);

/// How long a broker that could not be reached is not tried again.
const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(1);

/// Cheap to clone; clones share the view and the connections.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    bootstrap: Client,
    /// Other brokers can be trusted with the client's TLS settings.
    enabled: bool,
    view: Mutex<View>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct View {
    /// Live brokers' native addresses, by node id.
    addresses: HashMap<u64, String>,
    connections: HashMap<u64, Client>,
    unreachable: HashMap<u64, Instant>,
    leaders: HashMap<(String, u32), u64>,
    /// When each topic's leaders were learned, and when a refresh was last asked for.
    learned: HashMap<String, Instant>,
    stale: HashMap<String, bool>,
}

impl Router {
    pub fn new(bootstrap: Client) -> Self {
        let enabled = !matches!(bootstrap.config().tls, TlsTrust::Fingerprint(_));
        Self {
            inner: Arc::new(Inner {
                bootstrap,
                enabled,
                view: Mutex::new(View::default()),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn bootstrap(&self) -> &Client {
        &self.inner.bootstrap
    }

    /// The connection to the broker leading `topic`'s `partition`, as far as the router knows;
    /// the bootstrap broker's where it knows none.
    pub async fn leader(&self, topic: &str, partition: u32) -> Client {
        if !self.inner.enabled {
            return self.inner.bootstrap.clone();
        }
        let due = {
            let view = self.view();
            let old = view.learned.get(topic).is_none_or(|at| at.elapsed() > METADATA_MAX_AGE);
            let asked = view.stale.get(topic).copied().unwrap_or(false);
            let recent = view.learned.get(topic).is_some_and(|at| at.elapsed() < REFRESH_BACKOFF);
            old || (asked && !recent)
        };
        if due {
            self.refresh(topic).await;
        }
        // A leader whose connection closed may have stopped: learn the leaders again before
        // waiting out a connect timeout on it (a leader that only went idle costs a refresh).
        let lost = {
            let view = self.view();
            let leader = view.leaders.get(&(topic.to_owned(), partition));
            let closed = leader.and_then(|node| view.connections.get(node)).is_some_and(|c| !c.connected());
            closed && view.learned.get(topic).is_none_or(|at| at.elapsed() >= REFRESH_BACKOFF)
        };
        if lost {
            self.refresh(topic).await;
        }
        let leader = self.view().leaders.get(&(topic.to_owned(), partition)).copied();
        match leader {
            Some(node) => self.broker(node).await.unwrap_or_else(|| self.inner.bootstrap.clone()),
            None => self.inner.bootstrap.clone(),
        }
    }

    /// Marks `topic`'s leaders as stale after a request for it failed retriably: the next
    /// lookup learns them again.
    pub fn invalidate(&self, topic: &str) {
        if self.inner.enabled {
            self.view().stale.insert(topic.to_owned(), true);
        }
    }

    /// Learns the brokers and `topic`'s leaders now (a consumer assigned the topic, a producer
    /// about to write it), so the router knows other brokers should the bootstrap one stop.
    pub async fn learn(&self, topic: &str) {
        if self.inner.enabled {
            self.refresh(topic).await;
        }
    }

    /// A connection to some broker for requests any broker answers: the bootstrap broker,
    /// or, while it cannot be reached, another live one the router knows.
    pub async fn any(&self) -> Client {
        if !self.inner.enabled || self.inner.bootstrap.connected() {
            return self.inner.bootstrap.clone();
        }
        if let Some(client) = self.view().connections.values().find(|c| c.connected()) {
            return client.clone();
        }
        if self.inner.bootstrap.connection().await.is_ok() {
            return self.inner.bootstrap.clone();
        }
        let nodes: Vec<u64> = self.view().addresses.keys().copied().collect();
        for node in nodes {
            if let Some(client) = self.broker(node).await {
                if client.connection().await.is_ok() {
                    return client;
                }
            }
        }
        self.inner.bootstrap.clone()
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection to broker `node`, made on first use; `None` while it cannot be reached.
    async fn broker(&self, node: u64) -> Option<Client> {
        let address = {
            let view = self.view();
            if let Some(client) = view.connections.get(&node) {
                return Some(client.clone());
            }
            if view.unreachable.get(&node).is_some_and(|at| at.elapsed() < UNREACHABLE_BACKOFF) {
                return None;
            }
            view.addresses.get(&node)?.clone()
        };
        if address == self.inner.bootstrap.config().bootstrap {
            let client = self.inner.bootstrap.clone();
            self.view().connections.insert(node, client.clone());
            return Some(client);
        }
        let mut config = self.inner.bootstrap.config().clone();
        config.bootstrap = address.clone();
        match Client::connect(config).await {
            Ok(client) => {
                let mut view = self.view();
                let client = view.connections.entry(node).or_insert(client).clone();
                Some(client)
            }
            Err(e) => {
                tracing::debug!(node, address = %address, error = %e, "leader unreachable, using the bootstrap broker");
                self.view().unreachable.insert(node, Instant::now());
                None
            }
        }
    }

    /// Learns the live brokers and `topic`'s leaders from the first broker that answers.
    async fn refresh(&self, topic: &str) {
        let _one = self.inner.refreshing.lock().await;
        if self.view().learned.get(topic).is_some_and(|at| at.elapsed() < REFRESH_BACKOFF) {
            return; // another caller just did
        }
        // Connected brokers first: a stopped bootstrap broker costs a connect timeout.
        let mut candidates: Vec<Client> = self.view().connections.values().cloned().collect();
        candidates.push(self.inner.bootstrap.clone());
        candidates.sort_by_key(|c| !c.connected());
        let mut last: Option<ClientError> = None;
        for client in candidates {
            let admin = Admin::new(client);
            let learned =
                async { Ok::<_, ClientError>((admin.cluster_status().await?, admin.describe_topic(topic).await?)) };
            match learned.await {
                Ok((status, description)) => {
                    let mut view = self.view();
                    let live: HashMap<u64, String> =
                        status.brokers.into_iter().filter(|b| !b.fenced).map(|b| (b.node_id, b.quic_addr)).collect();
                    // A broker at a new address (restarted elsewhere) gets a new connection.
                    view.connections.retain(|node, c| live.get(node).is_some_and(|a| *a == c.config().bootstrap));
                    view.addresses = live;
                    view.leaders.retain(|(t, _), _| t != topic);
                    for p in description.partitions {
                        if let Some(leader) = p.leader {
                            view.leaders.insert((topic.to_owned(), p.partition), leader);
                        }
                    }
                    view.learned.insert(topic.to_owned(), Instant::now());
                    view.stale.remove(topic);
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            tracing::debug!(topic, error = %e, "could not learn the partitions' leaders");
        }
        // Nothing answered: keep the view, and ask again after the backoff.
        self.view().learned.insert(topic.to_owned(), Instant::now());
    }
}
