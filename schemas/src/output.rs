//! Live output: raw bytes plus headers, readable by any plain NATS client.
//!
//! A job's output is published on `<prefix>.out.<tenant>.<job>.<part>`, where `<part>` is
//! `stdout`, `stderr` or `end`. The payload of a chunk is the raw bytes as the device wrote
//! them (not postcard, not base64), so `nats sub` or nats-py print it directly. Headers:
//!
//! | header            | on        | meaning                                                   |
//! |-------------------|-----------|-----------------------------------------------------------|
//! | `Sshq-Seq`        | all       | 0, 1, 2… per job across stdout, stderr and end: the order  |
//! | `Sshq-Status`     | end       | terminal job status (`finished`, `failed`, `timed_out`…)   |
//! | `Sshq-Exit-Status`| end       | the command's exit status, when it exited                  |
//! | `Sshq-Exit-Signal`| end       | the signal name, when a signal ended it                    |
//!
//! These messages are stored in the same stream as the events, so a late subscriber replays
//! a job from its start with any JetStream consumer filtered on `<prefix>.out.<tenant>.<job>.>`,
//! and the projector folds them into stored output in log order.

use async_nats::HeaderMap;
use bytes::Bytes;

pub const HEADER_SEQ: &str = "Sshq-Seq";
pub const HEADER_STATUS: &str = "Sshq-Status";
pub const HEADER_EXIT_STATUS: &str = "Sshq-Exit-Status";
pub const HEADER_EXIT_SIGNAL: &str = "Sshq-Exit-Signal";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub seq: u64,
    pub stream: OutputStream,
    pub data: Bytes,
}

/// The last output message of a job, for subscribers that want the outcome without decoding
/// events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputEnd {
    pub seq: u64,
    pub status: String,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputMessage {
    Chunk(OutputChunk),
    End(OutputEnd),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    #[error("unknown output part {0:?}")]
    UnknownPart(String),
    #[error("missing or malformed header {0}")]
    BadHeader(&'static str),
}

impl OutputMessage {
    pub fn seq(&self) -> u64 {
        match self {
            OutputMessage::Chunk(c) => c.seq,
            OutputMessage::End(e) => e.seq,
        }
    }

    /// The last subject token: `stdout`, `stderr` or `end`.
    pub fn part(&self) -> &'static str {
        match self {
            OutputMessage::Chunk(c) => c.stream.as_str(),
            OutputMessage::End(_) => "end",
        }
    }

    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_SEQ, self.seq().to_string().as_str());
        if let OutputMessage::End(end) = self {
            h.insert(HEADER_STATUS, end.status.as_str());
            if let Some(code) = end.exit_status {
                h.insert(HEADER_EXIT_STATUS, code.to_string().as_str());
            }
            if let Some(sig) = &end.exit_signal {
                h.insert(HEADER_EXIT_SIGNAL, sig.as_str());
            }
        }
        h
    }

    pub fn payload(&self) -> Bytes {
        match self {
            OutputMessage::Chunk(c) => c.data.clone(),
            OutputMessage::End(_) => Bytes::new(),
        }
    }

    /// Rebuilds a message from its subject's last token, headers and payload.
    pub fn parse(
        part: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
    ) -> Result<Self, OutputError> {
        let get = |name: &'static str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        let seq = get(HEADER_SEQ)
            .and_then(|v| v.parse().ok())
            .ok_or(OutputError::BadHeader(HEADER_SEQ))?;
        let chunk = |stream| {
            Ok(OutputMessage::Chunk(OutputChunk {
                seq,
                stream,
                data: payload.clone(),
            }))
        };
        match part {
            "stdout" => chunk(OutputStream::Stdout),
            "stderr" => chunk(OutputStream::Stderr),
            "end" => Ok(OutputMessage::End(OutputEnd {
                seq,
                status: get(HEADER_STATUS)
                    .ok_or(OutputError::BadHeader(HEADER_STATUS))?
                    .to_owned(),
                exit_status: match get(HEADER_EXIT_STATUS) {
                    None => None,
                    Some(v) => Some(
                        v.parse()
                            .map_err(|_| OutputError::BadHeader(HEADER_EXIT_STATUS))?,
                    ),
                },
                exit_signal: get(HEADER_EXIT_SIGNAL).map(str::to_owned),
            })),
            other => Err(OutputError::UnknownPart(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_messages_round_trip_through_headers() {
        let msgs = [
            OutputMessage::Chunk(OutputChunk {
                seq: 0,
                stream: OutputStream::Stdout,
                data: Bytes::from_static(b"\0\xffhi"),
            }),
            OutputMessage::Chunk(OutputChunk {
                seq: 1,
                stream: OutputStream::Stderr,
                data: Bytes::new(),
            }),
            OutputMessage::End(OutputEnd {
                seq: 2,
                status: "finished".into(),
                exit_status: Some(3),
                exit_signal: None,
            }),
            OutputMessage::End(OutputEnd {
                seq: 3,
                status: "finished".into(),
                exit_status: None,
                exit_signal: Some("KILL".into()),
            }),
        ];
        for m in msgs {
            let parsed = OutputMessage::parse(m.part(), Some(&m.headers()), m.payload()).unwrap();
            assert_eq!(parsed, m);
        }
    }

    #[test]
    fn malformed_output_is_rejected() {
        assert_eq!(
            OutputMessage::parse("stdout", None, Bytes::new()),
            Err(OutputError::BadHeader(HEADER_SEQ))
        );
        let mut h = HeaderMap::new();
        h.insert(HEADER_SEQ, "1");
        assert_eq!(
            OutputMessage::parse("exit", Some(&h), Bytes::new()),
            Err(OutputError::UnknownPart("exit".into()))
        );
    }
}
