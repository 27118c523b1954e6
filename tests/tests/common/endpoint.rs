//! A small HTTP/1.1 endpoint for connector tests: it records what it is sent and answers as
//! its handler says; it can be stopped (connections are then refused) and started again on
//! the same port. One connection at a time, Content-Length bodies only (what Weir's HTTP
//! connectors send), bounded sizes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| decode(v))
        })
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub type Handler = Arc<dyn Fn(&Request) -> (u16, Vec<u8>) + Send + Sync>;

pub struct Endpoint {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Request>>>,
    handler: Handler,
    /// Served over TLS with this configuration, if any.
    tls: Option<Arc<rustls::ServerConfig>>,
    running: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Endpoint {
    /// Answers 200 with an empty body.
    pub fn ok() -> Self {
        Self::start(Arc::new(|_| (200, Vec::new())))
    }

    pub fn start(handler: Handler) -> Self {
        Self::start_with(handler, None)
    }

    /// Answers 200 over TLS, with a certificate for 127.0.0.1 signed by itself; answers the
    /// endpoint and the certificate's PEM (for a client to trust).
    pub fn ok_over_tls() -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let pem = certified.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        (Self::start_with(Arc::new(|_| (200, Vec::new())), Some(Arc::new(config))), pem)
    }

    fn start_with(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut endpoint = Self { addr, received: Arc::default(), handler, tls, running: None };
        endpoint.serve(listener);
        endpoint
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (received, handler, stopping) = (self.received.clone(), self.handler.clone(), stop.clone());
        let tls = self.tls.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                        let _ = match &tls {
                            None => answer(stream, &received, &handler),
                            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                                Ok(conn) => answer(rustls::StreamOwned::new(conn, stream), &received, &handler),
                                Err(_) => Ok(()),
                            },
                        };
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.running = Some((stop, thread));
    }

    /// Closes the listener: connections are refused until `restart`.
    pub fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = thread.join();
        }
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let listener = TcpListener::bind(self.addr).unwrap();
        self.serve(listener);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut stream: impl Read + Write, received: &Mutex<Vec<Request>>, handler: &Handler) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || headers.len() > 100 {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    assert!(length <= 64 << 20, "a test body of {length} bytes");
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    drop(reader);
    let request = Request { method, target, headers, body };
    let (status, reply) = handler(&request);
    if (200..300).contains(&status) {
        received.lock().unwrap().push(request);
    }
    write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", reply.len())?;
    stream.write_all(&reply)?;
    stream.flush()
}
