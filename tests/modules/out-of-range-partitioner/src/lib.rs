//! Broken: answers a partition past the topic's partition count.

use weir_plugin::{partitioner, Error, Record};

#[partitioner]
fn past_the_end(_record: &Record, partition_count: u32) -> Result<u32, Error> {
    Ok(partition_count + 5)
}
