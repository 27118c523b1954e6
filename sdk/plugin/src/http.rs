//! Outgoing HTTP for sources and sinks, over wasi:http.
//!
//! A connector may reach only the `host:port` entries its deployment lists in `http_allow`;
//! the broker refuses anything else (and a granted name that resolves to a loopback, private
//! or link-local address) and shows why in the connector's status. Requests are blocking: the
//! call waits for the answer, within the deployment's `deadline_ms`.
//!
//! ```no_run
//! # fn deliver(url: &str, body: &[u8]) -> Result<(), weir_plugin::Error> {
//! let response = weir_plugin::http::Request::post(url, "application/x-ndjson", body).send()?;
//! if !(200..300).contains(&response.status) {
//!     return Err(weir_plugin::Error::new(format!("{url} answered {}", response.status)));
//! }
//! # Ok(())
//! # }
//! ```

use crate::Error;

/// Largest response body [`Request::send`] reads unless told otherwise.
pub const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// An HTTP request to send.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `http://host[:port]/path?query` or `https://...`.
    pub url: &'a str,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: &'a [u8],
    /// The most response body bytes to read; a longer body fails the request.
    pub response_bytes_max: usize,
}

/// An answer: its status, headers and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

/// The parts of a URL wasi:http takes apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    pub https: bool,
    pub authority: &'a str,
    pub path_with_query: &'a str,
}

/// Splits `http://host:port/path?query`, saying what is wrong with it.
pub fn parse_url(url: &str) -> Result<Url<'_>, Error> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(Error::new(format!("URL {url:?} must start with http:// or https://")));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(Error::new(format!("URL {url:?} names no valid host")));
    }
    Ok(Url { https, authority, path_with_query: if path.is_empty() { "/" } else { path } })
}

impl<'a> Request<'a> {
    pub fn get(url: &'a str) -> Self {
        Self { method: "GET", url, headers: Vec::new(), body: &[], response_bytes_max: RESPONSE_BYTES_MAX }
    }

    pub fn post(url: &'a str, content_type: &str, body: &'a [u8]) -> Self {
        Self {
            method: "POST",
            url,
            headers: vec![("content-type".into(), content_type.as_bytes().to_vec())],
            body,
            response_bytes_max: RESPONSE_BYTES_MAX,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sends the request and reads the whole answer. Fails (naming the method and URL) when
    /// the broker refuses the destination, the connection fails, or the body is too long.
    pub fn send(&self) -> Result<Response, Error> {
        let url = parse_url(self.url)?;
        let mut request = self.clone();
        // A length, so that the body goes out in one piece rather than in chunks.
        if !request.body.is_empty() && request.headers.iter().all(|(k, _)| !k.eq_ignore_ascii_case("content-length")) {
            request.headers.push(("content-length".into(), request.body.len().to_string().into_bytes()));
        }
        imp::send(&request, &url).map_err(|why| Error::new(format!("{} {}: {why}", self.method, self.url)))
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
    use wasip2::io::streams::StreamError;

    use super::{Request, Response, Url};

    pub(super) fn send(request: &Request<'_>, url: &Url<'_>) -> Result<Response, String> {
        let entries: Vec<(String, Vec<u8>)> = request.headers.clone();
        let headers = Fields::from_list(&entries).map_err(|e| format!("a header is not allowed: {e:?}"))?;
        let outgoing = OutgoingRequest::new(headers);
        let method = match request.method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_owned()),
        };
        outgoing.set_method(&method).map_err(|()| "the method is not valid".to_owned())?;
        let scheme = if url.https { Scheme::Https } else { Scheme::Http };
        outgoing.set_scheme(Some(&scheme)).map_err(|()| "the scheme is not valid".to_owned())?;
        outgoing.set_authority(Some(url.authority)).map_err(|()| "the host is not valid".to_owned())?;
        outgoing.set_path_with_query(Some(url.path_with_query)).map_err(|()| "the path is not valid".to_owned())?;
        let body = outgoing.body().map_err(|()| "the request body was taken".to_owned())?;
        // Sent first, so that the host reads the body as it is written.
        let future = outgoing_handler::handle(outgoing, None).map_err(|e| format!("refused: {e}"))?;
        let mut sent = Ok(());
        {
            let stream = body.write().map_err(|()| "the request body stream was taken".to_owned())?;
            for chunk in request.body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    sent = Err(match e {
                        StreamError::LastOperationFailed(e) => format!("sending the body: {}", e.to_debug_string()),
                        StreamError::Closed => "sending the body: the connection closed".to_owned(),
                    });
                    break;
                }
            }
        }
        if sent.is_ok() {
            sent = OutgoingBody::finish(body, None).map_err(|e| format!("finishing the body: {e}"));
        }
        // A request the host refused or could not connect fails its body too; the answer says
        // why, so it is waited for either way.
        let response = loop {
            match future.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(e))) => return Err(e.to_string()),
                Some(Err(())) => return Err("the response was already taken".to_owned()),
                None => future.subscribe().block(),
            }
        };
        sent?;
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|()| "the response body was taken".to_owned())?;
        let mut bytes = Vec::new();
        {
            let stream = incoming.stream().map_err(|()| "the response body stream was taken".to_owned())?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => {
                        if bytes.len() + chunk.len() > request.response_bytes_max {
                            return Err(format!(
                                "the response body is longer than {} bytes",
                                request.response_bytes_max
                            ));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(format!("reading the response: {}", e.to_debug_string()))
                    }
                }
            }
        }
        drop(wasip2::http::types::IncomingBody::finish(incoming));
        Ok(Response { status, headers, body: bytes })
    }
}

/// Outside a broker (the host unit tests of a connector) there is no wasi:http.
#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{Request, Response, Url};

    pub(super) fn send(_request: &Request<'_>, _url: &Url<'_>) -> Result<Response, String> {
        Err("HTTP is available to a connector running in a broker only".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_or_say_what_is_wrong() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/in?x=1").unwrap(),
            Url { https: false, authority: "127.0.0.1:8080", path_with_query: "/in?x=1" }
        );
        assert_eq!(
            parse_url("https://api.example.com").unwrap(),
            Url { https: true, authority: "api.example.com", path_with_query: "/" }
        );
        assert_eq!(parse_url("http://h?q").unwrap().path_with_query, "?q");
        for bad in ["ftp://h/", "h/path", "http:///x", "http://user@h/", "http://a b/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let err = Request::get("http://h/").send().unwrap_err();
        assert!(err.message().starts_with("GET http://h/: HTTP is available"), "{}", err.message());
    }
}
