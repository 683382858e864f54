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
        // An IPv6 address keeps its brackets, so the port stays apart from it.
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{user}{host}:{}", self.port)
    }
}

/// `text` with the password of its `user:password@` part (if any) replaced by `***`: what errors about
/// a URL that did not parse may show.
fn without_password(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_string() };
    match rest.rsplit_once('@') {
        Some((credentials, address)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{address}"),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

/// Whether `host` can be a host name or address: not empty, no spaces, control characters, or the
/// characters that delimit a URL's parts.
fn plausible_host(host: &str) -> bool {
    !host.is_empty() && !host.chars().any(|c| c.is_whitespace() || c.is_control() || "[]@/?#".contains(c))
}

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        // Errors name the URL, but never its password.
        let shown = without_password(given);
        let text = shown.as_str();
        let (tls, rest) = if let Some(rest) = given.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = given.strip_prefix("mqtts://") {
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
                None if after.is_empty() => default_port,
                None => return Err(format!("`{text}`: expected :PORT or nothing after the ] of the address, got `{after}`")),
            };
            (host.to_string(), port)
        } else {
            match address.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("`{text}`: port `{p}` is not a number"))?),
                None => (address.to_string(), default_port),
            }
        };
        if !plausible_host(&host) {
            return Err(format!("`{text}`: expected a host name or address after the scheme"));
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
        assert_eq!(url_after_redaction("mqtts://[::1]:8884"), "mqtts://[::1]:8884");
    }

    fn url_after_redaction(text: &str) -> String {
        let url: BrokerUrl = text.parse().unwrap();
        let shown = url.redacted();
        let again: BrokerUrl = shown.parse().unwrap();
        assert_eq!((again.host, again.port, again.password), (url.host, url.port, None));
        shown
    }

    #[test]
    fn broker_url_errors_never_show_the_password_and_odd_hosts_are_refused() {
        let err = "mqtt://kiosk:s3cret@host:port".parse::<BrokerUrl>().unwrap_err();
        assert_eq!(err, "`mqtt://kiosk:***@host:port`: port `port` is not a number");
        // Found by fuzzing: text after an IPv6 address's ] was ignored, and the host took brackets.
        let err = "mqtts://u@[fe80::1]junk".parse::<BrokerUrl>().unwrap_err();
        assert_eq!(err, "`mqtts://u@[fe80::1]junk`: expected :PORT or nothing after the ] of the address, got `junk`");
        for bad in ["mqtt://[[x]", "mqtt://a b", "mqtt://host?x=1", "mqtt://:1883"] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad} was accepted");
        }
        assert_eq!(url_after_redaction("mqtt://user@broker.local:1884"), "mqtt://user@broker.local:1884");
    }

    #[test]
    fn device_ids_are_mqtt_safe() {
        assert_eq!(mqtt_safe("Kiosk 1.lobby/#+"), "kiosk_1_lobby___");
        assert_eq!(mqtt_safe(""), "mien");
        let id = default_device_id();
        assert!(!id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'), "{id}");
    }
}
