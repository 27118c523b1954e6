//! Hostile: never returns. The broker must interrupt it at its deadline.

use weir_plugin::{transform, Error, Output, Record};

#[transform]
fn spin(record: Record) -> Result<Vec<Output>, Error> {
    let mut n: u64 = record.offset as u64;
    loop {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}
