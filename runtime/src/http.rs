//! Outgoing HTTP for connectors (wasi:http), only to what their config grants.
//!
//! The module builds requests with wasi:http as it would anywhere; the host sends them. Before
//! a byte leaves, the request's host and port must be an entry of the connector's
//! `http_allow`, and every address the host name resolves to is checked: a name may reach
//! public addresses only, so a module granted `api.example.com:443` cannot be pointed at a
//! loopback, private or link-local service by whoever answers its DNS. An address written in
//! the allowlist (`127.0.0.1:8080`) grants exactly that address. The connection then goes to
//! the address that was checked, never to a second lookup.
//!
//! A denied request fails that call with `HTTP-request-denied` (host not granted) or
//! `destination-IP-prohibited` (address not allowed); the host keeps the reason, which the
//! connector's status shows beside the module's own error.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};
use weir_plugin_types::HttpTarget;

/// Requests one instance may have open at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 16;
/// Longest a connection, or a response's first byte, may take when the module sets nothing
/// shorter (the call's deadline bounds it as well).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a response body may pause between two chunks.
const BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// What an instance may reach, and where the host notes what it refused.
pub(crate) struct HttpHooks {
    allow: Arc<[HttpTarget]>,
    denied: Denials,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The call's deadline: no wait of a request is longer.
    deadline: Duration,
}

impl HttpHooks {
    /// `in_flight` is the instance's (see [`request_slots`]), kept across its stores, so a
    /// connection left open by a failed call still counts.
    pub(crate) fn new(
        allow: Arc<[HttpTarget]>,
        denied: Denials,
        in_flight: Arc<tokio::sync::Semaphore>,
        deadline: Duration,
    ) -> Self {
        Self { allow, denied, in_flight, deadline }
    }
}

/// The open requests an instance may have.
pub(crate) fn request_slots() -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX))
}

/// The last request an instance's host refused and why, kept across the instance's stores
/// until the call that caused it takes it.
#[derive(Clone, Default)]
pub(crate) struct Denials(Arc<Mutex<Option<String>>>);

impl Denials {
    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Keeps `why`; true if it is the call's first refusal.
    fn note(&self, why: String) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).replace(why).is_none()
    }
}

/// Why an address may not be reached through a granted name, if it may not.
pub(crate) fn address_class(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_multicast() || v4.is_broadcast() || a >= 240 {
                Some("multicast or reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast or reserved")
            } else {
                None
            }
        }
    }
}

/// The host and port a request goes to (the scheme's port when it names none).
fn destination(request: &http::Request<WasiBody>) -> Result<(String, u16, bool), String> {
    let uri = request.uri();
    let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let authority = uri.authority().ok_or_else(|| format!("the request {uri} names no host"))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((host, port, https))
}

/// The granted entry the request matches and the address to connect to, or why not.
async fn check(allow: &[HttpTarget], host: &str, port: u16) -> Result<SocketAddr, (Error, String)> {
    let Some(entry) = allow.iter().find(|t| t.host == host && t.port == port) else {
        let granted = if allow.is_empty() {
            "none".to_owned()
        } else {
            allow.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        return Err((
            Error::HttpRequestDenied,
            format!("HTTP to {host}:{port} denied: it is not in the connector's http_allow ({granted})"),
        ));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        // An address written in the allowlist grants exactly that address.
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| (Error::DnsTimeout, format!("resolving {host} timed out")))?
        .map_err(|e| (Error::DestinationNotFound, format!("resolving {host}: {e}")))?
        .collect::<Vec<_>>();
    let mut refused = Vec::new();
    for addr in &resolved {
        match address_class(addr.ip()) {
            None => return Ok(*addr),
            Some(class) => refused.push(format!("{} ({class})", addr.ip())),
        }
    }
    if refused.is_empty() {
        return Err((Error::DestinationNotFound, format!("{host} resolves to no address")));
    }
    Err((
        Error::DestinationIpProhibited,
        format!(
            "HTTP to {entry} denied: {host} resolves to {}, which a granted name may not reach; grant the \
             address itself (e.g. {}:{port}) to allow it",
            refused.join(", "),
            resolved[0].ip()
        ),
    ))
}

/// Roots for `https`: the system's certificates, read once.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("this machine has no trusted root certificates (install ca-certificates)".to_owned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    config.clone().map(tokio_rustls::TlsConnector::from)
}

type SendFuture = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let allow = self.allow.clone();
        let denied = self.denied.clone();
        let in_flight = self.in_flight.clone();
        let deadline = self.deadline;
        Box::new(async move {
            // Logged once per call: a module looping on refused requests cannot flood the log.
            let deny = |(error, why): (Error, String)| {
                let why = crate::cut_text(why, crate::REASON_BYTES_MAX);
                if denied.note(why.clone()) {
                    tracing::warn!(target: "weir::plugin", "{why}");
                }
                error
            };
            let Ok(permit) = in_flight.try_acquire_owned() else {
                return Err(deny((
                    Error::ConnectionLimitReached,
                    format!("more than {REQUESTS_IN_FLIGHT_MAX} HTTP requests at once from one connector instance"),
                )));
            };
            let (host, port, https) = destination(&request).map_err(|why| deny((Error::HttpRequestUriInvalid, why)))?;
            let addr = check(&allow, &host, port).await.map_err(deny)?;
            let limit = |set: Option<Duration>, default: Duration| set.unwrap_or(default).min(default).min(deadline);
            let connect_timeout = limit(options.and_then(|o| o.connect_timeout), CONNECT_TIMEOUT);
            let first_byte_timeout = limit(options.and_then(|o| o.first_byte_timeout), FIRST_BYTE_TIMEOUT);
            let between_bytes = limit(options.and_then(|o| o.between_bytes_timeout), BETWEEN_BYTES_TIMEOUT);

            let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Connect)?;
            let _ = tcp.set_nodelay(true);
            let (mut sender, conn) = if https {
                let connector = tls_connector().map_err(|why| deny((Error::TlsProtocolError, why)))?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| deny((Error::TlsProtocolError, format!("{host} is not a name TLS can verify"))))?;
                let tls = tokio::time::timeout(connect_timeout, connector.connect(name, tcp))
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?
                    .map_err(|e| deny((Error::TlsCertificateError, format!("TLS with {host}:{port} failed: {e}"))))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                (sender, Box::pin(conn) as Connection)
            } else {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                (sender, Box::pin(conn) as Connection)
            };
            // The request line carries the path only; the host header says where it goes.
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
            *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
            // The connection is driven on its own task for as long as the response is read, and
            // no longer than the call may read it; the permit goes with it.
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let lifetime = deadline + CONNECT_TIMEOUT;
            tokio::spawn(async move {
                let result = tokio::time::timeout(lifetime, conn).await.unwrap_or(Ok(()));
                drop(permit);
                let _ = done_tx.send(result);
            });
            let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)??;
            let response = response.map(|body| TimedBody::new(body, between_bytes).boxed_unsync());
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
                match done_rx.await {
                    Ok(result) => result.map_err(Error::from),
                    Err(_) => Ok(()),
                }
            });
            Ok((response, io))
        })
    }
}

/// A connection's driver, plain or TLS.
type Connection = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// A response body that fails when it pauses longer than allowed between two chunks.
struct TimedBody {
    inner: hyper::body::Incoming,
    pause: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, pause: Duration) -> Self {
        Self { inner, pause, timer: Box::pin(tokio::time::sleep(pause)) }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.pause;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reach_public_addresses_only() {
        for (ip, class) in [
            ("127.0.0.1", Some("loopback")),
            ("127.9.9.9", Some("loopback")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("::", Some("unspecified")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("fd00::1", Some("private (unique local)")),
            ("169.254.169.254", Some("link-local")),
            ("fe80::1", Some("link-local")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("224.0.0.1", Some("multicast or reserved")),
            ("255.255.255.255", Some("multicast or reserved")),
            ("93.184.216.34", None),
            ("2606:2800:220:1:248:1893:25c8:1946", None),
            ("172.32.0.1", None),
        ] {
            assert_eq!(address_class(ip.parse().unwrap()), class, "{ip}");
        }
    }

    fn targets(entries: &[&str]) -> Vec<HttpTarget> {
        entries.iter().map(|e| HttpTarget::parse(e).unwrap()).collect()
    }

    #[tokio::test]
    async fn only_granted_hosts_and_ports_pass_and_names_may_not_reach_loopback() {
        let allow = targets(&["127.0.0.1:8080", "localhost:9000"]);
        assert_eq!(check(&allow, "127.0.0.1", 8080).await.unwrap(), "127.0.0.1:8080".parse().unwrap());
        let (error, why) = check(&allow, "127.0.0.1", 8081).await.unwrap_err();
        assert!(matches!(error, Error::HttpRequestDenied), "{error:?}");
        assert!(
            why.contains(
                "127.0.0.1:8081 denied: it is not in the connector's http_allow (127.0.0.1:8080, localhost:9000)"
            ),
            "{why}"
        );
        let (error, why) = check(&allow, "example.com", 8080).await.unwrap_err();
        assert!(matches!(error, Error::HttpRequestDenied) && why.contains("example.com:8080 denied"), "{why}");
        // A granted name that resolves to loopback is not a grant of loopback.
        let (error, why) = check(&allow, "localhost", 9000).await.unwrap_err();
        assert!(matches!(error, Error::DestinationIpProhibited), "{error:?}");
        assert!(
            why.contains("localhost resolves to")
                && why.contains("(loopback)")
                && why.contains("grant the address itself"),
            "{why}"
        );
        let (_, why) = check(&[], "127.0.0.1", 80).await.unwrap_err();
        assert!(why.contains("http_allow (none)"), "{why}");
    }
}
