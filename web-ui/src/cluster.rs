//! `/api/v1/cluster`: the controller (leader, term, voters, learners), the registered brokers,
//! partitions per broker (led and replicated), offline and under-replicated partitions, and
//! reassignments under way.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use weir_sdk::wire::ClusterStatusResponse;

use crate::Console;

#[derive(Debug, Serialize, ToSchema)]
pub struct BrokerLoad {
    pub node_id: u64,
    /// Partitions it leads.
    pub leader_of: usize,
    /// Partitions it holds a replica of.
    pub replica_of: usize,
    /// Partitions in whose ISR it is.
    pub in_sync_of: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Moving {
    pub topic: String,
    pub partition: u32,
    pub replicas: Vec<u64>,
    pub adding: Vec<u64>,
    pub removing: Vec<u64>,
    pub throttle_bytes_per_sec: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// Controller leader and term, voters, learners, registered brokers (fenced or not), and
    /// the offline and under-replicated partitions (Weir's cluster status).
    #[schema(value_type = Object)]
    pub status: ClusterStatusResponse,
    /// Per broker, what it leads and replicates.
    pub brokers: Vec<BrokerLoad>,
    pub reassignments: Vec<Moving>,
}

/// The cluster at a glance (a single node shows itself as its own controller).
#[utoipa::path(get, path = "/api/v1/cluster", tag = "overview", responses((status = 200, body = ClusterView, description = "OK")))]
pub async fn get_cluster(State(console): State<Console>) -> Json<ClusterView> {
    let broker = &console.broker;
    let mut load: BTreeMap<u64, BrokerLoad> = BTreeMap::new();
    let mut count = |id: u64, field: fn(&mut BrokerLoad) -> &mut usize| {
        let b = load.entry(id).or_insert(BrokerLoad { node_id: id, leader_of: 0, replica_of: 0, in_sync_of: 0 });
        *field(b) += 1;
    };
    for topic in broker.topics() {
        let Ok(info) = broker.describe_topic(&topic.name) else { continue };
        for p in info.partitions {
            if let Some(leader) = p.leader {
                count(leader, |b| &mut b.leader_of);
            }
            for r in p.replicas {
                count(r, |b| &mut b.replica_of);
            }
            for r in p.isr {
                count(r, |b| &mut b.in_sync_of);
            }
        }
    }
    let reassignments = broker
        .reassignments()
        .into_iter()
        .map(|(topic, partition, replicas, moving)| Moving {
            topic,
            partition,
            replicas,
            adding: moving.adding,
            removing: moving.removing,
            throttle_bytes_per_sec: moving.throttle_bytes_per_sec,
        })
        .collect();
    Json(ClusterView { status: broker.cluster_status(), brokers: load.into_values().collect(), reassignments })
}
