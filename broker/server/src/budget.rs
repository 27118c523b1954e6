//! What clients make the broker hold, bounded per connection, per client address and per
//! broker: request bytes read and not yet answered, and room for fetch answers not yet sent.
//!
//! A request takes budget before its bytes are read: first from its connection's budget, then
//! its address's, then the broker's, and gives it back once its answer has been sent. One
//! address holds at most its share, so no single client can take the broker's whole budget.
//!
//! Kafka connections are read one request at a time, in order: out of budget, the connection
//! is not read from until earlier answers are sent (as Kafka mutes a channel past
//! `queued.max.request.bytes`), so the client's bytes wait in TCP's flow control, not in the
//! broker's memory ([`ConnectionBudget::take`]). A QUIC connection reads its streams side by
//! side and a stream may wait for the one before it: a stream that waited for budget while
//! later streams held it could wait for ever, and so could one whose bytes cannot arrive
//! because waiting streams fill the connection's flow-control window. So a QUIC request gets
//! its connection's budget at once or the connection is closed with the limit named; it waits
//! a bounded time for its address's and the broker's ([`ConnectionBudget::take_or_refuse`]).
//! A QUIC fetch's answer takes only the address's and the broker's budgets, since many
//! consumers' long polls may share one connection.
//!
//! The same table caps connections per address, across the QUIC and Kafka listeners.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budgets count KiB, so one semaphore permit is 1 KiB and a request of up to 4 TiB fits in
/// the u32 a semaphore takes.
const UNIT: usize = 1024;

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Bytes one connection may hold (requests read and not answered, fetch answers).
    pub connection_bytes_max: usize,
    /// Bytes all connections from one address may hold together.
    pub address_bytes_max: usize,
    /// Bytes all connections may hold together.
    pub broker_bytes_max: usize,
    /// Connections one address may hold open, on both listeners together.
    pub connections_per_address_max: usize,
    /// Producer ids (InitProducerId) one address may take per minute, in bursts up to as many.
    pub producer_ids_per_address_per_minute: u32,
}

/// The broker's budgets; cheap to clone.
#[derive(Clone)]
pub struct Budgets {
    config: BudgetConfig,
    broker: Arc<Semaphore>,
    addresses: Arc<Mutex<HashMap<IpAddr, Address>>>,
    /// Producer-id allowance per address; kept past the address's last connection, so
    /// reconnecting does not refill it.
    producer_ids: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
}

/// A token bucket: `tokens` left at `at`, refilled at the configured rate up to the burst.
struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

struct Address {
    connections: usize,
    budget: Arc<Semaphore>,
}

/// Why a connection was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyConnections {
    pub address: IpAddr,
    pub limit: usize,
}

impl std::fmt::Display for TooManyConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} already holds connections_per_address_max = {} connections", self.address, self.limit)
    }
}

impl Budgets {
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            broker: Arc::new(Semaphore::new(units(config.broker_bytes_max) as usize)),
            addresses: Arc::default(),
            producer_ids: Arc::default(),
        }
    }

    pub fn config(&self) -> BudgetConfig {
        self.config
    }

    /// Lets a connection from `address` in, with its own budget, unless the address already
    /// holds `connections_per_address_max` connections.
    pub fn connect(&self, address: IpAddr) -> Result<ConnectionBudget, TooManyConnections> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        let entry = addresses.entry(address).or_insert_with(|| Address {
            connections: 0,
            budget: Arc::new(Semaphore::new(units(self.config.address_bytes_max) as usize)),
        });
        if entry.connections >= self.config.connections_per_address_max {
            return Err(TooManyConnections { address, limit: self.config.connections_per_address_max });
        }
        entry.connections += 1;
        Ok(ConnectionBudget {
            own: Arc::new(Semaphore::new(units(self.config.connection_bytes_max) as usize)),
            address_budget: entry.budget.clone(),
            address,
            budgets: self.clone(),
        })
    }

    /// Takes one producer id from `address`'s allowance, or says how long until one is left.
    pub fn take_producer_id(&self, address: IpAddr, now: std::time::Instant) -> Result<(), std::time::Duration> {
        let per_minute = f64::from(self.config.producer_ids_per_address_per_minute.max(1));
        let per_second = per_minute / 60.0;
        let mut buckets = self.producer_ids.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= 100_000 {
            // Forget addresses whose allowance has refilled: they lose nothing by it.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < per_minute);
        }
        let bucket = buckets.entry(address).or_insert(Bucket { tokens: per_minute, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_second).min(per_minute);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// Connections open from `address` now.
    pub fn connections_from(&self, address: IpAddr) -> usize {
        self.addresses.lock().unwrap_or_else(|e| e.into_inner()).get(&address).map_or(0, |a| a.connections)
    }

    /// Bytes of the broker's budget held now.
    pub fn broker_bytes_held(&self) -> usize {
        (units(self.config.broker_bytes_max) as usize - self.broker.available_permits()) * UNIT
    }
}

/// One connection's budget; the connection counts against its address until this is dropped.
pub struct ConnectionBudget {
    own: Arc<Semaphore>,
    address_budget: Arc<Semaphore>,
    address: IpAddr,
    budgets: Budgets,
}

/// Budget held for one request until its answer is sent.
#[derive(Debug, Default)]
pub struct Held(Vec<OwnedSemaphorePermit>);

impl Held {
    pub fn add(&mut self, other: Held) {
        self.0.extend(other.0);
    }
}

/// A request that does not fit: larger than a whole budget, so it could never be let in, or
/// (QUIC) not fitting in what its connection, address or the broker has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    pub bytes: usize,
    pub setting: &'static str,
    pub limit: usize,
    /// Whether the budget was spent by earlier requests, rather than too small.
    pub spent: bool,
}

impl std::error::Error for OverBudget {}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.spent {
            write!(
                f,
                "a request needing {} bytes does not fit in what is left of {} = {}: requests not yet answered hold the rest",
                self.bytes, self.setting, self.limit
            )
        } else {
            write!(f, "a request needing {} bytes is over {} = {}", self.bytes, self.setting, self.limit)
        }
    }
}

const SETTINGS: [&str; 3] = ["connection_bytes_max", "address_bytes_max", "broker_bytes_max"];

impl ConnectionBudget {
    /// Takes one producer id from this connection's address's allowance (see
    /// [`Budgets::take_producer_id`]).
    pub fn take_producer_id(&self) -> Result<(), std::time::Duration> {
        self.budgets.take_producer_id(self.address, std::time::Instant::now())
    }

    /// Waits until `bytes` fit in the connection's, the address's and the broker's budgets,
    /// taken in that order. A caller takes budget for one request at a time, in the order
    /// the connection's requests arrive.
    pub async fn take(&self, bytes: usize) -> Result<Held, OverBudget> {
        self.take_within(bytes, None, None).await
    }

    /// As [`ConnectionBudget::take`], but refused at once when the connection's own budget
    /// has no room, and after `wait` when the address's or the broker's has none.
    pub async fn take_or_refuse(&self, bytes: usize, wait: std::time::Duration) -> Result<Held, OverBudget> {
        self.take_within(bytes, Some(std::time::Duration::ZERO), Some(wait)).await
    }

    /// Room for a QUIC fetch's answer: from the address's and the broker's budgets only,
    /// waiting at most `wait`. Long polls of many consumers may share one connection, so their
    /// answers do not count against the connection's own budget, which bounds its requests.
    pub async fn take_shared_or_refuse(&self, bytes: usize, wait: std::time::Duration) -> Result<Held, OverBudget> {
        self.take_tiers(bytes, 1, None, Some(wait)).await
    }

    async fn take_within(
        &self,
        bytes: usize,
        own_wait: Option<std::time::Duration>,
        shared_wait: Option<std::time::Duration>,
    ) -> Result<Held, OverBudget> {
        self.take_tiers(bytes, 0, own_wait, shared_wait).await
    }

    /// Takes `bytes` from the tiers from `first` on (0: the connection's, 1: the address's,
    /// 2: the broker's).
    async fn take_tiers(
        &self,
        bytes: usize,
        first: usize,
        own_wait: Option<std::time::Duration>,
        shared_wait: Option<std::time::Duration>,
    ) -> Result<Held, OverBudget> {
        let config = self.budgets.config;
        let limits = [config.connection_bytes_max, config.address_bytes_max, config.broker_bytes_max];
        for (setting, limit) in SETTINGS.into_iter().zip(limits).skip(first) {
            if bytes > limit {
                return Err(OverBudget { bytes, setting, limit, spent: false });
            }
        }
        let n = units(bytes);
        let mut held = Vec::with_capacity(3);
        let tiers = [&self.own, &self.address_budget, &self.budgets.broker];
        for (i, semaphore) in tiers.into_iter().enumerate().skip(first) {
            let acquire = semaphore.clone().acquire_many_owned(n);
            let wait = if i == 0 { own_wait } else { shared_wait };
            // The semaphores are never closed.
            let permit = match wait {
                None => Some(acquire.await.expect("budget semaphores stay open")),
                Some(wait) if wait.is_zero() => semaphore.clone().try_acquire_many_owned(n).ok(),
                Some(wait) => {
                    tokio::time::timeout(wait, acquire).await.ok().map(|p| p.expect("budget semaphores stay open"))
                }
            }
            .ok_or(OverBudget { bytes, setting: SETTINGS[i], limit: limits[i], spent: true })?;
            held.push(permit);
        }
        Ok(Held(held))
    }
}

impl Drop for ConnectionBudget {
    fn drop(&mut self) {
        let mut addresses = self.budgets.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = addresses.get_mut(&self.address) {
            entry.connections -= 1;
            if entry.connections == 0 {
                addresses.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1 << 20;

    fn budgets() -> Budgets {
        Budgets::new(BudgetConfig {
            connection_bytes_max: 4 * MIB,
            address_bytes_max: 6 * MIB,
            broker_bytes_max: 8 * MIB,
            connections_per_address_max: 3,
            producer_ids_per_address_per_minute: 60,
        })
    }

    #[test]
    fn producer_ids_per_address_come_from_a_bucket_that_refills() {
        let budgets = budgets();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let start = std::time::Instant::now();
        for _ in 0..60 {
            assert_eq!(budgets.take_producer_id(a, start), Ok(()));
        }
        let wait = budgets.take_producer_id(a, start).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO, "{wait:?}");
        assert_eq!(budgets.take_producer_id(b, start), Ok(()), "other addresses have their own");
        // 60 a minute: one more a second later, not two.
        let later = start + Duration::from_millis(1_100);
        assert_eq!(budgets.take_producer_id(a, later), Ok(()));
        assert!(budgets.take_producer_id(a, later).is_err());
    }

    async fn waits(budget: &ConnectionBudget, bytes: usize) -> bool {
        tokio::time::timeout(Duration::from_millis(50), budget.take(bytes)).await.is_err()
    }

    #[tokio::test]
    async fn budgets_hold_per_connection_per_address_and_per_broker() {
        let budgets = budgets();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = budgets.connect(a).unwrap();
        let a2 = budgets.connect(a).unwrap();
        let held = a1.take(4 * MIB).await.unwrap();
        assert!(waits(&a1, 1).await, "the connection's own budget is spent");
        let _a2_held = a2.take(2 * MIB).await.unwrap();
        assert!(waits(&a2, 1).await, "the address's budget is spent");
        let b1 = budgets.connect(b).unwrap();
        let _b1_held = b1.take(2 * MIB).await.unwrap();
        assert!(waits(&b1, 1).await, "the broker's budget is spent");
        assert_eq!(budgets.broker_bytes_held(), 8 * MIB);
        drop(held);
        let _ = a1.take(MIB).await.unwrap();
        assert_eq!(
            b1.take(9 * MIB).await.err().map(|e| e.to_string()),
            Some("a request needing 9437184 bytes is over connection_bytes_max = 4194304".into())
        );
    }

    #[tokio::test]
    async fn connections_per_address_are_capped_and_counted_down_on_close() {
        let budgets = budgets();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let open: Vec<_> = (0..3).map(|_| budgets.connect(a).unwrap()).collect();
        let refused = budgets.connect(a).err().unwrap();
        assert_eq!(refused.to_string(), "10.0.0.1 already holds connections_per_address_max = 3 connections");
        assert!(budgets.connect("10.0.0.2".parse().unwrap()).is_ok(), "other addresses are let in");
        drop(open);
        assert_eq!(budgets.connections_from(a), 0);
        assert!(budgets.connect(a).is_ok());
    }

    #[tokio::test]
    async fn a_stream_is_refused_at_once_on_its_connection_and_after_a_wait_on_shared_budget() {
        let budgets = budgets();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (a1, a2) = (budgets.connect(a).unwrap(), budgets.connect(a).unwrap());
        let wait = Duration::from_millis(100);
        let _held = a1.take_or_refuse(3 * MIB, wait).await.unwrap();
        let started = std::time::Instant::now();
        let refused = a1.take_or_refuse(2 * MIB, Duration::from_secs(60)).await.unwrap_err();
        assert_eq!((refused.setting, refused.spent), ("connection_bytes_max", true));
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once");
        // A fetch answer takes only the shared budgets: the full connection still gets one.
        let answer = a1.take_shared_or_refuse(2 * MIB, wait).await.unwrap();
        drop(answer);
        let _also = a2.take_or_refuse(3 * MIB, wait).await.unwrap();
        let refused = a2.take_or_refuse(MIB, wait).await.unwrap_err();
        assert_eq!(refused.setting, "address_bytes_max");
        assert!(refused.to_string().contains("does not fit in what is left of address_bytes_max"), "{refused}");
    }
}
