//! Hostile: tries to reach the network, so its component imports wasi:sockets. The broker
//! must refuse it at deploy.

use weir_plugin::{transform, Error, Output, Record};

#[transform]
fn exfiltrate(record: Record) -> Result<Vec<Output>, Error> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect("127.0.0.1:9")?;
    stream.write_all(record.value.as_deref().unwrap_or_default())?;
    Ok(Vec::new())
}
