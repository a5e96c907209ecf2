//! Settings declared once: `declare_settings!` turns one list of `name: type = default` lines, each
//! with its doc comment and an optional range check, into a plain struct (serde, kebab-case keys), its
//! `Default`, its validation and a table of [`Setting`] descriptors. The command line (`cli::settings`
//! builds the flags from the descriptors, help text and `[default: …]` included) and the `--config` TOML
//! files (the keys are the flag names without the dashes) both read that one declaration, so a new
//! setting is one line in one place.
//!
//! Input: a declaration. Output: `S: Settings`, whose values come from the defaults, then a `--config`
//! table, then the flags given ([`Settings::from_layers`]).
//!
//! Trap: a doc comment is the flag's `--help` text *and* the rustdoc of the field: write it for the
//! terminal (no intra-doc links), and put the default in the declaration, never in the text.

use std::path::PathBuf;

use crate::{Error, Result};

/// How a setting's value is written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A real number.
    Real,
    /// A non-negative integer.
    Count,
    /// A switch without a value: present = true.
    Switch,
    /// Comma-separated non-negative integers.
    Counts,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A file path.
    Path,
}

/// One setting of a [`Settings`] struct: what the command line and the `--config` reader need.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The field name (snake case); the flag and the TOML key are its kebab-case form ([`Setting::key`]).
    pub field: &'static str,
    /// The doc comment's lines.
    pub doc: &'static [&'static str],
    pub kind: Kind,
    /// The placeholder of the value in `--help` (`MIB`); `None` = from the kind.
    pub value_name: Option<&'static str>,
}

impl Setting {
    /// The TOML key and the flag without its dashes: `alpha-musc`.
    pub fn key(&self) -> String {
        self.field.replace('_', "-")
    }

    /// The flag: `--alpha-musc`.
    pub fn flag(&self) -> String {
        flag(self.field)
    }

    /// The doc comment as one paragraph of help text.
    pub fn help(&self) -> String {
        let lines: Vec<&str> = self.doc.iter().map(|l| l.trim()).collect();
        lines.join(" ")
    }
}

/// `--alpha-musc` for the field `alpha_musc`.
pub fn flag(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}

/// The [`Kind`] of each type a setting may have.
pub trait SettingValue {
    const KIND: Kind;
}

impl SettingValue for f64 {
    const KIND: Kind = Kind::Real;
}
impl SettingValue for usize {
    const KIND: Kind = Kind::Count;
}
impl SettingValue for u64 {
    const KIND: Kind = Kind::Count;
}
impl SettingValue for bool {
    const KIND: Kind = Kind::Switch;
}
impl SettingValue for Vec<usize> {
    const KIND: Kind = Kind::Counts;
}
impl SettingValue for PathBuf {
    const KIND: Kind = Kind::Path;
}
impl SettingValue for Option<PathBuf> {
    const KIND: Kind = Kind::Path;
}

/// Declares an enum's words as a [`Kind::Choice`] setting value; the enum's serde names must be the same
/// words (a test of each enum checks that every word reads back).
macro_rules! choice_setting {
    ($ty:ty, [$($word:literal),+ $(,)?]) => {
        impl $crate::settings::SettingValue for $ty {
            const KIND: $crate::settings::Kind = $crate::settings::Kind::Choice(&[$($word),+]);
        }
    };
}
pub(crate) use choice_setting;

/// A struct of settings made by `declare_settings!`.
pub trait Settings: Default + serde::Serialize + serde::de::DeserializeOwned {
    /// Every setting, in declaration order.
    const SETTINGS: &'static [Setting];

    /// Checks each value that has a range; the error names the flag.
    fn validate(&self) -> Result<()>;

    /// The settings from their layers: the defaults, then the keys of `file` that are settings of `Self`
    /// (taken out of it; `origin` is the file, named in errors), then `given` (the flags given on the
    /// command line, already of the right types). Validated.
    fn from_layers(
        file: &mut toml::Table,
        origin: Option<&std::path::Path>,
        given: &toml::Table,
    ) -> Result<Self> {
        let mut table = toml::Table::new();
        for s in Self::SETTINGS {
            if let Some(v) = file.remove(&s.key()) {
                table.insert(s.key(), v);
            }
        }
        let bad = |e: &dyn std::fmt::Display| match origin {
            Some(path) => Error::bad_input(path, format!("invalid --config file: {e}")),
            None => Error::Internal(format!("settings: {e}")),
        };
        // The file alone first, so that its mistakes are reported as the file's.
        let _: Self = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e| bad(&e))?;
        table.extend(given.clone());
        let settings: Self = toml::Value::Table(table).try_into().map_err(|e| {
            Error::Internal(format!(
                "settings from the command line do not read back: {e}"
            ))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// The values as a TOML table (the keys of a `--config` file; unset optional paths left out).
    fn to_table(&self) -> toml::Table {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(t)) => t,
            other => unreachable!("a settings struct is a table: {other:?}"),
        }
    }
}

/// Declares a settings struct: each line `name: Type = default` (optionally `, value_name = "X"` and
/// `, check = path::to::fn` where `fn(flag: &str, value: &Type) -> Result<()>`) with its doc comment. See
/// the module doc.
macro_rules! declare_settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr
                $(, value_name = $value_name:literal)?
                $(, check = $check:path)?
                ;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        impl $name {
            /// Checks each value that has a range; the error names the flag.
            pub fn validate(&self) -> $crate::Result<()> {
                $( $( $check(&$crate::settings::flag(stringify!($field)), &self.$field)?; )? )*
                Ok(())
            }
        }

        impl $crate::settings::Settings for $name {
            const SETTINGS: &'static [$crate::settings::Setting] = &[
                $( $crate::settings::Setting {
                    field: stringify!($field),
                    doc: &[$($doc),*],
                    kind: <$ty as $crate::settings::SettingValue>::KIND,
                    value_name: $crate::settings::declare_settings!(@value_name $($value_name)?),
                }, )*
            ];

            fn validate(&self) -> $crate::Result<()> {
                $name::validate(self)
            }
        }
    };
    (@value_name $v:literal) => { Some($v) };
    (@value_name) => { None };
}
pub(crate) use declare_settings;

/// Checks for `declare_settings!`: each names the flag in its error.
pub mod checks {
    use crate::{Error, Result};

    /// In (0, 1].
    pub fn fraction(flag: &str, v: &f64) -> Result<()> {
        if v.is_finite() && *v > 0.0 && *v <= 1.0 {
            Ok(())
        } else {
            Err(Error::bad_argument(flag, format!("{v} is outside (0, 1]")))
        }
    }

    /// In [0, 1].
    pub fn unit(flag: &str, v: &f64) -> Result<()> {
        if (0.0..=1.0).contains(v) {
            Ok(())
        } else {
            Err(Error::bad_argument(flag, format!("{v} is outside [0, 1]")))
        }
    }

    /// In [0, 100].
    pub fn percent(flag: &str, v: &f64) -> Result<()> {
        if (0.0..=100.0).contains(v) {
            Ok(())
        } else {
            Err(Error::bad_argument(
                flag,
                format!("{v} is outside [0, 100]"),
            ))
        }
    }

    /// Finite and ≥ 0.
    pub fn non_negative(flag: &str, v: &f64) -> Result<()> {
        if v.is_finite() && *v >= 0.0 {
            Ok(())
        } else {
            Err(Error::bad_argument(flag, format!("{v} must be ≥ 0")))
        }
    }

    /// ≥ 1.
    pub fn at_least_one(flag: &str, v: &usize) -> Result<()> {
        if *v >= 1 {
            Ok(())
        } else {
            Err(Error::bad_argument(flag, "must be at least 1"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    declare_settings! {
        /// A test struct.
        pub struct Demo {
            /// A fraction.
            /// Second line.
            ratio: f64 = 0.5, check = super::checks::fraction;
            /// Items.
            items: Vec<usize> = vec![1, 2], value_name = "LIST";
            /// On or off.
            on: bool = false;
        }
    }

    #[test]
    fn one_declaration_gives_struct_default_descriptors_and_checks() {
        let d = Demo::default();
        assert_eq!(
            (d.ratio, d.items.as_slice(), d.on),
            (0.5, &[1, 2][..], false)
        );
        let keys: Vec<String> = Demo::SETTINGS.iter().map(|s| s.key()).collect();
        assert_eq!(keys, ["ratio", "items", "on"]);
        assert_eq!(Demo::SETTINGS[0].help(), "A fraction. Second line.");
        assert_eq!(Demo::SETTINGS[1].value_name, Some("LIST"));
        assert_eq!(Demo::SETTINGS[2].kind, super::Kind::Switch);
        let err = Demo { ratio: 1.5, ..d }.validate().unwrap_err().to_string();
        assert!(err.contains("--ratio") && err.contains("1.5"), "{err}");
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let mut file: toml::Table = toml::from_str("ratio = 0.25\nitems = [7]\nother = 1").unwrap();
        let given: toml::Table = toml::from_str("items = [9, 9]").unwrap();
        let d = Demo::from_layers(&mut file, Some("c.toml".as_ref()), &given).unwrap();
        assert_eq!((d.ratio, d.items.as_slice()), (0.25, &[9, 9][..]));
        assert_eq!(
            file.keys().collect::<Vec<_>>(),
            ["other"],
            "other keys left"
        );
    }

    #[test]
    fn a_wrong_type_in_the_file_names_the_file_and_a_range_names_the_flag() {
        let mut file: toml::Table = toml::from_str("ratio = \"x\"").unwrap();
        let err = Demo::from_layers(&mut file, Some("c.toml".as_ref()), &toml::Table::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("ratio"), "{err}");
        let mut file: toml::Table = toml::from_str("ratio = 2.0").unwrap();
        let err = Demo::from_layers(&mut file, None, &toml::Table::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ratio"), "{err}");
    }
}
