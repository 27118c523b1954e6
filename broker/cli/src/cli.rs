//! The client side of the `weir` command: topics, produce, consume.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use weir_sdk::wire::{AlterTopicRequest, OffsetSpec, TopicConfig};
use weir_sdk::{
    Acks, Admin, Client, ClientConfig, Compression, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerConfig,
    Record, TlsTrust,
};

/// How to reach and trust a broker.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// host:port of the broker's QUIC listener.
    #[arg(long, default_value = "127.0.0.1:7400", global = true)]
    pub bootstrap: String,
    /// Data dir of a local broker; its dev certificate is trusted.
    #[arg(long, default_value = "./weir-data", global = true)]
    pub data_dir: PathBuf,
    /// PEM file of the CA or certificate to trust.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// Trust the broker certificate with this SHA-256 (hex), as `weir serve` prints it.
    #[arg(long, global = true)]
    pub cert_sha256: Option<String>,
    /// Trust any certificate (local tries only).
    #[arg(long, global = true)]
    pub insecure: bool,
}

impl ConnectArgs {
    pub fn trust(&self) -> anyhow::Result<TlsTrust> {
        if self.insecure {
            return Ok(TlsTrust::Insecure);
        }
        if let Some(ca) = &self.ca {
            return Ok(TlsTrust::CaFile(ca.clone()));
        }
        if let Some(fp) = &self.cert_sha256 {
            return Ok(TlsTrust::Fingerprint(fp.clone()));
        }
        let local = weir_broker::tls::cert_path(&self.data_dir);
        if local.exists() {
            return Ok(TlsTrust::CaFile(local));
        }
        bail!(
            "cannot trust the broker: no certificate at {}; pass --data-dir of the local broker, --ca FILE, --cert-sha256 HEX, or --insecure",
            local.display()
        )
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let client = Client::connect(ClientConfig::new(self.bootstrap.clone(), self.trust()?)).await?;
        Ok(client)
    }
}

#[derive(clap::Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::Subcommand)]
enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas of each partition, on distinct brokers of a cluster.
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// Topic setting key=value (retention.ms, retention.bytes, max.message.bytes, flush.mode, flush.interval.ms).
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    List,
    Describe {
        name: String,
    },
    Alter {
        name: String,
        /// New partition count (can only grow).
        #[arg(long)]
        partitions: Option<u32>,
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    Delete {
        name: String,
    },
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("expected key=value, got {s:?}"))
}

pub async fn topic(args: TopicArgs) -> anyhow::Result<()> {
    let admin = Admin::new(args.connect.connect().await?);
    match args.command {
        TopicCommand::Create { name, partitions, replication_factor, configs } => {
            let config = TopicConfig::default().with_entries(configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let d = admin.create_replicated_topic(&name, partitions, replication_factor, config).await?;
            println!("created topic {} with {} partitions", d.name, d.partitions.len());
        }
        TopicCommand::List => {
            for name in admin.list_topics().await? {
                println!("{name}");
            }
        }
        TopicCommand::Describe { name } => {
            let d = admin.describe_topic(&name).await?;
            println!("topic {}  id {}  partitions {}", d.name, d.id, d.partitions.len());
            for (k, v) in d.config.entries() {
                println!("  {k}={v}");
            }
            println!(
                "  {:>9}  {:>6}  {:>12}  {:>12}  {:>14}  {:>14}  {:>14}  {:>12}",
                "partition", "leader", "replicas", "isr", "log start", "high watermark", "log end", "bytes"
            );
            let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            for p in d.partitions {
                println!(
                    "  {:>9}  {:>6}  {:>12}  {:>12}  {:>14}  {:>14}  {:>14}  {:>12}",
                    p.partition,
                    p.leader.map_or("none".to_owned(), |l| l.to_string()),
                    ids(&p.replicas),
                    ids(&p.isr),
                    p.log_start_offset,
                    p.high_watermark,
                    p.log_end_offset,
                    p.size_bytes
                );
            }
        }
        TopicCommand::Alter { name, partitions, configs } => {
            let request =
                AlterTopicRequest { name, partitions, config: configs.into_iter().collect::<BTreeMap<_, _>>() };
            let d = admin.alter_topic(&request).await?;
            println!("altered topic {}: {} partitions", d.name, d.partitions.len());
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of this into key and value.
    #[arg(long)]
    key_separator: Option<String>,
    /// Header added to every record, key=value; repeatable.
    #[arg(long = "header", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    #[arg(long, conflicts_with = "broker_partitions")]
    partition: Option<u32>,
    /// Leave partitions to the broker: the topic's partitioner module picks them (or, without
    /// one, murmur2 of the key). Records are sent in batches of 1000.
    #[arg(long)]
    broker_partitions: bool,
    #[arg(long, value_enum, default_value = "all")]
    acks: AcksArg,
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// How keys and values are written in the input lines: raw bytes (anything but the line
    /// break and the key separator), hex, or base64.
    #[arg(long, value_enum, default_value = "raw")]
    encoding: Encoding,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// How a key or value is written as text, for `weir produce` and `weir consume`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes as they are.
    Raw,
    /// Two hex digits per byte.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl Encoding {
    pub fn decode(self, text: &[u8]) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        match self {
            Encoding::Raw => Ok(text.to_vec()),
            Encoding::Hex => hex::decode(text).map_err(|e| format!("not hex: {e}")),
            Encoding::Base64 => {
                base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("not base64: {e}"))
            }
        }
    }

    pub fn encode(self, bytes: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        match self {
            Encoding::Raw => bytes.to_vec(),
            Encoding::Hex => hex::encode(bytes).into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes).into_bytes(),
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum AcksArg {
    None,
    Leader,
    All,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

pub async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    if args.broker_partitions {
        return produce_unassigned(client, &args).await;
    }
    let producer = Producer::new(
        client,
        ProducerConfig { acks: args.acks.into(), compression: args.compression, ..ProducerConfig::default() },
    );
    // Lines go to the producer a batch at a time (one delivery per batch, not per record).
    let (mut deliveries, mut batch, mut batch_bytes) = (Vec::new(), Vec::new(), 0usize);
    let mut records = input_records(&args)?.peekable();
    while let Some(record) = records.next() {
        let record = record?;
        batch_bytes += record.key.as_ref().map_or(0, Bytes::len) + record.value.as_ref().map_or(0, Bytes::len);
        batch.push(record);
        if batch_bytes >= PRODUCE_BATCH_BYTES || batch.len() >= PRODUCE_BATCH_RECORDS || records.peek().is_none() {
            deliveries.push(producer.send_batch(&args.topic, args.partition, std::mem::take(&mut batch)).await?);
            batch_bytes = 0;
        }
    }
    let mut count = 0;
    for d in deliveries {
        count += d.await?.len();
    }
    eprintln!("produced {count} records to {}", args.topic);
    Ok(())
}

/// `weir produce` hands the producer this many bytes of keys and values, or this many lines,
/// at a time, whichever comes first.
const PRODUCE_BATCH_BYTES: usize = 256 * 1024;
const PRODUCE_BATCH_RECORDS: usize = 10_000;

/// The records of the input lines, in order.
fn input_records(args: &ProduceArgs) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Record>> + '_> {
    let reader: Box<dyn BufRead + Send> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let headers: Vec<(String, Option<Bytes>)> =
        args.headers.iter().map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone())))).collect();
    let (encoding, separator) = (args.encoding, args.key_separator.as_deref().map(str::as_bytes));
    Ok(reader.split(b'\n').enumerate().map(move |(index, line)| {
        let line = line.context("reading input")?;
        let number = index + 1;
        let (key, value) = match separator {
            Some(sep) => match find(&line, sep) {
                Some(at) => (Some(&line[..at]), &line[at + sep.len()..]),
                None => bail!("line {number} has no key separator {:?}", String::from_utf8_lossy(sep)),
            },
            None => (None, &line[..]),
        };
        let key = key
            .map(|k| encoding.decode(k).map_err(|e| anyhow::anyhow!("line {number}: the key is {e}")))
            .transpose()?;
        let value = encoding.decode(value).map_err(|e| anyhow::anyhow!("line {number}: the value is {e}"))?;
        let timestamp = weir_sdk::now_ms();
        Ok(Record { key: key.map(Bytes::from), value: Some(Bytes::from(value)), headers: headers.clone(), timestamp })
    }))
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn produce_unassigned(client: Client, args: &ProduceArgs) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    let mut count = 0usize;
    let mut batch = Vec::new();
    let mut records = input_records(args)?.peekable();
    while let Some(record) = records.next() {
        batch.push(record?);
        if batch.len() == 1000 || records.peek().is_none() {
            let response = admin.produce_unassigned(&args.topic, &batch, args.acks.into()).await?;
            count += batch.len();
            batch.clear();
            for p in response.partitions {
                tracing::debug!(partition = p.partition, base_offset = p.base_offset, "appended");
            }
        }
    }
    eprintln!("produced {count} records to {} (partitions picked by the broker)", args.topic);
    Ok(())
}

#[derive(clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// Where to start: earliest, latest, an offset, or a time in ms since the epoch (`time:MS`).
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Keep waiting for new records.
    #[arg(long, conflicts_with = "end")]
    follow: bool,
    /// Stop at the end of the log as it was when consumption started.
    #[arg(long)]
    end: bool,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, value_enum, default_value = "value")]
    format: Format,
    /// How keys, values and header values are printed: raw bytes, hex, or base64 (in `json`,
    /// raw bytes that are not UTF-8 are shown lossily; choose hex or base64 to keep them).
    #[arg(long, value_enum, default_value = "raw")]
    encoding: Encoding,
    /// Run this transform deployment on the broker over what is read (a consume-time filter or
    /// map); only its outputs are sent.
    #[arg(long)]
    module: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// The value alone.
    Value,
    /// key<TAB>value.
    KeyValue,
    /// One JSON object per record with partition, offset, timestamp, key, value and headers.
    Json,
}

pub async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let admin = Admin::new(client.clone());
    let spec = match args.from.as_str() {
        "earliest" => Some(OffsetSpec::Earliest),
        "latest" => Some(OffsetSpec::Latest),
        s if s.starts_with("time:") => Some(OffsetSpec::Timestamp(
            s[5..].parse().with_context(|| format!("--from {s}: expected time:MILLISECONDS"))?,
        )),
        _ => None,
    };
    let description = admin.describe_topic(&args.topic).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => vec![p],
        None => description.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut consumer = Consumer::new(
        client,
        ConsumerConfig { offset_reset: OffsetReset::Fail, module: args.module.clone(), ..ConsumerConfig::default() },
    );
    match spec {
        Some(spec) => consumer.assign(&args.topic, partitions.clone(), spec).await?,
        None => {
            let offset: i64 = args
                .from
                .parse()
                .with_context(|| format!("--from {:?}: expected earliest, latest, an offset or time:MS", args.from))?;
            if offset < 0 {
                bail!("--from {offset}: an offset cannot be negative");
            }
            for p in &partitions {
                consumer.seek(&args.topic, *p, offset);
            }
        }
    }
    // With --end, stop once every partition reaches the end offset it had at the start.
    let ends: BTreeMap<u32, i64> = admin
        .list_offsets(&args.topic, partitions.clone(), OffsetSpec::Latest)
        .await?
        .iter()
        .map(|p| (p.partition, p.offset))
        .collect();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.end && consumer.assignment().all(|(_, p, pos)| pos >= ends[&p]) {
            break;
        }
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        let records = consumer.poll(Duration::from_millis(if args.follow || !args.end { 1000 } else { 100 })).await?;
        let mut out = stdout.lock();
        for r in records {
            if args.end && r.offset >= ends[&r.partition] {
                continue;
            }
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            print_record(&mut out, args.format, args.encoding, &r)?;
            printed += 1;
        }
        out.flush()?;
    }
    Ok(())
}

fn print_record(
    out: &mut impl Write,
    format: Format,
    encoding: Encoding,
    r: &weir_sdk::ConsumedRecord,
) -> std::io::Result<()> {
    let bytes = |b: &Option<Bytes>| b.as_ref().map(|b| encoding.encode(b));
    let text = |b: &Option<Bytes>| bytes(b).map(|b| String::from_utf8_lossy(&b).into_owned());
    match format {
        Format::Value => {
            out.write_all(&bytes(&r.record.value).unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::KeyValue => {
            out.write_all(&bytes(&r.record.key).unwrap_or_default())?;
            out.write_all(b"\t")?;
            out.write_all(&bytes(&r.record.value).unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = r
                .record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), text(v).map_or(serde_json::Value::Null, serde_json::Value::String)))
                .collect();
            let json = serde_json::json!({
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.record.timestamp,
                "key": text(&r.record.key),
                "value": text(&r.record.value),
                "headers": headers,
            });
            writeln!(out, "{json}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_any_bytes() {
        let all: Vec<u8> = (0..=255).collect();
        for encoding in [Encoding::Raw, Encoding::Hex, Encoding::Base64] {
            assert_eq!(encoding.decode(&encoding.encode(&all)).unwrap(), all, "{encoding:?}");
        }
        assert_eq!(Encoding::Hex.encode(b"\x00\xff"), b"00ff");
        assert!(Encoding::Hex.decode(b"zz").unwrap_err().contains("not hex"));
        assert!(Encoding::Base64.decode(b"***").unwrap_err().contains("not base64"));
    }

    #[test]
    fn key_separator_is_found_in_bytes() {
        assert_eq!(find(b"\xffk|v", b"|"), Some(2));
        assert_eq!(find(b"kv", b"||"), None);
    }
}
