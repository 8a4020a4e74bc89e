//! The CNI error object and the spec's well-known error codes.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::version::Version;

/// A CNI error code: the spec's well-known ones, or a plugin-specific one (>= 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment,
    /// 5: I/O failure.
    IoFailure,
    /// 6: failed to decode content.
    DecodingFailure,
    /// 7: invalid network config.
    InvalidNetworkConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: plugin not available (STATUS).
    PluginNotAvailable,
    /// 51: plugin not available, existing containers may lose connectivity (STATUS).
    LimitedConnectivity,
    /// Any other code (plugin-specific codes are >= 100).
    Other(u32),
}

impl ErrorCode {
    /// The numeric code.
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidNetworkConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::LimitedConnectivity => 51,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number.
    pub fn from_u32(n: u32) -> ErrorCode {
        match n {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::IoFailure,
            6 => ErrorCode::DecodingFailure,
            7 => ErrorCode::InvalidNetworkConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::PluginNotAvailable,
            51 => ErrorCode::LimitedConnectivity,
            n => ErrorCode::Other(n),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.as_u32())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(ErrorCode::from_u32)
    }
}

/// A CNI error as printed on stdout: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct CniError {
    /// The error code.
    pub code: ErrorCode,
    /// Short message.
    pub msg: String,
    /// Longer explanation (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// Attach details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefix the message with context, keeping code and details.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    /// The JSON object for `version`.
    pub fn render(&self, version: &str) -> Value {
        let mut v = json!({ "cniVersion": version, "code": self.code.as_u32(), "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }

    /// Render for a known version.
    pub fn render_for(&self, version: Version) -> Value {
        self.render(version.as_str())
    }

    /// Parse a plugin's error output, if it is a CNI error object.
    pub fn parse(bytes: &[u8]) -> Option<CniError> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        v.get("code")?.as_u64()?;
        serde_json::from_value(v).ok()
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code.as_u32())?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// Convert a JSON decode error: syntax problems are code 6, well-formed JSON with wrong
/// content is code 7 (invalid network config).
pub fn from_json_error(what: &str, e: &serde_json::Error) -> CniError {
    use serde_json::error::Category;
    let code = match e.classify() {
        Category::Data => ErrorCode::InvalidNetworkConfig,
        Category::Syntax | Category::Eof | Category::Io => ErrorCode::DecodingFailure,
    };
    CniError::new(code, format!("failed to decode {what}")).with_details(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses() {
        let e = CniError::new(ErrorCode::InvalidNetworkConfig, "bad").with_details("why");
        let v = e.render("1.0.0");
        assert_eq!(v, json!({"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"}));
        let back = CniError::parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(back, e);
        assert_eq!(CniError::parse(br#"{"code":123,"msg":"x"}"#).unwrap().code, ErrorCode::Other(123));
        assert!(CniError::parse(b"not json").is_none());
    }

    #[test]
    fn json_error_classification() {
        let syn = serde_json::from_str::<Value>("{").unwrap_err();
        assert_eq!(from_json_error("config", &syn).code, ErrorCode::DecodingFailure);
        let data = serde_json::from_str::<u8>("\"x\"").unwrap_err();
        assert_eq!(from_json_error("config", &data).code, ErrorCode::InvalidNetworkConfig);
    }
}
