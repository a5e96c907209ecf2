//! The flags of a [`Settings`] struct, made from its declaration ([`crate::settings`]): one flag per
//! setting, its help from the doc comment, `[default: …]` from the struct's `Default`, the value parsed
//! by clap for its [`Kind`]. [`Given`] keeps only the flags given on the command line, as a TOML table
//! that goes on top of the `--config` file's ([`Settings::from_layers`]).

use std::marker::PhantomData;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::settings::{Kind, Setting, Settings};

/// The settings of `S` given as flags, as TOML values under their keys.
#[derive(Debug, Clone)]
pub struct Given<S> {
    pub values: toml::Table,
    settings: PhantomData<S>,
}

impl<S> Default for Given<S> {
    fn default() -> Self {
        Given {
            values: toml::Table::new(),
            settings: PhantomData,
        }
    }
}

impl<S: Settings> Given<S> {
    /// The flags given, as `--name`, in declaration order.
    pub fn flags(&self) -> Vec<String> {
        S::SETTINGS
            .iter()
            .filter(|s| self.values.contains_key(&s.key()))
            .map(Setting::flag)
            .collect()
    }
}

/// The `[default: …]` of a setting's help, from the default value; `None` for a switch, an empty list
/// or an unset path.
fn default_text(value: Option<&toml::Value>) -> Option<String> {
    match value? {
        toml::Value::Boolean(_) => None,
        toml::Value::Array(items) if items.is_empty() => None,
        toml::Value::Array(items) => Some(
            items
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Float(f) if f.fract() == 0.0 => Some(format!("{f:.0}")),
        other => Some(other.to_string()),
    }
}

fn arg_of(setting: &Setting, default: Option<&toml::Value>) -> Arg {
    let mut help = setting.help();
    if let Some(d) = default_text(default) {
        help.push_str(&format!(" [default: {d}]"));
    }
    let arg = Arg::new(setting.field).long(setting.key()).help(help);
    let arg = match setting.kind {
        Kind::Real => arg.value_parser(clap::value_parser!(f64)),
        Kind::Count => arg.value_parser(clap::value_parser!(u64)),
        Kind::Switch => arg.action(ArgAction::SetTrue),
        Kind::Counts => arg
            .value_parser(clap::value_parser!(u64))
            .value_delimiter(',')
            .action(ArgAction::Set),
        Kind::Choice(words) => arg.value_parser(clap::builder::PossibleValuesParser::new(words)),
        Kind::Path => arg.value_parser(clap::value_parser!(std::path::PathBuf)),
    };
    match (setting.value_name, setting.kind) {
        (_, Kind::Switch) => arg,
        (Some(name), _) => arg.value_name(name),
        (None, Kind::Path) => arg.value_name("FILE"),
        (None, _) => arg.value_name(setting.field.to_uppercase()),
    }
}

/// The given value of `setting` as TOML.
fn value_of(setting: &Setting, m: &ArgMatches) -> Result<toml::Value, clap::Error> {
    let id = setting.field;
    let count = |v: &u64| i64::try_from(*v).map(toml::Value::Integer);
    let too_large = |_| {
        clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("{}: value too large\n", setting.flag()),
        )
    };
    Ok(match setting.kind {
        Kind::Real => toml::Value::Float(*m.get_one::<f64>(id).expect("given")),
        Kind::Count => count(m.get_one::<u64>(id).expect("given")).map_err(too_large)?,
        Kind::Switch => toml::Value::Boolean(m.get_flag(id)),
        Kind::Counts => toml::Value::Array(
            m.get_many::<u64>(id)
                .expect("given")
                .map(count)
                .collect::<Result<_, _>>()
                .map_err(too_large)?,
        ),
        Kind::Choice(_) => toml::Value::String(m.get_one::<String>(id).expect("given").clone()),
        Kind::Path => {
            let path = m.get_one::<std::path::PathBuf>(id).expect("given");
            toml::Value::String(path.to_str().map(String::from).ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidUtf8,
                    format!("{}: the path is not valid UTF-8\n", setting.flag()),
                )
            })?)
        }
    })
}

impl<S: Settings> clap::FromArgMatches for Given<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Given::default();
        for s in S::SETTINGS {
            if m.value_source(s.field) == Some(ValueSource::CommandLine) {
                given.values.insert(s.key(), value_of(s, m)?);
            }
        }
        Ok(given)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<S: Settings> clap::Args for Given<S> {
    fn augment_args(cmd: Command) -> Command {
        let defaults = S::default().to_table();
        S::SETTINGS
            .iter()
            .fold(cmd, |cmd, s| cmd.arg(arg_of(s, defaults.get(&s.key()))))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
