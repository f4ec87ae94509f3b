//! How times and durations look outside the process, in one place: RFC 3339
//! for instants, milliseconds (three decimals) for durations, and the
//! duration syntax every flag and config key accepts.
//!
//! A leaf module: it imports nothing from the crate.

use std::time::{Duration, SystemTime};

/// Milliseconds with microsecond precision, as every `*_ms` field shows them.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A duration from its `*_ms` form (negative or out of range: `None`).
pub fn from_ms(ms: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(ms / 1e3).ok()
}

/// RFC 3339 with nanoseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration (e.g. `20`, meaning seconds, `1.5`, `500ms`, `2m`, `1h 30m`)")]
pub struct DurationError {
    text: String,
}

/// A duration as a user writes it: a bare number means seconds (`20`,
/// `0.5`), anything else is humantime (`500ms`, `2m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let error = || DurationError {
        text: text.to_owned(),
    };
    if let Ok(secs) = trimmed.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| error());
    }
    humantime::parse_duration(trimmed).map_err(|_| error())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an address and port (e.g. `127.0.0.1:9477`, `[::]:9477`, `fd00::7:9477`)")]
pub struct ListenError {
    text: String,
}

/// An address to listen on: `IP:PORT`, `[IPV6]:PORT`, or an IPv6 address
/// without brackets followed by `:PORT` (what `$(POD_IP):9477` gives on an
/// IPv6 pod).
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, ListenError> {
    let error = || ListenError {
        text: text.to_owned(),
    };
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let (ip, port) = text.rsplit_once(':').ok_or_else(error)?;
    let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| error())?;
    let port: u16 = port.parse().map_err(|_| error())?;
    Ok(std::net::SocketAddr::new(ip.into(), port))
}

/// `SystemTime` as an RFC 3339 string.
pub mod serde_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(D::Error::custom)
    }
}

/// `Option<SystemTime>` as an RFC 3339 string (pair with `skip_serializing_if`).
pub mod serde_rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serde_rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_rfc3339(&text).map_err(D::Error::custom))
            .transpose()
    }
}

/// `Duration` as a number of milliseconds.
pub mod serde_ms {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(super::ms(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        super::from_ms(ms)
            .ok_or_else(|| serde::de::Error::custom(format!("{ms} ms is not a duration")))
    }
}

/// `Option<Duration>` as a number of milliseconds (pair with `skip_serializing_if`
/// and `default`).
pub mod serde_ms_opt {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(super::ms(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|ms| {
                super::from_ms(ms)
                    .ok_or_else(|| serde::de::Error::custom(format!("{ms} ms is not a duration")))
            })
            .transpose()
    }
}

/// A duration in a config file: a string (`"500ms"`, `"2m"`) or a bare
/// number of seconds (`20`, `0.5`).
pub mod serde_duration_opt {
    use std::{fmt, time::Duration};

    use serde::{
        Deserializer,
        de::{self, Visitor},
    };

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Option<Duration>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration: a number of seconds or a string such as \"500ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                super::parse_duration(v).map(Some).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| Some(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("{v} is not a duration: negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                super::parse_duration(&v.to_string())
                    .map(Some)
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_users_write_them() {
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.contains("`soon` is not a duration"), "{err}");
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn listen_addresses_as_the_downward_api_gives_them() {
        let ok = |s: &str| parse_listen(s).unwrap().to_string();
        assert_eq!(ok("10.1.2.3:9477"), "10.1.2.3:9477");
        assert_eq!(ok("[::]:9477"), "[::]:9477");
        assert_eq!(ok("fd00::7:9477"), "[fd00::7]:9477");
        assert!(parse_listen("10.1.2.3").is_err());
        assert!(parse_listen("nonsense").is_err());
    }

    #[test]
    fn milliseconds_round_trip() {
        let d = Duration::from_nanos(1_005_257_123);
        assert_eq!(ms(d), 1005.257);
        assert_eq!(from_ms(ms(d)), Some(Duration::from_nanos(1_005_257_000)));
        assert_eq!(
            from_ms(1e300),
            None,
            "out of range is an error, not a panic"
        );
        assert_eq!(from_ms(-1.0), None);
    }
}
