//! Hostile: allocates without end. The broker must stop it at its memory cap.

use weir_plugin::{transform, Error, Output, Record};

#[transform]
fn bomb(record: Record) -> Result<Vec<Output>, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![record.offset as u8; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}
