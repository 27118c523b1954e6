//! Starts real `weir serve` processes on free loopback ports with their own data folders, and
//! cleans them up.

#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_sdk::{Client, ClientConfig, TlsTrust};

/// A loopback port free for both TCP and UDP when picked, below the kernel's ephemeral range
/// (`ip_local_port_range`). A broker killed and restarted on the ports it had must find them
/// free again: a port of the ephemeral range can meanwhile go to any outgoing connection or
/// client endpoint on the machine (a restarted cluster node once found its registry port
/// taken), a port below it only to another pick. A port is handed out once per test process
/// (cargo runs one test binary at a time), so tests starting brokers in parallel never pick
/// the same one.
pub fn reserved_port() -> u16 {
    use rand::Rng;
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let from = 10_000;
    if low <= from + 1000 {
        // An unusual range: let the kernel choose, as the ephemeral range is nearly everything.
        return std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free port").port();
    }
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(from..low);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {from}..{low} after 1000 tries");
}

/// The `weir` binary next to the test executable (target/debug/weir). The README's test
/// command builds it before the tests run.
pub fn weir_bin() -> PathBuf {
    if let Ok(path) = std::env::var("WEIR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> dir");
    let bin = dir.join("weir");
    assert!(bin.exists(), "{} is missing: build it first with `cargo build -p weir-cli --bin weir`", bin.display());
    bin
}

pub struct BrokerProcess {
    pub data_dir: PathBuf,
    pub quic_addr: SocketAddr,
    pub kafka_addr: SocketAddr,
    pub registry_addr: SocketAddr,
    /// The web console, its JSON API and /metrics.
    pub console_addr: SocketAddr,
    pub extra_args: Vec<String>,
    child: Option<Child>,
    /// The listener addresses a launched broker will print, until they are read.
    pending: Option<std::sync::mpsc::Receiver<Vec<String>>>,
    _temp: Option<tempfile::TempDir>,
}

impl BrokerProcess {
    /// Starts a broker with a fresh data folder.
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra_args)
    }

    /// Starts a broker with these `weir.toml` settings, written beside its data.
    pub fn start_with_config(toml: &str) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let config = temp.path().join("weir.toml");
        std::fs::write(&config, toml).expect("write weir.toml");
        let config = config.to_str().expect("utf-8 path").to_owned();
        Self::start_in(temp, &["--config", &config])
    }

    /// Starts a broker process with a fresh data folder and returns at once; call
    /// [`BrokerProcess::await_listeners`] before talking to it. Cluster nodes are started so:
    /// each waits for a majority of the controller voters before it listens.
    pub fn launch(extra_args: &[&str]) -> Self {
        let mut broker = Self::unstarted(tempfile::tempdir().expect("temp dir"), extra_args);
        broker.launch_child();
        broker
    }

    fn start_in(temp: tempfile::TempDir, extra_args: &[&str]) -> Self {
        let mut broker = Self::unstarted(temp, extra_args);
        broker.spawn();
        broker
    }

    fn unstarted(temp: tempfile::TempDir, extra_args: &[&str]) -> Self {
        let data_dir = temp.path().to_path_buf();
        // Ports below the ephemeral range (see [`reserved_port`]): a restart asks for the same
        // ports again and must find them free.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 4 {
            let port = reserved_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let [quic_addr, kafka_addr, registry_addr, console_addr] =
            [ports[0], ports[1], ports[2], ports[3]].map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        Self {
            data_dir,
            quic_addr,
            kafka_addr,
            registry_addr,
            console_addr,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            pending: None,
            _temp: Some(temp),
        }
    }

    fn spawn(&mut self) {
        self.launch_child();
        self.await_listeners();
    }

    fn launch_child(&mut self) {
        let mut child = Command::new(weir_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--quic-addr")
            .arg(self.quic_addr.to_string())
            .arg("--kafka-addr")
            .arg(self.kafka_addr.to_string())
            .arg("--registry-addr")
            .arg(self.registry_addr.to_string())
            .arg("--console-addr")
            .arg(self.console_addr.to_string())
            .args(&self.extra_args)
            .env("RUST_LOG", std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "warn,weir=info,openraft=off".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let mut addrs = Vec::new();
            for line in lines.by_ref() {
                for scheme in ["udp://", "tcp://", "http://"] {
                    if let Some((_, rest)) = line.split_once(scheme) {
                        addrs.push(rest.split_whitespace().next().unwrap_or_default().to_owned());
                    }
                }
                if addrs.len() == 4 {
                    let _ = tx.send(addrs);
                    break;
                }
            }
            // Keep draining, so the broker never blocks on a full pipe.
            lines.for_each(drop);
        });
        self.child = Some(child);
        self.pending = Some(rx);
    }

    /// Waits until a launched broker prints its listeners, and takes their addresses.
    pub fn await_listeners(&mut self) {
        let Some(rx) = self.pending.take() else { return };
        // A broker that exits (a bad flag, a port taken) is reported at once, with its status.
        let deadline = Instant::now() + Duration::from_secs(30);
        let received = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                        self.child = None;
                        panic!("weir serve exited with {status} before listening (its stderr is above)");
                    }
                }
                other => break other,
            }
        };
        match received {
            Ok(addrs) => {
                let parse = |a: &str| a.parse::<SocketAddr>().unwrap_or_else(|e| panic!("listener address {a:?}: {e}"));
                for (asked, got) in
                    [&mut self.quic_addr, &mut self.kafka_addr, &mut self.registry_addr, &mut self.console_addr]
                        .into_iter()
                        .zip(&addrs)
                {
                    let got = parse(got);
                    assert!(asked.port() == 0 || *asked == got, "broker listens where asked: {asked} vs {got}");
                    *asked = got;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed before the listeners were printed: it exited.
                let status = self.child.take().map(|mut c| c.wait().expect("wait"));
                panic!("weir serve exited ({status:?}) before listening (its stderr is above)");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                self.kill9();
                panic!("weir serve did not report its listeners within 30 s");
            }
        }
    }

    /// SIGSTOP or SIGCONT the broker process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the broker runs");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.quic_addr.to_string(), TlsTrust::CaFile(self.cert_path()))
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.client_config()).await.expect("connect to broker")
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// SIGINT (Ctrl-C) and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").arg("-INT").arg(child.id().to_string()).status().expect("run kill");
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(status.success(), "broker exited with {status}");
                    return;
                }
                assert!(Instant::now() < deadline, "broker did not stop within 30 s of SIGINT");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the broker again on the same port and data folder.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.spawn();
    }

    /// Starts the broker again on the same ports and data folder without waiting for its
    /// listeners (a cluster node waits for a majority of voters first); see
    /// [`BrokerProcess::await_listeners`].
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "stop or kill the broker first");
        self.launch_child();
    }

    /// `host:port` of the Kafka listener, as Kafka clients take it.
    pub fn kafka_bootstrap(&self) -> String {
        self.kafka_addr.to_string()
    }

    /// Base URL of the schema registry REST API.
    pub fn registry_url(&self) -> String {
        format!("http://{}", self.registry_addr)
    }

    /// Base URL of the web console (pages, /api/v1, /metrics).
    pub fn console_url(&self) -> String {
        format!("http://{}", self.console_addr)
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

    /// Runs the `weir` CLI against this broker; returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let (ok, stdout, stderr) = self.cli_bytes(args, stdin.unwrap_or_default().as_bytes());
        (ok, String::from_utf8_lossy(&stdout).into_owned(), stderr)
    }

    /// As [`BrokerProcess::cli`], with any bytes in and out.
    pub fn cli_bytes(&self, args: &[&str], stdin: &[u8]) -> (bool, Vec<u8>, String) {
        let mut child = Command::new(weir_bin())
            .args(args)
            .arg("--bootstrap")
            .arg(self.quic_addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir cli");
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("stdin");
            input.write_all(stdin).expect("write stdin");
        }
        let out = child.wait_with_output().expect("cli output");
        (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a program to completion with a deadline; returns (success, stdout, stderr). Kills it
/// when the deadline passes.
pub fn run_with_deadline(command: &mut Command, timeout: Duration) -> (bool, String, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
    match status {
        Some(s) => (s.success(), out, err),
        None => (false, out, format!("{err}\n[killed after {timeout:?}]")),
    }
}

/// A Python script of tests/kafka_clients, with the interpreter the test command set up.
pub fn python_script(name: &str) -> Command {
    let mut command = Command::new(std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into()));
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("kafka_clients").join(name));
    command
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(addr, method, path, "Content-Type: application/vnd.schemaregistry.v1+json\r\n", body)
}

/// One request to the web console's API as its pages send it (JSON, with the header that
/// state-changing requests need); returns (status, the body as JSON, or as a JSON string when
/// it is not JSON).
pub fn console(addr: &str, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, text) =
        http_with(addr, method, path, "Content-Type: application/json\r\nx-weir-console: 1\r\n", body.as_bytes());
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// One HTTP/1.1 request with these header lines (each ending in CRLF); returns (status, body).
pub fn http_with(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // `headers` may name another host (as a page of another site would).
    let host = if headers.to_ascii_lowercase().contains("host:") { String::new() } else { format!("Host: {addr}\r\n") };
    let head = format!(
        "{method} {path} HTTP/1.1\r\n{host}{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    use std::io::{Read, Write};
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Sends one Kafka request on `stream` and reads its answer: (bytes sent, the answer after its
/// header).
pub fn kafka_call(
    stream: &mut std::net::TcpStream,
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    body: &dyn Fn(&mut bytes::BytesMut),
) -> (usize, bytes::Bytes) {
    try_kafka_call(stream, api_key, version, body).expect("the broker answers the Kafka request")
}

/// As [`kafka_call`], with the connection's failure (closed by the broker, say) as an error.
pub fn try_kafka_call(
    stream: &mut std::net::TcpStream,
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    body: &dyn Fn(&mut bytes::BytesMut),
) -> std::io::Result<(usize, bytes::Bytes)> {
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use std::io::{Read, Write};
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .encode(&mut buf, api_key.request_header_version(version))
        .unwrap();
    body(&mut buf);
    let sent = buf.len();
    stream.write_all(&i32::try_from(sent).unwrap().to_be_bytes())?;
    stream.write_all(&buf)?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let mut answer = vec![0u8; usize::try_from(i32::from_be_bytes(size)).unwrap()];
    stream.read_exact(&mut answer)?;
    let mut answer = bytes::Bytes::from(answer);
    ResponseHeader::decode(&mut answer, api_key.response_header_version(version)).unwrap();
    Ok((sent, answer))
}

/// An `Order` record (`id`: long, `item`: string) in the schema registry's wire format (magic
/// byte, schema id, Avro datum), as base64, after registering its schema under `subject`;
/// returns the schema id too.
pub fn avro_order(registry: &SocketAddr, subject: &str, id: i64, item: &str) -> (u32, String) {
    use base64::Engine;
    let schema =
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},{"name":"item","type":"string"}]}"#;
    let body = serde_json::json!({"schema": schema}).to_string();
    let (status, registered) =
        http(&registry.to_string(), "POST", &format!("/subjects/{subject}/versions"), body.as_bytes());
    assert_eq!(status, 200, "{registered}");
    let schema_id: u32 = serde_json::from_str::<serde_json::Value>(&registered).unwrap()["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .expect("a schema id");
    let parsed = apache_avro::Schema::parse_str(schema).unwrap();
    let mut order = apache_avro::types::Record::new(&parsed).unwrap();
    order.put("id", id);
    order.put("item", item);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend(apache_avro::to_avro_datum(&parsed, order).unwrap());
    (schema_id, base64::engine::general_purpose::STANDARD.encode(&framed))
}
