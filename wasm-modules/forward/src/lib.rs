//! Forwards every record unchanged to the output topic, `copies` times (a deployment
//! parameter, 1 by default), with the borrowed API: the first copy of each record is answered
//! by reference to the input batch, so the module copies none of its bytes; further copies are
//! copied into the answer, as the contract wants each input byte forwarded once at most.

use std::sync::OnceLock;

use weir_plugin::{param, transform, Emitter, Error, RecordRef};

/// The `copies` parameter, read once per instance.
fn copies() -> Result<u32, Error> {
    static COPIES: OnceLock<Result<u32, String>> = OnceLock::new();
    COPIES
        .get_or_init(|| match param("copies") {
            None => Ok(1),
            Some(n) => n.parse().map_err(|e| format!("parameter copies={n:?}: {e}")),
        })
        .clone()
        .map_err(Error::new)
}

#[transform(borrowed)]
fn forward(record: RecordRef<'_>, out: &mut Emitter<'_>) -> Result<(), Error> {
    for _ in 0..copies()? {
        out.forward(&record);
    }
    Ok(())
}
