//! `mien.toml`, the settings file of `mien run`: its sections and keys, each standing for one `mien run`
//! flag, and the parsing of a file's text into those flags.
//!
//! The binary parses the flags a file stands for with the same clap definition as its command line, so a
//! key accepts exactly what its flag accepts; this crate only knows the keys, their TOML types and the
//! flags they become, which keeps the parsing of untrusted text apart (and fuzzed: crates/mien-fuzz).
#![warn(missing_docs)]

use std::ffi::OsString;

/// How a key's TOML value becomes command-line arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string or number: `--flag VALUE`.
    Value,
    /// A string or an array of strings: `--flag A --flag B`.
    List,
    /// A table of strings: `--flag KEY=VALUE` per entry.
    Map,
    /// `true` gives `--flag`; `false` gives nothing.
    Switch,
    /// `false` gives `--flag` (a key that turns a default-on behaviour off); `true` gives nothing.
    InverseSwitch,
    /// A string gives `--flag=VALUE`, `true` the flag alone (its implied value), `false` nothing.
    OptionalValue,
    /// `true` gives `--track`, `false` `--no-track`; absent, the source decides.
    Tracking,
}

/// One key of mien.toml: its section, its name, the clap argument id it sets, and how.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Its [section].
    pub section: &'static str,
    /// Its name in the section.
    pub name: &'static str,
    /// The argument's id in `mien run` (the field name).
    pub id: &'static str,
    /// How its value becomes arguments.
    pub kind: Kind,
}

const fn key(section: &'static str, name: &'static str, id: &'static str, kind: Kind) -> Key {
    Key { section, name, id, kind }
}

/// Every key, in the order `mien config show` and the shipped mien.toml list them.
pub static KEYS: &[Key] = &[
    key("models", "plan", "plan", Kind::Value),
    key("models", "detector", "detector", Kind::Value),
    key("models", "threads", "threads", Kind::Value),
    key("models", "int8_path", "int8_path", Kind::Value),
    key("models", "f16_path", "f16_path", Kind::Value),
    key("source", "input", "source", Kind::List),
    key("source", "format", "format", Kind::Value),
    key("source", "size", "size", Kind::Value),
    key("source", "fps", "fps", Kind::Value),
    key("source", "timeout_ms", "timeout_ms", Kind::Value),
    key("source", "exit_on_camera_loss", "exit_on_camera_loss", Kind::Switch),
    key("source", "raw_format", "raw_format", Kind::Value),
    key("source", "raw_size", "raw_size", Kind::Value),
    key("source", "file_fps", "file_fps", Kind::Value),
    key("source", "loop", "looped", Kind::Switch),
    key("source", "max_fps", "max_fps", Kind::Value),
    key("source", "max_frames", "max_frames", Kind::Value),
    key("detector", "min_face", "min_face", Kind::Value),
    key("detector", "min_score", "min_score", Kind::Value),
    key("detector", "margin", "margin", Kind::Value),
    key("tracking", "track", "track", Kind::Tracking),
    key("tracking", "smoothing", "smoothing", Kind::Value),
    key("tracking", "switch_margin", "switch_margin", Kind::Value),
    key("tracking", "expiry_ms", "track_expiry_ms", Kind::Value),
    key("output", "json", "json", Kind::Switch),
    key("output", "quiet", "quiet", Kind::Switch),
    key("output", "save_crops", "save_crops", Kind::Value),
    key("http", "listen", "serve", Kind::OptionalValue),
    key("http", "api_token", "api_token", Kind::Value),
    key("http", "max_clients", "max_clients", Kind::Value),
    key("http", "preview", "preview", Kind::OptionalValue),
    key("http", "preview_width", "preview_width", Kind::Value),
    key("http", "preview_quality", "preview_quality", Kind::Value),
    key("http", "stale_after", "stale_after", Kind::Value),
    key("http", "cors_origin", "cors_origin", Kind::Value),
    key("http", "label_names", "label_name", Kind::Map),
    key("mqtt", "url", "mqtt", Kind::Value),
    key("mqtt", "device_id", "device_id", Kind::Value),
    key("mqtt", "prefix", "mqtt_prefix", Kind::Value),
    key("mqtt", "username", "mqtt_username", Kind::Value),
    key("mqtt", "password_file", "mqtt_password_file", Kind::Value),
    key("mqtt", "ca", "mqtt_ca", Kind::Value),
    key("mqtt", "cert", "mqtt_cert", Kind::Value),
    key("mqtt", "key", "mqtt_key", Kind::Value),
    key("mqtt", "interval", "mqtt_interval", Kind::Value),
    key("mqtt", "ha_prefix", "ha_prefix", Kind::Value),
    key("mqtt", "ha_discovery", "no_ha_discovery", Kind::InverseSwitch),
    key("mqtt", "exit_on_error", "exit_on_mqtt_error", Kind::Switch),
];

impl Key {
    /// `section.name`, as errors and `mien config show` name the key.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// The key of mien.toml that sets a `mien run` argument, by its id.
pub fn key_of(id: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.id == id || (k.kind == Kind::Tracking && id == "no_track"))
}

/// A setting the file gives: its key and the `mien run` arguments it stands for.
#[derive(Debug, Clone)]
pub struct FileSetting {
    /// The key.
    pub key: &'static Key,
    /// The arguments, e.g. `--min-face 60`.
    pub args: Vec<OsString>,
}

/// The settings in a mien.toml's text, or a one-line message naming the key (or line) and what was expected.
pub fn parse(text: &str) -> Result<Vec<FileSetting>, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let message = e.message().trim().replace('\n', "; ");
        match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        }
    })?;
    let mut settings = Vec::new();
    for (section, value) in &table {
        let Some(entries) = value.as_table() else {
            return Err(match closest(section, None) {
                Some(k) if k.name == section => {
                    format!("`{section}` belongs in the [{}] section (as `{}`)", k.section, k.path())
                }
                _ => format!(
                    "`{section}`: expected a section such as [models], [source], [detector], [tracking], [output], [http] or [mqtt]"
                ),
            });
        };
        if !KEYS.iter().any(|k| k.section == section) {
            let hint = closest_section(section).map(|s| format!("; did you mean [{s}]?")).unwrap_or_default();
            return Err(format!("unknown section [{section}]{hint}"));
        }
        for (name, value) in entries {
            let Some(key) = KEYS.iter().find(|k| k.section == section && k.name == name) else {
                let hint = closest(name, Some(section)).map(|k| format!("; did you mean `{}`?", k.path())).unwrap_or_default();
                return Err(format!("unknown key `{section}.{name}`{hint}"));
            };
            let args = to_args(key, value).map_err(|expected| format!("`{}`: expected {expected}", key.path()))?;
            settings.push(FileSetting { key, args });
        }
    }
    // The order of KEYS, whatever the file's: errors and `config show` read the same either way.
    settings.sort_by_key(|s| KEYS.iter().position(|k| std::ptr::eq(k, s.key)));
    Ok(settings)
}

fn closest(name: &str, section: Option<&str>) -> Option<&'static Key> {
    KEYS.iter()
        .map(|k| {
            let score = strsim::jaro_winkler(name, k.name) + if Some(k.section) == section { 0.05 } else { 0.0 };
            (score, k)
        })
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn closest_section(name: &str) -> Option<&'static str> {
    let mut sections: Vec<&str> = KEYS.iter().map(|k| k.section).collect();
    sections.dedup();
    sections
        .into_iter()
        .map(|s| (strsim::jaro_winkler(name, s), s))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
}

/// The flag of a `mien run` argument, by id.
pub fn flag_of(id: &str) -> String {
    format!("--{}", id.replace('_', "-")).replace("--looped", "--loop")
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// The arguments a key's value stands for, or what was expected instead.
fn to_args(key: &Key, value: &toml::Value) -> Result<Vec<OsString>, &'static str> {
    let flag = flag_of(key.id);
    let pair = |v: String| vec![OsString::from(&flag), OsString::from(v)];
    Ok(match key.kind {
        Kind::Value => pair(scalar(value).ok_or("a string or a number")?),
        Kind::List => match value {
            toml::Value::Array(items) => {
                let mut args = Vec::new();
                for item in items {
                    args.extend(pair(item.as_str().ok_or("a string or an array of strings")?.to_string()));
                }
                args
            }
            other => pair(other.as_str().ok_or("a string or an array of strings")?.to_string()),
        },
        Kind::Map => {
            let table = value.as_table().ok_or("a table of LABEL = \"NAME\" entries")?;
            let mut args = Vec::new();
            for (label, name) in table {
                args.extend(pair(format!("{label}={}", name.as_str().ok_or("a table of LABEL = \"NAME\" entries")?)));
            }
            args
        }
        Kind::Switch => match value.as_bool().ok_or("true or false")? {
            true => vec![OsString::from(flag)],
            false => vec![],
        },
        Kind::InverseSwitch => match value.as_bool().ok_or("true or false")? {
            true => vec![],
            false => vec![OsString::from(flag)],
        },
        Kind::OptionalValue => match value {
            toml::Value::Boolean(true) => vec![OsString::from(flag)],
            toml::Value::Boolean(false) => vec![],
            other => vec![OsString::from(format!("{flag}={}", scalar(other).ok_or("a string, true or false")?))],
        },
        Kind::Tracking => match value.as_bool().ok_or("true or false")? {
            true => vec![OsString::from("--track")],
            false => vec![OsString::from("--no-track")],
        },
    })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_the_flags_they_stand_for() {
        let text = r#"
            [models]
            plan = "a.mien"
            threads = 2
            [source]
            input = ["x.png", "y.png"]
            loop = true
            [tracking]
            track = false
            [http]
            listen = "127.0.0.1:9000"
            preview = true
            label_names = { happy = "fröhlich" }
            [mqtt]
            url = "mqtt://broker"
            ha_discovery = false
        "#;
        let args: Vec<String> = parse(text)
            .unwrap()
            .iter()
            .flat_map(|s| s.args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let expected = "--plan a.mien --threads 2 --source x.png --source y.png --loop --no-track \
                        --serve=127.0.0.1:9000 --preview --label-name happy=fröhlich --mqtt mqtt://broker --no-ha-discovery";
        assert_eq!(args.join(" "), expected);
    }

    #[test]
    fn unknown_keys_name_the_closest_valid_one() {
        let err = parse("[detector]\nmin_fase = 30\n").unwrap_err();
        assert_eq!(err, "unknown key `detector.min_fase`; did you mean `detector.min_face`?");
        let err = parse("[tracking]\nmin_face = 30\n").unwrap_err();
        assert_eq!(err, "unknown key `tracking.min_face`; did you mean `detector.min_face`?");
        let err = parse("[detecter]\nmin_face = 30\n").unwrap_err();
        assert_eq!(err, "unknown section [detecter]; did you mean [detector]?");
        let err = parse("min_face = 30\n").unwrap_err();
        assert_eq!(err, "`min_face` belongs in the [detector] section (as `detector.min_face`)");
        let err = parse("[http]\nlisten = [1]\n").unwrap_err();
        assert_eq!(err, "`http.listen`: expected a string, true or false");
        let err = parse("[output]\njson = \"yes\"\n").unwrap_err();
        assert_eq!(err, "`output.json`: expected true or false");
        let err = parse("[output]\njson = true\n[output]\n").unwrap_err();
        assert!(err.starts_with("line 3: "), "{err}");
    }
}
