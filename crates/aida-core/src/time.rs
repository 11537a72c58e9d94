//! Conversions between chrono timestamps and protobuf's `Timestamp`.

use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;

pub fn to_proto(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_proto(ts: &Timestamp) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(ts.seconds, ts.nanos.max(0) as u32)
        .single()
}

pub fn now_proto() -> Timestamp {
    to_proto(Utc::now())
}
