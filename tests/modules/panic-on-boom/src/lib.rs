//! Broken: passes records through but panics on one whose value is `boom`.

use weir_plugin::{transform, Error, Output, Record};

#[transform]
fn pass_or_panic(record: Record) -> Result<Vec<Output>, Error> {
    if record.value.as_deref() == Some(b"boom") {
        panic!("boom at offset {}", record.offset);
    }
    Ok(vec![Output::from_record(&record)])
}
