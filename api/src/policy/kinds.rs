//! Parameter kinds: what a template's `{name:kind}` accepts, each with its own validation.
//!
//! Hosts are strict on purpose: `ping` resolves names through `inet_aton(3)` first, which reads
//! `127.1`, `0x7f000001` or `017700000001` as addresses, so only a canonical dotted quad, a
//! plain IPv6 address or a DNS name of well-formed labels is accepted, and the audit trail
//! shows which address was meant.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// A parameter's kind, each with its own validation. No kind accepts a value starting with `-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A docker container name or id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
    Container,
    /// A systemd unit: `[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}`.
    Service,
    /// A DNS name (labels of letters, digits and inner hyphens, the last not all digits), an
    /// IPv4 address as four decimal numbers, or an IPv6 address without brackets or zone.
    Host,
    /// A decimal integer from 1 to 10000, without sign or leading zeros.
    Count,
}

impl ParamKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [ParamKind; 4] = [
        ParamKind::Container,
        ParamKind::Service,
        ParamKind::Host,
        ParamKind::Count,
    ];

    /// The kind as the template syntax names it (`{lines:count}`).
    pub fn keyword(self) -> &'static str {
        match self {
            ParamKind::Container => "container",
            ParamKind::Service => "service",
            ParamKind::Host => "host",
            ParamKind::Count => "count",
        }
    }

    /// The kind a keyword names, if any.
    pub fn from_keyword(keyword: &str) -> Option<ParamKind> {
        Self::ALL.into_iter().find(|k| k.keyword() == keyword)
    }

    /// What the kind is called in messages.
    pub fn label(self) -> &'static str {
        match self {
            ParamKind::Container => "container name",
            ParamKind::Service => "service name",
            ParamKind::Host => "host name or address",
            ParamKind::Count => "count",
        }
    }

    /// Checks one value; the error completes a sentence about the value ("must ...").
    pub fn validate(self, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.starts_with('-') {
            return Err("must not start with '-' (it would be read as an option)".into());
        }
        match self {
            ParamKind::Container => name_like(value, b"_.-"),
            ParamKind::Service => name_like(value, b"@._:-"),
            ParamKind::Host => validate_host(value),
            ParamKind::Count => {
                let n = if value.len() <= 5
                    && !value.starts_with('0')
                    && value.bytes().all(|b| b.is_ascii_digit())
                {
                    value.parse::<u32>().ok()
                } else {
                    None
                };
                match n {
                    Some(n) if (1..=10_000).contains(&n) => Ok(()),
                    _ => Err(
                        "must be a whole number from 1 to 10000, without sign or leading zeros"
                            .into(),
                    ),
                }
            }
        }
    }
}

/// `[A-Za-z0-9][A-Za-z0-9<extra>]{0,127}`.
fn name_like(value: &str, extra: &[u8]) -> Result<(), String> {
    if value.len() > 128 {
        return Err("must be at most 128 characters".into());
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or a digit".into());
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        let extra: String = extra.iter().map(|&b| b as char).collect();
        return Err(format!("must be letters, digits and {extra:?} only"));
    }
    Ok(())
}

/// A part of a dotted name that `inet_aton(3)` would read as a number (`127`, `0x7f`, `017`).
fn numberish(label: &str) -> bool {
    match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

fn validate_host(value: &str) -> Result<(), String> {
    if value.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if value.len() > 253 {
        return Err("must be a host name of at most 253 characters".into());
    }
    let labels: Vec<&str> = value.split('.').collect();
    // Anything inet_aton would take for an address must be the canonical dotted quad.
    if labels.len() <= 4 && labels.iter().all(|l| numberish(l)) {
        return match value.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => {
                Err("must be an IPv4 address written as four decimal numbers from 0 to 255".into())
            }
        };
    }
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !labels.iter().all(label_ok) {
        return Err(
            "must be a host name of dot-separated labels (1 to 63 letters, digits or inner \
             hyphens each) or an IP address without brackets"
                .into(),
        );
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(
            "must be a host name whose last label is not all digits, or an IP address".into(),
        );
    }
    Ok(())
}
