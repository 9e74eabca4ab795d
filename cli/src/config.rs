//! Where the CLI finds its API: flags, then `SSHQ_API_URL`/`SSHQ_API_KEY`, then the config
//! file (`$SSHQ_CONFIG`, else `$XDG_CONFIG_HOME/sshq/config.toml`, else
//! `~/.config/sshq/config.toml`) with `api_url`, `api_key` and `ca_cert` (a PEM file of CA
//! certificates trusted for an `https://` API besides the platform's, relative to the file's
//! folder; `SSHQ_CA_CERT`, `--ca-cert`), and `client_cert`/`client_key` (a client certificate
//! and its key for mutual TLS, both or neither, relative like `ca_cert`;
//! `SSHQ_CLIENT_CERT`/`SSHQ_CLIENT_KEY`, `--client-cert`/`--client-key`).

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Config {
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    /// Relative to the config file's folder when given there, else to the working directory.
    pub ca_cert: Option<RelativePathBuf>,
    /// The client certificate (PEM) presented to an API that asks for one; with `client_key`.
    pub client_cert: Option<RelativePathBuf>,
    /// The private key (PEM) of `client_cert`.
    pub client_key: Option<RelativePathBuf>,
}

pub fn config_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SSHQ_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sshq").join("config.toml"))
}

/// The file, then the environment, then the flags (`overrides`), each over the one before.
pub fn load(overrides: &Config) -> Result<Config, Box<figment::Error>> {
    let mut figment = Figment::new();
    if let Some(file) = config_file() {
        figment = figment.merge(Toml::file(file));
    }
    figment
        .merge(Env::prefixed("SSHQ_").only(&[
            "api_url",
            "api_key",
            "ca_cert",
            "client_cert",
            "client_key",
        ]))
        .merge(Serialized::defaults(Overrides(overrides)))
        .extract()
        .map_err(Box::new)
}

/// Only the flags that were given, so an absent flag does not hide the environment.
struct Overrides<'a>(&'a Config);

impl Serialize for Overrides<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        if let Some(url) = &self.0.api_url {
            map.serialize_entry("api_url", url)?;
        }
        if let Some(key) = &self.0.api_key {
            map.serialize_entry("api_key", key)?;
        }
        if let Some(ca) = &self.0.ca_cert {
            map.serialize_entry("ca_cert", ca.original())?;
        }
        if let Some(cert) = &self.0.client_cert {
            map.serialize_entry("client_cert", cert.original())?;
        }
        if let Some(key) = &self.0.client_key {
            map.serialize_entry("client_key", key.original())?;
        }
        map.end()
    }
}
