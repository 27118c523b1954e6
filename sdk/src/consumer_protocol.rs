//! Kafka's consumer protocol data as groups carry it (what a member is assigned), readable
//! without the client: the broker's console shows members' assignments with it.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::{Decodable, Message};

/// The partitions a member's assignment names (Kafka's `ConsumerProtocolAssignment`, any
/// version); empty bytes are an empty assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, u32)>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = read_version::<ConsumerProtocolAssignment>(&mut buf)?;
    let a = ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| format!("group assignment: {e}"))?;
    Ok(a.assigned_partitions
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(move |p| Some((t.topic.0.as_str().to_owned(), u32::try_from(*p).ok()?)))
        })
        .collect())
}

/// Reads the version prefix; a newer version than this build knows is read as the newest it
/// knows, as Kafka's consumer protocol only appends fields.
pub fn read_version<M: Message>(buf: &mut Bytes) -> Result<i16, String> {
    if buf.remaining() < 2 {
        return Err("consumer protocol data shorter than its version".into());
    }
    let version = buf.get_i16();
    if version < 0 {
        return Err(format!("consumer protocol version {version}"));
    }
    Ok(version.min(M::VERSIONS.max))
}
