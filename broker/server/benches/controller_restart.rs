//! Controller restart time against the length of its Raft log: proposes N metadata commands
//! (topic creations and deletions, so the state stays small and the log is what grows),
//! stops, and times `Controller::open` on the same data folder, three times.
//!
//! `cargo bench -p weir-broker --bench controller_restart -- 100000`

use std::time::Instant;

use weir_broker::controller::Controller;
use weir_meta::metadata::{Command, Limits};
use weir_sdk::TopicConfig;
use weir_storage::Storage;

const LIMITS: Limits = Limits {
    partitions_per_topic_max: 1000,
    topics_max: 10_000,
    message_bytes_max: 8 << 20,
    schema_versions_per_subject_max: 1000,
    schemas_max: 100_000,
    groups_max: 100_000,
};

fn main() {
    let commands: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let storage = Storage::open(&path, 16).unwrap();
            let controller = Controller::open(storage.raft, 1, LIMITS, None).await.unwrap();
            let started = Instant::now();
            for i in 0..commands / 2 {
                let name = format!("t{i}");
                let create = Command::CreateTopic { name: name.clone(), partitions: 1, config: TopicConfig::default(), replication_factor: 1 };
                controller.propose(create).await.unwrap();
                controller.propose(Command::DeleteTopic { name }).await.unwrap();
            }
            let took = started.elapsed();
            println!(
                "proposed {commands} commands in {took:.2?} ({:.0} commands/s)",
                commands as f64 / took.as_secs_f64()
            );
            controller.shutdown().await;
        }
        for run in 1..=3 {
            let storage = Storage::open(&path, 16).unwrap();
            let started = Instant::now();
            let controller = Controller::open(storage.raft, 1, LIMITS, None).await.unwrap();
            let took = started.elapsed();
            let next_topic_id = controller.state().next_topic_id;
            assert_eq!(next_topic_id, (commands / 2) as u64, "the state is rebuilt whole");
            println!(
                "restart {run}: controller serving after {took:.2?} with {commands} commands behind it ({} Raft log entries held)",
                controller.log_entries_held()
            );
            controller.shutdown().await;
        }
    });
}
