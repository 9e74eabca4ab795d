//! Who may do what on NATS: the one permissions table of sshq's services and tenant
//! subscribers, and the nats-server configuration generated from it.
//!
//! Every subject family a service publishes or subscribes to is listed here, next to the
//! subject builders of [`crate::topology`] it mirrors; a new family is added in both places.
//! The table is rendered into a nats-server `accounts { SSHQ { users: [...] } }` block (see
//! [`ServerAuth::render`]); ops scripts write it with `sshq-api nats-config`, tests with
//! [`ServerAuth::render`] directly. Anonymous connections are refused (no `no_auth_user`).
//!
//! | identity    | publishes                                              | subscribes                     |
//! |-------------|--------------------------------------------------------|--------------------------------|
//! | `admin`     | everything (ops, tests, stream deletion)               | everything                     |
//! | `api`       | `<p>.evt.>` (the registry, requests, cancels, refusals), JetStream API of `<P>_LOG` except delete/purge | `<p>.evt.>`, `<p>.out.>`, `<p>.sec.>`, `<p>.projected.>`, `$SYS.REQ.USER.AUTH` (callout), own inbox |
//! | `worker`    | `<p>.evt.*.job.*.{started,outcome,attempt}`, `<p>.evt.*.policy.rejected`, `<p>.out.>`, `<p>.sec.>`, pull/ack of the `workers` consumer, direct get | `<p>.evt.*.job.*.cancel`, own inbox |
//! | `projector` | `<p>.projected.>`, its ordered consumers, direct get   | own inbox                      |
//! | tenant key  | nothing but its replay consumer's JetStream API        | `<p>.out.<t>.>` (+ `<p>.sec.<t>.>` for owner/administrator), its inbox |
//!
//! Services use the inbox prefix `_INBOX_<user>` ([`inbox_prefix`]), so no service reads
//! another's replies. A tenant's inbox prefix is `_INBOX_<tenant>_<key id>` and its replay
//! consumer is named `<tenant>_<key id>` ([`TenantGrant`]).

use std::fmt::Write as _;

/// The NATS account every sshq identity lives in (JetStream enabled).
pub const ACCOUNT: &str = "SSHQ";

/// A service identity of the deployment, one NATS user each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identity {
    /// Ops and tests: may do anything, including deleting the stream.
    Admin,
    Api,
    Worker,
    Projector,
}

impl Identity {
    pub const ALL: [Identity; 4] = [
        Identity::Admin,
        Identity::Api,
        Identity::Worker,
        Identity::Projector,
    ];

    pub fn user(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Api => "api",
            Identity::Worker => "worker",
            Identity::Projector => "projector",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.user() == s)
    }
}

/// The inbox prefix a client connected as `user` uses (and is allowed to subscribe to).
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Publish and subscribe allow-lists; everything not listed is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    /// Exceptions to `publish` (a deny wins over an allow).
    pub publish_deny: Vec<String>,
    pub subscribe: Vec<String>,
    /// May publish to the reply subject of a request it received (the callout responder).
    pub allow_responses: bool,
}

/// Which deployment prefix the permissions are for: one deployment's, or any (the test suite
/// shares one nats-server among tests that each use a prefix of their own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrefixScope {
    One(String),
    Any,
}

impl PrefixScope {
    fn prefix(&self) -> &str {
        match self {
            PrefixScope::One(p) => p,
            PrefixScope::Any => "*",
        }
    }

    /// The log stream's name (`<P>_LOG`), or `*` for any.
    fn stream(&self) -> String {
        match self {
            PrefixScope::One(p) => format!("{}_LOG", p.to_ascii_uppercase()),
            PrefixScope::Any => "*".into(),
        }
    }

    /// A key-value bucket of the deployment (`<P>_<NAME>`), or `*` for any.
    fn bucket(&self, name: &str) -> String {
        match self {
            PrefixScope::One(p) => format!("{}_{name}", p.to_ascii_uppercase()),
            PrefixScope::Any => "*".into(),
        }
    }
}

/// The JetStream calls and subjects a key-value bucket takes: create or look up its stream,
/// read (direct get), write, delete and list its keys (an ordered consumer on it).
fn bucket_calls(bucket: &str) -> Vec<String> {
    let stream = if bucket == "*" {
        "*".to_owned()
    } else {
        format!("KV_{bucket}")
    };
    vec![
        format!("$KV.{bucket}.>"),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
    ]
}

/// The JetStream API calls every service makes at start ([`crate::topology::Topology::ensure`]):
/// read and create the log stream (creating an existing stream with another config fails, so
/// this destroys nothing; only the API may update it, and nobody but admin may delete or purge
/// it), and look up or create the workers' durable consumer.
fn ensure_calls(stream: &str) -> Vec<String> {
    let workers = crate::topology::Topology::WORKERS;
    vec![
        "$JS.API.INFO".into(),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{workers}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{workers}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{workers}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{workers}"),
        // Direct get: the last message of a subject, or a message by sequence.
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
    ]
}

/// The permissions of one service identity.
pub fn service_permissions(identity: Identity, scope: &PrefixScope) -> Option<Permissions> {
    let p = scope.prefix();
    let s = scope.stream();
    let inbox = format!("{}.>", inbox_prefix(identity.user()));
    let mut publish = ensure_calls(&s);
    let permissions = match identity {
        Identity::Admin => return None,
        Identity::Api => {
            publish.extend([
                // Every event the API appends: registry, requests, cancels, refusals, presence.
                format!("{p}.evt.>"),
                // Interactive shells: open one on a worker (a request), send it keystrokes and
                // control messages.
                format!("{p}.shell.*.*.open"),
                format!("{p}.shell.*.*.in"),
                // A log made before per-message TTLs gets them switched on (`ensure`).
                format!("$JS.API.STREAM.UPDATE.{s}"),
                // Ordered consumers (template registry reads): created, pulled, looked up.
                format!("$JS.API.CONSUMER.CREATE.{s}"),
                format!("$JS.API.CONSUMER.CREATE.{s}.>"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{s}.*"),
                format!("$JS.API.CONSUMER.INFO.{s}.*"),
                // Ordered consumers delete the one they replace.
                format!("$JS.API.CONSUMER.DELETE.{s}.*"),
                format!("$JS.API.STREAM.MSG.GET.{s}"),
            ]);
            // Shell tickets, shared by every API process.
            publish.extend(bucket_calls(&scope.bucket("SHELL_TICKETS")));
            Permissions {
                publish,
                publish_deny: vec![format!(
                    "$JS.API.CONSUMER.DELETE.{s}.{}",
                    crate::topology::Topology::WORKERS
                )],
                subscribe: vec![
                    format!("{p}.evt.>"),
                    format!("{p}.out.>"),
                    format!("{p}.sec.>"),
                    format!("{p}.projected.>"),
                    // Shells' output, heartbeats and endings (the bridge and watchers).
                    format!("{p}.shell.*.*.out"),
                    // Auth callout requests (only delivered where the server has callout on).
                    "$SYS.REQ.USER.AUTH".into(),
                    inbox,
                ],
                allow_responses: true,
            }
        }
        Identity::Worker => {
            let workers = crate::topology::Topology::WORKERS;
            publish.extend([
                format!("{p}.evt.*.job.*.started"),
                format!("{p}.evt.*.job.*.outcome"),
                format!("{p}.evt.*.job.*.attempt"),
                // Requests it refuses (not signed by the API) are audited here.
                format!("{p}.evt.*.policy.rejected"),
                // Every channel it opens is a session: start, recording frames, end.
                format!("{p}.evt.*.session.>"),
                // The bootstrap tenant's SSH identity, imported once from SSHQ_SSH_KEY.
                format!("{p}.evt.*.ssh.identity"),
                format!("{p}.out.>"),
                format!("{p}.sec.>"),
                // A batch's live progress (core NATS, not stored).
                format!("{p}.batch.>"),
                // Shells it holds: output, heartbeats, endings.
                format!("{p}.shell.*.*.out"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{s}.{workers}"),
                format!("$JS.ACK.{s}.{workers}.>"),
            ]);
            // Batches' run slots and counts, shared by every worker process.
            publish.extend(bucket_calls(&scope.bucket("BATCH_SLOTS")));
            publish.extend(bucket_calls(&scope.bucket("BATCH_COUNTS")));
            Permissions {
                publish,
                // The key-value calls above name any consumer of a bucket's stream, which with
                // `--any-prefix` matches the log's too: never the workers' consumer.
                publish_deny: vec![format!("$JS.API.CONSUMER.DELETE.{s}.{workers}")],
                subscribe: vec![
                    format!("{p}.evt.*.job.*.cancel"),
                    // Shell opens (a queue group of every worker) and a held shell's input.
                    format!("{p}.shell.*.*.open"),
                    format!("{p}.shell.*.*.in"),
                    inbox,
                ],
                // It answers shell opens and closes on the requester's reply subject.
                allow_responses: true,
            }
        }
        Identity::Projector => {
            publish.extend([
                format!("{p}.projected.>"),
                // Its ordered consumer over the whole log, re-created from the checkpoint.
                format!("$JS.API.CONSUMER.CREATE.{s}"),
                format!("$JS.API.CONSUMER.CREATE.{s}.>"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{s}.*"),
                format!("$JS.API.CONSUMER.INFO.{s}.*"),
                // Ordered consumers delete the one they replace.
                format!("$JS.API.CONSUMER.DELETE.{s}.*"),
                format!("$JS.API.STREAM.MSG.GET.{s}"),
            ]);
            Permissions {
                publish,
                publish_deny: vec![format!(
                    "$JS.API.CONSUMER.DELETE.{s}.{}",
                    crate::topology::Topology::WORKERS
                )],
                subscribe: vec![inbox],
                allow_responses: false,
            }
        }
    };
    Some(permissions)
}

/// What a tenant's API key may do on NATS, as the auth callout grants it.
#[derive(Clone, Debug)]
pub struct TenantGrant {
    pub prefix: String,
    pub tenant: String,
    pub key_id: String,
    /// Owner and administrator keys also read the `sec` subjects (sensitive output).
    pub secrets: bool,
}

impl TenantGrant {
    /// The inbox prefix the client must set (nats-py: `inbox_prefix=`).
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX_{}_{}", self.tenant, self.key_id)
    }

    /// The one replay consumer name this key may create and use.
    pub fn consumer_name(&self) -> String {
        format!("{}_{}", self.tenant, self.key_id)
    }

    pub fn permissions(&self) -> Permissions {
        let (p, t) = (&self.prefix, &self.tenant);
        let s = format!("{}_LOG", p.to_ascii_uppercase());
        let c = self.consumer_name();
        let mut subscribe = vec![
            format!("{p}.out.{t}.>"),
            // Its batches' live progress (exit statuses and counts, no output).
            format!("{p}.batch.{t}.>"),
            format!("{}.>", self.inbox_prefix()),
        ];
        let mut publish = vec![
            // Only the filtered create subject, only on its own output: JetStream itself then
            // refuses a consumer over anything else.
            format!("$JS.API.CONSUMER.CREATE.{s}.{c}.{p}.out.{t}.>"),
            format!("$JS.API.CONSUMER.INFO.{s}.{c}"),
            format!("$JS.API.CONSUMER.DELETE.{s}.{c}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{s}.{c}"),
            format!("$JS.ACK.{s}.{c}.>"),
        ];
        if self.secrets {
            subscribe.push(format!("{p}.sec.{t}.>"));
            // Owners and administrators may watch their tenant's live shells.
            subscribe.push(format!("{p}.shell.{t}.*.out"));
            publish.push(format!("$JS.API.CONSUMER.CREATE.{s}.{c}.{p}.sec.{t}.>"));
        }
        Permissions {
            publish,
            publish_deny: Vec::new(),
            subscribe,
            allow_responses: false,
        }
    }
}

/// The auth callout part of a server's configuration.
#[derive(Clone, Debug)]
pub struct Callout {
    /// The public account nkey (`A…`) whose signature the server accepts on responses.
    pub issuer: String,
}

/// A nats-server authorization configuration: the SSHQ account, its service users with their
/// passwords, and optionally the auth callout for tenant keys.
#[derive(Clone, Debug)]
pub struct ServerAuth {
    pub scope: PrefixScope,
    /// One password per identity, in [`Identity::ALL`] order.
    pub passwords: Vec<(Identity, String)>,
    pub callout: Option<Callout>,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ServerAuth {
    /// Random passwords for every identity.
    pub fn generate(scope: PrefixScope, callout: Option<Callout>) -> Self {
        Self {
            scope,
            passwords: Identity::ALL
                .into_iter()
                .map(|i| (i, random_secret()))
                .collect(),
            callout,
        }
    }

    pub fn password(&self, identity: Identity) -> &str {
        self.passwords
            .iter()
            .find(|(i, _)| *i == identity)
            .map(|(_, p)| p.as_str())
            .unwrap_or_default()
    }

    /// `nats://<user>:<password>@<host:port>` for each of `hosts` (comma-separated).
    pub fn url(&self, identity: Identity, hosts: &[String]) -> String {
        hosts
            .iter()
            .map(|h| format!("nats://{}:{}@{h}", identity.user(), self.password(identity)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The configuration text, to include in (or prepend to) a nats-server config file.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# sshq NATS authorization, generated from schemas::nats_auth (do not edit).\n",
        );
        let _ = writeln!(
            out,
            "accounts {{\n  {ACCOUNT} {{\n    jetstream: enabled\n    users: ["
        );
        for (identity, password) in &self.passwords {
            let _ = write!(
                out,
                "      {{ user: {}, password: {}",
                quote(identity.user()),
                quote(password)
            );
            if let Some(perms) = service_permissions(*identity, &self.scope) {
                let deny = if perms.publish_deny.is_empty() {
                    String::new()
                } else {
                    format!(", deny: [{}]", list(&perms.publish_deny))
                };
                let _ = write!(
                    out,
                    ", permissions: {{ publish: {{ allow: [{}]{deny} }}, subscribe: {{ allow: [{}] }}",
                    list(&perms.publish),
                    list(&perms.subscribe)
                );
                if perms.allow_responses {
                    out.push_str(", allow_responses: true");
                }
                out.push_str(" }");
            }
            out.push_str(" }\n");
        }
        out.push_str("    ]\n  }\n}\n");
        if let Some(callout) = &self.callout {
            let users: Vec<String> = self
                .passwords
                .iter()
                .map(|(i, _)| i.user().to_owned())
                .collect();
            let _ = writeln!(
                out,
                "authorization {{\n  auth_callout {{\n    issuer: {}\n    auth_users: [{}]\n    account: {ACCOUNT}\n  }}\n}}",
                quote(&callout.issuer),
                list(&users)
            );
        }
        out
    }
}

/// 32 random bytes as hex, from the OS.
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Credentials taken out of a NATS URL list: `nats://user:pass@host` (user and password) or
/// `nats://token@host` (a token), the same for every server of the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlCredentials {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// The URLs without their credentials.
    pub servers: Vec<String>,
}

/// Splits credentials off comma-separated NATS URLs (async-nats ignores a URL's userinfo).
pub fn split_credentials(urls: &str) -> UrlCredentials {
    let mut creds = UrlCredentials::default();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (scheme, rest) = url.split_once("://").unwrap_or(("nats", url));
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((info, host)) => (Some(info), host),
            None => (None, rest),
        };
        if let Some(info) = userinfo
            && creds.user.is_none()
            && creds.token.is_none()
        {
            match info.split_once(':') {
                Some((user, pass)) => {
                    creds.user = Some(percent_decode(user));
                    creds.password = Some(percent_decode(pass));
                }
                None => creds.token = Some(percent_decode(info)),
            }
        }
        creds.servers.push(format!("{scheme}://{host}"));
    }
    creds
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_off_urls() {
        let c = split_credentials("nats://api:pw%40x@127.0.0.1:4222, nats://api:pw%40x@h2:4222");
        assert_eq!(c.user.as_deref(), Some("api"));
        assert_eq!(c.password.as_deref(), Some("pw@x"));
        assert_eq!(c.servers, ["nats://127.0.0.1:4222", "nats://h2:4222"]);
        let t = split_credentials("nats://sekrit@h:1");
        assert_eq!(t.token.as_deref(), Some("sekrit"));
        let none = split_credentials("nats://h:1");
        assert_eq!(
            none,
            UrlCredentials {
                servers: vec!["nats://h:1".into()],
                ..Default::default()
            }
        );
    }

    #[test]
    fn config_lists_every_identity_and_no_anonymous_user() {
        let auth = ServerAuth::generate(
            PrefixScope::One("sshq".into()),
            Some(Callout {
                issuer: "AABC".into(),
            }),
        );
        let text = auth.render();
        for identity in Identity::ALL {
            assert!(
                text.contains(&format!("user: \"{}\"", identity.user())),
                "{text}"
            );
        }
        assert!(!text.contains("no_auth_user"));
        assert!(text.contains("\"sshq.evt.*.job.*.started\""));
        assert!(!text.contains("STREAM.DELETE"));
        assert!(!text.contains("STREAM.PURGE"));
        assert!(text.contains("deny: [\"$JS.API.CONSUMER.DELETE.SSHQ_LOG.workers\"]"));
        let worker = service_permissions(Identity::Worker, &PrefixScope::Any).unwrap();
        assert!(!worker.publish.iter().any(|s| s.contains("STREAM.UPDATE")));
        assert!(!worker.publish.iter().any(|s| s.contains("_sys")));
        assert!(text.contains("auth_callout"));
    }

    #[test]
    fn tenant_grant_is_confined_to_its_tenant() {
        let grant = TenantGrant {
            prefix: "sshq".into(),
            tenant: "acme".into(),
            key_id: "0123456789ab".into(),
            secrets: false,
        };
        let perms = grant.permissions();
        assert!(
            perms
                .subscribe
                .iter()
                .all(|s| s.starts_with("sshq.out.acme.")
                    || s.starts_with("sshq.batch.acme.")
                    || s.starts_with("_INBOX_acme_"))
        );
        assert!(
            perms
                .publish
                .iter()
                .all(|s| s.contains("acme_0123456789ab"))
        );
        assert!(!perms.subscribe.iter().any(|s| s.contains(".sec.")));
        assert!(!perms.subscribe.iter().any(|s| s.contains(".shell.")));
    }

    /// Shell tickets are the API's alone; a tenant's owner or administrator may follow its
    /// shells' output and nothing else of a shell.
    #[test]
    fn shell_tickets_are_api_only_and_tenants_only_read_shell_output() {
        let scope = PrefixScope::One("sshq".into());
        let api = service_permissions(Identity::Api, &scope).unwrap();
        assert!(api.publish.contains(&"$KV.SSHQ_SHELL_TICKETS.>".to_owned()));
        assert!(
            api.publish
                .contains(&"$JS.API.STREAM.CREATE.KV_SSHQ_SHELL_TICKETS".to_owned())
        );
        for identity in [Identity::Worker, Identity::Projector] {
            let perms = service_permissions(identity, &scope).unwrap();
            assert!(
                !perms.publish.iter().any(|s| s.contains("SHELL_TICKETS")),
                "{identity:?}"
            );
        }
        let admin = TenantGrant {
            prefix: "sshq".into(),
            tenant: "acme".into(),
            key_id: "0123456789ab".into(),
            secrets: true,
        }
        .permissions();
        let shell: Vec<&String> = admin
            .subscribe
            .iter()
            .chain(&admin.publish)
            .filter(|s| s.contains(".shell."))
            .collect();
        assert_eq!(shell, [&"sshq.shell.acme.*.out".to_owned()]);
    }
}
