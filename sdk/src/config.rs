//! Typed access to a Policy's `spec.config`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use crate::Config;

/// The Policy resource's `spec.config`, with parsing that produces messages an operator can act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl From<Config> for Params {
    fn from(config: Config) -> Self {
        Self {
            values: config.into_iter().collect(),
        }
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Params {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Self {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl Params {
    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Parses `key`, or returns `default` when it is absent.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| format!("config {key}={raw:?}: {e}")),
        }
    }

    /// Rejects keys this policy does not know, so a typo is an error instead of a silent default.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.values.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) if known.is_empty() => Err(format!(
                "unknown config key {k:?}: this policy takes no configuration"
            )),
            Some(k) => Err(format!(
                "unknown config key {k:?} (known: {})",
                known.join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_defaults() {
        let p = Params::from([("weight", "2.5")]);
        assert_eq!(p.parse_or("weight", 1.0).unwrap(), 2.5);
        assert_eq!(p.parse_or("absent", 7u32).unwrap(), 7);
    }

    #[test]
    fn bad_values_and_unknown_keys_name_the_key() {
        let p = Params::from([("weight", "heavy")]);
        let err = p.parse_or("weight", 1.0f64).unwrap_err();
        assert!(err.contains("weight=\"heavy\""), "{err}");
        let err = p.only(&["margin"]).unwrap_err();
        assert!(
            err.contains("\"weight\"") && err.contains("margin"),
            "{err}"
        );
        assert!(
            Params::from([("x", "1")])
                .only(&[])
                .unwrap_err()
                .contains("no configuration")
        );
    }
}
