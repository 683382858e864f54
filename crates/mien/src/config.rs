//! `mien.toml`: every `mien run` option as a key, merged under the command line.
//!
//! The file is turned into the `mien run` flags it stands for and parsed by the same clap definition as
//! the command line, so a key accepts exactly what its flag accepts and the two can never drift apart
//! (a unit test checks that every flag has a key). Precedence, highest first: command-line flags,
//! environment variables (`MIEN_PLAN`, `MIEN_DETECTOR`, `MIEN_API_TOKEN`), the file, built-in defaults.
//! `mien config show` prints the effective settings with where each came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches, Subcommand};
use mien_config::{FileSetting, Key, Kind, KEYS};

/// Where the service looks for its settings when neither `--config` nor `$MIEN_CONFIG` says.
pub const SYSTEM_CONFIG: &str = "/etc/mien/mien.toml";

/// `mien run` arguments that are not settings of a run (and so have no key).
#[cfg(test)]
const NOT_SETTINGS: &[&str] = &["config", "help", "verbose", "no_track"];

/// Reads and checks a mien.toml: every key known and of the right type. Values are checked by
/// [`merge`], which parses them as the flags they stand for.
fn read_file(path: &Path) -> Result<Vec<FileSetting>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the config file", path.display()))?;
    mien_config::parse(&text).map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))
}

/// Where a setting's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into mien.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Environment(&'static str),
    /// A command-line flag.
    CommandLine,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Environment(var) => write!(f, "${var}"),
            Origin::CommandLine => f.write_str("command line"),
        }
    }
}

/// The environment variables `mien run` reads settings from, by argument id.
const ENVIRONMENT: &[(&str, &str)] = &[("plan", "MIEN_PLAN"), ("detector", "MIEN_DETECTOR"), ("api_token", "MIEN_API_TOKEN")];

/// `mien run`'s settings after merging the config file under the command line.
pub struct Merged {
    /// The merged arguments, as clap parsed them.
    pub matches: ArgMatches,
    /// The config file used, if any.
    pub file: Option<PathBuf>,
    origins: BTreeMap<&'static str, Origin>,
}

/// Which config file applies: `--config` or `$MIEN_CONFIG`, else /etc/mien/mien.toml when running as
/// a systemd service (systemd sets `$INVOCATION_ID` for the processes of a unit) and the file exists.
fn config_path(cli: &ArgMatches) -> Option<PathBuf> {
    if let Some(path) = cli.get_one::<PathBuf>("config") {
        return Some(path.clone());
    }
    let system = Path::new(SYSTEM_CONFIG);
    (std::env::var_os("INVOCATION_ID").is_some() && system.is_file()).then(|| system.to_path_buf())
}

/// Whether the command line or the environment set `key` (for `track`, either of its two flags).
fn outside_source(cli: &ArgMatches, key: &Key) -> Option<ValueSource> {
    let ids: &[&str] = if key.kind == Kind::Tracking { &["track", "no_track"] } else { std::slice::from_ref(&key.id) };
    ids.iter()
        .filter(|id| cli.try_contains_id(id).unwrap_or(false))
        .filter_map(|id| cli.value_source(id))
        .find(|s| matches!(s, ValueSource::CommandLine | ValueSource::EnvVariable))
}

/// Parses `mien run`'s arguments (`run_args`, after the subcommand) merged with its config file.
/// `run_command` is the clap command of `mien run`.
pub fn merge(run_command: &clap::Command, run_args: &[OsString]) -> Result<Merged> {
    let parse = |args: &[OsString]| {
        let argv = std::iter::once(OsString::from("mien run")).chain(args.iter().cloned());
        run_command.clone().try_get_matches_from(argv)
    };
    let cli = parse(run_args).unwrap_or_else(|e| e.exit());
    let Some(file) = config_path(&cli) else {
        let origins = origins(&cli, None, &[]);
        return Ok(Merged { matches: cli, file: None, origins });
    };
    tracing::info!("settings from {}", file.display());
    let settings: Vec<FileSetting> =
        read_file(&file)?.into_iter().filter(|s| outside_source(&cli, s.key).is_none()).collect();
    let mut args: Vec<OsString> = settings.iter().flat_map(|s| s.args.iter().cloned()).collect();
    args.extend(run_args.iter().cloned());
    let matches = match parse(&args) {
        Ok(matches) => matches,
        Err(error) => {
            // Name the first key that breaks the parse.
            let mut prefix = Vec::new();
            for setting in &settings {
                prefix.extend(setting.args.iter().cloned());
                let mut args = prefix.clone();
                args.extend(run_args.iter().cloned());
                if let Err(e) = parse(&args) {
                    bail!("{}: `{}`: {}", file.display(), setting.key.path(), clap_message(&e));
                }
            }
            bail!("{}: {}", file.display(), clap_message(&error));
        }
    };
    let origins = origins(&cli, Some(&file), &settings);
    Ok(Merged { matches, file: Some(file), origins })
}

/// A clap error's message on one line, without its "error: " and usage hints.
fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    // The message is the first paragraph (a list of missing arguments continues it on indented lines).
    let paragraph: Vec<&str> =
        rendered.lines().skip_while(|l| l.trim().is_empty()).take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = if paragraph.is_empty() { "invalid setting".to_string() } else { paragraph.join(" ") };
    message.trim_start_matches("error: ").replace("'--", "'").replace("the argument", "the setting").trim().to_string()
}

fn origins(
    cli: &ArgMatches,
    file: Option<&Path>,
    settings: &[FileSetting],
) -> BTreeMap<&'static str, Origin> {
    let mut origins = BTreeMap::new();
    for key in KEYS {
        let origin = match outside_source(cli, key) {
            Some(ValueSource::CommandLine) => Origin::CommandLine,
            Some(ValueSource::EnvVariable) => {
                Origin::Environment(ENVIRONMENT.iter().find(|(id, _)| *id == key.id).map_or("?", |(_, var)| var))
            }
            _ if settings.iter().any(|s| std::ptr::eq(s.key, key)) => Origin::File(file.unwrap_or(Path::new("?")).into()),
            _ => Origin::Default,
        };
        origins.insert(key.id, origin);
    }
    origins
}

impl Merged {
    /// Every key with its effective value (as text; `None` when unset) and origin, in file order.
    pub fn settings(&self) -> Vec<(String, Option<String>, Origin)> {
        KEYS.iter()
            .map(|key| {
                let raw = |id: &str| -> Vec<String> {
                    self.matches
                        .get_raw(id)
                        .map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect())
                        .unwrap_or_default()
                };
                let flag_set = |id: &str| self.matches.get_flag(id);
                let value = match key.kind {
                    Kind::Value | Kind::OptionalValue => {
                        let values = raw(key.id);
                        if key.id == "api_token" && !values.is_empty() {
                            Some("\"(set, not shown)\"".to_string())
                        } else {
                            values.first().map(|v| toml_value(v))
                        }
                    }
                    Kind::List | Kind::Map => {
                        let values = raw(key.id);
                        if values.is_empty() {
                            None
                        } else if key.kind == Kind::List {
                            Some(format!("[{}]", values.iter().map(|v| toml_value(v)).collect::<Vec<_>>().join(", ")))
                        } else {
                            let entries = values
                                .iter()
                                .filter_map(|v| v.split_once('='))
                                .map(|(k, v)| format!("{k} = {}", toml_value(v)))
                                .collect::<Vec<_>>();
                            Some(format!("{{ {} }}", entries.join(", ")))
                        }
                    }
                    Kind::Switch => Some(flag_set(key.id).to_string()),
                    Kind::InverseSwitch => Some((!flag_set(key.id)).to_string()),
                    Kind::Tracking => match (flag_set("track"), flag_set("no_track")) {
                        (true, _) => Some("true".into()),
                        (_, true) => Some("false".into()),
                        _ => None,
                    },
                };
                (key.path(), value, self.origins.get(key.id).cloned().unwrap_or(Origin::Default))
            })
            .collect()
    }
}

/// A value as TOML writes it: numbers bare, everything else quoted.
fn toml_value(text: &str) -> String {
    let number = text.parse::<f64>().is_ok_and(f64::is_finite) && !text.starts_with('+');
    if number {
        text.to_string()
    } else {
        toml::Value::String(text.to_string()).to_string()
    }
}

/// `mien config`: check a config file, or show the effective settings.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check a mien.toml: every key known, every value valid. Exits non-zero with a one-line error
    /// naming the key otherwise.
    Check(CheckArgs),
    /// The settings `mien run` would use, and where each came from (flag, environment, file, default).
    /// Run flags after `--` are taken into account, e.g. `mien config show -- --min-face 60`.
    Show(ShowArgs),
}

/// Arguments of `mien config check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The file to check.
    file: PathBuf,
    /// The result as JSON: {"file", "ok", "settings"} or {"file", "ok": false, "error"}.
    #[arg(long)]
    json: bool,
}

/// Arguments of `mien config show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// As a JSON array of {"key", "value", "origin"} (value null when unset).
    #[arg(long)]
    json: bool,
    /// `mien run` flags (including --config FILE), after `--`.
    #[arg(last = true, value_name = "RUN FLAGS")]
    run_flags: Vec<OsString>,
}

/// Checks a settings file as `mien run` would read it, without opening its plans; returns how many
/// settings it holds.
pub fn check_file(run_command: &clap::Command, file: &Path) -> Result<usize> {
    let mut run_args = vec![OsString::from("--config"), file.as_os_str().to_os_string()];
    // The default plan search must not decide whether a file is valid.
    run_args.extend(["--plan", "-", "--detector", "-"].map(OsString::from));
    let merged = merge(run_command, &run_args)?;
    crate::live::LiveArgs::from_arg_matches(&merged.matches).map_err(|e| anyhow::anyhow!("{}", clap_message(&e)))?;
    Ok(merged.origins.values().filter(|o| matches!(o, Origin::File(_))).count())
}

/// Runs `mien config`.
pub fn run(command: ConfigCommand, run_command: &clap::Command) -> Result<ExitCode> {
    match command {
        ConfigCommand::Check(args) => {
            match (check_file(run_command, &args.file), args.json) {
                (Ok(count), false) => println!("{}: ok ({count} settings)", args.file.display()),
                (Ok(count), true) => {
                    println!("{}", serde_json::json!({"file": args.file, "ok": true, "settings": count}))
                }
                (Err(e), false) => bail!("{e:#}"),
                (Err(e), true) => {
                    println!("{}", serde_json::json!({"file": args.file, "ok": false, "error": format!("{e:#}")}));
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Show(args) => {
            let merged = merge(run_command, &args.run_flags)?;
            let settings = merged.settings();
            let mut out = String::new();
            if args.json {
                let rows: Vec<_> = settings
                    .iter()
                    .map(|(key, value, origin)| {
                        let value = value.as_deref().map(toml_to_json);
                        serde_json::json!({"key": key, "value": value, "origin": origin.to_string()})
                    })
                    .collect();
                out = serde_json::to_string_pretty(&rows)? + "\n";
            } else {
                match &merged.file {
                    Some(file) => out.push_str(&format!("# config file: {}\n", file.display())),
                    None => out.push_str(&format!("# no config file (--config FILE, $MIEN_CONFIG, or {SYSTEM_CONFIG} for the service)\n")),
                }
                let mut section = "";
                for (key, value, origin) in &settings {
                    let (this_section, name) = key.split_once('.').unwrap_or(("", key));
                    if this_section != section {
                        section = KEYS.iter().find(|k| k.section == this_section).map_or("", |k| k.section);
                        out.push_str(&format!("\n[{section}]\n"));
                    }
                    match value {
                        Some(value) => out.push_str(&format!("{name} = {value}  # {origin}\n")),
                        None => out.push_str(&format!("# {name} = (not set)  # {origin}\n")),
                    }
                }
            }
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes to stdout; a reader that went away (`mien config show | head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// A TOML value written by [`Merged::settings`] as JSON.
fn toml_to_json(text: &str) -> serde_json::Value {
    match format!("v = {text}").parse::<toml::Table>() {
        Ok(mut table) => match table.remove("v") {
            Some(value) => serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        },
        Err(_) => serde_json::Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mien_config::{flag_of, key_of};
    use clap::CommandFactory;

    fn run_command() -> clap::Command {
        crate::Cli::command().find_subcommand("run").expect("mien run").clone()
    }

    #[test]
    fn every_run_flag_has_a_key_and_every_key_a_flag() {
        let command = run_command();
        let ids: Vec<String> = command.get_arguments().map(|a| a.get_id().to_string()).collect();
        for id in &ids {
            assert!(NOT_SETTINGS.contains(&id.as_str()) || key_of(id).is_some(), "`mien run` argument `{id}` has no mien.toml key");
        }
        for key in KEYS {
            assert!(ids.iter().any(|id| id == key.id), "key {} sets `{}`, which `mien run` lacks", key.path(), key.id);
            let flag = flag_of(key.id);
            let long = command.get_arguments().find(|a| a.get_id() == key.id).and_then(|a| a.get_long()).unwrap();
            assert_eq!(flag, format!("--{long}"), "key {}", key.path());
        }
    }

    #[test]
    fn the_shipped_file_lists_every_key_at_its_default() {
        let shipped = include_str!("../debian/mien.toml");
        // It parses as it is (every key commented out but the kiosk page's address and `quiet`).
        let settings = mien_config::parse(shipped).expect("shipped mien.toml parses");
        assert_eq!(settings.iter().map(|s| s.key.path()).collect::<Vec<_>>(), ["output.quiet", "http.listen"]);
        let command = run_command();
        for key in KEYS {
            let line = shipped
                .lines()
                .map(|l| l.trim_start_matches('#').trim())
                .find(|l| l.split_once('=').is_some_and(|(name, _)| name.trim() == key.name))
                .unwrap_or_else(|| panic!("the shipped mien.toml lacks {}", key.path()));
            let arg = command.get_arguments().find(|a| a.get_id() == key.id).unwrap();
            if let Some(default) = arg.get_default_values().first() {
                let value = line.split_once('=').unwrap().1.trim();
                let default = default.to_string_lossy();
                let same = value.trim_matches('"') == default
                    || value.parse::<f64>().ok().zip(default.parse::<f64>().ok()).is_some_and(|(a, b)| a == b);
                assert!(same || key.kind != Kind::Value, "{}: shipped {value}, default {default}", key.path());
            }
        }
    }

    fn merged(file: &str, flags: &[&str]) -> Result<Merged> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mien.toml");
        std::fs::write(&path, file).unwrap();
        let mut args: Vec<OsString> = vec!["--config".into(), path.into()];
        args.extend(flags.iter().map(OsString::from));
        merge(&run_command(), &args)
    }

    fn setting(merged: &Merged, key: &str) -> (Option<String>, String) {
        let (_, value, origin) = merged.settings().into_iter().find(|(k, _, _)| k == key).unwrap();
        let origin = match origin {
            Origin::File(_) => "file".to_string(),
            other => other.to_string(),
        };
        (value, origin)
    }

    #[test]
    fn flags_override_the_file_and_origins_say_so() {
        let m = merged("[detector]\nmin_face = 60\nmargin = 0.2\n[source]\ninput = \"a.png\"\n", &["--margin", "0.3"]).unwrap();
        assert_eq!(setting(&m, "detector.min_face"), (Some("60".into()), "file".into()));
        assert_eq!(setting(&m, "detector.margin"), (Some("0.3".into()), "command line".into()));
        assert_eq!(setting(&m, "tracking.smoothing"), (Some("0.4".into()), "default".into()));
        assert_eq!(setting(&m, "source.input"), (Some("[\"a.png\"]".into()), "file".into()));
        // Lists given on the command line replace the file's, not add to them.
        let m = merged("[source]\ninput = [\"a.png\", \"b.png\"]\n", &["--source", "c.png"]).unwrap();
        assert_eq!(setting(&m, "source.input"), (Some("[\"c.png\"]".into()), "command line".into()));
        // A switch on the command line beats the file's opposite.
        let m = merged("[tracking]\ntrack = true\n", &["--no-track"]).unwrap();
        assert_eq!(setting(&m, "tracking.track"), (Some("false".into()), "command line".into()));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = merged("[detector]\nmin_face = \"big\"\n", &[]).err().unwrap().to_string();
        assert!(err.ends_with("mien.toml: `detector.min_face`: invalid value 'big' for 'min-face <PX>': invalid float literal"), "{err}");
        let err = merged("[mqtt]\ndevice_id = \"lobby\"\n", &[]).err().unwrap().to_string();
        assert!(err.contains("`mqtt.device_id`: "), "{err}");
        assert!(err.contains("mqtt <URL>"), "{err}");
    }
}
