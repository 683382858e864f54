//! mien's MQTT output (`mien run --mqtt URL`): results into Home Assistant, Node-RED or a fleet
//! dashboard through a broker. The last stage of the data path (sink), like the kiosk server.
//!
//! Topics under `<prefix>/<device id>/`: `availability` (`online` retained; the will and a clean stop
//! say `offline`), `state` (retained, at most once per interval and on change), `events` (QoS 1: a face
//! appeared, changed expression, left) and `stats` (every 30 s); plus Home Assistant's discovery configs
//! under `<ha-prefix>/`. The pipeline never waits for the broker: [`MqttSink`] puts messages in a
//! bounded queue ([`QUEUE_CAPACITY`]) that a thread of its own drains into the client; when it is full
//! the oldest state goes first, then the oldest event, each counted.
#![warn(missing_docs)]

pub mod messages;
mod publisher;
mod queue;

use std::path::PathBuf;
use std::time::Duration;

pub use publisher::{MqttSink, Publisher};
pub use queue::QUEUE_CAPACITY;

/// Where the broker is: `mqtt://[user[:password]@]host[:port]` (1883) or `mqtts://...` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS (`mqtts`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name from the URL.
    pub username: Option<String>,
    /// Password from the URL (better kept in a file or the environment).
    pub password: Option<String>,
}

impl BrokerUrl {
    /// The URL without its password, for logs and errors.
    pub fn redacted(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        let user = self.username.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!("expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got `{text}`"));
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, address) = match rest.rsplit_once('@') {
            Some((c, a)) => (Some(c), a),
            None => (None, rest),
        };
        let (username, password) = match credentials {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = address.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| format!("`{text}`: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("`{text}`: port `{p}` is not a number"))?,
                None => default_port,
            };
            (host.to_string(), port)
        } else {
            match address.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("`{text}`: port `{p}` is not a number"))?),
                None => (address.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{text}`: expected a host name after the scheme"));
        }
        Ok(BrokerUrl { tls, host, port, username, password })
    }
}

/// Makes `text` usable as one MQTT topic level and a Home Assistant object id: lowercase ASCII
/// letters, digits, `-` and `_`; anything else becomes `_`.
pub fn mqtt_safe(text: &str) -> String {
    let safe: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if safe.is_empty() { "mien".into() } else { safe }
}

/// The default device id: this machine's host name, made MQTT-safe (stable across restarts).
pub fn default_device_id() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    mqtt_safe(hostname.trim())
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// The broker.
    pub url: BrokerUrl,
    /// User name (overrides the URL's).
    pub username: Option<String>,
    /// Password (overrides the URL's); never logged.
    pub password: Option<String>,
    /// This device's id in topics and Home Assistant.
    pub device_id: String,
    /// The first topic level.
    pub prefix: String,
    /// The state is published at most this often (and when it changes).
    pub interval: Duration,
    /// Stats every this long.
    pub stats_interval: Duration,
    /// Home Assistant's discovery prefix; None: no discovery.
    pub ha_prefix: Option<String>,
    /// CA certificate (PEM) for `mqtts://`; without it the system's roots are used.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that ask for one.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// Stop the run on a broker error instead of retrying.
    pub exit_on_error: bool,
}

impl MqttOptions {
    /// Defaults: the URL's credentials, the host name as device id, prefix `mien`, state every 1 s,
    /// stats every 30 s, discovery under `homeassistant`, retrying on errors.
    pub fn new(url: BrokerUrl) -> MqttOptions {
        MqttOptions {
            username: url.username.clone(),
            password: url.password.clone(),
            url,
            device_id: default_device_id(),
            prefix: "mien".into(),
            interval: Duration::from_secs(1),
            stats_interval: Duration::from_secs(30),
            ha_prefix: Some("homeassistant".into()),
            ca: None,
            client_auth: None,
            exit_on_error: false,
        }
    }

    /// `<prefix>/<device id>/<leaf>`.
    pub fn topic(&self, leaf: &str) -> String {
        format!("{}/{}/{leaf}", self.prefix, self.device_id)
    }
}

/// Why publishing could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// An option is wrong.
    #[error("{field}: {message}")]
    Option {
        /// The option, as the command line names it.
        field: &'static str,
        /// What was expected.
        message: String,
    },
    /// A certificate or key file could not be read.
    #[error("{}: {message}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The broker refused or failed, with --exit-on-mqtt-error.
    #[error("MQTT broker {broker}: {message}")]
    Broker {
        /// The broker (without password).
        broker: String,
        /// Why, on one line.
        message: String,
    },
    /// The publisher's thread could not start.
    #[error("cannot start the MQTT publisher: {0}")]
    Runtime(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_defaults_credentials_and_errors() {
        let url: BrokerUrl = "mqtt://broker.local".parse().unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port, url.username.clone()), (false, "broker.local", 1883, None));
        let url: BrokerUrl = "mqtts://kiosk:s3cret@10.0.0.2:8884/".parse().unwrap();
        assert_eq!((url.tls, url.port, url.username.as_deref(), url.password.as_deref()), (true, 8884, Some("kiosk"), Some("s3cret")));
        assert_eq!(url.redacted(), "mqtts://kiosk@10.0.0.2:8884");
        let url: BrokerUrl = "mqtts://[::1]".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8883));
        assert_eq!("http://x".parse::<BrokerUrl>().unwrap_err(), "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got `http://x`");
        assert_eq!("mqtt://host:port".parse::<BrokerUrl>().unwrap_err(), "`mqtt://host:port`: port `port` is not a number");
        assert!("mqtt://".parse::<BrokerUrl>().is_err());
    }

    #[test]
    fn device_ids_are_mqtt_safe() {
        assert_eq!(mqtt_safe("Kiosk 1.lobby/#+"), "kiosk_1_lobby___");
        assert_eq!(mqtt_safe(""), "mien");
        let id = default_device_id();
        assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'), "{id}");
    }
}
