//! CNI specification versions and which verbs each one allows.

use std::fmt;
use std::str::FromStr;

use crate::error::{CniError, ErrorCode};

/// A CNI specification version this workspace understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.3.0
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops the per-IP "version" field.
    V1_0_0,
    /// 1.1.0: adds STATUS and GC.
    V1_1_0,
}

/// The CNI verbs (CNI_COMMAND values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// ADD
    Add,
    /// DEL
    Del,
    /// CHECK (>= 0.4.0)
    Check,
    /// STATUS (>= 1.1.0)
    Status,
    /// GC (>= 1.1.0)
    Gc,
    /// VERSION
    Version,
}

impl Version {
    /// Every supported version, oldest first.
    pub const ALL: [Version; 5] = [Version::V0_3_0, Version::V0_3_1, Version::V0_4_0, Version::V1_0_0, Version::V1_1_0];
    /// The newest supported version.
    pub const LATEST: Version = Version::V1_1_0;

    /// The version string as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Whether a config of this version may be used with `verb`.
    pub fn allows(self, verb: Verb) -> bool {
        match verb {
            Verb::Add | Verb::Del | Verb::Version => true,
            Verb::Check => self >= Version::V0_4_0,
            Verb::Status | Verb::Gc => self >= Version::V1_1_0,
        }
    }

    /// Results before 1.0.0 carry `"version": "4"|"6"` on each IP.
    pub fn ips_carry_version(self) -> bool {
        self < Version::V1_0_0
    }

    /// Parse a config's `cniVersion`, mapping unknown versions to CNI error 1.
    pub fn parse_supported(s: &str) -> Result<Version, CniError> {
        s.parse().map_err(|_| {
            CniError::new(ErrorCode::IncompatibleVersion, format!("unsupported CNI version {s:?}"))
                .with_details(format!("supported versions: {}", Version::ALL.map(|v| v.as_str()).join(", ")))
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string that is not supported.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unsupported CNI version {0:?}")]
pub struct UnsupportedVersion(pub String);

impl FromStr for Version {
    type Err = UnsupportedVersion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnsupportedVersion(s.to_string()))
    }
}

impl Verb {
    /// The CNI_COMMAND spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Status => "STATUS",
            Verb::Gc => "GC",
            Verb::Version => "VERSION",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "STATUS" => Verb::Status,
            "GC" => Verb::Gc,
            "VERSION" => Verb::Version,
            other => return Err(format!("unknown CNI_COMMAND {other:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_per_version() {
        assert!(!Version::V0_3_1.allows(Verb::Check));
        assert!(Version::V0_4_0.allows(Verb::Check));
        assert!(!Version::V1_0_0.allows(Verb::Gc));
        assert!(Version::V1_1_0.allows(Verb::Status));
        assert_eq!("1.1.0".parse::<Version>().unwrap(), Version::V1_1_0);
        assert!("0.2.0".parse::<Version>().is_err());
        assert_eq!(Version::parse_supported("9.9.9").unwrap_err().code, ErrorCode::IncompatibleVersion);
    }
}
