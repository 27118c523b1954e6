//! The native protocol front end: QUIC (quinn), ALPN `weir/1`, one request per bidirectional
//! stream. Only this module knows the frame format on the server side; it decodes, calls the
//! [`Broker`] service and encodes. A bad frame gets an error frame on its own stream; the
//! connection and the broker go on serving.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;
use weir_sdk::wire::*;
use weir_sdk::{ErrorCode, WireError};

use crate::service::Broker;

#[derive(Debug, Clone)]
pub struct QuicConfig {
    pub addr: SocketAddr,
    pub frame_bytes_limit: usize,
    pub connections_max: usize,
    pub streams_per_connection_max: usize,
}

pub struct QuicServer {
    endpoint: quinn::Endpoint,
}

impl QuicServer {
    pub fn bind(config: &QuicConfig, crypto: rustls::ServerConfig) -> anyhow::Result<Self> {
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let mut transport = weir_sdk::client::transport_config();
        transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(config.streams_per_connection_max as u32));
        server_config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(server_config, config.addr)?;
        Ok(Self { endpoint })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub async fn serve(&self, broker: Broker, config: QuicConfig) {
        let connections = Arc::new(Semaphore::new(config.connections_max));
        while let Some(incoming) = self.endpoint.accept().await {
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(limit = config.connections_max, remote = %incoming.remote_address(), "refusing connection: max.connections reached");
                incoming.refuse();
                continue;
            };
            let (broker, config) = (broker.clone(), config.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match incoming.await {
                    Ok(conn) => serve_connection(conn, broker, config).await,
                    Err(e) => tracing::debug!(error = %e, "handshake failed"),
                }
            });
        }
    }

    pub fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"shutting down");
    }
}

async fn serve_connection(conn: quinn::Connection, broker: Broker, config: QuicConfig) {
    let remote = conn.remote_address();
    tracing::debug!(%remote, "connection opened");
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "connection closed");
                return;
            }
        };
        let (broker, config) = (broker.clone(), config.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_stream(send, recv, &broker, &config).await {
                tracing::debug!(%remote, error = %e, "stream ended early");
            }
        });
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    broker: &Broker,
    config: &QuicConfig,
) -> anyhow::Result<()> {
    let chunks = match read_frame(&mut recv, config.frame_bytes_limit).await {
        Ok(frame) => match handle(broker, frame).await {
            Ok(Some((frame, extra))) => response_chunks(&frame, extra),
            Ok(None) => return Ok(()),
            Err(e) => response_chunks(&Frame::error(&e), Vec::new()),
        },
        Err(e) => {
            tracing::debug!(error = %e, "bad frame");
            let _ = recv.stop(quinn::VarInt::from_u32(1));
            response_chunks(&Frame::error(&e), Vec::new())
        }
    };
    let mut chunks = chunks;
    send.write_all_chunks(&mut chunks).await?;
    send.finish()?;
    // Wait for the peer to take the response before the stream is dropped.
    let _ = send.stopped().await;
    Ok(())
}

fn response_chunks(frame: &Frame, extra: Vec<Bytes>) -> Vec<Bytes> {
    if extra.is_empty() {
        return vec![frame.encode().freeze()];
    }
    // The frame's payload is the concatenation of `extra`: send the prefix and header, then the
    // stored batches as they are, without copying them into one buffer.
    let payload_len: usize = extra.iter().map(Bytes::len).sum();
    let mut head = Frame { kind: frame.kind, header: frame.header.clone(), payload: Bytes::new() }.encode();
    let total = head.len() - 4 + payload_len;
    head[..4].copy_from_slice(&(total as u32).to_be_bytes());
    let mut chunks = Vec::with_capacity(extra.len() + 1);
    chunks.push(head.freeze());
    chunks.extend(extra);
    chunks
}

/// Reads one frame, checking the length prefix against the limit before reading the rest.
async fn read_frame(recv: &mut quinn::RecvStream, frame_bytes_limit: usize) -> Result<Frame, WireError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match recv.read(&mut prefix[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) => {
                return Err(WireError::new(
                    ErrorCode::MalformedFrame,
                    format!("stream ended after {got} bytes, inside the 4-byte length prefix"),
                ))
            }
            Err(e) => return Err(WireError::new(ErrorCode::MalformedFrame, format!("reading frame: {e}"))),
        }
    }
    let declared = read_length_prefix(&prefix, frame_bytes_limit)?;
    // Grow with the bytes that actually arrive rather than trusting `declared` up front.
    let mut body = Vec::with_capacity(declared.min(64 * 1024));
    loop {
        match recv.read_chunk(declared - body.len() + 1, true).await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk.bytes);
                if body.len() > declared {
                    return Err(WireError::new(
                        ErrorCode::MalformedFrame,
                        format!("frame declares {declared} bytes after its length prefix but more arrived"),
                    ));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(WireError::new(ErrorCode::MalformedFrame, format!("reading frame: {e}"))),
        }
    }
    if body.len() != declared {
        return Err(WireError::new(
            ErrorCode::MalformedFrame,
            format!("truncated frame: declares {declared} bytes after its length prefix but {} arrived", body.len()),
        ));
    }
    Frame::decode_body(&body)
}

/// Decodes the request, calls the service, encodes the response. `None`: send nothing.
async fn handle(broker: &Broker, frame: Frame) -> Result<Option<(Frame, Vec<Bytes>)>, WireError> {
    let empty = Bytes::new;
    let reply = |kind, header: &dyn erased::Header| Frame { kind, header: header.json(), payload: empty() };
    let response = match frame.kind {
        FrameKind::CreateTopic => reply(frame.kind, &broker.create_topic(frame.header()?).await?),
        FrameKind::DeleteTopic => {
            let req: TopicNameRequest = frame.header()?;
            broker.delete_topic(&req.name).await?;
            reply(frame.kind, &Empty {})
        }
        FrameKind::ListTopics => reply(frame.kind, &ListTopicsResponse { topics: broker.list_topics() }),
        FrameKind::DescribeTopic => {
            let req: TopicNameRequest = frame.header()?;
            reply(frame.kind, &broker.describe_topic(&req.name)?)
        }
        FrameKind::AlterTopic => reply(frame.kind, &broker.alter_topic(frame.header()?).await?),
        FrameKind::Produce => {
            let req: ProduceRequest = frame.header()?;
            let acks = req.acks;
            let response = broker.produce(req, frame.payload).await?;
            if acks == Acks::None {
                return Ok(None);
            }
            reply(frame.kind, &response)
        }
        FrameKind::Fetch => {
            let (response, chunks) = broker.fetch(frame.header()?).await?;
            return Ok(Some((reply(frame.kind, &response), chunks)));
        }
        FrameKind::ListOffsets => reply(frame.kind, &broker.list_offsets(frame.header()?)?),
        FrameKind::Error => return Err(WireError::new(ErrorCode::InvalidRequest, "an error frame is not a request")),
    };
    Ok(Some((response, Vec::new())))
}

mod erased {
    use bytes::Bytes;

    /// Lets `handle` build response frames from differently typed headers with one closure.
    pub trait Header {
        fn json(&self) -> Bytes;
    }

    impl<T: serde::Serialize> Header for T {
        fn json(&self) -> Bytes {
            Bytes::from(serde_json::to_vec(self).expect("message types serialize"))
        }
    }
}
