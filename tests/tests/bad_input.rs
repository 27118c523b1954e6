//! Bad input over the native protocol: each gets a typed error with a stable code and a message
//! naming the limit or field, and the connection and broker keep serving.

mod common;

use bytes::Bytes;
use common::BrokerProcess;
use weir_sdk::batch::{encode_batch, Compression, Record};
use weir_sdk::wire::*;
use weir_sdk::{Admin, Client, ClientError, ErrorCode, TopicConfig, WireError};

/// Sends raw bytes on a fresh stream of the client's connection and decodes the answer.
async fn raw(client: &Client, bytes: &[u8]) -> Frame {
    let conn = client.connection().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The broker may answer (and stop reading) before everything is written.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = recv.read_to_end(1 << 20).await.unwrap();
    Frame::decode(&answer, 1 << 20).unwrap()
}

fn check_error(frame: &Frame, code: ErrorCode, needle: &str) {
    assert_eq!(frame.kind, FrameKind::Error, "expected an error frame");
    let e: WireError = frame.header().unwrap();
    assert_eq!(e.code, code, "{e}");
    assert!(e.message.contains(needle), "message {:?} should name {needle:?}", e.message);
}

fn check_client_error<T: std::fmt::Debug>(result: Result<T, ClientError>, code: ErrorCode, needle: &str) {
    match result {
        Err(ClientError::Broker(e)) => {
            assert_eq!(e.code, code, "{e}");
            assert!(e.message.contains(needle), "message {:?} should name {needle:?}", e.message);
        }
        other => panic!("expected broker error {code:?}, got {other:?}"),
    }
}

fn produce_frame(topic: &str, partition: u32, batch: &[u8]) -> Vec<u8> {
    let request = ProduceRequest {
        topic: topic.into(),
        acks: Acks::Leader,
        timeout_ms: 1000,
        partitions: vec![ProducePartition { partition, bytes: batch.len() as u32 }],
    };
    Frame::new(FrameKind::Produce, &request, Bytes::copy_from_slice(batch)).encode().to_vec()
}

fn produce_error(frame: &Frame) -> WireError {
    assert_eq!(frame.kind, FrameKind::Produce);
    let response: ProduceResponse = frame.header().unwrap();
    response.partitions[0].error.clone().expect("the partition was rejected")
}

fn good_batch(value_len: usize) -> Bytes {
    encode_batch(
        &[Record { value: Some(Bytes::from(vec![b'v'; value_len])), timestamp: 1, ..Record::default() }],
        Compression::None,
    )
    .unwrap()
}

#[tokio::test]
async fn given_bad_frames_and_requests_then_typed_errors_and_the_broker_keeps_serving() {
    let mut broker = BrokerProcess::start(&[]);
    let client = broker.client().await;
    let admin = Admin::new(client.clone());
    admin.create_topic("ok", 2, TopicConfig { max_message_bytes: 1024, ..TopicConfig::default() }).await.unwrap();

    // Frames.
    check_error(
        &raw(&client, &(64u32 << 20).to_be_bytes()).await,
        ErrorCode::FrameTooLarge,
        "max.frame.bytes = 16777216",
    );
    check_error(&raw(&client, &[0, 0, 0, 100, 1, 6, 0, 0]).await, ErrorCode::MalformedFrame, "truncated");
    check_error(&raw(&client, &[0, 0]).await, ErrorCode::MalformedFrame, "length prefix");
    check_error(
        &raw(&client, b"GET / HTTP/1.1\r\nHost: weir\r\n\r\n").await,
        ErrorCode::FrameTooLarge,
        "max.frame.bytes",
    );
    check_error(
        &raw(&client, &[0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]).await,
        ErrorCode::UnsupportedVersion,
        "version 222",
    );
    check_error(&raw(&client, &[0, 0, 0, 6, 1, 99, 0, 0, 0, 0]).await, ErrorCode::UnknownRequest, "kind 99");
    let bad_json = Frame { kind: FrameKind::Produce, header: Bytes::from_static(b"{not json"), payload: Bytes::new() };
    check_error(&raw(&client, &bad_json.encode()).await, ErrorCode::MalformedFrame, "Produce");

    // Batches.
    let mut corrupt = good_batch(100).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let e = produce_error(&raw(&client, &produce_frame("ok", 0, &corrupt)).await);
    assert_eq!(e.code, ErrorCode::CorruptBatch);
    assert!(e.message.contains("CRC-32C"), "{e}");
    let e = produce_error(&raw(&client, &produce_frame("ok", 0, &good_batch(4096))).await);
    assert_eq!(e.code, ErrorCode::MessageTooLarge);
    assert!(e.message.contains("max.message.bytes = 1024"), "{e}");
    let e = produce_error(&raw(&client, &produce_frame("ok", 7, &good_batch(10))).await);
    assert_eq!(e.code, ErrorCode::UnknownPartition);
    check_error(&raw(&client, &produce_frame("nope", 0, &good_batch(10))).await, ErrorCode::UnknownTopic, "\"nope\"");
    let e = produce_error(&raw(&client, &produce_frame("ok", 0, &[0u8; 30])).await);
    assert_eq!(e.code, ErrorCode::CorruptBatch);

    // Large frames arrive in many QUIC chunks. The first is joined at its end and leaves its
    // buffer kept; the next of the same length are copied into that buffer as they arrive,
    // and are held to their declared length the same way.
    let large = produce_frame("ok", 0, &good_batch(300_000));
    for _ in 0..2 {
        let e = produce_error(&raw(&client, &large).await);
        assert_eq!(e.code, ErrorCode::MessageTooLarge, "{e}");
    }
    check_error(&raw(&client, &large[..large.len() - 1000]).await, ErrorCode::MalformedFrame, "truncated");
    let mut longer = large.clone();
    longer.extend_from_slice(&[0u8; 10]);
    check_error(&raw(&client, &longer).await, ErrorCode::MalformedFrame, "more arrived");

    // Topics.
    check_client_error(
        admin.create_topic("", 1, TopicConfig::default()).await,
        ErrorCode::InvalidTopicName,
        "is empty",
    );
    check_client_error(
        admin.create_topic(&"t".repeat(250), 1, TopicConfig::default()).await,
        ErrorCode::InvalidTopicName,
        "limit is 249",
    );
    check_client_error(admin.create_topic("a/b", 1, TopicConfig::default()).await, ErrorCode::InvalidTopicName, "'/'");
    check_client_error(
        admin.create_topic("zero", 0, TopicConfig::default()).await,
        ErrorCode::InvalidPartitions,
        "partitions = 0",
    );
    check_client_error(
        admin.create_topic("absurd", 5_000_000, TopicConfig::default()).await,
        ErrorCode::InvalidPartitions,
        "max.partitions.per.topic",
    );
    check_client_error(
        admin.create_topic("ok", 1, TopicConfig::default()).await,
        ErrorCode::TopicAlreadyExists,
        "\"ok\"",
    );
    check_client_error(admin.describe_topic("missing").await, ErrorCode::UnknownTopic, "\"missing\"");

    // Offsets.
    let fetch = |offset: i64| FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![FetchPartition { topic: "ok".into(), partition: 0, offset, max_bytes: 1 << 20, module: None }],
        replica_reads: false,
    };
    for offset in [-5, 1_000_000_000_000] {
        let (response, _): (FetchResponse, _) =
            client.call(FrameKind::Fetch, &fetch(offset), Bytes::new()).await.unwrap();
        let e = response.partitions[0].error.clone().expect("out of range");
        assert_eq!(e.code, ErrorCode::OffsetOutOfRange, "{e}");
        assert!(e.message.contains(&format!("offset {offset}")), "{e}");
    }

    // Still serving on the same connection, and the good batch lands.
    let ok = raw(&client, &produce_frame("ok", 0, &good_batch(10))).await;
    let response: ProduceResponse = ok.header().unwrap();
    assert!(response.partitions[0].error.is_none(), "{:?}", response.partitions[0].error);
    assert_eq!(response.partitions[0].base_offset, 0, "nothing of the rejected batches was stored");
    assert_eq!(admin.list_topics().await.unwrap(), vec!["ok".to_owned()]);
    assert!(broker.is_running(), "the broker survived");
}
