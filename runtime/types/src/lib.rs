//! The plugin types shared by the Wasm host (`weir-runtime`) and the metadata that records
//! deployments (`weir-meta`): what kind a plugin is and the limits of its calls. A crate of
//! its own so that the metadata knows these without depending on wasmtime.

/// What a plugin does, i.e. which world of the WIT package it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Transform,
    Partitioner,
    Validator,
    /// A connector that brings records in from outside (the `source` world).
    Source,
    /// A connector that delivers a topic's records outside (the `sink` world).
    Sink,
}

/// The current version of the `weir:plugin` package (`sdk/wit/plugin.wit`).
pub const CONTRACT_VERSION: &str = "0.2.3";

impl PluginKind {
    /// Every kind.
    pub const ALL: [PluginKind; 5] = [Self::Transform, Self::Partitioner, Self::Validator, Self::Source, Self::Sink];

    pub fn parse(s: &str) -> Result<Self, UnknownKind> {
        match s {
            "transform" => Ok(Self::Transform),
            "partitioner" => Ok(Self::Partitioner),
            "validator" => Ok(Self::Validator),
            "source" => Ok(Self::Source),
            "sink" => Ok(Self::Sink),
            other => Err(UnknownKind(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transform => "transform",
            Self::Partitioner => "partitioner",
            Self::Validator => "validator",
            Self::Source => "source",
            Self::Sink => "sink",
        }
    }

    /// Whether it is a connector (a source or a sink), run by `weir connector`.
    pub fn is_connector(self) -> bool {
        matches!(self, Self::Source | Self::Sink)
    }

    /// The interface a component of this kind exports under the current contract, without its
    /// version.
    pub fn interface(self) -> &'static str {
        self.exports_run()[0].0
    }

    /// The interface a component of this kind exports under the current contract.
    pub fn export_name(self) -> String {
        format!("{}@{CONTRACT_VERSION}", self.interface())
    }

    /// The exports of this kind the broker runs, newest first, each an interface and its
    /// contract version: 0.2.x (each 0.2 version only adds to the one before; a transform of
    /// 0.2.2 on exports `packed-transformer`, one of 0.2.0 or 0.2.1 `transformer`; 0.2.3 lets
    /// a packed answer point into the input), and 0.1.0 for the kinds it had.
    pub fn exports_run(self) -> &'static [(&'static str, &'static str)] {
        const TRANSFORMER: &str = "weir:plugin/transformer";
        const CHOOSER: &str = "weir:plugin/partition-chooser";
        const VALIDATOR: &str = "weir:plugin/record-validator";
        const SOURCE: &str = "weir:plugin/source-connector";
        const SINK: &str = "weir:plugin/sink-connector";
        match self {
            Self::Transform => &[
                ("weir:plugin/packed-transformer", "0.2.3"),
                ("weir:plugin/packed-transformer", "0.2.2"),
                (TRANSFORMER, "0.2.3"),
                (TRANSFORMER, "0.2.2"),
                (TRANSFORMER, "0.2.1"),
                (TRANSFORMER, "0.2.0"),
                (TRANSFORMER, "0.1.0"),
            ],
            Self::Partitioner => {
                &[(CHOOSER, "0.2.3"), (CHOOSER, "0.2.2"), (CHOOSER, "0.2.1"), (CHOOSER, "0.2.0"), (CHOOSER, "0.1.0")]
            }
            Self::Validator => &[
                (VALIDATOR, "0.2.3"),
                (VALIDATOR, "0.2.2"),
                (VALIDATOR, "0.2.1"),
                (VALIDATOR, "0.2.0"),
                (VALIDATOR, "0.1.0"),
            ],
            Self::Source => &[(SOURCE, "0.2.3"), (SOURCE, "0.2.2"), (SOURCE, "0.2.1")],
            Self::Sink => &[(SINK, "0.2.3"), (SINK, "0.2.2"), (SINK, "0.2.1")],
        }
    }
}

/// Per-call limits of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Longest one call (one batch) may run before it is interrupted.
    pub deadline_ms: u64,
    /// Most linear memory an instance may hold.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline_ms: 100, memory_bytes: 64 << 20 }
    }
}

impl Limits {
    pub const DEADLINE_MS_MAX: u64 = 60_000;
    pub const MEMORY_BYTES_MAX: u64 = 4 << 30;

    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.deadline_ms == 0 || self.deadline_ms > Self::DEADLINE_MS_MAX {
            return Err(LimitsError::DeadlineMs(self.deadline_ms));
        }
        if self.memory_bytes < (1 << 20) || self.memory_bytes > Self::MEMORY_BYTES_MAX {
            return Err(LimitsError::MemoryBytes(self.memory_bytes));
        }
        Ok(())
    }
}

/// A module kind that is not one of Weir's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl std::fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown module kind {:?}: use transform, partitioner, validator, source or sink", self.0)
    }
}

impl std::error::Error for UnknownKind {}

/// A call limit out of its range; says which and what the range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitsError {
    DeadlineMs(u64),
    MemoryBytes(u64),
}

impl LimitsError {
    /// The limit's name after a prefix (`deadline_ms`, `memory_bytes`), as settings spell it.
    pub fn setting(self) -> &'static str {
        match self {
            Self::DeadlineMs(_) => "deadline_ms",
            Self::MemoryBytes(_) => "memory_bytes",
        }
    }

    fn range(self) -> String {
        match self {
            Self::DeadlineMs(_) => format!("1 to {}", Limits::DEADLINE_MS_MAX),
            Self::MemoryBytes(_) => format!("1 MiB to {} bytes", Limits::MEMORY_BYTES_MAX),
        }
    }
}

impl std::fmt::Display for LimitsError {
    /// As a deployment's settings spell it (`deadline.ms`, `memory.bytes`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, value) = match *self {
            Self::DeadlineMs(v) => ("deadline.ms", v),
            Self::MemoryBytes(v) => ("memory.bytes", v),
        };
        write!(f, "{name} = {value} is out of range: {}", self.range())
    }
}

impl std::error::Error for LimitsError {}

impl LimitsError {
    /// As the broker's config spells it, after `prefix` (`module_deadline_ms`).
    pub fn as_setting(self, prefix: &str) -> String {
        let value = match self {
            Self::DeadlineMs(v) | Self::MemoryBytes(v) => v,
        };
        format!("{prefix}{} = {value} is out of range: {}", self.setting(), self.range())
    }
}

/// One entry of a connector's HTTP allowlist: a host name or IP address and a port, as
/// `host:port` (`[v6]:port` for an IPv6 address). The host may reach it over `http` or
/// `https`; a name must resolve to public addresses (see the runtime's address rule), while an
/// address written out grants exactly that address, loopback and private ones included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpTarget {
    /// Lowercase; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
}

impl HttpTarget {
    /// Most entries a connector's allowlist may hold.
    pub const ENTRIES_MAX: usize = 32;

    /// Reads `host:port`, saying what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad =
            |why: &str| Err(format!("http_allow entry {entry:?} {why}; write host:port, e.g. api.example.com:443"));
        if entry.len() > 262 {
            return bad("is longer than 262 bytes");
        }
        let (host, port, bracketed) = if let Some(rest) = entry.strip_prefix('[') {
            let Some((v6, port)) = rest.split_once("]:") else { return bad("opens a [ without ]:port") };
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return bad("holds no IPv6 address between [ and ]");
            }
            (v6, port, true)
        } else {
            let Some((host, port)) = entry.rsplit_once(':') else { return bad("has no port") };
            (host, port, false)
        };
        let Ok(port) = port.parse::<u16>() else { return bad("has a port that is not a number from 1 to 65535") };
        if port == 0 {
            return bad("has port 0");
        }
        let valid_name = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        };
        if !bracketed && !valid_name(host) {
            return bad("has no valid host name or address (an IPv6 address goes in brackets)");
        }
        Ok(Self { host: host.to_ascii_lowercase(), port })
    }

    /// The host is an IP address written out (which grants exactly that address).
    pub fn is_address(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl std::fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod http_target_tests {
    use super::HttpTarget;

    #[test]
    fn entries_parse_or_say_what_is_wrong() {
        let ok = |e: &str, host: &str, port: u16| {
            let t = HttpTarget::parse(e).unwrap_or_else(|err| panic!("{e}: {err}"));
            assert_eq!((t.host.as_str(), t.port), (host, port), "{e}");
            assert_eq!(HttpTarget::parse(&t.to_string()).unwrap(), t, "{e} round-trips");
        };
        ok("api.example.com:443", "api.example.com", 443);
        ok("API.Example.com:80", "api.example.com", 80);
        ok("127.0.0.1:8080", "127.0.0.1", 8080);
        ok("[::1]:9000", "::1", 9000);
        ok("localhost:1", "localhost", 1);
        assert!(HttpTarget::parse("127.0.0.1:8080").unwrap().is_address());
        assert!(!HttpTarget::parse("localhost:8080").unwrap().is_address());
        for (entry, why) in [
            ("api.example.com", "has no port"),
            ("api.example.com:0", "port 0"),
            ("api.example.com:99999", "not a number from 1 to 65535"),
            ("api.example.com:http", "not a number"),
            (":80", "no valid host"),
            ("a b:80", "no valid host"),
            ("-a.com:80", "no valid host"),
            ("a..com:80", "no valid host"),
            ("http://a.com:80", "no valid host"),
            ("[::1:80", "without ]:port"),
            ("[nope]:80", "no IPv6 address"),
            ("::1:80", "no valid host"),
        ] {
            let err = HttpTarget::parse(entry).expect_err(entry);
            assert!(err.contains(why) && err.contains("http_allow entry"), "{entry}: {err}");
        }
        assert!(HttpTarget::parse(&format!("{}:80", "a".repeat(300))).unwrap_err().contains("longer than 262"));
    }
}
